"""The worker supervisor: restart delays as pure bookkeeping, and a real
supervisor whose workers crash at start (traceback logged, backoff)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dnsrouter.service import RESTART_MAX_DELAY, RestartBackoff
from tests.dns.helpers import REPO, ZONES
from tests.dns.peers import free_port
from tests.dns.test_service_e2e import CONFIG


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
