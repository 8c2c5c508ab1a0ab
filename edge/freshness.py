"""RFC 9111 rules as pure functions: may it be stored, how long is it
fresh, how old is it, may it be served stale, which variant matches.

Nothing here does I/O or reads a clock: times are POSIX seconds passed
in by the caller, and headers are multidicts. The edge is a *shared*
cache, so ``s-maxage`` counts and ``private`` forbids storing.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

from edge.httpdate import parse_http_date

Headers = CIMultiDict[str] | CIMultiDictProxy[str]

# RFC 9110 §15.1: statuses that are heuristically cacheable.
HEURISTIC_STATUSES = frozenset(
    {200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501}
)
# Statuses this cache understands (RFC 9111 §5.2.2.3): with
# must-understand, only these are stored. Any other final status may be
# stored when its headers allow (RFC 9111 §3 asks for understanding only
# of 206 and 304); 206 and 304 never are, because fills always fetch
# whole, unconditional objects.
UNDERSTOOD_STATUSES = HEURISTIC_STATUSES - {206} | {302, 303, 307}
NEVER_STORED_STATUSES = frozenset({206, 304})
# RFC 9111 §4.2.2 suggests 10% of the time since Last-Modified; a day's
# cap keeps an object untouched for years from living for a month.
HEURISTIC_FRACTION = 0.1
HEURISTIC_CAP = 86400.0
# RFC 9111 §1.2.2: a delta-seconds that overflows is read as 2^31.
DELTA_MAX = 2147483648
# RFC 5861 §4: the statuses (and failures to connect) stale-if-error
# covers.
STALE_IF_ERROR_STATUSES = frozenset({500, 502, 503, 504})

# RFC 9111 §3.2: stored fields a 304 must not overwrite; hop-by-hop
# fields (RFC 9110 §7.6.1) never reach storage in the first place.
# They are the fields that describe the stored bytes themselves: their
# length, coding, range, digest and validator.
NOT_UPDATED_BY_304 = frozenset(
    {"content-length", "content-encoding", "transfer-encoding",
     "content-range", "content-md5", "etag", "age"}
)


def parse_cache_control(values: Iterable[str]) -> dict[str, str | None]:
    """Parse Cache-Control field values into ``{directive: argument}``.

    Directive names are lower-cased; quoted arguments are unquoted. When
    a directive repeats, the first occurrence wins (RFC 9111 §4.2.1).
    """
    result: dict[str, str | None] = {}
    for value in values:
        for part in _split_commas(value):
            name, sep, arg = part.partition("=")
            name = name.strip().lower()
            if not name or name in result:
                continue
            arg = arg.strip()
            if len(arg) >= 2 and arg[0] == arg[-1] == '"':
                arg = arg[1:-1]
            result[name] = arg if sep else None

    return result


def _split_commas(value: str) -> list[str]:
    """Split on commas outside quoted strings."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))

    return [p for p in (p.strip() for p in parts) if p]


def get_delta_seconds(cc: dict[str, str | None], name: str) -> int | None:
    """Return a delta-seconds directive, None when absent.

    An argument that is not a non-negative integer counts as 0, which
    makes the response stale rather than fresh for a guessed time.
    """
    if name not in cc:
        return None
    arg = cc[name]
    if arg is None or not arg.isdigit():
        return 0

    return min(int(arg), DELTA_MAX)


@dataclasses.dataclass(frozen=True)
class Policy:
    """What the stored response's own headers say about reusing it.

    Computed once per stored object, so hits do no header parsing.
    """

    lifetime: float
    stale_while_revalidate: float
    stale_if_error: float
    # no-cache, must-revalidate, proxy-revalidate or s-maxage: never
    # serve stale (RFC 9111 §4.2.4, §5.2.2.2, §5.2.2.8, §5.2.2.10).
    forbids_stale: bool
    # no-cache without field names: validate before every reuse.
    always_revalidate: bool
    # Field names listed by a qualified no-cache (lower case): withheld
    # from any reuse that was not revalidated (RFC 9111 §5.2.2.4).
    withheld_fields: tuple[str, ...]
    # public, s-maxage or must-revalidate: a request with Authorization
    # may use it (RFC 9111 §3.5).
    allows_authorized: bool
    etag: str | None
    last_modified: str | None

    @property
    def has_validator(self) -> bool:
        """True when the response can be revalidated with a condition."""
        return self.etag is not None or self.last_modified is not None


