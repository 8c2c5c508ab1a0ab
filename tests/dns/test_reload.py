"""Reload without blocking queries: a single process loads the new state
in a thread and swaps it in on the reactor thread; a supervisor keeps
the workers' edge states to seed the workers it forks."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet import task

from dnsrouter.errors import ConfigError
from dnsrouter.health import EdgeHealth, HealthChecker, HealthConfig
from dnsrouter.routing import Router
from dnsrouter.server import ResponderSlot
from dnsrouter.service import _Live, _responder, serve, start_reload
from dnsrouter.state import ServingState, load_state
from dnsrouter.supervisor import Supervisor, _Channel
from tests.routing.helpers import CASES_TOML, write_config


class QueuedPool:
    """A thread pool that runs nothing until the test says so."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Any, Any, tuple[Any, ...]]] = []

    def callInThreadWithCallback(self, on_result: Any, f: Any, *args: Any) -> None:
        self.jobs.append((on_result, f, args))

    def finish_next(self) -> None:
        """Run the oldest job as its thread would, then report it."""
        on_result, f, args = self.jobs.pop(0)
        try:
            on_result(True, f(*args))
        except Exception as error:  # reported like a thread's failure
            from twisted.python.failure import Failure

            on_result(False, Failure(error))


class FakeReactor(task.Clock):
    """A Clock with a queued thread pool; callFromThread runs at once."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = QueuedPool()

    def getThreadPool(self) -> QueuedPool:
        return self.pool

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


def live_service(tmp_path: Path) -> tuple[_Live, str, FakeReactor]:
    path = str(write_config(tmp_path, CASES_TOML))
    reactor = FakeReactor()
    state = load_state(path)
    router = Router.from_state(state, reactor)

    return _Live(state, router, ResponderSlot(_responder(state, router))), path, reactor


def test_reload_loads_in_the_thread_pool_and_swaps_on_the_reactor(
    tmp_path: Path,
) -> None:
    """While the load runs the old responder keeps answering; a second
    SIGHUP meanwhile queues one more load; each load swaps when done."""
    live, path, reactor = live_service(tmp_path)
    first = live.slot.current
    loads: list[str] = []

    def load(config_path: str) -> ServingState:
        loads.append(config_path)
        return load_state(config_path)

    start_reload(live, path, reactor, load)
    again = start_reload(live, path, reactor, load)
    assert (loads, live.slot.current, again) == ([], first, None)

    reactor.pool.finish_next()
    second = live.slot.current
    assert loads == [path] and second is not first
    assert len(reactor.pool.jobs) == 1   # the SIGHUP that came meanwhile

    reactor.pool.finish_next()
    assert live.slot.current is not second and not live.loading


def test_failed_load_in_the_thread_keeps_the_old_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bad config found by the thread is one error line; nothing swaps."""
    live, path, reactor = live_service(tmp_path)
    first, state = live.slot.current, live.state

    def load(config_path: str) -> ServingState:
        raise ConfigError(f"{config_path}: server.listen: expected a list")

    start_reload(live, path, reactor, load)
    reactor.pool.finish_next()

    assert (live.slot.current, live.state, live.loading) == (first, state, False)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        f"reload rejected, old config keeps serving: {path}: server.listen: "
        "expected a list"
    ]


def test_supervisor_keeps_worker_edge_states_to_seed_new_workers(
    tmp_path: Path,
) -> None:
    """An edge state sent up the pipe by a worker is what a health
    checker built from the supervisor's table starts with."""
    state = load_state(str(write_config(tmp_path, CASES_TOML)))
    supervisor = Supervisor("router.toml", state, [], serve)
    edge = state.config.edges[0]
    down = EdgeHealth(up=False, probed=True, detail="connection refused")
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)

    _Channel(write_end).health((edge.health_url, None, edge.check), down)
    for fd in (supervisor._pipe_r, supervisor._pipe_w, supervisor._wake_r,
               supervisor._wake_w):
        os.close(fd)
    supervisor._pipe_r = read_end
    supervisor._read_messages()
    checker = HealthChecker(
        None, state.config.edges, HealthConfig(), lambda *_: None,
        prober=lambda _: None, seed=supervisor.health,  # type: ignore[arg-type]
    )

    assert checker.states()[edge.name] == down
    assert checker.states()[state.config.edges[1].name] == EdgeHealth()
    os.close(write_end)
    os.close(read_end)


def test_netmap_change_is_parsed_in_the_pool_and_swapped_on_the_reactor(
    tmp_path: Path,
) -> None:
    """A changed netmap file is read by a pool thread; until it is done
    the old map decides, and one poll at a time reads."""
    netmap = tmp_path / "netmap.txt"
    netmap.write_text("198.51.100.0/24 ap\n")
    body = CASES_TOML.replace("[routing]", '[routing]\nnetmap_file = "netmap.txt"')
    reactor = FakeReactor()
    router = Router.from_state(load_state(str(write_config(tmp_path, body))), reactor)
    netmap.write_text("198.51.100.0/24 us\n")
    os.utime(netmap, ns=(1, 10**18))

    pending = router.poll_netmap()
    second = router.poll_netmap()
    old_pop = router.netmap.entries[0].pop
    reactor.pool.finish_next()

    assert (old_pop, second.result) == ("ap", False)  # type: ignore[attr-defined]
    assert pending.result is True  # type: ignore[attr-defined]
    assert router.netmap.entries[0].pop == "us"


@pytest.mark.parametrize(
    ("new_workers", "ready", "after", "retired"),
    [
        # A new worker's ready message retires one old worker at once.
        ([0.0], True, 0.0, 1),
        # Reloaded 11 s ago, but the new worker (restarted) is 2 s old
        # and not ready: the old ones keep serving.
        ([2.0], False, 11.0, 0),
        # Silent but alive past the timeout: its message was lost.
        ([11.0], False, 11.0, 2),
        # Every new worker died: the old ones keep serving, however long.
        ([], False, 60.0, 0),
    ],
)
def test_old_workers_retire_as_new_ones_prove_they_serve(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    new_workers: list[float],
    ready: bool,
    after: float,
    retired: int,
) -> None:
    """Bookkeeping of a reload `after` seconds ago with two old workers
    (pids 1 and 2): which get SIGTERM, given the new workers' ages in
    seconds and a ready message from the first."""
    from dnsrouter import supervisor as module

    state = load_state(str(write_config(tmp_path, CASES_TOML)))
    supervisor = Supervisor("router.toml", state, [], serve)
    signalled: list[int] = []
    monkeypatch.setattr(module, "_signal", lambda pid, _: signalled.append(pid))
    now = module.time.monotonic()
    supervisor.generation = 1
    supervisor.generation_started = now - after
    supervisor.children = {
        1: module._Worker(0, now - 100), 2: module._Worker(0, now - 100),
    }
    for index, age in enumerate(new_workers):
        supervisor.children[10 + index] = module._Worker(1, now - age)

    if ready:
        supervisor._ready(10)
    supervisor._retire_overdue()

    assert len(signalled) == retired and set(signalled) <= {1, 2}
    for fd in (supervisor._pipe_r, supervisor._pipe_w, supervisor._wake_r,
               supervisor._wake_w):
        os.close(fd)
