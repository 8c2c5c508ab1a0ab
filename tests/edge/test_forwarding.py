"""What the origin receives, through real HTTP on loopback.

Framing: a body is forwarded with the Content-Length that counts it, or
not at all and with no framing field, so a pooled origin connection
never goes out of step (RFC 9112 §6.3, §11.2). Target: the origin gets
the normalised target the cache key was made from, never the client's
spelling (RFC 9111 §2). The origin here, like nginx, answers before it
reads (and skips) a request body, and echoes the request line.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

import pytest

from tests.edge.conftest import EdgeUnderTest, raw_exchange, serve_edge
from tests.edge.rawserver import KeepAliveOrigin


@pytest.fixture
async def keepalive_origin() -> AsyncIterator[KeepAliveOrigin]:
    server = KeepAliveOrigin()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def ka_edge(
    keepalive_origin: KeepAliveOrigin, tmp_path: Any
) -> AsyncIterator[EdgeUnderTest]:
    """An edge whose only origin is ``keepalive_origin``."""
    edges = serve_edge(keepalive_origin.url, tmp_path)
    yield await anext(edges)
    await edges.aclose()


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_get_or_head_body_never_desyncs_the_origin_connection(
    ka_edge: EdgeUnderTest, keepalive_origin: KeepAliveOrigin, method: str
) -> None:
    """A GET/HEAD with content is forwarded without it and without its
    Content-Length, so the next request on the pooled origin connection
    is read as itself and cached under its own key."""
    smuggle = b"GET /evil HTTP/1.1\r\nX-Pad: "
    await raw_exchange(ka_edge.port, (
        f"{method} /innocent HTTP/1.1\r\nHost: cdn.example.com\r\n"
        f"Connection: close\r\nContent-Length: {len(smuggle)}\r\n\r\n"
    ).encode() + smuggle)

    first = await ka_edge.get("/next")
    second = await ka_edge.get("/next")

    assert keepalive_origin.lines == [
        f"{method} /innocent HTTP/1.1", "GET /next HTTP/1.1"]
    assert "content-length" not in keepalive_origin.received[0].fields
    assert (first.body, first.x_cache) == (b"GET /next HTTP/1.1", "MISS")
    assert (second.body, second.x_cache) == (b"GET /next HTTP/1.1", "HIT")


async def _chunks() -> AsyncIterator[bytes]:
    for part in (b"chunk-one ", b"chunk-two"):
        yield part


@pytest.mark.parametrize("method, data, expected", [
    ("POST", b"a=1&b=2", b"a=1&b=2"),
    ("PUT", None, b"chunk-one chunk-two"),
    ("DELETE", b"why", b"why"),
    ("OPTIONS", b"opt", b"opt"),
])
async def test_unsafe_and_options_bodies_arrive_whole_and_in_step(
    ka_edge: EdgeUnderTest, keepalive_origin: KeepAliveOrigin,
    method: str, data: bytes | None, expected: bytes,
) -> None:
    """Bodies of other methods (Content-Length or chunked from the
    client) reach the origin byte for byte, and the following GET on the
    same origin connection is still in step."""
    assert ka_edge.session is not None
    body: Any = data if data is not None else _chunks()
    async with ka_edge.session.request(
        method, ka_edge.url + "/thing", data=body,
        headers={"Host": "cdn.example.com"},
    ) as response:
        await response.read()

    after = await ka_edge.get("/after")

    assert keepalive_origin.lines == [
        f"{method} /thing HTTP/1.1", "GET /after HTTP/1.1"]
    assert keepalive_origin.received[0].body == expected
    assert after.body == b"GET /after HTTP/1.1"


@pytest.mark.parametrize("sent, normalised", [
    ("/t9/x/../b", "/t9/b"),
    ("/t9/%2e%2e/index.html", "/index.html"),
    ("/t9/%2E%2e/%2e/index.html", "/index.html"),
    ("/t9/%63", "/t9/c"),
    ("/t9/./c/.", "/t9/c/"),
    ("/../../t9/%7euser", "/t9/~user"),
    ("/t9/a%2fb", "/t9/a%2Fb"),
    ("/t9/q?", "/t9/q"),
    ("/t9/x/..?b=2&a=1", "/t9/?b=2&a=1"),
    ("/t9/f#frag", "/t9/f"),
    ("/t9/g?a=1#frag", "/t9/g?a=1"),
])
async def test_origin_gets_the_target_the_key_was_made_from(
    ka_edge: EdgeUnderTest, keepalive_origin: KeepAliveOrigin,
    sent: str, normalised: str,
) -> None:
    """A target is forwarded in its normalised form, so what a later
    request with the plain spelling hits is what the origin says for
    that spelling."""
    wire = await raw_exchange(ka_edge.port, (
        f"GET {sent} HTTP/1.1\r\nHost: cdn.example.com\r\n"
        "Connection: close\r\n\r\n").encode())

    plain = await ka_edge.get(normalised)

    expected = f"GET {normalised} HTTP/1.1".encode()
    assert keepalive_origin.lines == [expected.decode()]
    assert wire.endswith(b"\r\n\r\n" + expected)
    assert (plain.body, plain.x_cache) == (expected, "HIT")


async def test_edge_adds_no_content_type_and_no_server_field(
    ka_edge: EdgeUnderTest, keepalive_origin: KeepAliveOrigin
) -> None:
    """A reply the origin sent without Content-Type reaches clients
    without one on every path (RFC 9110 §8.3: no guessed type), and no
    answer names the edge's software or its version in Server."""
    replies = [
        await ka_edge.get("/plain"),                          # MISS
        await ka_edge.get("/plain"),                          # fast HIT
        await ka_edge.get("/plain", X_Client="general"),      # general HIT
        await ka_edge.get("/plain", Range="bytes=0-3"),       # 206
        await ka_edge.request("HEAD", "/plain"),
        await ka_edge.get("/plain", host="unknown.example"),  # 421
        await ka_edge.get("/healthz"),
    ]

    assert [r.status for r in replies] == [200, 200, 200, 206, 200, 421, 200]
    assert [r.x_cache for r in replies[:4]] == ["MISS", "HIT", "HIT", "HIT"]
    for reply in replies[:5]:
        assert "Content-Type" not in reply.headers
    assert [r.headers.get("Server") for r in replies] == [None] * len(replies)


async def test_reply_out_of_step_on_a_pooled_connection_is_fetched_again(
    ka_edge: EdgeUnderTest, keepalive_origin: KeepAliveOrigin
) -> None:
    """When bytes left over from an origin's previous reply (more body
    than it declared) arrive before the next reply, the GET is sent
    again, once, on a new connection (RFC 9112 §9.3.1) instead of
    answering 502 for the origin's earlier mistake."""
    first = await ka_edge.get("/one")
    keepalive_origin.overrun = b"surplus body bytes"

    second = await ka_edge.get("/two")

    assert first.body == b"GET /one HTTP/1.1"
    assert (second.status, second.body) == (200, b"GET /two HTTP/1.1")
    assert keepalive_origin.lines == [
        "GET /one HTTP/1.1", "GET /two HTTP/1.1", "GET /two HTTP/1.1"]
    assert keepalive_origin.connections == 2
