"""The parent of the worker processes: forks, restarts, reloads.

The supervisor holds the state in force and the bound sockets, and
serves nothing itself. Every worker is forked from that state, so a
worker started again after a crash serves exactly what the others
serve, whatever the files on disk say meanwhile, and never fails to
start because of them.

Reload (SIGHUP): the supervisor loads the new state (blocking only
itself, never a serving process); if it fails, the error is logged and
nothing changes. Otherwise it forks a new generation of workers from it
and, as each reports ready, stops one worker of the old generation
(SIGTERM; old ones still running RETIRE_TIMEOUT after the reload are
stopped anyway once a new one has served that long, but never while no
new worker manages to start). The sockets stay open throughout, so no
query is refused: one that arrives while workers change waits in the
socket for whichever worker reads first. TCP connections open on a
stopped worker are closed (RFC 7766 section 6.2.3 lets a server close).

Health: workers send every edge state change up a pipe; the supervisor
keeps the latest per probe and hands it to each worker it forks, so a
new worker does not hand out an edge known to be down.

A worker that dies unexpectedly is started again after a delay that
grows while workers keep dying soon after they start (RestartBackoff);
the others keep serving meanwhile.
"""

from __future__ import annotations

import dataclasses
import errno
import gc
import json
import logging
import os
import select
import signal
import sys
import time
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

from dnsrouter.orphans import die_with_parent

log = logging.getLogger("dnsrouter.supervisor")

EXIT_OK, EXIT_FAILURE = 0, 1

# A worker that dies is restarted after at least this long (seconds).
RESTART_INTERVAL = 1.0
# A worker that dies within this long of its start is failing to start,
# not crashing under load: each such death in a row doubles the delay
# before the next restart, up to RESTART_MAX_DELAY, so a broken worker
# costs a fork every half minute, not a tight loop of tracebacks.
QUICK_DEATH = 10.0
RESTART_MAX_DELAY = 30.0

# After a reload, old workers still running this long after the new ones
# were forked are stopped even though not every new one said it is ready
# (a lost message, a new worker that keeps dying).
RETIRE_TIMEOUT = 10.0

# How long the supervisor's loop sleeps at most; signals wake it sooner.
TICK = 0.5

# One message on the workers' pipe; writes up to PIPE_BUF (4096 on
# Linux) are atomic, so lines from several workers never interleave.
MAX_MESSAGE = 4096


@dataclass
class _Worker:
    generation: int
    started: float
    ready: bool = False
    retiring: bool = False


@dataclass
class RestartBackoff:
    """How long to wait before restarting a worker that died.

    Pure bookkeeping, shared by all worker slots: a worker that lived
    QUICK_DEATH seconds or more is restarted after RESTART_INTERVAL and
    clears the count; each quick death in a row doubles the delay, up to
    RESTART_MAX_DELAY.
    """

    quick_deaths: int = 0

    def delay_after(self, uptime: float) -> float:
        """Record a death after `uptime` seconds; return the delay."""
        if uptime >= QUICK_DEATH:
            self.quick_deaths = 0
            return RESTART_INTERVAL

        self.quick_deaths += 1
        delay = RESTART_INTERVAL * 2 ** min(self.quick_deaths - 1, 16)

        return min(RESTART_MAX_DELAY, delay)


@dataclass
class _Flags:
    """Set by signal handlers, acted on by the loop."""

    reload: bool = False
    stopping: bool = False


@dataclass(frozen=True)
class WorkerHooks:
    """How a forked worker talks to its supervisor."""

    health_seed: dict[Any, Any]
    on_health: Callable[[Any, Any], None]
    on_ready: Callable[[], None]


# What a worker runs: (config path, state, bound sockets, hooks) -> exit
# status.  The service passes its own `serve`, so this module needs no
# import of the service that starts it.
ServeWorker = Callable[..., int]


