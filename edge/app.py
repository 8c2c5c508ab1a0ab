"""The edge's HTTP front: parse, select the site, dispatch, log.

A request is checked against the limits (414 for a long target, 431 for
big header fields, RFC 9110 §5.4), then the health path and the admin
API are answered for any Host. Everything else needs a Host (or an
absolute-form target, which wins, RFC 9112 §3.2.2) naming a configured
site; any other name gets 421 and never an outbound connection, so the
edge is never an open proxy. CONNECT and TRACE get 405.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Callable
from urllib.parse import urlsplit

from aiohttp import web

from edge import admin, cachekey, fastpath, front, health, respond
from edge.config import EdgeConfig, SiteConfig
from edge.metrics import Metrics
from edge.origin import OriginClient
from edge.proxy import Ask, Proxy, request_cache_control
from edge.storage import Entry, Storage
from edge.upstream import Upstreams

log = logging.getLogger("edge.app")
access_log = logging.getLogger("edge.access")

MB = 1024 * 1024
# Parser limits are generous multiples of ours so that oversize input
# reaches the handler and gets the precise status (414/431) instead of
# the parser's generic 400.
PARSER_SLACK = 4
REFUSED_METHODS = frozenset({"CONNECT", "TRACE"})
# Idle keep-alive connections are closed after this (nginx's default).
KEEPALIVE_SECONDS = 75.0
# After the shutdown grace, handlers get this long to notice that their
# connection was cut before the edge stops regardless.
CUT_WAIT_SECONDS = 1.0


@functools.lru_cache(maxsize=65536)
def _normalised(target: str, sort_query: bool) -> str:
    # RFC 9112 §3.2.1: origin-form has no fragment; a stray one names
    # no other resource and never goes upstream.
    path, _, query = target.partition("#")[0].partition("?")

    return cachekey.normalise_target(path, query, sort_query)


def _primary(site: str, target: str, sort_query: bool) -> str:
    return f"{site} {_normalised(target, sort_query)}"


class Edge:
    """One edge process: storage, origin client, cache logic, front."""

    def __init__(
        self, config: EdgeConfig, clock: Callable[[], float] = time.time
    ) -> None:
        server = config.server
        self.config = config
        self.draining = False
        self.storage = Storage(
            server.cache_dir, int(server.disk_cache_mb * MB),
            int(server.memory_cache_mb * MB),
            max_variants=server.max_variants,
        )
        own = (f"http://{server.host}:{server.port}",)
        upstreams = Upstreams(server.parents, own)
        self.origin = OriginClient(server.name, server.connect_timeout,
                                   server.read_timeout,
                                   upstreams.loop_entry(server.name))
        self.metrics = Metrics()
        self.proxy = Proxy(self.storage, self.origin, self.metrics, clock,
                           upstreams, server.body_timeout)
        self._sites = {name: site for site in config.sites
                       for name in site.names}
        self._default_ports = {"80", "443", str(server.port)}
        self.server: front.EdgeServer | None = None
        self.fast_connections: set[fastpath.FastProtocol] = set()
        self._clock = clock
        self._listeners: list[asyncio.Server] = []
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the cache and the origin client; call in the running loop."""
        self.storage.open()
        await self.origin.start()

    async def listen(self, host: str, port: int) -> int:
        """Accept connections on host:port; return the bound port.

        Connections start on the hit fast path and move to aiohttp at
        their first request it cannot answer.
        """
        server = self.server or self.make_server()
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(
            lambda: fastpath.FastProtocol(self, server), host, port,
            backlog=1024, reuse_address=True,
        )
        self._listeners.append(listener)
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep_idle())

        return int(listener.sockets[0].getsockname()[1])

    async def _sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_SECONDS / 5)
            limit = time.monotonic() - KEEPALIVE_SECONDS
            for connection in list(self.fast_connections):
                if connection.last_active < limit:
                    connection.close()

    async def close(self, grace: float | None = None) -> None:
        """Stop: stop listening, give the answers in progress up to
        ``grace`` seconds (default ``server.shutdown_grace``) to reach
        their clients, then cut what is left, abandon the fills in
        flight (their temporary files are deleted) and close the origin
        client. Idle connections are closed at once.
        """
        if grace is None:
            grace = self.config.server.shutdown_grace
        deadline = time.monotonic() + grace
        for listener in self._listeners:
            listener.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in list(self.fast_connections):
            # Sends what is already written, then closes.
            connection.close()
        general = list(self.server.connections) if self.server else []
        if self.server is not None:
            # Idle connections close now, busy ones after their answer;
            # aiohttp's shutdown alone would wait on idle ones too.
            self.server.pre_shutdown()
        # aiohttp waits for handlers; past the grace it would wait as
        # long again, so the cut is ours.
        shutdown = asyncio.ensure_future(
            self.server.shutdown(grace) if self.server else asyncio.sleep(0))
        await asyncio.wait({shutdown}, timeout=grace)
        while self.fast_connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self._cut(general)
        abandoned = await self.proxy.fills.cancel_all()
        if abandoned:
            log.info("stopping: %d fill(s) abandoned", abandoned)
        # Handlers end as their connection or fill goes; one that waits
        # on an origin is left to the loop's own cancellation at exit.
        await asyncio.wait({shutdown}, timeout=CUT_WAIT_SECONDS)
        await self.origin.close()

    def _cut(self, general: list[web.RequestHandler]) -> None:
        """Drop every client connection still open, unsent bytes too."""
        for connection in list(self.fast_connections):
            connection.abort()
        for handler in general:
            transport = handler.transport
            if transport is not None and not transport.is_closing():
                log.info("stopping: answer in progress cut")
                transport.abort()

    @property
    def header_timeout(self) -> float:
        """Seconds a request head may take to arrive (``edge.front``)."""
        return self.config.server.header_timeout

    def make_server(self) -> front.EdgeServer:
        """Return the low-level aiohttp server running ``handle``."""
        server = self.config.server
        self.server = front.EdgeServer(
            self.handle,
            self,
            keepalive_timeout=KEEPALIVE_SECONDS,
            max_line_size=server.max_target_bytes * PARSER_SLACK,
            max_field_size=server.max_field_bytes * PARSER_SLACK,
            max_headers=server.max_header_lines,
            access_log=None,
            # An unread request body (413, or an origin that answered
            # early) closes the connection rather than being drained.
            lingering_time=0,
        )

        return self.server

    # -- admin target ----------------------------------------------------

    def purge(self, match: Callable[[str], bool]) -> int:
        """Remove stored objects whose key matches and stop matching
        fills from being kept; return how many objects will not be
        served again: those removed, plus fills for keys that had none
        stored (one finishing its commit may not be indexed yet)."""
        stopped = self.proxy.fills.purge(match)
        removed = self.storage.purge(match)

        return len(removed) + len(stopped.difference(removed))

    @property
    def connections(self) -> int:
        """Open client connections."""
        general = len(self.server.connections) if self.server else 0

        return general + len(self.fast_connections)

    def render_metrics(self) -> str:
        """Return the Prometheus exposition."""
        return self.metrics.render(
            self.storage.objects, self.storage.bytes, self.storage.evictions,
            len(self.proxy.fills), self.connections,
        )

    # -- requests --------------------------------------------------------

    def fast_answer(self, head: bytes, peer: str) -> list[bytes] | None:
        """Return the bytes answering a plain request for a fresh hit.

        None sends the request (and its connection) the general way.
        Called by ``fastpath.FastProtocol`` for each complete head.
        """
        parsed = fastpath.parse_head(head)
        if parsed is None or len(parsed[1]) > self.config.server.max_target_bytes:
            return None
        method, raw_target, raw_host = parsed
        try:
            target = raw_target.decode("ascii")
            host = raw_host.decode("ascii")
        except UnicodeDecodeError:
            return None
        site = self._sites.get(self._normalise_host(host))
        if site is None or target.startswith(admin.PREFIX) or \
                target.partition("?")[0] == self.config.server.health_path:
            return None
        entry = self.storage.get_plain(
            _primary(site.hostname, target, site.sort_query))
        if entry is None or entry.meta.status != 200 or \
                entry.policy.always_revalidate:
            return None
        age = entry.age(self._clock())
        if age >= entry.policy.lifetime:
            return None
        body = self.storage.read_body(entry)
        if body is None:
            return None
        return self._fast_reply(entry, body, age, method == b"HEAD", peer,
                                target)

    def _fast_reply(
        self, entry: Entry, body: bytes, age: float, is_head: bool,
        peer: str, target: str,
    ) -> list[bytes]:
        wire = entry.wire
        if wire is None:
            wire = entry.wire = respond.hit_head(entry)
        head = wire + b"Age: %d\r\n\r\n" % age
        self.metrics.observe_response("HIT", 0 if is_head else len(body))
        if access_log.isEnabledFor(logging.INFO):
            access_log.info('%s "%s %s" 200 HIT %d fast', peer,
                            "HEAD" if is_head else "GET", target[:200],
                            len(body))
        if is_head:
            return [head]
        if len(body) <= fastpath.JOIN_LIMIT:
            return [head + body]

        return [head, body]

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer one request and log it; aiohttp's handler entry point."""
        started = time.monotonic()
        protocol = request.protocol
        if isinstance(protocol, front.EdgeRequestHandler):
            protocol.request_started()
        try:
            response = await self.dispatch(request)
        finally:
            if isinstance(protocol, front.EdgeRequestHandler):
                protocol.request_finished()
        elapsed = (time.monotonic() - started) * 1000
        self.log_access(request, response, f"{elapsed:.1f}ms")

        return response

    def log_access(
        self, request: web.BaseRequest, response: web.StreamResponse,
        note: str,
    ) -> None:
        """Count one answered request and write its access-log line."""
        x_cache = response.headers.get("X-Cache", "BYPASS")
        size = response.content_length or 0
        self.metrics.observe_response(x_cache, size)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                '%s "%s %s" %d %s %d %s', request.remote, request.method,
                request.raw_path[:200], response.status, x_cache, size, note,
            )

    async def dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        """Route a request: limits, health, admin, site, method."""
        refusal = self.check_limits(request)
        if refusal is not None:
            return refusal
        path = request.path
        if path == self.config.server.health_path:
            return self.health()
        if path.startswith(admin.PREFIX):
            return await admin.handle(request, self)
        if request.method in REFUSED_METHODS:
            return respond.simple(405, "BYPASS")
        selected = self.select_site(request)
        if selected is None:
            return respond.simple(421, "BYPASS", "no such site here")
        site, raw_target = selected
        # The origin gets the target the key was made from (RFC 9111 §2).
        target = _normalised(raw_target, site.sort_query)
        ask = Ask(
            site=site,
            primary=f"{site.hostname} {target}",
            target=target,
            method=request.method,
            headers=request.headers,
            remote=request.remote,
            cc=request_cache_control(request.headers),
            looped=self.proxy.upstreams.has_looped(
                request.headers.getall("CDN-Loop", [])),
        )
        if ask.method in ("GET", "HEAD"):
            return await self.proxy.lookup(request, ask)

        return await self.proxy.pass_through(request, ask)

    def check_limits(self, request: web.BaseRequest) -> web.Response | None:
        """Return 414/431/413 for oversize input, None when acceptable."""
        server = self.config.server
        if len(request.raw_path) > server.max_target_bytes:
            return respond.simple(414, "BYPASS", close=True)
        total = 0
        for name, value in request.raw_headers:
            size = len(name) + len(value) + 4
            if size > server.max_field_bytes:
                return respond.simple(431, "BYPASS", close=True)
            total += size
        if total > server.max_header_bytes:
            return respond.simple(431, "BYPASS", close=True)
        length = request.content_length
        if length is not None and length > server.max_body_mb * MB:
            return respond.simple(413, "BYPASS", close=True)

        return None

    def select_site(
        self, request: web.BaseRequest
    ) -> tuple[SiteConfig, str] | None:
        """Return the site and origin-form target, or None (→ 421)."""
        raw = request.raw_path
        if raw.startswith("/"):
            host = request.headers.get("Host", "")
            target = raw
        elif raw[:8].lower().startswith(("http://", "https://")):
            parts = urlsplit(raw)
            host = parts.netloc
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query
                                           else "")
        else:
            return None
        site = self._sites.get(self._normalise_host(host))
        if site is None:
            return None

        return site, target

    def _normalise_host(self, host: str) -> str:
        host = host.strip().lower()
        if host.startswith("["):
            return host
        name, sep, port = host.rpartition(":")
        if sep and port in self._default_ports:
            host = name

        return host.rstrip(".")

    def health(self) -> web.Response:
        """Return the health document response."""
        document = health.health_document(
            draining=self.draining,
            connections=self.connections,
            max_connections=self.config.server.max_connections,
            bytes_per_second=self.metrics.bytes_per_second(),
            objects=self.storage.objects,
            stored_bytes=self.storage.bytes,
        )

        return health.health_response(document)

