"""Stored objects whose body went away (purge, eviction, a deleted file)
never cost a client its answer, and never come back without a body;
real HTTP on loopback."""

from __future__ import annotations

import asyncio
import glob
import os
from typing import Any, AsyncIterator

import pytest
from aiohttp import web

from edge.app import Edge
from tests.edge.conftest import EdgeUnderTest, FakeClock, Origin, make_config
from tests.edge.test_fills import slow_body

TOKEN = {"Authorization": "Bearer secret-token"}
# Objects of this size are kept on disk only by ``small_edge`` (its
# memory tier is smaller), and two of them overflow its disk cap.
DISK_OBJECT = 60_000


@pytest.fixture
async def small_edge(
    origin: Origin, tmp_path: Any, clock: FakeClock
) -> AsyncIterator[EdgeUnderTest]:
    """An edge with a 100 KiB disk cap and a 10 KiB memory tier."""
    config = make_config(origin.url, str(tmp_path / "cache"),
                         disk_cache_mb=0.1, memory_cache_mb=0.01)
    under_test = EdgeUnderTest(Edge(config, clock=clock), clock)
    await under_test.start()
    yield under_test
    await under_test.stop()


class HeldRevalidation:
    """An origin route that answers a conditional GET with a 304 only
    when ``release`` is set; an unconditional GET gets ``body``."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.asked = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(
        self, request: web.BaseRequest, n: int
    ) -> web.Response:
        if request.headers.get("If-None-Match") == '"v1"':
            self.asked.set()
            await self.release.wait()
            return web.Response(status=304, headers={
                "ETag": '"v1"', "Cache-Control": "max-age=60"})

        return web.Response(body=self.body, headers={
            "ETag": '"v1"', "Cache-Control": "max-age=1"})


async def _purge(edge: EdgeUnderTest, path: str) -> bytes:
    reply = await edge.request(
        "POST", f"/_admin/purge?url=http://cdn.example.com{path}",
        host="admin", **TOKEN)

    return reply.body


async def test_304_after_a_purge_fetches_the_object_again(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """RFC 9111 §4.3.4: a 304 arriving after the stored copy was purged
    updates nothing; the edge fetches the object whole, and the old
    body is never served again."""
    route = HeldRevalidation(b"OLD")
    origin.route("/r", route)
    await edge.get("/r")
    edge.clock.advance(5)

    pending = asyncio.ensure_future(edge.get("/r"))
    await route.asked.wait()
    route.body = b"NEW"
    purged = await _purge(edge, "/r")
    route.release.set()
    during = await pending
    after = await edge.get("/r")

    assert purged.startswith(b'{"purged": 1,')
    assert (during.status, during.body) == (200, b"NEW")
    assert (after.status, after.body, after.x_cache) == (200, b"NEW", "HIT")
    assert origin.count("/r") == 3


async def test_304_after_an_eviction_never_restores_a_bodiless_entry(
    small_edge: EdgeUnderTest, origin: Origin
) -> None:
    """An object evicted while its revalidation is pending is fetched
    again in full when the 304 comes; later GETs and HEADs are answered
    with the body, not a closed connection."""
    route = HeldRevalidation(b"a" * DISK_OBJECT)
    origin.route("/a", route)
    origin.static("/b", b"b" * DISK_OBJECT, Cache_Control="max-age=60")
    await small_edge.get("/a")
    small_edge.clock.advance(5)

    pending = asyncio.ensure_future(small_edge.get("/a"))
    await route.asked.wait()
    await small_edge.get("/b")
    route.release.set()
    during = await pending
    later = [await small_edge.request(m, "/a") for m in ("GET", "HEAD")]

    assert during.status == 200 and during.body == route.body
    assert [(r.status, len(r.body)) for r in later] == \
        [(200, DISK_OBJECT), (200, 0)]
    assert later[1].headers["Content-Length"] == str(DISK_OBJECT)


# A HEAD miss is passed through without filling the cache, so the GET
# after it is a MISS too.
@pytest.mark.parametrize("method, headers, status, size, then", [
    ("GET", {}, 200, DISK_OBJECT, "HIT"),
    ("HEAD", {}, 200, 0, "MISS"),
    ("GET", {"Range": "bytes=0-9"}, 206, 10, "HIT"),
    ("GET", {"Range": "bytes=0-1,5-6"}, 206, None, "HIT"),
])
async def test_an_entry_whose_body_file_vanished_is_a_miss(
    small_edge: EdgeUnderTest, origin: Origin, tmp_path: Any,
    method: str, headers: dict[str, str], status: int, size: int | None,
    then: str,
) -> None:
    """A stored entry whose body file is gone is dropped and answered as
    a miss (self-healing), whatever the request asks for."""
    body = os.urandom(DISK_OBJECT)
    origin.static("/d", body, Cache_Control="max-age=60")
    await small_edge.get("/d")
    for path in glob.glob(str(tmp_path / "cache/objects/*/*.body")):
        os.unlink(path)

    reply = await small_edge.request(method, "/d", **headers)
    again = await small_edge.get("/d")

    assert reply.status == status and reply.x_cache == "MISS"
    if size is not None:
        assert len(reply.body) == size
    assert (again.body, again.x_cache) == (body, then)


def _ranged(body: bytes, pause: float):  # type: ignore[no-untyped-def]
    """Return an origin handler that honours ``Range: bytes=A-B`` and
    otherwise streams ``body`` slowly."""
    whole = slow_body(body, 50_000, pause, Cache_Control="max-age=60")

    async def handler(request: web.BaseRequest, n: int) -> web.StreamResponse:
        value = request.headers.get("Range", "")
        if not value.startswith("bytes="):
            return await whole(request, n)  # type: ignore[no-any-return]
        first, last = (int(x) for x in value[6:].split("-"))

        return web.Response(status=206, body=body[first:last + 1], headers={
            "Content-Range": f"bytes {first}-{last}/{len(body)}",
            "Cache-Control": "max-age=60"})

    return handler


async def test_ranges_of_an_object_bigger_than_the_disk_cap_are_answered(
    small_edge: EdgeUnderTest, origin: Origin
) -> None:
    """An object that cannot fit the disk tier is never stored; Range
    requests that came during its fill, and after it, get their bytes
    (RFC 9110 §14) instead of a closed connection."""
    body = os.urandom(300_000)
    origin.route("/huge", _ranged(body, 0.02))

    replies = await asyncio.gather(
        small_edge.get("/huge"),
        small_edge.get("/huge", Range="bytes=0-9"),
        small_edge.get("/huge"),
        small_edge.get("/huge", Range="bytes=100-199"),
    )
    after = await small_edge.get("/huge", Range="bytes=0-9")

    assert [r.status for r in replies] == [200, 206, 200, 206]
    assert replies[0].body == replies[2].body == body
    assert replies[1].body == body[:10]
    assert replies[3].body == body[100:200]
    assert (after.status, after.body) == (206, body[:10])
    assert small_edge.edge.storage.objects == 0


async def test_an_object_bigger_than_the_disk_cap_evicts_nothing(
    small_edge: EdgeUnderTest, origin: Origin
) -> None:
    """An object too big for the disk tier is served but never stored,
    so it does not flush the objects that fit."""
    origin.static("/small", b"s" * 1000, Cache_Control="max-age=60")
    origin.static("/huge", os.urandom(300_000), Cache_Control="max-age=60")
    await small_edge.get("/small")

    huge = [await small_edge.get("/huge") for _ in range(2)]
    small = await small_edge.get("/small")

    assert [len(r.body) for r in huge] == [300_000] * 2
    assert [r.x_cache for r in huge] == ["MISS", "MISS"]
    assert small.x_cache == "HIT"
    assert small_edge.edge.storage.evictions == 0
