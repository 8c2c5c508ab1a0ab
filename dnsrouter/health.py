"""Health checks of edges: probes on a timer, with fall/rise hysteresis.

Policy, in one place:

* Initial state: every edge is assumed up until its first probe result,
  and that first result sets the state directly (a restarted router hands
  out a dead edge for one probe timeout at most, not for `fall` probes).
  From then on an up edge goes down after `fall` consecutive failures and
  a down edge comes up after `rise` consecutive successes.
* Probes start on a fixed schedule, every `interval` seconds from the
  start of the previous one, whatever that one took; jitter only shortens
  a delay (by up to `jitter` x interval, never below `timeout`), so checks
  of different edges drift apart without ever exceeding the bound "out of
  every answer within fall x interval + timeout". A probe still
  unanswered when the next is due has had its whole timeout: it counts as
  a failure and the next one starts on time, so a hanging edge costs one
  interval per failure, never two.
* An HTTP probe succeeds on a status in `healthy_statuses` (2xx by
  default; 3xx is a failure); the JSON body may declare `draining`,
  `overloaded` and load figures. A 503 whose JSON says status "draining"
  is a draining edge, not a failed one. A 2xx without JSON is healthy with
  no load information. A TCP probe succeeds when a connection opens.
* Draining and overloaded edges are up: they take no new clients, but a
  draining edge is not "down" (its existing clients keep being served).

The state machine (`EdgeMonitor`) is pure bookkeeping; `HealthChecker`
does the timing on an injected reactor, and probers do the I/O, so tests
drive everything with `task.Clock` and fake probers.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import urlsplit

from twisted.internet import defer, error, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    PotentialDataLoss,
    ResponseDone,
)
from twisted.web.http_headers import Headers

from dnsrouter.config import EdgeConfig, HealthConfig

log = logging.getLogger("dnsrouter.health")

# A health reply is a few hundred bytes; anything beyond this is not read.
MAX_HEALTH_BODY = 64 * 1024


@dataclass(frozen=True)
class ProbeResult:
    """What one probe found."""

    ok: bool
    draining: bool = False
    overloaded: bool = False
    connections: int | None = None
    max_connections: int | None = None
    bytes_per_second: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class EdgeHealth:
    """The state routing sees for one edge."""

    up: bool = True
    probed: bool = False          # False: assumed up, no result yet
    draining: bool = False
    overloaded: bool = False
    connections: int | None = None
    max_connections: int | None = None
    bytes_per_second: float | None = None
    detail: str = "not probed yet"

    @property
    def takes_new_clients(self) -> bool:
        """Up, not draining and not over its limits."""
        return self.up and not self.draining and not self.is_full

    @property
    def is_full(self) -> bool:
        """The edge says it is overloaded, or is at its connection limit."""
        if self.overloaded:
            return True
        if self.max_connections and self.connections is not None:
            return self.connections >= self.max_connections

        return False


class EdgeMonitor:
    """Fall/rise hysteresis for one edge; no I/O, no clock."""

    def __init__(self, fall: int, rise: int, health: EdgeHealth | None = None):
        self.fall = fall
        self.rise = rise
        self.health = health or EdgeHealth()
        self.failures = 0
        self.successes = 0

    def record(self, result: ProbeResult) -> bool:
        """Take one probe result; True when the visible state changed."""
        before = self.health
        if result.ok:
            self.successes += 1
            self.failures = 0
        else:
            self.failures += 1
            self.successes = 0
        up = before.up
        if not before.probed:
            up = result.ok
        elif up and self.failures >= self.fall:
            up = False
        elif not up and self.successes >= self.rise:
            up = True
        self.health = _apply(before, result, up)

        return self.health != before


def _apply(before: EdgeHealth, result: ProbeResult, up: bool) -> EdgeHealth:
    if not result.ok:
        # Keep the last load figures: they still describe the edge while
        # hysteresis holds it up.
        return replace(before, up=up, probed=True, detail=result.detail)

    return EdgeHealth(
        up=up,
        probed=True,
        draining=result.draining,
        overloaded=result.overloaded,
        connections=result.connections,
        max_connections=result.max_connections,
        bytes_per_second=result.bytes_per_second,
        detail=result.detail,
    )


def classify_http(
    status: int, body: bytes, healthy_statuses: tuple[int, ...]
) -> ProbeResult:
    """Interpret an HTTP health reply (RFC 9110 section 15 status classes)."""
    report = _json_object(body)
    state = report.get("status") if report else None
    if status in healthy_statuses:
        if state is not None and state not in ("up", "draining"):
            return ProbeResult(False, detail=f"HTTP {status}, status {state!r}")
        return _with_report(report, f"HTTP {status}")
    if status == 503 and report and (state == "draining" or report.get("draining")):
        return _with_report(report, "HTTP 503 draining")

    return ProbeResult(False, detail=f"HTTP {status}")


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None

    return value if isinstance(value, dict) else None


def _with_report(report: dict[str, Any] | None, detail: str) -> ProbeResult:
    if report is None:
        return ProbeResult(True, detail=detail)

    return ProbeResult(
        ok=True,
        draining=report.get("draining") is True or report.get("status") == "draining",
        overloaded=report.get("overloaded") is True,
        connections=_count(report.get("connections")),
        max_connections=_count(report.get("max_connections")),
        bytes_per_second=_rate(report.get("bytes_per_second")),
        detail=detail,
    )


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value

    return None


def _rate(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)

    return None


class Prober(Protocol):
    """Runs one probe of an edge; the Deferred fires with a ProbeResult
    (never errbacks for an edge's own failures) and supports cancel()."""

    def __call__(self, edge: EdgeConfig) -> defer.Deferred[ProbeResult]: ...


class _BoundedBody(protocol.Protocol):
    """Collects at most MAX_HEALTH_BODY bytes of a response body."""

    def __init__(self, finished: defer.Deferred[bytes]) -> None:
        self.finished = finished
        self.chunks: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        if self.size < MAX_HEALTH_BODY:
            self.chunks.append(data)
            self.size += len(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self.finished.called:
            return  # cancelled by the probe timeout
        body = b"".join(self.chunks)[:MAX_HEALTH_BODY]
        complete = reason.check(ResponseDone, PotentialDataLoss)
        if complete or self.size >= MAX_HEALTH_BODY:
            self.finished.callback(body)
        else:
            self.finished.callback(b"")


class HttpProber:
    """GETs each edge's health URL with twisted.web's Agent.

    Each probe opens a fresh connection (no pool reuse), so a probe also
    proves that the edge still accepts connections.
    """

    def __init__(self, reactor: Any, config: HealthConfig) -> None:
        self.reactor = reactor
        self.config = config
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent(reactor, connectTimeout=config.timeout, pool=pool)

    def __call__(self, edge: EdgeConfig) -> defer.Deferred[ProbeResult]:
        host = (
            edge.health_host or self.config.host
            or urlsplit(edge.health_url).netloc
        )
        headers = Headers({b"Host": [host.encode()], b"User-Agent": [b"dnsrouter"]})
        d: defer.Deferred[Any] = self.agent.request(
            b"GET", edge.health_url.encode(), headers
        )
        d.addCallback(self._read)
        d.addErrback(_failed)

        return d

    def _read(self, response: Any) -> defer.Deferred[ProbeResult]:
        def abort(_: object) -> None:
            if body.transport is not None:
                body.transport.stopProducing()

        finished: defer.Deferred[bytes] = defer.Deferred(abort)
        body = _BoundedBody(finished)
        response.deliverBody(body)
        statuses = self.config.healthy_statuses

        return finished.addCallback(
            lambda body: classify_http(response.code, body, statuses)
        )


class TcpProber:
    """Opens a TCP connection to the health URL's host and port."""

    def __init__(self, reactor: Any, config: HealthConfig) -> None:
        self.reactor = reactor
        self.config = config

    def __call__(self, edge: EdgeConfig) -> defer.Deferred[ProbeResult]:
        parts = urlsplit(edge.health_url)
        host = parts.hostname or ""
        port = parts.port or 80
        kind = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
        endpoint = kind(self.reactor, host, port, timeout=self.config.timeout)
        factory: Any = protocol.Factory.forProtocol(protocol.Protocol)
        d: defer.Deferred[Any] = endpoint.connect(factory)

        def connected(proto: Any) -> ProbeResult:
            if proto.transport is not None:
                proto.transport.loseConnection()
            return ProbeResult(True, detail="TCP connect")

        d.addCallback(connected)
        d.addErrback(_failed)

        return d


_TIMEOUTS = (defer.CancelledError, defer.TimeoutError, error.TimeoutError)


def _failed(failure: Failure) -> ProbeResult:
    # twisted.web wraps a cancelled request in ResponseNeverReceived and
    # friends, which carry the underlying failures in `reasons`.
    reasons = getattr(failure.value, "reasons", None) or []
    if failure.check(*_TIMEOUTS) or any(r.check(*_TIMEOUTS) for r in reasons):
        return ProbeResult(False, detail="timeout")
    if failure.check(error.ConnectionRefusedError):
        return ProbeResult(False, detail="connection refused")
    detail = failure.getErrorMessage() or failure.type.__name__

    return ProbeResult(False, detail=detail.splitlines()[0][:200])


def default_prober(reactor: Any, config: HealthConfig) -> Callable[
    [EdgeConfig], defer.Deferred[ProbeResult]
]:
    """A prober that dispatches on each edge's `check` kind."""
    http = HttpProber(reactor, config)
    tcp = TcpProber(reactor, config)

    return lambda edge: tcp(edge) if edge.check == "tcp" else http(edge)


ChangeCallback = Callable[[str, EdgeHealth], None]
ProbeKey = tuple[str, str | None, str]


class _Schedule:
    """The timer and in-flight probe of one monitored edge."""

    def __init__(self, edge: EdgeConfig, monitor: EdgeMonitor) -> None:
        self.edge = edge
        self.monitor = monitor
        self.call: Any = None  # an IDelayedCall while scheduled
        self.probe: defer.Deferred[ProbeResult] | None = None

    def cancel(self) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None
        if self.probe is not None:
            probe, self.probe = self.probe, None
            probe.cancel()


class HealthChecker:
    """Probes every edge on the reactor and reports state changes.

    `on_change(edge_name, health)` is called on the reactor thread whenever
    an edge's EdgeHealth changes. Nothing happens before `start()`.
    """

    def __init__(
        self,
        reactor: Any,
        edges: tuple[EdgeConfig, ...],
        config: HealthConfig,
        on_change: ChangeCallback,
        prober: Callable[[EdgeConfig], defer.Deferred[ProbeResult]] | None = None,
        rng: random.Random | None = None,
        seed: Mapping[ProbeKey, EdgeHealth] | None = None,
    ) -> None:
        """`seed`: states known from before (another process's probes of
        the same edge), by probe_key; an edge absent from it starts in
        the assumed-up state."""
        self.reactor = reactor
        self.config = config
        self.on_change = on_change
        self._owns_prober = prober is None
        self.prober = prober or default_prober(reactor, config)
        self.rng = rng or random.Random()
        self.running = False
        seed = seed or {}
        self._edges: dict[str, _Schedule] = {
            edge.name: _Schedule(
                edge,
                EdgeMonitor(
                    config.fall, config.rise, seed.get(probe_key(edge, config.host))
                ),
            )
            for edge in edges
        }

    def probe_key_of(self, name: str) -> ProbeKey:
        """The probe_key of a monitored edge; KeyError when unknown."""
        return probe_key(self._edges[name].edge, self.config.host)

    def states(self) -> dict[str, EdgeHealth]:
        """The current health of every edge, by name."""
        return {name: s.monitor.health for name, s in self._edges.items()}

    def start(self) -> None:
        """Schedule the first probe of every edge within a jitter window."""
        self.running = True
        for schedule in self._edges.values():
            self._schedule(schedule, self._jitter_delay(first=True))

    def stop(self) -> None:
        """Cancel timers and in-flight probes; results are no longer taken."""
        self.running = False
        for schedule in self._edges.values():
            schedule.cancel()

    def reload(
        self,
        edges: tuple[EdgeConfig, ...],
        config: HealthConfig,
        prober: Callable[[EdgeConfig], defer.Deferred[ProbeResult]] | None = None,
    ) -> None:
        """Adopt a new edge list; unchanged edges keep state and counters.

        An edge is unchanged when its name and everything that shapes its
        probe (URL, Host header, check kind) are the same.
        """
        old = self._edges
        old_host = self.config.host
        self.config = config
        if prober is not None:
            self.prober = prober
        elif self._owns_prober:
            # Timeout, healthy statuses and Host may have changed.
            self.prober = default_prober(self.reactor, config)
        fresh: dict[str, _Schedule] = {}
        for edge in edges:
            previous = old.pop(edge.name, None)
            if previous is not None and _same_probe(
                previous.edge, old_host, edge, config.host
            ):
                previous.edge = edge
                previous.monitor.fall = config.fall
                previous.monitor.rise = config.rise
                fresh[edge.name] = previous
                continue
            if previous is not None:
                previous.cancel()
            schedule = _Schedule(edge, EdgeMonitor(config.fall, config.rise))
            fresh[edge.name] = schedule
            if self.running:
                self._schedule(schedule, self._jitter_delay(first=True))
        for gone in old.values():
            gone.cancel()
        self._edges = fresh

    def _jitter_delay(self, first: bool = False) -> float:
        interval = self.config.interval
        if first:
            # Spread the first round over the jitter window only, so the
            # assumed-up period after a start stays short.
            return self.rng.uniform(0, interval * self.config.jitter)

        # Never below the timeout, so a probe always gets all of it.
        shortened = interval * (1 - self.rng.uniform(0, self.config.jitter))

        return max(shortened, self.config.timeout)

    def _schedule(self, schedule: _Schedule, delay: float) -> None:
        schedule.call = self.reactor.callLater(delay, self._probe, schedule)

    def _probe(self, schedule: _Schedule) -> None:
        schedule.call = None
        if not self.running or self._edges.get(schedule.edge.name) is not schedule:
            return
        self._schedule(schedule, self._jitter_delay())
        if schedule.probe is not None:
            # Due at its timeout (the gap is never shorter): record it as
            # timed out now rather than skip a tick, and never overlap.
            schedule.probe.cancel()
        if not self.running or self._edges.get(schedule.edge.name) is not schedule:
            return  # the recorded failure stopped or reloaded the checker
        d = self.prober(schedule.edge)
        schedule.probe = d
        d.addTimeout(self.config.timeout, self.reactor)
        d.addErrback(_failed)
        d.addCallback(self._result, schedule, d)

    def probe_all_once(self) -> defer.Deferred[Any]:
        """Probe every edge once now, outside the timer, and record the
        results; fires when all are in. For `dnsrouter explain --probe`."""
        probes = []
        for schedule in self._edges.values():
            d = self.prober(schedule.edge)
            d.addTimeout(self.config.timeout, self.reactor)
            d.addErrback(_failed)
            d.addCallback(self._record, schedule)
            probes.append(d)

        return defer.DeferredList(probes)

    def _result(
        self,
        result: ProbeResult,
        schedule: _Schedule,
        probe: defer.Deferred[ProbeResult],
    ) -> None:
        if schedule.probe is not probe:
            return  # cancelled by stop() or reload()
        schedule.probe = None
        if not self.running or self._edges.get(schedule.edge.name) is not schedule:
            return
        self._record(result, schedule)

    def _record(self, result: ProbeResult, schedule: _Schedule) -> None:
        before = schedule.monitor.health
        if schedule.monitor.record(result):
            health = schedule.monitor.health
            edge = schedule.edge
            for event, reason in transitions(before, health):
                # Down is a warning an operator acts on; the rest is news.
                level = logging.WARNING if event == "down" else logging.INFO
                log.log(
                    level, "edge %s: name=%s pop=%s reason=%s",
                    event, edge.name, edge.pop, reason,
                )
            self.on_change(edge.name, health)


def transitions(
    before: EdgeHealth, after: EdgeHealth
) -> list[tuple[str, str]]:
    """The events an operator is told of between two states of one edge,
    as (event, reason) pairs: down, up, draining, draining ended,
    overloaded, overload ended. Hysteresis that holds a failing edge up
    is not an event."""
    events = []
    if before.up != after.up:
        events.append(("up" if after.up else "down", after.detail))
    if before.draining != after.draining:
        event = "draining" if after.draining else "draining ended"
        events.append((event, after.detail))
    if before.is_full != after.is_full:
        if not after.is_full:
            events.append(("overload ended", after.detail))
        elif after.overloaded:
            events.append(("overloaded", f"{after.detail}, overloaded"))
        else:
            figures = f"connections {after.connections} of {after.max_connections}"
            events.append(("overloaded", f"{after.detail}, {figures}"))

    return events


def probe_key(edge: EdgeConfig, default_host: str | None) -> ProbeKey:
    """What shapes an edge's probe: URL, Host header, check kind. Two
    edges with the same key are probed alike, so share one health."""
    return (edge.health_url, edge.health_host or default_host, edge.check)


def _same_probe(
    a: EdgeConfig, a_host: str | None, b: EdgeConfig, b_host: str | None
) -> bool:
    return probe_key(a, a_host) == probe_key(b, b_host)
