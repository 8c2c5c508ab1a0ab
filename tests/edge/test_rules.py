"""Unit tests of the pure rules: freshness, age, storability, Vary, 304
merge, HTTP dates, cache keys and ranges. No network, no clock."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from edge import cachekey, freshness, ranges
from edge.httpdate import format_http_date, parse_http_date

NOW = 1_700_000_000.0


def _h(**fields: str) -> CIMultiDict[str]:
    return CIMultiDict({k.replace("_", "-"): v for k, v in fields.items()})


@pytest.mark.parametrize("fields, lifetime", [
    ({"Cache_Control": "max-age=900, s-maxage=2"}, 2),
    ({"Cache_Control": "s-maxage=2, max-age=900"}, 2),
    ({"Cache_Control": "max-age=60", "Expires": format_http_date(NOW - 86400)}, 60),
    ({"Expires": "0"}, 0),
    ({"Expires": format_http_date(NOW + 30)}, 30),
    ({"Cache_Control": "max-age=abc"}, 0),
    ({"Cache_Control": "max-age=99999999999"}, freshness.DELTA_MAX),
    ({"Last_Modified": format_http_date(NOW - 1000)}, 100),
    ({"Last_Modified": format_http_date(NOW - 10**8)}, freshness.HEURISTIC_CAP),
    ({}, 0),
])
def test_freshness_lifetime_order(fields: dict[str, str], lifetime: float) -> None:
    """s-maxage > max-age > Expires > Last-Modified heuristic (§4.2.1)."""
    headers = _h(**fields)
    cc = freshness.parse_cache_control(headers.getall("Cache-Control", ()))

    assert freshness.freshness_lifetime(200, headers, cc, NOW) == lifetime


def test_negative_ttl_applies_to_404_without_freshness_only() -> None:
    """The site's default lifetime covers a bare 404, never a 200."""
    assert freshness.freshness_lifetime(404, _h(), {}, NOW, 30) == 30
    assert freshness.freshness_lifetime(200, _h(), {}, NOW, 30) == 0


def test_current_age_follows_rfc9111_4_2_3() -> None:
    """Age = max(apparent, Age + delay) + resident time."""
    assert freshness.current_age(10, NOW, NOW, NOW, NOW + 5) == 15
    assert freshness.current_age(0, NOW - 20, NOW, NOW + 1, NOW + 1) == 21
    assert freshness.current_age(0, NOW + 50, NOW, NOW, NOW + 2) == 2


@pytest.mark.parametrize("request_fields, response_fields, storable", [
    ({}, {"Cache_Control": "max-age=60"}, True),
    ({}, {"Cache_Control": "no-store, max-age=60", "ETag": '"a"'}, False),
    ({"Cache_Control": "no-store"}, {"Cache_Control": "max-age=60"}, False),
    ({}, {"Cache_Control": "private, max-age=60"}, False),
    ({"Authorization": "x"}, {"Cache_Control": "max-age=60"}, False),
    ({"Authorization": "x"}, {"Cache_Control": "public, max-age=60"}, True),
    ({"Authorization": "x"}, {"Cache_Control": "s-maxage=60"}, True),
    ({}, {"Cache_Control": "max-age=60", "Set_Cookie": "a=b"}, False),
    ({}, {"Cache_Control": "max-age=60", "Vary": "Accept, *"}, False),
])
def test_storable_for_a_shared_cache(
    request_fields: dict[str, str], response_fields: dict[str, str],
    storable: bool,
) -> None:
    """RFC 9111 §3 and §3.5, plus the Set-Cookie policy."""
    assert freshness.is_storable(
        "GET", 200, _h(**request_fields), _h(**response_fields)
    ) is storable


def test_statuses_and_methods_that_are_stored() -> None:
    """Whole GET replies of any final status may be stored when their
    headers allow; not HEAD, 206 or 304, nor an unknown status with
    must-understand (RFC 9111 §3, §5.2.2.3)."""
    ok = _h(Cache_Control="max-age=60")
    strict = _h(Cache_Control="max-age=60, must-understand")

    assert not freshness.is_storable("HEAD", 200, _h(), ok)
    assert not freshness.is_storable("GET", 206, _h(), ok)
    assert not freshness.is_storable("GET", 304, _h(), ok)
    assert freshness.is_storable("GET", 503, _h(), ok)
    assert freshness.is_storable("GET", 404, _h(), strict)
    assert not freshness.is_storable("GET", 599, _h(), strict)


