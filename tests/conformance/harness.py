"""Run the http-cache-tests conformance suite against a cache on loopback.

The suite (npm package ``http-cache-tests``, pinned in package.json, the
suite behind cache-tests.fyi) has two halves: an origin server that
answers as each test scripts it, and a client that sends every request
through the cache and checks what comes back. This module starts the
origin (``serve.mjs``, bound to 127.0.0.1), starts the cache in front of
it, runs the client (``run.mjs``) and hands the results to
``results.py``.

Targets:
  edge    ``cdn-edge serve`` with one site whose origin is the suite's
          server; the suite's Host header is ``localhost:<edge port>``,
          so the site's hostname is ``localhost``.
  nginx   Debian's nginx as proxy_cache (``proxy_cache_revalidate on``,
          as in the suite's own docker setup), a reference figure only.
  direct  no cache: the client talks to the origin itself (reference).

Command line (``python tests/conformance/harness.py --help``) for
operators; ``test_conformance.py`` drives the same functions under pytest.
Every process started here is on loopback, stopped by its PID, and every
wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.conformance.results import (
    BASELINE_NAME,
    SUITE_NAME,
    CaseResult,
    HarnessError,
    Summary,
    find_regressions,
    keep_stable,
    read_client_records,
    read_results,
    summarise,
    write_results,
)

SUITE_DIR = Path(__file__).resolve().parent
BASELINE_PATH = SUITE_DIR / BASELINE_NAME
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
# When a test that passed in the baseline fails, the whole suite is run
# again up to this many times before it counts as a regression. The
# edge has had races that fail a test about one run in eight under the
# suite's load (more in bursts when the machine is busy), and half the
# time when run alone; the baseline holds tests that passed in twelve
# full runs, so confirmation re-runs the full suite too. A real
# regression fails every time; each re-run costs about 20 s, so the
# gate stays near 90 s at worst.
CONFIRM_RERUNS = 3


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
    """How to start the edge: ``$CONFORMANCE_EDGE_COMMAND`` if set, else the
    ``cdn-edge`` console script of the running Python environment.

    The override (split like a shell would) lets an operator measure
    another tree, e.g. a clean export of HEAD run as ``python -m edge.cli``
    with PYTHONPATH pointing at it.
    """
    override = os.environ.get("CONFORMANCE_EDGE_COMMAND")
    if override:
        return shlex.split(override)
    beside = Path(sys.executable).parent / "cdn-edge"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("cdn-edge")
    if found is None:
        raise HarnessError("cdn-edge is not installed (pip install -e .)")

    return [found]


def edge_config_text(port: int, origin_port: int) -> str:
    """A minimal edge configuration for the suite: one site, `localhost`."""
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


def run_client(
    base_url: str, workdir: Path, only: Sequence[str] = ()
) -> list[CaseResult]:
    """Run the suite (or the tests ``only`` names) through ``base_url``.

    Bounded in time; raises HarnessError when the client itself fails.
    """
    out = workdir / "client-results.json"
    log = workdir / "client.log"
    argv = ["node", str(SUITE_DIR / "run.mjs"), base_url, str(out)]
    env = dict(os.environ, CONFORMANCE_ONLY=",".join(only))
    with open(log, "wb") as sink:
        try:
            done = subprocess.run(
                argv, cwd=SUITE_DIR, stdout=sink, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, timeout=SUITE_BUDGET_S, env=env,
            )
        except subprocess.TimeoutExpired:
            raise HarnessError(
                f"suite client ran over {SUITE_BUDGET_S:.0f} s"
            ) from None
    if done.returncode != 0 or not out.exists():
        raise HarnessError(
            f"suite client failed ({done.returncode}):\n{_log_tail(log)}"
        )

    return read_client_records(out)


def run_suite(
    target: str, workdir: Path, only: Sequence[str] = ()
) -> tuple[Summary, list[CaseResult]]:
    """Start the origin and ``target`` in ``workdir`` and run the suite.

    ``only`` restricts the run to those test ids; the summary then
    counts just them.
    """
    check_installed()
    with suite_origin(workdir) as origin_port:
        with TARGETS[target](workdir, origin_port) as base_url:
            records = run_client(base_url, workdir, only)

    return summarise(target, records), records


def confirm_regressions(
    target: str, workdir: Path, baseline: list[CaseResult],
    records: list[CaseResult],
) -> tuple[list[tuple[CaseResult, CaseResult | None]], list[CaseResult]]:
    """Re-run the whole suite to confirm suspected regressions.

    A suspect is a test that passed in ``baseline`` and not in
    ``records``; the suite is run again, on fresh processes, up to
    CONFIRM_RERUNS times, and a suspect is confirmed only if it fails
    every time. Returns the confirmed regressions (with their first
    failure) and the first failures of the others: those are
    intermittent faults to report, not regressions.
    """
    suspects = find_regressions(baseline, records)
    remaining = {before.id for before, _ in suspects}
    for attempt in range(1, CONFIRM_RERUNS + 1):
        if not remaining:
            break
        rerun_dir = workdir / f"rerun{attempt}"
        rerun_dir.mkdir()
        _, again = run_suite(target, rerun_dir)
        remaining -= {r.id for r in again if r.is_own_pass}
    confirmed = [p for p in suspects if p[0].id in remaining]
    flaky = [after for before, after in suspects
             if before.id not in remaining and after is not None]

    return confirmed, flaky


# -- command line ------------------------------------------------------


def _print_failures(records: list[CaseResult]) -> None:
    for r in records:
        if r.is_required and not r.passed:
            why = r.message or "a test it depends on failed"
            print(f"  {r.suite:20} {r.id:45} {r.outcome:6} {why}")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run http-cache-tests against a cache on loopback; "
                    "for the edge, exit 1 on a regression against "
                    f"{BASELINE_NAME}."
    )
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--results", type=Path,
                        help="write this run's results here")
    parser.add_argument("--failures", action="store_true",
                        help="list required tests not counted as passed")
    parser.add_argument("--update-baseline", action="store_true",
                        help="raise the baseline to this run when nothing "
                             "regressed and the count did not drop")
    parser.add_argument("--only", default="",
                        help="comma-separated test ids to run alone")
    parser.add_argument("--runs", type=int, default=1,
                        help="run N times on fresh processes; a test "
                             "counts as passed only if it passed every time")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (logs, cache)")

    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the suite once; 2 if it could not run, 1 on a regression."""
    args = _parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="conformance-"))
    try:
        return _run_and_compare(args, workdir)
    except HarnessError as exc:
        print(f"harness error: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _run_stable(
    target: str, workdir: Path, runs: int, only: Sequence[str]
) -> list[CaseResult]:
    """Run the suite ``runs`` times; keep only passes seen every time."""
    all_runs = []
    for number in range(1, runs + 1):
        rundir = workdir / f"run{number}"
        rundir.mkdir()
        summary, records = run_suite(target, rundir, only)
        print(f"run {number}: {summary.to_text()}")
        all_runs.append(records)
    stable = keep_stable(all_runs)
    for r in stable:
        passes = sum(x.is_own_pass for run in all_runs for x in run
                     if x.id == r.id)
        if 0 < passes < runs:
            print(f"unstable {r.id}: passed {passes} of {runs}; "
                  f"{r.outcome} {r.message}")

    return stable


