"""The lab end to end: real processes on loopback, real GeoLite2 data, dig and
curl as the clients an operator would use.

The layout is the one `dnsrouter lab` runs, on other ports so that a lab
left running on the default ports does not disturb the tests.
"""

from __future__ import annotations

import io
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dnsrouter import lab

pytestmark = pytest.mark.e2e

ROUTER_PORT = 18053
EDGE_PORT = 18080
ORIGIN_PORT = 18081

BERLIN = "141.20.0.0/24"
PRINCETON = "128.112.0.0/24"
SINGAPORE = "137.132.0.0/24"

# fall x interval + timeout is four seconds in the lab; ten is what the
# operator is promised.
FAILOVER_DEADLINE_SECONDS = 10.0


@pytest.fixture(scope="module")
def running_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab.Supervisor]:
    state_dir = tmp_path_factory.mktemp("lab")
    layout = lab.write_layout(
        state_dir, lab.default_zones_dir(), ROUTER_PORT, EDGE_PORT, ORIGIN_PORT
    )
    supervisor = lab.Supervisor(layout, out=io.StringIO())
    try:
        supervisor.start_all()
        yield supervisor
    finally:
        supervisor.stop_all()


def dig_short(*args: str) -> list[str]:
    result = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(ROUTER_PORT), "+norec", "+short",
         "+time=2", "+tries=1", *args],
        capture_output=True, text=True, timeout=10, check=True,
    )

    return result.stdout.split()


def cdn_answer(subnet: str) -> list[str]:
    return dig_short("cdn.example.com", "A", f"+subnet={subnet}")


def curl(url: str) -> tuple[dict[str, str], bytes]:
    result = subprocess.run(
        ["curl", "-s", "-D", "-", "-H", "Host: cdn.example.com", url],
        capture_output=True, timeout=10, check=True,
    )
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()

    return headers, body


def wait_for_answer(subnet: str, expected: str) -> float:
    """Seconds until the router hands out `expected` for `subnet`."""
    started = time.monotonic()
    while time.monotonic() - started < FAILOVER_DEADLINE_SECONDS:
        if cdn_answer(subnet) == [expected]:
            return time.monotonic() - started
        time.sleep(0.2)

    raise AssertionError(f"{subnet} never answered {expected}: {cdn_answer(subnet)}")


@pytest.mark.parametrize(
    ("subnet", "edge_address"),
    [(BERLIN, "127.0.0.11"), (PRINCETON, "127.0.0.12"), (SINGAPORE, "127.0.0.13")],
)
def test_client_subnet_is_routed_to_nearest_pop(
    running_lab: lab.Supervisor, subnet: str, edge_address: str
) -> None:
    """A client in Berlin, Princeton or Singapore gets its own continent's edge."""
    assert cdn_answer(subnet) == [edge_address]


def test_static_zone_is_served_authoritatively(running_lab: lab.Supervisor) -> None:
    """www.example.com comes from zones/ with the AA flag, as dig shows it."""
    result = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(ROUTER_PORT), "+norec", "www.example.com",
         "A"],
        capture_output=True, text=True, timeout=10, check=True,
    )

    assert "flags: qr aa;" in result.stdout
    assert "192.0.2.10" in result.stdout


def test_edge_serves_origin_bytes_miss_then_hit(running_lab: lab.Supervisor) -> None:
    """The first fetch of an object misses, the second is a cache hit."""
    layout = running_lab.layout
    url = layout.edge_url(lab.LAB_EDGES[1], "/style.css")
    original = (layout.site_dir / "style.css").read_bytes()

    first_headers, first_body = curl(url)
    second_headers, second_body = curl(url)

    assert first_headers["x-cache"] == "MISS"
    assert second_headers["x-cache"] == "HIT"
    assert first_body == second_body == original


def test_large_object_arrives_whole_through_every_edge(
    running_lab: lab.Supervisor,
) -> None:
    """The 4 MiB sample object reaches the client byte for byte, twice."""
    layout = running_lab.layout
    original = (layout.site_dir / "big.bin").read_bytes()

    for edge in lab.LAB_EDGES:
        for _ in range(2):
            _, body = curl(layout.edge_url(edge, "/big.bin"))
            assert body == original


def test_stopped_edge_leaves_answers_and_returns(running_lab: lab.Supervisor) -> None:
    """Stopping Singapore sends its clients to Frankfurt, the next nearest,
    within ten seconds; starting it again brings them back."""
    assert cdn_answer(SINGAPORE) == ["127.0.0.13"]

    running_lab.stop("edge-sin1")
    seconds_to_failover = wait_for_answer(SINGAPORE, "127.0.0.11")

    running_lab.start("edge-sin1")
    running_lab.wait_ready(["edge-sin1"])
    seconds_to_return = wait_for_answer(SINGAPORE, "127.0.0.13")

    assert seconds_to_failover < FAILOVER_DEADLINE_SECONDS
    assert seconds_to_return < FAILOVER_DEADLINE_SECONDS


def test_lab_command_starts_and_stops_cleanly(tmp_path: Path) -> None:
    """`dnsrouter lab` prints how to try it and on SIGTERM leaves no server."""
    command = [
        lab.find_script("dnsrouter"), "lab", "--state-dir", str(tmp_path),
        "--router-port", "28053", "--edge-port", "28080", "--origin-port", "28081",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None

    seen = []
    for line in process.stdout:
        seen.append(line)
        if "Try it:" in line:
            break
    process.send_signal(signal.SIGTERM)
    rest = process.stdout.read()
    process.wait(timeout=30)

    banner = "".join(seen) + rest
    assert process.returncode == 0
    assert "dig @127.0.0.1 -p 28053 cdn.example.com A" in banner
    assert "http://127.0.0.12:28080/index.html" in banner
    for edge in lab.LAB_EDGES:
        assert not lab.accepts_connections(edge.address, 28080), edge.name
    assert not lab.accepts_connections("127.0.0.1", 28053)


def test_lab_configs_pass_both_checkers(tmp_path: Path) -> None:
    """The files the lab writes are valid for `dnsrouter check` and
    `cdn-edge check`, so they can serve as examples for operators."""
    layout = lab.write_layout(tmp_path, lab.default_zones_dir())
    commands = [
        [lab.find_script("dnsrouter"), "check", "--config", str(layout.router_config)]
    ] + [
        [lab.find_script("cdn-edge"), "check", "--config", str(layout.edge_config(e))]
        for e in lab.LAB_EDGES
    ]

    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_busy_port_is_named_with_the_flag_that_moves_it(tmp_path: Path) -> None:
    """A port already taken stops the lab before it starts anything, with a
    message that names the address and the option to use instead."""
    layout = lab.write_layout(
        tmp_path, lab.default_zones_dir(), router_port=28153, edge_port=28180,
        origin_port=28181,
    )
    with socket.socket() as holder:
        holder.bind(("127.0.0.12", 28180))
        holder.listen()

        with pytest.raises(RuntimeError) as raised:
            layout.find_busy_port()

    assert "127.0.0.12:28180" in str(raised.value)
    assert "--edge-port" in str(raised.value)
