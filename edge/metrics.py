"""Counters for Prometheus and for the health endpoint's load figures.

Updating a counter is a dict increment; the text exposition format is
built only when scraped.
"""

from __future__ import annotations

import collections
import time
from typing import Callable

# Origin latency buckets in seconds: from a LAN origin to a timeout.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0)
# bytes_per_second is averaged over this many seconds.
RATE_WINDOW = 10


class Metrics:
    """Process-wide counters; mutated from the event loop only."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.requests: collections.Counter[str] = collections.Counter()
        self.bytes_served = 0
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self._second_bytes: collections.deque[tuple[int, int]] = \
            collections.deque()

    def observe_response(self, x_cache: str, size: int) -> None:
        """Count one answered request and its body bytes."""
        self.requests[x_cache] += 1
        self.bytes_served += size
        second = int(self._clock())
        buckets = self._second_bytes
        if buckets and buckets[-1][0] == second:
            buckets[-1] = (second, buckets[-1][1] + size)
        else:
            buckets.append((second, size))
            while buckets[0][0] <= second - RATE_WINDOW:
                buckets.popleft()

    def observe_origin(self, seconds: float) -> None:
        """Record the time an origin took to send its headers."""
        self.latency_sum += seconds
        for index, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency_counts[index] += 1
                return
        self.latency_counts[-1] += 1

    def bytes_per_second(self) -> float:
        """Return body bytes served per second over the last window."""
        now = int(self._clock())
        total = sum(n for second, n in self._second_bytes
                    if second > now - RATE_WINDOW)

        return total / RATE_WINDOW

    def render(
        self, objects: int, stored_bytes: int, evictions: int, fills: int,
        connections: int,
    ) -> str:
        """Return the Prometheus text exposition (format 0.0.4)."""
        lines = [
            "# HELP edge_requests_total Requests answered, by X-Cache.",
            "# TYPE edge_requests_total counter",
        ]
        for status, count in sorted(self.requests.items()):
            lines.append(f'edge_requests_total{{cache="{status}"}} {count}')
        lines += _gauge("edge_served_bytes_total", "counter",
                        "Body bytes sent to clients.", self.bytes_served)
        lines += self._latency_lines()
        lines += _gauge("edge_fills_in_flight", "gauge",
                        "Origin fetches being collapsed.", fills)
        lines += _gauge("edge_cache_objects", "gauge",
                        "Objects stored.", objects)
        lines += _gauge("edge_cache_bytes", "gauge",
                        "Body bytes stored on disk.", stored_bytes)
        lines += _gauge("edge_cache_evictions_total", "counter",
                        "Objects evicted to stay under the disk cap.",
                        evictions)
        lines += _gauge("edge_connections", "gauge",
                        "Open client connections.", connections)

        return "\n".join(lines) + "\n"

    def _latency_lines(self) -> list[str]:
        name = "edge_origin_latency_seconds"
        lines = [
            f"# HELP {name} Time to the origin's response headers.",
            f"# TYPE {name} histogram",
        ]
        running = 0
        for bound, count in zip(LATENCY_BUCKETS, self.latency_counts):
            running += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {running}')
        running += self.latency_counts[-1]
        lines.append(f'{name}_bucket{{le="+Inf"}} {running}')
        lines.append(f"{name}_sum {self.latency_sum}")
        lines.append(f"{name}_count {running}")

        return lines


def _gauge(name: str, kind: str, text: str, value: float) -> list[str]:
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value}"]
