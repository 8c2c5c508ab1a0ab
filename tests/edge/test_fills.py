"""Collapsing, streaming and framing faults (cases H07 and H08)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any, AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from edge.httpdate import format_http_date
from tests.edge.conftest import HOST, EdgeUnderTest, Origin, serve_edge
from tests.edge.rawserver import RawOrigin, Script

CACHE = b"Cache-Control: max-age=600\r\n"


def slow_body(body: bytes, chunk: int, pause: float,
              **headers: str):  # type: ignore[no-untyped-def]
    """Return an origin handler that streams ``body`` in paced chunks."""
    async def handler(request: web.BaseRequest, n: int) -> web.StreamResponse:
        response = web.StreamResponse(headers={
            k.replace("_", "-"): v for k, v in headers.items()})
        response.content_length = len(body)
        await response.prepare(request)
        for start in range(0, len(body), chunk):
            await response.write(body[start:start + chunk])
            await asyncio.sleep(pause)
        await response.write_eof()
        return response

    return handler


async def test_concurrent_misses_cost_one_origin_fetch(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """Twenty clients asking at once for one object make one origin
    request, and all receive the whole body while it streams."""
    body = os.urandom(600_000)
    origin.route("/obj", slow_body(body, 60_000, 0.02,
                                   Cache_Control="max-age=600"))

    replies = await asyncio.gather(*(edge.get("/obj") for _ in range(20)))

    assert origin.count("/obj") == 1
    assert all(r.body == body for r in replies)
    assert sorted(r.x_cache for r in replies) == ["HIT"] * 19 + ["MISS"]


async def test_followers_of_an_unshareable_reply_fetch_alone(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """A private reply is never handed to the clients that waited on it:
    each gets its own."""
    async def private(request: web.BaseRequest, n: int) -> web.Response:
        await asyncio.sleep(0.1)
        return web.Response(text=f"user {n}",
                            headers={"Cache-Control": "private"})

    origin.route("/me", private)

    replies = await asyncio.gather(*(edge.get("/me") for _ in range(5)))

    assert origin.count("/me") == 5
    assert sorted(r.body for r in replies) == [
        f"user {n}".encode() for n in range(1, 6)]


async def test_followers_of_a_failed_fill_get_their_own_answer(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """When the fill fails before headers, waiting clients retry once
    instead of hanging."""
    async def flaky(request: web.BaseRequest, n: int) -> web.Response:
        await asyncio.sleep(0.1)
        if n == 1:
            request.transport.abort()  # type: ignore[union-attr]
            raise ConnectionResetError
        return web.Response(text="ok", headers={"Cache-Control": "max-age=60"})

    origin.route("/flaky", flaky)

    replies = await asyncio.wait_for(
        asyncio.gather(*(edge.get("/flaky") for _ in range(4))), 10)

    # The client that caused the failed fetch may see 502 (unless its
    # client library retried); everyone else is answered.
    bodies = sorted(r.body for r in replies if r.status != 502)
    assert len(bodies) >= 3 and set(bodies) == {b"ok"}


@pytest.fixture
async def raw_origin() -> AsyncIterator[RawOrigin]:
    server = RawOrigin()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def raw_edge(
    raw_origin: RawOrigin, tmp_path: Any
) -> AsyncIterator[EdgeUnderTest]:
    async for under_test in serve_edge(raw_origin.url, tmp_path):
        yield under_test


async def _fetch_raises(edge: EdgeUnderTest, path: str) -> bool:
    """True when reading the reply fails (an abnormal end is visible)."""
    try:
        reply = await edge.get(path)
    except aiohttp.ClientPayloadError:
        return True

    return reply.status >= 500


@pytest.mark.parametrize("path, script", [
    ("/chunked", b"HTTP/1.1 200 OK\r\n" + CACHE +
     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"),
    ("/short", b"HTTP/1.1 200 OK\r\n" + CACHE +
     b"Content-Length: 1000\r\n\r\n" + b"x" * 400),
])
async def test_h07_truncated_bodies_are_never_stored(
    raw_edge: EdgeUnderTest, raw_origin: RawOrigin, path: str, script: bytes
) -> None:
    """H07 a, b: a body ending early reaches the client as an abnormal end
    and the next request goes to the origin again."""
    raw_origin.scripts[path] = Script(script)

    first_failed = await _fetch_raises(raw_edge, path)
    await asyncio.sleep(0.05)
    second_failed = await _fetch_raises(raw_edge, path)

    assert first_failed and second_failed
    assert raw_origin.hits[path] == 2
    assert raw_edge.edge.storage.objects == 0


async def test_h07_chunked_wins_over_content_length(
    raw_edge: EdgeUnderTest, raw_origin: RawOrigin
) -> None:
    """H07 c: with both Content-Length and chunked, never 'hel' is stored."""
    raw_origin.scripts["/clte"] = Script(
        b"HTTP/1.1 200 OK\r\n" + CACHE + b"Content-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")

    first = await raw_edge.get("/clte")
    await asyncio.sleep(0.05)
    second = await raw_edge.get("/clte")

    for reply in (first, second):
        assert reply.status == 502 or reply.body == b"hello"
    assert second.status == 502 or second.headers.get("Content-Length") != "3"


async def test_h07_close_delimited_body_is_complete(
    raw_edge: EdgeUnderTest, raw_origin: RawOrigin
) -> None:
    """H07 d: a body ended by a clean close is complete and may be stored."""
    raw_origin.scripts["/eof"] = Script(
        b"HTTP/1.1 200 OK\r\n" + CACHE + b"Connection: close\r\n\r\nhello")

    first = await raw_edge.get("/eof")
    await asyncio.sleep(0.05)
    second = await raw_edge.get("/eof")

    assert first.body == second.body == b"hello"
    assert second.x_cache == "HIT" and raw_origin.hits["/eof"] == 1


async def test_h07_big_body_with_half_close_is_stored_whole(
    raw_edge: EdgeUnderTest, raw_origin: RawOrigin
) -> None:
    """H07 e: 20,000,000 bytes sent fast then half-closed, read slowly:
    stored and served complete, no spurious 502."""
    size = 20_000_000
    raw_origin.scripts["/big"] = Script(
        b"HTTP/1.1 200 OK\r\n" + CACHE +
        f"Content-Length: {size}\r\n\r\n".encode() + b"b" * size,
        half_close=True)
    assert raw_edge.session is not None

    received = 0
    async with raw_edge.session.get(raw_edge.url + "/big",
                                    headers={"Host": HOST}) as response:
        async for chunk in response.content.iter_chunked(1 << 20):
            received += len(chunk)
            await asyncio.sleep(0.005)
    await asyncio.sleep(0.1)
    second = await raw_edge.get("/big")

    assert received == size
    assert second.x_cache == "HIT" and len(second.body) == size
    assert raw_origin.hits["/big"] == 1


async def test_h08_client_abort_neither_cancels_nor_corrupts_the_fill(
    edge: EdgeUnderTest, origin: Origin, tmp_path: Any
) -> None:
    """H08: client A resets after 64 KiB; B and C get all bytes with the
    right hash, from one origin fetch, and no partial file is left."""
    body = os.urandom(5 * 1024 * 1024)
    digest = hashlib.sha256(body).hexdigest()
    origin.route("/large.bin", slow_body(body, 256 * 1024, 0.05,
                                         Cache_Control="max-age=600"))
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"GET /large.bin HTTP/1.1\r\nHost: cdn.example.com\r\n\r\n")
    await reader.readexactly(64 * 1024)
    writer.transport.abort()

    b = await edge.get("/large.bin")
    await asyncio.sleep(0.1)
    c = await edge.get("/large.bin")

    assert hashlib.sha256(b.body).hexdigest() == digest
    assert hashlib.sha256(c.body).hexdigest() == digest
    assert origin.count("/large.bin") == 1
    assert os.listdir(tmp_path / "cache" / "tmp") == []


async def test_finished_fills_leave_the_registry(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """Fills are forgotten once settled, so the in-flight gauge and the
    registry do not grow with every key ever fetched."""
    for n in range(5):
        origin.static(f"/k{n}", "k", Cache_Control="max-age=60")
        await edge.get(f"/k{n}")

    assert len(edge.edge.proxy.fills) == 0


async def test_a_reply_stale_on_arrival_is_not_handed_to_followers(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """RFC 9111 §4: a request that joins a fill whose reply is already
    stale (Expires in the past) is not answered from it; it goes to the
    origin itself."""
    # Stored for its validator, though never fresh.
    origin.route("/old", slow_body(
        b"o" * 200_000, 20_000, 0.02,
        Expires=format_http_date(edge.clock() - 5000),
        Last_Modified=format_http_date(edge.clock() - 100000)))
    leader = asyncio.ensure_future(edge.get("/old"))
    await wait_filling(edge)

    follower = await edge.get("/old")
    first = await leader

    assert first.x_cache == "MISS" and follower.x_cache == "MISS"
    assert origin.count("/old") == 2


async def test_an_unsafe_request_stops_a_fill_in_flight_from_being_kept(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """RFC 9111 §4.4: a successful POST invalidates the URI, including
    the copy a fill is still bringing in."""
    origin.route("/doc", slow_body(b"d" * 200_000, 20_000, 0.02,
                                   Cache_Control="max-age=600"))
    filling = asyncio.ensure_future(edge.get("/doc"))
    await wait_filling(edge)

    posted = await edge.request("POST", "/doc")
    await filling
    after = await edge.get("/doc")

    assert posted.status == 200
    assert after.x_cache == "MISS"


async def wait_filling(edge: EdgeUnderTest) -> None:
    """Wait (at most 2 s) until a fill is in flight."""
    async def poll() -> None:
        while not len(edge.edge.proxy.fills):
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), 2)


@pytest.mark.parametrize("ending", ["close", "half_close", "hold_open"])
async def test_body_longer_than_content_length_serves_the_declared_bytes(
    raw_edge: EdgeUnderTest, raw_origin: RawOrigin, ending: str
) -> None:
    """A reply with more body than its Content-Length is served and
    stored as exactly the declared bytes, never a 502 (RFC 9112 §6.3:
    the excess is not part of the message), and its connection is not
    reused: the next request reaches the origin on a new one."""
    raw_origin.scripts["/over"] = Script(
        b"HTTP/1.1 200 OK\r\n" + CACHE + b"Content-Length: 5\r\n\r\n"
        b"0123456789",
        half_close=ending == "half_close", hold_open=ending == "hold_open")

    first = await raw_edge.get("/over")
    second = await raw_edge.get("/over")
    other = await asyncio.wait_for(raw_edge.get("/other"), 5)

    assert (first.status, first.body, first.x_cache) == (200, b"01234", "MISS")
    assert first.headers["Content-Length"] == "5"
    assert (second.body, second.x_cache) == (b"01234", "HIT")
    assert raw_origin.hits["/over"] == 1
    assert (other.status, raw_origin.hits["/other"]) == (404, 1)
