"""RFC 1035 section 5 master-file parser.

The file is read as Latin-1, so one character is one octet and `\\DDD`
escapes (decimal, RFC 1035 section 5.1) map straight to octets.  A scanner
turns the text into entries: the tokens of one record with parentheses
joined, comments dropped and quoted strings kept as single tokens, plus
whether the entry started with blank space (owner omitted).  Directives
($ORIGIN, $TTL, $INCLUDE) change the state; every other entry becomes a
Record with wire-format owner and RDATA.  Every failure is a ZoneError
`file:line: reason`.

TTL defaults follow RFC 2308 section 4: with a $TTL in force it applies to
records without their own TTL; before any $TTL the last explicit TTL
applies, as RFC 1035 section 5.1 and BIND do.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dnsrouter import names, rdata
from dnsrouter.errors import ZoneError
from dnsrouter.rdata import Token

log = logging.getLogger("dnsrouter.zone")

CLASSES = {"IN": 1, "CH": 3, "HS": 4}
CLASS_IN = 1

MAX_TTL = 1 << 31  # RFC 2181 section 8

# An $INCLUDE chain deeper than this is certainly a loop; BIND has a
# similar bound.
MAX_INCLUDE_DEPTH = 16


@dataclass(frozen=True)
class Record:
    """One resource record as loaded: wire-format owner and RDATA."""

    name: bytes
    ttl: int
    rclass: int
    rtype: int
    rdata: bytes
    where: str  # "file:line" of the entry, for later validation messages


@dataclass(frozen=True)
class Entry:
    """The tokens of one master-file entry."""

    line: int
    blank_owner: bool
    tokens: list[Token]


def scan(text: str, filename: str) -> Iterator[Entry]:
    """Split master-file text into entries (RFC 1035 section 5.1).

    An entry is one line, or several joined by parentheses.  Raises
    ZoneError for unbalanced parentheses or quotes.
    """
    pending: list[Token] = []
    depth = 0
    start = 1
    blank_owner = False
    for number, line in enumerate(text.split("\n"), 1):
        if depth == 0:
            start, blank_owner = number, line[:1] in (" ", "\t")
        tokens, depth = _tokenize(line, depth, filename, number)
        pending.extend(tokens)
        if depth == 0 and pending:
            yield Entry(start, blank_owner, pending)
            pending = []

    if depth:
        raise ZoneError("%s:%d: unbalanced parentheses" % (filename, start))


def _tokenize(
    line: str, depth: int, filename: str, number: int
) -> tuple[list[Token], int]:
    """The tokens of one physical line and the parenthesis depth after it.

    Escapes stay in the token text; a `;` outside quotes ends the line.
    """
    tokens: list[Token] = []
    current: list[str] = []
    pos = 0
    while pos < len(line):
        char = line[pos]
        if char in ' \t\r();"' and current:
            tokens.append(Token("".join(current), False))
            current = []
        if char == ";":
            break
        if char == '"':
            pos, quoted = _quoted(line, pos + 1, filename, number)
            tokens.append(Token(quoted, True))
            continue
        if char == "\\":
            current.append(line[pos : pos + 2])
            pos += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            if depth == 0:
                raise ZoneError("%s:%d: unbalanced parentheses" % (filename, number))
            depth -= 1
        elif char not in " \t\r":
            current.append(char)
        pos += 1
    if current:
        tokens.append(Token("".join(current), False))

    return tokens, depth


def _quoted(text: str, pos: int, filename: str, line: int) -> tuple[int, str]:
    """Read a quoted string from after its opening quote; escapes kept."""
    out = []
    while pos < len(text):
        char = text[pos]
        if char == "\\":
            out.append(text[pos : pos + 2])
            pos += 2
        elif char == '"':
            return pos + 1, "".join(out)
        elif char == "\n":
            break
        else:
            out.append(char)
            pos += 1

    raise ZoneError("%s:%d: unbalanced quotes" % (filename, line))


@dataclass
class _State:
    """Parser state that $INCLUDE saves and restores (RFC 1035 5.1)."""

    origin: bytes
    owner: bytes | None = None


@dataclass
class _Loader:
    """Reads one zone: its files, state and collected records."""

    zone_origin: bytes
    root_dir: Path
    records: list[Record] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    default_ttl: int | None = None
    has_dollar_ttl: bool = False

    def load(self, path: Path, state: _State, depth: int) -> None:
        if depth > MAX_INCLUDE_DEPTH:
            raise ZoneError("%s:1: $INCLUDE nested too deeply" % path)
        try:
            text = path.read_bytes().decode("latin-1")
        except OSError as exc:
            raise ZoneError("%s:1: cannot read: %s" % (path, exc.strerror)) from None

        for entry in scan(text, str(path)):
            where = "%s:%d" % (path, entry.line)
            first = entry.tokens[0].text
            if not entry.blank_owner and first.startswith("$"):
                self.directive(path, entry, state, depth, where)
            else:
                self.record(entry, state, where)

    def directive(
        self, path: Path, entry: Entry, state: _State, depth: int, where: str
    ) -> None:
        name = entry.tokens[0].text.upper()
        args = entry.tokens[1:]
        if name == "$ORIGIN" and len(args) == 1:
            state.origin = names.from_text(args[0].text, state.origin, where)
        elif name == "$TTL" and len(args) == 1:
            ttl = rdata.parse_ttl(args[0].text)
            if ttl is None:
                raise ZoneError("%s: bad $TTL %r" % (where, args[0].text))
            self.default_ttl = self.capped(ttl, where)
            self.has_dollar_ttl = True
        elif name == "$INCLUDE" and len(args) in (1, 2):
            target = self.include_path(path, args[0].text, where)
            origin = state.origin
            if len(args) == 2:
                origin = names.from_text(args[1].text, state.origin, where)
            # The included file's origin and owner never leak back.
            self.load(target, _State(origin, state.owner), depth + 1)
        else:
            raise ZoneError("%s: unknown or malformed directive %s" % (where, name))

    def include_path(self, path: Path, raw: str, where: str) -> Path:
        """Resolve an $INCLUDE file beside the including file, confined to
        the zone directory so a zone cannot read other files."""
        relative = names.decode_escapes(raw).decode("latin-1")
        target = Path(os.path.realpath(path.parent / relative))
        root = Path(os.path.realpath(self.root_dir))
        if root not in target.parents:
            raise ZoneError("%s: $INCLUDE %s is outside %s" % (where, raw, root))
        if not target.is_file():
            raise ZoneError("%s: $INCLUDE file %s not found" % (where, raw))

        return target

    def record(self, entry: Entry, state: _State, where: str) -> None:
        tokens = entry.tokens
        pos = 0
        if entry.blank_owner:
            if state.owner is None:
                raise ZoneError("%s: no owner name for record" % where)
            owner = state.owner
        else:
            owner = names.from_text(tokens[0].text, state.origin, where)
            pos = 1
        state.owner = owner

        ttl, rclass, rtype, pos = self.fields(tokens, pos, where)
        data = rdata.parse(rtype, tokens[pos:], state.origin, where)
        ttl = self.resolve_ttl(ttl, rtype, data, where)

        if rclass != CLASS_IN:
            raise ZoneError(
                "%s: class %d does not match zone class IN" % (where, rclass)
            )
        if not names.is_subdomain(names.key_of(owner), names.key_of(self.zone_origin)):
            message = "%s: ignoring out-of-zone data (%s)" % (
                where,
                names.to_text(owner),
            )
            self.warnings.append(message)
            log.warning("zone out_of_zone_data %s", message)
            return
        self.records.append(Record(owner, ttl, rclass, rtype, data, where))

    def fields(
        self, tokens: list[Token], pos: int, where: str
    ) -> tuple[int | None, int, int, int]:
        """TTL and class in either order, then the type (RFC 1035 5.1)."""
        ttl: int | None = None
        rclass: int | None = None
        for _ in range(2):
            if pos >= len(tokens):
                break
            text = tokens[pos].text
            if ttl is None and text[:1].isdigit():
                ttl = rdata.parse_ttl(text)
                if ttl is None:
                    raise ZoneError("%s: bad TTL %r" % (where, text))
                ttl = self.capped(ttl, where)
            elif rclass is None and _class_code(text) is not None:
                rclass = _class_code(text)
            else:
                break
            pos += 1
        if pos >= len(tokens):
            raise ZoneError("%s: missing type" % where)
        rtype = rdata.type_code(tokens[pos].text)
        if rtype is None:
            raise ZoneError("%s: unknown RR type %r" % (where, tokens[pos].text))
        if rtype in (rdata.OPT, rdata.ANY) or 128 <= rtype <= 255:
            raise ZoneError("%s: meta type %s in zone data" % (where, tokens[pos].text))

        return ttl, (CLASS_IN if rclass is None else rclass), rtype, pos + 1

    def capped(self, ttl: int, where: str) -> int:
        """RFC 2181 section 8: a TTL with the top bit set counts as 0;
        BIND loads it so, with a warning."""
        if ttl < MAX_TTL:
            return ttl
        self.warnings.append("%s: TTL %d > MAXTTL, setting TTL to 0" % (where, ttl))

        return 0

    def resolve_ttl(self, ttl: int | None, rtype: int, data: bytes, where: str) -> int:
        if ttl is not None:
            if not self.has_dollar_ttl:
                self.default_ttl = ttl
            return ttl
        if self.default_ttl is not None:
            return self.default_ttl
        if rtype == rdata.SOA:
            # BIND's fallback without any TTL: the SOA MINIMUM field.
            # It then acts as a $TTL: later explicit TTLs do not change it.
            minimum = int.from_bytes(data[-4:], "big")
            self.default_ttl = minimum
            self.has_dollar_ttl = True
            self.warnings.append("%s: no TTL specified; using SOA MINTTL" % where)
            return minimum
        raise ZoneError("%s: no TTL specified" % where)


def _class_code(text: str) -> int | None:
    upper = text.upper()
    if upper in CLASSES:
        return CLASSES[upper]
    if upper.startswith("CLASS") and upper[5:].isdigit() and int(upper[5:]) < 65536:
        return int(upper[5:])

    return None


@dataclass(frozen=True)
class ParsedZone:
    """The records of one zone file (with includes) and load warnings."""

    origin: bytes
    records: tuple[Record, ...]
    warnings: tuple[str, ...]


def parse_file(
    path: str | Path, origin: bytes, root_dir: str | Path | None = None
) -> ParsedZone:
    """Parse a master file for the zone `origin` (wire name).

    `root_dir` confines $INCLUDE (default: the file's directory).  Raises
    ZoneError `file:line: reason` at the first syntax error; out-of-zone
    records are dropped with a warning, as BIND does.
    """
    path = Path(path)
    loader = _Loader(origin, Path(root_dir) if root_dir else path.parent)
    loader.load(path, _State(origin), 0)

    return ParsedZone(origin, tuple(loader.records), tuple(loader.warnings))
