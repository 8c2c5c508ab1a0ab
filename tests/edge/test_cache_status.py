"""X-Cache and Age as clients see them when the stored copy cannot be
used or the origin's Age is not valid; real HTTP on loopback."""

from __future__ import annotations

from typing import Any, AsyncIterator

import pytest

from tests.edge.conftest import EdgeUnderTest, Origin, serve_edge
from tests.edge.rawserver import RawOrigin, Script


async def test_stale_copy_that_cannot_be_used_makes_answers_expired(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """With a stored copy too old to serve (must-revalidate) and the
    origin down, the 502 (GET, HEAD) and the only-if-cached 504 say
    EXPIRED, not MISS: a copy was there."""
    origin.static("/strict", "s", Cache_Control="max-age=1, must-revalidate")
    first = await edge.get("/strict")
    edge.clock.advance(5)
    await origin.stop()

    down = await edge.get("/strict")
    head = await edge.request("HEAD", "/strict")
    cached_only = await edge.get("/strict", Cache_Control="only-if-cached")
    never_stored = await edge.get("/other")

    assert first.x_cache == "MISS"
    assert (down.status, down.x_cache) == (502, "EXPIRED")
    assert (head.status, head.x_cache) == (502, "EXPIRED")
    assert (cached_only.status, cached_only.x_cache) == (504, "EXPIRED")
    assert (never_stored.status, never_stored.x_cache) == (502, "MISS")


@pytest.fixture
async def age_edge(tmp_path: Any) -> AsyncIterator[tuple[EdgeUnderTest, RawOrigin]]:
    raw = RawOrigin()
    await raw.start()
    edges = serve_edge(raw.url, tmp_path)
    try:
        yield await anext(edges), raw
    finally:
        await edges.aclose()
        await raw.stop()


@pytest.mark.parametrize("age", ["-5", "abc", "7200.0", "1, 2", "5;x=1"])
async def test_invalid_origin_age_is_never_repeated_as_a_huge_number(
    age_edge: tuple[EdgeUnderTest, RawOrigin], age: str
) -> None:
    """An invalid Age from the origin still makes the response count as
    very old (not reused), but clients get the age this cache measured,
    not 2147483648."""
    edge, raw = age_edge
    raw.scripts["/a"] = Script(
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\n"
        b"Age: " + age.encode() + b"\r\nContent-Length: 1\r\n\r\nx")

    replies = [await edge.get("/a") for _ in range(2)]

    assert [r.x_cache for r in replies] == ["MISS", "EXPIRED"]
    assert [r.headers.getall("Age") for r in replies] == [["0"], ["0"]]
    assert raw.hits["/a"] == 2


async def test_valid_origin_age_is_carried_on(
    age_edge: tuple[EdgeUnderTest, RawOrigin],
) -> None:
    """A valid Age is added to (RFC 9111 §4.2.3); one past 2^31 is sent
    as 2147483648 (§5.1)."""
    edge, raw = age_edge
    for path, age in (("/v", b"100"), ("/big", b"99999999999")):
        raw.scripts[path] = Script(
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\n"
            b"Age: " + age + b"\r\nContent-Length: 1\r\n\r\nx")

    valid = await edge.get("/v")
    big = await edge.get("/big")

    assert valid.headers["Age"] == "100"
    assert big.headers["Age"] == "2147483648"
