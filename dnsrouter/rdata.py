"""RDATA codec: master-file tokens to wire octets and wire back to text.

Each supported type has a pair of functions, `parse_*` (tokens to wire)
and `show_*` (wire to presentation text).  Any type, known or not, also
accepts the RFC 3597 generic form `\\# length hex`, and types without a
text codec are printed in that form.  Names inside RDATA are stored
uncompressed; the reply encoder compresses only the types RFC 3597
section 4 allows.
"""

from __future__ import annotations

import base64
import binascii
import socket
import struct
from collections.abc import Callable
from typing import NamedTuple

from dnslib import QTYPE

from dnsrouter import names
from dnsrouter.errors import ZoneError


class Token(NamedTuple):
    """One master-file token: its raw text (escapes kept) and quoting."""

    text: str
    quoted: bool


# Types whose RDATA names may be compressed on the wire (RFC 3597 section 4
# lists the RFC 1035 types; every other name is written uncompressed).
COMPRESSIBLE = frozenset((2, 5, 6, 12, 15))

A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, OPT = 1, 2, 5, 6, 12, 15, 16, 28, 33, 41
ANY = 255

_EXTRA_TYPES = {"SPF": 99, "DNAME": 39, "CAA": 257}


def type_code(mnemonic: str) -> int | None:
    """The numeric type of a mnemonic or `TYPEnnn`; None when unknown."""
    upper = mnemonic.upper()
    if upper.startswith("TYPE") and upper[4:].isdigit():
        value = int(upper[4:])
        return value if value <= 0xFFFF else None
    if upper in _EXTRA_TYPES:
        return _EXTRA_TYPES[upper]
    code = QTYPE.reverse.get(upper)

    return int(code) if code is not None else None


def type_text(code: int) -> str:
    """The mnemonic of a type, or `TYPEnnn` (RFC 3597 section 5)."""
    name = QTYPE.forward.get(code)

    return str(name) if name else "TYPE%d" % code


class _Reader:
    """Consumes tokens for one record; every failure is a ZoneError."""

    def __init__(self, tokens: list[Token], origin: bytes, where: str) -> None:
        self.tokens = tokens
        self.pos = 0
        self.origin = origin
        self.where = where

    def fail(self, reason: str) -> ZoneError:
        return ZoneError("%s: %s" % (self.where, reason))

    def next(self, what: str) -> Token:
        if self.pos >= len(self.tokens):
            raise self.fail("missing %s" % what)
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def rest(self) -> list[Token]:
        tokens = self.tokens[self.pos :]
        self.pos = len(self.tokens)
        return tokens

    def done(self) -> None:
        if self.pos < len(self.tokens):
            raise self.fail("extra data %r" % self.tokens[self.pos].text)

    def number(self, what: str, bits: int) -> int:
        text = self.next(what).text
        if not text.isdigit() or int(text) >= 1 << bits:
            raise self.fail("bad %s %r: expected 0..%d" % (what, text, (1 << bits) - 1))
        return int(text)

    def ttl(self, what: str) -> int:
        text = self.next(what).text
        value = parse_ttl(text)
        if value is None:
            raise self.fail("bad %s %r" % (what, text))
        return value

    def name(self, what: str) -> bytes:
        return names.from_text(self.next(what).text, self.origin, self.where)

    def string(self, what: str) -> bytes:
        data = self.octets(self.next(what))
        if len(data) > 255:
            raise self.fail("%s too long: %d octets, at most 255" % (what, len(data)))
        return bytes((len(data),)) + data

    def octets(self, token: Token) -> bytes:
        try:
            return names.decode_escapes(token.text)
        except ValueError as exc:
            raise self.fail(str(exc)) from None

    def hex_rest(self, what: str, allow_empty: bool = False) -> bytes:
        text = "".join(token.text for token in self.rest())
        if text == "-" and allow_empty:
            return b""
        try:
            data = binascii.unhexlify(text)
        except (binascii.Error, ValueError):
            raise self.fail("bad hex in %s" % what) from None
        if not data and not allow_empty:
            raise self.fail("missing %s" % what)
        return data

    def base64_rest(self, what: str) -> bytes:
        text = "".join(token.text for token in self.rest())
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise self.fail("bad base64 in %s" % what) from None


_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_ttl(text: str) -> int | None:
    """A 32-bit time value as digits or BIND units (`1h30m`); None when
    it is not one or does not fit 32 bits."""
    if text.isdigit():
        value = int(text)
    else:
        value = 0
        number = ""
        for char in text.lower():
            if char.isdigit():
                number += char
            elif char in _TTL_UNITS and number:
                value += int(number) * _TTL_UNITS[char]
                number = ""
            else:
                return None
        if number or not text:
            return None

    return value if value < 1 << 32 else None


def _p_address(family: int) -> Callable[[_Reader], bytes]:
    def parse(reader: _Reader) -> bytes:
        text = reader.next("address").text
        try:
            return socket.inet_pton(family, text)
        except OSError:
            raise reader.fail("bad address %r" % text) from None

    return parse


