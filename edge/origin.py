"""The origin client: forwards a request, returns a streaming reply.

This module is the one boundary where aiohttp client exceptions become
``OriginError`` subclasses: unreachable (502), timeout (504) and
protocol errors such as bad framing or oversized headers (502, never
the 400 aiohttp reports for them: the client did nothing wrong).

Header handling (RFC 9110 §7.6): hop-by-hop fields and those named in
Connection are dropped in both directions, ``Via`` gets this edge's
hop, ``X-Forwarded-For`` gets the client address, and Host is set from
the site so the origin never sees a Host it was not configured for.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from aiohttp.http_exceptions import BadStatusLine

from edge import origin_framing
from edge.errors import (
    OriginError,
    OriginOutOfStepError,
    OriginProtocolError,
    OriginTimeoutError,
    OriginUnreachableError,
)

log = logging.getLogger("edge.origin")

# RFC 9110 §7.6.1 plus the non-standard fields that behave the same way.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer",
    "transfer-encoding", "upgrade", "proxy-authenticate",
    "proxy-authorization",
})
# Fields the edge generates itself when it answers.
GENERATED = frozenset({"content-length", "age", "x-cache"})
# Request fields that describe how the client framed its own message.
# The edge frames what it sends upstream itself (RFC 9112 §6.3): a
# Content-Length copied without the body it counts would make the
# origin read the next request on a pooled connection as that body
# (request smuggling, RFC 9112 §11.2). Expect concerns the client hop
# only: the edge sends any body at once.
CLIENT_FRAMING = ("Content-Length", "Expect")
# aiohttp adds these unless told not to; the origin must see the
# client's own (or none): an added Accept-Encoding would make the
# origin compress for a client that cannot decode.
_SKIP_AUTO = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
# Bytes per body read: bounds memory per transfer.
READ_CHUNK = 256 * 1024
# A pooled connection per origin host beyond which requests queue.
POOL_SIZE = 256
# Idle pooled connections are dropped after this many seconds: under
# the 5 s after which Apache httpd and Node.js close idle connections,
# so the edge rarely sends on a connection the origin is closing.
POOL_IDLE_SECONDS = 4.0
# RFC 9112 §9.3.1: requests that may be sent again when a connection
# failed before its reply (idempotent, and no content to resend).
RETRYABLE_METHODS = frozenset({"GET", "HEAD"})


def end_to_end(
    headers: CIMultiDict[str] | CIMultiDictProxy[str],
) -> CIMultiDict[str]:
    """Return ``headers`` without hop-by-hop fields (RFC 9110 §7.6.1)."""
    named: set[str] = set()
    for value in headers.getall("Connection", ()):
        named.update(v.strip().lower() for v in value.split(","))
    result: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lower = name.lower()
        if lower not in HOP_BY_HOP and lower not in named:
            result.add(name, value)

    return result


class OriginResponse:
    """An origin reply whose body has not been read yet.

    ``headers`` are end-to-end only. Iterate ``chunks()`` once; always
    call ``close()`` (a partly read body closes the connection).
    """

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.reason = response.reason or ""
        self.headers = end_to_end(response.headers)
        self.headers.popall("Content-Length", None)
        self.length = _declared_length(response)
        # RFC 9112 §6.1: a reply framed with both Transfer-Encoding and
        # Content-Length may be a smuggling attempt; do not reuse the
        # connection after it.
        self._reusable = not (
            "Transfer-Encoding" in response.headers
            and "Content-Length" in response.headers
        )
        self._complete = self.length == 0
        # A HEAD reply's Content-Length describes the GET body; keep it
        # to pass on (RFC 9110 §9.3.2).
        self.head_length = (
            response.headers.get("Content-Length")
            if response.method == "HEAD" else None
        )

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the body; raise OriginProtocolError if it ends early.

        When a Content-Length was declared and all of it arrived, a late
        payload error from the client library is ignored: the body is
        complete by count (aiohttp can report a truncation that did not
        happen when the origin half-closes right after the body).
        """
        received = 0
        try:
            async for chunk in self._response.content.iter_chunked(READ_CHUNK):
                received += len(chunk)
                yield chunk
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            if self.length is not None and received == self.length:
                return
            raise OriginProtocolError(f"origin body incomplete: {exc}") from None
        except asyncio.TimeoutError:
            raise OriginTimeoutError("origin body read timed out") from None
        if self.length is not None and received != self.length:
            raise OriginProtocolError(
                f"origin body has {received} bytes, expected {self.length}"
            )
        self._complete = True

    def close(self) -> None:
        """Release the connection (closing it unless the body was read)."""
        if self._complete and self._reusable:
            self._response.release()
        else:
            self._response.close()


