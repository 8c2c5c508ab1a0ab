"""`dnsrouter lab`: a whole CDN on one machine, on loopback.

The lab starts an origin serving a sample site, three edges that stand for
PoPs in Frankfurt, Ashburn and Singapore, and the router in front of them,
each as its own process with the same commands an operator would run.  It
writes every configuration file into one state directory, so what the lab
runs is also a worked example of a deployment.

The layout is a value (`LabLayout`) apart from the process handling
(`Supervisor`) so that end-to-end tests start exactly the same layout and
can stop and restart single parts of it.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import IO

from dnsrouter.orphans import die_with_parent

ROUTER_ADDRESS = "127.0.0.1"
ORIGIN_ADDRESS = "127.0.0.1"
CDN_NAME = "cdn.example.com."
ZONE_ORIGIN = "example.com."

# Probes every second and three misses to go down: a stopped edge leaves the
# answers within about four seconds, well inside the ten an operator expects.
HEALTH_INTERVAL_SECONDS = 1.0
HEALTH_TIMEOUT_SECONDS = 1.0

# Long enough for a cold Python start of every process on a slow machine.
READY_TIMEOUT_SECONDS = 30.0

# Time a process gets to exit on SIGTERM before it is killed.
STOP_GRACE_SECONDS = 5.0

# Access-log lines of the router's health probes: three a second would
# bury everything else in the terminal, so they go to the log files only.
HEALTH_PROBE_MARK = '"GET /healthz"'

# A large object shows streaming and ranged reads; its bytes are generated
# so that the repository carries no binary blob.
BIG_OBJECT_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class LabEdge:
    """One edge of the lab, standing for a PoP in a real city."""

    name: str
    pop: str
    city: str
    latitude: float
    longitude: float
    address: str


LAB_EDGES = (
    LabEdge("fra1", "eu", "Frankfurt", 50.11, 8.68, "127.0.0.11"),
    LabEdge("iad1", "us", "Ashburn", 39.04, -77.49, "127.0.0.12"),
    LabEdge("sin1", "ap", "Singapore", 1.29, 103.85, "127.0.0.13"),
)
DEFAULT_POP = "us"


@dataclass(frozen=True)
class LabLayout:
    """Where every part of the lab listens and where its files are."""

    state_dir: Path
    zones_dir: Path
    router_port: int
    edge_port: int
    origin_port: int

    @property
    def router_config(self) -> Path:
        return self.state_dir / "router.toml"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def site_dir(self) -> Path:
        return self.state_dir / "site"

    def edge_config(self, edge: LabEdge) -> Path:
        return self.state_dir / f"edge-{edge.name}.toml"

    def edge_url(self, edge: LabEdge, path: str = "/index.html") -> str:
        return f"http://{edge.address}:{self.edge_port}{path}"

    def commands(self) -> dict[str, list[str]]:
        """Each process's argv, keyed by the name the lab logs it under."""
        python = sys.executable
        commands = {
            "origin": [
                python, "-m", "dnsrouter.lab_origin",
                "--listen", f"{ORIGIN_ADDRESS}:{self.origin_port}",
                "--root", str(self.site_dir),
            ],
        }
        for edge in LAB_EDGES:
            config = str(self.edge_config(edge))
            commands[f"edge-{edge.name}"] = [
                find_script("cdn-edge"), "serve", "--config", config
            ]
        commands["router"] = [
            find_script("dnsrouter"), "serve", "--config", str(self.router_config)
        ]

        return commands

    def find_busy_port(self) -> None:
        """Raise RuntimeError naming the first lab address already in use."""
        flags = {"origin": "--origin-port", "router": "--router-port"}
        for name, (host, port) in self.endpoints().items():
            if not can_bind(host, port):
                flag = flags.get(name, "--edge-port")
                raise RuntimeError(
                    f"lab: {host}:{port} for the {name} is already in use; "
                    f"stop what holds it or move the lab with {flag}"
                )

    def endpoints(self) -> dict[str, tuple[str, int]]:
        """The TCP address each process accepts on once it is ready."""
        endpoints = {"origin": (ORIGIN_ADDRESS, self.origin_port)}
        for edge in LAB_EDGES:
            endpoints[f"edge-{edge.name}"] = (edge.address, self.edge_port)
        endpoints["router"] = (ROUTER_ADDRESS, self.router_port)

        return endpoints


