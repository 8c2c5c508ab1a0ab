"""The cdn-edge command as the lab runs it: a real process on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from edge.cli import main
from tests.edge.conftest import Origin, free_port, wait_up

pytestmark = pytest.mark.e2e


def _write_config(path: Any, origin_url: str, port: int) -> None:
    path.write_text(
        "[server]\n"
        f'listen = "127.0.0.1:{port}"\n'
        'name = "t1"\ncache_dir = "cache"\nadmin_token = "tok"\n'
        "[[site]]\n"
        'hostname = "cdn.example.com"\n'
        f'origin = "{origin_url}"\n'
    )


def test_check_reports_bad_config_in_one_line(tmp_path: Any, capsys: Any) -> None:
    """A bad key exits 2 with file, key and problem, no traceback."""
    config = tmp_path / "edge.toml"
    config.write_text('[server]\nlisten = "nowhere"\ncache_dir = "c"\n')

    status = main(["check", "--config", str(config)])

    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err.count("\n") == 0
    assert str(config) in err and "server.listen" in err


def test_check_accepts_a_good_config(tmp_path: Any) -> None:
    """A valid configuration passes ``check`` with status 0."""
    config = tmp_path / "edge.toml"
    _write_config(config, "http://127.0.0.1:9", 8080)

    assert main(["check", "--config", str(config)]) == 0


async def test_serve_process_fills_survives_restart_and_drains(
    tmp_path: Any, origin: Origin
) -> None:
    """cdn-edge serve: MISS then HIT; the cache survives a restart; SIGUSR1
    makes health 503."""
    origin.static("/index.html", "hello", Cache_Control="max-age=600")
    port = free_port()
    config = tmp_path / "edge.toml"
    _write_config(config, origin.url, port)
    url = f"http://127.0.0.1:{port}"
    statuses: list[str] = []
    for _ in range(2):
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "serve", "--config", str(config)],
            stderr=subprocess.PIPE,
        )
        try:
            async with aiohttp.ClientSession() as session:
                await wait_up(session, url)
                for _ in range(2):
                    async with session.get(
                        url + "/index.html", headers={"Host": "cdn.example.com"}
                    ) as response:
                        assert await response.read() == b"hello"
                        statuses.append(response.headers["X-Cache"])
                proc.send_signal(signal.SIGUSR1)
                await asyncio.sleep(0.2)
                async with session.get(url + "/healthz") as response:
                    assert response.status == 503
        finally:
            proc.terminate()
            assert proc.wait(10) == 0

    assert statuses == ["MISS", "HIT", "HIT", "HIT"]
    assert origin.count("/index.html") == 1
    assert os.listdir(tmp_path / "cache" / "tmp") == []


def _start_edge(config: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "serve", "--config", str(config)],
        stderr=subprocess.DEVNULL,
    )


async def test_kill_9_during_fills_never_leaves_a_partial_object(
    tmp_path: Any, origin: Origin
) -> None:
    """Crash safety: kill -9 while 30 fills stream; after a restart every
    object served matches the origin's SHA-256, the finished ones are
    still cached, and no temporary file is left."""
    bodies = {f"/obj/{n}": os.urandom(2000 + n * 30_000) for n in range(40)}
    for path, body in bodies.items():
        slow = not path.endswith(tuple(f"/{n}" for n in range(10)))
        origin.route(path, _paced(body, slow))
    port = free_port()
    config = tmp_path / "edge.toml"
    _write_config(config, origin.url, port)
    url = f"http://127.0.0.1:{port}"
    headers = {"Host": "cdn.example.com"}

    proc = _start_edge(config)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_up(session, url)

            async def fetch(path: str) -> None:
                try:
                    async with session.get(url + path, headers=headers) as r:
                        await r.read()
                except aiohttp.ClientError:
                    pass

            tasks = [asyncio.ensure_future(fetch(p)) for p in bodies]
            await asyncio.gather(*tasks[:10])
            await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGKILL)
            await asyncio.gather(*tasks)
    finally:
        proc.kill()
        proc.wait(10)
    partial_before_restart = os.listdir(tmp_path / "cache" / "tmp")
    proc = _start_edge(config)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_up(session, url)
            leftovers = os.listdir(tmp_path / "cache" / "tmp")
            results = {}
            for path in bodies:
                async with session.get(url + path, headers=headers) as r:
                    results[path] = (r.headers["X-Cache"], await r.read())
    finally:
        proc.terminate()
        proc.wait(10)

    assert partial_before_restart != []  # the kill did land mid-fill
    assert leftovers == []
    for path, (_, body) in results.items():
        assert hashlib.sha256(body).digest() == \
            hashlib.sha256(bodies[path]).digest(), path
    assert [results[f"/obj/{n}"][0] for n in range(10)] == ["HIT"] * 10


async def test_memory_stays_bounded_for_a_large_object(
    tmp_path: Any, origin: Origin
) -> None:
    """A 256 MiB object streams through a real edge process (fill and a
    slow-ish reader) while its resident memory grows by under 48 MiB."""
    size = 256 * 1024 * 1024
    block = os.urandom(1024 * 1024)

    async def huge(request: web.BaseRequest, n: int) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Cache-Control": "max-age=60"})
        response.content_length = size
        await response.prepare(request)
        for _ in range(size // len(block)):
            await response.write(block)
        await response.write_eof()
        return response

    origin.route("/huge", huge)
    port = free_port()
    config = tmp_path / "edge.toml"
    _write_config(config, origin.url, port)
    url = f"http://127.0.0.1:{port}"
    proc = _start_edge(config)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_up(session, url)
            before = _rss(proc.pid)
            peak = before
            received = 0
            async with session.get(url + "/huge",
                                   headers={"Host": "cdn.example.com"}) as r:
                async for chunk in r.content.iter_chunked(1 << 20):
                    received += len(chunk)
                    if received % (32 << 20) < len(chunk):
                        peak = max(peak, _rss(proc.pid))
    finally:
        proc.terminate()
        proc.wait(10)

    assert received == size
    assert peak - before < 48 * 1024 * 1024, (before, peak)


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _paced(body: bytes, slow: bool):  # type: ignore[no-untyped-def]
    async def handler(request: web.BaseRequest, n: int) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Cache-Control": "max-age=600"})
        response.content_length = len(body)
        await response.prepare(request)
        for start in range(0, len(body), 64 * 1024):
            await response.write(body[start:start + 64 * 1024])
            if slow and n == 1:
                await asyncio.sleep(0.05)
        await response.write_eof()
        return response

    return handler
