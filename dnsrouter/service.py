"""Process wiring: state, sockets, router, listeners, signals.

`run` is what `dnsrouter serve` calls. It loads the state (config,
zones, GeoIP, network map: state.py) and binds every listen address
once, then either serves in this process (one worker) or hands both to
the supervisor (supervisor.py), which forks the workers from them. Each
serving process adopts the bound sockets into its own reactor; no
reactor exists before a fork.

Reload (SIGHUP) is all or nothing: the new state is loaded and checked
whole; if any part fails, the error is logged and the old state keeps
serving. A single process loads it in a thread, so queries keep being
answered meanwhile, and swaps it in on the reactor thread; with workers
the supervisor loads it and replaces the workers. Listen addresses and
the worker count are read at start only.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dnsrouter.errors import DnsRouterError
from dnsrouter.supervisor import Supervisor, WorkerHooks

log = logging.getLogger("dnsrouter.service")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def run(config_path: str) -> int:
    """Serve until SIGTERM or SIGINT; returns the process exit status.

    2 when the config, a zone or the GeoIP database cannot be loaded at
    start or a CDN name clashes with zone data, 1 when a listen address
    cannot be bound (one line on stderr in either case), else 0.
    Blocks until the service stops.
    """
    _setup_logging()
    # A SIGHUP before the reload handler exists must not kill the process;
    # the state is read fresh at start anyway.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from dnsrouter.state import load_state

    try:
        state = load_state(config_path)
    except DnsRouterError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    try:
        bound = bind_all(state.config)
    except DnsRouterError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILURE

    if state.config.workers > 1:
        return Supervisor(config_path, state, bound, serve).run()

    return serve(config_path, state, bound)


def _setup_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
        )
        root.addHandler(handler)
        root.setLevel(logging.INFO)


def bind_all(config: Any) -> list[Any]:
    """Bind every listen address of the config (BoundAddress each).

    Raises ListenError naming the file, `server.listen` and the address;
    addresses already bound are closed first.
    """
    from dnsrouter.errors import ListenError
    from dnsrouter.server import bind_address

    bound: list[Any] = []
    for host, port in config.listen:
        try:
            bound.append(bind_address(host, port))
        except OSError as error:
            for done in bound:
                done.close()
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            reason = error.strerror or str(error)
            raise ListenError(
                f"{config.path}: server.listen: cannot listen on {where}: "
                f"{reason}"
            ) from None

    return bound


@dataclass
class _Live:
    """What a reload replaces, kept together so it swaps as one."""

    state: Any
    router: Any
    slot: Any
    loading: bool = False    # a reload is being loaded in a thread
    again: bool = False      # another SIGHUP came meanwhile


def serve(
    config_path: str,
    state: Any,
    bound: list[Any],
    reactor: Any = None,
    hooks: WorkerHooks | None = None,
) -> int:
    """Run one serving process (a worker, or the only process) over a
    loaded state and bound sockets; blocks in the reactor until SIGTERM
    or SIGINT, then returns EXIT_OK. Without `hooks` it reloads itself
    on SIGHUP; a worker leaves reloads to its supervisor."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    from dnsrouter.routing import Router
    from dnsrouter.server import ResponderSlot

    seed = hooks.health_seed if hooks else None
    router = Router.from_state(state, reactor, health_seed=seed)
    slot = ResponderSlot(_responder(state, router))
    live = _Live(state, router, slot)
    _adopt_all(reactor, state.config, slot, bound)

    if hooks is None:
        signal.signal(
            signal.SIGHUP,
            lambda *_: reactor.callFromThread(start_reload, live, config_path,
                                              reactor),
        )
    else:
        router.on_health = hooks.on_health
        reactor.callWhenRunning(hooks.on_ready)
    _stop_on_signals(reactor)
    reactor.addSystemEventTrigger("before", "shutdown", _stop_router, live)
    reactor.callWhenRunning(router.start)
    # Our own TERM and INT handlers: Twisted's call stop() once per
    # signal, and a second signal (the supervisor's, after the process
    # group's) would raise ReactorNotRunning.
    reactor.run(installSignalHandlers=False)

    return EXIT_OK


def _stop_on_signals(reactor: Any) -> None:
    stopping: list[bool] = []

    def stop_once() -> None:
        if not stopping and reactor.running:
            stopping.append(True)
            reactor.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: reactor.callFromThread(stop_once))


def _adopt_all(reactor: Any, config: Any, slot: Any, bound: list[Any]) -> None:
    """UDP and TCP on every bound address; this process's copies of the
    descriptors are closed once the reactor holds its own."""
    from dnsrouter.server import DnsDatagramProtocol, DnsStreamFactory, adopt

    tcp = DnsStreamFactory(
        slot, reactor, config.tcp_idle_timeout, config.tcp_max_connections
    )
    for address in bound:
        # A datagram protocol serves one port only; the factory many.
        adopt(reactor, address, DnsDatagramProtocol(slot), tcp)
        log.info(
            "listen address=%s port=%d pid=%d",
            address.host, address.port, os.getpid(),
        )
        address.close()


def _stop_router(live: _Live) -> None:
    log.info("service stopping pid=%d", os.getpid())
    live.router.stop()


def _responder(state: Any, router: Any) -> Any:
    """The Responder for a loaded state (zones already checked)."""
    from dnsrouter.responder import Responder, ResponderSettings

    return Responder(
        state.zones, router, ResponderSettings.from_config(state.config)
    )


def start_reload(
    live: _Live,
    config_path: str,
    reactor: Any,
    load: Callable[[str], Any] | None = None,
) -> Any:
    """Load the state in a thread and swap it in on the reactor thread.

    Called on the reactor thread (on SIGHUP); returns the Deferred of
    the load, or None when one is running already (it is then repeated
    once it ends, so the last SIGHUP's files win). `load` defaults to
    state.load_state.
    """
    from twisted.internet import threads

    if live.loading:
        live.again = True
        return None
    if load is None:
        from dnsrouter.state import load_state

        load = load_state
    live.loading = True
    done = threads.deferToThreadPool(
        reactor, reactor.getThreadPool(), load, config_path
    )
    done.addCallbacks(
        lambda state: adopt_state(live, state),
        lambda failure: _reload_failed(live, failure),
    )
    done.addBoth(lambda _: _reload_ended(live, config_path, reactor, load))

    return done


def _reload_failed(live: _Live, failure: Any) -> None:
    if failure.check(DnsRouterError):
        log.error(
            "reload rejected, old config keeps serving: %s", failure.value
        )
        return
    log.error(
        "reload failed, old config keeps serving",
        exc_info=(failure.type, failure.value, failure.getTracebackObject()),
    )


def _reload_ended(
    live: _Live, config_path: str, reactor: Any, load: Callable[[str], Any]
) -> None:
    live.loading = False
    if live.again:
        live.again = False
        start_reload(live, config_path, reactor, load)


def adopt_state(live: _Live, state: Any) -> None:
    """Swap a loaded state in; on the reactor thread, never raises."""
    old = live.state.config
    if state.config.listen != old.listen or state.config.workers != old.workers:
        log.warning("reload listen and workers changes need a restart")
    live.router.reload_state(state)
    live.slot.current = _responder(state, live.router)
    live.state = state
    log.info("reload done zones=%d", len(state.zones.zones))
