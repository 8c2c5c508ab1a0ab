"""Peers the DNS tests and bench/dns_router.py start on loopback: free
ports and a BIND `named` configured as a plain authoritative server."""

from __future__ import annotations

import socket
from pathlib import Path

NAMED_CONF = """
options {{
  directory "{dir}";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion no;
  minimal-responses yes;
  minimal-any yes;
  pid-file "{dir}/named.pid";
  session-keyfile "{dir}/session.key";
  managed-keys-directory "{dir}";
  dnssec-validation no;
  server-id "router-1";
  version "pycdn-dnsrouter";
  allow-transfer {{ none; }};
  notify no;
}};
controls {{ }};
zone "example.com" {{ type primary; file "{zone}"; }};
"""


def named_conf(workdir: Path, port: int, zone: Path) -> Path:
    """Write named.conf for one primary zone `example.com`; returns it."""
    path = workdir / "named.conf"
    path.write_text(NAMED_CONF.format(dir=workdir, port=port, zone=zone))

    return path


def free_port() -> int:
    """A port free right now for UDP and TCP on 127.0.0.1 and ::1."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
        try:
            for family, host in [
                (socket.AF_INET, "127.0.0.1"),
                (socket.AF_INET6, "::1"),
            ]:
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(family, kind) as probe:
                        probe.bind((host, port))
            return port
        except OSError:
            continue
