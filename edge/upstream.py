"""Where a fill is fetched from: a parent edge or the site's origin.

Parents form a shield tier. The parent for a key is chosen by
rendezvous (highest-random-weight) hashing of the cache key over the
configured parents: every child picks the same parent for an object, so
each object is fetched from the origin by one parent only, and when a
parent fails only its share moves, to each key's next choice. With no
parent reachable the edge goes to the origin itself.

Loops are impossible: every request sent upstream carries
``CDN-Loop: pycdn`` (RFC 8586), and a request that arrives with it came
from one of our edges, so it is sent only to the origin, never to
another parent.
"""

from __future__ import annotations

import hashlib
import time
from typing import Callable

from edge.config import SiteConfig

# The CDN-Loop token every edge of this CDN adds (RFC 8586 §2).
CDN_TOKEN = "pycdn"
# A parent that failed is skipped for this long before being tried again.
PARENT_RETRY_SECONDS = 10.0


def has_passed_an_edge(cdn_loop: list[str]) -> bool:
    """True when a CDN-Loop field shows one of our edges already relayed."""
    for line in cdn_loop:
        for item in line.split(","):
            if item.split(";")[0].strip().lower() == CDN_TOKEN:
                return True

    return False


class Upstreams:
    """Parent choice and the bookkeeping of failed parents."""

    def __init__(
        self, parents: tuple[str, ...], own_bases: tuple[str, ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.parents = tuple(p for p in parents if p not in own_bases)
        self._clock = clock
        self._down_until: dict[str, float] = {}

    def candidates(self, site: SiteConfig, key: str, from_edge: bool) -> list[str]:
        """Return the base URLs to try in order; the origin is last."""
        if from_edge or not self.parents:
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
