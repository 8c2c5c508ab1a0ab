"""Health probe interpretation, hysteresis and scheduling on a fake clock."""

from __future__ import annotations

import json
import logging
import random

import pytest
from twisted.internet import defer, task
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone

from dnsrouter.config import EdgeConfig, HealthConfig
from dnsrouter.health import (
    EdgeHealth,
    EdgeMonitor,
    HealthChecker,
    HttpProber,
    ProbeResult,
    classify_http,
)

from .helpers import DOWN, UP, FakeProber

OK = tuple(range(200, 300))
REPORT = {
    "status": "up", "draining": False, "connections": 3,
    "max_connections": 1000, "bytes_per_second": 1234.5, "overloaded": False,
    "cache": {"objects": 10},
}


def body(**changes: object) -> bytes:
    return json.dumps({**REPORT, **changes}).encode()


@pytest.mark.parametrize(
    ("status", "payload", "ok", "draining", "full"),
    [
        (200, body(), True, False, False),
        (200, b"OK", True, False, False),                 # non-JSON 200
        (200, body(draining=True), True, True, False),
        (503, body(status="draining", draining=True), True, True, False),
        (503, b"Service Unavailable", False, False, False),
        (200, body(overloaded=True), True, False, True),
        (200, body(connections=1000), True, False, True),  # at its limit
        (200, body(status="down"), False, False, False),
        (301, b"", False, False, False),                   # 3xx is a failure
        (500, body(), False, False, False),
    ],
)
def test_http_reply_classification(status, payload, ok, draining, full):
    """Each status/body pair maps to healthy, draining, full or failed."""
    result = classify_http(status, payload, OK)

    monitor = EdgeMonitor(3, 2)
    monitor.record(result)

    assert result.ok is ok
    assert monitor.health.draining is draining
    assert monitor.health.is_full is full


def test_load_figures_are_kept_from_the_report():
    """connections, max_connections and bytes_per_second reach routing."""
    result = classify_http(200, body(), OK)

    assert (result.connections, result.max_connections) == (3, 1000)
    assert result.bytes_per_second == 1234.5


@pytest.mark.parametrize(
    ("results", "expected_up"),
    [
        ("", True),              # assumed up before any result
        ("F", False),            # the first result decides directly
        ("SF", True),
        ("SFF", True),
        ("SFFF", False),         # fall = 3
        ("SFFFS", False),
        ("SFFFSS", True),        # rise = 2
        ("SFSFSFSF", True),      # flapping never reaches fall
        ("SFFSFF", True),
    ],
)
def test_hysteresis_table(results: str, expected_up: bool):
    """fall=3 failures to go down, rise=2 successes to come back."""
    monitor = EdgeMonitor(fall=3, rise=2)

    for letter in results:
        monitor.record(UP if letter == "S" else DOWN)

    assert monitor.health.up is expected_up
    assert monitor.health.probed is bool(results)


def edge(name: str, url: str | None = None) -> EdgeConfig:
    return EdgeConfig(
        name, "eu", "192.0.2.21", None, url or f"http://192.0.2.21/{name}"
    )


def checker(config: HealthConfig, *edges: EdgeConfig):
    clock = task.Clock()
    prober = FakeProber()
    changes: list[tuple[str, EdgeHealth]] = []
    health = HealthChecker(
        clock, tuple(edges), config, lambda n, h: changes.append((n, h)),
        prober=prober, rng=random.Random(1),
    )
    return health, clock, prober, changes


def test_jitter_only_shortens_intervals_and_spreads_edges():
    """With 10 % jitter every gap is in [0.9, 1.0] x interval."""
    config = HealthConfig(interval=1.0, timeout=0.5, jitter=0.1)
    health, clock, prober, _ = checker(config, edge("a"), edge("b"))
    health.start()

    times: dict[str, list[float]] = {"a": [], "b": []}
    for _ in range(200):
        clock.advance(0.01)
        while prober.calls:
            times[prober.calls.pop(0)].append(clock.seconds())

    for name, seen in times.items():
        gaps = [b - a for a, b in zip(seen, seen[1:])]
        assert len(seen) >= 2, name
        assert all(0.89 <= gap <= 1.011 for gap in gaps), (name, gaps)
    assert times["a"] != times["b"]


