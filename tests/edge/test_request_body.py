"""Request bodies have a deadline, through real HTTP on loopback.

A client whose head promises a body on a method that forwards it, and
which then stalls or trickles, gets 408 and a closed connection after
``server.body_timeout``; the origin connection that carried the partial
body is never reused. The origin here reads each body before answering.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

import pytest

from tests.edge.conftest import EdgeUnderTest, serve_edge
from tests.edge.rawserver import KeepAliveOrigin

BODY_TIMEOUT = 0.5


@pytest.fixture
async def timed_edge(
    tmp_path: Any,
) -> AsyncIterator[tuple[EdgeUnderTest, KeepAliveOrigin]]:
    """An edge with ``body_timeout = BODY_TIMEOUT`` and its origin."""
    origin = KeepAliveOrigin(read_first=True)
    await origin.start()
    try:
        async for under_test in serve_edge(origin.url, tmp_path,
                                           body_timeout=BODY_TIMEOUT):
            yield under_test, origin
    finally:
        await origin.stop()


HEAD = b"POST /up HTTP/1.1\r\nHost: cdn.example.com\r\n"


async def _send_slowly(
    port: int, head: bytes, pieces: list[bytes], gap: float
) -> tuple[bytes, float]:
    """Send ``head``, then each piece ``gap`` seconds apart (stopping
    when the edge closes); return what the edge sent until it closed
    (at most 5 s) and the seconds that took."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(head)

    async def trickle() -> None:
        for piece in pieces:
            await asyncio.sleep(gap)
            if writer.is_closing():
                return
            writer.write(piece)

    sender = asyncio.create_task(trickle())
    try:
        answer = await asyncio.wait_for(reader.read(-1), 5)
    finally:
        sender.cancel()
        writer.close()

    return answer, time.monotonic() - started


@pytest.mark.parametrize("framing, pieces, gap", [
    ("stalled", [b"abc"], 0.0),
    ("trickled", [b"x"] * 40, 0.1),
    ("chunked", [b"3\r\nabc\r\n"], 0.0),
])
async def test_slow_request_body_gets_408_and_its_origin_connection_closes(
    timed_edge: tuple[EdgeUnderTest, KeepAliveOrigin],
    framing: str, pieces: list[bytes], gap: float,
) -> None:
    """A POST body that stalls or trickles past ``body_timeout`` is
    answered 408 with the connection closed, and the next request
    reaches the origin on a new connection (the one holding the partial
    body is discarded, not pooled)."""
    edge, origin = timed_edge
    if framing == "chunked":
        head = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    else:
        head = HEAD + b"Content-Length: 1000\r\n\r\n"

    answer, seconds = await _send_slowly(edge.port, head, pieces, gap)
    after = await asyncio.wait_for(edge.get("/after"), 5)

    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"Connection: close" in answer
    assert BODY_TIMEOUT <= seconds < BODY_TIMEOUT + 2
    assert (after.status, after.body) == (200, b"GET /after HTTP/1.1")
    assert origin.connections == 2


async def test_a_body_sent_in_time_is_forwarded_whole(
    timed_edge: tuple[EdgeUnderTest, KeepAliveOrigin],
) -> None:
    """A body arriving in pieces but within ``body_timeout`` is not cut:
    the origin gets all of it and the client the origin's answer."""
    edge, origin = timed_edge
    head = HEAD + b"Content-Length: 6\r\nConnection: close\r\n\r\n"

    answer, _ = await _send_slowly(edge.port, head,
                                   [b"ab", b"cd", b"ef"], 0.05)

    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"POST /up HTTP/1.1")
    assert origin.received[0].body == b"abcdef"
