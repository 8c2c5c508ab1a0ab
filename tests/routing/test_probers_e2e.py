"""The real HTTP and TCP probers against loopback servers, through
`dnsrouter explain --probe` (one probe round on the real reactor)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .edgesim import HealthServer
from .helpers import REPO, TEST_DB, write_config

pytestmark = pytest.mark.e2e


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def edge(number: int, url: str, extra: str = "") -> str:
    return (
        f'[[edge]]\nname = "e{number}"\npop = "eu"\nipv4 = "192.0.2.{number}"\n'
        f'health_url = "{url}"\n{extra}'
    )


def test_http_and_tcp_probes_classify_real_servers(tmp_path: Path):
    up, draining = HealthServer(), HealthServer()
    draining.mode = "draining"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    dead = closed_port()
    body = "\n".join([
        f'[geoip]\ndatabase = "{TEST_DB}"\n',
        "[health]\ninterval = 1.0\ntimeout = 0.5\n"
        'host = "cdn.example.com"\n',
        '[[cdn]]\nname = "cdn.example.com."\ndefault_pop = "eu"\n',
        '[[pop]]\nname = "eu"\nlatitude = 50.11\nlongitude = 8.68\n',
        edge(1, f"http://127.0.0.1:{up.port}/health"),
        edge(2, f"http://127.0.0.1:{draining.port}/health",
             'health_host = "edge2.example.com"\n'),
        edge(3, f"http://127.0.0.1:{dead}/health"),
        edge(4, f"http://127.0.0.1:{listener.getsockname()[1]}/", 'check = "tcp"\n'),
        edge(5, f"http://127.0.0.1:{dead}/", 'check = "tcp"\n'),
        # Accepts connections (backlog) but never answers: a timeout.
        edge(6, f"http://127.0.0.1:{listener.getsockname()[1]}/health"),
    ])
    path = write_config(tmp_path, body)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "dnsrouter.cli", "explain", "198.51.100.1",
             "cdn.example.com", "--probe", "--config", str(path)],
            cwd=REPO, capture_output=True, text=True, timeout=30,
        )
    finally:
        up.stop()
        draining.stop()
        listener.close()

    assert result.returncode == 0, result.stderr
    assert "e1 up, e2 draining, e3 down (connection refused), e4 up, " \
        "e5 down (connection refused), e6 down (timeout)" in result.stdout
    assert "IN A 192.0.2.1, 192.0.2.4" in result.stdout
    assert up.hosts == ["cdn.example.com"]
    assert draining.hosts == ["edge2.example.com"]