def _p_name(reader: _Reader) -> bytes:
    return reader.name("target name")


def _p_soa(reader: _Reader) -> bytes:
    mname = reader.name("SOA MNAME")
    rname = reader.name("SOA RNAME")
    serial = reader.number("SOA serial", 32)
    timers = [reader.ttl("SOA timer") for _ in range(4)]

    return mname + rname + struct.pack("!5I", serial, *timers)


def _p_mx(reader: _Reader) -> bytes:
    return struct.pack("!H", reader.number("preference", 16)) + reader.name("exchange")


def _p_txt(reader: _Reader) -> bytes:
    data = b""
    while reader.pos < len(reader.tokens):
        data += reader.string("character-string")
    if not data:
        raise reader.fail("missing TXT data")

    return data


def _p_hinfo(reader: _Reader) -> bytes:
    return reader.string("CPU") + reader.string("OS")


def _p_rp(reader: _Reader) -> bytes:
    return reader.name("mailbox") + reader.name("TXT name")


def _p_srv(reader: _Reader) -> bytes:
    fields = [reader.number(what, 16) for what in ("priority", "weight", "port")]

    return struct.pack("!3H", *fields) + reader.name("target")


def _p_caa(reader: _Reader) -> bytes:
    flags = reader.number("CAA flags", 8)
    tag = reader.octets(reader.next("CAA tag"))
    if not tag or len(tag) > 255 or not tag.isalnum():
        raise reader.fail("bad CAA tag %r" % tag.decode("latin-1"))
    value = reader.octets(reader.next("CAA value"))

    return bytes((flags, len(tag))) + tag + value


def _p_naptr(reader: _Reader) -> bytes:
    order = reader.number("order", 16)
    preference = reader.number("preference", 16)
    strings = b"".join(reader.string(what) for what in ("flags", "services", "regexp"))

    return struct.pack("!2H", order, preference) + strings + reader.name("replacement")


def _p_sshfp(reader: _Reader) -> bytes:
    head = bytes((reader.number("algorithm", 8), reader.number("fp type", 8)))

    return head + reader.hex_rest("fingerprint")


def _p_tlsa(reader: _Reader) -> bytes:
    head = bytes(reader.number(what, 8) for what in ("usage", "selector", "mtype"))

    return head + reader.hex_rest("certificate data")


def _key_head(reader: _Reader, what: str) -> bytes:
    """The u16, u8, u8 head shared by DS (RFC 4034 5.1) and DNSKEY (2.1)."""
    first, second, third = (
        ("key tag", "algorithm", "digest type")
        if what == "DS"
        else ("flags", "protocol", "algorithm")
    )
    values = reader.number(first, 16), reader.number(second, 8), reader.number(third, 8)

    return struct.pack("!HBB", *values)


def _p_ds(reader: _Reader) -> bytes:
    return _key_head(reader, "DS") + reader.hex_rest("digest")


def _p_dnskey(reader: _Reader) -> bytes:
    return _key_head(reader, "DNSKEY") + reader.base64_rest("public key")


def _p_svcb(reader: _Reader) -> bytes:
    from dnsrouter import svcparams

    priority = reader.number("SvcPriority", 16)
    target = reader.name("TargetName")
    try:
        params = svcparams.parse(reader.rest())
    except ValueError as exc:
        raise reader.fail(str(exc)) from None

    return struct.pack("!H", priority) + target + params


_PARSERS: dict[int, Callable[[_Reader], bytes]] = {
    A: _p_address(socket.AF_INET),
    AAAA: _p_address(socket.AF_INET6),
    NS: _p_name,
    CNAME: _p_name,
    PTR: _p_name,
    39: _p_name,  # DNAME
    SOA: _p_soa,
    MX: _p_mx,
    TXT: _p_txt,
    99: _p_txt,  # SPF
    13: _p_hinfo,
    17: _p_rp,
    SRV: _p_srv,
    257: _p_caa,
    35: _p_naptr,
    44: _p_sshfp,
    52: _p_tlsa,
    43: _p_ds,
    48: _p_dnskey,
    64: _p_svcb,
    65: _p_svcb,
}


def parse(rtype: int, tokens: list[Token], origin: bytes, where: str) -> bytes:
    """Encode the RDATA tokens of one record of type `rtype` to wire.

    Raises ZoneError (`where: reason`) when the data does not fit the type.
    """
    reader = _Reader(tokens, origin, where)
    if tokens and tokens[0] == Token("\\#", False):
        return _parse_generic(reader)
    parser = _PARSERS.get(rtype)
    if parser is None:
        raise reader.fail("type %s needs the \\# generic form" % type_text(rtype))
    data = parser(reader)
    reader.done()
    if len(data) > 0xFFFF:
        raise reader.fail("RDATA longer than 65535 octets")

    return data


def _parse_generic(reader: _Reader) -> bytes:
    """RFC 3597 section 5: `\\# <length> <hex words>`."""
    reader.next("\\#")
    length = reader.number("RDATA length", 16)
    data = reader.hex_rest("RDATA", allow_empty=length == 0)
    if len(data) != length:
        raise reader.fail("\\# length %d but %d octets of data" % (length, len(data)))

    return data


