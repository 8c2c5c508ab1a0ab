"""Process wiring: config, zones, router, listeners, signals.

`run` is what `dnsrouter serve` calls.  With one worker the process
serves itself; with more, it forks that many workers before any reactor
exists (a reactor must not cross a fork), each binding the listen
addresses with SO_REUSEPORT, and supervises them: SIGHUP and SIGTERM are
passed on, and a worker that dies unexpectedly is started again, after
a delay that grows while workers keep dying soon after they start.

Reload (SIGHUP) is all or nothing: the new config and every zone are
loaded first, and the CDN names checked against the zones; if any fails,
the error is logged and the old state keeps serving.  Listen addresses
and worker count are read at start only.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from dnsrouter.errors import ConfigError, DnsRouterError, ZoneError

log = logging.getLogger("dnsrouter.service")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2

# A worker that dies is restarted after at least this long (seconds).
RESTART_INTERVAL = 1.0
# A worker that dies within this long of its start is failing to start,
# not crashing under load: each such death in a row doubles the delay
# before the next restart, up to RESTART_MAX_DELAY, so a broken worker
# costs a fork every half minute, not a tight loop of tracebacks.
QUICK_DEATH = 10.0
RESTART_MAX_DELAY = 30.0


def run(config_path: str) -> int:
    """Serve until SIGTERM or SIGINT; returns the process exit status.

    2 when the config or a zone cannot be loaded at start or a CDN name
    clashes with zone data (the message goes to stderr), 1 when a listen
    address cannot be bound, else 0.
    Blocks in the reactor.
    """
    _setup_logging()
    # A SIGHUP before the reload handler exists must not kill the process;
    # the config is read fresh at start anyway.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from dnsrouter.cdnzones import check_cdn_names
    from dnsrouter.config import load_config
    from dnsrouter.zone import load_zone_dir

    try:
        config = load_config(config_path)
        check_cdn_names(config, load_zone_dir(config.zones_dir))
    except (ConfigError, ZoneError) as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG

    if config.workers > 1:
        return _supervise(config_path, config.workers)

    return serve(config_path, reuse_port=False)


def _setup_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
        )
        root.addHandler(handler)
        root.setLevel(logging.INFO)


@dataclass
class _State:
    """What a reload replaces, kept together so it swaps as one."""

    config: Any
    router: Any
    slot: Any


def serve(config_path: str, reuse_port: bool, reactor: Any = None) -> int:
    """Run one serving process (a worker, or the only process)."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    from dnsrouter.config import load_config
    from dnsrouter.routing import Router
    from dnsrouter.server import ResponderSlot

    try:
        config = load_config(config_path)
        router = Router.from_config(config, reactor)
        slot = ResponderSlot(_responder(config, router))
    except DnsRouterError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    state = _State(config, router, slot)

    try:
        _listen_all(reactor, config, slot, reuse_port)
    except Exception as exc:  # CannotListenError or OSError
        print("cannot listen: %r" % exc, file=sys.stderr)
        return EXIT_FAILURE

    signal.signal(
        signal.SIGHUP,
        lambda *_: reactor.callFromThread(reload, state, config_path),
    )
    reactor.addSystemEventTrigger("before", "shutdown", _stop_router, state)
    reactor.callWhenRunning(router.start)
    reactor.run()

    return EXIT_OK


def _listen_all(reactor: Any, config: Any, slot: Any, reuse_port: bool) -> None:
    """UDP and TCP on every configured address; raises when one fails."""
    from dnsrouter.server import (
        DnsDatagramProtocol,
        DnsStreamFactory,
        ListenSpec,
        listen,
    )

    tcp = DnsStreamFactory(
        slot, reactor, config.tcp_idle_timeout, config.tcp_max_connections
    )
    for host, port in config.listen:
        # A datagram protocol serves one port only; the factory many.
        udp = DnsDatagramProtocol(slot)
        spec = ListenSpec(host, port, reuse_port)
        udp_port: Any = listen(reactor, spec, udp, tcp)[0]
        log.info(
            "listen address=%s port=%d pid=%d",
            host,
            udp_port.getHost().port,
            os.getpid(),
        )


def _stop_router(state: _State) -> None:
    log.info("service stopping pid=%d", os.getpid())
    state.router.stop()


