"""Health checks end to end (field case D11): the real router process,
real HTTP health servers on loopback that are stopped, restarted and made
to flap, and real DNS queries with ECS from dnspython."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import pytest

from .edgesim import HealthServer, unused_dns_port
from .helpers import REPO, TEST_DB, write_config

pytestmark = pytest.mark.e2e

INTERVAL = 0.5
TIMEOUT = 0.3
FALL = 3
RISE = 2
# Process scheduling and the poll step on a loaded CI machine.
SLACK = 1.0


def config_body(servers: dict[str, HealthServer]) -> str:
    lines = [
        f'[geoip]\ndatabase = "{TEST_DB}"\n',
        "[routing]\nanswers = 3\nttl = 30\n",
        f"[health]\ninterval = {INTERVAL}\ntimeout = {TIMEOUT}\n"
        f"fall = {FALL}\nrise = {RISE}\n",
        '[[cdn]]\nname = "cdn.example.com."\ndefault_pop = "us"\n',
        '[[pop]]\nname = "eu"\nlatitude = 50.11\nlongitude = 8.68\n',
        '[[pop]]\nname = "us"\nlatitude = 39.04\nlongitude = -77.49\n',
    ]
    for name, server in servers.items():
        pop = "us" if name == "41" else "eu"
        lines.append(
            f'[[edge]]\nname = "e{name}"\npop = "{pop}"\nipv4 = "192.0.2.{name}"\n'
            f'health_url = "http://127.0.0.1:{server.port}/health"\n'
        )
    return "\n".join(lines)


class RouterProcess:
    """The router subprocess and a dnspython client for it."""

    def __init__(self, port: int, process: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.process = process

    def query(self) -> tuple[set[str], int] | None:
        option = dns.edns.ECSOption("198.51.100.0", 24)
        message = dns.message.make_query(
            "cdn.example.com.", "A", use_edns=0, options=[option]
        )
        try:
            reply = dns.query.udp(message, "127.0.0.1", port=self.port, timeout=1)
        except dns.exception.Timeout:
            return None
        addresses = {
            item.address for rrset in reply.answer for item in rrset
            if rrset.rdtype == dns.rdatatype.A
        }
        ttl = min((rrset.ttl for rrset in reply.answer), default=0)
        return addresses, ttl

    def wait_until(self, predicate, limit: float) -> float:
        """Seconds until predicate(answer) holds; fails after `limit`."""
        start = time.monotonic()
        while time.monotonic() - start < limit:
            answer = self.query()
            if answer is not None and predicate(answer[0]):
                return time.monotonic() - start
            time.sleep(0.05)
        pytest.fail(f"condition not reached within {limit} s")


@pytest.fixture
def cdn(tmp_path: Path) -> Iterator[tuple[RouterProcess, dict[str, HealthServer]]]:
    servers = {name: HealthServer() for name in ("21", "22", "23", "41")}
    path = write_config(
        tmp_path, config_body(servers),
        header=f'listen = ["127.0.0.1:{unused_dns_port()}"]',
    )
    port = int(path.read_text().split("127.0.0.1:")[1].split('"')[0])
    process = subprocess.Popen(
        [sys.executable, "-m", "dnsrouter.cli", "serve", "--config", str(path)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    router = RouterProcess(port, process)
    try:
        router.wait_until(lambda a: len(a) == 3, 20.0)
        yield router, servers
    finally:
        process.terminate()
        process.wait(timeout=10)
        for server in servers.values():
            try:
                server.stop()
            except OSError:
                pass


EU = {"192.0.2.21", "192.0.2.22", "192.0.2.23"}


def test_stopped_edge_leaves_within_bound_and_returns_after_rise(cdn):
    router, servers = cdn
    port = servers["22"].port

    servers["22"].stop()
    gone = router.wait_until(lambda a: "192.0.2.22" not in a, 10.0)
    servers["22"] = HealthServer(port)
    back = router.wait_until(lambda a: "192.0.2.22" in a, 10.0)

    print(f"edge out after {gone:.2f} s, back after {back:.2f} s")
    assert gone <= FALL * INTERVAL + TIMEOUT + SLACK
    assert back <= RISE * INTERVAL + TIMEOUT + SLACK


def test_hanging_edge_leaves_within_fall_intervals_plus_timeout(cdn):
    """An edge that accepts health requests and never answers them is out
    of the answers within fall x interval + timeout."""
    router, servers = cdn

    servers["22"].mode = "hang"
    gone = router.wait_until(lambda a: "192.0.2.22" not in a, 10.0)

    print(f"hanging edge out after {gone:.2f} s")
    assert gone <= FALL * INTERVAL + TIMEOUT + SLACK


def test_flapping_edge_stays_while_whole_pop_down_moves_to_next(cdn):
    """200/503 on alternate probes for 3 s never removes the edge; then
    all EU edges failing sends Berlin to US, and everything failing fails
    open with a short TTL."""
    router, servers = cdn
    servers["23"].mode = "flap"
    seen = []
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        answer = router.query()
        assert answer is not None
        seen.append(answer[0])
        time.sleep(0.1)
    assert all(answer == EU for answer in seen)

    for name in ("21", "22", "23"):
        servers[name].mode = "503"
    router.wait_until(lambda a: a == {"192.0.2.41"}, 10.0)
    servers["41"].mode = "503"
    router.wait_until(lambda a: a == EU, 10.0)
    answer = router.query()

    assert answer is not None and answer[1] <= 10
