"""The lab's origin: a small static web server that edges fetch misses from.

It stands in for a customer's site.  It serves the files under one
directory with the validators and freshness headers a real site sends
(Cache-Control, ETag, Last-Modified) and answers conditional requests with
304, so the edges' caching can be watched end to end.  It counts every
request it serves in its log, which is how a reader of the lab sees that a
HIT never reached it.

Run as ``python -m dnsrouter.lab_origin --listen 127.0.0.1:8081 --root DIR``.
It blocks until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import http.server
import logging
import mimetypes
import signal
import sys
import threading
import urllib.parse
from pathlib import Path
from types import FrameType

log = logging.getLogger("dnsrouter.lab.origin")

# Short enough that a lab user sees an EXPIRED/REVALIDATED cycle within a
# minute, long enough that repeated requests in a demo are HITs.
MAX_AGE_SECONDS = 60


class OriginServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that knows the directory it serves."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], root: Path) -> None:
        super().__init__(address, OriginHandler)
        self.root = root.resolve()


class OriginHandler(http.server.BaseHTTPRequestHandler):
    """Serves GET and HEAD for files below the server's root directory."""

    server_version = "pycdn-lab-origin"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def _serve(self, send_body: bool) -> None:
        path = self._find_file()
        if path is None:
            self._send_plain(404, b"not found\n", send_body)
            return

        body = path.read_bytes()
        etag = '"%s"' % hashlib.sha256(body).hexdigest()[:16]
        last_modified = email.utils.formatdate(path.stat().st_mtime, usegmt=True)
        if self.headers.get("If-None-Match") == etag:
            self._send_headers(304, etag, last_modified, None, None)
            return

        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._send_headers(200, etag, last_modified, content_type, len(body))
        if send_body:
            self.wfile.write(body)

    def _find_file(self) -> Path | None:
        assert isinstance(self.server, OriginServer)
        root = self.server.root
        target = urllib.parse.unquote(self.path.split("?", 1)[0])
        relative = target.lstrip("/") or "index.html"
        candidate = (root / relative).resolve()

        # A path that climbs out of the root is answered like a missing file.
        if not candidate.is_relative_to(root) or not candidate.is_file():
            return None

        return candidate

    def _send_headers(
        self,
        status: int,
        etag: str,
        last_modified: str,
        content_type: str | None,
        length: int | None,
    ) -> None:
        self.send_response(status)
        self.send_header("Cache-Control", f"public, max-age={MAX_AGE_SECONDS}")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", last_modified)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send_plain(self, status: int, body: bytes, send_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.info("origin request peer=%s %s", self.client_address[0], format % args)


def parse_listen(text: str) -> tuple[str, int]:
    """Split ``host:port`` or ``[v6]:port``; raises ValueError when malformed."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")

    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dnsrouter.lab_origin")
    parser.add_argument("--listen", default="127.0.0.1:8081")
    parser.add_argument("--root", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")

    host, port = parse_listen(args.listen)
    server = OriginServer((host, port), args.root)

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("origin listening on %s:%d serving %s", host, port, server.root)
    server.serve_forever()
    server.server_close()

    return 0


if __name__ == "__main__":
    sys.exit(main())
