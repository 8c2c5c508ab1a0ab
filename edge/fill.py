"""Request collapsing: one origin fetch per key, shared as it arrives.

Why a file and not a queue: the body of a shareable reply is written to
a temporary file as it arrives, and every client (the one that caused
the fetch included) reads that file at its own pace with ``pread``.
Memory per transfer is then one read chunk whatever the object size, a
slow client never slows the fill or the other clients, and a client
that hangs up leaves the fill running for the rest. Reads hit the page
cache, so they do not block the loop in practice.

The fill runs in a task of its own. When the reply turns out not to be
shareable (private, Set-Cookie, an error status), it is handed to the
client that asked for it alone and the followers fetch for themselves.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
from typing import Any, AsyncIterator, Callable, Coroutine

from multidict import CIMultiDict

from edge.errors import EdgeError, OriginError, OriginProtocolError, StorageError
from edge.freshness import Policy
from edge.origin import OriginResponse
from edge.storage import Entry, ObjectMeta, Storage

log = logging.getLogger("edge.fill")

# Bytes per read from a fill's file; bounds memory per client.
READ_CHUNK = 256 * 1024


class FillState(enum.Enum):
    """Where a fill is in its life."""

    WAITING = "waiting"      # origin headers not yet in
    STREAMING = "streaming"  # body arriving; readers may follow
    DONE = "done"            # complete; ``entry`` set unless not kept
    UNSHARED = "unshared"    # reply not shareable: followers fetch alone
    FAILED = "failed"        # ``error`` set

    @property
    def is_settled(self) -> bool:
        """True once nothing more will happen to the fill."""
        return self in (FillState.DONE, FillState.UNSHARED, FillState.FAILED)


class Fill:
    """One origin fetch for one primary key, followed by many clients."""

    def __init__(self, primary: str) -> None:
        self.primary = primary
        self.state = FillState.WAITING
        self.status = 0
        self.reason = ""
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.length: int | None = None
        self.vary_fields: tuple[str, ...] = ()
        self.vary_values: tuple[str | None, ...] = ()
        # Fields followers (answered as HIT) must not get (no-cache="..").
        self.withheld_fields: tuple[str, ...] = ()
        self.written = 0
        self.entry: Entry | None = None
        self.error: EdgeError | None = None
        self.revalidated = False
        # The origin failed or answered 500/502/503/504: followers with
        # a stale copy serve it instead of asking again (RFC 5861 §4).
        self.origin_failed = False
        # Set by a purge while the fill runs: do not keep the result.
        self.purged = False
        # While STREAMING: the reply's reuse policy, and the clock time
        # at which its age was 0 (its age is ``now - age_zero``), so
        # followers share it only while fresh (RFC 9111 §4).
        self.policy: Policy | None = None
        self.age_zero = 0.0
        self._share_fd = -1
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Wake every client waiting on this fill."""
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def changed(self) -> None:
        """Wait until the fill makes progress or settles."""
        await self._event.wait()

    async def settled_or_streaming(self) -> None:
        """Wait until headers are known (or the fill ended)."""
        while self.state is FillState.WAITING:
            await self.changed()

    async def settled(self) -> None:
        """Wait until the fill ended."""
        while not self.state.is_settled:
            await self.changed()

    def finish(self, state: FillState, error: EdgeError | None = None) -> None:
        """Settle the fill and wake its followers."""
        self.state = state
        self.error = error
        if self._share_fd >= 0:
            os.close(self._share_fd)
            self._share_fd = -1
        self.notify()

    def read(self) -> AsyncIterator[bytes]:
        """Return the body as it arrives; call while STREAMING.

        Reads go through a descriptor of the fill's file taken now, so
        what happens to the file afterwards (committed, evicted, purged)
        cannot cut them short. The iterator raises the fill's error if
        the fill fails after yielding what had arrived: the caller must
        then end its client connection abnormally, never as a complete
        response.
        """
        assert self.state is FillState.STREAMING

        return self._read(os.dup(self._share_fd))

    async def _read(self, fd: int) -> AsyncIterator[bytes]:
        offset = 0
        try:
            while True:
                if offset < self.written:
                    size = min(READ_CHUNK, self.written - offset)
                    data = os.pread(fd, size, offset)
                    if not data:
                        raise OriginProtocolError("fill file shrank")
                    offset += len(data)
                    yield data
                elif self.state is FillState.DONE:
                    return
                elif self.state is FillState.FAILED:
                    raise self.error or OriginProtocolError("fill failed")
                else:
                    await self.changed()
        finally:
            os.close(fd)

    def start_stream(
        self, response: OriginResponse, headers: CIMultiDict[str],
        fd: int, temp: str,
    ) -> None:
        """Switch to STREAMING with the reply's status and client headers."""
        self.status = response.status
        self.reason = response.reason
        self.headers = headers
        self.length = response.length
        self._share_fd = os.open(temp, os.O_RDONLY)
        self.state = FillState.STREAMING
        self.notify()

    async def copy_body(
        self,
        response: OriginResponse,
        storage: Storage,
        meta: ObjectMeta,
        fd: int,
        temp: str,
    ) -> None:
        """Copy the origin body into the temp file, then commit it.

        Runs as a task independent of any client. Never raises: the
        outcome is the fill's state.
        """
        committing = False
        try:
            async for chunk in response.chunks():
                storage.write(fd, chunk, temp)
                self.written += len(chunk)
                self.notify()
            committing = True
            if not storage.can_hold(self.written):
                # Served to its readers, kept by nobody: DONE without
                # an entry.
                log.info("object bigger than the disk cache not kept "
                         "key=%s bytes=%d", self.primary, self.written)
                storage.discard(fd, temp)
                self.finish(FillState.DONE)
                return
            complete = ObjectMeta(**{**meta.__dict__, "length": self.written})
            self.entry = await storage.commit(complete, fd, temp)
            if self.purged:
                storage.remove(self.entry)
            self.finish(FillState.DONE)
        except (OriginError, StorageError) as exc:
            log.warning("fill failed key=%s error=%s", self.primary, exc)
            if not committing:
                storage.discard(fd, temp)
            self.finish(FillState.FAILED, exc)
        except BaseException as exc:
            if not committing:
                storage.discard(fd, temp)
            self.finish(FillState.FAILED, OriginProtocolError(repr(exc)))
            raise
        finally:
            response.close()


