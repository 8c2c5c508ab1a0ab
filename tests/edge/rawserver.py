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
    # Keep the connection open (no EOF) until the peer closes it.
    hold_open: bool = False


class LoopbackServer:
    """An asyncio TCP server on 127.0.0.1 (port 0) running ``_serve``."""

    def __init__(self) -> None:
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
        raise NotImplementedError


class RawOrigin(LoopbackServer):
    """Replays a script per path."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: dict[str, Script] = {}
        self.hits: collections.Counter[str] = collections.Counter()

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
            if script.half_close or script.hold_open:
                await reader.read()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@dataclasses.dataclass
class Received:
    """One request as the keep-alive origin parsed it off the wire."""

    line: str
    fields: dict[str, str]
    body: bytes


class KeepAliveOrigin(LoopbackServer):
    """An origin that answers each request before reading its body.

    Like nginx serving a static file, it replies at once (the body names
    the request line, ``max-age=600``) and only then skips the
    Content-Length or chunked body, keeping the connection open. So a
    request that declares a body it does not send makes this origin
    read the next request on the connection as that body: the framing
    fault behind request smuggling.

    ``overrun`` bytes, when set, are sent once just before the second
    reply on a connection: as if the first reply had carried more body
    than its Content-Length and the rest arrived late.
    """

    def __init__(self, read_first: bool = False) -> None:
        super().__init__()
        self.received: list[Received] = []
        self.overrun = b""
        self.connections = 0
        # Read each request body before answering (as an application
        # server does) instead of after.
        self.read_first = read_first

    @property
    def lines(self) -> list[str]:
        """The request lines received, in order."""
        return [r.line for r in self.received]

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        replies = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                fields = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name:
                        fields[name.strip().lower()] = value.strip()
                received = Received(lines[0], fields, b"")
                self.received.append(received)
                if self.read_first:
                    received.body = await _read_body(reader, fields)
                answer = lines[0].encode("latin-1")
                replies += 1
                if replies == 2 and self.overrun:
                    writer.write(self.overrun)
                    self.overrun = b""
                writer.write(
                    b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (
                        len(answer),
                        b"" if lines[0].startswith("HEAD ") else answer))
                await writer.drain()
                if not self.read_first:
                    received.body = await _read_body(reader, fields)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()


async def _read_body(reader: asyncio.StreamReader, fields: dict[str, str]) -> bytes:
    if fields.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            body += chunk[:-2]
            if size == 0:
                # The last chunk's CRLF read above ends an empty trailer.
                return body
    return await reader.readexactly(int(fields.get("content-length", "0")))
