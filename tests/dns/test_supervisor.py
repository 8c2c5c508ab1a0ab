"""The worker supervisor: restart delays as pure bookkeeping, and a real
supervisor whose workers crash at start (traceback logged, backoff)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dnsrouter.supervisor import RESTART_MAX_DELAY, RestartBackoff
from tests.dns.helpers import REPO, ZONES
from tests.dns.peers import free_port
from tests.dns.test_service_e2e import CONFIG, dig, start


@pytest.mark.parametrize(
    ("uptimes", "delays"),
    [
        # Instant deaths in a row: 1, 2, 4, 8, 16, then capped.
        ([0.1] * 7, [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]),
        # A worker that served a while resets the count.
        ([0.1, 0.1, 60.0, 0.1], [1.0, 2.0, 1.0, 1.0]),
        # Many quick deaths never overflow the cap.
        ([0.1] * 80, [1.0, 2.0, 4.0, 8.0, 16.0] + [RESTART_MAX_DELAY] * 75),
    ],
)
def test_restart_delay_doubles_on_quick_deaths_and_resets_after_uptime(
    uptimes: list[float], delays: list[float]
) -> None:
    """Each death soon after start doubles the delay up to the cap; a
    worker that lived QUICK_DEATH seconds restarts after one second."""
    backoff = RestartBackoff()

    assert [backoff.delay_after(uptime) for uptime in uptimes] == delays


CRASHING_WORKERS = """
import sys
from dnsrouter import service

def crash(*args, **kwargs):
    raise RuntimeError("worker bug for the test")

