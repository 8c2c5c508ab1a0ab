"""What a purge request names: read from the admin API's query or a
JSON body, turned into the cache keys it matches.

A URL to purge must name objects exactly as clients' requests do, so
it is taken as spelled on the wire: ``url=`` and ``prefix=`` take the
rest of the query string verbatim (a URL's own ``?``, ``&`` and ``%``
escapes included), or that rest percent-decoded once when it is
form-encoded (``http%3A...``: the scheme's colon tells the two apart).
A JSON object body (``{"url": "..."}``) needs no encoding at all. The
URL is then normalised exactly as the cache key is (``edge.cachekey``).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Callable
from urllib.parse import unquote_plus, urlsplit

from edge import cachekey
from edge.config import EdgeConfig
from edge.errors import PurgeRequestError

# Parameters whose value is a URL: each takes the rest of the query.
URL_PARAMETERS = ("url", "prefix")
KINDS = (*URL_PARAMETERS, "site")


@dataclasses.dataclass(frozen=True)
class Purge:
    """One purge: which keys it matches, and how to show it."""

    kind: str
    # The exact key (url), the key prefix (prefix, site).
    key: str
    # What was looked for, normalised, for the answer and the log.
    shown: str

    def matcher(self) -> Callable[[str], bool]:
        """Return the predicate over primary keys this purge removes."""
        if self.kind == "url":
            return self.key.__eq__

        return lambda primary: primary.startswith(self.key)


def parse_query(raw_target: str) -> dict[str, str]:
    """Return the parameters of a raw request target's query.

    ``url=`` and ``prefix=`` end the parse and take the rest verbatim
    (or decoded once when form-encoded); other values are form-decoded.
    """
    query = raw_target.partition("?")[2]
    params: dict[str, str] = {}
    while query:
        item, _, rest = query.partition("&")
        name, _, value = item.partition("=")
        if name in URL_PARAMETERS:
            value = query[len(name) + 1:]
            if not value.lower().startswith(("http:", "https:")):
                value = unquote_plus(value)
            params[name] = value
            break
        params[unquote_plus(name)] = unquote_plus(value)
        query = rest

    return params


def parse_json(body: bytes) -> dict[str, str]:
    """Return the parameters of a JSON object body of strings.

    Raises PurgeRequestError for anything else.
    """
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not all(
        isinstance(v, str) for v in data.values()
    ):
        raise PurgeRequestError("body is not a JSON object of strings")

    return data


def find_purge(config: EdgeConfig, params: dict[str, str]) -> Purge:
    """Return the purge that ``params`` ask for.

    Raises PurgeRequestError naming the problem: no or several kinds,
    an unknown site, a URL of no site, a prefix with a dot segment.
    """
    kinds = [kind for kind in KINDS if kind in params]
    if len(kinds) != 1:
        raise PurgeRequestError("give one of url=, prefix= or site=")
    kind = kinds[0]
    if kind == "site":
        site = config.find_site(params["site"].lower().rstrip("."))
        if site is None:
            raise PurgeRequestError(f"unknown site {params['site']!r}")
        return Purge("site", site.hostname + " ", site.hostname)

    return _url_purge(config, kind, params[kind])


def _url_purge(config: EdgeConfig, kind: str, url: str) -> Purge:
    parts = urlsplit(url)
    site = None
    if parts.scheme in ("http", "https") and parts.hostname:
        site = config.find_site(parts.hostname.lower().rstrip("."))
    if site is None:
        raise PurgeRequestError(
            f"expected an http(s) URL of a site of this edge, got {url!r}")
    if kind == "url":
        key = cachekey.primary_key(site.hostname, parts.path or "/",
                                   parts.query, site.sort_query)
    elif cachekey.has_dot_segment(parts.path):
        raise PurgeRequestError(
            f"prefix has a dot segment (. or ..), which no stored URL "
            f"has: {url!r}")
    else:
        key = cachekey.key_prefix(site.hostname, parts.path, parts.query)
    target = key.partition(" ")[2]

    return Purge(kind, key, f"{parts.scheme}://{site.hostname}{target}")
