"""What ``cdn-edge check`` and ``serve`` say when they cannot start:
always one line on stderr naming the file, the key and the problem, no
traceback; exit 2 for configuration (the cache directory included), 1
for a listening socket that cannot be opened."""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

import pytest

from edge.cli import main

pytestmark = pytest.mark.e2e


def _config(listen: str, cache_dir: str) -> str:
    return (
        "[server]\n"
        f'listen = "{listen}"\ncache_dir = "{cache_dir}"\n'
        '[[site]]\nhostname = "cdn.example.com"\n'
        'origin = "http://127.0.0.1:9"\n'
    )


def _one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines

    return lines[0]


@pytest.mark.parametrize("where", ["/proc/nope/cache", "{tmp}/file/cache",
                                   "/proc/self/cache-dir"])
@pytest.mark.parametrize("command", ["check", "serve"])
def test_unusable_cache_dir_stops_check_and_serve_with_status_2(
    tmp_path: Any, where: str, command: str
) -> None:
    """A cache_dir that cannot be created or written (under /proc, under
    a regular file) is a configuration error naming server.cache_dir,
    not a silent, permanent pass-through."""
    (tmp_path / "file").write_text("a regular file")
    cache_dir = where.format(tmp=tmp_path)
    config = tmp_path / "edge.toml"
    config.write_text(_config("127.0.0.1:0", cache_dir))

    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", command, "--config", str(config)],
        capture_output=True, text=True, timeout=20,
    )

    line = _one_line(proc.stderr)
    assert proc.returncode == 2
    assert line.startswith(f"cdn-edge: {config}: server.cache_dir: ")
    assert cache_dir.split("/cache")[0] in line


@pytest.mark.parametrize("content", [
    b'[server]\nlisten = "127.0.0.1:1"\nname = "\xff\xfe"\n',
    b"\xef\xbb\xbf\x00\x00garbage",
    b'site = [1]\n[server]\nlisten = "127.0.0.1:1"\ncache_dir = "c"\n',
    b"",
], ids=["latin-1-byte", "nul-bytes", "site-not-a-table", "empty"])
def test_malformed_config_file_is_one_line_and_status_2(
    tmp_path: Any, capsys: Any, content: bytes
) -> None:
    """Bytes that are not UTF-8 TOML, or TOML of the wrong shape, give
    one line naming the file (no traceback) and exit status 2."""
    config = tmp_path / "edge.toml"
    config.write_bytes(content)

    status = main(["check", "--config", str(config)])

    line = _one_line(capsys.readouterr().err)
    assert status == 2
    assert line.startswith(f"cdn-edge: {config}: ")


def test_listen_failures_name_the_file_and_server_listen(
    tmp_path: Any, capsys: Any
) -> None:
    """An address this host does not have, and a port already in use,
    each give one line naming the file and server.listen; status 1."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    lines = []
    try:
        for listen in ("192.0.2.1:41801", f"127.0.0.1:{port}"):
            config = tmp_path / "edge.toml"
            config.write_text(_config(listen, "cache"))
            status = main(["serve", "--config", str(config)])
            lines.append((status, _one_line(capsys.readouterr().err)))
    finally:
        busy.close()

    for status, line in lines:
        assert status == 1
        assert line.startswith(f"cdn-edge: {config}: server.listen: ")
    assert "192.0.2.1:41801" in lines[0][1]
    assert f"127.0.0.1:{port}" in lines[1][1]
