"""Operations: purge, drain, metrics, invalidation, stale-while-revalidate,
negative caching, Range from cache."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web

from edge.app import Edge
from tests.edge.conftest import (
    EdgeUnderTest, FakeClock, Origin, make_config, raw_exchange,
)
from tests.edge.test_fills import wait_filling, slow_body

TOKEN = {"Authorization": "Bearer secret-token"}


async def _admin(edge: EdgeUnderTest, method: str, path: str,
                 **headers: str) -> tuple[int, bytes]:
    reply = await edge.request(method, path, host="admin", **headers)
    return reply.status, reply.body


async def test_purge_by_url_prefix_and_site(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """Purged objects are fetched again; others stay cached."""
    for path in ("/img/a.png", "/img/b.png", "/css/c.css"):
        origin.static(path, path, Cache_Control="max-age=600")
        await edge.get(path)

    one = await _admin(edge, "POST", "/_admin/purge?url=http://cdn.example.com"
                       "/img/a.png", **TOKEN)
    await edge.get("/img/a.png")
    await edge.get("/img/b.png")
    prefix = await _admin(edge, "POST", "/_admin/purge?prefix=http://"
                          "cdn.example.com/img/", **TOKEN)
    site = await _admin(edge, "POST", "/_admin/purge?site=cdn.example.com",
                        **TOKEN)
    await edge.get("/css/c.css")

    assert one[0] == prefix[0] == site[0] == 200
    assert json.loads(one[1]) == {
        "purged": 1, "url": "http://cdn.example.com/img/a.png"}
    assert json.loads(prefix[1]) == {
        "purged": 2, "prefix": "http://cdn.example.com/img/"}
    assert json.loads(site[1]) == {"purged": 1, "site": "cdn.example.com"}
    assert origin.count("/img/a.png") == 2
    assert origin.count("/img/b.png") == 1
    assert origin.count("/css/c.css") == 2


async def test_admin_needs_the_token(edge: EdgeUnderTest) -> None:
    """Without the right token the admin API refuses and changes nothing."""
    wrong = await _admin(edge, "POST", "/_admin/drain?on=1",
                         Authorization="Bearer nope")
    missing = await _admin(edge, "POST", "/_admin/purge?site=cdn.example.com")

    assert wrong[0] == 401 and missing[0] == 401
    assert edge.edge.draining is False


async def test_drain_switches_health_to_503_and_back(edge: EdgeUnderTest) -> None:
    """Draining through the admin API makes health answer 503, then 200."""
    await _admin(edge, "POST", "/_admin/drain?on=1", **TOKEN)
    during = await edge.get("/healthz")
    await _admin(edge, "POST", "/_admin/drain?on=0", **TOKEN)
    after = await edge.get("/healthz")

    assert (during.status, after.status) == (503, 200)


async def test_metrics_count_requests_by_cache_status(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """Prometheus text counts HIT and MISS and reports stored objects."""
    origin.static("/m", "m", Cache_Control="max-age=60")
    await edge.get("/m")
    await edge.get("/m")

    status, text = await _admin(edge, "GET", "/_admin/metrics", **TOKEN)

    assert status == 200
    assert b'edge_requests_total{cache="HIT"} 1' in text
    assert b'edge_requests_total{cache="MISS"} 1' in text
    assert b"edge_cache_objects 1" in text
    assert b'edge_origin_latency_seconds_count 1' in text


async def test_unsafe_method_invalidates_and_bypasses(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """A successful POST passes through uncached and drops the stored URI
    (RFC 9111 §4.4)."""
    origin.static("/item", "v", Cache_Control="max-age=600")
    await edge.get("/item")

    posted = await edge.request("POST", "/item", data="x")
    again = await edge.get("/item")

    assert posted.x_cache == "BYPASS"
    assert origin.seen[1].method == "POST"
    assert again.x_cache == "MISS" and origin.count("/item") == 3


async def test_stale_while_revalidate_answers_at_once_and_refreshes_once(
    edge: EdgeUnderTest, origin: Origin, clock: FakeClock
) -> None:
    """RFC 5861 §3: within the window the stale copy is served and one
    background refresh updates it."""
    async def news(request: web.BaseRequest, n: int) -> web.Response:
        return web.Response(text=f"v{n}", headers={
            "Cache-Control": "max-age=1, stale-while-revalidate=30"})

    origin.route("/swr", news)
    await edge.get("/swr")
    clock.advance(5)

    stale = await asyncio.gather(*(edge.get("/swr") for _ in range(3)))
    await asyncio.sleep(0.1)
    fresh = await edge.get("/swr")

    assert [(r.body, r.x_cache) for r in stale] == [(b"v1", "STALE")] * 3
    assert (fresh.body, fresh.x_cache) == (b"v2", "HIT")
    assert origin.count("/swr") == 2


async def test_404_is_cached_only_as_headers_allow(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """A 404 with max-age is cached; one without freshness is not (the
    site's negative_ttl is 0 here)."""
    origin.static("/gone", "no", Cache_Control="max-age=60")
    origin.routes["/gone"] = _status(404, {"Cache-Control": "max-age=60"})
    origin.routes["/missing"] = _status(404, {})

    gone = [await edge.get("/gone") for _ in range(2)]
    missing = [await edge.get("/missing") for _ in range(2)]

    assert [r.status for r in gone + missing] == [404] * 4
    assert gone[1].x_cache == "HIT" and origin.count("/gone") == 1
    assert origin.count("/missing") == 2


def _status(status: int, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    async def handler(request: web.BaseRequest, n: int) -> web.Response:
        return web.Response(status=status, text="nope", headers=headers)
    return handler


@pytest.mark.parametrize("range_value, if_range, status, body, content_range", [
    ("bytes=0-3", None, 206, b"0123", "bytes 0-3/10"),
    ("bytes=-3", None, 206, b"789", "bytes 7-9/10"),
    ("bytes=8-", None, 206, b"89", "bytes 8-9/10"),
    ("bytes=20-", None, 416, b"", "bytes */10"),
    ("bytes=0-3", '"r1"', 206, b"0123", "bytes 0-3/10"),
    ("bytes=0-3", '"other"', 200, b"0123456789", None),
    ("lines=1-2", None, 200, b"0123456789", None),
])
async def test_range_requests_are_served_from_cache(
    edge: EdgeUnderTest, origin: Origin, range_value: str,
    if_range: str | None, status: int, body: bytes, content_range: str | None,
) -> None:
    """Single, suffix, open and unsatisfiable ranges, and If-Range, are
    answered from the stored object (RFC 9110 §14)."""
    origin.static("/r", b"0123456789", Cache_Control="max-age=60", ETag='"r1"')
    headers = {"Range": range_value}
    if if_range:
        headers["If-Range"] = if_range

    reply = await edge.request("GET", "/r", **headers)
    cached = await edge.request("GET", "/r", **headers)

    for answer in (reply, cached):
        assert answer.status == status and answer.body == body
        assert answer.headers.get("Content-Range") == content_range
    assert origin.count("/r") == 1
    assert "Range" not in origin.seen[0].headers


async def test_multiple_ranges_make_a_multipart_reply(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """Several ranges give multipart/byteranges with one part each."""
    origin.static("/r", b"0123456789", Cache_Control="max-age=60",
                  Content_Type="text/plain")
    await edge.get("/r")

    reply = await edge.request("GET", "/r", Range="bytes=0-1,5-6")

    assert reply.status == 206
    assert reply.headers["Content-Type"].startswith("multipart/byteranges")
    assert b"Content-Range: bytes 0-1/10\r\n\r\n01\r\n" in reply.body
    assert b"Content-Range: bytes 5-6/10\r\n\r\n56\r\n" in reply.body


async def test_client_conditional_gets_304_from_cache(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """If-None-Match and If-Modified-Since are answered from the cache."""
    origin.static("/c", "c", Cache_Control="max-age=60", ETag='"c1"',
                  Last_Modified="Mon, 02 Jan 2023 07:05:09 GMT")
    await edge.get("/c")

    by_tag = await edge.get("/c", If_None_Match='W/"c1"')
    by_date = await edge.get("/c", If_Modified_Since="Tue, 03 Jan 2023 00:00:00 GMT")
    changed = await edge.get("/c", If_None_Match='"c0"')

    assert (by_tag.status, by_tag.body) == (304, b"")
    assert by_tag.headers["ETag"] == '"c1"' and "Age" in by_tag.headers
    assert by_date.status == 304
    assert changed.status == 200
    assert origin.count("/c") == 1


async def test_a_purge_during_a_fill_counts_the_fill_it_stops(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """A purge arriving while an object is still being filled counts it
    (its result will not be kept), and the next request fetches anew."""
    origin.route("/slow", slow_body(b"x" * 200_000, 20_000, 0.02,
                                    Cache_Control="max-age=600"))
    filling = asyncio.ensure_future(edge.get("/slow"))
    await wait_filling(edge)

    status, body = await _admin(
        edge, "POST", "/_admin/purge?url=http://cdn.example.com/slow",
        **TOKEN)
    first = await filling
    after = await edge.get("/slow")

    assert status == 200 and json.loads(body)["purged"] == 1
    assert len(first.body) == 200_000
    assert after.x_cache == "MISS" and origin.count("/slow") == 2


async def test_ranges_from_disk_carry_their_reason_phrase(
    tmp_path: Any, origin: Origin, clock: FakeClock
) -> None:
    """A 206 sent from a disk-only object says ``206 Partial Content``."""
    origin.static("/d", b"d" * 50_000, Cache_Control="max-age=60")
    config = make_config(origin.url, str(tmp_path / "cache"),
                         memory_cache_mb=0.01)
    edge = EdgeUnderTest(Edge(config, clock=clock), clock)
    await edge.start()
    try:
        await edge.get("/d")
        wire = await raw_exchange(edge.port, (
            b"GET /d HTTP/1.1\r\nHost: cdn.example.com\r\nRange: bytes=0-1"
            b"\r\nConnection: close\r\n\r\n"))
    finally:
        await edge.stop()

    assert wire.startswith(b"HTTP/1.1 206 Partial Content\r\n")
