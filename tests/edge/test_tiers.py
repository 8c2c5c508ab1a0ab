"""A shield tier: children fetch misses through parents chosen by
rendezvous hashing; a failed parent hands its share on; no loops."""

from __future__ import annotations

import dataclasses
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from edge.app import Edge
from edge.config import SiteConfig
from edge.upstream import Upstreams
from tests.edge.conftest import (
    EdgeUnderTest, FakeClock, Origin, make_config, raw_exchange,
)

Factory = Callable[..., Awaitable[EdgeUnderTest]]


@pytest.fixture
async def make_edge(tmp_path: Any, clock: FakeClock) -> AsyncIterator[Factory]:
    started: list[EdgeUnderTest] = []

    async def factory(name: str, origin_url: str,
                      parents: tuple[str, ...] = ()) -> EdgeUnderTest:
        config = make_config(origin_url, str(tmp_path / name), name=name)
        config = dataclasses.replace(config, server=dataclasses.replace(
            config.server, parents=parents))
        under_test = EdgeUnderTest(Edge(config, clock=clock), clock)
        await under_test.start()
        started.append(under_test)
        return under_test

    yield factory
    # Children first, so parents have no idle client connections left.
    for under_test in reversed(started):
        await under_test.stop()


async def test_three_edge_chain_fetches_each_object_from_origin_once(
    origin: Origin, make_edge: Factory
) -> None:
    """Two children behind one parent: one origin request per object."""
    for n in range(5):
        origin.static(f"/o{n}", f"object {n}", Cache_Control="max-age=600")
    parent = await make_edge("parent", origin.url)
    children = [await make_edge(f"child{i}", origin.url, (parent.url,))
                for i in range(2)]

    replies = [await child.get(f"/o{n}") for child in children
               for n in range(5)]

    assert [r.body for r in replies] == [f"object {n}".encode()
                                         for _ in range(2) for n in range(5)]
    assert all(origin.count(f"/o{n}") == 1 for n in range(5))
    assert "pycdn; edge=child0" in origin.seen[0].headers["CDN-Loop"]


async def test_a_dead_parent_moves_its_share_then_the_origin_serves(
    origin: Origin, make_edge: Factory
) -> None:
    """With its parent down a child fetches from the origin itself."""
    origin.static("/x", "x", Cache_Control="max-age=600")
    parent = await make_edge("parent", origin.url)
    child = await make_edge("child", origin.url, (parent.url,))
    await parent.edge.close()

    reply = await child.get("/x")

    assert reply.status == 200 and reply.body == b"x"
    assert origin.count("/x") == 1


async def test_a_parent_cycle_ends_at_the_origin_after_one_round(
    origin: Origin, make_edge: Factory
) -> None:
    """A misconfigured cycle (each edge the other's parent) ends at the
    origin as soon as a request comes back to an edge it passed (its
    own CDN-Loop entry, RFC 8586)."""
    origin.static("/loop", "l", Cache_Control="max-age=600")
    first = await make_edge("first", origin.url)
    second = await make_edge("second", origin.url, (first.url,))
    first.edge.proxy.upstreams = Upstreams(
        (second.url,), loop_id=first.edge.proxy.upstreams.loop_id)

    reply = await second.get("/loop")

    assert reply.status == 200
    assert origin.count("/loop") == 1
    assert origin.seen[0].headers["Via"] == \
        "1.1 second, 1.1 first, 1.1 second"


async def test_head_misses_and_forged_loop_marks_still_use_the_parent(
    origin: Origin, make_edge: Factory
) -> None:
    """A child's HEAD miss is answered through its parent, and a client's
    made-up ``CDN-Loop: pycdn`` does not send its misses past the
    parent: only the edge's own (unguessable) entry counts."""
    origin.static("/p", "held", Cache_Control="max-age=600")
    parent = await make_edge("parent", origin.url)
    child = await make_edge("child", origin.url, (parent.url,))
    await parent.get("/p")

    head = await child.request("HEAD", "/p")
    forged = await child.get("/p", CDN_Loop="pycdn; edge=child, pycdn")

    assert head.status == 200 and head.headers["Content-Length"] == "4"
    assert forged.body == b"held"
    assert origin.count("/p") == 1


def test_rendezvous_choice_is_stable_and_spreads_keys() -> None:
    """Every child ranks parents alike per key; keys spread over parents;
    removing one parent only moves its own keys."""
    site = SiteConfig("s", (), "http://192.0.2.1")
    three = Upstreams(("http://a", "http://b", "http://c"))
    two = Upstreams(("http://a", "http://b"))
    keys = [f"s /k{n}" for n in range(300)]

    first = {k: three.candidates(site, k, False)[0] for k in keys}
    after = {k: two.candidates(site, k, False)[0] for k in keys}

    assert len(set(first.values())) == 3
    assert all(after[k] == first[k] for k in keys if first[k] != "http://c")
    assert three.candidates(site, "s /k1", True) == ["http://192.0.2.1"]


def test_only_the_edges_own_loop_entry_marks_a_loop() -> None:
    """An entry with this edge's id is a loop; other CDNs' entries and
    other edges' (or made-up) pycdn entries are not."""
    upstreams = Upstreams(("http://a",))
    own = upstreams.loop_entry("e1")

    assert upstreams.has_looped([f"foo, {own}"])
    assert not upstreams.has_looped(["othercdn", "pycdn; edge=e1"])
    assert not upstreams.has_looped([own.replace(upstreams.loop_id, "x")])
    assert Upstreams(()).loop_id != upstreams.loop_id


async def test_a_parents_304_leaves_no_x_cache_in_the_childs_copy(
    origin: Origin, make_edge: Factory
) -> None:
    """After a revalidation through a parent, the child's hits carry one
    X-Cache (its own): the parent's, in the 304, is not stored."""
    async def tagged(request: web.BaseRequest, n: int) -> web.Response:
        fields = {"ETag": '"t1"', "Cache-Control": "max-age=1"}
        if request.headers.get("If-None-Match") == '"t1"':
            return web.Response(status=304, headers=fields)
        return web.Response(text="tagged", headers=fields)

    origin.route("/t", tagged)
    parent = await make_edge("parent", origin.url)
    child = await make_edge("child", origin.url, (parent.url,))
    await child.get("/t")
    child.clock.advance(5)

    revalidated = await child.get("/t")
    hits = await raw_exchange(child.port, (
        b"GET /t HTTP/1.1\r\nHost: cdn.example.com\r\n\r\n"
        b"GET /t HTTP/1.1\r\nHost: cdn.example.com\r\n"
        b"Connection: close\r\n\r\n"))

    assert revalidated.x_cache == "REVALIDATED"
    for hit in hits.split(b"HTTP/1.1 ")[1:]:
        assert hit.lower().count(b"\r\nx-cache:") == 1
        assert b"\r\nX-Cache: HIT\r\n" in hit
