"""Where a client is, which PoPs serve it in which order, and for how wide
a block of addresses that holds (the ECS scope).

A decision is the list of PoPs in order of preference. Health is applied
later, per query, by taking the first PoP on the list with capacity; so a
decision never changes with health, and can be cached and shared.

The list comes from the first of these that applies to the client address:

1. the network map entry with the longest prefix: its PoP, then the other
   PoPs by distance from it;
2. a GeoIP record with a city: every PoP by great-circle distance;
3. a GeoIP record with only a country (its coordinates are the country's
   centre, so distance from them says little): the operator's list for
   that country when `[geoip.country_pops]` has one; otherwise every PoP
   whose distance is within the record's accuracy radius of the nearest
   one is an equally likely choice, and the database network is assigned
   to one of them by a stable hash, so a large country is spread over the
   PoPs that may serve it instead of piling onto the one nearest its centre;
4. nothing (no record, or a lookup that failed in a corrupt database):
   the empty list, meaning "the CDN name's default PoP".

The scope (RFC 7871 section 7.2.1) is the prefix length of the widest
block around the client over which the list is the same everywhere. It
starts from the block that decided: the map entry or the GeoIP network,
narrowed so that it holds no more specific map entry. It then widens one
bit at a time, like gdnsd does, while the sibling block decides the same
list everywhere; the sibling is checked by walking every database network
and map entry inside it. The walk has a budget of lookups; when it runs
out the scope stays where it is, which is never wider than the truth.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dnsrouter.config import NetmapEntry, PopConfig
from dnsrouter.geo import distance_km
from dnsrouter.errors import GeoIPError
from dnsrouter.geoip import GeoDatabase, GeoRecord
from dnsrouter.lograte import RateLimitedLog
from dnsrouter.netmap import NetworkMap

log = logging.getLogger("dnsrouter.geoip")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Database lookups one decision may spend on widening its scope. Each costs
# about 10 us, so a new client network costs at most about 0.7 ms, once:
# the result is cached for the whole scope block. Measured on GeoLite2 with
# the lab's PoPs: 64 reaches gdnsd's scopes (Berlin /13, Princeton /14,
# Singapore /16) and widens by 2.9 bits on average; 400 gains one more bit
# at four times the cost.
WIDEN_BUDGET = 64

# Accuracy assumed for a country-level record that states none (MaxMind
# gives 1000 km or more for such records).
DEFAULT_COUNTRY_ACCURACY_KM = 1000

# Warning lines a second about failing GeoIP lookups; a corrupt region
# fails for every client in it, at the query rate.
LOOKUP_FAILURE_LOG_RATE = 1

SOURCE_MAP = "map"
SOURCE_GEOIP = "geoip"
SOURCE_DEFAULT = "default"


@dataclass(frozen=True)
class Decision:
    """The PoP preference for a client and the block it holds for."""

    pops: tuple[str, ...]   # empty: the CDN name's default order
    source: str             # SOURCE_MAP, SOURCE_GEOIP or SOURCE_DEFAULT
    block: IPNetwork        # the map entry or GeoIP network that decided
    scope: int              # widened prefix length; block.prefixlen at most
    record: GeoRecord | None
    map_entry: NetmapEntry | None


@dataclass(frozen=True)
class _Block:
    pops: tuple[str, ...]
    prefix: int
    source: str
    record: GeoRecord | None
    map_entry: NetmapEntry | None
    failed: bool = False    # the lookup failed: holds for its address only


class PopRanker:
    """Orders PoPs by great-circle distance; results are memoised."""

    def __init__(self, pops: tuple[PopConfig, ...]) -> None:
        self.pops = pops
        self._by_name = {pop.name: pop for pop in pops}
        self._memo: dict[tuple[float, float], tuple[str, ...]] = {}

    def distances(self, latitude: float, longitude: float) -> dict[str, float]:
        """Distance in km from the point to every PoP."""
        return {
            pop.name: distance_km(latitude, longitude, pop.latitude, pop.longitude)
            for pop in self.pops
        }

    def from_point(self, latitude: float, longitude: float) -> tuple[str, ...]:
        """Every PoP, nearest first (ties broken by name)."""
        key = (latitude, longitude)
        order = self._memo.get(key)
        if order is None:
            distances = self.distances(latitude, longitude)
            order = tuple(sorted(distances, key=lambda n: (distances[n], n)))
            if len(self._memo) < 100_000:
                self._memo[key] = order

        return order

    def from_pop(self, name: str) -> tuple[str, ...]:
        """`name` first, then the others by distance from it."""
        pop = self._by_name[name]

        return self.from_point(pop.latitude, pop.longitude)

    def preferring(
        self, first: tuple[str, ...], latitude: float, longitude: float
    ) -> tuple[str, ...]:
        """`first` in its order, then the rest by distance from the point."""
        rest = [n for n in self.from_point(latitude, longitude) if n not in first]

        return (*first, *rest)


class Decider:
    """Decides a client's PoP list and scope; pure apart from lookups."""

    def __init__(
        self,
        geo: GeoDatabase,
        netmap: NetworkMap,
        ranker: PopRanker,
        country_pops: Mapping[str, tuple[str, ...]] | None = None,
        widen_budget: int = WIDEN_BUDGET,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.geo = geo
        self.netmap = netmap
        self.ranker = ranker
        self.country_pops = dict(country_pops or {})
        self.widen_budget = widen_budget
        self._lookup_failures = RateLimitedLog(
            log, "geoip lookup_failed", LOOKUP_FAILURE_LOG_RATE, clock
        )

    def decide(self, address: IPAddress, widen: bool = True) -> Decision:
        """The decision for one client address (an ECS address or a
        resolver's). Costs one lookup, plus up to the widening budget when
        `widen`; without it the scope is the deciding block's prefix."""
        bits = address.max_prefixlen
        value = int(address)
        block = self._block(address.version, value)
        scope = block.prefix
        if widen:
            scope = self._widen(address.version, value, block, bits)
        network = _network(address.version, value, block.prefix)

        return Decision(
            block.pops, block.source, network, scope, block.record,
            block.map_entry,
        )

    def _widen(self, version: int, value: int, block: _Block, bits: int) -> int:
        scope = block.prefix
        if block.failed:
            return scope
        budget = [self.widen_budget]
        while scope > 0:
            size = 1 << (bits - scope)
            sibling = (value >> (bits - scope) << (bits - scope)) ^ size
            if not self._is_uniform(version, sibling, size, block.pops, budget):
                break
            scope -= 1

        return scope

    def _is_uniform(
        self,
        version: int,
        first: int,
        size: int,
        pops: tuple[str, ...],
        budget: list[int],
    ) -> bool:
        """True when every address in [first, first+size) decides `pops`."""
        bits = 32 if version == 4 else 128
        value = first
        end = first + size
        while value < end:
            if budget[0] <= 0:
                return False
            budget[0] -= 1
            block = self._block(version, value)
            if block.pops != pops or block.failed:
                return False
            block_size = 1 << (bits - block.prefix)
            if block_size >= size:
                return True
            value = (value >> (bits - block.prefix) << (bits - block.prefix)) + (
                block_size
            )

        return True

    def _block(self, version: int, value: int) -> _Block:
        bits = 32 if version == 4 else 128
        entry = self.netmap.get(version, value)
        if entry is not None:
            block = _Block(
                self.ranker.from_pop(entry.pop), entry.network.prefixlen,
                SOURCE_MAP, None, entry,
            )
        else:
            address = ipaddress.ip_address(value) if version == 4 else (
                ipaddress.IPv6Address(value)
            )
            found = self._lookup(address)
            if found is None:
                return _Block((), bits, SOURCE_DEFAULT, None, None, failed=True)
            record, prefix = found
            pops = self._pops_for_record(record, version, value, prefix, bits)
            source = SOURCE_GEOIP if record is not None else SOURCE_DEFAULT
            block = _Block(pops, prefix, source, record, None)

        return self._narrow(version, value, block, bits)

    def _lookup(self, address: IPAddress) -> tuple[GeoRecord | None, int] | None:
        """The GeoIP record and prefix, or None when the lookup fails (a
        database corrupt where validation did not reach). The caller then
        decides the default PoP for this one address, not SERVFAIL, and
        the fault costs one rate-limited warning line."""
        try:
            return self.geo.lookup_prefix(address)
        except GeoIPError as error:
            self._lookup_failures.warn("address=%s error=%s", address, error)
            return None

    def _narrow(self, version: int, value: int, block: _Block, bits: int) -> _Block:
        """Shrink the block around `value` until no more specific map entry
        lies inside it (those entries decide for their own addresses)."""
        first = value >> (bits - block.prefix) << (bits - block.prefix)
        last = first + (1 << (bits - block.prefix)) - 1
        prefix = block.prefix
        for entry in self.netmap.overlapping(version, first, last):
            if entry is block.map_entry or entry.network.prefixlen <= block.prefix:
                continue
            start = int(entry.network.network_address)
            common = bits - (value ^ start).bit_length()
            prefix = max(prefix, common + 1)
        if prefix == block.prefix:
            return block

        return _Block(block.pops, prefix, block.source, block.record, block.map_entry)

    def _pops_for_record(
        self,
        record: GeoRecord | None,
        version: int,
        value: int,
        prefix: int,
        bits: int,
    ) -> tuple[str, ...]:
        if record is None:
            return ()
        latitude, longitude = record.latitude, record.longitude
        if not record.is_country_level:
            return self.ranker.from_point(latitude, longitude)
        listed = self.country_pops.get(record.country or "")
        if listed:
            return self.ranker.preferring(listed, latitude, longitude)
        candidates = self._equally_near(record)
        if len(candidates) < 2:
            return self.ranker.from_point(latitude, longitude)
        start = value >> (bits - prefix) << (bits - prefix)
        chosen = candidates[_stable_hash(version, start, prefix) % len(candidates)]

        return self.ranker.preferring((chosen,), latitude, longitude)

    def _equally_near(self, record: GeoRecord) -> list[str]:
        """PoPs the record cannot tell apart: within its accuracy radius of
        the nearest one's distance."""
        distances = self.ranker.distances(record.latitude, record.longitude)
        accuracy = record.accuracy_km or DEFAULT_COUNTRY_ACCURACY_KM
        nearest = min(distances.values())

        return sorted(n for n, d in distances.items() if d <= nearest + accuracy)


def _stable_hash(version: int, start: int, prefix: int) -> int:
    """A hash that is the same in every process and run (unlike hash())."""
    text = f"{version}:{start}:{prefix}".encode()

    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def _network(version: int, value: int, prefix: int) -> IPNetwork:
    if version == 4:
        return ipaddress.IPv4Network((value, prefix), strict=False)

    return ipaddress.IPv6Network((value, prefix), strict=False)
