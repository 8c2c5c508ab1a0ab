"""Reloading the router with SIGHUP while it answers loses no query.

A real `dnsrouter serve` process answers a steady stream of queries from
dnspython while it is sent SIGHUP over and over; every query must get its
answer, static and CDN names alike.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from dnsrouter import lab

pytestmark = pytest.mark.e2e

PORT = 18253
RELOADS = 15
RELOAD_GAP_SECONDS = 0.2
QUERY_TIMEOUT_SECONDS = 2.0

CONFIG = """
[server]
listen = ["127.0.0.1:{port}"]
zones_dir = "{zones}"

[health]
interval = 1.0
timeout = 0.5

[[cdn]]
name = "cdn.example.com."
default_pop = "us"

[[pop]]
name = "us"
latitude = 39.04
longitude = -77.49

[[edge]]
name = "iad1"
pop = "us"
ipv4 = "192.0.2.41"
health_url = "http://127.0.0.1:9/healthz"
"""


def ask(name: str) -> int:
    query = dns.message.make_query(name, "A")
    reply = dns.query.udp(query, "127.0.0.1", port=PORT, timeout=QUERY_TIMEOUT_SECONDS)

    return reply.rcode()


def wait_until_answering() -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            ask("www.example.com.")
            return
        except dns.exception.Timeout:
            time.sleep(0.1)

    raise AssertionError("router never answered")


def test_sighup_under_query_load_loses_no_query(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text(CONFIG.format(port=PORT, zones=lab.default_zones_dir()))
    router = subprocess.Popen(
        [lab.find_script("dnsrouter"), "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    outcomes: list[str] = []
    stop = threading.Event()

    def query_loop() -> None:
        names = ["www.example.com.", "cdn.example.com.", "missing.example.com."]
        while not stop.is_set():
            for name in names:
                try:
                    outcomes.append(dns.rcode.to_text(ask(name)))
                except dns.exception.Timeout:
                    outcomes.append("lost")

    try:
        wait_until_answering()
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
        router.wait(timeout=10)

    assert len(outcomes) > 100
    assert outcomes.count("lost") == 0
    assert set(outcomes) == {"NOERROR", "NXDOMAIN"}
