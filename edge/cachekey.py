"""Cache keys: which stored responses a request may be answered from.

The primary key (RFC 9111 §2) is the site, the method class and the
normalised target. GET and HEAD share one class, because a GET entry
answers a HEAD (RFC 9111 §4.3.5); no other method is looked up.

Normalising the path follows RFC 3986 §6.2.2: dot segments are removed
(§5.2.4) and percent-encoded unreserved characters are decoded, while
case is kept (paths are case-sensitive). Characters a URI cannot hold
unescaped (a space, raw UTF-8) are percent-encoded in path and query.
The query is otherwise kept as sent unless the site opts in to sorting
its parameters.

Storage never sees a key as a path: ``storage_name`` hashes it, so no
request target can name a file outside the cache directory.
"""

from __future__ import annotations

import hashlib
import re

_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)


# Characters a URI may hold unescaped (RFC 3986 §2, §3.3, §3.4) and
# "%"; any other (a space, raw UTF-8) is percent-encoded, so a purge
# URL written decoded names the object its encoded request stored.
_NOT_IN_URI = re.compile(r"[^A-Za-z0-9\-._~!$&'()*+,;=:@/?%]")


def _escape(match: re.Match[str]) -> str:
    raw = match.group(0).encode("utf-8", "surrogateescape")

    return "".join(f"%{octet:02X}" for octet in raw)


def _fix_percent(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    if char in _UNRESERVED:
        return char

    return "%" + match.group(1).upper()


def remove_dot_segments(path: str) -> str:
    """Return ``path`` with ``.`` and ``..`` segments resolved (RFC 3986 §5.2.4)."""
    output: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        is_last = index == len(segments) - 1
        if segment == ".":
            if is_last:
                output.append("")
            continue
        if segment == "..":
            if len(output) > 1:
                output.pop()
            if is_last:
                output.append("")
            continue
        output.append(segment)
    result = "/".join(output)
    if not result.startswith("/"):
        result = "/" + result

    return result


def normalise_escapes(text: str) -> str:
    """Return ``text`` with characters a URI cannot hold escaped, and
    escapes of unreserved characters decoded (RFC 3986 §6.2.2)."""
    return _PERCENT.sub(_fix_percent, _NOT_IN_URI.sub(_escape, text))


def normalise_path(path: str) -> str:
    """Return the path as the cache key sees it (RFC 3986 §6.2.2)."""
    return remove_dot_segments(normalise_escapes(path or "/"))


def normalise_query(query: str, sort: bool) -> str:
    """Return the query with characters a URI cannot hold escaped, its
    parameters sorted when opted in."""
    query = _NOT_IN_URI.sub(_escape, query)
    if not sort or not query:
        return query

    return "&".join(sorted(query.split("&")))


def normalise_target(path: str, query: str, sort_query: bool) -> str:
    """Return the origin-form target that both keys and fetches use.

    The edge forwards exactly this target upstream, never the client's
    spelling: two targets with one key must get one origin answer, or a
    request could fill the key of another with a different resource
    (RFC 9111 §2, RFC 3986 §6).
    """
    target = normalise_path(path)
    query = normalise_query(query, sort_query)
    if query:
        target = f"{target}?{query}"

    return target


def has_dot_segment(path: str) -> bool:
    """True when ``path``, its unreserved escapes decoded, has a ``.``
    or ``..`` segment (RFC 3986 §3.3)."""
    segments = normalise_escapes(path).split("/")

    return any(segment in (".", "..") for segment in segments)


def key_prefix(site: str, path: str, query: str) -> str:
    """Return the start that keys of targets beginning ``path?query``
    share: escapes normalised as in ``primary_key``.

    Dot segments cannot be resolved in a prefix (``/img/..`` starts
    ``/img/..x`` as well as ``/img/../x``, which is ``/x``): the caller
    refuses them first (``has_dot_segment``). Queries are never sorted.
    """
    target = normalise_escapes(path or "/")
    if query:
        target = f"{target}?{_NOT_IN_URI.sub(_escape, query)}"

    return f"{site} {target}"


def primary_key(site: str, path: str, query: str, sort_query: bool) -> str:
    """Return the primary cache key of a GET or HEAD for ``site``.

    Keys of one site share the prefix ``site + " "``, so a purge by
    prefix is a string comparison.
    """
    return f"{site} {normalise_target(path, query, sort_query)}"


def storage_name(primary: str, secondary: str) -> str:
    """Return the file-system-safe name of one variant of ``primary``."""
    digest = hashlib.sha256(f"{primary}\0{secondary}".encode()).hexdigest()

    return digest
