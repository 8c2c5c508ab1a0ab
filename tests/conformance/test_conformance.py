"""The edge against the HTTP cache conformance suite (http-cache-tests).

The e2e test runs the whole suite through ``cdn-edge`` on loopback and
fails on any test that passes in the committed ``baseline.json`` but not
now; the figures are printed either way. The other tests pin the
harness itself: its gate can fail, and the suite's origin server never
listens beyond loopback. ``setup.sh`` installs the pinned suite first.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from tests.conformance import harness, results


def _record(test_id: str, outcome: str) -> results.CaseResult:
    return results.CaseResult(
        id=test_id, suite="demo", kind="required", outcome=outcome,
        passed=outcome == "pass",
    )


def test_gate_flags_a_baseline_pass_that_now_fails() -> None:
    """A test passing in the baseline and failing now is a regression."""
    baseline = [_record("a", "pass"), _record("b", "fail")]
    current = [_record("a", "fail"), _record("b", "pass")]

    regressions = results.find_regressions(baseline, current)

    assert [(b.id, a.outcome if a else None) for b, a in regressions] == [
        ("a", "fail")
    ]


def test_gate_flags_a_baseline_pass_that_did_not_run() -> None:
    """A test missing from the current run counts as a regression."""
    regressions = results.find_regressions([_record("a", "pass")], [])

    assert [(b.id, a) for b, a in regressions] == [("a", None)]


def test_gate_accepts_fixes_and_unchanged_failures() -> None:
    """Newly passing tests and old failures are no regression."""
    baseline = [_record("a", "fail"), _record("b", "setup")]
    current = [_record("a", "pass"), _record("b", "fail")]

    assert results.find_regressions(baseline, current) == []


def test_results_file_round_trips_without_messages(tmp_path: Path) -> None:
    """A brief results file keeps every outcome and drops the messages."""
    records = [
        _record("a", "pass"),
        results.CaseResult("b", "demo", "optimal", "fail", False, "why"),
    ]
    summary = results.summarise("edge", records)
    path = tmp_path / "results.json"

    results.write_results(path, summary, records, brief=True)
    read_summary, read_records = results.read_results(path)

    assert read_summary == results.Summary("edge", 1, 1)
    assert read_records == [
        records[0], dataclasses.replace(records[1], message="")
    ]


def test_stable_merge_keeps_only_passes_seen_in_every_run() -> None:
    """A test passing in one run of three is not a stable pass."""
    runs = [
        [_record("a", "pass"), _record("b", "pass"), _record("c", "pass")],
        [_record("a", "pass"), _record("b", "fail"), _record("c", "pass")],
        [_record("a", "pass"), _record("b", "pass")],
    ]

    merged = results.keep_stable(runs)

    assert [(r.id, r.outcome, r.passed) for r in merged] == [
        ("a", "pass", True), ("b", "fail", False)
    ]


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as fh:
            next(fh)
            for line in fh:
                fields = line.split()
                address, _, port_hex = fields[1].rpartition(":")
                if int(port_hex, 16) == port and fields[3] == "0A":
                    found.add(address)

    return found


@pytest.mark.e2e
def test_suite_origin_listens_on_loopback_only(tmp_path: Path) -> None:
    """The suite's origin server is bound to 127.0.0.1 and nothing else."""
    harness.check_installed()

    with harness.suite_origin(tmp_path) as port:
        addresses = _listening_addresses(port)

    assert addresses == {"0100007F"}


@pytest.mark.e2e
def test_gate_catches_a_cache_that_stores_nothing(tmp_path: Path) -> None:
    """With no cache in front of the origin, baseline passes regress."""
    _, baseline = results.read_results(harness.BASELINE_PATH)
    reuse_tests = ["freshness-max-age", "freshness-s-maxage-shared",
                   "freshness-max-age-0"]

    _, records = harness.run_suite("direct", tmp_path, only=reuse_tests)
    regressions = results.find_regressions(
        [r for r in baseline if r.id in reuse_tests], records
    )

    assert sorted(before.id for before, _ in regressions) == [
        "freshness-max-age", "freshness-s-maxage-shared"
    ]


@pytest.mark.e2e
def test_edge_passes_every_conformance_test_the_baseline_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No suite test that passes in baseline.json fails against the edge.

    A test that fails once but passes when the suite is run again is
    reported as intermittent and does not fail the gate; one that fails
    in four runs in a row does.
    """
    base_summary, baseline = results.read_results(harness.BASELINE_PATH)
    workdir = tmp_path / "run"
    workdir.mkdir()

    summary, records = harness.run_suite("edge", workdir)
    _keep_results(tmp_path / "results.json", summary, records)
    confirmed, flaky = harness.confirm_regressions(
        "edge", workdir, baseline, records
    )

    with capsys.disabled():
        print(f"\nconformance: {summary.to_text()} "
              f"(baseline {base_summary.required_passed})")
        for result in flaky:
            print(f"conformance: intermittent {result.id}: {result.message}")
    lines = [
        f"{before.id}: "
        + (f"{after.outcome} {after.message}" if after else "did not run")
        for before, after in confirmed
    ]
    assert not confirmed, "regressed against baseline.json:\n" + "\n".join(
        lines
    )


def _keep_results(
    path: Path, summary: results.Summary, records: list[results.CaseResult]
) -> None:
    """Write full results, copied to $CONFORMANCE_RESULTS when it is set."""
    results.write_results(path, summary, records, brief=False)
    keep = os.environ.get("CONFORMANCE_RESULTS")
    if keep:
        shutil.copy(path, keep)