class FillRegistry:
    """The fills in flight, at most one per primary key."""

    def __init__(self) -> None:
        self._fills: dict[str, Fill] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._fills)

    def get(self, primary: str) -> Fill | None:
        """Return the unsettled fill for ``primary``, or None."""
        fill = self._fills.get(primary)
        if fill is not None and fill.state.is_settled:
            del self._fills[primary]
            return None

        return fill

    def start(self, primary: str, shared: bool) -> Fill:
        """Create a fill; register it for followers when ``shared``."""
        fill = Fill(primary)
        if shared:
            self._fills[primary] = fill

        return fill

    def readmit(self, fill: Fill) -> None:
        """Offer ``fill`` to followers again (a purge had withdrawn it)
        unless another fill for its key is in flight."""
        if fill.primary not in self._fills:
            self._fills[fill.primary] = fill

    def purge(self, match: Callable[[str], bool]) -> set[str]:
        """Mark fills for matching keys so their results are not kept;
        return their keys."""
        stopped = set()
        for primary, fill in list(self._fills.items()):
            if match(primary):
                fill.purged = True
                del self._fills[primary]
                stopped.add(primary)

        return stopped

    def forget(self, fill: Fill) -> None:
        """Stop offering ``fill`` to new followers."""
        if self._fills.get(fill.primary) is fill:
            del self._fills[fill.primary]

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task kept alive until it ends.

        Fill tasks are not tied to the client that started them, so a
        client hanging up never cancels a fill others depend on.
        """
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_all(self) -> None:
        """Wait for every fill task to end."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def cancel_all(self) -> int:
        """Cancel every fill task and wait for them; return how many.

        A cancelled fill deletes its temporary file and is not kept
        (``Fill.copy_body``). Used at shutdown, once no client is left
        to receive what the fills would bring.
        """
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

        return len(tasks)
