"""Where a fill is fetched from: a parent edge or the site's origin.

Parents form a shield tier. The parent for a key is chosen by
rendezvous (highest-random-weight) hashing of the cache key over the
configured parents: every child picks the same parent for an object, so
each object is fetched from the origin by one parent only, and when a
parent fails only its share moves, to each key's next choice. With no
parent reachable the edge goes to the origin itself.

Loops end after one round (RFC 8586): every request sent upstream
carries this edge's ``CDN-Loop`` entry, ``pycdn; edge=NAME; id=ID``,
where ID is drawn at random when the edge starts. A request that comes
back with this edge's own entry has gone round a cycle of parents, and
is sent to the origin only. Only the edge's own entry counts: clients
never see the entries edges send upstream, so they cannot forge one to
send misses past the shield tier, and tiers of several levels work.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Callable

from edge.config import SiteConfig

# The CDN-Loop token every edge of this CDN adds (RFC 8586 §2).
CDN_TOKEN = "pycdn"
# A parent that failed is skipped for this long before being tried again.
PARENT_RETRY_SECONDS = 10.0


class Upstreams:
    """Parent choice, loop detection and the bookkeeping of failed
    parents."""

    def __init__(
        self, parents: tuple[str, ...], own_bases: tuple[str, ...] = (),
        clock: Callable[[], float] = time.monotonic,
        loop_id: str | None = None,
    ) -> None:
        self.parents = tuple(p for p in parents if p not in own_bases)
        # 64 random bits: not guessable by a client, unique per start.
        self.loop_id = loop_id or secrets.token_hex(8)
        self._clock = clock
        self._down_until: dict[str, float] = {}

    def loop_entry(self, name: str) -> str:
        """Return this edge's CDN-Loop entry, with its ``name``."""
        return f"{CDN_TOKEN}; edge={name}; id={self.loop_id}"

    def has_looped(self, cdn_loop: list[str]) -> bool:
        """True when CDN-Loop field lines hold this edge's own entry."""
        for line in cdn_loop:
            for item in line.split(","):
                token, *params = (p.strip() for p in item.split(";"))
                if token.lower() == CDN_TOKEN and \
                        f"id={self.loop_id}" in params:
                    return True

        return False

    def candidates(self, site: SiteConfig, key: str, looped: bool) -> list[str]:
        """Return the base URLs to try in order; the origin is last."""
        if looped or not self.parents:
            return [site.origin]
        now = self._clock()
        ranked = sorted(self.parents, key=lambda p: _weight(p, key),
                        reverse=True)
        usable = [p for p in ranked if self._down_until.get(p, 0.0) <= now]

        return [*usable, site.origin]

    def mark_down(self, parent: str) -> None:
        """Skip ``parent`` for a while after a failure."""
        self._down_until[parent] = self._clock() + PARENT_RETRY_SECONDS


def _weight(parent: str, key: str) -> int:
    digest = hashlib.blake2b(f"{parent}\0{key}".encode(), digest_size=8)

    return int.from_bytes(digest.digest(), "big")