def _declared_length(response: aiohttp.ClientResponse) -> int | None:
    # RFC 9112 §6.3: with Transfer-Encoding, Content-Length is ignored.
    if "Transfer-Encoding" in response.headers:
        return None
    if response.status in (204, 304) or response.method == "HEAD":
        return 0
    value = response.headers.get("Content-Length")
    if value is None or not value.strip().isdigit():
        return None

    return int(value)


class OriginClient:
    """A pooled aiohttp client shared by every site of the edge."""

    def __init__(
        self, via_name: str, connect_timeout: float, read_timeout: float,
        cdn_loop: str,
    ) -> None:
        self.via = f"1.1 {via_name}"
        # This edge's CDN-Loop entry (``Upstreams.loop_entry``).
        self.cdn_loop = cdn_loop
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_read=read_timeout
        )
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Create the session; call from the running loop."""
        self._session = aiohttp.ClientSession(
            connector=origin_framing.install(aiohttp.TCPConnector(
                limit=0, limit_per_host=POOL_SIZE,
                keepalive_timeout=POOL_IDLE_SECONDS,
            )),
            timeout=self._timeout,
            auto_decompress=False,
            skip_auto_headers=_SKIP_AUTO,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        """Close the session and its pooled connections."""
        if self._session is not None:
            await self._session.close()

    def forward_headers(
        self,
        client_headers: CIMultiDictProxy[str],
        host: str,
        peer: str | None,
    ) -> CIMultiDict[str]:
        """Return the headers to send upstream for a client request.

        Framing fields are never copied: ``request`` adds Content-Length
        when, and only when, it sends a body.
        """
        headers = end_to_end(client_headers)
        for name in CLIENT_FRAMING:
            headers.popall(name, None)
        headers.popall("Host", None)
        headers["Host"] = host
        via = headers.popall("Via", [])
        headers["Via"] = ", ".join([*via, self.via])
        if peer:
            forwarded = headers.popall("X-Forwarded-For", [])
            headers["X-Forwarded-For"] = ", ".join([*forwarded, peer])
        # RFC 8586: mark the request as relayed by this CDN (loop guard).
        loop = headers.popall("CDN-Loop", [])
        headers["CDN-Loop"] = ", ".join([*loop, self.cdn_loop])

        return headers

    async def request(
        self,
        method: str,
        origin: str,
        target: str,
        headers: CIMultiDict[str],
        body: AsyncIterator[bytes] | bytes | None = None,
        body_length: int | None = None,
    ) -> OriginResponse:
        """Send a request; return once the reply's headers have arrived.

        ``headers`` come from ``forward_headers``. A ``body`` is sent
        with ``Content-Length: body_length`` when that is known, else
        chunked; without a body no framing field is sent at all.
        """
        if body is not None and body_length is not None:
            headers["Content-Length"] = str(body_length)
        url = URL(origin + target, encoded=True)
        retries = 1 if method in RETRYABLE_METHODS and body is None else 0
        while True:
            try:
                return await self._send(method, url, headers, body)
            except OriginOutOfStepError as exc:
                if not retries:
                    raise
                retries -= 1
                log.info("origin connection out of step, sending again "
                         "url=%s error=%s", url, exc)

    async def _send(
        self,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        body: AsyncIterator[bytes] | bytes | None,
    ) -> OriginResponse:
        """Send once; convert aiohttp's exceptions to OriginError."""
        assert self._session is not None, "start() not called"
        origin = f"{url.scheme}://{url.raw_authority}"
        try:
            response = await self._session.request(
                method, url, headers=headers, data=body,
                allow_redirects=False, compress=None,
            )
        except asyncio.TimeoutError:
            raise OriginTimeoutError(f"{origin}: timed out") from None
        except aiohttp.ClientResponseError as exc:
            # Raised by the reply parser: oversized or malformed headers,
            # or no status line at all.
            error = OriginOutOfStepError if _has_cause(exc, BadStatusLine) \
                else OriginProtocolError
            raise error(f"{origin}: bad reply: {_first_line(exc.message)}") \
                from None
        except aiohttp.ServerDisconnectedError:
            raise OriginOutOfStepError(f"{origin}: closed without reply") \
                from None
        except (aiohttp.ClientError, OSError) as exc:
            raise OriginUnreachableError(f"{origin}: {exc}") from None

        return OriginResponse(response)


def _has_cause(exc: BaseException, kind: type[BaseException]) -> bool:
    """True when ``kind`` is in the chain of causes of ``exc``."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__

    return False


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]

    return lines[0] if lines else "-"


def describe(exc: OriginError) -> str:
    """Return a one-line description for logs."""
    return f"{type(exc).__name__}: {exc}"
