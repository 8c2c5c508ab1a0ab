"""Run the http-cache-tests conformance suite against a cache on loopback.

The suite (npm package ``http-cache-tests``, pinned in package.json, the
suite behind cache-tests.fyi) has two halves: an origin server that
answers as each test scripts it, and a client that sends every request
through the cache and checks what comes back. This module starts the
origin (``serve.mjs``, bound to 127.0.0.1), starts the cache in front of
it, runs the client (``run.mjs``) and writes one results file.

Targets:
  edge    ``cdn-edge serve`` with one site whose origin is the suite's
          server; the suite's Host header is ``localhost:<edge port>``,
          so the site's hostname is ``localhost``.
  nginx   Debian's nginx as proxy_cache (``proxy_cache_revalidate on``,
          as in the suite's own docker setup), a reference figure only.
  direct  no cache: the client talks to the origin itself (reference).

Counting follows cache-tests.fyi: a required test counts as passed when
it and every test it depends on passed. Regressions are judged on each
test's own outcome, so the gate does not move when a dependency does.

Command line (``python tests/conformance/harness.py --help``) for
operators; ``test_conformance.py`` drives the same functions under pytest.
Every process started here is on loopback, stopped by its PID, and every
wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

SUITE_DIR = Path(__file__).resolve().parent
BASELINE_PATH = SUITE_DIR / "baseline.json"
SUITE_NAME = "http-cache-tests@0.4.5"
# The site name the suite's Host header selects: run.mjs keeps the base
# URL's host and pins the connection to 127.0.0.1 itself.
SITE_HOSTNAME = "localhost"
# A clean run takes 15 to 20 s (the longest tests pause 3 s a few
# times); the client bounds each request at 10 s, so this only catches a
# client that hangs outright.
SUITE_BUDGET_S = 120.0
# Starting node, the edge or nginx takes well under a second here.
STARTUP_BUDGET_S = 20.0
STOP_GRACE_S = 5.0


class HarnessError(Exception):
    """The harness could not run the suite (as opposed to tests failing)."""


@dataclasses.dataclass(frozen=True)
class TestRecord:
    """One test's result, as written by run.mjs."""

    id: str
    suite: str
    kind: str
    outcome: str
    passed: bool
    message: str = ""

    @property
    def is_required(self) -> bool:
        return self.kind == "required"

    @property
    def is_own_pass(self) -> bool:
        return self.outcome == "pass"


@dataclasses.dataclass(frozen=True)
class Summary:
    """Figures in the form cache-tests.fyi reports them."""

    target: str
    required_total: int
    required_passed: int

    def to_text(self) -> str:
        return (
            f"{self.target}: {self.required_passed} of "
            f"{self.required_total} required tests passed"
        )


def summarise(target: str, records: list[TestRecord]) -> Summary:
    """Count required tests, and those passed with their dependencies."""
    required = [r for r in records if r.is_required]

    return Summary(
        target=target,
        required_total=len(required),
        required_passed=sum(r.passed for r in required),
    )


def find_regressions(
    baseline: list[TestRecord], current: list[TestRecord]
) -> list[tuple[TestRecord, TestRecord | None]]:
    """Pair each test that passed in ``baseline`` but not now with its result.

    The current result is None when the test did not run at all.
    """
    now = {r.id: r for r in current}
    pairs: list[tuple[TestRecord, TestRecord | None]] = []
    for before in baseline:
        after = now.get(before.id)
        if before.is_own_pass and (after is None or not after.is_own_pass):
            pairs.append((before, after))

    return pairs


# -- results files -----------------------------------------------------


def write_results(
    path: Path, summary: Summary, records: list[TestRecord], *, brief: bool
) -> None:
    """Write a results file; ``brief`` drops failure messages (baseline).

    Messages carry per-run UUIDs and times, so the committed baseline
    keeps only what the gate compares.
    """
    tests = {}
    for r in records:
        entry: dict[str, object] = {
            "suite": r.suite,
            "kind": r.kind,
            "outcome": r.outcome,
            "passed": r.passed,
        }
        if r.message and not brief:
            entry["message"] = r.message
        tests[r.id] = entry
    document = {
        "suite": SUITE_NAME,
        "target": summary.target,
        "required_total": summary.required_total,
        "required_passed": summary.required_passed,
        "tests": tests,
    }
    path.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")