class Supervisor:
    """Forks `state.config.workers` workers and keeps them serving."""

    def __init__(
        self,
        config_path: str,
        state: Any,
        bound: list[Any],
        serve: ServeWorker,
    ) -> None:
        self.config_path = config_path
        self.state = state
        self.bound = bound
        self._serve = serve
        self.workers = state.config.workers
        self.generation = 0
        self.generation_started = time.monotonic()
        self.children: dict[int, _Worker] = {}
        self.restarts: list[float] = []     # monotonic due times
        self.backoff = RestartBackoff()
        self.health: dict[Any, Any] = {}   # probe key -> EdgeHealth
        self.flags = _Flags()
        self._buffer = b""
        self._pipe_r, self._pipe_w = os.pipe()
        os.set_blocking(self._pipe_r, False)
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)

    # The loop

    def run(self) -> int:
        """Fork the workers, then supervise until SIGTERM or SIGINT and
        every worker has exited; returns the exit status."""
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the loop
        for _ in range(self.workers):
            self.start_worker()
        while self.children or not self.flags.stopping:
            self._wait()
            self._read_messages()
            self._reap()
            if self.flags.stopping:
                continue
            if self.flags.reload:
                self.flags.reload = False
                self.reload()
            self._retire_overdue()
            self._restart_due()

        return EXIT_OK

    def _wait(self) -> None:
        timeout = TICK
        if self.restarts:
            timeout = max(0.0, min(timeout, min(self.restarts) - time.monotonic()))
        try:
            select.select([self._pipe_r, self._wake_r], [], [], timeout)
        except InterruptedError:
            pass
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _on_hup(self, _signum: int, _frame: Any) -> None:
        self.flags.reload = True

    def _on_stop(self, signum: int, _frame: Any) -> None:
        """TERM and INT: stop every worker and exit once they are gone."""
        self.flags.stopping = True
        self.restarts.clear()
        for pid in list(self.children):
            _signal(pid, signal.SIGTERM)

    # Workers

    def start_worker(self) -> None:
        """Fork one worker of the current generation from the state."""
        # Objects the parent keeps are never freed by the child's GC, so
        # its pages stay shared instead of copied on the first collection.
        gc.freeze()
        supervisor_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            die_with_parent(supervisor_pid)
            os._exit(self._run_worker())
        gc.unfreeze()
        self.children[pid] = _Worker(self.generation, time.monotonic())
        log.info("worker started pid=%d generation=%d", pid, self.generation)

    def _run_worker(self) -> int:
        """The child's whole life; returns its exit status.

        The child must leave through os._exit (the parent's state is not
        its to clean up), which skips every flush: so the traceback of a
        crash is logged, and stderr flushed, here first.
        """
        code = EXIT_FAILURE
        try:
            # The supervisor's handlers must not run here (its TERM
            # handler would signal this worker's siblings).
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(signum, signal.SIG_DFL)
            # The supervisor reloads by replacing workers.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            for fd in (self._pipe_r, self._wake_r, self._wake_w):
                os.close(fd)
            code = self.serve_worker()
        except BaseException:
            log.critical("worker crashed pid=%d", os.getpid(), exc_info=True)
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass

        return code

    def serve_worker(self) -> int:
        """Serve the state in force with the shared sockets (in the child)."""
        channel = _Channel(self._pipe_w)
        hooks = WorkerHooks(dict(self.health), channel.health, channel.ready)

        return self._serve(self.config_path, self.state, self.bound, hooks=hooks)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.children.pop(pid, None)
            if worker is not None:
                self._died(pid, status, worker)

    def _died(self, pid: int, status: int, worker: _Worker) -> None:
        code = os.waitstatus_to_exitcode(status)
        if self.flags.stopping or worker.retiring:
            log.info("worker stopped pid=%d %s", pid, describe_exit(code))
            return
        if worker.generation != self.generation:
            # Its replacement is already forked from the newer state.
            log.error("worker died pid=%d %s generation=%d (old)", pid,
                      describe_exit(code), worker.generation)
            return
        uptime = time.monotonic() - worker.started
        delay = self.backoff.delay_after(uptime)
        log.error(
            "worker died pid=%d %s uptime=%.1fs quick_deaths=%d "
            "restart_in=%.1fs",
            pid, describe_exit(code), uptime, self.backoff.quick_deaths, delay,
        )
        self.restarts.append(time.monotonic() + delay)

    def _restart_due(self) -> None:
        now = time.monotonic()
        due = [t for t in self.restarts if t <= now]
        self.restarts = [t for t in self.restarts if t > now]
        for _ in due:
            self.start_worker()

    # Reload

    def reload(self) -> bool:
        """Load the state anew; on success fork a new generation from it
        and retire the old one as the new workers get ready."""
        from dnsrouter.errors import DnsRouterError
        from dnsrouter.state import load_state

        try:
            state = load_state(self.config_path)
        except DnsRouterError as exc:
            log.error("reload rejected, old config keeps serving: %s", exc)
            return False
        old = self.state.config
        if state.config.listen != old.listen or state.config.workers != old.workers:
            log.warning("reload listen and workers changes need a restart")
        self.state = state
        self.generation += 1
        self.generation_started = time.monotonic()
        self.restarts.clear()
        log.info(
            "reload loaded zones=%d generation=%d",
            len(state.zones.zones), self.generation,
        )
        for _ in range(self.workers):
            self.start_worker()

        return True

    def _retire_one(self) -> None:
        """SIGTERM one worker of an older generation, if any is left."""
        for pid, worker in self.children.items():
            if worker.generation != self.generation and not worker.retiring:
                worker.retiring = True
                _signal(pid, signal.SIGTERM)
                return

    def _retire_overdue(self) -> None:
        """Stop old workers left RETIRE_TIMEOUT after a reload, once a new
        one is ready or has lived that long (its message may be lost);
        while every new worker keeps dying, the old ones keep serving."""
        now = time.monotonic()
        if now - self.generation_started < RETIRE_TIMEOUT:
            return
        if not any(
            w.generation == self.generation
            and (w.ready or now - w.started >= RETIRE_TIMEOUT)
            for w in self.children.values()
        ):
            return
        for pid, worker in self.children.items():
            if worker.generation != self.generation and not worker.retiring:
                worker.retiring = True
                _signal(pid, signal.SIGTERM)

    # Messages from workers

    def _read_messages(self) -> None:
        try:
            while True:
                chunk = os.read(self._pipe_r, 65536)
                if not chunk:
                    break
                self._buffer += chunk
        except BlockingIOError:
            pass
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._take(line)

    def _take(self, line: bytes) -> None:
        from dnsrouter.health import EdgeHealth

        try:
            message = json.loads(line)
            pid = message["pid"]
            if "ready" in message:
                self._ready(pid)
            else:
                key = tuple(message["key"])
                self.health[key] = EdgeHealth(**message["health"])
        except (ValueError, KeyError, TypeError) as error:
            log.warning("worker message unreadable error=%s", error)

    def _ready(self, pid: int) -> None:
        worker = self.children.get(pid)
        if worker is None or worker.ready:
            return
        worker.ready = True
        if worker.generation == self.generation:
            self._retire_one()


class _Channel:
    """A worker's end of the supervisor's pipe: one JSON line a message.

    Writes never block the worker: when the pipe is full (the supervisor
    busy loading a reload), a health message is dropped; the supervisor
    then seeds new workers with an older state, which their first probe
    corrects.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    def ready(self) -> None:
        self._send({"pid": os.getpid(), "ready": True})

    def health(self, key: Any, health: Any) -> None:
        self._send(
            {"pid": os.getpid(), "key": list(key),
             "health": dataclasses.asdict(health)}
        )

    def _send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\n"
        if len(data) > MAX_MESSAGE:
            log.debug("worker message too long size=%d", len(data))
            return
        try:
            os.write(self.fd, data)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EPIPE):
                raise
            log.debug("worker message dropped error=%s", error)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def describe_exit(exit_code: int) -> str:
    """`exit=N` or `signal=NAME`, from os.waitstatus_to_exitcode."""
    if exit_code == 2:
        return "exit=2 config_error"
    if exit_code >= 0:
        return "exit=%d" % exit_code
    try:
        return "signal=%s" % signal.Signals(-exit_code).name
    except ValueError:
        return "signal=%d" % -exit_code
