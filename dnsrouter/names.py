"""Domain names as uncompressed wire bytes, and their presentation form.

Every name inside the router is an absolute name in wire format
(length-prefixed labels ending in the root octet).  Comparison keys are the
same bytes with ASCII letters folded to lower case (RFC 4343 section 2), so
a lookup never decodes or re-encodes text.
"""

from __future__ import annotations

from dnsrouter.errors import ZoneError

ROOT = b"\x00"
MAX_LABEL = 63  # RFC 1035 section 2.3.4
MAX_NAME = 255  # RFC 1035 section 2.3.4, counted in wire octets

# Octets printed bare inside a label; everything else is escaped
# (RFC 1035 section 5.1 allows \X and \DDD).
_PLAIN = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_*/+="
)


def key_of(wire: bytes) -> bytes:
    """The case-folded comparison key of a wire name (ASCII only)."""
    return wire.lower()


def labels_of(wire: bytes) -> list[bytes]:
    """The labels of an uncompressed wire name, root excluded."""
    labels = []
    pos = 0
    while wire[pos]:
        length = wire[pos]
        labels.append(wire[pos + 1 : pos + 1 + length])
        pos += 1 + length

    return labels


def from_labels(labels: list[bytes]) -> bytes:
    """Join labels into an uncompressed wire name."""
    return b"".join(bytes((len(label),)) + label for label in labels) + ROOT


def parent_of(wire: bytes) -> bytes:
    """The name one label shorter; the root is its own parent."""
    if wire == ROOT:
        return ROOT

    return wire[1 + wire[0] :]


def is_subdomain(wire_key: bytes, origin_key: bytes) -> bool:
    """Whether a name lies at or below an origin (both keys, same case)."""
    if not wire_key.endswith(origin_key):
        return False
    if len(wire_key) == len(origin_key):
        return True

    # The suffix must start on a label boundary.
    cut = len(wire_key) - len(origin_key)
    pos = 0
    while pos < cut:
        pos += 1 + wire_key[pos]

    return pos == cut


def to_text(wire: bytes) -> str:
    """The absolute presentation form, with RFC 1035 section 5.1 escapes."""
    labels = labels_of(wire)
    if not labels:
        return "."

    return "".join(_label_text(label) + "." for label in labels)


def _label_text(label: bytes) -> str:
    out = []
    for octet in label:
        if octet in _PLAIN:
            out.append(chr(octet))
        elif 0x21 <= octet <= 0x7E:
            out.append("\\" + chr(octet))
        else:
            out.append("\\%03d" % octet)

    return "".join(out)


def decode_escapes(raw: str) -> bytes:
    """Decode `\\X` and decimal `\\DDD` escapes of a token into octets.

    The token text holds one character per octet (the file is read as
    Latin-1).  Raises ValueError naming the bad escape.
    """
    if "\\" not in raw:
        return raw.encode("latin-1")

    out = bytearray()
    pos = 0
    while pos < len(raw):
        char = raw[pos]
        if char != "\\":
            out.append(ord(char))
            pos += 1
            continue
        digits = raw[pos + 1 : pos + 4]
        if digits[:1].isdigit():
            if len(digits) < 3 or not digits.isdigit() or int(digits) > 255:
                raise ValueError("bad escape \\%s" % digits)
            out.append(int(digits))
            pos += 4
        elif pos + 1 < len(raw):
            out.append(ord(raw[pos + 1]))
            pos += 2
        else:
            raise ValueError("escape at end of token")

    return bytes(out)


def split_labels(raw: str) -> tuple[list[str], bool]:
    """Split a name token on unescaped dots; returns (labels, absolute)."""
    labels = []
    current = []
    pos = 0
    while pos < len(raw):
        char = raw[pos]
        if char == "\\":
            current.append(raw[pos : pos + 2])
            pos += 2
            continue
        if char == ".":
            labels.append("".join(current))
            current = []
        else:
            current.append(char)
        pos += 1
    absolute = raw.endswith(".") and not raw.endswith("\\.")
    if current or not absolute:
        labels.append("".join(current))

    return labels, absolute


def from_text(raw: str, origin: bytes | None, where: str = "") -> bytes:
    """Parse a name token from a master file into wire bytes.

    `@` is the origin; a name without a trailing dot is relative to
    `origin`.  Raises ZoneError (`where: reason`) for empty, oversized or
    relative-without-origin names.
    """
    if raw == "@":
        if origin is None:
            raise ZoneError("%s: '@' used with no origin set" % where)
        return origin
    if raw == ".":
        return ROOT

    parts, absolute = split_labels(raw)
    wire = bytearray()
    for part in parts:
        try:
            label = decode_escapes(part)
        except ValueError as exc:
            raise ZoneError("%s: %s in name %r" % (where, exc, raw)) from None
        if not label:
            raise ZoneError("%s: empty label in name %r" % (where, raw))
        if len(label) > MAX_LABEL:
            raise ZoneError("%s: label too long in name %r" % (where, raw))
        wire.append(len(label))
        wire += label

    if absolute:
        wire.append(0)
    elif origin is None:
        raise ZoneError("%s: relative name %r with no origin" % (where, raw))
    else:
        wire += origin

    if len(wire) > MAX_NAME:
        raise ZoneError("%s: name too long: %r" % (where, raw))

    return bytes(wire)


def read_wire(message: bytes, pos: int) -> tuple[bytes, int]:
    """Read a possibly compressed name from a message.

    Returns the uncompressed name and the offset after it in the original
    position.  Pointers must point strictly backwards (RFC 9267 section
    2), which also bounds the work.  Raises ValueError when malformed.
    """
    out = bytearray()
    end = -1
    limit = pos
    while True:
        if pos >= len(message):
            raise ValueError("name runs past the end of the message")
        length = message[pos]
        if length >= 0xC0:
            if pos + 1 >= len(message):
                raise ValueError("truncated compression pointer")
            target = ((length & 0x3F) << 8) | message[pos + 1]
            if target >= limit:
                raise ValueError("compression pointer does not point back")
            if end < 0:
                end = pos + 2
            pos = limit = target
            continue
        if length > MAX_LABEL:
            raise ValueError("label length %d over 63" % length)
        out += message[pos : pos + 1 + length]
        if len(message) < pos + 1 + length:
            raise ValueError("label runs past the end of the message")
        pos += 1 + length
        if len(out) > MAX_NAME:
            raise ValueError("name over 255 octets")
        if length == 0:
            break

    return bytes(out), (end if end >= 0 else pos)