def quote_string(data: bytes) -> str:
    """A character-string in quotes, escaping `"`, `\\` and non-printables."""
    out = []
    for octet in data:
        if octet in (0x22, 0x5C):
            out.append("\\" + chr(octet))
        elif 0x20 <= octet <= 0x7E:
            out.append(chr(octet))
        else:
            out.append("\\%03d" % octet)

    return '"%s"' % "".join(out)


def _strings(data: bytes) -> list[str]:
    """The quoted character-strings of RDATA made of them only."""
    out = []
    pos = 0
    while pos < len(data):
        length = data[pos]
        if pos + 1 + length > len(data):
            raise ValueError("character-string runs past RDATA")
        out.append(quote_string(data[pos + 1 : pos + 1 + length]))
        pos += 1 + length

    return out


def _name_at(data: bytes, pos: int) -> tuple[str, int]:
    wire = names.from_labels(names.labels_of(data[pos:]))

    return names.to_text(wire), pos + len(wire)


def _s_soa(data: bytes) -> str:
    mname, pos = _name_at(data, 0)
    rname, pos = _name_at(data, pos)
    fields = struct.unpack("!5I", data[pos:])

    return " ".join([mname, rname] + [str(f) for f in fields])


def _s_naptr(data: bytes) -> str:
    order, preference = struct.unpack("!2H", data[:4])
    pos = 4
    strings = []
    for _ in range(3):
        length = data[pos]
        strings.append(quote_string(data[pos + 1 : pos + 1 + length]))
        pos += 1 + length
    replacement, _ = _name_at(data, pos)

    return "%d %d %s %s" % (order, preference, " ".join(strings), replacement)


def _s_caa(data: bytes) -> str:
    tag = data[2 : 2 + data[1]].decode("latin-1")

    return "%d %s %s" % (data[0], tag, quote_string(data[2 + data[1] :]))


def _s_svcb(data: bytes) -> str:
    from dnsrouter import svcparams

    target, pos = _name_at(data, 2)
    params = svcparams.show(data[pos:])
    head = "%d %s" % (struct.unpack("!H", data[:2])[0], target)

    return " ".join([head] + params)


def _s_names_after(fmt: str, size: int) -> Callable[[bytes], str]:
    def show(data: bytes) -> str:
        head = struct.unpack(fmt, data[:size]) if size else ()
        parts = [str(value) for value in head]
        pos = size
        while pos < len(data):
            text, pos = _name_at(data, pos)
            parts.append(text)
        return " ".join(parts)

    return show


def _s_hex_after(fmt: str, size: int) -> Callable[[bytes], str]:
    def show(data: bytes) -> str:
        head = [str(v) for v in struct.unpack(fmt, data[:size])]
        return " ".join(head + [data[size:].hex().upper() or "-"])

    return show


_SHOWERS: dict[int, Callable[[bytes], str]] = {
    A: lambda data: socket.inet_ntop(socket.AF_INET, data),
    AAAA: lambda data: socket.inet_ntop(socket.AF_INET6, data),
    NS: _s_names_after("", 0),
    CNAME: _s_names_after("", 0),
    PTR: _s_names_after("", 0),
    39: _s_names_after("", 0),
    17: _s_names_after("", 0),
    SOA: _s_soa,
    MX: _s_names_after("!H", 2),
    SRV: _s_names_after("!3H", 6),
    TXT: lambda data: " ".join(_strings(data)),
    99: lambda data: " ".join(_strings(data)),
    13: lambda data: " ".join(_strings(data)),
    257: _s_caa,
    35: _s_naptr,
    44: _s_hex_after("!BB", 2),
    52: _s_hex_after("!BBB", 3),
    43: _s_hex_after("!HBB", 4),
    48: lambda data: "%d %d %d %s"
    % (*struct.unpack("!HBB", data[:4]), base64.b64encode(data[4:]).decode()),
    64: _s_svcb,
    65: _s_svcb,
}


def show(rtype: int, data: bytes) -> str:
    """The presentation form of RDATA; RFC 3597 generic form as fallback."""
    shower = _SHOWERS.get(rtype)
    if shower is not None:
        try:
            return shower(data)
        except (ValueError, IndexError, struct.error, OSError):
            pass

    return "\\# %d %s" % (len(data), data.hex().upper())


def embedded_names(rtype: int, data: bytes) -> list[tuple[int, bytes]]:
    """(offset, name) of the compressible names inside RDATA.

    Only the RFC 1035 types of COMPRESSIBLE carry names the encoder may
    compress; the MX name follows a 2-octet preference.
    """
    if rtype in (NS, CNAME, PTR):
        return [(0, data)]
    if rtype == MX:
        return [(2, data[2:])]
    if rtype == SOA:
        mname = names.from_labels(names.labels_of(data))
        rname = names.from_labels(names.labels_of(data[len(mname) :]))
        return [(0, mname), (len(mname), rname)]

    return []
