"""A client's request body, read against one deadline.

A request head is timed by ``edge.front``; its body would otherwise be
bounded only by the origin's patience, so a client trickling a byte at
a time (or sending nothing after a head that promised content) could
hold a client connection and an origin connection for as long as it
liked. ``TimedBody`` gives the whole body ``server.body_timeout``
seconds from the moment the edge starts reading it (like nginx's
``client_body_timeout``, but for the total: a trickle cannot reset it).

When the deadline passes, ``chunks`` raises: the origin client fails
the request mid-body, which marks that origin connection as unusable
(it is closed, never pooled: the origin is waiting for bytes it will
never get), and the proxy answers the client 408 and closes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

from aiohttp import StreamReader

log = logging.getLogger("edge.front")

# Bytes per read of the client's body: bounds memory per transfer.
READ_CHUNK = 64 * 1024


class BodyTimeoutError(Exception):
    """The client did not send its whole body in time (internal: the
    origin client sees it as a failed upload)."""


class TimedBody:
    """Iterate ``chunks()`` once to forward ``content`` upstream."""

    def __init__(self, content: StreamReader, timeout: float) -> None:
        self._content = content
        self._timeout = timeout
        self.is_expired = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the body; raise BodyTimeoutError past the deadline."""
        deadline = asyncio.get_running_loop().time() + self._timeout
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await self._content.readany()
            except TimeoutError:
                self.is_expired = True
                raise BodyTimeoutError(
                    f"request body not received within {self._timeout} s"
                ) from None
            if not chunk:
                return
            yield chunk
