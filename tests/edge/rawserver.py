"""A raw-socket origin for framing faults no well-behaved server sends.

Each path maps to the exact bytes to send after reading the request
head; then the server closes (or half-closes and waits for the peer).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses


@dataclasses.dataclass
class Script:
    """What to send for one path, and how to end the connection."""

    data: bytes
    half_close: bool = False


class RawOrigin:
    """An asyncio TCP server on 127.0.0.1 that replays scripts."""

    def __init__(self) -> None:
        self.scripts: dict[str, Script] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            self.hits[path] += 1
            script = self.scripts.get(path, Script(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
            writer.write(script.data)
            await writer.drain()
            if script.half_close:
                writer.write_eof()
                await reader.read()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
