"""Qualified Cache-Control directives through real HTTP on loopback."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tests.edge.conftest import EdgeUnderTest, Origin


@pytest.mark.parametrize("directive, withheld", [
    ('no-cache="X-Sec"', ("X-Sec",)),
    ("no-cache=x-sec", ("X-Sec",)),
    ('no-cache="X-Sec, X-Token"', ("X-Sec", "X-Token")),
])
async def test_fields_named_by_no_cache_are_never_reused_unvalidated(
    edge: EdgeUnderTest, origin: Origin, directive: str,
    withheld: tuple[str, ...],
) -> None:
    """no-cache="F" (RFC 9111 §5.2.2.4): the response is reused, but a
    HIT (fast path, general path, follower of a fill) never carries F;
    the MISS and a REVALIDATED answer, which the origin vouched for,
    do."""
    async def handler(request: web.BaseRequest, n: int) -> web.Response:
        await asyncio.sleep(0.2 if n == 1 else 0)
        if n > 1 and request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"'})
        return web.Response(text="body", headers={
            "Cache-Control": f"max-age=60, {directive}", "ETag": '"v1"',
            "X-Sec": "secret", "X-Token": "t", "X-Other": "kept"})

    origin.route("/s", handler)

    miss, follower = await asyncio.gather(
        edge.get("/s"), edge.get("/s", X_Client="general"))
    fast = await edge.get("/s")
    general = await edge.get("/s", X_Client="general")
    edge.clock.advance(120)
    revalidated = await edge.get("/s", X_Client="general")

    assert miss.x_cache == "MISS" and follower.x_cache == "HIT"
    assert [fast.x_cache, general.x_cache, revalidated.x_cache] == \
        ["HIT", "HIT", "REVALIDATED"]
    for reply in (miss, follower, fast, general, revalidated):
        assert reply.body == b"body" and reply.headers["X-Other"] == "kept"
    for name in withheld:
        assert miss.headers[name] and revalidated.headers[name]
        assert name not in follower.headers
        assert name not in fast.headers and name not in general.headers
    assert origin.count("/s") == 2
