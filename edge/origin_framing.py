"""Origin reply framing: bytes past a reply's declared end are dropped.

An origin may send more body than its Content-Length declares (a
miscounted length, a stray newline after the body). RFC 9112 §6.3 makes
the declared length the end of the message: the excess is not part of
it, and the connection can no longer be trusted. aiohttp's own parser
reads the excess as the next reply's status line and fails the whole
exchange, losing the reply it had already parsed.

This module gives the origin pool a response parser that treats the end
of every reply body as the end of the message stream when more bytes
follow it in the same read: aiohttp then keeps those bytes as an
upgraded connection's tail, never parses them, and closes the
connection instead of pooling it (its ``should_close``). A reply whose
body ends exactly at the end of a read leaves the parser as it was, so
ordinary keep-alive connections are pooled as before; excess arriving
in a later read is found out of step by the next request, which
``OriginClient`` sends again (RFC 9112 §9.3.1).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, cast

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.http_parser import HttpResponseParserPy


class _EndAtBodyParser(HttpResponseParserPy):
    """aiohttp's pure-Python reply parser, stopping after each body."""

    _real_upgrade = False

    # The base parser checks this flag when a body is complete and then
    # stops parsing (``upgraded``); reading it as always set makes every
    # complete body end the parsed stream. Writes keep a real upgrade.
    @property  # type: ignore[override]
    def _pending_upgrade(self) -> bool:
        return True

    @_pending_upgrade.setter
    def _pending_upgrade(self, value: bool) -> None:
        self._real_upgrade = self._real_upgrade or value

    def feed_data(self, data: bytes, *args: Any, **kwargs: Any) -> Any:
        """Parse ``data``; bytes after a complete body become the tail."""
        messages, upgraded, tail = super().feed_data(data, *args, **kwargs)
        if upgraded and not tail and not self._real_upgrade:
            # Nothing followed the body: the connection stays usable.
            self._upgraded = False
            upgraded = False

        return messages, upgraded, tail


class _Handler(ResponseHandler):
    """aiohttp's connection protocol with the parser above."""

    def set_response_params(self, **params: Any) -> None:
        """Set up as aiohttp does, then swap in ``_EndAtBodyParser``."""
        super().set_response_params(**params)
        self._parser = _EndAtBodyParser(
            self,
            self._loop,
            params.get("read_bufsize", 2**16),
            timer=params.get("timer"),
            payload_exception=aiohttp.ClientPayloadError,
            response_with_body=not params.get("skip_payload", False),
            read_until_eof=params.get("read_until_eof", False),
            auto_decompress=params.get("auto_decompress", True),
            max_line_size=params.get("max_line_size", 8190),
            max_field_size=params.get("max_field_size", 8190),
            max_headers=params.get("max_headers", 128),
        )


def install(connector: aiohttp.TCPConnector) -> aiohttp.TCPConnector:
    """Make ``connector`` open connections with ``_Handler``; return it.

    Call from the running loop, before the connector's first request.
    """
    # aiohttp has no public hook for the connection protocol; its
    # connector keeps the protocol factory in this attribute.
    factory = functools.partial(_Handler, loop=asyncio.get_running_loop())
    connector._factory = cast("functools.partial[ResponseHandler]", factory)

    return connector
