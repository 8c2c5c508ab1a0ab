"""Basic edge behaviour through real HTTP on loopback: fill, hit, refuse."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
from typing import Any

from tests.edge.conftest import EdgeUnderTest, Origin, raw_exchange


async def test_miss_is_fetched_then_served_from_cache(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """A cacheable reply is stored on the first GET and a HIT afterwards."""
    origin.static("/index.html", "<h1>hi</h1>", Cache_Control="max-age=60")

    first = await edge.get("/index.html")
    second = await edge.get("/index.html")

    assert (first.status, first.x_cache, first.body) == (200, "MISS", b"<h1>hi</h1>")
    assert (second.status, second.x_cache, second.body) == (200, "HIT", b"<h1>hi</h1>")
    assert second.headers.getall("Age") == ["0"]
    assert origin.count("/index.html") == 1


async def test_alias_and_port_select_the_same_site(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """Aliases, upper case and the default port all select the site."""
    origin.static("/a", "A", Cache_Control="max-age=60")

    replies = [await edge.get("/a", host=h) for h in
               ("CDN.Example.COM:80", "www.cdn.example.com", "cdn.example.com.")]

    assert [r.status for r in replies] == [200, 200, 200]
    assert origin.count("/a") == 1


async def test_unknown_host_gets_421_without_origin_contact(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """The edge is not an open proxy: other hosts never reach an origin."""
    reply = await edge.get("/x", host="evil.example.net")
    # RFC 9112 §3.2.2: the absolute-form target wins over Host.
    absolute = await raw_exchange(
        edge.port,
        b"GET http://evil.example.net/x HTTP/1.1\r\n"
        b"Host: cdn.example.com\r\nConnection: close\r\n\r\n",
    )

    assert reply.status == 421
    assert absolute.startswith(b"HTTP/1.1 421 ")
    assert origin.seen == []


async def test_absolute_form_target_selects_the_site(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """An absolute-form target naming the site is served (Host ignored)."""
    origin.static("/a", "A", Cache_Control="max-age=60")

    answer = await raw_exchange(
        edge.port,
        b"GET http://cdn.example.com/a HTTP/1.1\r\n"
        b"Host: other.example.net\r\nConnection: close\r\n\r\n",
    )

    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"\r\n\r\nA")
    assert origin.seen[0].path == "/a"


async def test_connect_and_trace_are_refused(edge: EdgeUnderTest) -> None:
    """CONNECT and TRACE get 405."""
    reply = await edge.request("TRACE", "/")

    assert reply.status == 405


async def test_forwarded_request_carries_via_xff_and_site_host(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """Hop-by-hop fields are dropped; Via and X-Forwarded-For are added."""
    origin.static("/h", "h")

    await edge.get("/h", Connection="keep-alive, X-Secret", X_Secret="1",
                   Keep_Alive="timeout=5")

    seen = origin.seen[0].headers
    assert seen["Host"] == "cdn.example.com"
    assert seen["Via"] == "1.1 edge-test"
    assert seen["X-Forwarded-For"] == "127.0.0.1"
    assert "X-Secret" not in seen and "Keep-Alive" not in seen


def _readme_health_fields() -> set[str]:
    readme = pathlib.Path(__file__).parents[2] / "edge" / "README.md"
    section = readme.read_text().split("## Health\n")[1].split("\n## ")[0]

    return set(re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE))


async def test_health_has_the_fields_the_readme_documents(
    edge: EdgeUnderTest,
) -> None:
    """Health: 200 with exactly the fields edge/README.md's table lists
    (what the DNS router reads), 503 with status draining."""
    up = await edge.get("/healthz", host="anything")
    edge.edge.draining = True
    draining = await edge.get("/healthz")

    document = json.loads(up.body)
    assert up.status == 200
    assert set(document) == _readme_health_fields() == {
        "status", "draining", "connections", "max_connections",
        "bytes_per_second", "overloaded", "cache"}
    assert document["status"] == "up" and document["cache"]["objects"] == 0
    assert draining.status == 503
    assert json.loads(draining.body)["status"] == "draining"


async def test_no_store_is_never_written(
    edge: EdgeUnderTest, origin: Origin, tmp_path: object
) -> None:
    """no-store: every GET reaches the origin and nothing is stored (H02a)."""
    async def handler(request, n):  # type: ignore[no-untyped-def]
        from aiohttp import web
        return web.Response(text=f"n{n}", headers={
            "Cache-Control": "no-store", "ETag": '"a"'})
    origin.route("/ns", handler)

    first = await edge.get("/ns")
    second = await edge.get("/ns")

    assert (first.body, second.body) == (b"n1", b"n2")
    assert origin.count("/ns") == 2
    objects = os.path.join(str(tmp_path), "cache", "objects")
    assert [f for _, _, files in os.walk(objects) for f in files] == []


async def test_access_log_line_names_the_cache_status(
    edge: EdgeUnderTest, origin: Origin, caplog: Any
) -> None:
    """Each request logs one line with status and X-Cache, on both the
    general path and the hit fast path."""
    origin.static("/l", "l", Cache_Control="max-age=60")
    caplog.set_level(logging.INFO, logger="edge.access")

    await edge.get("/l")
    await edge.get("/l")

    lines = [r.getMessage() for r in caplog.records if r.name == "edge.access"]
    assert len(lines) == 2
    assert '"GET /l" 200 MISS' in lines[0]
    assert '"GET /l" 200 HIT' in lines[1]
