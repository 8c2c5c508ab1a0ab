"""Writing responses to clients: from a stored entry, from a fill as it
arrives, or straight from the origin.

Hits do only per-request work here: copy the precomputed headers, add
Age and X-Cache, then send the body from memory or with sendfile. A
body that ends early is never finished cleanly: the connection is
aborted so the client sees the truncation (RFC 9112 §8).
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, BinaryIO

from aiohttp import web
from aiohttp import HttpVersion11
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDict

from edge.errors import EdgeError
from edge.storage import Body, Entry

log = logging.getLogger("edge.respond")

# RFC 9110 §15.4.5: fields a 304 carries from the selected response.
NOT_MODIFIED_FIELDS = (
    "Cache-Control", "Content-Location", "Date", "ETag", "Expires", "Vary",
    "Last-Modified",
)


# Fields aiohttp adds to every response unless already present: a
# Server naming its version (disclosure nobody needs) and, for any
# body, a guessed Content-Type. RFC 9110 §8.3: a recipient may sniff
# when Content-Type is absent, so a cache must not invent one.
_ADDED_BY_AIOHTTP = ("Content-Type", "Server")


class StreamResponse(web.StreamResponse):
    """aiohttp's StreamResponse sending only the fields it was given.

    Every response of the edge is one of these (or ``Response``). The
    override hooks aiohttp's header preparation, an internal method:
    ``tests/edge/test_forwarding.py`` pins the result on the wire.
    """

    async def _prepare_headers(self) -> None:
        given = [name for name in _ADDED_BY_AIOHTTP if name in self.headers]
        request = self._req
        if request is not None and request.version < HttpVersion11 and \
                self.content_length is None and not self._must_be_empty_body:
            # RFC 9112 §6.3 item 8, §9.3: without chunked coding (1.1
            # only) an HTTP/1.0 client learns where a body of unknown
            # length ends from the close. aiohttp leaves such a
            # connection open when the client asked for keep-alive.
            self.force_close()
        await super()._prepare_headers()
        for name in _ADDED_BY_AIOHTTP:
            if name not in given:
                self.headers.popall(name, None)


class Response(StreamResponse, web.Response):
    """aiohttp's Response sending only the fields it was given."""


class SendfileResponse(StreamResponse):
    """A response whose body is a byte range of an open file, sent with
    sendfile; the response owns the file and closes it once sent.

    aiohttp's FileResponse cannot be used: it replaces ETag and
    Last-Modified with values from the file's own metadata. The file is
    opened before the response is made, so a body deleted in between
    (evicted, purged) is still sent whole.
    """

    def __init__(
        self, fobj: BinaryIO, offset: int, count: int, status: int,
        reason: str | None, headers: CIMultiDict[str],
    ) -> None:
        super().__init__(status=status, reason=reason, headers=headers)
        self._fobj = fobj
        self._offset = offset
        self._count = count
        self.content_length = count

    async def prepare(
        self, request: web.BaseRequest
    ) -> AbstractStreamWriter | None:
        """Send headers, then the file range; returns the writer."""
        if self.prepared:
            return await super().prepare(request)
        with self._fobj as fobj:
            writer = await super().prepare(request)
            if request.method == "HEAD" or self._count == 0:
                return writer
            transport = request.transport
            if transport is None or transport.is_closing():
                raise ConnectionResetError("client gone")
            loop = asyncio.get_running_loop()
            await loop.sendfile(transport, fobj, self._offset, self._count)
        await super().write_eof()

        return writer


# Answers that reuse a stored response without asking the origin: they
# never carry the fields a qualified no-cache lists (RFC 9111 §5.2.2.4).
UNVALIDATED = frozenset({"HIT", "STALE"})


def withhold(headers: CIMultiDict[str], fields: tuple[str, ...],
             x_cache: str) -> None:
    """Drop ``fields`` from an answer that was not revalidated."""
    if x_cache in UNVALIDATED:
        for name in fields:
            headers.popall(name, None)


def cached_headers(entry: Entry, age: float, x_cache: str) -> CIMultiDict[str]:
    """Return the stored headers plus Age (exactly once) and X-Cache,
    without the fields withheld from unvalidated reuse."""
    headers = entry.headers.copy()
    withhold(headers, entry.policy.withheld_fields, x_cache)
    # RFC 9111 §5.1: Age is a non-negative integer of seconds.
    headers["Age"] = str(int(max(0.0, age)))
    headers["X-Cache"] = x_cache

    return headers