def read_results(path: Path) -> tuple[Summary, list[TestRecord]]:
    """Read a file written by ``write_results``; HarnessError if malformed."""
    try:
        document = json.loads(path.read_text())
        records = [
            TestRecord(
                id=test_id,
                suite=entry["suite"],
                kind=entry["kind"],
                outcome=entry["outcome"],
                passed=entry["passed"],
                message=entry.get("message", ""),
            )
            for test_id, entry in document["tests"].items()
        ]
        summary = Summary(
            target=document["target"],
            required_total=document["required_total"],
            required_passed=document["required_passed"],
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HarnessError(f"cannot read results file {path}: {exc}") from None

    return summary, records


def _records_from_client(path: Path) -> list[TestRecord]:
    rows = json.loads(path.read_text())

    return [
        TestRecord(
            id=row["id"],
            suite=row["suite"],
            kind=row["kind"],
            outcome=row["outcome"],
            passed=row["passed"],
            message=row["message"],
        )
        for row in rows
    ]


# -- processes ---------------------------------------------------------


def check_installed() -> None:
    """Raise HarnessError unless node and the pinned suite are installed."""
    if shutil.which("node") is None:
        raise HarnessError("node is not on PATH (Node 20 is needed)")
    package = SUITE_DIR / "node_modules" / "http-cache-tests" / "package.json"
    if not package.is_file():
        raise HarnessError(
            f"{package} is missing: run tests/conformance/setup.sh first"
        )
    version = json.loads(package.read_text())["version"]
    if version != SUITE_NAME.rpartition("@")[2]:
        raise HarnessError(f"installed suite is {version}, expected {SUITE_NAME}")


def free_loopback_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]

    return port


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop one process we started, by its PID: TERM, then KILL."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_GRACE_S)


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""

    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def _process(
    argv: list[str],
    log: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` with its output in ``log``; stop it on leaving."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=cwd, env=env,
        )
    try:
        yield process
    finally:
        _stop(process)


@contextlib.contextmanager
def suite_origin(workdir: Path) -> Iterator[int]:
    """Run the suite's origin server on 127.0.0.1; yield its port."""
    log = workdir / "origin.log"
    env = dict(os.environ, CONFORMANCE_ORIGIN_HOST="127.0.0.1",
               CONFORMANCE_ORIGIN_PORT="0")
    argv = ["node", str(SUITE_DIR / "serve.mjs")]
    with _process(argv, log, cwd=SUITE_DIR, env=env) as process:
        deadline = time.monotonic() + STARTUP_BUDGET_S
        while time.monotonic() < deadline:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("listening "):
                    yield int(line.split()[2])
                    return
            if process.poll() is not None:
                break
            time.sleep(0.05)
        raise HarnessError(f"suite origin did not start:\n{_log_tail(log)}")


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until ``url`` answers at all (any status), bounded in time."""
    deadline = time.monotonic() + STARTUP_BUDGET_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise HarnessError(
                f"process exited with {process.returncode}:\n{_log_tail(log)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise HarnessError(f"{url} did not answer in time:\n{_log_tail(log)}")


def edge_command() -> list[str]:
    """The ``cdn-edge`` console script of the running Python environment."""
    beside = Path(sys.executable).parent / "cdn-edge"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("cdn-edge")
    if found is None:
        raise HarnessError("cdn-edge is not installed (pip install -e .)")

    return [found]


def edge_config_text(port: int, origin_port: int) -> str:
    """A minimal edge configuration for the suite (edge-contract.md)."""
    return f"""\
[server]
listen = "127.0.0.1:{port}"
name = "conformance"
cache_dir = "cache"
memory_cache_mb = 32
disk_cache_mb = 128
max_connections = 1000
admin_token = ""
health_path = "/healthz"

[[site]]
hostname = "{SITE_HOSTNAME}"
origin = "http://127.0.0.1:{origin_port}"
"""


@contextlib.contextmanager
def edge_cache(workdir: Path, origin_port: int) -> Iterator[str]:
    """Run ``cdn-edge serve`` in front of the origin; yield the base URL."""
    port = free_loopback_port()
    config = workdir / "edge.toml"
    config.write_text(edge_config_text(port, origin_port))
    log = workdir / "edge.log"
    argv = [*edge_command(), "serve", "--config", str(config)]
    with _process(argv, log, cwd=workdir) as process:
        _wait_http(f"http://127.0.0.1:{port}/healthz", process, log)
        yield f"http://{SITE_HOSTNAME}:{port}"
        if process.poll() is not None:
            raise HarnessError(
                f"edge exited during the run:\n{_log_tail(log)}"
            )


def nginx_config_text(workdir: Path, port: int, origin_port: int) -> str:
    """Stock nginx proxy_cache in front of the origin, all state in workdir."""
    return f"""\
daemon off;
master_process on;
worker_processes 1;
user root;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/client-body;
    proxy_temp_path {workdir}/proxy-temp;
    fastcgi_temp_path {workdir}/fastcgi-temp;
    uwsgi_temp_path {workdir}/uwsgi-temp;
    scgi_temp_path {workdir}/scgi-temp;
    proxy_cache_path {workdir}/cache levels=1:2 keys_zone=conformance:8m
                     max_size=128m inactive=600m;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{origin_port};
            proxy_cache conformance;
            proxy_cache_revalidate on;
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx_cache(workdir: Path, origin_port: int) -> Iterator[str]:
    """Run Debian's nginx as a proxy cache; yield the base URL."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_loopback_port()
    config = workdir / "nginx.conf"
    config.write_text(nginx_config_text(workdir, port, origin_port))
    log = workdir / "nginx.log"
    argv = [nginx, "-p", str(workdir), "-c", str(config)]
    with _process(argv, log) as process:
        _wait_http(f"http://127.0.0.1:{port}/", process, log)
        yield f"http://{SITE_HOSTNAME}:{port}"


@contextlib.contextmanager
def no_cache(workdir: Path, origin_port: int) -> Iterator[str]:
    """No cache at all: the client goes straight to the origin."""
    yield f"http://{SITE_HOSTNAME}:{origin_port}"


TARGETS = {"edge": edge_cache, "nginx": nginx_cache, "direct": no_cache}


def run_client(base_url: str, workdir: Path) -> list[TestRecord]:
    """Run every test of the suite through ``base_url``; bounded in time."""
    out = workdir / "client-results.json"
    log = workdir / "client.log"
    argv = ["node", str(SUITE_DIR / "run.mjs"), base_url, str(out)]
    with open(log, "wb") as sink:
        try:
            done = subprocess.run(
                argv, cwd=SUITE_DIR, stdout=sink, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, timeout=SUITE_BUDGET_S,
            )
        except subprocess.TimeoutExpired:
            raise HarnessError(
                f"suite client ran over {SUITE_BUDGET_S:.0f} s"
            ) from None
    if done.returncode != 0 or not out.exists():
        raise HarnessError(
            f"suite client failed ({done.returncode}):\n{_log_tail(log)}"
        )

    return _records_from_client(out)


def run_suite(target: str, workdir: Path) -> tuple[Summary, list[TestRecord]]:
    """Start the origin and ``target`` in ``workdir`` and run the suite."""
    check_installed()
    with suite_origin(workdir) as origin_port:
        with TARGETS[target](workdir, origin_port) as base_url:
            records = run_client(base_url, workdir)

    return summarise(target, records), records


# -- command line ------------------------------------------------------


def _print_failures(records: list[TestRecord]) -> None:
    for r in records:
        if r.is_required and not r.passed:
            why = r.message or "a test it depends on failed"
            print(f"  {r.suite:20} {r.id:45} {r.outcome:6} {why}")


def main(argv: list[str] | None = None) -> int:
    """Run the suite once; exit 1 on a regression against the baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--results", type=Path,
                        help="write this run's results here")
    parser.add_argument("--failures", action="store_true",
                        help="list required tests not counted as passed")
    parser.add_argument("--update-baseline", action="store_true",
                        help="raise baseline.json to this run if nothing "
                             "regressed and the count did not drop")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (logs, cache)")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="conformance-"))
    try:
        summary, records = run_suite(args.target, workdir)
    except HarnessError as exc:
        print(f"harness error: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print(summary.to_text())
    if args.results:
        write_results(args.results, summary, records, brief=False)
    if args.failures:
        _print_failures(records)
    if args.target != "edge":
        return 0

    return _compare_with_baseline(summary, records, args.update_baseline)


def _compare_with_baseline(
    summary: Summary, records: list[TestRecord], update: bool
) -> int:
    if not BASELINE_PATH.exists():
        if update:
            write_results(BASELINE_PATH, summary, records, brief=True)
            print(f"baseline written: {summary.required_passed}")
        return 0
    old_summary, old_records = read_results(BASELINE_PATH)
    print(f"baseline: {old_summary.required_passed} required passed")
    regressions = find_regressions(old_records, records)
    for before, after in regressions:
        now = after.outcome if after else "absent"
        print(f"REGRESSION {before.id}: {now} {after.message if after else ''}")
    if regressions:
        return 1
    if update and summary.required_passed >= old_summary.required_passed:
        write_results(BASELINE_PATH, summary, records, brief=True)
        print(f"baseline raised to {summary.required_passed}")

    return 0


if __name__ == "__main__":
    sys.exit(main())
