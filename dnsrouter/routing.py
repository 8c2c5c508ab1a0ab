"""The Router: answers for CDN names from decisions, health and load.

A query goes through four named steps:

1. client: the ECS address when the query has one that may be used (ECS
   enabled, resolver trusted, SOURCE > 0), else the resolver's address;
2. decision: the PoP preference list and ECS scope for that address
   (decision.py), cached per client network in a bounded table;
3. selection: the first PoP on the list with edges of the asked family
   that take new clients; a PoP whose edges are all full keeps the share of
   new clients it has room for and spills the rest to the next PoP;
4. answer: up to N of that PoP's edges, rotated (or chosen by consistent
   hashing of the query name), weighted (pools.py).

Policy when nothing takes new clients anywhere: fail open. The nearest
PoP (on the client's list) that has edges of the family answers with its
configured edges, with the short `fail_open_ttl`, and the event is logged
and counted: a stale address beats an outage, and the short TTL brings
resolvers back soon. A name with no edge of the asked family at all gets an
empty answer, which the server turns into NODATA with SOA.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, task, threads
from twisted.python.failure import Failure

from dnsrouter.config import CdnConfig, EdgeConfig, RouterConfig, is_trusted_resolver
from dnsrouter.decision import Decider, Decision, PopRanker
from dnsrouter.ecs import ClientSubnet
from dnsrouter.errors import ConfigError
from dnsrouter.geoip import GeoDatabase
from dnsrouter.health import EdgeHealth, HealthChecker, ProbeKey, ProbeResult
from dnsrouter.netmap import NetmapFile, NetworkMap, load_netmap, merge_entries
from dnsrouter.pools import EdgePool
from dnsrouter.state import ServingState

log = logging.getLogger("dnsrouter.routing")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Prober = Callable[[EdgeConfig], defer.Deferred[ProbeResult]]

QTYPE_A = 1
QTYPE_AAAA = 28

# How often the netmap file's modification time is checked.
NETMAP_POLL_SECONDS = 5.0

# Widening a scope walks the database (up to 0.7 ms). While serving, a new
# network is answered at once with its unwidened (true, narrower) scope and
# widened in the background: at most WIDEN_BATCH every WIDEN_INTERVAL
# seconds, about 15 % of a core at worst, so a flood of random ECS subnets
# cannot make every query pay for a walk. The queue is bounded; networks
# beyond it simply keep their narrower scope until decided again.
WIDEN_INTERVAL = 0.1
WIDEN_BATCH = 20
WIDEN_QUEUE_MAX = 4096


@dataclass(frozen=True)
class RouteAnswer:
    """What to put in the answer section for one CDN query."""

    addresses: tuple[str, ...]  # textual IPs of the asked family; empty: NODATA
    ttl: int
    scope_prefix: int           # ECS scope to echo (0 when not client dependent)
    failed_open: bool = False   # nothing took clients: configured edges given


class Router:
    """Routes CDN names; all methods run on the reactor thread."""

    def __init__(
        self,
        config: RouterConfig,
        reactor: Any,
        geo: GeoDatabase,
        prober: Prober | None = None,
        rng: random.Random | None = None,
        netmap: tuple[NetworkMap, NetmapFile | None] | None = None,
        health_seed: Mapping[ProbeKey, EdgeHealth] | None = None,
    ) -> None:
        """`netmap`: the map and watched file already loaded (else read
        now); `health_seed`: edge states by probe, known from before."""
        self.reactor = reactor
        self.counters: collections.Counter[str] = collections.Counter()
        self._fail_open_since: set[tuple[str, int]] = set()
        self._netmap_loop: task.LoopingCall | None = None
        self._netmap_reading = False
        self._widen_loop: task.LoopingCall | None = None
        self._rng = rng or random.Random()
        # Told of every edge state change (a worker passes them on).
        self.on_health: Callable[[ProbeKey, EdgeHealth], None] | None = None
        self.health = HealthChecker(
            reactor, config.edges, config.health, self._health_changed,
            prober=prober, rng=self._rng, seed=health_seed,
        )
        self._install(config, geo, *(netmap or load_netmap(config)))

    @classmethod
    def from_config(
        cls,
        config: RouterConfig,
        reactor: Any,
        geo: GeoDatabase | None = None,
        prober: Prober | None = None,
        rng: random.Random | None = None,
    ) -> Router:
        """Build a router; opens the GeoIP database (blocking file I/O).

        Raises GeoIPError or ConfigError (a bad netmap file).
        """
        if geo is None:
            geo = GeoDatabase(config.geoip.database)

        return cls(config, reactor, geo, prober=prober, rng=rng)

    @classmethod
    def from_state(
        cls,
        state: ServingState,
        reactor: Any,
        health_seed: Mapping[ProbeKey, EdgeHealth] | None = None,
    ) -> Router:
        """A router over an already loaded state; no file I/O."""
        return cls(
            state.config, reactor, state.geo,
            netmap=(state.netmap, state.netmap_file), health_seed=health_seed,
        )

    # Lifecycle

    def start(self) -> None:
        """Start health checks, background scope widening and, with a
        netmap file, its change polling, all on the reactor."""
        self.health.start()
        self._start_netmap_polling()
        self._widen_loop = task.LoopingCall(self.widen_pending)
        self._widen_loop.clock = self.reactor
        self._widen_loop.start(WIDEN_INTERVAL, now=False)

    def stop(self) -> None:
        """Stop every timer and probe; the router still answers queries."""
        self.health.stop()
        self.stop_netmap_polling()
        if self._widen_loop is not None and self._widen_loop.running:
            self._widen_loop.stop()
        self._widen_loop = None

    def reload(self, config: RouterConfig, geo: GeoDatabase | None = None) -> None:
        """Adopt a new configuration atomically, or raise and change nothing.

        Health state and counters survive for edges whose probe did not
        change. The GeoIP database is reopened (it may have been replaced
        on disk). Raises GeoIPError or ConfigError.
        """
        opened = geo is None
        if geo is None:
            geo = GeoDatabase(config.geoip.database)
        try:
            netmap, watched = load_netmap(config)
        except ConfigError:
            if opened:
                geo.close()
            raise
        self._adopt(config, geo, (netmap, watched))

    def reload_state(self, state: ServingState) -> None:
        """Adopt an already loaded state; no I/O, never raises."""
        self._adopt(state.config, state.geo, (state.netmap, state.netmap_file))

    def _adopt(
        self,
        config: RouterConfig,
        geo: GeoDatabase,
        netmap: tuple[NetworkMap, NetmapFile | None],
    ) -> None:
        self.stop_netmap_polling()
        self.health.reload(config.edges, config.health)
        old_geo = self.geo
        self._install(config, geo, *netmap)
        if old_geo is not geo:
            old_geo.close()
        if self.health.running:
            self._start_netmap_polling()
        log.info("routing reloaded: %d PoPs, %d edges", len(config.pops),
                 len(config.edges))

    def _start_netmap_polling(self) -> None:
        if self._netmap_file is None:
            return
        self._netmap_loop = task.LoopingCall(self.poll_netmap)
        self._netmap_loop.clock = self.reactor
        self._netmap_loop.start(NETMAP_POLL_SECONDS, now=False)

    def stop_netmap_polling(self) -> None:
        """Stop watching the netmap file (reload starts it again)."""
        if self._netmap_loop is not None and self._netmap_loop.running:
            self._netmap_loop.stop()
        self._netmap_loop = None

    def poll_netmap(self) -> defer.Deferred[bool]:
        """Re-read the netmap file if it changed; fires True when adopted.

        The file is read and parsed in the reactor's thread pool (a map
        of 200,000 lines takes seconds) and swapped in on the reactor
        thread; a reload meanwhile wins. A bad file is logged and the
        previous map keeps deciding.
        """
        watched = self._netmap_file
        if watched is None or self._netmap_reading or not watched.has_changed():
            return defer.succeed(False)
        self._netmap_reading = True
        config = self.config
        read = self._in_thread(_read_netmap, config, watched)
        read.addCallback(self._netmap_read, config, watched)
        read.addErrback(self._netmap_failed)

        return read

    def _in_thread(self, f: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        """Run `f` in the reactor's thread pool; inline on a reactor that
        has none (task.Clock in tests)."""
        pool = getattr(self.reactor, "getThreadPool", None)
        if pool is None:
            return defer.maybeDeferred(f, *args)

        return threads.deferToThreadPool(self.reactor, pool(), f, *args)

    def _netmap_read(
        self, netmap: NetworkMap, config: RouterConfig, watched: NetmapFile
    ) -> bool:
        self._netmap_reading = False
        if self.config is not config or self._netmap_file is not watched:
            return False  # a reload replaced both while we read
        self._set_netmap(netmap)
        log.info("netmap reloaded from %s: %d entries", watched.path, len(netmap))

        return True

    def _netmap_failed(self, failure: Failure) -> bool:
        self._netmap_reading = False
        if failure.check(ConfigError):
            log.error("netmap not reloaded: %s", failure.value)
        else:
            log.error(
                "netmap not reloaded: unexpected error",
                exc_info=(failure.type, failure.value, failure.getTracebackObject()),
            )

        return False

    # Queries

    def is_cdn_name(self, qname: str) -> bool:
        """True for a configured CDN name (absolute, lower-case)."""
        return qname in self._cdns

    def route(
        self,
        qname: str,
        qtype: int,
        resolver: IPAddress,
        subnet: ClientSubnet | None,
    ) -> RouteAnswer:
        """The answer for an A (1) or AAAA (28) query of a CDN name.

        Never raises for a configured name; cheap when the client's network
        has been seen before (one dict lookup for the decision).
        """
        cdn = self._cdns.get(qname)
        family = 6 if qtype == QTYPE_AAAA else 4
        if cdn is None:
            return RouteAnswer((), self.config.routing.ttl, 0)
        address, uses_ecs = self.client_address(resolver, subnet)
        decision = self.decision_for(address)

        order = decision.pops or self._default_orders[cdn.name]
        addresses, failed_open = self._select(cdn, order, family, qname)
        scope = decision.scope if uses_ecs and addresses else 0
        routing = self.config.routing
        ttl = routing.fail_open_ttl if failed_open else routing.ttl

        return RouteAnswer(addresses, ttl, scope, failed_open)

    def client_address(
        self, resolver: IPAddress, subnet: ClientSubnet | None
    ) -> tuple[IPAddress, bool]:
        """The address that stands for the client, and whether it is ECS.

        RFC 7871 section 7.1.2: SOURCE 0 asks that no address be used, so
        the resolver's address decides and the scope is 0.
        """
        if resolver.version == 6 and resolver.ipv4_mapped is not None:
            # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
            resolver = resolver.ipv4_mapped
        if (
            subnet is None
            or subnet.source_prefix == 0
            or self.config.routing.ecs != "use"
            or not self._is_trusted(resolver)
        ):
            return resolver, False

        return subnet.network.network_address, True

    def decision_for(self, address: IPAddress) -> Decision:
        """The cached decision for a client address.

        Two bounded tables: one by exact client address, and one by scope
        block, so that a new address inside a block already decided costs a
        few dict probes instead of a database walk. A decision found by
        block keeps the block's scope, which is true for every address in
        it; its `block` and `record` describe the address first decided.
        """
        version, value = address.version, int(address)
        key = (version, value)
        decision = self._cache.get(key)
        if decision is not None:
            self.counters["decision_cache_hit"] += 1
            return decision
        decision = self._find_by_block(version, value)
        if decision is None:
            self.counters["decision_cache_miss"] += 1
            later = self._widen_loop is not None
            decision = self._decider.decide(address, widen=not later)
            self._remember_block(version, value, decision)
            if later and len(self._widen_queue) < WIDEN_QUEUE_MAX:
                self._widen_queue[key] = address
        else:
            self.counters["decision_block_hit"] += 1
        _bounded_put(self._cache, key, decision, self.config.routing.cache_size)

        return decision

    def decide_uncached(self, address: IPAddress) -> Decision:
        """A fresh, fully widened decision, for `explain`; the caches are
        neither read nor written."""
        return self._decider.decide(address)

    def widen_pending(self) -> int:
        """Widen the scopes of up to WIDEN_BATCH recently decided networks;
        returns how many. Called from a timer while the router runs."""
        done = 0
        while self._widen_queue and done < WIDEN_BATCH:
            key = next(iter(self._widen_queue))
            address = self._widen_queue.pop(key)
            decision = self._decider.decide(address)
            if key in self._cache:
                self._cache[key] = decision
            self._remember_block(key[0], key[1], decision)
            done += 1
        self.counters["decision_widened"] += done

        return done

    def _find_by_block(self, version: int, value: int) -> Decision | None:
        bits = 32 if version == 4 else 128
        for scope in self._block_scopes[version]:
            start = value >> (bits - scope) << (bits - scope)
            decision = self._blocks.get((version, start, scope))
            if decision is not None:
                return decision

        return None

    def _remember_block(self, version: int, value: int, decision: Decision) -> None:
        bits = 32 if version == 4 else 128
        scope = decision.scope
        start = value >> (bits - scope) << (bits - scope)
        size = self.config.routing.cache_size
        _bounded_put(self._blocks, (version, start, scope), decision, size)
        scopes = self._block_scopes[version]
        if scope not in scopes:
            # Widest first: the first block found gives the widest scope.
            self._block_scopes[version] = sorted([*scopes, scope])

    def whoami_text(
        self, resolver: IPAddress, subnet: ClientSubnet | None
    ) -> list[str]:
        """TXT strings for the whoami debug name: what the server saw."""
        ecs = "none" if subnet is None else (
            f"{subnet.network.network_address}/{subnet.source_prefix}"
            if subnet.source_prefix else f"family {subnet.family} source 0"
        )
        address, uses_ecs = self.client_address(resolver, subnet)
        used = "ecs" if uses_ecs else "resolver"
        if subnet is not None and not uses_ecs and subnet.source_prefix:
            used += f" (ecs {self._ecs_refusal(resolver)})"

        return [f"resolver {resolver}", f"ecs {ecs}", f"client {address} from {used}"]

    def health_states(self) -> dict[str, EdgeHealth]:
        """Every edge's current health, by edge name."""
        return self.health.states()

    # Internals

    def _ecs_refusal(self, resolver: IPAddress) -> str:
        if self.config.routing.ecs != "use":
            return "ignored by configuration"

        return "ignored: resolver not in ecs_trusted"

    def _install(
        self,
        config: RouterConfig,
        geo: GeoDatabase,
        netmap: NetworkMap,
        watched: NetmapFile | None,
    ) -> None:
        self.config = config
        self.geo = geo
        self._netmap_file = watched
        self._is_trusted = is_trusted_resolver(config.routing.ecs_trusted)
        self._cdns: dict[str, CdnConfig] = {cdn.name: cdn for cdn in config.cdns}
        self.ranker = PopRanker(config.pops)
        self._default_orders = {
            cdn.name: self.ranker.from_pop(cdn.default_pop) for cdn in config.cdns
        }
        self._set_netmap(netmap)
        self._fail_open_since.clear()
        self._rebuild_pools()

    def _set_netmap(self, netmap: NetworkMap) -> None:
        self.netmap = netmap
        self._decider = Decider(
            self.geo, netmap, self.ranker, dict(self.config.geoip.country_pops)
        )
        self._cache: dict[tuple[int, int], Decision] = {}
        self._blocks: dict[tuple[int, int, int], Decision] = {}
        self._block_scopes: dict[int, list[int]] = {4: [], 6: []}
        self._widen_queue: dict[tuple[int, int], IPAddress] = {}

    def _health_changed(self, name: str, health: EdgeHealth) -> None:
        self._rebuild_pools()
        if self.on_health is not None:
            self.on_health(self.health.probe_key_of(name), health)

    def _rebuild_pools(self) -> None:
        states = self.health.states()
        pools: dict[tuple[str, int], EdgePool] = {}
        for pop in self.config.pops:
            edges = [e for e in self.config.edges if e.pop == pop.name]
            for family in (4, 6):
                members = tuple(
                    e for e in edges if (e.ipv4 if family == 4 else e.ipv6)
                )
                if members:
                    pools[(pop.name, family)] = EdgePool.build(
                        family, members, states
                    )
        previous = getattr(self, "_pools", {})
        for key, pool in pools.items():
            old = previous.get(key)
            if old is not None:
                pool.cursor = old.cursor
                pool.credit = old.credit
        self._pools = pools
        self._note_recovery()

    def _note_recovery(self) -> None:
        for key in list(self._fail_open_since):
            cdn, family = key
            if any(p.usable for (_, f), p in self._pools.items() if f == family):
                self._fail_open_since.discard(key)
                log.info("fail open ended: cdn=%s family=IPv%d", cdn, family)

    def _select(
        self, cdn: CdnConfig, order: tuple[str, ...], family: int, qname: str
    ) -> tuple[tuple[str, ...], bool]:
        routing = self.config.routing
        by_hash = routing.edge_selection == "qname-hash"
        for position, pop in enumerate(order):
            pool = self._pools.get((pop, family))
            if pool is None or not (pool.usable or pool.full):
                continue
            # A full PoP spills only towards room: with no PoP further down
            # the list that takes clients, it keeps them all.
            if (
                pool.usable
                or not self._has_room(order[position + 1:], family)
                or pool.keeps_next()
            ):
                return pool.pick(routing.answers, qname, by_hash), False
            self.counters["spilled"] += 1

        return self._fail_open(cdn, order, family)

    def _has_room(self, pops: tuple[str, ...], family: int) -> bool:
        for pop in pops:
            pool = self._pools.get((pop, family))
            if pool is not None and pool.usable:
                return True

        return False

    def _fail_open(
        self, cdn: CdnConfig, order: tuple[str, ...], family: int
    ) -> tuple[tuple[str, ...], bool]:
        for pop in order:
            pool = self._pools.get((pop, family))
            if pool is None:
                continue
            self.counters["fail_open"] += 1
            key = (cdn.name, family)
            if key not in self._fail_open_since:
                self._fail_open_since.add(key)
                log.warning(
                    "fail open: cdn=%s family=IPv%d pop=%s (no edge takes "
                    "clients; answering with configured edges)",
                    cdn.name, family, pop,
                )
            limit = self.config.routing.answers
            addresses = tuple(pool.address(e) for e in pool.configured)

            return addresses[:limit], True

        return (), False


def _read_netmap(config: RouterConfig, watched: NetmapFile) -> NetworkMap:
    """The config's map with the file read now; blocks on file I/O."""
    return merge_entries(config.netmap, watched.read(), str(config.path))


def _bounded_put(
    table: dict[Any, Decision], key: Any, value: Decision, size: int
) -> None:
    if len(table) >= size:
        # Oldest insertion goes first: cheaper than LRU bookkeeping on
        # every hit, and a busy network is simply decided again.
        del table[next(iter(table))]
    table[key] = value
