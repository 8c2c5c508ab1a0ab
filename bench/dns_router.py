"""Benchmark: the router's answer rate on loopback against references.

Starts, on 127.0.0.1 ports picked at run time:
* dnsrouter (`service.run`) with the fixture zone, `workers` worker
  processes, three PoPs and healthy edges (a local health server), the
  test GeoIP database so ECS subnets route to EU and AP;
* BIND `named` on the same zone (if installed), authoritative only;
* a Twisted server that parses with dnslib (bench/dns_dnslib_reference.py).

Then runs dnsperf (Debian package `dnsperf`) against each for every query
mix, or a Python UDP load generator when dnsperf is missing, and prints
answers per second and the ratios to the references measured in the same
run.  The load generator shares the machine's cores with the servers, so
compare ratios, not absolute figures, across machines.

Usage: python bench/dns_router.py [--seconds 6] [--workers 2]
"""

from __future__ import annotations

import argparse
import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.dns.peers import free_port, named_conf  # noqa: E402 (path set above)

ECS_EU = "8:00011800c63364"  # 198.51.100.0/24, Berlin in the test database
MIXES = {
    "static A": (["www.example.com A"], None),
    "cdn A (source addr)": (["cdn.example.com A"], None),
    "cdn A + ECS": (["cdn.example.com A"], ECS_EU),
    "mixed": (
        [
            "www.example.com A",
            "cdn.example.com A",
            "cdn.example.com AAAA",
            "nope.example.com A",
            "alias.example.com A",
            "x.w.example.com A",
            "example.com MX",
        ],
        None,
    ),
}

POPS = [("eu", 50.11, 8.68), ("ap", 35.68, 139.69), ("us", 39.04, -77.49)]
EDGES = [
    ("fra1", "eu", "192.0.2.21", "2001:db8:e0::21"),
    ("fra2", "eu", "192.0.2.22", "2001:db8:e0::22"),
    ("tyo1", "ap", "192.0.2.31", "2001:db8:a0::31"),
    ("iad1", "us", "192.0.2.41", "2001:db8:50::41"),
]


def router_config(port: int, workers: int, health_port: int) -> str:
    """The bench router's TOML: fixture zone, three PoPs, healthy edges."""
    lines = [
        "[server]",
        'listen = ["127.0.0.1:%d"]' % port,
        'zones_dir = "zones"',
        'server_id = "bench"',
        "workers = %d" % workers,
        "[geoip]",
        'database = "%s"' % (REPO / "geodata" / "test-city.mmdb"),
        "[health]",
        "interval = 1.0",
        "timeout = 0.5",
        "rise = 1",
        "[[cdn]]",
        'name = "cdn.example.com."',
        'default_pop = "us"',
    ]
    for name, latitude, longitude in POPS:
        lines += ["[[pop]]", 'name = "%s"' % name]
        lines += ["latitude = %s" % latitude, "longitude = %s" % longitude]
    for name, pop, ipv4, ipv6 in EDGES:
        lines += ["[[edge]]", 'name = "%s"' % name, 'pop = "%s"' % pop]
        lines += ['ipv4 = "%s"' % ipv4, 'ipv6 = "%s"' % ipv6]
        lines.append('health_url = "http://127.0.0.1:%d/healthz"' % health_port)

    return "\n".join(lines) + "\n"


class _Healthy(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def answers(port: int, name: bytes = b"\x03www\x07example\x03com\x00") -> bool:
    header = bytes.fromhex("123400000001000000000000")
    query = header + name + b"\x00\x01\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.3)
        try:
            sock.sendto(query, ("127.0.0.1", port))
            return sock.recv(4096)[:2] == b"\x12\x34"
        except OSError:
            return False


def wait_for(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if answers(port):
            return
        if proc.poll() is not None:
            raise SystemExit("%s exited with status %s" % (what, proc.returncode))
        time.sleep(0.1)
    raise SystemExit("%s did not answer on port %d" % (what, port))


def start_router(work: Path, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    health = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Healthy)
    threading.Thread(target=health.serve_forever, daemon=True).start()
    health_port = health.server_address[1]
    shutil.copytree(REPO / "zones", work / "zones")
    port = free_port()
    config = work / "router.toml"
    config.write_text(router_config(port, workers, health_port))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from dnsrouter import service; "
            "sys.exit(service.run(sys.argv[1]))",
            str(config),
        ],
        cwd=REPO,
        stderr=open(work / "router.log", "wb"),
    )
    wait_for(port, proc, "dnsrouter")
    time.sleep(2.5)  # first health rounds mark the edges up

    return proc, port


def start_named(work: Path) -> tuple[subprocess.Popen[bytes], int] | None:
    if shutil.which("named") is None:
        return None
    port = free_port()
    conf = named_conf(work, port, work / "zones" / "example.com.zone")
    proc = subprocess.Popen(
        ["named", "-g", "-n", "2", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=open(work / "named.log", "wb"),
    )
    wait_for(port, proc, "named")

    return proc, port


def start_dnslib(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "bench" / "dns_dnslib_reference.py"),
            str(REPO / "zones" / "example.com.zone"),
            str(port),
        ],
        stderr=open(work / "dnslib.log", "wb"),
    )
    wait_for(port, proc, "dnslib reference")

    return proc, port


