"""Stale answers collapse like fills do: clients that waited on one
origin request that failed all get the stale copy (RFC 5861 §4) from
that one failure; real HTTP on loopback."""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

import pytest
from aiohttp import web

from edge.app import Edge
from tests.edge.conftest import EdgeUnderTest, FakeClock, Origin, make_config


@pytest.fixture
async def impatient_edge(
    origin: Origin, tmp_path: Any, clock: FakeClock
) -> AsyncIterator[EdgeUnderTest]:
    """An edge that gives up on a silent origin after 0.5 s."""
    config = make_config(origin.url, str(tmp_path / "cache"), read_timeout=0.5)
    under_test = EdgeUnderTest(Edge(config, clock=clock), clock)
    await under_test.start()
    yield under_test
    await under_test.stop()


@pytest.mark.parametrize("failure", ["503", "timeout"])
async def test_clients_waiting_on_a_failed_fetch_all_get_stale_at_once(
    impatient_edge: EdgeUnderTest, origin: Origin, failure: str
) -> None:
    """Twenty clients asking for a stale object while the origin answers
    503 (or never answers) cost one origin request, and all get the
    stale copy when that one request fails."""
    async def fresh(request: web.BaseRequest, n: int) -> web.Response:
        if n > 1:
            await asyncio.sleep(0.2 if failure == "503" else 1.2)
            return web.Response(status=503, text="down")
        return web.Response(text="kept", headers={
            "Cache-Control": "max-age=1, stale-if-error=600"})

    origin.route("/s", fresh)
    await impatient_edge.get("/s")
    impatient_edge.clock.advance(5)

    started = time.monotonic()
    replies = await asyncio.gather(
        *(impatient_edge.get("/s") for _ in range(20)))
    elapsed = time.monotonic() - started

    assert {(r.status, r.body, r.x_cache) for r in replies} == \
        {(200, b"kept", "STALE")}
    assert origin.count("/s") == 2
    assert elapsed < 0.9