# Fields every whole-body HIT gets from the edge itself: stored ones
# (from an origin, or metadata written before they were filtered out)
# are left out rather than sent twice.
HIT_FIELDS = frozenset({"accept-ranges", "x-cache", "content-length", "age"})


def hit_head(entry: Entry) -> bytes:
    """Return the status line and headers of a whole-body HIT, without
    Age and the blank line; computed once per stored object."""
    meta = entry.meta
    left_out = HIT_FIELDS.union(entry.policy.withheld_fields)
    lines = [f"HTTP/1.1 {meta.status} {meta.reason}"]
    lines.extend(f"{name}: {value}" for name, value in meta.headers
                 if name.lower() not in left_out)
    lines.append("Accept-Ranges: bytes")
    lines.append("X-Cache: HIT")
    lines.append(f"Content-Length: {meta.length}")

    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")


def from_entry(
    entry: Entry, body: Body, headers: CIMultiDict[str],
    status: int | None = None, offset: int = 0, count: int | None = None,
) -> web.StreamResponse:
    """Return a response for a stored object (or a range of it) whose
    ``body`` came from ``Storage.get_body``; an open file is closed by
    the response."""
    status = status or entry.meta.status
    # None: aiohttp's standard phrase for a status of ours (206).
    reason = entry.meta.reason if status == entry.meta.status else None
    if count is None:
        count = entry.meta.length - offset
    if isinstance(body, bytes):
        response = Response(
            status=status, reason=reason, headers=headers,
            body=body[offset:offset + count] if count != len(body) else body,
        )
        return response

    return SendfileResponse(body, offset, count, status, reason, headers)


def not_modified(headers: CIMultiDict[str]) -> web.Response:
    """Return a 304 carrying the fields RFC 9110 §15.4.5 asks for."""
    kept: CIMultiDict[str] = CIMultiDict()
    for name in (*NOT_MODIFIED_FIELDS, "Age", "X-Cache"):
        for value in headers.getall(name, ()):
            kept.add(name, value)

    return Response(status=304, headers=kept)


def simple(status: int, x_cache: str, text: str = "",
           close: bool = False) -> web.Response:
    """Return a small text response generated by the edge itself."""
    headers = {"X-Cache": x_cache, "Cache-Control": "no-store"}
    body = (text or web.Response(status=status).reason or "") + "\n"
    response = Response(status=status, text=body, headers=headers)
    if close:
        # Sends Connection: close and closes after the response.
        response.force_close()

    return response


async def stream(
    request: web.BaseRequest,
    status: int,
    reason: str,
    headers: CIMultiDict[str],
    length: int | None,
    body: AsyncIterator[bytes] | None,
) -> web.StreamResponse:
    """Send a body as it arrives; abort the connection if it ends early.

    ``body`` is None for HEAD. A client hanging up stops the copy and is
    not an error. Returns the prepared response.
    """
    response = StreamResponse(status=status, reason=reason, headers=headers)
    if length is not None:
        response.content_length = length
    await response.prepare(request)
    if body is None or request.method == "HEAD":
        await response.write_eof()
        return response
    try:
        async for chunk in body:
            await response.write(chunk)
    except EdgeError as exc:
        log.warning("body ended early path=%s error=%s", request.path, exc)
        abort(request)
        return response
    except ConnectionError:
        # A client hanging up is routine, not an error (debug level).
        log.debug("client hung up path=%s", request.path)
        abort(request)
        return response
    except asyncio.CancelledError:
        abort(request)
        raise
    finally:
        close = getattr(body, "aclose", None)
        if close is not None:
            await close()
    await response.write_eof()

    return response


async def continue_if_expected(request: web.BaseRequest) -> None:
    """Send an interim 100 when the client waits for one before sending
    its body; call just before the body is read.

    RFC 9110 §10.1.1: a client sending ``Expect: 100-continue`` may wait
    before sending content. The edge never forwards Expect (it sends
    bodies upstream at once), so it answers for itself.
    """
    expect = request.headers.get("Expect", "")
    if expect.strip().lower() != "100-continue" or \
            request.version < HttpVersion11:
        return
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    # The interim response is not the answer: ``front`` tells a started
    # answer from ``output_size``.
    request.writer.output_size = 0


def abort(request: web.BaseRequest) -> None:
    """Drop the client connection without finishing the response."""
    transport = request.transport
    if transport is not None:
        transport.abort()