service.serve = crash
sys.exit(service.run(sys.argv[1]))
"""


@pytest.mark.e2e
def test_crashing_workers_log_traceback_and_back_off(tmp_path: Path) -> None:
    """Workers that raise at start: each crash logs its traceback, the
    supervisor logs the death with a growing restart delay instead of
    forking in a tight loop, and SIGTERM ends it during a delay."""
    shutil.copytree(ZONES, tmp_path / "zones")
    config = tmp_path / "router.toml"
    geoip = REPO / "geodata" / "test-city.mmdb"
    config.write_text(
        CONFIG.format(port=free_port(), workers=2, server_extra="", geoip=geoip)
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING_WORKERS, str(config)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO)},
    )
    time.sleep(3.5)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=3)

    assert stderr.count("RuntimeError: worker bug for the test") >= 2
    assert "worker crashed pid=" in stderr and "Traceback" in stderr
    assert "quick_deaths=2 restart_in=2.0s" in stderr
    assert stderr.count("worker started") <= 6


def _children(pid: int) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True
    ).stdout.split()

    return [int(child) for child in found]


def _spoil_config(tmp_path: Path) -> None:
    (tmp_path / "router.toml").write_text("[server]\nlisten = 5\n")


def _spoil_geoip(tmp_path: Path) -> None:
    copy = tmp_path / "city.mmdb"
    shutil.copy(REPO / "geodata" / "test-city.mmdb", copy)
    config = tmp_path / "router.toml"
    text = config.read_text()
    config.write_text(text.replace(str(REPO / "geodata" / "test-city.mmdb"), str(copy)))
    copy.write_bytes(b"not a database")


@pytest.mark.e2e
@pytest.mark.parametrize("spoil", [_spoil_config, _spoil_geoip])
def test_worker_killed_while_files_are_bad_leaves_the_others_serving(
    tmp_path: Path, spoil: Any
) -> None:
    """workers = 2, a config or GeoIP file broken on disk (no SIGHUP yet),
    then kill -9 of one worker: the supervisor never stops the survivor,
    every query keeps being answered, and it exits 0 on SIGTERM."""
    proc, port = start(tmp_path, workers=2)
    try:
        spoil(tmp_path)
        victim = _children(proc.pid)[0]

        os.kill(victim, signal.SIGKILL)
        # Queries already queued on the victim's socket die with it.
        deadline = time.monotonic() + 5
        while victim in _children(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        answers = []
        for _ in range(15):
            answers.append(dig(port, "www.example.com", "+short").split())
            time.sleep(0.15)

        assert proc.poll() is None
        assert all(answer == ["192.0.2.10"] for answer in answers)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.e2e
def test_restarted_worker_serves_the_state_in_force_not_the_disk(
    tmp_path: Path,
) -> None:
    """A record added on disk without SIGHUP, then kill -9 of a worker:
    the replacement serves the zone in force like its sibling (no mixed
    answers); the record shows everywhere after SIGHUP."""
    proc, port = start(tmp_path, workers=2)
    try:
        zone = tmp_path / "zones" / "example.com.zone"
        zone.write_text(zone.read_text() + "new IN A 192.0.2.99\n")
        victim = _children(proc.pid)[0]

        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while victim in _children(proc.pid) or len(_children(proc.pid)) < 2:
            assert time.monotonic() < deadline, "killed worker not replaced"
            time.sleep(0.1)
        time.sleep(0.5)  # the replacement is listening
        before = {dig(port, "new.example.com", "+short") for _ in range(20)}
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while {dig(port, "new.example.com", "+short") for _ in range(10)} != {
            "192.0.2.99\n"
        }:
            assert time.monotonic() < deadline, "reload not applied everywhere"
            time.sleep(0.1)

        assert before == {""}
    finally:
        proc.kill()
        proc.wait(5)


@pytest.mark.e2e
@pytest.mark.parametrize("workers", [1, 2])
def test_second_server_on_a_served_address_is_refused_in_one_line(
    tmp_path: Path, workers: int
) -> None:
    """A second `serve` on the address a running one serves (workers 1
    or 2) exits 1 with `FILE: server.listen: cannot listen on ADDR:
    REASON`, and the first keeps every query (none is taken by the
    newcomer)."""
    proc, port = start(tmp_path, workers=workers)
    try:
        result = subprocess.run(
            [sys.executable, "-c", RUN, str(tmp_path / "router.toml")],
            capture_output=True, text=True, cwd=REPO, timeout=20,
        )
        answers = {dig(port, "www.example.com", "+short") for _ in range(10)}
    finally:
        proc.terminate()
        proc.wait(10)

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"{tmp_path / 'router.toml'}: server.listen: cannot listen on "
        f"127.0.0.1:{port}: Address already in use"
    )
    assert "Error(" not in result.stderr and "Traceback" not in result.stderr
    assert answers == {"192.0.2.10\n"}


RUN = "import sys; from dnsrouter import service; sys.exit(service.run(sys.argv[1]))"


@pytest.mark.e2e
def test_sigterm_to_the_process_group_stops_quietly(tmp_path: Path) -> None:
    """`kill -TERM -PGID` (as systemd and a terminal's Ctrl-C do): each
    worker gets the signal twice, from the group and from the
    supervisor, and stops once, without a traceback; exit status 0."""
    shutil.copytree(ZONES, tmp_path / "zones")
    config = tmp_path / "router.toml"
    geoip = REPO / "geodata" / "test-city.mmdb"
    port = free_port()
    config.write_text(
        CONFIG.format(port=port, workers=2, server_extra="", geoip=geoip)
    )
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", RUN, str(config)],
            stderr=subprocess.PIPE, text=True, cwd=REPO,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while "192.0.2.10" not in dig(port, "www.example.com", "+short"):
            assert time.monotonic() < deadline, "router did not come up"
        time.sleep(0.3)  # both workers serving

        os.killpg(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)

        assert proc.returncode == 0
        assert "Traceback" not in stderr and "ReactorNotRunning" not in stderr
        assert stderr.count("worker stopped") == 2


@pytest.mark.e2e
def test_workers_end_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """kill -9 of the supervisor leaves no worker answering on its own:
    each gets SIGTERM from the kernel and exits."""
    proc, _port = start(tmp_path, workers=2)
    try:
        workers = _children(proc.pid)
        assert len(workers) == 2
    finally:
        proc.kill()
        proc.wait(5)

    deadline = time.monotonic() + 10
    while any(_is_running(worker) for worker in workers):
        assert time.monotonic() < deadline, "workers outlived the supervisor"
        time.sleep(0.1)


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False

    return True
