"""Abusive TCP clients against the real router process (RFC 7766 section
10): pipelining writers that never read, and slowloris trickles."""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import pytest

from tests.dns.test_service_e2e import start

pytestmark = pytest.mark.e2e

WWW = b"\x03www\x07example\x03com\x00"
BIG = b"\x03big\x07example\x03com\x00"


def framed_query(name: bytes, qid: int) -> bytes:
    """A length-prefixed A query without EDNS."""
    header = struct.pack("!6H", qid & 0xFFFF, 0, 1, 0, 0, 0)
    message = header + name + b"\x00\x01\x00\x01"

    return struct.pack("!H", len(message)) + message


def rss_kib(pid: int) -> int:
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def tcp_answers(port: int) -> bool:
    """A fresh connection's query for www.example.com gets its reply."""
    try:
        with socket.create_connection(("127.0.0.1", port), 2) as sock:
            sock.sendall(framed_query(WWW, 77))
            return sock.recv(4096)[2:4] == struct.pack("!H", 77)
    except OSError:
        return False


def is_closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_pipelining_clients_that_never_read_do_not_grow_memory(
    tmp_path: Path,
) -> None:
    """12 connections with a 4 KiB receive buffer each write up to 50,000
    queries for a 700-octet answer and never read: the router reads no
    faster than they read (growth well under 8 MiB, where it held about
    1.5 MiB per connection before), and a fresh TCP query is answered."""
    proc, port = start(tmp_path)
    socks: list[socket.socket] = []
    try:
        before = rss_kib(proc.pid)
        payload = b"".join(framed_query(BIG, n) for n in range(50000))
        for _ in range(12):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.setblocking(False)
            socks.append(sock)
        sent = [0] * len(socks)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for i, sock in enumerate(socks):
                try:
                    sent[i] += sock.send(payload[sent[i] : sent[i] + 65536])
                except (BlockingIOError, ConnectionError):
                    pass
            time.sleep(0.002)
        time.sleep(0.5)
        grown = rss_kib(proc.pid) - before

        assert tcp_answers(port)
        assert grown < 8 * 1024, "router grew by %d KiB" % grown
    finally:
        proc.kill()
        proc.wait(5)
        for sock in socks:
            sock.close()


def test_slowloris_cannot_lock_out_new_tcp_clients(tmp_path: Path) -> None:
    """With the 4-connection cap held by trickling clients, a new client
    displaces the slowest and is answered; every trickler is cut within
    the 5 s message limit even though it sends an octet each second."""
    proc, port = start(tmp_path, server_extra="tcp_max_connections = 4")
    slow: list[socket.socket] = []
    try:
        for _ in range(4):
            sock = socket.create_connection(("127.0.0.1", port), 2)
            sock.sendall(b"\x00\x30")
            slow.append(sock)
        time.sleep(1.5)

        assert tcp_answers(port)
        for _ in range(5):
            for sock in slow:
                try:
                    sock.send(b"\x00")
                except OSError:
                    pass
            time.sleep(1)
        assert all(is_closed_by_peer(sock) for sock in slow)
        assert tcp_answers(port)
    finally:
        proc.kill()
        proc.wait(5)
        for sock in slow:
            sock.close()