def test_probes_never_overlap_when_one_hangs_past_the_interval():
    """A probe that never answers is timed out, not stacked up."""
    config = HealthConfig(interval=1.0, timeout=1.0, jitter=0.0)
    health, clock, prober, changes = checker(config, edge("a"))
    prober.set("a", None)
    health.start()

    clock.pump([0.5] * 8)

    assert len(prober.calls) <= 5
    assert health.states()["a"].detail == "timeout"


def test_reload_keeps_state_of_unchanged_edges_and_resets_changed_ones():
    """Same URL keeps its down state; a new URL starts assumed up."""
    config = HealthConfig(interval=1.0, timeout=0.5, jitter=0.0)
    health, clock, prober, _ = checker(config, edge("a"), edge("b"))
    prober.set("a", DOWN)
    prober.set("b", DOWN)
    health.start()
    clock.advance(0)

    health.reload((edge("a"), edge("b", "http://192.0.2.22/new")), config)

    states = health.states()
    assert states["a"].up is False and states["a"].probed
    assert states["b"].up is True and not states["b"].probed


def test_stop_cancels_timers_and_ignores_late_results():
    """After stop() no probe runs and no change is reported."""
    config = HealthConfig(interval=1.0, timeout=0.5, jitter=0.0)
    health, clock, prober, changes = checker(config, edge("a"))
    health.start()
    clock.advance(0)
    calls = len(prober.calls)

    health.stop()
    prober.set("a", DOWN)
    clock.pump([1.0] * 5)

    assert len(prober.calls) == calls
    assert clock.getDelayedCalls() == []
    assert health.states()["a"].up


class FakeResponse:
    """Enough of twisted.web's IResponse for HttpProber: a status and a
    body delivered in chunks, then the end of the body."""

    def __init__(self, code: int, body: bytes) -> None:
        self.code = code
        self.body = body

    def deliverBody(self, protocol) -> None:  # noqa: N802 (Twisted's name)
        protocol.makeConnection(None)
        for start in range(0, len(self.body), 7):
            protocol.dataReceived(self.body[start:start + 7])
        protocol.connectionLost(Failure(ResponseDone()))


class FakeAgent:
    def __init__(self, response: FakeResponse) -> None:
        self.response = response
        self.requests: list[tuple[bytes, bytes, object]] = []

    def request(self, method, uri, headers=None, body=None):
        self.requests.append((method, uri, headers))
        return defer.succeed(self.response)


@pytest.mark.parametrize(
    ("code", "payload", "ok", "draining"),
    [
        (200, body(), True, False),
        (503, body(status="draining", draining=True), True, True),
        (503, b"down", False, False),
    ],
)
def test_http_prober_reads_the_body_and_classifies_it(code, payload, ok, draining):
    """GET with the configured Host header; the reply's JSON decides."""
    config = HealthConfig(host="cdn.example.com")
    prober = HttpProber(task.Clock(), config)
    agent = FakeAgent(FakeResponse(code, payload))
    prober.agent = agent  # type: ignore[assignment]
    results: list[ProbeResult] = []

    prober(edge("a")).addCallback(results.append)

    method, uri, headers = agent.requests[0]
    assert (method, uri) == (b"GET", b"http://192.0.2.21/a")
    assert headers.getRawHeaders(b"Host") == [b"cdn.example.com"]
    assert results[0].ok is ok and results[0].draining is draining


