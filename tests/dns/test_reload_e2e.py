"""SIGHUP with a large zone, in real processes: queries keep being
answered at their usual speed while the new state loads (in a thread
with one worker, in the supervisor with two), and every zone file is
parsed once per start or reload."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import dns.message
import pytest

from tests.dns.test_service_e2e import start

pytestmark = pytest.mark.e2e

# Records added to the fixture zone: about 0.8 s of parsing here, far
# above the delay a query may see.
EXTRA_RECORDS = 50_000
# Longest a query may wait while a reload is loading. A reactor blocked
# by the parse waits the whole parse; one sharing the GIL with a loader
# thread waits a few switch intervals (5 ms each).
MAX_DELAY = 0.25


def query_delays(port: int, seconds: float, hup: object) -> list[float]:
    """Ask www.example.com every 10 ms for `seconds`, calling `hup` after
    0.3 s; returns each query's delay (1.0 for no answer)."""
    wire = dns.message.make_query("www.example.com", "A").to_wire()
    delays = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        began = time.monotonic()
        sent_hup = False
        while time.monotonic() - began < seconds:
            if not sent_hup and time.monotonic() - began > 0.3:
                hup()  # type: ignore[operator]
                sent_hup = True
            sent = time.monotonic()
            sock.sendto(wire, ("127.0.0.1", port))
            try:
                sock.recv(4096)
                delays.append(time.monotonic() - sent)
            except TimeoutError:
                delays.append(1.0)
            time.sleep(0.01)

    return delays


@pytest.mark.parametrize("workers", [1, 2])
def test_large_zone_reload_does_not_stall_queries(
    tmp_path: Path, workers: int
) -> None:
    """A 50,000-record zone reloaded under a steady query stream: no
    query waits more than MAX_DELAY, the new record is served after,
    and the zone was parsed once at start and once on SIGHUP."""
    proc, port = start(tmp_path, workers=workers)
    try:
        zone = tmp_path / "zones" / "example.com.zone"
        extra = "".join(
            f"h{i} IN A 198.51.100.{i % 250 + 1}\n" for i in range(EXTRA_RECORDS)
        )
        zone.write_text(zone.read_text() + extra + "new IN A 192.0.2.99\n")

        delays = query_delays(port, 2.5, lambda: proc.send_signal(signal.SIGHUP))
        answer = dns.message.from_wire(
            _ask(port, "new.example.com")
        ).answer
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)

    assert max(delays) < MAX_DELAY, sorted(delays)[-5:]
    assert "192.0.2.99" in str(answer)
    assert stderr.count("zone loaded origin=example.com") == 2


def _ask(port: int, name: str) -> bytes:
    wire = dns.message.make_query(name, "A").to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        sock.sendto(wire, ("127.0.0.1", port))
        return sock.recv(4096)
