"""Case H11: oversized requests get precise statuses, oversized origin
headers a 502, and the process keeps serving."""

from __future__ import annotations

from tests.edge.conftest import EdgeUnderTest, Origin, raw_exchange


def _request(target: str, *lines: str) -> bytes:
    head = [f"GET {target} HTTP/1.1", "Host: cdn.example.com", *lines, "", ""]
    return "\r\n".join(head).encode()


async def test_h11_oversize_requests_and_replies(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """H11: 16 KiB Cookie → 431 + close; 10,000-char path → 414; 150 small
    lines accepted; 12 KiB origin header → 502; then normal service."""
    origin.static("/a.css", "a{}", Cache_Control="max-age=60")
    origin.static("/fat", "fat", Cache_Control="max-age=60",
                  Link="<" + "l" * 12 * 1024 + ">")

    cookie = await raw_exchange(edge.port, _request(
        "/a.css", "Cookie: c=" + "k" * 16 * 1024))
    long_path = await raw_exchange(edge.port, _request(
        "/" + "p" * 10_000, "Connection: close"))
    many = await raw_exchange(edge.port, _request(
        "/a.css", *(f"X-Line-{n}: {n}" for n in range(150)),
        "Connection: close"))
    fat = [await edge.get("/fat") for _ in range(2)]
    after = await edge.get("/a.css")

    assert cookie.startswith(b"HTTP/1.1 431 ")
    assert b"Connection: close" in cookie
    assert long_path.startswith(b"HTTP/1.1 414 ")
    assert many.startswith(b"HTTP/1.1 200 ")
    assert [r.status for r in fat] == [502, 502]
    assert origin.count("/fat") == 2
    assert after.status == 200 and after.body == b"a{}"
    assert [s.path for s in origin.seen if s.path.startswith("/p")] == []


async def test_request_body_over_the_limit_gets_413(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """A declared body over max_body_mb is refused before the origin."""
    answer = await raw_exchange(edge.port, (
        "POST /upload HTTP/1.1\r\nHost: cdn.example.com\r\n"
        f"Content-Length: {65 * 1024 * 1024}\r\n\r\n").encode())

    assert answer.startswith(b"HTTP/1.1 413 ")
    assert origin.seen == []
