"""The hit fast path: answer simple requests for fresh, small, stored
objects straight from precomputed bytes, without aiohttp's machinery.

Why: aiohttp spends most of a small hit in per-request objects (a
request, a response, a task, header serialisation). A CDN's common case
is a plain GET for a hot object, and everything about its answer except
Age is known when the object is stored. So every connection starts in
this protocol, which parses request heads itself; the first request it
cannot answer — anything but a plain GET/HEAD, any header outside a
short allowlist, a miss, a stale entry, a Vary'd or disk-only object —
hands the connection and its unread bytes to aiohttp for good
(``transport.set_protocol``). Correctness therefore rests on aiohttp
for everything unusual; this module only has to recognise the usual.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from edge import front

if TYPE_CHECKING:
    from edge.app import Edge

log = logging.getLogger("edge.fastpath")
access_log = logging.getLogger("edge.access")

# Request fields that cannot change the answer for an object without
# Vary (anything else, e.g. Range, conditionals, Cache-Control,
# Authorization, Cookie, Connection: close, goes the general way).
ALLOWED_FIELDS = frozenset({
    b"host", b"user-agent", b"accept", b"accept-encoding",
    b"accept-language", b"connection", b"referer",
    # Added by child edges; they only describe the path of the request.
    b"via", b"x-forwarded-for", b"cdn-loop",
})
# A request head this long without its end goes the general way, whose
# parser applies the configured limits.
MAX_FAST_HEAD = 8192
# Bodies up to this are joined with their head into one write.
JOIN_LIMIT = 16 * 1024


class FastProtocol(asyncio.Protocol):
    """One client connection while it only asks for plain fresh hits."""

    def __init__(self, edge: Edge, fallback: front.EdgeServer) -> None:
        self._edge = edge
        self._fallback = fallback
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._paused = False
        self.peer = ""
        self.last_active = 0.0
        # Loop time by which the partial head in the buffer must be
        # whole (``front`` explains the deadline), and its timer.
        self._head_deadline: float | None = None
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        self.last_active = time.monotonic()
        self._edge.fast_connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._edge.fast_connections.discard(self)
        self._transport = None
        self._end_head_deadline()

    def pause_writing(self) -> None:
        self._paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self._transport is not None:
            self._transport.resume_reading()
            self._process()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self.last_active = time.monotonic()
        self._process()

    def close(self) -> None:
        """Close the connection once what is written has been sent
        (shutdown, idle timeout)."""
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection now, unsent bytes included."""
        if self._transport is not None:
            self._transport.abort()

    def _process(self) -> None:
        transport = self._transport
        buffer = self._buffer
        while buffer and not self._paused and transport is not None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_FAST_HEAD:
                    self._hand_over()
                else:
                    self._start_head_deadline()
                return
            answer = self._edge.fast_answer(bytes(buffer[:end]), self.peer)
            if answer is None:
                self._hand_over()
                return
            del buffer[:end + 4]
            self._end_head_deadline()
            for part in answer:
                transport.write(part)

    def _start_head_deadline(self) -> None:
        if self._head_timer is not None:
            return
        loop = asyncio.get_running_loop()
        self._head_deadline = loop.time() + self._edge.header_timeout
        self._head_timer = loop.call_at(self._head_deadline,
                                        self._head_timed_out)

    def _end_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = None
        self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        transport = self._transport
        if transport is None or b"\r\n\r\n" in self._buffer:
            # Whole heads wait only because the client is not reading.
            return
        log.info("request head timed out peer=%s seconds=%s", self.peer,
                 self._edge.header_timeout)
        transport.write(front.TIMEOUT_REPLY)
        transport.close()

    def _hand_over(self) -> None:
        """Give the connection and its unread bytes to aiohttp, with
        what is left of the head deadline."""
        transport = self._transport
        if transport is None:
            return
        self._edge.fast_connections.discard(self)
        deadline = self._head_deadline
        self._end_head_deadline()
        handler = self._fallback()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self._paused:
            handler.pause_writing()
        data = bytes(self._buffer)
        self._buffer.clear()
        self._transport = None
        if data:
            handler.watch_head(deadline)
            handler.data_received(data)


def parse_head(head: bytes) -> tuple[bytes, bytes, bytes] | None:
    """Return (method, target, host) of a plain request head, or None.

    None means "not for the fast path": another version, a field outside
    the allowlist, a repeated or missing Host, or anything malformed.
    """
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1":
        return None
    method, target = parts[0], parts[1]
    if method not in (b"GET", b"HEAD") or not target.startswith(b"/"):
        return None
    host = None
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        name = name.lower()
        if not sep or name not in ALLOWED_FIELDS:
            return None
        if name == b"host":
            if host is not None:
                return None
            host = value.strip()
        elif name == b"connection" and value.strip().lower() != b"keep-alive":
            return None
    if not host:
        return None

    return method, target, host
