"""Field cases: faults other caches shipped, through real HTTP on loopback.

Each test is one case (H01...), driven with the injected clock where the
case has times. The origin is scriptable and counts what it was asked.
"""

from __future__ import annotations

import gzip
from typing import Any

import pytest
from aiohttp import web

from edge.app import Edge
from edge.httpdate import format_http_date
from tests.edge.conftest import (
    EdgeUnderTest, FakeClock, Origin, make_config, raw_exchange,
)

JS = b"console.log(1)\n"


async def test_h01_vary_keeps_codings_apart(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """H01: gzip and identity variants never mix; Vary: * is never reused."""
    async def app_js(request: web.BaseRequest, n: int) -> web.Response:
        headers = {"Cache-Control": "max-age=300", "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            headers.update({"Content-Encoding": "gzip", "ETag": '"v1-gz"'})
            return web.Response(body=gzip.compress(JS), headers=headers)
        headers["ETag"] = '"v1"'
        return web.Response(body=JS, headers=headers)

    async def star(request: web.BaseRequest, n: int) -> web.Response:
        return web.Response(text=str(n), headers={
            "Cache-Control": "max-age=300", "Vary": "*"})

    origin.route("/app.js", app_js)
    origin.route("/star", star)

    one = await edge.get("/app.js", Accept_Encoding="gzip")
    two = await edge.get("/app.js")
    three = await edge.get("/app.js", Accept_Encoding="gzip")
    hits_after_three = origin.count("/app.js")
    four = await edge.get("/app.js", Accept_Encoding="br, gzip")
    stars = [await edge.get("/star") for _ in range(2)]

    assert gzip.decompress(one.body) == JS
    assert one.headers["Content-Encoding"] == "gzip"
    assert one.headers["Vary"] == "Accept-Encoding"
    assert two.body == JS and "Content-Encoding" not in two.headers
    assert three.x_cache == "HIT" and gzip.decompress(three.body) == JS
    assert hits_after_three == 2
    assert gzip.decompress(four.body) == JS
    assert four.headers["Content-Encoding"] == "gzip"
    assert [s.body for s in stars] == [b"1", b"2"]
    assert origin.count("/star") == 2


async def test_h02_private_credentials_and_cookies_are_not_shared(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """H02: private, Authorization (without public) and Set-Cookie replies
    are never served to another client."""
    async def counter(request: web.BaseRequest, n: int) -> web.Response:
        return web.Response(text=str(n), headers={
            "Cache-Control": "private, max-age=600"})

    def account(public: bool):  # type: ignore[no-untyped-def]
        async def handler(request: web.BaseRequest, n: int) -> web.Response:
            auth = request.headers.get("Authorization", "")
            body = {"Bearer token-A": "account A",
                    "Bearer token-B": "account B"}.get(auth, "anonymous")
            cc = "public, max-age=600" if public else "max-age=600"
            return web.Response(text=body, headers={"Cache-Control": cc})
        return handler

    async def login(request: web.BaseRequest, n: int) -> web.Response:
        return web.Response(text="welcome", headers={
            "Cache-Control": "max-age=600", "Set-Cookie": f"sid=s{n}"})

    origin.route("/priv", counter)
    origin.route("/acct", account(public=False))
    origin.route("/acct-pub", account(public=True))
    origin.route("/login", login)

    privs = [await edge.get("/priv") for _ in range(2)]
    acct = [await edge.get("/acct", Authorization="Bearer token-A"),
            await edge.get("/acct"),
            await edge.get("/acct", Authorization="Bearer token-B")]
    pub = [await edge.get("/acct-pub", Authorization="Bearer token-A"),
           await edge.get("/acct-pub")]
    logins = [await edge.get("/login") for _ in range(2)]

    assert [p.body for p in privs] == [b"1", b"2"]
    assert [a.body for a in acct] == [b"account A", b"anonymous", b"account B"]
    assert origin.count("/acct") == 3
    assert pub[1].x_cache == "HIT" and origin.count("/acct-pub") == 1
    assert [r.headers["Set-Cookie"] for r in logins] == ["sid=s1", "sid=s2"]


async def test_h03_lifetime_precedence_and_age(
    edge: EdgeUnderTest, origin: Origin, clock: FakeClock
) -> None:
    """H03: s-maxage beats max-age beats Expires; invalid Expires means
    expired; Age counts the origin's Age and restarts on revalidation;
    an invalid Date is replaced."""
    day_ago = format_http_date(clock() - 86400)
    origin.static("/smax", "a", Cache_Control="max-age=900, s-maxage=2")
    origin.static("/smax2", "a", Cache_Control="s-maxage=2, max-age=900")
    origin.static("/exp", "b", Cache_Control="max-age=60", Expires=day_ago)
    origin.static("/exp0", "c", Expires="0")
    origin.static("/baddate", "e", Cache_Control="max-age=60",
                  Date="Mon, 02 Jan 2023 7:05:09 GMT")

    async def aged(request: web.BaseRequest, n: int) -> web.Response:
        if request.headers.get("If-None-Match") == '"g1"':
            return web.Response(status=304, headers={"ETag": '"g1"'})
        return web.Response(text="g", headers={
            "Age": "10", "Cache-Control": "max-age=60", "ETag": '"g1"'})

    origin.route("/aged", aged)
    paths = ["/smax", "/smax2", "/exp", "/exp0", "/aged", "/baddate"]

    start = {p: await edge.get(p) for p in paths}
    clock.advance(1)
    at1 = {p: await edge.get(p) for p in ("/smax", "/smax2", "/exp0")}
    clock.advance(1)
    baddate_at2 = await edge.get("/baddate")
    clock.advance(2)
    at4 = {p: await edge.get(p) for p in ("/smax", "/smax2")}
    clock.advance(1)
    exp_at5 = await edge.get("/exp")
    aged_at5 = await edge.get("/aged")
    clock.advance(50)
    aged_at55 = await edge.get("/aged")
    clock.advance(3)
    aged_at58 = await edge.get("/aged")

    assert all(r.status == 200 for r in start.values())
    assert at1["/smax"].x_cache == "HIT" and at1["/smax2"].x_cache == "HIT"
    assert at4["/smax"].x_cache != "HIT" and at4["/smax2"].x_cache != "HIT"
    assert origin.count("/smax") == 2 and origin.count("/smax2") == 2
    assert exp_at5.x_cache == "HIT"
    assert at1["/exp0"].x_cache == "MISS" and origin.count("/exp0") == 2
    assert aged_at5.x_cache == "HIT" and int(aged_at5.headers["Age"]) >= 15
    assert aged_at55.status == 200 and aged_at55.x_cache == "REVALIDATED"
    assert origin.seen[-1].headers["If-None-Match"] == '"g1"'
    assert aged_at58.x_cache == "HIT"
    assert aged_at58.headers.getall("Age") == ["3"]
    assert baddate_at2.x_cache == "HIT"
    assert baddate_at2.headers.getall("Age") == ["2"]
    assert "7:05:09" not in baddate_at2.headers["Date"]


async def test_h04_304_merges_into_the_stored_response(
    edge: EdgeUnderTest, origin: Origin, clock: FakeClock
) -> None:
    """H04: a 304 updates stored fields but never Content-Length or
    Content-Encoding, and a client that did not ask conditionally gets 200."""
    body = gzip.compress(b"<html>" + b"x" * 3000 + b"</html>")

    async def doc(request: web.BaseRequest, n: int) -> web.Response:
        if n == 1:
            return web.Response(body=body, headers={
                "Cache-Control": "max-age=1", "ETag": '"v1"',
                "Content-Encoding": "gzip", "Content-Type": "text/html",
                "X-Build": "1"})
        assert request.headers["If-None-Match"] == '"v1"'
        return web.Response(status=304, headers={
            "ETag": '"v1"', "Cache-Control": "max-age=60", "X-Build": "2"})

    origin.route("/doc", doc)

    await edge.get("/doc", Accept_Encoding="gzip")
    clock.advance(3)
    two = await edge.get("/doc", Accept_Encoding="gzip")
    clock.advance(1)
    three = await edge.get("/doc", Accept_Encoding="gzip")
    clock.advance(1)
    four = await edge.get("/doc", Accept_Encoding="gzip", If_None_Match='"v1"')

    for reply in (two, three):
        assert reply.status == 200 and reply.body == body
        assert reply.headers["Content-Length"] == str(len(body))
        assert reply.headers["Content-Encoding"] == "gzip"
        assert reply.headers["X-Build"] == "2"
    assert three.x_cache == "HIT" and origin.count("/doc") == 2
    assert four.status == 304 and four.body == b""
    assert four.headers["ETag"] == '"v1"'


async def test_h06_head_and_get_share_an_entry_safely(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """H06: HEAD never fills a GET entry with an empty body, and no body
    bytes follow a HEAD response on a kept-alive connection."""
    origin.static("/big.css", b"c" * 5000, Cache_Control="max-age=600",
                  ETag='"c1"')
    origin.static("/other.css", b"0123456789")

    head = await edge.request("HEAD", "/big.css")
    get = await edge.get("/big.css")
    wire = await raw_exchange(
        edge.port,
        b"HEAD /big.css HTTP/1.1\r\nHost: cdn.example.com\r\n\r\n"
        b"GET /other.css HTTP/1.1\r\nHost: cdn.example.com\r\n"
        b"Connection: close\r\n\r\n",
    )

    assert head.headers["Content-Length"] == "5000" and head.body == b""
    assert get.body == b"c" * 5000
    first, _, rest = wire.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 ") and b"Content-Length: 5000" in first
    assert b"X-Cache: HIT" in first
    assert rest.startswith(b"HTTP/1.1 200 ")
    assert rest.endswith(b"\r\n\r\n0123456789")


async def test_h10_stale_if_error_covers_5xx_and_unreachable_only(
    edge: EdgeUnderTest, origin: Origin, clock: FakeClock
) -> None:
    """H10: stale-if-error serves the stale copy on 503 and when the origin
    is down, never against must-revalidate, and not past its window."""
    origin.static("/news", "v1", Cache_Control="max-age=2, stale-if-error=60",
                  ETag='"n1"')
    origin.static("/strict", "s1",
                  Cache_Control="max-age=2, must-revalidate, stale-if-error=60")
    await edge.get("/news")
    await edge.get("/strict")

    origin.failing = 503
    clock.advance(5)
    news5 = await edge.get("/news")
    strict5 = await edge.get("/strict")
    await origin.stop()
    clock.advance(5)
    news10 = await edge.get("/news")
    clock.advance(60)
    news70 = await edge.get("/news")

    assert (news5.status, news5.body, news5.x_cache) == (200, b"v1", "STALE")
    assert int(news5.headers["Age"]) >= 5
    assert strict5.status == 503
    assert (news10.status, news10.body) == (200, b"v1")
    assert news70.status in (502, 503, 504)


async def test_h10_a_404_is_forwarded_not_covered(
    edge: EdgeUnderTest, origin: Origin, clock: FakeClock
) -> None:
    """H10: stale-if-error does not cover a 404 from the origin."""
    origin.static("/news", "v1", Cache_Control="max-age=2, stale-if-error=60")
    await edge.get("/news")
    origin.failing = 404
    clock.advance(5)

    reply = await edge.get("/news")

    assert reply.status == 404


@pytest.mark.parametrize("vary", ["X-Dev", "*"])
async def test_a_vary_added_by_a_304_decides_later_matches(
    edge: EdgeUnderTest, origin: Origin, vary: str
) -> None:
    """RFC 9111 §4.3.4, §4.1: a 304 that adds Vary updates how the
    stored copy is matched: a request with another X-Dev is not served
    it; after ``Vary: *`` the copy is dropped and fetched whole."""
    async def doc(request: web.BaseRequest, n: int) -> web.Response:
        # From its second answer on, the origin varies.
        fields = {"ETag": '"m"', "Cache-Control": "max-age=1"}
        if n > 1:
            fields.update({"Cache-Control": "max-age=60", "Vary": vary})
        if request.headers.get("If-None-Match") == '"m"':
            return web.Response(status=304, headers=fields)
        return web.Response(text=f"m{n}", headers=fields)

    origin.route("/m", doc)
    await edge.get("/m")
    edge.clock.advance(5)

    revalidated = await edge.get("/m")
    other = await edge.get("/m", X_Dev="other")
    same = await edge.get("/m")

    assert other.x_cache == "MISS" and other.body != b"m1"
    if vary == "*":
        assert (revalidated.x_cache, revalidated.body) == ("EXPIRED", b"m3")
        assert same.x_cache == "MISS"
    else:
        assert (revalidated.x_cache, revalidated.body) == (
            "REVALIDATED", b"m1")
        assert (same.x_cache, same.body) == ("HIT", b"m1")


async def test_variants_per_url_are_capped_oldest_first(
    tmp_path: Any, origin: Origin, clock: FakeClock
) -> None:
    """With ``max_variants = 3``, a fourth Vary variant of one URL drops
    the oldest: at most three are stored and the newest three hit."""
    async def varied(request: web.BaseRequest, n: int) -> web.Response:
        return web.Response(text=request.headers.get("X-V", "-"), headers={
            "Cache-Control": "max-age=600", "Vary": "X-V"})

    origin.route("/v", varied)
    config = make_config(origin.url, str(tmp_path / "cache"), max_variants=3)
    edge = EdgeUnderTest(Edge(config, clock=clock), clock)
    await edge.start()
    try:
        for value in "12345":
            await edge.get("/v", X_V=value)
        again = {v: (await edge.get("/v", X_V=v)).x_cache for v in "345"}
        first = await edge.get("/v", X_V="1")
        stored = edge.edge.storage.objects
    finally:
        await edge.stop()

    assert again == {"3": "HIT", "4": "HIT", "5": "HIT"}
    assert (first.x_cache, first.body) == ("MISS", b"1")
    assert stored == 3
