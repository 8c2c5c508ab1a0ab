"""Cost of Router.route on the hot path and of new-network decisions.

Prints microseconds per call for: a repeated client network (decision
cache hit), new networks inside already-decided scope blocks, and new
networks drawn at random from the whole IPv4 space, widened inline (as
`explain` does) and while serving (widening deferred to a timer).
Uses the lab's three PoPs and the GeoLite2 City file; no network, no
reactor (health checks are not started: every edge is assumed up).

    python bench/routing_decisions.py
"""

from __future__ import annotations

import ipaddress
import random
import sys
import tempfile
import time
from pathlib import Path

from twisted.internet import task

from dnsrouter.config import load_config
from dnsrouter.ecs import client_subnet_from_text
from dnsrouter.routing import QTYPE_A, Router

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.routing.helpers import LAB_TOML, write_config  # noqa: E402

RESOLVER = ipaddress.ip_address("192.0.2.1")


def per_call(router: Router, subnets: list, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        for subnet in subnets:
            router.route("cdn.example.com.", QTYPE_A, RESOLVER, subnet)
    return (time.perf_counter() - start) / (len(subnets) * repeat) * 1e6


def main() -> int:
    directory = Path(tempfile.mkdtemp())
    router = Router.from_config(load_config(write_config(directory, LAB_TOML)), None)
    rng = random.Random(1)

    hot = [client_subnet_from_text("141.20.0.0/24")]
    print(f"cached network:          {per_call(router, hot, 100_000):7.2f} us/query")

    router.route("cdn.example.com.", QTYPE_A, RESOLVER, hot[0])
    inside = [
        client_subnet_from_text(f"141.{rng.randrange(16, 24)}.{i % 256}.0/24")
        for i in range(2000)
    ]
    print(f"new /24 in known block:  {per_call(router, inside):7.2f} us/query")

    fresh = [
        client_subnet_from_text(f"{ipaddress.IPv4Address(rng.getrandbits(32))}/24")
        for _ in range(2000)
    ]
    print(f"random new /24, inline:  {per_call(router, fresh):7.2f} us/query")

    serving = Router.from_config(router.config, task.Clock())
    serving.start()
    fresh = [
        client_subnet_from_text(f"{ipaddress.IPv4Address(rng.getrandbits(32))}/24")
        for _ in range(2000)
    ]
    print(f"random new /24, serving: {per_call(serving, fresh):7.2f} us/query "
          "(widening deferred to the background)")
    serving.stop()

    return 0


if __name__ == "__main__":
    sys.exit(main())