def find_script(name: str) -> str:
    """The console script installed beside this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)

    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"lab: cannot find the {name!r} command; install the project")

    return found


def default_zones_dir() -> Path:
    """The repository's zones/ directory, which the lab serves by default."""
    return Path(__file__).resolve().parent.parent / "zones"


def write_layout(
    state_dir: Path,
    zones_dir: Path,
    router_port: int = 8053,
    edge_port: int = 8080,
    origin_port: int = 8081,
) -> LabLayout:
    """Write the site and every configuration file; returns the layout."""
    layout = LabLayout(state_dir, zones_dir, router_port, edge_port, origin_port)
    state_dir.mkdir(parents=True, exist_ok=True)

    _copy_sample_site(layout.site_dir)
    layout.router_config.write_text(_router_config_text(layout))
    for edge in LAB_EDGES:
        layout.edge_config(edge).write_text(_edge_config_text(layout, edge))

    return layout


def _copy_sample_site(site_dir: Path) -> None:
    source = resources.files("dnsrouter") / "labdata" / "site"
    with resources.as_file(source) as source_dir:
        shutil.copytree(source_dir, site_dir, dirs_exist_ok=True)

    big = site_dir / "big.bin"
    if not big.exists():
        block = bytes(range(256)) * 4096
        with big.open("wb") as out:
            for _ in range(BIG_OBJECT_BYTES // len(block)):
                out.write(block)


def _router_config_text(layout: LabLayout) -> str:
    """The lab's router.toml, commented as a starting point for a real one."""
    lines = [
        "# Router configuration written by `dnsrouter lab`; a starting point for",
        "# a real deployment.  Every key is described in docs/dns.md and",
        "# docs/routing.md.  Validate with `dnsrouter check --config FILE`.",
        "",
        "[server]",
        "# In production: the public addresses, port 53, IPv4 and IPv6, e.g.",
        '# listen = ["192.0.2.53:53", "[2001:db8::53]:53"]',
        f'listen = ["{ROUTER_ADDRESS}:{layout.router_port}"]',
        "# Every file <origin>.zone in this directory is served.",
        f'zones_dir = "{layout.zones_dir}"',
        "# Answered to `dig id.server CH TXT` and as NSID.",
        'server_id = "lab-router"',
        "# Processes sharing the sockets; one per core in production.",
        "workers = 1",
        "",
        "[geoip]",
        "# Empty: the GeoLite2 City database bundled with maxminddb-geolite2",
        "# (2018).  Point this at a current City database in production.",
        'database = ""',
        "",
        "[routing]",
        "# Edges per answer, and the TTL of CDN answers.",
        "answers = 1",
        "ttl = 30",
        "# `dig whoami.example.com TXT` shows the resolver and ECS seen.",
        'whoami = "whoami.example.com."',
        "",
        "# An edge is down after `fall` failed probes in a row, up again",
        "# after `rise` good ones.",
        "[health]",
        f"interval = {HEALTH_INTERVAL_SECONDS}",
        f"timeout = {HEALTH_TIMEOUT_SECONDS}",
        "fall = 3",
        "rise = 2",
        "",
        "# A name answered with edges; it must lie inside a served zone.",
        "[[cdn]]",
        f'name = "{CDN_NAME}"',
        "# Clients that GeoIP does not know go here.",
        f'default_pop = "{DEFAULT_POP}"',
        "",
        "# Networks that must go to a given PoP whatever GeoIP says",
        "# (longest prefix wins), e.g.:",
        "# [[netmap]]",
        '# network = "198.51.100.0/24"',
        '# pop = "eu"',
    ]
    for edge in LAB_EDGES:
        lines += [
            "",
            f"# {edge.city}",
            "[[pop]]",
            f'name = "{edge.pop}"',
            f"latitude = {edge.latitude}",
            f"longitude = {edge.longitude}",
            "",
            "[[edge]]",
            f'name = "{edge.name}"',
            f'pop = "{edge.pop}"',
            f'ipv4 = "{edge.address}"',
            '# ipv6 = "2001:db8::1"  # an edge may have both families',
            f'health_url = "{layout.edge_url(edge, "/healthz")}"',
        ]

    return "\n".join(lines) + "\n"


def _edge_config_text(layout: LabLayout, edge: LabEdge) -> str:
    cache_dir = layout.state_dir / f"cache-{edge.name}"

    return "\n".join([
        "# Written by `dnsrouter lab`.",
        "[server]",
        f'listen = "{edge.address}:{layout.edge_port}"',
        f'name = "{edge.name}"',
        f'cache_dir = "{cache_dir}"',
        "memory_cache_mb = 32",
        "disk_cache_mb = 256",
        'admin_token = "lab-secret"',
        'health_path = "/healthz"',
        "",
        "[[site]]",
        f'hostname = "{CDN_NAME.rstrip(".")}"',
        f'origin = "http://{ORIGIN_ADDRESS}:{layout.origin_port}"',
    ]) + "\n"


class Supervisor:
    """Starts the lab's processes, relays their output, and stops them.

    Output of each child is relayed line by line with its name in front, so
    one terminal shows the whole CDN.  `stop_all` ends every child it
    started, SIGTERM first and SIGKILL after a grace period.
    """

    def __init__(self, layout: LabLayout, out: IO[str] | None = None) -> None:
        self.layout = layout
        self.out = out if out is not None else sys.stdout
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._write_lock = threading.Lock()

    def start(self, name: str) -> None:
        """Start one named part of the layout; returns once it is spawned."""
        process = subprocess.Popen(
            self.layout.commands()[name],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=functools.partial(die_with_parent, os.getpid()),
        )
        self.processes[name] = process
        threading.Thread(
            target=self._relay, args=(name, process), daemon=True
        ).start()

    def start_all(self) -> None:
        """Start the origin and edges, then the router once they listen.

        Starting the router last means its first health probes find the
        edges up, so no edge begins the lab marked down.
        Raises RuntimeError naming a port that is already taken.
        """
        self.layout.find_busy_port()
        parts = [name for name in self.layout.commands() if name != "router"]
        for name in parts:
            self.start(name)
        self.wait_ready(parts)
        self.start("router")
        self.wait_ready(["router"])

    def wait_ready(self, names: list[str] | None = None) -> None:
        """Block until each named part accepts TCP connections.

        Raises RuntimeError naming the part that exited or never came up.
        """
        endpoints = self.layout.endpoints()
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        for name in names or list(self.processes):
            while not accepts_connections(*endpoints[name]):
                if self.processes[name].poll() is not None:
                    raise RuntimeError(f"lab: {name} exited during start-up")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"lab: {name} not ready after start-up")
                time.sleep(0.1)

    def stop(self, name: str) -> None:
        """Stop one part: SIGTERM, then SIGKILL after the grace period."""
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return

        process.terminate()
        try:
            process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self._say("lab", f"{name} ignored SIGTERM; killing it")
            process.kill()
            process.wait()

    def stop_all(self) -> None:
        for name in reversed(list(self.processes)):
            self.stop(name)

    def exited(self) -> Iterator[tuple[str, int]]:
        """Parts that have exited on their own, with their exit status."""
        for name, process in self.processes.items():
            status = process.poll()
            if status is not None:
                yield name, status

    def _relay(self, name: str, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.layout.log_dir.mkdir(exist_ok=True)
        with (self.layout.log_dir / f"{name}.log").open("ab") as log_file:
            for raw in process.stdout:
                log_file.write(raw)
                log_file.flush()
                line = raw.decode("utf-8", "replace").rstrip()
                if HEALTH_PROBE_MARK not in line:
                    self._say(name, line)

    def _say(self, name: str, line: str) -> None:
        with self._write_lock:
            print(f"[{name:>9}] {line}", file=self.out, flush=True)


def can_bind(host: str, port: int) -> bool:
    """Whether a TCP listener could take host:port now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False

    return True


def accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def banner(layout: LabLayout) -> str:
    """What runs where and how to try it, printed once the lab is up."""
    dig = f"dig @{ROUTER_ADDRESS} -p {layout.router_port} {CDN_NAME.rstrip('.')} A"
    lines = [
        "",
        "pycdn lab is running (Ctrl-C stops everything):",
        f"  router  dns://{ROUTER_ADDRESS}:{layout.router_port} (UDP and TCP), "
        f"zone {ZONE_ORIGIN}, CDN name {CDN_NAME}",
    ]
    for edge in LAB_EDGES:
        lines.append(
            f"  edge    {edge.name} PoP {edge.pop} ({edge.city}) "
            f"http://{edge.address}:{layout.edge_port}/"
        )
    lines += [
        f"  origin  http://{ORIGIN_ADDRESS}:{layout.origin_port}/",
        f"  files   {layout.state_dir}",
        "",
        "Try it:",
        f"  {dig} +subnet=141.20.0.0/24    # Berlin    -> 127.0.0.11",
        f"  {dig} +subnet=128.112.0.0/24   # Princeton -> 127.0.0.12",
        f"  {dig} +subnet=137.132.0.0/24   # Singapore -> 127.0.0.13",
        f"  dig @{ROUTER_ADDRESS} -p {layout.router_port} www.example.com A +norec",
        f"  curl -si -H 'Host: {CDN_NAME.rstrip('.')}' "
        f"{layout.edge_url(LAB_EDGES[1])}   # MISS, then HIT",
        f"  {find_script('dnsrouter')} explain 141.20.0.1 {CDN_NAME} "
        f"--config {layout.router_config}",
        "",
        f"Every process's full log is in {layout.log_dir}; health probes are",
        "left out of this terminal.",
        "",
    ]

    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the lab until Ctrl-C or SIGTERM; returns the exit status."""
    parser = argparse.ArgumentParser(prog="dnsrouter lab")
    parser.add_argument("--state-dir", type=Path, help="keep files here")
    parser.add_argument("--zones", type=Path, default=default_zones_dir())
    parser.add_argument("--router-port", type=int, default=8053)
    parser.add_argument("--edge-port", type=int, default=8080)
    parser.add_argument("--origin-port", type=int, default=8081)
    args = parser.parse_args(argv)

    if not args.zones.is_dir():
        print(f"lab: zones directory {args.zones} does not exist", file=sys.stderr)
        return 2

    keep_state = args.state_dir is not None
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="pycdn-lab-"))
    layout = write_layout(
        state_dir.resolve(), args.zones.resolve(),
        args.router_port, args.edge_port, args.origin_port,
    )
    supervisor = Supervisor(layout)
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        supervisor.start_all()
        print(banner(layout), flush=True)
        status = _watch(supervisor, stopping)
    except RuntimeError as error:
        print(error, file=sys.stderr)
        status = 1
    finally:
        supervisor.stop_all()
        if not keep_state:
            shutil.rmtree(state_dir, ignore_errors=True)

    print("lab: stopped", flush=True)

    return status


def _watch(supervisor: Supervisor, stopping: threading.Event) -> int:
    """Wait for a stop request; a part that dies on its own stops the lab."""
    while not stopping.wait(0.5):
        for name, status in supervisor.exited():
            print(f"lab: {name} exited with status {status}; stopping", flush=True)
            return 1

    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
