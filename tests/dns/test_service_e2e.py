"""The whole router process on loopback, queried with dig: UDP and TCP on
IPv4 and IPv6, SIGHUP reload (good and bad zones), SIGTERM, workers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dns.helpers import REPO, ZONES
from tests.dns.peers import free_port

pytestmark = pytest.mark.e2e

CONFIG = """
[server]
listen = ["127.0.0.1:{port}", "[::1]:{port}"]
zones_dir = "zones"
server_id = "router-e2e"
version = "pycdn-dnsrouter"
workers = {workers}
{server_extra}

[geoip]
database = "{geoip}"

[[cdn]]
name = "cdn.example.com."
default_pop = "us"

[[pop]]
name = "us"
latitude = 39.04
longitude = -77.49

[[edge]]
name = "us1"
pop = "us"
ipv4 = "192.0.2.41"
health_url = "http://127.0.0.1:9/healthz"
"""


def dig(port: int, *args: str, server: str = "127.0.0.1") -> str:
    result = subprocess.run(
        ["dig", "@" + server, "-p", str(port), "+norec", "+time=2", "+tries=1", *args],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return result.stdout


def start(
    tmp_path: Path, workers: int = 1, server_extra: str = ""
) -> tuple[subprocess.Popen[str], int]:
    """Start the router with the fixture zone; `server_extra` is TOML
    added to its [server] table.  Returns once it answers."""
    port = free_port()
    shutil.copytree(ZONES, tmp_path / "zones", dirs_exist_ok=True)
    (tmp_path / "router.toml").write_text(
        CONFIG.format(
            port=port,
            workers=workers,
            server_extra=server_extra,
            geoip=REPO / "geodata" / "test-city.mmdb",
        )
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from dnsrouter import service; "
            "sys.exit(service.run(sys.argv[1]))",
            str(tmp_path / "router.toml"),
        ],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if "192.0.2.10" in dig(port, "www.example.com", "+short"):
            return proc, port
        time.sleep(0.1)
    proc.kill()
    stderr = proc.stderr.read() if proc.stderr else ""
    raise AssertionError("router did not come up: %s" % stderr)


@pytest.fixture
def router(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    proc, port = start(tmp_path)
    yield proc, port, tmp_path
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)


def test_answers_over_udp_and_tcp_on_ipv4_and_ipv6(router) -> None:
    """The same answers on every transport and address family."""
    _, port, _ = router

    for server in ("127.0.0.1", "::1"):
        for transport in ("+notcp", "+tcp"):
            out = dig(port, "www.example.com", transport, server=server)
            assert "flags: qr aa;" in out and "192.0.2.10" in out


def test_tc_then_tcp_retry_gets_the_whole_rrset(router) -> None:
    """D04: dig +bufsize=512 sees TC and retries over TCP for all 40."""
    _, port, _ = router

    out = dig(port, "big.example.com", "+bufsize=512", "+short")

    assert len(out.split()) == 40


def test_cdn_name_is_answered_from_the_router(router) -> None:
    """cdn.example.com is routed (fail-open US edge: no health server);
    ANY gets that A RRset (RFC 8482 section 4.1), not NODATA."""
    _, port, _ = router

    assert dig(port, "cdn.example.com", "+short").split() == ["192.0.2.41"]
    assert dig(port, "cdn.example.com", "ANY", "+short").split() == ["192.0.2.41"]


def test_sighup_applies_a_good_zone_and_keeps_old_on_a_bad_one(router) -> None:
    """SIGHUP reloads atomically: a broken zone or config leaves the old
    state serving."""
    proc, port, tmp_path = router
    zone = tmp_path / "zones" / "example.com.zone"

    zone.write_text(zone.read_text() + "new IN A 192.0.2.99\n")
    proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "192.0.2.99" not in dig(port, "new.example.com", "+short"):
        assert time.monotonic() < deadline
        time.sleep(0.1)

    zone.write_text(zone.read_text() + "bad IN CNAME x\nbad IN A 192.0.2.1\n")
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert dig(port, "new.example.com", "+short").split() == ["192.0.2.99"]

    (tmp_path / "router.toml").write_text("[server]\nlisten = 5\n")
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert dig(port, "new.example.com", "+short").split() == ["192.0.2.99"]
    assert proc.poll() is None


def test_sigterm_stops_cleanly(router) -> None:
    """SIGTERM ends the process with status 0."""
    proc, _, _ = router

    proc.send_signal(signal.SIGTERM)

    assert proc.wait(10) == 0


def run_once(config: Path) -> subprocess.CompletedProcess[str]:
    """Run the service to completion (for configurations that must fail)."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from dnsrouter import service; "
            "sys.exit(service.run(sys.argv[1]))",
            str(config),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=20,
    )