def run_dnsperf(
    port: int, lines: list[str], option: str | None, seconds: float, work: Path
) -> tuple[float, float]:
    """Answers per second and lost percentage measured by dnsperf."""
    data = work / "queries.txt"
    data.write_text("\n".join(lines) + "\n")
    command = [
        "dnsperf",
        "-s",
        "127.0.0.1",
        "-p",
        str(port),
        "-d",
        str(data),
        "-l",
        str(seconds),
        "-c",
        "16",
        "-q",
        "256",
        "-T",
        "1",
    ]
    if option:
        command += ["-E", option]
    out = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 30
    ).stdout
    qps = float(_find(r"Queries per second:\s+([\d.]+)", out))
    lost = float(_find(r"Queries lost:\s+\d+ \(([\d.]+)%\)", out))

    return qps, lost


def _find(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise SystemExit("dnsperf output not understood:\n" + text)

    return match.group(1)


def run_python_load(
    port: int, lines: list[str], option: str | None, seconds: float, work: Path
) -> tuple[float, float]:
    """Fallback generator: one non-blocking socket, a window of queries."""
    import dns.edns
    import dns.message

    queries = []
    for line in lines:
        name, rdtype = line.split()
        options = []
        if option:
            code, value = option.split(":")
            options = [dns.edns.GenericOption(int(code), bytes.fromhex(value))]
        query = dns.message.make_query(
            name, rdtype, use_edns=0 if option else False, options=options
        )
        queries.append(query.to_wire())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sent = received = 0
    window = 128
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        while sent - received < window:
            sock.sendto(queries[sent % len(queries)], ("127.0.0.1", port))
            sent += 1
        try:
            while True:
                sock.recv(4096)
                received += 1
        except BlockingIOError:
            time.sleep(0)
        if sent - received >= window:
            time.sleep(0.0005)
            if sent - received >= window:
                received = sent - window // 2  # count stragglers as lost
    sock.close()

    return received / seconds, 0.0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process and of its children now
    running (the router's workers), from /proc."""
    total = 0.0
    children = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True
    ).stdout.split()
    for each in [str(pid)] + children:
        try:
            fields = Path("/proc/%s/stat" % each).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    return total


def start_servers(
    work: Path, workers: int
) -> tuple[list[subprocess.Popen[bytes]], dict[str, tuple[int, int]]]:
    """Start dnsrouter, named (if installed) and the dnslib reference."""
    router, router_port = start_router(work, workers)
    procs = [router]
    servers = {"dnsrouter": (router_port, router.pid)}
    named = start_named(work)
    if named is not None:
        procs.append(named[0])
        servers["named (BIND)"] = (named[1], named[0].pid)
    reference, reference_port = start_dnslib(work)
    procs.append(reference)
    servers["twisted+dnslib"] = (reference_port, reference.pid)

    return procs, servers


def report_ratios(
    results: dict[tuple[str, str], tuple[float, float]],
    servers: dict[str, tuple[int, int]],
) -> None:
    print()
    for mix in MIXES:
        ours = results[(mix, "dnsrouter")][0]
        ratios = ", ".join(
            "%.2fx %s" % (ours / results[(mix, s)][0], s)
            for s in servers
            if s != "dnsrouter" and results[(mix, s)][0]
        )
        print("%-22s dnsrouter = %s" % (mix, ratios))
    print(
        "(named answers cdn.example.com NXDOMAIN: it has no such name; the "
        "dnslib reference answers it from a fixed record)"
    )


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    load = run_dnsperf if shutil.which("dnsperf") else run_python_load
    print(
        "load generator: %s; cores: %d; router workers: %d; %gs per run"
        % (
            "dnsperf" if load is run_dnsperf else "python",
            os.cpu_count() or 0,
            args.workers,
            args.seconds,
        )
    )

    work = Path(tempfile.mkdtemp(prefix="dns-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs, servers = start_servers(work, args.workers)
        results: dict[tuple[str, str], tuple[float, float]] = {}
        print(
            "%-22s %-16s %12s %7s %14s"
            % ("mix", "server", "answers/s", "lost%", "server CPU/ans")
        )
        for mix, (lines, option) in MIXES.items():
            for server, (port, pid) in servers.items():
                before = cpu_seconds(pid)
                qps, lost = load(port, lines, option, args.seconds, work)
                used = cpu_seconds(pid) - before
                results[(mix, server)] = (qps, lost)
                per_answer = used / max(qps * args.seconds, 1) * 1e6
                print(
                    "%-22s %-16s %12.0f %7.2f %11.1f us"
                    % (mix, server, qps, lost, per_answer)
                )
        report_ratios(results, servers)
    finally:
        stop(procs)
        shutil.rmtree(work, ignore_errors=True)

    return 0


if __name__ == "__main__":
    sys.exit(main())
