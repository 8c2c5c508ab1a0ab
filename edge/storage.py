"""Cache storage: a disk tier that survives restarts, and a memory tier.

Layout under ``cache_dir``::

    tmp/<random>.part          bodies being filled (deleted at start)
    objects/ab/<name>.meta     metadata (JSON), the commit point
    objects/ab/<name>.<gen>.body

An object becomes visible only when its metadata file is renamed into
place, after the body it names was written, checked against its length,
fsynced and renamed. So a crash at any moment leaves either the old
object, the new one, or an unreferenced body that ``open`` deletes. The
metadata names its body by generation, so replacing an object never
pairs new metadata with an old body or the reverse.

Every committed object lives on disk; small ones are also kept in
memory (bounded, LRU) so hits on them need no file access. The disk
tier is bounded by ``disk_bytes`` with LRU eviction.

A disk error (full, unwritable) switches the cache to pass-through for
``DEGRADED_SECONDS`` and logs it: the edge keeps answering from the
origin instead of failing requests.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import os
import secrets
import time
from typing import Any, BinaryIO, Callable, Iterator

from multidict import CIMultiDict

from edge import freshness
from edge.config import DEFAULT_MAX_VARIANTS
from edge.errors import StorageError

log = logging.getLogger("edge.storage")

# Objects up to this size are also kept in memory: bigger ones gain
# little over sendfile from the page cache and would crowd the tier.
MEMORY_OBJECT_MAX = 1024 * 1024
# After a disk error, retry writing after this long.
DEGRADED_SECONDS = 30.0
_FORMAT = 1

# A body to serve: bytes from the memory tier, or the open body file.
Body = bytes | BinaryIO


@dataclasses.dataclass(frozen=True)
class ObjectMeta:
    """Everything stored about one response besides its body."""

    primary: str
    name: str
    status: int
    reason: str
    # End-to-end fields as they will be sent: no hop-by-hop fields, no
    # Age and no Content-Length (both are generated when serving).
    headers: tuple[tuple[str, str], ...]
    vary_fields: tuple[str, ...]
    vary_values: tuple[str | None, ...]
    request_time: float
    response_time: float
    date_value: float
    age_value: float
    length: int
    body_file: str
    negative_ttl: float = 0.0
    # The origin's Age was not a delta-seconds: ``age_value`` is then
    # the largest age, for freshness only (see ``Entry.sent_age``).
    age_invalid: bool = False

    def to_json(self) -> bytes:
        """Serialise for the ``.meta`` file."""
        data = dataclasses.asdict(self)
        data["format"] = _FORMAT

        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ObjectMeta:
        """Parse a ``.meta`` file; raises ValueError/KeyError/TypeError."""
        data: dict[str, Any] = json.loads(raw)
        if data.pop("format") != _FORMAT:
            raise ValueError("unknown format")
        data["headers"] = tuple((str(n), str(v)) for n, v in data["headers"])
        data["vary_fields"] = tuple(data["vary_fields"])
        data["vary_values"] = tuple(data["vary_values"])

        return cls(**data)


class Entry:
    """A stored object as the serving path uses it.

    Everything a hit needs that does not depend on the request or the
    time is computed once here: the policy and the response headers.
    """

    __slots__ = ("meta", "policy", "headers", "body", "path", "etag", "wire")

    def __init__(self, meta: ObjectMeta, path: str) -> None:
        self.meta = meta
        self.path = path
        self.headers = CIMultiDict(meta.headers)
        self.policy = freshness.policy_for(
            meta.status, self.headers, meta.date_value, meta.negative_ttl
        )
        self.etag = self.policy.etag
        self.body: bytes | None = None
        # Status line and headers of a HIT, built on first fast-path use.
        self.wire: bytes | None = None

    def age(self, now: float) -> float:
        """Return the current age in seconds (RFC 9111 §4.2.3)."""
        m = self.meta

        return freshness.current_age(
            m.age_value, m.date_value, m.request_time, m.response_time, now
        )

    def sent_age(self, age: float, now: float) -> float:
        """Return the Age to send for an answer computed at ``age``.

        That is ``age``, except when the origin's Age was invalid: it
        made the response count as very old, but repeating a made-up
        2^31 to clients would mislead them, so the age sent is the one
        this cache can vouch for, the origin's ignored.
        """
        if not self.meta.age_invalid:
            return age
        m = self.meta

        return freshness.current_age(
            0.0, m.date_value, m.request_time, m.response_time, now
        )

    def matches(self, request_headers: freshness.Headers) -> bool:
        """True when the request selects this variant (RFC 9111 §4.1)."""
        fields = self.meta.vary_fields
        if not fields:
            return True

        return freshness.vary_values(fields, request_headers) == \
            self.meta.vary_values


class Storage:
    """The cache directory and its in-memory index.

    Called from the event loop only. Small file operations (open,
    rename, unlink of metadata) are done inline; fsync runs in the
    default executor because it can take long.
    """

    def __init__(
        self,
        root: str,
        disk_bytes: int,
        memory_bytes: int,
        clock: Callable[[], float] = time.monotonic,
        max_variants: int = DEFAULT_MAX_VARIANTS,
    ) -> None:
        self.root = root
        self.disk_bytes = disk_bytes
        self.memory_bytes = memory_bytes
        # Variants kept per primary key, the oldest stored dropped first.
        self.max_variants = max_variants
        self._clock = clock
        self._variants: dict[str, list[Entry]] = {}
        self._lru: collections.OrderedDict[str, Entry] = \
            collections.OrderedDict()
        self._memory: collections.OrderedDict[str, int] = \
            collections.OrderedDict()
        self.bytes = 0
        self.memory_used = 0
        self.evictions = 0
        self._degraded_until = 0.0
        self._tmp = os.path.join(root, "tmp")
        self._objects = os.path.join(root, "objects")

    # -- start -----------------------------------------------------------

    def open(self) -> None:
        """Create the directories, delete leftovers, load the index.

        Blocking; called once at start before serving. An unusable
        directory is logged and leaves the cache empty and degraded
        (the CLI refuses to start on one: see ``prepare_directory``).
        """
        try:
            prepare_directory(self.root)
            for name in os.listdir(self._tmp):
                os.unlink(os.path.join(self._tmp, name))
            self._load_all()
        except OSError as exc:
            self._degrade("open", exc, self.root)
        self._evict()
        log.info("cache opened objects=%d bytes=%d", len(self._lru), self.bytes)

    def _load_all(self) -> None:
        loaded: list[Entry] = []
        for shard in os.listdir(self._objects):
            folder = os.path.join(self._objects, shard)
            names = set(os.listdir(folder))
            referenced: set[str] = set()
            for file in names:
                if file.endswith(".meta"):
                    entry = self._load_one(folder, file, names)
                    if entry is not None:
                        loaded.append(entry)
                        referenced.add(entry.meta.body_file)
            for file in names - referenced:
                if not file.endswith(".meta"):
                    os.unlink(os.path.join(folder, file))
        loaded.sort(key=lambda e: e.meta.response_time)
        for entry in loaded:
            self._index(entry)
            variants = self._variants[entry.meta.primary]
            if len(variants) > self.max_variants:
                # Kept under a larger max_variants before this start.
                self.remove(variants[0])

    def _load_one(self, folder: str, file: str, names: set[str]) -> Entry | None:
        meta_path = os.path.join(folder, file)
        try:
            with open(meta_path, "rb") as fh:
                meta = ObjectMeta.from_json(fh.read())
            body_path = os.path.join(folder, meta.body_file)
            if meta.body_file not in names or \
                    os.path.getsize(body_path) != meta.length:
                raise ValueError("body missing or of the wrong length")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("cache object dropped file=%s reason=%s", file, exc)
            os.unlink(meta_path)
            return None

        return Entry(meta, body_path)

    # -- lookup ----------------------------------------------------------

    def get(self, primary: str, request_headers: freshness.Headers) -> Entry | None:
        """Return the stored variant the request selects, or None."""
        variants = self._variants.get(primary)
        if not variants:
            return None
        # Newest first: a later response's Vary decides (RFC 9111 §4.1).
        for entry in reversed(variants):
            if entry.matches(request_headers):
                self._lru.move_to_end(entry.meta.name)
                return entry

        return None

    def read_body(self, entry: Entry) -> bytes | None:
        """Return the body from memory, loading small objects on first use.

        Returns None for objects served from disk (too big for memory),
        and for a small object whose body file is missing or of the
        wrong length: that entry is dropped (``is_stored`` turns false).
        Blocking read of at most ``MEMORY_OBJECT_MAX`` bytes.
        """
        if entry.body is not None:
            if entry.meta.name in self._memory:
                self._memory.move_to_end(entry.meta.name)
            return entry.body
        if not self._fits_memory(entry.meta.length):
            return None
        try:
            with open(entry.path, "rb") as fh:
                body = fh.read()
        except OSError as exc:
            self._drop_lost(entry, exc.strerror or str(exc))
            return None
        if len(body) != entry.meta.length:
            self._drop_lost(entry, f"{len(body)} bytes on disk")
            return None
        self._remember(entry, body)

        return body

    def get_body(self, entry: Entry) -> Body | None:
        """Return the body to serve: bytes from memory, or the body file
        open for reading (the caller closes it).

        None when the body is missing or of the wrong length: the entry
        is dropped and logged, and the caller answers as for a miss, so
        a lost file costs one origin fetch, never a client's answer.
        Blocking: an open, or a read of at most ``MEMORY_OBJECT_MAX``.
        """
        body = self.read_body(entry)
        if body is not None or self._fits_memory(entry.meta.length):
            return body
        try:
            fobj = open(entry.path, "rb")
        except OSError as exc:
            self._drop_lost(entry, exc.strerror or str(exc))
            return None
        if os.fstat(fobj.fileno()).st_size != entry.meta.length:
            fobj.close()
            self._drop_lost(entry, "body file of the wrong length")
            return None

        return fobj

    def is_stored(self, entry: Entry) -> bool:
        """True while ``entry`` is the indexed object of its name (not
        purged, evicted or replaced since it was looked up)."""
        return self._lru.get(entry.meta.name) is entry

    def _drop_lost(self, entry: Entry, reason: str) -> None:
        if self.is_stored(entry):
            log.warning("cache object lost its body, dropped key=%s file=%s "
                        "reason=%s", entry.meta.primary, entry.path, reason)
        self.remove(entry)

    def _fits_memory(self, length: int) -> bool:
        return length <= min(MEMORY_OBJECT_MAX, self.memory_bytes)

    def _remember(self, entry: Entry, body: bytes) -> None:
        entry.body = body
        self._memory[entry.meta.name] = len(body)
        self.memory_used += len(body)
        while self.memory_used > self.memory_bytes and self._memory:
            name, size = self._memory.popitem(last=False)
            self.memory_used -= size
            dropped = self._lru.get(name)
            if dropped is not None:
                dropped.body = None

    def get_plain(self, primary: str) -> Entry | None:
        """Return the only variant of ``primary`` if it has no Vary, else None."""
        variants = self._variants.get(primary)
        if variants is None or len(variants) != 1:
            return None
        entry = variants[0]
        if entry.meta.vary_fields:
            return None
        self._lru.move_to_end(entry.meta.name)

        return entry

    def entries(self) -> Iterator[Entry]:
        """Iterate over every stored object (for purge and metrics)."""
        return iter(list(self._lru.values()))

    @property
    def objects(self) -> int:
        """Number of stored objects."""
        return len(self._lru)

    # -- writing ---------------------------------------------------------

    def can_hold(self, length: int) -> bool:
        """True when an object of ``length`` bytes fits the disk tier;
        a bigger one would evict everything, itself included."""
        return length <= self.disk_bytes

    def is_writable(self) -> bool:
        """False while degraded to pass-through after a disk error."""
        return self._clock() >= self._degraded_until

    def new_temp(self) -> tuple[int, str]:
        """Create a temporary body file; return its fd and path.

        Raises StorageError (and degrades) when the directory is unusable.
        """
        path = os.path.join(self._tmp, secrets.token_hex(12) + ".part")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            self._degrade("create", exc, path)
            raise StorageError(f"cannot create {path}: {exc}") from None

        return fd, path

    def write(self, fd: int, data: bytes, path: str) -> None:
        """Append ``data`` to the temporary file ``path`` open as ``fd``.

        Raises StorageError (and degrades) on failure.
        """
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError as exc:
            self._degrade("write", exc, path)
            raise StorageError(f"cannot write {path}: {exc.strerror}") from None

    def discard(self, fd: int, path: str) -> None:
        """Close and delete a temporary body that will not be committed."""
        for action in (lambda: os.close(fd), lambda: os.unlink(path)):
            try:
                action()
            except OSError:
                pass

    async def commit(self, meta: ObjectMeta, fd: int, temp: str) -> Entry:
        """Make a filled body visible under ``meta``; return its entry.

        The body is checked against ``meta.length``, fsynced and renamed,
        then the metadata is written the same way. A variant with the
        same name is replaced. Raises StorageError (and deletes the temp
        file) on any failure.
        """
        folder = os.path.join(self._objects, meta.name[:2])
        body_path = os.path.join(folder, meta.body_file)
        try:
            if os.fstat(fd).st_size != meta.length:
                raise StorageError(f"body of {meta.primary} has wrong length")
            await asyncio.get_running_loop().run_in_executor(
                None, os.fsync, fd
            )
            os.close(fd)
            fd = -1
            os.makedirs(folder, exist_ok=True)
            os.rename(temp, body_path)
            await self._write_meta(folder, meta)
        except OSError as exc:
            if fd >= 0:
                self.discard(fd, temp)
            self._degrade("commit", exc, body_path, meta.primary)
            raise StorageError(f"commit failed: {exc}") from None
        except StorageError:
            self.discard(fd, temp)
            raise
        entry = Entry(meta, body_path)
        self._replace(entry)

        return entry

    async def update(self, entry: Entry, meta: ObjectMeta) -> Entry | None:
        """Replace an object's metadata, keeping its body (after a 304).

        Returns None and changes nothing when ``entry`` is no longer
        stored, before or while the new metadata is written (purged,
        evicted or replaced): RFC 9111 §4.3.4 lets a 304 update only a
        stored response, and its body may be gone. On a disk error the
        new metadata is kept in memory only.
        """
        if not self.is_stored(entry):
            return None
        folder = os.path.dirname(entry.path)
        temp = None
        try:
            temp = await self._stage_meta(meta)
        except StorageError:
            pass  # ``write`` logged it and degraded the cache
        except OSError as exc:
            self._degrade("update", exc, folder, meta.primary)
        # No await from this check to the index change below.
        if not self.is_stored(entry):
            if temp is not None:
                _unlink_quietly(temp)
            return None
        if temp is not None:
            try:
                os.rename(temp, os.path.join(folder, meta.name + ".meta"))
            except OSError as exc:
                _unlink_quietly(temp)
                self._degrade("update", exc, folder, meta.primary)
        fresh = Entry(meta, entry.path)
        fresh.body = entry.body
        self._replace(fresh, keep_body_file=True)

        return fresh

    async def _write_meta(self, folder: str, meta: ObjectMeta) -> None:
        temp = await self._stage_meta(meta)
        os.rename(temp, os.path.join(folder, meta.name + ".meta"))

    async def _stage_meta(self, meta: ObjectMeta) -> str:
        """Write ``meta`` to a fsynced file in ``tmp/``; return its path."""
        temp = os.path.join(self._tmp, secrets.token_hex(12) + ".meta")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            self.write(fd, meta.to_json(), temp)
            await asyncio.get_running_loop().run_in_executor(
                None, os.fsync, fd
            )
        except BaseException:
            os.close(fd)
            _unlink_quietly(temp)
            raise
        os.close(fd)

        return temp

    def _replace(self, entry: Entry, keep_body_file: bool = False) -> None:
        old = self._lru.get(entry.meta.name)
        if old is not None:
            self._unindex(old)
            if not keep_body_file and old.path != entry.path:
                _unlink_quietly(old.path)
        # A variant stored under another name that ``entry`` now stands
        # for (its Vary was changed by a 304 since) goes.
        meta = entry.meta
        for other in list(self._variants.get(meta.primary, ())):
            if other.meta.vary_fields == meta.vary_fields and \
                    other.meta.vary_values == meta.vary_values:
                self.remove(other)
        self._index(entry)
        variants = self._variants[meta.primary]
        while len(variants) > self.max_variants:
            self.remove(variants[0])
            self.evictions += 1
        if entry.body is not None:
            self._remember(entry, entry.body)
        elif self._fits_memory(entry.meta.length):
            self.read_body(entry)
        self._evict()

    def _index(self, entry: Entry) -> None:
        self._variants.setdefault(entry.meta.primary, []).append(entry)
        self._lru[entry.meta.name] = entry
        self.bytes += entry.meta.length

    def _unindex(self, entry: Entry) -> None:
        name = entry.meta.name
        self._lru.pop(name, None)
        self.bytes -= entry.meta.length
        variants = self._variants.get(entry.meta.primary, [])
        if entry in variants:
            variants.remove(entry)
        if not variants:
            self._variants.pop(entry.meta.primary, None)
        size = self._memory.pop(name, None)
        if size is not None:
            self.memory_used -= size

    def _evict(self) -> None:
        while self.bytes > self.disk_bytes and self._lru:
            entry = next(iter(self._lru.values()))
            self.remove(entry)
            self.evictions += 1

    def remove(self, entry: Entry) -> None:
        """Delete one object from index and disk (metadata first)."""
        if self._lru.get(entry.meta.name) is not entry:
            return
        self._unindex(entry)
        folder = os.path.dirname(entry.path)
        _unlink_quietly(os.path.join(folder, entry.meta.name + ".meta"))
        _unlink_quietly(entry.path)

    def purge(self, match: Callable[[str], bool]) -> list[str]:
        """Remove every object whose primary key ``match`` accepts;
        return their primary keys (one per variant)."""
        doomed = [e for e in self._lru.values() if match(e.meta.primary)]
        for entry in doomed:
            self.remove(entry)

        return [entry.meta.primary for entry in doomed]

    def _degrade(
        self, action: str, exc: OSError, path: str, key: str = "-"
    ) -> None:
        self._degraded_until = self._clock() + DEGRADED_SECONDS
        log.error(
            "cache disk error, pass-through for %ss action=%s file=%s "
            "key=%s error=%s", DEGRADED_SECONDS, action,
            exc.filename or path, key, exc.strerror or exc,
        )


def prepare_directory(root: str) -> None:
    """Create ``root``'s ``tmp`` and ``objects`` and prove ``tmp`` takes
    a file; raise OSError (with the failing path) when it cannot.

    Blocking. ``cdn-edge check`` and ``serve`` call it before anything
    else, so a cache directory that can never work stops the edge at
    start instead of degrading it for good.
    """
    tmp = os.path.join(root, "tmp")
    os.makedirs(tmp, exist_ok=True)
    os.makedirs(os.path.join(root, "objects"), exist_ok=True)
    probe = os.path.join(tmp, f"probe-{secrets.token_hex(4)}.part")
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"probe")
    finally:
        os.close(fd)
        os.unlink(probe)


def new_body_file(name: str) -> str:
    """Return a fresh body file name for object ``name``."""
    return f"{name}.{secrets.token_hex(4)}.body"


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
