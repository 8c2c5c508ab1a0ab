"""Both packages type-check: a type error fails the suite, not production."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent


def test_packages_pass_mypy() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "dnsrouter", "edge"],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=240,
    )

    assert result.returncode == 0, result.stdout + result.stderr