def policy_for(
    status: int, headers: Headers, date_value: float, negative_ttl: float = 0
) -> Policy:
    """Return the reuse policy of a response stored at ``date_value``."""
    cc = parse_cache_control(headers.getall("Cache-Control", ()))
    forbids_stale = any(
        d in cc for d in ("no-cache", "must-revalidate",
                          "proxy-revalidate", "s-maxage")
    )

    return Policy(
        lifetime=freshness_lifetime(status, headers, cc, date_value,
                                    negative_ttl),
        stale_while_revalidate=float(
            get_delta_seconds(cc, "stale-while-revalidate") or 0
        ),
        stale_if_error=float(get_delta_seconds(cc, "stale-if-error") or 0),
        forbids_stale=forbids_stale,
        always_revalidate="no-cache" in cc and not cc["no-cache"],
        withheld_fields=get_field_names(cc.get("no-cache")),
        allows_authorized=any(
            d in cc for d in ("public", "s-maxage", "must-revalidate")
        ),
        etag=headers.get("ETag"),
        last_modified=headers.get("Last-Modified"),
    )


def freshness_lifetime(
    status: int,
    headers: Headers,
    cc: dict[str, str | None],
    date_value: float,
    negative_ttl: float = 0,
) -> float:
    """Return the freshness lifetime in seconds (RFC 9111 §4.2.1).

    Order: s-maxage (shared caches), max-age, Expires minus Date, then a
    heuristic on Last-Modified for heuristically cacheable statuses, then
    the site's default for 404 and 410.
    """
    for name in ("s-maxage", "max-age"):
        seconds = get_delta_seconds(cc, name)
        if seconds is not None:
            return float(seconds)
    expires_values = headers.getall("Expires", ())
    if expires_values:
        # RFC 9111 §5.3: an invalid Expires (e.g. "0") means expired.
        expires = parse_http_date(expires_values[0])
        if expires is None:
            return 0.0
        return max(0.0, expires - date_value)
    if "public" in cc or status in HEURISTIC_STATUSES:
        last_modified = parse_http_date(headers.get("Last-Modified"))
        if last_modified is not None and last_modified < date_value:
            heuristic = (date_value - last_modified) * HEURISTIC_FRACTION
            return min(heuristic, HEURISTIC_CAP)
    if status in (404, 410):
        return float(negative_ttl)

    return 0.0


def is_storable(
    method: str,
    status: int,
    request_headers: Headers,
    response_headers: Headers,
) -> bool:
    """Return True when a shared cache may store this response (RFC 9111 §3).

    Policy beyond the RFC: responses carrying Set-Cookie are not stored,
    so one client's cookie is never replayed to another.
    """
    if method != "GET" or status < 200 or status in NEVER_STORED_STATUSES:
        return False
    request_cc = parse_cache_control(request_headers.getall("Cache-Control", ()))
    cc = parse_cache_control(response_headers.getall("Cache-Control", ()))
    if "must-understand" in cc and status not in UNDERSTOOD_STATUSES:
        return False
    if "no-store" in cc or "no-store" in request_cc:
        return False
    # §5.2.2.7: private with field names would allow storing the rest;
    # this cache treats any private as "do not share".
    if "private" in cc:
        return False
    if "Authorization" in request_headers and not any(
        d in cc for d in ("public", "s-maxage", "must-revalidate")
    ):
        return False
    if "Set-Cookie" in response_headers:
        return False
    if "*" in get_vary_fields(response_headers):
        return False

    return True


