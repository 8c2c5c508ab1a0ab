"""The hit fast path: plain requests for fresh small objects are answered
from precomputed bytes; anything else moves the connection to aiohttp."""

from __future__ import annotations

import asyncio

from edge.fastpath import parse_head
from tests.edge.conftest import EdgeUnderTest, Origin, raw_exchange


def test_parse_head_accepts_only_plain_requests() -> None:
    """Only HTTP/1.1 GET/HEAD with allowlisted fields and one Host."""
    plain = b"GET /a HTTP/1.1\r\nHost: h\r\nUser-Agent: x\r\nAccept: */*"

    assert parse_head(plain) == (b"GET", b"/a", b"h")
    assert parse_head(b"GET /a HTTP/1.0\r\nHost: h") is None
    assert parse_head(b"POST /a HTTP/1.1\r\nHost: h") is None
    assert parse_head(b"GET /a HTTP/1.1\r\nHost: h\r\nRange: bytes=0-1") is None
    assert parse_head(b"GET /a HTTP/1.1\r\nHost: h\r\nHost: i") is None
    assert parse_head(b"GET /a HTTP/1.1\r\nHost : h") is None
    assert parse_head(b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: close") is None
    assert parse_head(b"GET http://h/a HTTP/1.1\r\nHost: h") is None


async def test_pipelined_hits_then_a_miss_on_one_connection(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """Fast answers keep their order and the connection moves to the
    general path for a miss, a range and a close, all answered in order."""
    origin.static("/hot", "HOT", Cache_Control="max-age=60", ETag='"h"')
    origin.static("/cold", "COLD", Cache_Control="max-age=60")
    await edge.get("/hot")
    request = b"GET %s HTTP/1.1\r\nHost: cdn.example.com\r\n%s\r\n"

    wire = await raw_exchange(edge.port, b"".join([
        request % (b"/hot", b""),
        request % (b"/hot", b""),
        b"HEAD /hot HTTP/1.1\r\nHost: cdn.example.com\r\n\r\n",
        request % (b"/cold", b""),
        request % (b"/hot", b"Range: bytes=1-1\r\n"),
        request % (b"/hot", b"Connection: close\r\n"),
    ]))

    replies = wire.split(b"HTTP/1.1 ")[1:]
    assert [r[:3] for r in replies] == [b"200", b"200", b"200", b"200",
                                        b"206", b"200"]
    assert replies[0].endswith(b"\r\n\r\nHOT")
    assert replies[2].endswith(b"\r\n\r\n")
    assert replies[3].endswith(b"\r\n\r\nCOLD")
    assert replies[4].endswith(b"\r\n\r\nO")
    for reply in replies[:3]:
        assert reply.count(b"\r\nAge: ") == 1
        assert b"X-Cache: HIT" in reply and b"Content-Length: 3" in reply


async def test_fast_hits_are_counted_and_age(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """Fast answers compute Age per request and show up in metrics."""
    origin.static("/hot", "HOT", Cache_Control="max-age=60")
    await edge.get("/hot")
    edge.clock.advance(7)

    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"GET /hot HTTP/1.1\r\nHost: cdn.example.com\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    body = await reader.readexactly(3)
    writer.close()

    assert b"\r\nAge: 7\r\n" in head and body == b"HOT"
    assert edge.edge.metrics.requests["HIT"] == 1


def _count(head: bytes, name: bytes) -> int:
    return sum(line.lower().startswith(name.lower() + b":")
               for line in head.split(b"\r\n"))


async def test_generated_fields_appear_once_on_every_hit(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """Fields the edge generates (X-Cache, Age, Accept-Ranges,
    Content-Length) appear once on fast and general hits even when the
    origin sent its own Accept-Ranges."""
    origin.static("/ar", "AR", Cache_Control="max-age=60",
                  Accept_Ranges="bytes")
    await edge.get("/ar")

    wire = await raw_exchange(edge.port, (
        b"GET /ar HTTP/1.1\r\nHost: cdn.example.com\r\n\r\n"
        b"GET /ar HTTP/1.1\r\nHost: cdn.example.com\r\nX-Other: 1\r\n"
        b"Connection: close\r\n\r\n"))

    heads = [reply.partition(b"\r\n\r\n")[0]
             for reply in wire.split(b"HTTP/1.1 ")[1:]]
    assert len(heads) == 2
    for head in heads:
        for name in (b"X-Cache", b"Age", b"Accept-Ranges", b"Content-Length"):
            assert _count(head, name) == 1, (name, head)
