"""The cache's request path for one site: lookup, decide, fetch, answer.

GET and HEAD look up the store; a fresh entry is a HIT. A stale one is
revalidated with its validators (REVALIDATED on 304, EXPIRED on a new
200), served at once while a background refresh runs when
stale-while-revalidate allows (STALE), or served when the origin fails
and stale-if-error allows (STALE, RFC 5861). Misses are collapsed per
primary key through ``edge.fill``. Other methods go to the origin
uncached (BYPASS) and a successful unsafe one invalidates the URI
(RFC 9111 §4.4).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from edge import cachekey, freshness, ranges, respond
from edge.config import DEFAULT_BODY_TIMEOUT, SiteConfig
from edge.errors import OriginError, StorageError
from edge.fill import Fill, FillRegistry, FillState
from edge.httpdate import format_http_date, parse_http_date
from edge.metrics import Metrics
from edge.origin import OriginClient, OriginResponse, end_to_end
from edge.request_body import TimedBody
from edge.storage import Entry, ObjectMeta, Storage, new_body_file
from edge.upstream import Upstreams

log = logging.getLogger("edge.proxy")

# Client fields never forwarded on a fill: the fill fetches the whole,
# unconditional object for everyone; the client's own conditions and
# ranges are then answered from it.
FILL_STRIPPED = (
    "If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since",
    "If-Range", "Range",
)
# Fields an origin reply never stores: generated per response by us.
NOT_STORED = ("Age", "X-Cache", "Content-Length")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# RFC 9110 §9.3.1, §9.3.2: content in a GET or HEAD has no defined
# meaning and is never part of the cache key, so it is not forwarded
# (nor its Content-Length): the origin answers the URI alone.
BODILESS_METHODS = frozenset({"GET", "HEAD"})


@dataclasses.dataclass(frozen=True)
class Ask:
    """One client request as the cache sees it."""

    site: SiteConfig
    primary: str
    # Normalised origin-form target: the key is made from it and it is
    # what goes upstream.
    target: str
    method: str
    headers: CIMultiDictProxy[str]
    remote: str | None
    cc: dict[str, str | None]
    # The request passed this edge before: a cycle of parents (its own
    # CDN-Loop entry); it goes to the origin only.
    looped: bool = False

    @property
    def is_authorized(self) -> bool:
        """True when the request carries credentials (RFC 9111 §3.5)."""
        return "Authorization" in self.headers


def request_cache_control(headers: CIMultiDictProxy[str]) -> dict[str, str | None]:
    """Return the request's directives; Pragma: no-cache counts without CC."""
    if "Cache-Control" in headers:
        return freshness.parse_cache_control(headers.getall("Cache-Control"))
    if "no-cache" in headers.get("Pragma", ""):
        return {"no-cache": None}

    return {}


