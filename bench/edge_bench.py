"""Benchmark: edge cache hits against nginx proxy_cache, measured with wrk.

Starts on loopback (ports chosen free): an origin (aiohttp) serving a
1 KiB and a 10 MiB object, the edge (``cdn-edge serve``) and nginx
configured as a proxy_cache in a temporary directory, both in front of
that origin. Each is warmed with one request, then ``wrk`` hits the
same URL for a fixed time, alternating nginx and edge for several
rounds because a shared machine's speed drifts. Prints the median
requests/s and MB/s for both and the ratio edge/nginx. Needs the Debian
packages nginx and wrk.

    python bench/edge_bench.py [--seconds 4] [--rounds 3] [--connections 50]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from typing import Iterator

HOST = "cdn.example.com"
LOG = None if os.environ.get("BENCH_VERBOSE") else subprocess.DEVNULL
SMALL = 1024
LARGE = 10 * 1024 * 1024

ORIGIN_CODE = textwrap.dedent(f"""
    import sys
    from aiohttp import web
    small = b"s" * {SMALL}
    large = b"L" * {LARGE}
    async def handle(request):
        body = large if request.path == "/large" else small
        return web.Response(body=body, headers={{
            "Cache-Control": "max-age=3600", "ETag": '"b1"',
            "Content-Type": "application/octet-stream"}})
    app = web.Application()
    app.router.add_get("/{{tail:.*}}", handle)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
""")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, host: str = HOST) -> None:
    for _ in range(200):
        try:
            request = urllib.request.Request(url, headers={"Host": host})
            with urllib.request.urlopen(request, timeout=1) as response:
                response.read()
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


@contextlib.contextmanager
def process(args: list[str], **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                            stderr=LOG, **kwargs)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def nginx_config(workdir: str, port: int, origin_port: int, workers: str) -> str:
    return textwrap.dedent(f"""
        worker_processes {workers};
        daemon off;
        pid {workdir}/nginx.pid;
        error_log {workdir}/error.log warn;
        events {{ worker_connections 4096; }}
        http {{
            access_log off;
            client_body_temp_path {workdir}/body;
            proxy_temp_path {workdir}/proxy_tmp;
            fastcgi_temp_path {workdir}/fcgi;
            uwsgi_temp_path {workdir}/uwsgi;
            scgi_temp_path {workdir}/scgi;
            proxy_cache_path {workdir}/cache levels=1:2 keys_zone=edge:10m
                             max_size=1g inactive=1h use_temp_path=off;
            sendfile on;
            tcp_nopush on;
            keepalive_requests 100000;
            server {{
                listen 127.0.0.1:{port};
                server_name {HOST};
                location / {{
                    proxy_cache edge;
                    proxy_http_version 1.1;
                    proxy_set_header Connection "";
                    proxy_pass http://127.0.0.1:{origin_port};
                    add_header X-Cache $upstream_cache_status;
                }}
            }}
        }}
    """)


def edge_config(workdir: str, port: int, origin_port: int) -> str:
    return textwrap.dedent(f"""
        [server]
        listen = "127.0.0.1:{port}"
        name = "bench"
        cache_dir = "{workdir}/edge-cache"
        memory_cache_mb = 64
        disk_cache_mb = 1024
        access_log = false

        [[site]]
        hostname = "{HOST}"
        origin = "http://127.0.0.1:{origin_port}"
    """)


def run_wrk(
    url: str, seconds: int, connections: int, threads: int
) -> tuple[float, float]:
    """Return (requests per second, MB per second) as wrk reports them."""
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s",
         "-H", f"Host: {HOST}", url],
        capture_output=True, text=True, check=True,
    ).stdout
    rate_match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rate_match is not None
    rate = float(rate_match.group(1))
    match = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    assert match is not None
    scale = {"B": 1e-6, "KB": 1 / 1024, "MB": 1.0, "GB": 1024.0}[match.group(2)]

    return rate, float(match.group(1)) * scale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--nginx-workers", default="auto")
    args = parser.parse_args(argv)
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            print(f"missing tool: {tool} (apt-get install {tool})", file=sys.stderr)
            return 2
    workdir = tempfile.mkdtemp(prefix="edge-bench-")
    # nginx workers run as an unprivileged user and must reach the cache.
    os.chmod(workdir, 0o755)
    origin_port, edge_port, nginx_port = free_port(), free_port(), free_port()
    with open(os.path.join(workdir, "nginx.conf"), "w") as fh:
        fh.write(nginx_config(workdir, nginx_port, origin_port, args.nginx_workers))
    with open(os.path.join(workdir, "edge.toml"), "w") as fh:
        fh.write(edge_config(workdir, edge_port, origin_port))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        with process([sys.executable, "-c", ORIGIN_CODE, str(origin_port)]), \
                process([sys.executable, "-m", "edge.cli", "serve", "--config",
                         os.path.join(workdir, "edge.toml")]), \
                process([nginx, "-c", os.path.join(workdir, "nginx.conf"),
                         "-p", workdir]):
            for name, port in (("edge", edge_port), ("nginx", nginx_port)):
                for path in ("/small", "/large"):
                    wait_http(f"http://127.0.0.1:{port}{path}")
                    wait_http(f"http://127.0.0.1:{port}{path}")
            for _ in range(args.rounds):
                for path in ("/small", "/large"):
                    for name, port in (("nginx", nginx_port),
                                       ("edge", edge_port)):
                        results.setdefault((name, path), []).append(run_wrk(
                            f"http://127.0.0.1:{port}{path}", args.seconds,
                            args.connections, args.threads))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.seconds}s, "
          f"cache hits on loopback, nginx workers={args.nginx_workers}, "
          f"median of {args.rounds} alternating rounds")
    print(f"{'object':<14}{'nginx req/s':>12}{'edge req/s':>12}{'ratio':>8}"
          f"{'nginx MB/s':>12}{'edge MB/s':>11}")
    for path, label in (("/small", "1 KiB hit"), ("/large", "10 MiB hit")):
        n_rate, n_mb = _median(results[("nginx", path)])
        e_rate, e_mb = _median(results[("edge", path)])
        print(f"{label:<14}{n_rate:>12.0f}{e_rate:>12.0f}{e_rate / n_rate:>8.2f}"
              f"{n_mb:>12.0f}{e_mb:>11.0f}")

    return 0


def _median(samples: list[tuple[float, float]]) -> tuple[float, float]:
    rates = sorted(s[0] for s in samples)
    sizes = sorted(s[1] for s in samples)

    return rates[len(rates) // 2], sizes[len(sizes) // 2]


if __name__ == "__main__":
    sys.exit(main())
