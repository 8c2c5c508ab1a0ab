"""SvcParams of SVCB and HTTPS records (RFC 9460 sections 2.1 and 7).

Parameters are written on the wire sorted by key, each key at most once
(RFC 9460 section 2.2); failures raise ValueError with the reason, which
the RDATA codec turns into a ZoneError with file and line.
"""

from __future__ import annotations

import base64
import binascii
import socket
import struct
from collections.abc import Sequence
from typing import Protocol

from dnsrouter import names

KEYS = {
    "mandatory": 0,
    "alpn": 1,
    "no-default-alpn": 2,
    "port": 3,
    "ipv4hint": 4,
    "ech": 5,
    "ipv6hint": 6,
    "dohpath": 7,
    "ohttp": 8,
}
_NAMES = {code: name for name, code in KEYS.items()}
_NO_VALUE = frozenset((2, 8))


class _TokenLike(Protocol):
    @property
    def text(self) -> str: ...

    @property
    def quoted(self) -> bool: ...


def key_code(text: str) -> int:
    """The number of a key name or `keyNNNNN`."""
    if text in KEYS:
        return KEYS[text]
    if text.startswith("key") and text[3:].isdigit() and int(text[3:]) < 65536:
        return int(text[3:])
    raise ValueError("unknown SvcParamKey %r" % text)


def key_text(code: int) -> str:
    return _NAMES.get(code, "key%d" % code)


def _split_list(raw: str) -> list[bytes]:
    """Split a value-list on unescaped commas (RFC 9460 appendix A.1)."""
    items = []
    current = ""
    pos = 0
    while pos < len(raw):
        if raw[pos] == "\\" and pos + 1 < len(raw):
            current += raw[pos : pos + 2]
            pos += 2
            continue
        if raw[pos] == ",":
            items.append(current)
            current = ""
        else:
            current += raw[pos]
        pos += 1
    items.append(current)

    return [names.decode_escapes(item) for item in items]


def _encode(code: int, raw: str | None) -> bytes:
    if code in _NO_VALUE:
        if raw:
            raise ValueError("%s takes no value" % key_text(code))
        return b""
    if raw is None:
        raise ValueError("%s needs a value" % key_text(code))
    if code == 0:
        keys = sorted(key_code(item.decode("latin-1")) for item in _split_list(raw))
        return b"".join(struct.pack("!H", key) for key in keys)
    if code == 1:
        items = _split_list(raw)
        if any(not item or len(item) > 255 for item in items):
            raise ValueError("bad alpn value %r" % raw)
        return b"".join(bytes((len(item),)) + item for item in items)
    if code == 3:
        if not raw.isdigit() or int(raw) > 65535:
            raise ValueError("bad port %r" % raw)
        return struct.pack("!H", int(raw))
    if code in (4, 6):
        family = socket.AF_INET if code == 4 else socket.AF_INET6
        try:
            return b"".join(socket.inet_pton(family, a) for a in raw.split(","))
        except OSError:
            raise ValueError("bad address list %r" % raw) from None
    if code == 5:
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("bad ech base64 %r" % raw) from None

    return names.decode_escapes(raw)


def parse(tokens: Sequence[_TokenLike]) -> bytes:
    """Encode `key[=value]` tokens; a quoted value may follow `key=`."""
    params: dict[int, bytes] = {}
    pos = 0
    while pos < len(tokens):
        text = tokens[pos].text
        pos += 1
        key, sep, raw = text.partition("=")
        value: str | None = raw if sep else None
        if sep and not raw and pos < len(tokens) and tokens[pos].quoted:
            value = tokens[pos].text
            pos += 1
        code = key_code(key.lower())
        if code in params:
            raise ValueError("duplicate SvcParamKey %s" % key)
        params[code] = _encode(code, value)

    out = b""
    for code in sorted(params):
        out += struct.pack("!HH", code, len(params[code])) + params[code]

    return out


def _show_value(code: int, value: bytes) -> str:
    if code == 0:
        keys = struct.unpack("!%dH" % (len(value) // 2), value)
        return ",".join(key_text(key) for key in keys)
    if code == 1:
        items = []
        pos = 0
        while pos < len(value):
            item = value[pos + 1 : pos + 1 + value[pos]]
            items.append(_escape(item).replace(",", "\\\\,"))
            pos += 1 + value[pos]
        return '"%s"' % ",".join(items)
    if code == 3:
        return str(struct.unpack("!H", value)[0])
    if code in (4, 6):
        family, size = (socket.AF_INET, 4) if code == 4 else (socket.AF_INET6, 16)
        chunks = [value[i : i + size] for i in range(0, len(value), size)]
        return ",".join(socket.inet_ntop(family, chunk) for chunk in chunks)
    if code == 5:
        return base64.b64encode(value).decode()

    return '"%s"' % _escape(value)


def _escape(data: bytes) -> str:
    out = []
    for octet in data:
        if octet in (0x22, 0x5C) or not 0x20 <= octet <= 0x7E:
            out.append("\\%03d" % octet)
        else:
            out.append(chr(octet))

    return "".join(out)


def show(data: bytes) -> list[str]:
    """Presentation tokens for wire SvcParams; ValueError when malformed."""
    out = []
    pos = 0
    while pos < len(data):
        code, length = struct.unpack("!HH", data[pos : pos + 4])
        value = data[pos + 4 : pos + 4 + length]
        if len(value) != length:
            raise ValueError("SvcParam runs past RDATA")
        pos += 4 + length
        if code in _NO_VALUE and not value:
            out.append(key_text(code))
        else:
            out.append("%s=%s" % (key_text(code), _show_value(code, value)))

    return out
