"""How answers are framed for clients, through real HTTP on loopback:
an HTTP/1.0 client is told where a body of unknown length ends by the
connection closing (RFC 9112 §6.3 item 8, §9.3), and a client that
expects 100-continue gets it before it sends its body (RFC 9110
§10.1.1)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tests.edge.conftest import EdgeUnderTest, Origin, raw_exchange


def _chunked(cache_control: str):  # type: ignore[no-untyped-def]
    """Return an origin handler sending ``hello`` without a length."""
    async def handler(request: web.BaseRequest, n: int) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Cache-Control": cache_control})
        await response.prepare(request)
        await response.write(b"hello")
        await response.write_eof()
        return response

    return handler


@pytest.mark.parametrize("cache_control", ["private", "max-age=60"])
async def test_http10_keepalive_client_gets_a_close_for_unknown_length(
    edge: EdgeUnderTest, origin: Origin, cache_control: str
) -> None:
    """A chunked origin reply (relayed, or streamed from a fill) to an
    HTTP/1.0 client asking for keep-alive ends with the connection
    closed, not the 75 s idle timeout, and without Connection:
    keep-alive."""
    origin.route("/c", _chunked(cache_control))

    raw = await raw_exchange(edge.port, (
        b"GET /c HTTP/1.0\r\nHost: cdn.example.com\r\n"
        b"Connection: keep-alive\r\n\r\n"), timeout=3)

    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200")
    assert b"keep-alive" not in head.lower()
    assert b"content-length" not in head.lower()
    assert body == b"hello"


async def test_expect_100_continue_is_answered_before_the_body(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """A POST with Expect: 100-continue gets an interim 100 at once; the
    body sent after it reaches the origin and the final answer follows
    on the same connection."""
    async def echo(request: web.BaseRequest, n: int) -> web.Response:
        return web.Response(body=b"got " + await request.read())

    origin.route("/p", echo)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"POST /p HTTP/1.1\r\nHost: cdn.example.com\r\n"
                 b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n")

    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 0.5)
    writer.write(b"hello")
    final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    body = await asyncio.wait_for(reader.readexactly(9), 5)
    writer.close()

    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert final.startswith(b"HTTP/1.1 200")
    assert body == b"got hello"
    assert "Expect" not in origin.seen[0].headers