@pytest.mark.parametrize("lines, age", [
    ([], 0), (["15"], 15), (["0", "0"], freshness.DELTA_MAX),
    (["abc"], freshness.DELTA_MAX), (["-7200"], freshness.DELTA_MAX),
    (["7200.0"], freshness.DELTA_MAX), (["0, 0"], freshness.DELTA_MAX),
    (["7200;foo=bar"], freshness.DELTA_MAX), (["99999999999"], freshness.DELTA_MAX),
])
def test_age_field_parsing(lines: list[str], age: float) -> None:
    """Age is one delta-seconds; an invalid one counts as very old."""
    assert freshness.parse_age(lines) == age


def test_vary_values_normalise_and_tell_absent_from_empty() -> None:
    """Lines join, spaces around commas go, absent differs from empty."""
    fields = ("accept-encoding", "accept-language")
    one = freshness.vary_values(fields, _h(Accept_Encoding="br,  gzip"))
    two = freshness.vary_values(fields, _h(Accept_Encoding="br, gzip",
                                           Accept_Language=""))

    assert one == ("br,gzip", None)
    assert two == ("br,gzip", "")


def test_merge_304_keeps_framing_and_coding() -> None:
    """§3.2: a 304 updates fields but not Content-Length/Encoding."""
    stored = (("Content-Encoding", "gzip"), ("X-Build", "1"), ("ETag", '"v1"'))
    update = _h(Content_Length="0", X_Build="2", Cache_Control="max-age=60",
                ETag='"v2"')

    merged = dict(freshness.merge_304(stored, update))

    assert merged == {"Content-Encoding": "gzip", "X-Build": "2",
                      "ETag": '"v1"', "Cache-Control": "max-age=60"}


@pytest.mark.parametrize("text, valid", [
    ("Sun, 06 Nov 1994 08:49:37 GMT", True),
    ("Sunday, 06-Nov-94 08:49:37 GMT", True),
    ("Sun Nov  6 08:49:37 1994", True),
    ("Mon, 02 Jan 2023 7:05:09 GMT", False),
    ("0", False),
    ("Sun, 06 Nov 1994 25:49:37 GMT", False),
])
def test_http_dates_are_parsed_strictly(text: str, valid: bool) -> None:
    """RFC 9110 §5.6.7: three forms, two-digit hours; others invalid."""
    parsed = parse_http_date(text)

    assert (parsed is not None) is valid
    if valid:
        assert parsed == 784111777.0


@pytest.mark.parametrize("path, normal", [
    ("/a/./b/../c", "/a/c"),
    ("/%7Euser/%41%2f", "/~user/A%2F"),
    ("/../../etc/passwd", "/etc/passwd"),
    ("/Case/Kept", "/Case/Kept"),
    ("", "/"),
    ("/sp ace/\u00e9", "/sp%20ace/%C3%A9"),
    ("/a%2fb%", "/a%2Fb%"),
])
def test_cache_key_paths_are_normalised(path: str, normal: str) -> None:
    """RFC 3986 §6.2.2: dot segments, unreserved escapes, characters a
    URI cannot hold escaped; case kept."""
    assert cachekey.normalise_path(path) == normal


def test_query_sorting_is_opt_in_and_names_are_hashed() -> None:
    """The query is kept as sent unless sorted; storage names are hex."""
    assert cachekey.primary_key("s", "/p", "b=1&a=2", False) == "s /p?b=1&a=2"
    assert cachekey.primary_key("s", "/p", "b=1&a=2", True) == "s /p?a=2&b=1"
    name = cachekey.storage_name("s /../../x", "")
    assert len(name) == 64 and set(name) <= set("0123456789abcdef")


@pytest.mark.parametrize("value, expected", [
    ("bytes=0-0", [(0, 0)]),
    ("bytes=-2", [(8, 9)]),
    ("bytes=5-100", [(5, 9)]),
    ("bytes=0-1, 4-5", [(0, 1), (4, 5)]),
    ("bytes=10-", []),
    ("bytes=3-1", None),
    ("bytes=abc", None),
    ("items=0-1", None),
    ("bytes=" + ",".join(["0-0"] * 40), None),
])
def test_range_parsing(value: str, expected: object) -> None:
    """RFC 9110 §14.1.2 over a 10-byte body; None means ignore Range."""
    assert ranges.parse_ranges(value, 10) == expected