class Proxy:
    """The caching logic shared by every site; one per edge process."""

    def __init__(
        self,
        storage: Storage,
        origin: OriginClient,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        upstreams: Upstreams | None = None,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
    ) -> None:
        self.storage = storage
        self.origin = origin
        self.upstreams = upstreams or Upstreams(())
        self.metrics = metrics
        self.fills = FillRegistry()
        self.clock = clock
        self.body_timeout = body_timeout

    # -- GET and HEAD ----------------------------------------------------

    async def lookup(self, request: web.BaseRequest, ask: Ask) -> web.StreamResponse:
        """Answer a GET or HEAD from the cache or through a fill."""
        entry = self.storage.get(ask.primary, ask.headers)
        if entry is not None and ask.is_authorized and \
                not entry.policy.allows_authorized:
            entry = None
        if entry is not None:
            answer = self._reuse(request, ask, entry)
            if answer is not None:
                return answer
            if not self.storage.is_stored(entry):
                # Its body was gone: dropped, so this is a miss.
                entry = None
        # A stored copy that cannot be used makes the answer EXPIRED.
        x_cache = "MISS" if entry is None else "EXPIRED"
        if "only-if-cached" in ask.cc:
            # RFC 9111 §5.2.1.7: nothing usable stored → 504.
            return respond.simple(504, x_cache)
        if ask.method == "HEAD":
            fill = self.fills.get(ask.primary)
            if fill is not None and not ask.is_authorized and \
                    not ask.looped:
                return await self._follow(request, ask, fill, entry)
            return await self.pass_through(request, ask, x_cache)

        return await self.fetch(request, ask, entry)

    def _reuse(
        self, request: web.BaseRequest, ask: Ask, entry: Entry
    ) -> web.StreamResponse | None:
        """Answer from ``entry`` when fresh (HIT) or while revalidating
        (STALE); None when it may not be used or its body is gone."""
        age = entry.age(self.clock())
        if self._is_fresh(entry.policy, age, ask.cc):
            return self.serve(request, entry, age, "HIT")
        if not self._may_serve_while_revalidating(entry, age, ask):
            return None
        answer = self.serve(request, entry, age, "STALE")
        if answer is not None:
            self._refresh_in_background(ask, entry)

        return answer

    def _is_fresh(
        self, policy: freshness.Policy, age: float, cc: dict[str, str | None]
    ) -> bool:
        if policy.always_revalidate or "no-cache" in cc:
            return False
        limit = policy.lifetime
        max_age = freshness.get_delta_seconds(cc, "max-age")
        if max_age is not None:
            limit = min(limit, max_age)
        min_fresh = freshness.get_delta_seconds(cc, "min-fresh") or 0
        if age + min_fresh < limit:
            return True
        # RFC 9111 §5.2.1.2: max-stale lets a client accept stale.
        if "max-stale" in cc and not policy.forbids_stale:
            extra = freshness.get_delta_seconds(cc, "max-stale")
            return extra is None or age < policy.lifetime + extra

        return False

    def _may_serve_while_revalidating(
        self, entry: Entry, age: float, ask: Ask
    ) -> bool:
        policy = entry.policy
        if policy.forbids_stale or "no-cache" in ask.cc or "max-age" in ask.cc:
            return False

        return age < policy.lifetime + policy.stale_while_revalidate

    def _may_serve_on_error(self, entry: Entry | None) -> bool:
        if entry is None or entry.policy.forbids_stale:
            return False
        age = entry.age(self.clock())

        return age < entry.policy.lifetime + entry.policy.stale_if_error

    def serve(
        self, request: web.BaseRequest, entry: Entry, age: float, x_cache: str
    ) -> web.StreamResponse | None:
        """Answer from a stored entry: 304, a range, or the whole body.

        Returns None when the entry's body is gone (the storage drops
        the entry): the caller answers as it would without the entry.
        """
        headers = respond.cached_headers(
            entry, entry.sent_age(age, self.clock()), x_cache)
        if entry.meta.status == 200 and freshness.is_conditional_match(
            request.headers, entry.etag, entry.policy.last_modified
        ):
            return respond.not_modified(headers)
        body = self.storage.get_body(entry)
        if body is None:
            return None
        if entry.meta.status == 200 and "Range" in request.headers:
            return ranges.answer(request, entry, body, headers)
        headers["Accept-Ranges"] = "bytes"

        return respond.from_entry(entry, body, headers)

    def _serve_stale(
        self, request: web.BaseRequest, stale: Entry | None
    ) -> web.StreamResponse | None:
        """Answer with ``stale`` after an origin failure when
        stale-if-error covers it (RFC 5861 §4); None when it does not,
        or when its body is gone."""
        if not self._may_serve_on_error(stale):
            return None
        assert stale is not None

        return self.serve(request, stale, stale.age(self.clock()), "STALE")

    # -- fills -----------------------------------------------------------

    async def fetch(
        self, request: web.BaseRequest, ask: Ask, stale: Entry | None,
        shared: bool = True,
    ) -> web.StreamResponse:
        """Fetch through a fill, joining one in flight when allowed."""
        # A looped request must not wait on this edge's own fill: that
        # fill is what it is part of.
        shared = shared and not ask.is_authorized and \
            "no-store" not in ask.cc and not ask.looped
        if shared:
            fill = self.fills.get(ask.primary)
            if fill is not None:
                return await self._follow(request, ask, fill, stale)
        fill = self.fills.start(ask.primary, shared)
        x_cache = "EXPIRED" if stale is not None else "MISS"
        try:
            reply = await self._run_fill(ask, fill, stale)
        except OriginError as exc:
            answer = self._serve_stale(request, stale)
            if answer is None:
                log.warning("origin failed key=%s error=%s", ask.primary, exc)
                answer = respond.simple(exc.status, x_cache)
            return answer
        if fill.revalidated:
            x_cache = "REVALIDATED"
        if reply is None:
            return await self._serve_fill(request, ask, fill, x_cache)
        if fill.origin_failed:
            answer = self._serve_stale(request, stale)
            if answer is not None:
                reply.close()
                return answer

        return await self.relay(request, reply, x_cache)

    async def _follow(
        self, request: web.BaseRequest, ask: Ask, fill: Fill, stale: Entry | None
    ) -> web.StreamResponse:
        # A follower is answered from the cache's copy as it fills, like a
        # hit that waited; only the request that went to the origin is a
        # MISS.
        await fill.settled_or_streaming()
        if fill.origin_failed:
            # The origin just failed for this key: a stale copy answers
            # now, without asking it again (RFC 5861 §4).
            answer = self._serve_stale(request, stale)
            if answer is not None:
                return answer
        if not self._may_share(fill, ask):
            # Not shareable, failed, not fresh for this request, or
            # another variant: fetch alone, once.
            return await self.fetch(request, ask, stale, shared=False)
        x_cache = "REVALIDATED" if fill.revalidated else "HIT"

        return await self._serve_fill(request, ask, fill, x_cache)

    def _may_share(self, fill: Fill, ask: Ask) -> bool:
        """True when ``ask`` may be answered with ``fill``'s reply: its
        variant, and fresh for it now, like a stored response (RFC 9111
        §4): a reply stale on arrival is not handed to the requests
        that joined its fill (and one whose body is still being stored
        looks fresh only as long as a stored one would)."""
        now = self.clock()
        if fill.state is FillState.STREAMING and fill.policy is not None:
            return fill.vary_values == freshness.vary_values(
                fill.vary_fields, ask.headers) and self._is_fresh(
                fill.policy, now - fill.age_zero, ask.cc)
        entry = fill.entry
        if fill.state is not FillState.DONE or entry is None:
            return False

        return entry.matches(ask.headers) and \
            self._is_fresh(entry.policy, entry.age(now), ask.cc)

    async def _run_fill(
        self, ask: Ask, fill: Fill, stale: Entry | None
    ) -> OriginResponse | None:
        """Ask the origin for a fill.

        Returns None when the fill is now STREAMING or DONE (serve from
        it), or the origin's reply when it is not shareable (the fill is
        UNSHARED). Raises OriginError (the fill is FAILED).
        """
        headers = self.origin.forward_headers(ask.headers, ask.site.hostname,
                                              ask.remote)
        for name in FILL_STRIPPED:
            headers.popall(name, None)
        if stale is not None:
            _add_validators(headers, stale)
        request_time = self.clock()
        try:
            reply = await self._ask_upstream(ask, headers)
        except OriginError as exc:
            self.fills.forget(fill)
            fill.origin_failed = True
            fill.finish(FillState.FAILED, exc)
            raise
        response_time = self.clock()
        if stale is not None and reply.status == 304:
            reply.close()
            fill.entry = await self._refresh(ask, stale, reply,
                                             request_time, response_time)
            if fill.entry is None:
                # RFC 9111 §4.3.4: the copy the 304 was about went
                # (purged, evicted) while it was awaited, or cannot be
                # used; ask again unconditionally. That request is
                # later than any purge, so its result may be kept.
                log.info("stored copy gone or unusable after "
                         "revalidation, fetching it whole key=%s",
                         ask.primary)
                if fill.purged:
                    fill.purged = False
                    self.fills.readmit(fill)
                return await self._run_fill(ask, fill, None)
            fill.revalidated = True
            self.fills.forget(fill)
            fill.finish(FillState.DONE)
            return None
        fill.origin_failed = \
            reply.status in freshness.STALE_IF_ERROR_STATUSES
        is_covered_error = fill.origin_failed and \
            self._may_serve_on_error(stale)
        if not is_covered_error and self._start_stream(
            ask, fill, reply, request_time, response_time
        ):
            return None
        self.fills.forget(fill)
        fill.finish(FillState.UNSHARED)

        return reply

    async def _ask_upstream(
        self, ask: Ask, headers: CIMultiDict[str], method: str = "GET"
    ) -> OriginResponse:
        """Ask the key's parents in order, then the origin."""
        candidates = self.upstreams.candidates(ask.site, ask.primary,
                                               ask.looped)
        for base in candidates:
            started = time.monotonic()
            try:
                reply = await self.origin.request(method, base, ask.target,
                                                  headers)
            except OriginError as exc:
                if base == ask.site.origin:
                    raise
                log.warning("parent failed parent=%s error=%s", base, exc)
                self.upstreams.mark_down(base)
                continue
            self.metrics.observe_origin(time.monotonic() - started)
            return reply
        raise AssertionError("the origin is always the last candidate")

    def _start_stream(
        self, ask: Ask, fill: Fill, reply: OriginResponse,
        request_time: float, response_time: float,
    ) -> bool:
        """Start copying a storable reply into the cache; False if not."""
        if not freshness.is_storable("GET", reply.status, ask.headers,
                                     reply.headers):
            return False
        if not self.storage.is_writable():
            return False
        meta = build_meta(ask, reply, request_time, response_time)
        policy = freshness.policy_for(
            meta.status, CIMultiDict(meta.headers), meta.date_value,
            meta.negative_ttl,
        )
        # Policy: an object that is never fresh and cannot be revalidated
        # would only cost disk space.
        if policy.lifetime <= 0 and not policy.has_validator:
            return False
        try:
            fd, temp = self.storage.new_temp()
        except StorageError:
            return False
        headers = CIMultiDict(meta.headers)
        # The origin's Age is repeated only when valid (RFC 9111 §5.1).
        age_value = 0.0 if meta.age_invalid else meta.age_value
        age = freshness.current_age(age_value, meta.date_value,
                                    request_time, response_time, response_time)
        headers["Age"] = str(int(age))
        fill.policy = policy
        # The age freshness is judged by (an invalid Age counts).
        fill.age_zero = response_time - freshness.current_age(
            meta.age_value, meta.date_value, request_time, response_time,
            response_time)
        fill.vary_fields = meta.vary_fields
        fill.vary_values = meta.vary_values
        fill.withheld_fields = policy.withheld_fields
        fill.start_stream(reply, headers, fd, temp)

        async def copy() -> None:
            try:
                await fill.copy_body(reply, self.storage, meta, fd, temp)
            finally:
                self.fills.forget(fill)

        self.fills.spawn(copy())

        return True

    async def _refresh(
        self, ask: Ask, stale: Entry, reply: OriginResponse,
        request_time: float, response_time: float,
    ) -> Entry | None:
        """Merge a 304 into the stored entry (RFC 9111 §3.2, §4.3.4);
        None when that entry is no longer stored, or no longer usable
        (the 304 says ``Vary: *``: it is then dropped).

        A Vary the 304 changes decides later matches (§4.1), with this
        request's values: the origin validated the copy for it.
        """
        fresh = reply.headers.copy()
        # A parent edge's 304 carries its own X-Cache: not ours to keep.
        for name in NOT_STORED:
            fresh.popall(name, None)
        ages = reply.headers.getall("Age", [])
        date_value = parse_http_date(fresh.get("Date"))
        if date_value is None:
            date_value = response_time
            fresh["Date"] = format_http_date(response_time)
        headers = freshness.merge_304(stale.meta.headers, fresh)
        fields = freshness.get_vary_fields(CIMultiDict(headers))
        if "*" in fields:
            self.storage.remove(stale)
            return None
        meta = dataclasses.replace(
            stale.meta,
            headers=headers,
            vary_fields=fields,
            vary_values=freshness.vary_values(fields, ask.headers),
            request_time=request_time,
            response_time=response_time,
            date_value=date_value,
            age_value=freshness.parse_age(ages),
            age_invalid=not freshness.is_valid_age(ages),
        )

        return await self.storage.update(stale, meta)

    async def _serve_fill(
        self, request: web.BaseRequest, ask: Ask, fill: Fill, x_cache: str
    ) -> web.StreamResponse:
        if fill.state is FillState.STREAMING and "Range" in request.headers:
            if fill.length is not None and \
                    not self.storage.can_hold(fill.length):
                # It will not be kept to cut ranges from: the origin
                # answers this one (RFC 9110 §14.2).
                return await self.pass_through(request, ask, "MISS")
            # Ranges are cut from the complete object.
            await fill.settled()
        if fill.state is FillState.DONE:
            entry = fill.entry
            answer = None if entry is None else \
                self.serve(request, entry, entry.age(self.clock()), x_cache)
            # Not kept, or its body already gone: the origin answers.
            return answer or await self.pass_through(request, ask, "MISS")
        if fill.state is not FillState.STREAMING:
            return respond.simple(502, x_cache)
        headers = fill.headers.copy()
        respond.withhold(headers, fill.withheld_fields, x_cache)
        headers["X-Cache"] = x_cache
        if fill.status == 200 and freshness.is_conditional_match(
            request.headers, headers.get("ETag"), headers.get("Last-Modified")
        ):
            return respond.not_modified(headers)
        body = None if request.method == "HEAD" else fill.read()

        return await respond.stream(request, fill.status, fill.reason, headers,
                                    fill.length, body)

    def _refresh_in_background(self, ask: Ask, entry: Entry) -> None:
        """Revalidate ``entry`` once, without a client (RFC 5861 §3)."""
        if self.fills.get(ask.primary) is not None:
            return
        fill = self.fills.start(ask.primary, shared=True)

        async def refresh() -> None:
            try:
                reply = await self._run_fill(ask, fill, entry)
            except OriginError:
                return
            if reply is not None:
                reply.close()

        self.fills.spawn(refresh())

    # -- everything else -------------------------------------------------

    async def pass_through(
        self, request: web.BaseRequest, ask: Ask, x_cache: str = "BYPASS"
    ) -> web.StreamResponse:
        """Forward a request uncached; invalidate after a successful unsafe one."""
        headers = self.origin.forward_headers(ask.headers, ask.site.hostname,
                                              ask.remote)
        body = None
        if request.body_exists and ask.method not in BODILESS_METHODS:
            body = TimedBody(request.content, self.body_timeout)
            await respond.continue_if_expected(request)
        try:
            if ask.method == "HEAD":
                # A parent may hold it: HEAD takes the path of a fill.
                reply = await self._ask_upstream(ask, headers, "HEAD")
            else:
                reply = await self.origin.request(
                    ask.method, ask.site.origin, ask.target, headers,
                    body.chunks() if body else None, request.content_length,
                )
        except OriginError as exc:
            if body is not None and body.is_expired:
                # RFC 9110 §15.5.9: the client did not finish in time.
                log.info("request body timed out peer=%s seconds=%s",
                         ask.remote or "-", self.body_timeout)
                return respond.simple(408, x_cache, close=True)
            log.warning("origin failed key=%s error=%s", ask.primary, exc)
            return respond.simple(exc.status, x_cache)
        if ask.method not in SAFE_METHODS and 200 <= reply.status < 400:
            self.invalidate(ask, reply)

        return await self.relay(request, reply, x_cache)

    def invalidate(self, ask: Ask, reply: OriginResponse) -> None:
        """Drop stored responses for the URI and its Location fields (§4.4)."""
        doomed = {ask.primary}
        for name in ("Location", "Content-Location"):
            value = reply.headers.get(name)
            if value and value.startswith("/"):
                path, _, query = value.partition("?")
                doomed.add(cachekey.primary_key(
                    ask.site.hostname, path, query, ask.site.sort_query
                ))
        # A fill in flight for them (its body still arriving or being
        # committed) must not bring them back either.
        self.fills.purge(doomed.__contains__)
        self.storage.purge(doomed.__contains__)

    async def relay(
        self, request: web.BaseRequest, reply: OriginResponse, x_cache: str
    ) -> web.StreamResponse:
        """Stream an origin reply to the client without storing it."""
        headers = reply.headers.copy()
        headers.popall("X-Cache", None)
        headers["X-Cache"] = x_cache
        length = reply.length
        if request.method == "HEAD":
            body = None
            if reply.head_length is not None:
                headers["Content-Length"] = reply.head_length
                length = None
        else:
            body = reply.chunks()
        try:
            return await respond.stream(request, reply.status, reply.reason,
                                        headers, length, body)
        finally:
            reply.close()


