"""The edges of one PoP for one address family, as health sees them, and
how an answer picks among them.

A pool is rebuilt whenever an edge's health changes; only its rotation
cursor and spill credit carry over. Edges that take new clients are
`usable`; when none is, the up, non-draining edges that are full are
`full`, and the PoP keeps the share of new clients it has room for
(`keep_share`) and the router spills the rest to the next PoP.

Picking: rotation through a smooth weighted round-robin cycle, so every
answer starts at the next edge and weights hold at every scale; or, with
`edge_selection = "qname-hash"`, weighted rendezvous hashing of the query
name, so one hostname's content concentrates on the same caches and only
names on an edge that leaves move.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

from dnsrouter.config import EdgeConfig
from dnsrouter.health import EdgeHealth

# A full PoP whose edges do not say by how much they are over (a bare
# `overloaded: true`) keeps this share of its new clients.
FULL_KEEP_SHARE = 0.5

# A full PoP always sheds at least this share of new clients, even when
# its figures say it is exactly at its limit, so that its load can fall.
MIN_SPILL_SHARE = 0.1

# Distinct query names whose consistent-hash choice is remembered per pool.
HASH_MEMO_SIZE = 4096


@dataclass
class EdgePool:
    """Mutable on purpose: the cursor and credit advance per answer."""

    family: int
    configured: tuple[EdgeConfig, ...]
    usable: tuple[EdgeConfig, ...] = ()     # take new clients
    full: tuple[EdgeConfig, ...] = ()       # up, not draining, but full
    keep_share: float = 1.0                 # of new clients, when all full
    credit: float = 0.0
    cursor: int = 0
    cycle: tuple[int, ...] = ()
    hashed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    rotations: dict[int, tuple[tuple[str, ...], ...]] = field(
        default_factory=dict
    )

    @classmethod
    def build(
        cls,
        family: int,
        members: tuple[EdgeConfig, ...],
        states: dict[str, EdgeHealth],
    ) -> EdgePool:
        """A pool of `members` (edges with an address of `family`)."""
        initial = EdgeHealth()
        health = {e.name: states.get(e.name, initial) for e in members}
        usable = tuple(e for e in members if health[e.name].takes_new_clients)
        full = () if usable else tuple(
            e for e in members
            if health[e.name].up and not health[e.name].draining
            and health[e.name].is_full
        )
        serving = usable or full

        return cls(
            family=family,
            configured=members,
            usable=usable,
            full=full,
            keep_share=keep_share([health[e.name] for e in full]),
            cycle=weighted_cycle([e.weight for e in serving]),
        )

    def address(self, edge: EdgeConfig) -> str:
        """The edge's address in this pool's family."""
        return (edge.ipv4 if self.family == 4 else edge.ipv6) or ""

    def keeps_next(self) -> bool:
        """Whether the next new client of a full pool stays here; over many
        calls exactly `keep_share` of them do (no randomness)."""
        self.credit += self.keep_share
        if self.credit >= 1.0:
            self.credit -= 1.0
            return True

        return False

    def pick(self, count: int, qname: str, by_hash: bool) -> tuple[str, ...]:
        """Up to `count` distinct addresses from the serving edges."""
        if by_hash:
            edges = self.usable or self.full
            return self._hashed(edges, min(count, len(edges)), qname)
        answers = self.rotations.get(count)
        if answers is None:
            answers = self.rotations[count] = self._rotations(count)
        answer = answers[self.cursor % len(answers)]
        self.cursor += 1

        return answer

    def _rotations(self, count: int) -> tuple[tuple[str, ...], ...]:
        """Every answer of a rotation period, precomputed: answer k holds
        the first `count` distinct edges of the cycle from position k."""
        edges = self.usable or self.full
        count = min(count, len(edges))
        cycle = self.cycle
        answers = []
        for start in range(len(cycle)):
            chosen: list[int] = []
            for step in range(len(cycle)):
                index = cycle[(start + step) % len(cycle)]
                if index not in chosen:
                    chosen.append(index)
                    if len(chosen) == count:
                        break
            answers.append(tuple(self.address(edges[i]) for i in chosen))

        return tuple(answers)

    def _hashed(
        self, edges: tuple[EdgeConfig, ...], count: int, qname: str
    ) -> tuple[str, ...]:
        chosen = self.hashed.get(qname)
        if chosen is not None and len(chosen) == count:
            return chosen
        ranked = sorted(edges, key=lambda e: rendezvous_score(qname, e), reverse=True)
        chosen = tuple(self.address(e) for e in ranked[:count])
        if len(self.hashed) >= HASH_MEMO_SIZE:
            self.hashed.clear()
        self.hashed[qname] = chosen

        return chosen


def keep_share(full: list[EdgeHealth]) -> float:
    """Share of new clients a full PoP keeps: its capacity over its load,
    never more than 1 - MIN_SPILL_SHARE."""
    connections = capacity = 0
    for health in full:
        if not health.max_connections or health.connections is None:
            return min(FULL_KEEP_SHARE, 1 - MIN_SPILL_SHARE)
        connections += health.connections
        capacity += health.max_connections
    if connections == 0:
        return FULL_KEEP_SHARE

    return min(capacity / connections, 1 - MIN_SPILL_SHARE)


def weighted_cycle(weights: list[int]) -> tuple[int, ...]:
    """Indices in smooth weighted round-robin order, one full period.

    Each index appears `weight` times (after dividing by the common
    divisor), spread out as nginx's smooth WRR does.
    """
    if not weights:
        return ()
    divisor = math.gcd(*weights)
    weights = [w // divisor for w in weights]
    total = sum(weights)
    current = [0] * len(weights)
    order = []
    for _ in range(total):
        for i, weight in enumerate(weights):
            current[i] += weight
        best = max(range(len(weights)), key=lambda i: current[i])
        current[best] -= total
        order.append(best)

    return tuple(order)


def rendezvous_score(qname: str, edge: EdgeConfig) -> float:
    """Weighted rendezvous (highest random weight) score of an edge for a
    name: -w / ln(u) with u uniform in (0, 1) from a stable hash."""
    digest = hashlib.blake2b(f"{qname}|{edge.name}".encode(), digest_size=8)
    unit = (int.from_bytes(digest.digest(), "big") + 1) / (2**64 + 2)

    return -edge.weight / math.log(unit)