def current_age(
    age_value: float,
    date_value: float,
    request_time: float,
    response_time: float,
    now: float,
) -> float:
    """Return the current age of a stored response (RFC 9111 §4.2.3)."""
    apparent_age = max(0.0, response_time - date_value)
    response_delay = response_time - request_time
    corrected_age_value = age_value + response_delay
    corrected_initial_age = max(apparent_age, corrected_age_value)
    resident_time = now - response_time

    return corrected_initial_age + resident_time


def parse_age(lines: list[str]) -> float:
    """Return the seconds of the Age field lines (RFC 9111 §5.1).

    Absent is 0. Age is a single delta-seconds, so anything else (a
    list, several lines, a sign, a fraction, parameters) is invalid and
    counts as the largest age: an unknown age must not make a response
    look fresh.
    """
    if not lines:
        return 0.0
    if not is_valid_age(lines):
        return float(DELTA_MAX)

    return float(min(int(lines[0].strip()), DELTA_MAX))


def get_field_names(argument: str | None) -> tuple[str, ...]:
    """Return the lower-cased field names of a qualified directive
    (``no-cache="a, b"``, RFC 9111 §5.2.2.4); () for none."""
    if not argument:
        return ()
    names = (name.strip().lower() for name in argument.split(","))

    return tuple(name for name in names if name)


def is_valid_age(lines: list[str]) -> bool:
    """True when Age is absent or one delta-seconds (RFC 9111 §5.1)."""
    if not lines:
        return True

    return len(lines) == 1 and lines[0].strip().isdigit() and \
        lines[0].isascii()


def get_vary_fields(headers: Headers) -> tuple[str, ...]:
    """Return the lower-cased field names listed in Vary (RFC 9110 §12.5.5)."""
    fields: list[str] = []
    for value in headers.getall("Vary", ()):
        for name in value.split(","):
            name = name.strip().lower()
            if name and name not in fields:
                fields.append(name)

    return tuple(fields)


def vary_values(
    fields: tuple[str, ...], request_headers: Headers
) -> tuple[str | None, ...]:
    """Return the request's values for the Vary fields, normalised.

    Multiple lines of a field are joined with commas and whitespace
    around commas is dropped (RFC 9111 §4.1 allows such normalisation);
    an absent field is None, which only matches another absent field.
    """
    values: list[str | None] = []
    for name in fields:
        lines = request_headers.getall(name, ())
        if not lines:
            values.append(None)
            continue
        items = [p.strip() for line in lines for p in line.split(",")]
        values.append(",".join(items))

    return tuple(values)


def is_conditional_match(
    request_headers: Headers, etag: str | None, last_modified: str | None
) -> bool:
    """Return True when a client's condition says "you have it": answer 304.

    If-None-Match uses weak comparison (RFC 9110 §13.1.2) and, when
    present, If-Modified-Since is ignored (§13.1.3).
    """
    if_none_match = request_headers.getall("If-None-Match", ())
    if if_none_match:
        if etag is None:
            return False
        wanted = {
            tag.strip().removeprefix("W/")
            for line in if_none_match for tag in line.split(",")
        }
        return "*" in wanted or etag.removeprefix("W/") in wanted
    since = parse_http_date(request_headers.get("If-Modified-Since"))
    modified = parse_http_date(last_modified)
    if since is None or modified is None:
        return False

    return modified <= since


def merge_304(
    stored: tuple[tuple[str, str], ...], fresh: Headers
) -> tuple[tuple[str, str], ...]:
    """Return stored headers updated from a 304 (RFC 9111 §3.2).

    Each field in the 304 replaces the stored field of that name, except
    framing and coding fields that describe the stored body; fields
    absent from the 304 are kept.
    """
    replaced = {
        name.lower() for name in fresh.keys()
        if name.lower() not in NOT_UPDATED_BY_304
    }
    merged = [(n, v) for n, v in stored if n.lower() not in replaced]
    merged.extend(
        (n, v) for n, v in fresh.items() if n.lower() in replaced
    )

    return tuple(merged)
