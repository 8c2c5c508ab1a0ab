"""Range requests answered from complete stored objects (RFC 9110 §14).

``parse_ranges`` is the pure decision: which byte ranges a Range field
asks for within a body of known length. ``answer`` turns it into a 206
(single part or multipart/byteranges), a 416, or the full 200 when the
field is invalid, If-Range does not match, or the request is abusive
(too many parts); a server may always ignore Range (§14.2).
"""

from __future__ import annotations

import os
import secrets

from aiohttp import web
from multidict import CIMultiDict

from edge import respond
from edge.httpdate import parse_http_date
from edge.storage import Body, Entry

# More parts than this is more likely an attack than a real client
# (overlapping-range amplification); answer with the whole object.
MAX_PARTS = 32
# Multipart bodies are built in memory; beyond this, send the whole.
MAX_MULTIPART_BYTES = 16 * 1024 * 1024


def parse_ranges(value: str, length: int) -> list[tuple[int, int]] | None:
    """Return the satisfiable ranges as ``(first, last)`` inclusive.

    None means "ignore the field" (not bytes, bad syntax, too many
    parts); an empty list means nothing is satisfiable (416).
    """
    unit, sep, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or not sep:
        return None
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts or len(parts) > MAX_PARTS:
        return None
    result: list[tuple[int, int]] = []
    for part in parts:
        first_text, dash, last_text = part.partition("-")
        first_text, last_text = first_text.strip(), last_text.strip()
        if not dash or not (first_text.isdigit() or first_text == "") or \
                not (last_text.isdigit() or last_text == ""):
            return None
        if not first_text:
            if not last_text:
                return None
            # Suffix range: the last N bytes (§14.1.2).
            suffix = int(last_text)
            if suffix > 0 and length > 0:
                result.append((max(0, length - suffix), length - 1))
            continue
        first = int(first_text)
        if last_text and int(last_text) < first:
            return None
        last = int(last_text) if last_text else length - 1
        if first < length:
            result.append((first, min(last, length - 1)))

    return result


def is_if_range_match(value: str | None, entry: Entry) -> bool:
    """True when If-Range is absent or still describes the stored object.

    An entity-tag must match strongly; a date must equal Last-Modified
    (§13.1.5).
    """
    if value is None:
        return True
    value = value.strip()
    if value.startswith('"') or value.startswith("W/"):
        etag = entry.etag
        return etag is not None and not etag.startswith("W/") and etag == value
    since = parse_http_date(value)
    modified = parse_http_date(entry.policy.last_modified)

    return since is not None and since == modified


def answer(
    request: web.BaseRequest, entry: Entry, body: Body,
    headers: CIMultiDict[str],
) -> web.StreamResponse:
    """Answer a Range request from a complete stored 200 whose ``body``
    came from ``Storage.get_body`` (an open file is closed here or by
    the response)."""
    length = entry.meta.length
    headers["Accept-Ranges"] = "bytes"
    wanted = parse_ranges(request.headers["Range"], length)
    if wanted is None or not is_if_range_match(
        request.headers.get("If-Range"), entry
    ):
        return respond.from_entry(entry, body, headers)
    if not wanted:
        _close(body)
        headers["Content-Range"] = f"bytes */{length}"
        headers.popall("Content-Type", None)
        return respond.Response(status=416, headers=headers)
    if len(wanted) == 1:
        first, last = wanted[0]
        headers["Content-Range"] = f"bytes {first}-{last}/{length}"
        return respond.from_entry(entry, body, headers, status=206,
                                  offset=first, count=last - first + 1)
    if sum(last - first + 1 for first, last in wanted) > MAX_MULTIPART_BYTES:
        return respond.from_entry(entry, body, headers)

    return _multipart(entry, body, headers, wanted)


def _multipart(
    entry: Entry, body: Body, headers: CIMultiDict[str],
    wanted: list[tuple[int, int]],
) -> web.Response:
    """Build a multipart/byteranges 206 (RFC 9110 §14.6)."""
    boundary = secrets.token_hex(12)
    content_type = headers.popall("Content-Type", ["application/octet-stream"])[0]
    length = entry.meta.length
    chunks: list[bytes] = []
    for first, last in wanted:
        chunks.append(
            f"\r\n--{boundary}\r\nContent-Type: {content_type}\r\n"
            f"Content-Range: bytes {first}-{last}/{length}\r\n\r\n".encode()
        )
        chunks.append(_slice(body, first, last - first + 1))
    _close(body)
    chunks.append(f"\r\n--{boundary}--\r\n".encode())
    headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"

    return respond.Response(status=206, headers=headers, body=b"".join(chunks))


def _slice(body: Body, offset: int, count: int) -> bytes:
    if isinstance(body, bytes):
        return body[offset:offset + count]

    return os.pread(body.fileno(), count, offset)


def _close(body: Body) -> None:
    if not isinstance(body, bytes):
        body.close()
