"""The lab origin: the headers a real site sends, and nothing outside its root."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dnsrouter.lab_origin import OriginServer, parse_listen


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[tuple[str, int]]:
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text("<p>hello</p>\n")
    (tmp_path / "secret.txt").write_text("outside the root\n")
    server = OriginServer(("127.0.0.1", 0), root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[:2]  # type: ignore[misc]
    finally:
        server.shutdown()
        server.server_close()


def fetch(
    address: tuple[str, int], path: str, headers: dict[str, str] | None = None
) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection(*address, timeout=5)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    response.read()

    return response


def test_file_is_served_with_freshness_and_validators(origin: tuple[str, int]) -> None:
    response = fetch(origin, "/")

    assert response.status == 200
    assert response.getheader("Cache-Control") == "public, max-age=60"
    assert response.getheader("ETag", "").startswith('"')
    assert response.getheader("Last-Modified")


def test_matching_etag_gets_not_modified(origin: tuple[str, int]) -> None:
    etag = fetch(origin, "/index.html").getheader("ETag", "")

    response = fetch(origin, "/index.html", {"If-None-Match": etag})

    assert response.status == 304


@pytest.mark.parametrize("path", ["/../secret.txt", "/%2e%2e/secret.txt", "/nope"])
def test_paths_outside_the_root_or_missing_are_not_found(
    origin: tuple[str, int], path: str
) -> None:
    assert fetch(origin, path).status == 404


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:8081", ("127.0.0.1", 8081)), ("[::1]:80", ("::1", 80))],
)
def test_listen_address_is_split_into_host_and_port(
    text: str, expected: tuple[str, int]
) -> None:
    assert parse_listen(text) == expected


def test_listen_address_without_port_is_refused() -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen("localhost")
