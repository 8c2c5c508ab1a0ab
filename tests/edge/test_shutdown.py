"""Stopping a real ``cdn-edge serve`` with SIGTERM: answers in progress
get the grace period to finish, then the process stops at once,
abandoning fills nobody receives and leaving no temporary file."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from edge.app import Edge
from tests.edge.conftest import (
    FakeClock, Origin, free_port, make_config, wait_up,
)

pytestmark = pytest.mark.e2e

GRACE = 4.0
BLOCK = 64 * 1024
# /paced takes about 2.6 s: it outlasts aiohttp's usual 1 s shutdown
# wait but fits in the grace period.
PACED = os.urandom(32 * BLOCK)
# /endless would take 60 s: longer than the grace and than the test.
ENDLESS_BLOCKS = 1200


def _paced(blocks: list[bytes], pause: float):  # type: ignore[no-untyped-def]
    async def handler(request: web.BaseRequest, n: int) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Cache-Control": "max-age=600"})
        response.content_length = sum(len(b) for b in blocks)
        await response.prepare(request)
        for block in blocks:
            await response.write(block)
            await asyncio.sleep(pause)
        await response.write_eof()
        return response

    return handler


async def _fetch(
    session: aiohttp.ClientSession, url: str, started: asyncio.Event
) -> bytes | None:
    """Return the whole body, or None when the transfer was cut."""
    body = b""
    try:
        async with session.get(url, headers={"Host": "cdn.example.com"}) as r:
            async for chunk in r.content.iter_chunked(BLOCK):
                body += chunk
                started.set()
    except aiohttp.ClientError:
        return None

    return body


async def test_sigterm_lets_transfers_finish_then_stops_promptly(
    tmp_path: Any, origin: Origin
) -> None:
    """SIGTERM mid-transfer: a 2.6 s download still completes intact, a
    60 s one is cut at the grace period, a fill whose client hung up is
    abandoned, and the process exits right after the grace with its
    tmp/ directory empty."""
    origin.route("/paced", _paced(
        [PACED[i:i + BLOCK] for i in range(0, len(PACED), BLOCK)], 0.08))
    endless = _paced([b"e" * BLOCK] * ENDLESS_BLOCKS, 0.05)
    origin.route("/endless", endless)
    origin.route("/orphan", endless)
    port = free_port()
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\ncache_dir = "cache"\n'
        f"shutdown_grace = {GRACE}\n"
        f'[[site]]\nhostname = "cdn.example.com"\norigin = "{origin.url}"\n')
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "serve", "--config", str(config)],
        stderr=subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_up(session, url)
            events = [asyncio.Event() for _ in range(3)]
            paced, cut, orphan = (
                asyncio.ensure_future(_fetch(session, url + path, event))
                for path, event in zip(("/paced", "/endless", "/orphan"),
                                       events))
            await asyncio.wait_for(
                asyncio.gather(*(e.wait() for e in events)), 5)
            orphan.cancel()
            await asyncio.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            paced_body, cut_body = await asyncio.wait_for(
                asyncio.gather(paced, cut), GRACE + 5)
            status = await asyncio.get_running_loop().run_in_executor(
                None, proc.wait, GRACE + 5)
            stopped_after = time.monotonic() - sent
    finally:
        proc.kill()
        proc.wait(10)

    assert paced_body is not None
    assert hashlib.sha256(paced_body).digest() == hashlib.sha256(PACED).digest()
    assert cut_body is None
    assert status == 0
    assert GRACE - 0.5 < stopped_after < GRACE + 2.0
    assert os.listdir(tmp_path / "cache" / "tmp") == []


async def test_idle_keepalive_connections_do_not_hold_up_a_stop(
    origin: Origin, tmp_path: Any
) -> None:
    """An idle keep-alive connection on the general path is closed at
    once on stop: the stop does not wait for the grace period."""
    origin.static("/k", "k", Cache_Control="max-age=60")
    clock = FakeClock()
    edge = Edge(make_config(origin.url, str(tmp_path / "cache")), clock=clock)
    await edge.start()
    port = await edge.listen("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(2):
        writer.write(b"GET /k HTTP/1.1\r\nHost: cdn.example.com\r\n"
                     b"X-Other: 1\r\n\r\n")
        await reader.readuntil(b"\r\n\r\nk")

    started = time.monotonic()
    await edge.close(grace=GRACE)
    elapsed = time.monotonic() - started
    closed = await asyncio.wait_for(reader.read(), 1)
    writer.close()

    assert elapsed < 1.0 and closed == b""
