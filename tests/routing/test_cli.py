"""The `dnsrouter` command line dispatches each subcommand."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsrouter.cli import build_parser, main

from .helpers import ZONE


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["--help"])

    out = capsys.readouterr().out
    assert caught.value.code == 0
    for command in ("serve", "check", "explain", "check-zone", "lab"):
        assert command in out


def test_check_zone_reports_good_and_bad_zone_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    good = tmp_path / "good.zone"
    good.write_text(ZONE)
    bad = tmp_path / "bad.zone"
    bad.write_text(ZONE + "www IN A 192.0.2.999\n")

    assert main(["check-zone", "example.com.", str(good)]) == 0
    assert main(["check-zone", "example.com.", str(bad)]) != 0
    assert "192.0.2.999" in capsys.readouterr().err


def test_missing_config_file_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    missing = tmp_path / "nope.toml"

    assert main(["check", "--config", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"dnsrouter check: {missing}: cannot read: No such file or directory"
    )
