"""Benchmark: what abusive TCP clients cost the router (RFC 7766 section 10).

Starts one dnsrouter process (`service.run`) as the end-to-end tests do,
on a loopback port picked at run time with the fixture zone, then runs
two attacks against it and prints what they did to the router:

* pipeline: connections that each write many framed `big.example.com A`
  queries (each reply is about 700 octets) with a 4 KB receive buffer and
  never read.  Printed: the router's resident memory before, at the end
  of the writing window and after it, the octets each client got to
  write, and whether a fresh TCP query is answered meanwhile.
* slowloris: connections that send a length prefix and then one octet
  every few seconds, enough of them to fill the connection cap.  Printed:
  how many are still open after a while, and whether a fresh TCP query
  is answered while they hold on.

Every loop is bounded in time; the whole run takes about 40 seconds.

Usage: python bench/dns_tcp_abuse.py [--connections 4] [--queries 50000]
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.dns.test_service_e2e import start  # noqa: E402 (path set above)
from tests.dns.test_tcp_abuse_e2e import (  # noqa: E402
    BIG,
    framed_query,
    rss_kib,
    tcp_answers,
)

# A 16-connection cap keeps the slowloris run short; the default is 256.
SERVER_EXTRA = "tcp_max_connections = 16"


def pipeline(pid: int, port: int, connections: int, queries: int) -> None:
    """Writers that never read: the router's memory, and service meanwhile."""
    before = rss_kib(pid)
    payload = b"".join(framed_query(BIG, n) for n in range(queries))
    socks, sent = [], []
    for _ in range(connections):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        socks.append(sock)
        sent.append(0)
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and min(sent) < len(payload):
        for i, sock in enumerate(socks):
            try:
                sent[i] += sock.send(payload[sent[i] : sent[i] + 65536])
            except (BlockingIOError, ConnectionError):
                pass
        time.sleep(0.001)
    during = rss_kib(pid)
    served = tcp_answers(port)
    time.sleep(2)
    print("pipeline: %d connections x %d queries, never read" % (connections, queries))
    print("  router RSS KiB: before %d, end of writing %d, 2 s later %d"
          % (before, during, rss_kib(pid)))
    print("  octets each client wrote: %s of %d" % (sent, len(payload)))
    print("  fresh TCP query answered meanwhile: %s" % served)
    for sock in socks:
        sock.close()


def slowloris(port: int, connections: int, hold: float) -> None:
    """Trickling clients: how long they hold on, and service meanwhile."""
    socks = []
    for _ in range(connections):
        try:
            sock = socket.create_connection(("127.0.0.1", port), 2)
            sock.sendall(b"\x00\x30")
            socks.append(sock)
        except OSError:
            break
    start = time.monotonic()
    served = []
    while time.monotonic() - start < hold:
        time.sleep(3)
        for sock in socks:
            try:
                sock.send(b"\x00")
            except OSError:
                pass
        served.append(tcp_answers(port))
    still_open = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            still_open += sock.recv(1) != b""
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
        sock.close()
    print("slowloris: %d connections, 1 octet every 3 s" % len(socks))
    print("  still open after %.0f s: %d" % (hold, still_open))
    print("  fresh TCP queries answered meanwhile: %d of %d"
          % (sum(served), len(served)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--queries", type=int, default=50000)
    parser.add_argument("--hold", type=float, default=15.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start(Path(tmp), server_extra=SERVER_EXTRA)
        try:
            pipeline(proc.pid, port, args.connections, args.queries)
            slowloris(port, 17, args.hold)
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