def test_bad_config_exits_2_with_message(tmp_path: Path) -> None:
    """A config error is printed to stderr and the exit status is 2."""
    (tmp_path / "router.toml").write_text("[server]\nlisten = 5\n")

    result = run_once(tmp_path / "router.toml")

    assert result.returncode == 2 and "router.toml" in result.stderr


def test_bad_zone_at_start_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    """A zone that does not load stops the start with `file:line: reason`."""
    proc, port = start(tmp_path)
    proc.terminate()
    proc.wait(10)
    zone = tmp_path / "zones" / "example.com.zone"
    zone.write_text(zone.read_text() + "www IN CNAME alias\n")

    result = run_once(tmp_path / "router.toml")

    assert result.returncode == 2
    assert (
        "example.com.zone:" in result.stderr and "CNAME and other data" in result.stderr
    )


def test_cdn_name_owning_zone_data_exits_2_naming_both(tmp_path: Path) -> None:
    """A CDN name that owns records in a zone file (www.example.com has
    an A) is refused at start, naming the config key and the zone file."""
    proc, _ = start(tmp_path)
    proc.terminate()
    proc.wait(10)
    config = tmp_path / "router.toml"
    clash = config.read_text().replace('"cdn.example.com."', '"www.example.com."')
    config.write_text(clash)

    result = run_once(config)

    assert result.returncode == 2
    assert "router.toml" in result.stderr and "example.com.zone" in result.stderr


def test_sighup_with_a_clashing_cdn_name_keeps_the_old_config(router) -> None:
    """A reload whose CDN name owns zone data is rejected and logged; the
    zone's own www A and the old CDN name keep being answered."""
    proc, port, tmp_path = router
    config = tmp_path / "router.toml"
    clash = config.read_text().replace('"cdn.example.com."', '"www.example.com."')
    config.write_text(clash)

    proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)

    assert dig(port, "www.example.com", "+short").split() == ["192.0.2.10"]
    assert dig(port, "cdn.example.com", "+short").split() == ["192.0.2.41"]
    proc.terminate()
    _, stderr = proc.communicate(timeout=10)
    assert "reload rejected" in stderr and "www.example.com" in stderr


def test_address_in_use_exits_1(tmp_path: Path) -> None:
    """A listen address that cannot be bound ends the start with status 1."""
    proc, port = start(tmp_path)
    try:
        result = run_once(tmp_path / "router.toml")
    finally:
        proc.terminate()
        proc.wait(10)

    assert result.returncode == 1 and "cannot listen" in result.stderr


def test_two_workers_share_the_port_and_stop_together(tmp_path: Path) -> None:
    """workers = 2: both answer on one port; a killed worker is replaced;
    SIGHUP reloads every worker; SIGTERM stops all."""
    proc, port = start(tmp_path, workers=2)
    try:
        for _ in range(10):
            assert "192.0.2.10" in dig(port, "www.example.com", "+short")
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) == 2
        os.kill(int(children[0]), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:
            now = subprocess.run(
                ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
            ).stdout.split()
            if len(now) == 2 and children[0] not in now:
                break
            assert time.monotonic() < deadline, "killed worker not replaced"
            time.sleep(0.1)
        children = now
        assert "192.0.2.10" in dig(port, "www.example.com", "+short")

        zone = tmp_path / "zones" / "example.com.zone"
        zone.write_text(zone.read_text() + "new IN A 192.0.2.99\n")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not all(
            dig(port, "new.example.com", "+short").split() == ["192.0.2.99"]
            for _ in range(10)
        ):
            assert time.monotonic() < deadline, "a worker did not reload"
            time.sleep(0.2)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        for child in children:
            with pytest.raises(ProcessLookupError):
                os.kill(int(child), 0)
    finally:
        if proc.poll() is None:
            proc.kill()
