"""Client connections on aiohttp's general path: deadlines and faults.

aiohttp parses and dispatches requests; this module adds what a server
on the open internet needs around it:

- a request-head deadline: a head must arrive whole within
  ``header_timeout`` seconds of its first byte, or the client gets 408
  and the connection is closed (like nginx's client_header_timeout), so
  a client sending a header line every few seconds cannot hold a
  connection for ever (slowloris). A head that starts while a request
  is still being handled (pipelining) is bounded by the keep-alive
  timeout instead, which aiohttp counts from the end of each response.
- malformed requests (a repeated Host, two Content-Lengths, obs-fold,
  bad characters: RFC 9112 §2.2, §3.2, §5.2, §6.3) are the client's
  fault: one warning line with the peer, an access-log line, and a 400
  carrying X-Cache like every other response. A handler crash stays an
  error with its traceback: that is a bug of ours.

The fast path (``edge.fastpath``) keeps the same head deadline itself
and passes what is left of it on when it hands a connection over.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Protocol

from aiohttp import web

from edge import respond

log = logging.getLogger("edge.front")

# What a client gets when its request head is too slow (RFC 9110
# §15.5.9: close the connection after a 408).
TIMEOUT_REPLY = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
    b"Cache-Control: no-store\r\nX-Cache: BYPASS\r\n"
    b"Content-Length: 0\r\n\r\n"
)


class Hooks(Protocol):
    """What the front needs from the edge."""

    @property
    def header_timeout(self) -> float:
        """Seconds a request head may take to arrive."""

    def log_access(
        self, request: web.BaseRequest, response: web.StreamResponse,
        note: str,
    ) -> None:
        """Count and log one answered request."""


class EdgeServer(web.Server):
    """aiohttp's low-level server making ``EdgeRequestHandler`` protocols."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        hooks: Hooks,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.hooks = hooks
        self._handler_kwargs = kwargs

    def __call__(self) -> EdgeRequestHandler:
        """Return the protocol for one new (or handed-over) connection."""
        return EdgeRequestHandler(
            self, loop=asyncio.get_running_loop(), **self._handler_kwargs
        )


class EdgeRequestHandler(web.RequestHandler):
    """aiohttp's connection protocol with a head deadline and quiet 400s.

    ``request_started`` and ``request_finished`` are called by the
    edge's handler around each request it answers.
    """

    def __init__(self, server: EdgeServer, **kwargs: Any) -> None:
        super().__init__(server, **kwargs)
        self._hooks = server.hooks
        self._busy = False
        self._head_timer: asyncio.TimerHandle | None = None

    def watch_head(self, deadline: float | None = None) -> None:
        """Time out the request head now arriving at ``deadline``
        (loop time; default ``header_timeout`` from now)."""
        if self._head_timer is not None or self._busy:
            return
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self._hooks.header_timeout
        self._head_timer = loop.call_at(deadline, self._head_timed_out)

    def data_received(self, data: bytes) -> None:
        """Feed aiohttp's parser; a byte while idle starts a head."""
        self.watch_head()
        super().data_received(data)

    def request_started(self) -> None:
        """A whole head arrived and is being answered."""
        self._busy = True
        self._cancel_head_timer()

    def request_finished(self) -> None:
        """The answer is written; the next head gets a new deadline."""
        self._busy = False

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        transport = self.transport
        if self._busy or transport is None or transport.is_closing():
            return
        peer = transport.get_extra_info("peername")
        log.info("request head timed out peer=%s seconds=%s",
                 peer[0] if peer else "-", self._hooks.header_timeout)
        transport.write(TIMEOUT_REPLY)
        self.force_close()
        transport.close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Answer a request aiohttp could not parse, or a handler crash.

        Overrides aiohttp's: a parse error is a one-line warning (the
        client's fault), a crash an error with its traceback (ours).
        Always closes the connection.
        """
        self.request_started()
        if status >= 500:
            log.error("request failed peer=%s", request.remote, exc_info=exc)
        else:
            log.warning("malformed request peer=%s status=%d error=%s",
                        request.remote, status, _first_line(exc, message))
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        response = respond.simple(status, "BYPASS", close=True)
        self._hooks.log_access(request, response, "malformed"
                               if status < 500 else "failed")

        return response


def _first_line(exc: BaseException | None, message: str | None) -> str:
    """Return the first line of the parser's complaint, without the
    echoed request bytes that follow it."""
    text = getattr(exc, "message", None) or message or repr(exc)
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]

    return lines[0][:200] if lines else "-"
