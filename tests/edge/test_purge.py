"""Purge URLs name objects exactly as requests do: spelled as on the
wire (or form-encoded, or in a JSON body), normalised like the cache
key; real HTTP on loopback."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from tests.edge.conftest import EdgeUnderTest, Origin, raw_exchange

SITE = "http://cdn.example.com"
STORED = ("/sp%20ace", "/a/b", "/a%2Fb", "/q?x=1&y=2", "/img/x", "/img2/y")


async def _raw(edge: EdgeUnderTest, method: str, target: str,
               *fields: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send one request exactly as given; return status and body."""
    head = "\r\n".join((
        f"{method} {target} HTTP/1.1", *fields,
        f"Content-Length: {len(body)}", "Connection: close", "", ""))
    raw = await raw_exchange(edge.port, head.encode() + body)
    status_line, _, rest = raw.partition(b"\r\n")

    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def _fill(edge: EdgeUnderTest, origin: Origin) -> None:
    async def any_path(request: web.BaseRequest, n: int) -> web.Response:
        return web.Response(text=request.raw_path, headers={
            "Cache-Control": "max-age=600"})

    for path in ("/sp ace", "/a/b", "/q", "/img/x", "/img2/y"):
        origin.route(path, any_path)
    for target in STORED:
        await _raw(edge, "GET", target, "Host: cdn.example.com")


def _stored(edge: EdgeUnderTest) -> set[str]:
    return {e.meta.primary.partition(" ")[2]
            for e in edge.edge.storage.entries()}


@pytest.mark.parametrize("query, purged", [
    # Spelled as on the wire: % escapes and & kept as they are.
    (f"url={SITE}/sp%20ace", {"/sp%20ace"}),
    (f"prefix={SITE}/a%2F", {"/a%2Fb"}),
    (f"url={SITE}/q?x=1&y=2", {"/q?x=1&y=2"}),
    (f"url={SITE}/img/../a/./b", {"/a/b"}),
    # Form-encoded once, as curl --data-urlencode does.
    ("url=http%3A%2F%2Fcdn.example.com%2Fq%3Fx%3D1%26y%3D2", {"/q?x=1&y=2"}),
    ("prefix=http%3A%2F%2Fcdn.example.com%2Fa%252F", {"/a%2Fb"}),
    (f"prefix={SITE}/img/", {"/img/x"}),
])
async def test_purge_query_names_objects_as_requests_do(
    edge: EdgeUnderTest, origin: Origin, query: str, purged: set[str],
) -> None:
    """``url=``/``prefix=`` take the rest of the query as the URL, as
    sent or form-encoded, normalised as the cache key is."""
    await _fill(edge, origin)

    status, body = await _raw(edge, "POST", f"/_admin/purge?{query}",
                              "Host: admin", "X-Admin-Token: secret-token")

    assert status == 200
    assert json.loads(body)["purged"] == len(purged)
    assert _stored(edge) == set(STORED) - purged


@pytest.mark.parametrize("url, purged", [
    (f"{SITE}/q?x=1&y=2", "/q?x=1&y=2"),
    (f"{SITE}/sp ace", "/sp%20ace"),
])
async def test_purge_accepts_a_json_body(
    edge: EdgeUnderTest, origin: Origin, url: str, purged: str
) -> None:
    """A JSON object body names the URL without any query encoding,
    even written decoded."""
    await _fill(edge, origin)
    document = json.dumps({"url": url}).encode()

    status, body = await _raw(
        edge, "POST", "/_admin/purge", "Host: admin",
        "X-Admin-Token: secret-token", "Content-Type: application/json",
        body=document)

    assert (status, json.loads(body)) == (200, {
        "purged": 1, "url": SITE + purged})
    assert _stored(edge) == set(STORED) - {purged}


@pytest.mark.parametrize("query, error", [
    (f"prefix={SITE}/img/..", "dot segment"),
    (f"prefix={SITE}/img/%2e", "dot segment"),
    ("url=http://other.example/a", "site"),
    ("prefix=/img/", "site"),
])
async def test_purges_that_cannot_be_meant_are_refused(
    edge: EdgeUnderTest, origin: Origin, query: str, error: str,
) -> None:
    """A prefix with a dot segment (which no stored key contains, and
    which normalising would widen to its parent) and a URL of no site
    get 400 naming the problem; nothing is purged."""
    await _fill(edge, origin)

    status, body = await _raw(edge, "POST", f"/_admin/purge?{query}",
                              "Host: admin", "X-Admin-Token: secret-token")

    assert status == 400 and error in json.loads(body)["error"]
    assert _stored(edge) == set(STORED)


async def test_a_purge_matching_nothing_says_what_it_looked_for(
    edge: EdgeUnderTest, origin: Origin
) -> None:
    """The answer names the normalised URL, so a purge of 0 shows which
    spelling was looked for."""
    await _fill(edge, origin)

    status, body = await _raw(
        edge, "POST", f"/_admin/purge?url={SITE}/%7Enobody/../none",
        "Host: admin", "X-Admin-Token: secret-token")

    assert (status, json.loads(body)) == (200, {
        "purged": 0, "url": f"{SITE}/none"})


