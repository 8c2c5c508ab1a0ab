"""Cache storage: atomic commit, restart, cleanup, LRU cap, degradation."""

from __future__ import annotations

import os
from typing import Any

import pytest

from edge.app import Edge
from edge.storage import ObjectMeta, Storage, new_body_file
from tests.edge.conftest import EdgeUnderTest, FakeClock, Origin, make_config


def _meta(name: str, length: int, primary: str = "s /x") -> ObjectMeta:
    return ObjectMeta(
        primary=primary, name=name, status=200, reason="OK",
        headers=(("Cache-Control", "max-age=60"),), vary_fields=(),
        vary_values=(), request_time=1.0, response_time=1.0, date_value=1.0,
        age_value=0.0, length=length, body_file=new_body_file(name),
    )


async def _store(storage: Storage, name: str, body: bytes,
                 primary: str | None = None) -> None:
    fd, temp = storage.new_temp()
    storage.write(fd, body, temp)
    await storage.commit(_meta(name, len(body), primary or f"s /{name}"),
                         fd, temp)


async def test_objects_survive_a_restart_and_junk_is_cleaned(tmp_path: Any) -> None:
    """A reopened cache finds committed objects; temp files, unreferenced
    bodies and metadata whose body is short are deleted."""
    root = str(tmp_path)
    first = Storage(root, 10**6, 10**6)
    first.open()
    await _store(first, "aa" + "1" * 62, b"hello")
    await _store(first, "bb" + "2" * 62, b"world")
    open(os.path.join(root, "tmp", "x.part"), "wb").close()
    shard = os.path.join(root, "objects", "aa")
    open(os.path.join(shard, "orphan.body"), "wb").close()
    entry = first.get("s /" + "bb" + "2" * 62, {})  # type: ignore[arg-type]
    assert entry is not None
    with open(entry.path, "wb") as fh:
        fh.write(b"wor")

    second = Storage(root, 10**6, 10**6)
    second.open()

    assert second.objects == 1 and second.bytes == 5
    assert os.listdir(os.path.join(root, "tmp")) == []
    assert "orphan.body" not in os.listdir(shard)
    assert os.listdir(os.path.join(root, "objects", "bb")) == []


async def test_disk_cap_evicts_least_recently_used(tmp_path: Any) -> None:
    """Past the cap, the object used longest ago goes first."""
    storage = Storage(str(tmp_path), 250, 0)
    storage.open()
    names = [f"{n:02d}" + "0" * 62 for n in range(3)]
    await _store(storage, names[0], b"a" * 100)
    await _store(storage, names[1], b"b" * 100)
    storage.get(f"s /{names[0]}", {})  # type: ignore[arg-type]

    await _store(storage, names[2], b"c" * 100)

    kept = {e.meta.name for e in storage.entries()}
    assert kept == {names[0], names[2]}
    assert storage.evictions == 1 and storage.bytes == 200


async def test_memory_tier_is_bounded(tmp_path: Any) -> None:
    """Bodies are kept in memory up to the memory budget, LRU first out."""
    storage = Storage(str(tmp_path), 10**6, 150)
    storage.open()
    await _store(storage, "aa" + "0" * 62, b"a" * 100)
    await _store(storage, "bb" + "0" * 62, b"b" * 100)

    in_memory = [e.body is not None for e in storage.entries()]

    assert in_memory == [False, True]
    assert storage.memory_used == 100


async def test_unwritable_cache_degrades_to_pass_through(
    tmp_path: Any, origin: Origin, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache directory that cannot be created never fails requests:
    the edge answers from the origin and logs the error naming the
    file that failed."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    clock = FakeClock()
    config = make_config(origin.url, str(blocker / "cache"))
    edge = EdgeUnderTest(Edge(config, clock=clock), clock)
    origin.static("/p", "pass", Cache_Control="max-age=60")
    await edge.start()
    try:
        replies = [await edge.get("/p") for _ in range(2)]
    finally:
        await edge.stop()

    assert [(r.status, r.body) for r in replies] == [(200, b"pass")] * 2
    assert origin.count("/p") == 2
    errors = [r.getMessage() for r in caplog.records
              if r.name == "edge.storage" and r.levelname == "ERROR"]
    assert errors and f"file={blocker}" in errors[0]