def _add_validators(headers: CIMultiDict[str], stale: Entry) -> None:
    """Make the fill conditional on the stored validators (RFC 9111 §4.3.1)."""
    if stale.policy.etag is not None:
        headers["If-None-Match"] = stale.policy.etag
    if stale.policy.last_modified is not None:
        headers["If-Modified-Since"] = stale.policy.last_modified


def build_meta(
    ask: Ask, reply: OriginResponse, request_time: float, response_time: float
) -> ObjectMeta:
    """Return the metadata to store for a reply (body length still 0).

    An invalid or missing Date is replaced with the receipt time (RFC
    9110 §6.6.1), so the age computation never sees a bogus date.
    """
    headers = end_to_end(reply.headers)
    for name in NOT_STORED:
        headers.popall(name, None)
    date_value = parse_http_date(headers.get("Date"))
    if date_value is None:
        date_value = response_time
        headers.popall("Date", None)
        headers["Date"] = format_http_date(response_time)
    ages = reply.headers.getall("Age", [])
    fields = freshness.get_vary_fields(headers)
    values = freshness.vary_values(fields, ask.headers)
    name = cachekey.storage_name(ask.primary, repr(list(zip(fields, values))))

    return ObjectMeta(
        primary=ask.primary,
        name=name,
        status=reply.status,
        reason=reply.reason,
        headers=tuple(headers.items()),
        vary_fields=fields,
        vary_values=values,
        request_time=request_time,
        response_time=response_time,
        date_value=date_value,
        age_value=freshness.parse_age(ages),
        age_invalid=not freshness.is_valid_age(ages),
        length=0,
        body_file=new_body_file(name),
        negative_ttl=ask.site.negative_ttl,
    )