def _run_and_compare(args: argparse.Namespace, workdir: Path) -> int:
    only = [test_id for test_id in args.only.split(",") if test_id]
    records = _run_stable(args.target, workdir, max(1, args.runs), only)
    summary = summarise(args.target, records)
    print(summary.to_text())
    if args.results:
        write_results(args.results, summary, records, brief=False)
    if args.failures:
        _print_failures(records)
    if args.target != "edge" or only:
        return 0

    if not BASELINE_PATH.exists():
        if args.update_baseline:
            write_results(BASELINE_PATH, summary, records, brief=True)
            print(f"baseline written: {summary.required_passed}")
        return 0
    old_summary, baseline = read_results(BASELINE_PATH)
    print(f"baseline: {old_summary.required_passed} required passed")
    confirmed, flaky = confirm_regressions(args.target, workdir, baseline,
                                           records)
    for result in flaky:
        print(f"INTERMITTENT {result.id}: {result.outcome} {result.message}")
    for before, after in confirmed:
        now = f"{after.outcome} {after.message}" if after else "did not run"
        print(f"REGRESSION {before.id}: {now}")
    if confirmed:
        return 1

    if args.update_baseline:
        _raise_baseline(old_summary, summary, records, flaky)

    return 0


def _raise_baseline(
    old: Summary, new: Summary, records: list[CaseResult],
    flaky: list[CaseResult],
) -> None:
    """Write the baseline unless the count of required passes would drop.

    Called only when nothing regressed for certain. A baseline test that
    failed in this run but passed on a re-run leaves the baseline: it is
    an intermittent fault now, named here so that it gets fixed.
    """
    if new.required_passed < old.required_passed:
        print("baseline kept: fewer required passes than the baseline")
        return
    for result in flaky:
        print(f"leaves the baseline as intermittent: {result.id}")
    write_results(BASELINE_PATH, new, records, brief=True)
    print(f"baseline raised to {new.required_passed}")


if __name__ == "__main__":
    sys.exit(main())
