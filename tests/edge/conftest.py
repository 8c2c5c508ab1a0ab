"""Fixtures for edge tests: a scriptable origin and an in-process edge.

The origin is a real aiohttp server on 127.0.0.1 (port 0) whose routes
each test scripts; it records every request it receives. The edge runs
in the test's event loop on its own port 0 with an injected clock, so
time-dependent cases advance time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import socket
import time
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from edge.app import Edge
from edge.config import EdgeConfig, ServerConfig, SiteConfig
from edge.httpdate import format_http_date

HOST = "cdn.example.com"
Handler = Callable[[web.BaseRequest, int], Awaitable[web.StreamResponse]]


class FakeClock:
    """A wall clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclasses.dataclass
class Seen:
    """One request as the origin received it."""

    method: str
    path: str
    headers: CIMultiDictProxy[str]


class Origin:
    """A scriptable origin server that records what it was asked."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.routes: dict[str, Handler] = {}
        self.seen: list[Seen] = []
        self.hits: collections.Counter[str] = collections.Counter()
        self.failing: int | None = None
        self._runner: web.ServerRunner | None = None
        self.port = 0

    def route(self, path: str, handler: Handler) -> None:
        """Answer ``path`` with ``handler(request, hit_number)``."""
        self.routes[path] = handler

    def static(self, path: str, body: bytes | str = b"ok",
               **headers: str) -> None:
        """Answer ``path`` with a fixed body and headers."""
        data = body.encode() if isinstance(body, str) else body
        fields = {k.replace("_", "-"): v for k, v in headers.items()}

        async def handler(request: web.BaseRequest, n: int) -> web.Response:
            return web.Response(body=data, headers=fields)

        self.route(path, handler)

    def count(self, path: str) -> int:
        """Requests received for ``path``."""
        return self.hits[path]

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.path_qs, request.headers))
        self.hits[request.path] += 1
        if self.failing is not None:
            return web.Response(status=self.failing, text="failing")
        handler = self.routes.get(request.path)
        if handler is None:
            return web.Response(status=404, text="not found")

        response = await handler(request, self.hits[request.path])
        # Date follows the test's clock, as a real origin's would.
        if "Date" not in response.headers:
            response.headers["Date"] = format_http_date(self.clock())

        return response

    async def start(self) -> None:
        self._runner = web.ServerRunner(web.Server(self._handle, max_headers=1024))
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclasses.dataclass
class Reply:
    """What a client received."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def x_cache(self) -> str:
        return self.headers.get("X-Cache", "")


class EdgeUnderTest:
    """An edge serving on loopback, with its clock and a client."""

    def __init__(self, edge: Edge, clock: FakeClock) -> None:
        self.edge = edge
        self.clock = clock
        self.port = 0
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        await self.edge.start()
        self.port = await self.edge.listen("127.0.0.1", 0)
        self.session = aiohttp.ClientSession(
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Accept"),
        )

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        await self.edge.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def request(
        self, method: str, path: str, host: str = HOST, **headers: Any
    ) -> Reply:
        """Send one request with ``Host: host`` and read the whole reply.

        Returns after the fills this request started have been committed,
        so the next request of a sequence sees the stored object.
        """
        assert self.session is not None
        fields = {k.replace("_", "-"): v for k, v in headers.items()}
        fields.setdefault("Host", host)
        async with self.session.request(
            method, self.url + path, headers=fields, allow_redirects=False
        ) as response:
            body = await response.read()
        await self.edge.proxy.fills.wait_all()

        return Reply(response.status, response.headers, body)

    async def get(self, path: str, **headers: Any) -> Reply:
        return await self.request("GET", path, **headers)


def make_config(
    origin_url: str, cache_dir: str, **server: Any
) -> EdgeConfig:
    """Return a configuration with one site, cdn.example.com."""
    settings: dict[str, Any] = dict(
        host="127.0.0.1", port=0, name="edge-test", cache_dir=cache_dir,
        admin_token="secret-token", access_log=False,
    )
    settings.update(server)
    site = SiteConfig(hostname=HOST, aliases=("www.cdn.example.com",),
                      origin=origin_url, negative_ttl=0)

    return EdgeConfig(path="test.toml", server=ServerConfig(**settings),
                      sites=(site,))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def origin(clock: FakeClock) -> AsyncIterator[Origin]:
    server = Origin(clock)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def edge(
    origin: Origin, tmp_path: Any, clock: FakeClock
) -> AsyncIterator[EdgeUnderTest]:
    config = make_config(origin.url, str(tmp_path / "cache"))
    under_test = EdgeUnderTest(Edge(config, clock=clock), clock)
    await under_test.start()
    yield under_test
    await under_test.stop()


async def serve_edge(
    origin_url: str, tmp_path: Any, **server: Any
) -> AsyncIterator[EdgeUnderTest]:
    """Yield a started edge in front of ``origin_url``; stop it after.

    For fixtures whose origin is not the scriptable ``Origin``.
    """
    clock = FakeClock()
    config = make_config(origin_url, str(tmp_path / "cache"), **server)
    under_test = EdgeUnderTest(Edge(config, clock=clock), clock)
    await under_test.start()
    try:
        yield under_test
    finally:
        await under_test.stop()


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_up(session: aiohttp.ClientSession, url: str) -> None:
    """Wait (at most 5 s) until the edge at ``url`` answers its health."""
    for _ in range(100):
        try:
            async with session.get(url + "/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("edge did not start")


async def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes to 127.0.0.1:port and read until the peer closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(-1), timeout)
    finally:
        writer.close()
