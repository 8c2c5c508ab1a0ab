"""Client connections on loopback: the request-head deadline on both
paths, and malformed requests answered quietly with X-Cache."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator

import pytest

from tests.edge.conftest import EdgeUnderTest, Origin, raw_exchange, serve_edge

HEAD_TIMEOUT = 0.5
# A trickling client is given this long before the test gives up: well
# past the deadline, so a missing deadline fails instead of hanging.
TRICKLE_LIMIT = 3.0


@pytest.fixture
async def quick_edge(
    origin: Origin, tmp_path: Any
) -> AsyncIterator[EdgeUnderTest]:
    """An edge whose request heads must arrive within HEAD_TIMEOUT."""
    origin.static("/a", "a", Cache_Control="max-age=600")
    edges = serve_edge(origin.url, tmp_path, header_timeout=HEAD_TIMEOUT)
    yield await anext(edges)
    await edges.aclose()


async def _trickle(
    port: int, before: bytes, start: bytes
) -> tuple[bytes, float]:
    """Send ``before`` and read its reply, then ``start`` and one header
    line every 0.1 s until the edge closes; return what came back after
    ``start`` and how long the head lasted."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if before:
            writer.write(before)
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(1)
        writer.write(start)
        began = time.monotonic()
        for number in range(int(TRICKLE_LIMIT / 0.1)):
            try:
                data = await asyncio.wait_for(reader.read(65536), 0.1)
            except asyncio.TimeoutError:
                writer.write(b"X-Trickle-%d: 1\r\n" % number)
                continue
            rest = await asyncio.wait_for(reader.read(-1), 1.0)
            return data + rest, time.monotonic() - began
        return b"", time.monotonic() - began
    finally:
        writer.close()


PLAIN = b"GET /a HTTP/1.1\r\nHost: cdn.example.com\r\n"
# Any field outside the fast path's list moves a connection to aiohttp.
GENERAL = b"GET /a HTTP/1.1\r\nHost: cdn.example.com\r\nX-Other: 1\r\n"
HUGE = PLAIN + b"".join(b"X-Pad-%d: %s\r\n" % (n, b"p" * 1000)
                        for n in range(9))


@pytest.mark.parametrize("before, start", [
    (b"", PLAIN),                         # fast path from the first byte
    (GENERAL + b"\r\n", PLAIN),           # aiohttp path, next request
    (b"", GENERAL),                       # handed over when whole
    (b"", HUGE),                          # handed over part-way
], ids=["fast", "general-next", "general-first", "handed-over"])
async def test_trickled_request_head_gets_408_and_close(
    quick_edge: EdgeUnderTest, before: bytes, start: bytes
) -> None:
    """A head that keeps arriving a line at a time is cut off at the
    head deadline with 408 and X-Cache, whichever path it is on."""
    reply, seconds = await _trickle(quick_edge.port, before, start)

    assert reply.startswith(b"HTTP/1.1 408 ")
    assert b"X-Cache: BYPASS" in reply
    assert HEAD_TIMEOUT <= seconds < HEAD_TIMEOUT + 1.0


async def test_idle_keepalive_and_slow_but_timely_heads_are_served(
    quick_edge: EdgeUnderTest,
) -> None:
    """The deadline counts from a head's first byte: an idle keep-alive
    connection outlives it, and a head finished in time is answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", quick_edge.port)
    replies = []
    for prefix in (PLAIN, GENERAL):
        await asyncio.sleep(HEAD_TIMEOUT * 1.5)
        writer.write(prefix)
        await asyncio.sleep(HEAD_TIMEOUT / 2)
        writer.write(b"\r\n")
        replies.append(await asyncio.wait_for(
            reader.readuntil(b"\r\n\r\n"), 2))
        await reader.readexactly(1)
    writer.close()

    assert [r.split(b"\r\n")[0] for r in replies] == [b"HTTP/1.1 200 OK"] * 2


@pytest.mark.parametrize("head", [
    b"GET /a HTTP/1.1\r\nHost: cdn.example.com\r\nHost: other.example\r\n",
    b"POST /a HTTP/1.1\r\nHost: cdn.example.com\r\nContent-Length: 1\r\n"
    b"Content-Length: 2\r\n",
    b"GET /a HTTP/1.1\r\nHost: cdn.example.com\r\nX-A: 1\r\n  folded\r\n",
    b"GET /a\x01b HTTP/1.1\r\nHost: cdn.example.com\r\n",
    b"G(T /a HTTP/1.1\r\nHost: cdn.example.com\r\n",
], ids=["two-hosts", "two-lengths", "obs-fold", "bad-target", "bad-method"])
async def test_malformed_request_is_one_warning_and_a_400_with_x_cache(
    edge: EdgeUnderTest, caplog: pytest.LogCaptureFixture, head: bytes
) -> None:
    """A request the parser rejects gets 400 with X-Cache, one warning
    line naming the peer (no traceback) and an access-log line."""
    caplog.set_level(logging.INFO)

    reply = await raw_exchange(edge.port, head + b"\r\n")

    assert reply.split(b"\r\n")[0].endswith(b" 400 Bad Request")
    assert b"X-Cache: BYPASS" in reply
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.name, r.levelname) for r in loud] == [("edge.front", "WARNING")]
    assert "peer=127.0.0.1" in loud[0].getMessage()
    assert loud[0].exc_info is None and "\n" not in loud[0].getMessage()
    access = [r.getMessage() for r in caplog.records if r.name == "edge.access"]
    assert len(access) == 1 and " 400 BYPASS " in access[0]
