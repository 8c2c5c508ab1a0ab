"""Reloading the router with SIGHUP while it answers loses no query.

A real `dnsrouter serve` process answers a steady stream of queries from
dnspython while it is sent SIGHUP over and over; every query must get its
answer, static and CDN names alike.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.dns.test_service_e2e import start

pytestmark = pytest.mark.e2e

RELOADS = 15
RELOAD_GAP_SECONDS = 0.2
QUERY_TIMEOUT_SECONDS = 2.0


def ask(port: int, name: str) -> int:
    query = dns.message.make_query(name, "A")
    reply = dns.query.udp(
        query, "127.0.0.1", port=port, timeout=QUERY_TIMEOUT_SECONDS
    )

    return reply.rcode()


def test_sighup_under_query_load_loses_no_query(tmp_path: Path) -> None:
    router, port = start(tmp_path)
    outcomes: list[str] = []
    stop = threading.Event()

    def query_loop() -> None:
        names = ["www.example.com.", "cdn.example.com.", "missing.example.com."]
        while not stop.is_set():
            for name in names:
                try:
                    outcomes.append(dns.rcode.to_text(ask(port, name)))
                except dns.exception.Timeout:
                    outcomes.append("lost")

    try:
        loader = threading.Thread(target=query_loop)
        loader.start()
        for _ in range(RELOADS):
            time.sleep(RELOAD_GAP_SECONDS)
            router.send_signal(signal.SIGHUP)
        time.sleep(RELOAD_GAP_SECONDS)
        stop.set()
        loader.join(timeout=10)
    finally:
        router.terminate()
        router.communicate(timeout=10)

    assert len(outcomes) > 100
    assert outcomes.count("lost") == 0
    assert set(outcomes) == {"NOERROR", "NXDOMAIN"}
