"""Network maps: an operator's CIDR -> PoP rules, longest prefix wins.

Entries come inline from the config (`[[netmap]]`) and from an optional
file (`[routing] netmap_file`) with one `CIDR POP` per line and `#`
comments; the file is re-read when its modification time or size changes.
Inline entries and file entries form one map; the same network in both is
an error, so that no rule silently hides another.

Lookups go by prefix length, longest first, each a dict probe: a few
microseconds for maps of any size. `overlapping` answers the question the
ECS scope needs: which entries lie inside a given block of addresses.
"""

from __future__ import annotations

import bisect
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

from dnsrouter.config import NetmapEntry, RouterConfig
from dnsrouter.errors import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class _FamilyMap:
    """The entries of one address family."""

    def __init__(self, bits: int, entries: list[NetmapEntry]) -> None:
        self.bits = bits
        by_prefix: dict[int, dict[int, NetmapEntry]] = {}
        for entry in entries:
            start = int(entry.network.network_address)
            by_prefix.setdefault(entry.network.prefixlen, {})[start] = entry
        self.by_prefix = by_prefix
        self.prefixes = sorted(by_prefix, reverse=True)
        ranked = sorted(entries, key=lambda e: int(e.network.network_address))
        self.starts = [int(e.network.network_address) for e in ranked]
        self.sorted = ranked

    def find(self, value: int) -> NetmapEntry | None:
        for prefix in self.prefixes:
            key = value >> (self.bits - prefix) << (self.bits - prefix)
            entry = self.by_prefix[prefix].get(key)
            if entry is not None:
                return entry

        return None

    def starting_within(self, first: int, last: int) -> list[NetmapEntry]:
        low = bisect.bisect_left(self.starts, first)
        high = bisect.bisect_right(self.starts, last)

        return self.sorted[low:high]


class NetworkMap:
    """An immutable set of CIDR -> PoP rules for IPv4 and IPv6."""

    def __init__(self, entries: Iterable[NetmapEntry]) -> None:
        entries = list(entries)
        self.entries = tuple(entries)
        self._v4 = _FamilyMap(32, [e for e in entries if e.network.version == 4])
        self._v6 = _FamilyMap(128, [e for e in entries if e.network.version == 6])

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, version: int, value: int) -> NetmapEntry | None:
        """The longest-prefix entry holding the address, or None."""
        family = self._v4 if version == 4 else self._v6

        return family.find(value) if family.prefixes else None

    def overlapping(self, version: int, first: int, last: int) -> list[NetmapEntry]:
        """Entries whose network starts inside [first, last].

        Because CIDR blocks are nested or disjoint, these are exactly the
        entries inside the block, plus the block's own entry if it has one.
        """
        family = self._v4 if version == 4 else self._v6

        return family.starting_within(first, last) if family.prefixes else []


def parse_netmap_text(text: str, source: str, pops: set[str]) -> list[NetmapEntry]:
    """Entries of a netmap file; ConfigError names `source`, line and problem."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        where = f"{source}:{number}"
        if len(words) != 2:
            raise ConfigError(
                f"{where}: expected 'CIDR POP', got {line.strip()!r}"
            )
        try:
            network = ipaddress.ip_network(words[0], strict=True)
        except ValueError:
            raise ConfigError(
                f"{where}: {words[0]!r} is not a network like 192.0.2.0/24 "
                "with no host bits"
            ) from None
        if words[1] not in pops:
            raise ConfigError(f"{where}: {words[1]!r} names no [[pop]]")
        entries.append(NetmapEntry(network, words[1]))

    return entries


def merge_entries(
    inline: Iterable[NetmapEntry], from_file: Iterable[NetmapEntry], source: str
) -> NetworkMap:
    """One map from both sources; the same network twice is a ConfigError."""
    seen: dict[IPNetwork, str] = {}
    merged = []
    for entry in [*inline, *from_file]:
        if entry.network in seen:
            raise ConfigError(
                f"{source}: network {entry.network} is mapped twice "
                f"(to {seen[entry.network]} and {entry.pop})"
            )
        seen[entry.network] = entry.pop
        merged.append(entry)

    return NetworkMap(merged)


class NetmapFile:
    """A netmap file watched for changes by modification time and size.

    `read` blocks on file I/O; the router calls it from a timer, not the
    query path.
    """

    def __init__(self, path: Path, pops: set[str]) -> None:
        self.path = path
        self.pops = pops
        self._stamp: tuple[int, int] | None = None

    def has_changed(self) -> bool:
        """True when the file differs from what `read` saw last."""
        return self._current_stamp() != self._stamp

    def read(self) -> list[NetmapEntry]:
        """Parse the file now; ConfigError when unreadable or invalid.

        The file counts as seen either way, so a bad file is reported
        once, not at every poll, until it changes again.
        """
        self._stamp = self._current_stamp()
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{self.path}: cannot read netmap: {error}") from error

        return parse_netmap_text(text, str(self.path), self.pops)

    def _current_stamp(self) -> tuple[int, int] | None:
        try:
            status = os.stat(self.path)
        except OSError:
            return None

        return status.st_mtime_ns, status.st_size


def load_netmap(config: RouterConfig) -> tuple[NetworkMap, NetmapFile | None]:
    """The config's map (inline entries plus its netmap file, read now)
    and the watched file, if any; blocks on file I/O. Raises ConfigError."""
    path = config.routing.netmap_file
    if path is None:
        return merge_entries(config.netmap, (), str(config.path)), None
    watched = NetmapFile(path, {pop.name for pop in config.pops})
    netmap = merge_entries(config.netmap, watched.read(), str(config.path))

    return netmap, watched
