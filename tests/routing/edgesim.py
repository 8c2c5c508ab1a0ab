"""A stand-in for an edge's health endpoint, for functional tests."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPORT = {"status": "up", "draining": False, "connections": 3,
          "max_connections": 1000, "bytes_per_second": 1234.5,
          "overloaded": False, "cache": {}}


class HealthServer:
    """An edge's health endpoint; `mode` is "up", "503", "draining",
    "flap" (200 and 503 on alternate requests) or "hang" (accept the
    request and never reply, until stop())."""

    def __init__(self, port: int = 0) -> None:
        """Serve on 127.0.0.1:`port` (0: any free port) in a thread."""
        self.mode = "up"
        self.released = threading.Event()
        self.requests = 0
        self.hosts: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                owner.requests += 1
                owner.hosts.append(self.headers.get("Host", ""))
                if owner.mode == "hang":
                    owner.released.wait(timeout=30)  # bounded, as every test
                    return
                if owner.mode == "draining":
                    self.reply(503, {**REPORT, "status": "draining",
                                     "draining": True})
                    return
                failing = owner.mode == "503" or (
                    owner.mode == "flap" and owner.requests % 2 == 0
                )
                self.reply(503 if failing else 200, REPORT)

            def reply(self, status: int, report: dict[str, object]) -> None:
                body = json.dumps(report).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Close the listening socket: probes get connection refused."""
        self.released.set()
        self.server.shutdown()
        self.server.server_close()




def unused_dns_port() -> int:
    """A loopback port on which both TCP and UDP are free at this moment."""
    for _ in range(100):
        with socket.create_server(("127.0.0.1", 0)) as tcp:
            port = tcp.getsockname()[1]
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            finally:
                udp.close()
            return port
    raise RuntimeError("no free loopback port for TCP and UDP")
