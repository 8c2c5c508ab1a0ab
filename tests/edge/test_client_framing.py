"""How answers are framed for clients, through real HTTP on loopback:
an HTTP/1.0 client is told where a body of unknown length ends by the
connection closing (RFC 9112 §6.3 item 8, §9.3)."""

from __future__ import annotations

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