def hanging_edge_removal_time(seed: int, hang_at: float) -> float:
    """Seconds from an edge starting to hang until it is reported down,
    with interval 1, timeout 1, fall 3 and 10 % jitter (the lab's)."""
    config = HealthConfig(interval=1.0, timeout=1.0, fall=3, jitter=0.1)
    clock = task.Clock()
    prober = FakeProber()
    down: list[float] = []
    health = HealthChecker(
        clock, (edge("a"),), config,
        lambda n, h: down.append(clock.seconds()) if not h.up else None,
        prober=prober, rng=random.Random(seed),
    )
    health.start()
    clock.pump([0.01] * round(hang_at * 100))
    prober.set("a", None)

    start = clock.seconds()
    while not down and clock.seconds() - start < 20:
        clock.advance(0.01)

    assert down, "a hanging edge was never taken down"
    return down[0] - start


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("hang_at", [2.0, 2.33, 2.71])
def test_hanging_edge_goes_down_within_fall_intervals_plus_timeout(
    seed: int, hang_at: float
):
    """Probes start on a fixed schedule whatever the previous one took, so
    an edge that stops answering (timeout = interval) is down within
    fall x interval + timeout = 4 s, not after a skipped tick per probe."""
    assert hanging_edge_removal_time(seed, hang_at) <= 3 * 1.0 + 1.0 + 0.011


def test_probes_start_every_interval_whatever_the_previous_took():
    """Replies that take 0.7 s do not push the next probe back: with no
    jitter, starts are exactly one interval apart."""
    config = HealthConfig(interval=1.0, timeout=0.9, jitter=0.0)
    clock = task.Clock()
    starts: list[float] = []

    def slow(_edge: EdgeConfig) -> defer.Deferred[ProbeResult]:
        starts.append(clock.seconds())
        reply: defer.Deferred[ProbeResult] = defer.Deferred()
        clock.callLater(0.7, reply.callback, UP)
        return reply

    health = HealthChecker(
        clock, (edge("a"),), config, lambda n, h: None, prober=slow,
        rng=random.Random(1),
    )
    health.start()
    clock.pump([0.25] * 20)  # steps exact in binary: no rounding drift

    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert gaps == pytest.approx([1.0] * 4)


DRAINING = ProbeResult(True, draining=True, detail="HTTP 503 draining")
OVERLOADED = ProbeResult(True, overloaded=True, detail="HTTP 200")
AT_LIMIT = ProbeResult(
    True, connections=1000, max_connections=1000, detail="HTTP 200"
)


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ([DOWN], [("WARNING", "edge down: name=a pop=eu reason=HTTP 503")]),
        ([UP, DOWN, DOWN, DOWN],
         [("WARNING", "edge down: name=a pop=eu reason=HTTP 503")]),
        ([DOWN, UP, UP],
         [("WARNING", "edge down: name=a pop=eu reason=HTTP 503"),
          ("INFO", "edge up: name=a pop=eu reason=HTTP 200")]),
        ([UP, DRAINING, UP],
         [("INFO", "edge draining: name=a pop=eu reason=HTTP 503 draining"),
          ("INFO", "edge draining ended: name=a pop=eu reason=HTTP 200")]),
        ([OVERLOADED, UP],
         [("INFO", "edge overloaded: name=a pop=eu reason=HTTP 200, "
                   "overloaded"),
          ("INFO", "edge overload ended: name=a pop=eu reason=HTTP 200")]),
        ([AT_LIMIT],
         [("INFO", "edge overloaded: name=a pop=eu reason=HTTP 200, "
                   "connections 1000 of 1000")]),
        ([UP, UP, DOWN], []),   # hysteresis holds it up: nothing to say
    ],
)
def test_every_edge_state_transition_is_logged_once(
    results: list[ProbeResult],
    expected: list[tuple[str, str]],
    caplog: pytest.LogCaptureFixture,
):
    """Down is a warning, every other transition (draining, overloaded,
    and back) an info line naming the edge, its PoP and the reason."""
    config = HealthConfig(interval=1.0, timeout=0.5, fall=3, rise=2, jitter=0.0)
    health, clock, prober, _ = checker(config, edge("a"))
    caplog.set_level(logging.INFO, logger="dnsrouter.health")
    health.start()

    for index, result in enumerate(results):
        prober.set("a", result)
        clock.advance(1.0 if index else 0.0)  # one probe each

    lines = [
        (r.levelname, r.getMessage()) for r in caplog.records
        if r.name == "dnsrouter.health"
    ]
    assert lines == expected