def _responder(config: Any, router: Any) -> Any:
    """The Responder for a config: its zones loaded and checked against
    its CDN names; raises ConfigError or ZoneError."""
    from dnsrouter.cdnzones import check_cdn_names
    from dnsrouter.responder import Responder, ResponderSettings
    from dnsrouter.zone import load_zone_dir

    zones = load_zone_dir(config.zones_dir)
    # Before the Responder adds the CDN names' empty nodes to the zones.
    check_cdn_names(config, zones)

    return Responder(zones, router, ResponderSettings.from_config(config))


def reload(state: _State, config_path: str) -> bool:
    """Load config and zones anew and swap them in; False keeps the old.

    Called on the reactor thread.  The router is told last, so a failure
    before it leaves router, zones and config all unchanged.
    """
    from dnsrouter.cdnzones import check_cdn_names
    from dnsrouter.config import load_config
    from dnsrouter.responder import Responder, ResponderSettings
    from dnsrouter.zone import load_zone_dir

    try:
        config = load_config(config_path)
        zones = load_zone_dir(config.zones_dir)
        check_cdn_names(config, zones)
    except DnsRouterError as exc:
        log.error("reload rejected, old config keeps serving: %s", exc)
        return False
    if config.listen != state.config.listen or config.workers != state.config.workers:
        log.warning("reload listen and workers changes need a restart")

    try:
        state.router.reload(config)
    except DnsRouterError as exc:
        log.error("reload rejected by router, old config keeps serving: %s", exc)
        return False
    state.slot.current = Responder(
        zones, state.router, ResponderSettings.from_config(config)
    )
    state.config = config
    log.info("reload done zones=%d", len(zones.zones))

    return True


def _supervise(config_path: str, workers: int) -> int:
    """Fork `workers` serving processes and keep them running."""
    supervisor = _Supervisor(config_path)
    for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, supervisor.forward)
    for _ in range(workers):
        supervisor.start_worker()

    return supervisor.wait()


class _Supervisor:
    """The parent of the worker processes: starts, signals, restarts."""

    def __init__(self, config_path: str) -> None:
        self.config_path = config_path
        self.children: dict[int, float] = {}
        self.stopping = False
        self.status = EXIT_OK
        self.backoff = RestartBackoff()

    def start_worker(self) -> None:
        pid = os.fork()
        if pid == 0:
            os._exit(self._run_worker())
        self.children[pid] = time.monotonic()
        log.info("worker started pid=%d", pid)

    def _run_worker(self) -> int:
        """The child's whole life; returns its exit status.

        The child must leave through os._exit (the parent's state is not
        its to clean up), which skips every flush: so the traceback of a
        crash is logged, and stderr flushed, here first.
        """
        code = EXIT_FAILURE
        try:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until serving
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = serve(self.config_path, reuse_port=True)
        except BaseException:
            log.critical("worker crashed pid=%d", os.getpid(), exc_info=True)
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass

        return code

    def forward(self, signum: int, _frame: Any) -> None:
        """Pass a signal on to every worker; TERM and INT mean stopping."""
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True
        for pid in list(self.children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def wait(self) -> int:
        """Reap workers until all are gone; restart the ones that die."""
        while self.children:
            try:
                pid, code = os.wait()
            except ChildProcessError:
                break
            started = self.children.pop(pid, time.monotonic())
            if not self.stopping:
                self.replace(pid, code, started)

        return self.status

    def replace(self, pid: int, code: int, started: float) -> None:
        """Start a worker in place of one that died, after a delay."""
        uptime = time.monotonic() - started
        exit_code = os.waitstatus_to_exitcode(code)
        # Whatever killed it, the other workers keep serving: a worker
        # that cannot start (a config or GeoIP file gone bad on disk) is
        # retried with the growing delay, never a reason to stop them.
        delay = self.backoff.delay_after(uptime)
        log.error(
            "worker died pid=%d %s uptime=%.1fs quick_deaths=%d "
            "restart_in=%.1fs",
            pid,
            _describe_exit(exit_code),
            uptime,
            self.backoff.quick_deaths,
            delay,
        )
        self._pause(delay)
        if not self.stopping:  # a SIGTERM may have come during the pause
            self.start_worker()

    def _pause(self, seconds: float) -> None:
        """Sleep, but return soon after a SIGTERM sets `stopping`."""
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


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


def _describe_exit(exit_code: int) -> str:
    """`exit=N` or `signal=NAME`, from os.waitstatus_to_exitcode."""
    if exit_code == EXIT_CONFIG:
        return "exit=%d config_error" % exit_code
    if exit_code >= 0:
        return "exit=%d" % exit_code
    try:
        return "signal=%s" % signal.Signals(-exit_code).name
    except ValueError:
        return "signal=%d" % -exit_code
