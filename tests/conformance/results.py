"""Results of the http-cache-tests suite: records, counts, regressions.

Pure bookkeeping for ``harness.py`` and the gate: no processes, no
network. Counting follows cache-tests.fyi: a required test counts as
passed when it and every test it depends on passed (run.mjs works that
out, since the dependencies live in the suite's JavaScript). Regressions
are judged on each test's own outcome, so the gate does not move when
only a dependency does.

Results file (JSON): ``suite``, ``target``, ``required_total``,
``required_passed`` and ``tests``, a map from test id to ``suite``,
``kind`` (required, optimal or check), ``outcome`` (pass, fail, setup or
retry, as run.mjs reports it) and ``passed`` (counted as above); full
files add ``uuid`` and ``message``, the committed baseline leaves them
out because they change from run to run.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

SUITE_NAME = "http-cache-tests@0.4.5"
BASELINE_NAME = "baseline.json"


class HarnessError(Exception):
    """The harness could not run the suite (as opposed to tests failing)."""


@dataclasses.dataclass(frozen=True)
class CaseResult:
    """One test's result, as written by run.mjs."""

    id: str
    suite: str
    kind: str
    outcome: str
    passed: bool
    message: str = ""
    # The test's URL path segment, to find its requests in a cache's log.
    uuid: str = ""

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


def summarise(target: str, records: list[CaseResult]) -> Summary:
    """Count required tests, and those passed with their dependencies."""
    required = [r for r in records if r.is_required]

    return Summary(
        target=target,
        required_total=len(required),
        required_passed=sum(r.passed for r in required),
    )


def find_regressions(
    baseline: list[CaseResult], current: list[CaseResult]
) -> list[tuple[CaseResult, CaseResult | None]]:
    """Pair each test that passed in ``baseline`` but not now with its result.

    The current result is None when the test did not run at all.
    """
    now = {r.id: r for r in current}
    pairs: list[tuple[CaseResult, CaseResult | None]] = []
    for before in baseline:
        after = now.get(before.id)
        if before.is_own_pass and (after is None or not after.is_own_pass):
            pairs.append((before, after))

    return pairs


def write_results(
    path: Path, summary: Summary, records: list[CaseResult], *, brief: bool
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
        if not brief:
            entry["uuid"] = r.uuid
            if r.message:
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


def read_results(path: Path) -> tuple[Summary, list[CaseResult]]:
    """Read a file written by ``write_results``; HarnessError if malformed."""
    try:
        document = json.loads(path.read_text())
        records = [
            CaseResult(
                id=test_id,
                suite=entry["suite"],
                kind=entry["kind"],
                outcome=entry["outcome"],
                passed=entry["passed"],
                message=entry.get("message", ""),
                uuid=entry.get("uuid", ""),
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


def read_client_records(path: Path) -> list[CaseResult]:
    """Read the records run.mjs wrote; HarnessError if malformed."""
    try:
        records = [
            CaseResult(
                id=row["id"],
                suite=row["suite"],
                kind=row["kind"],
                outcome=row["outcome"],
                passed=row["passed"],
                message=row["message"],
                uuid=row["uuid"],
            )
            for row in json.loads(path.read_text())
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HarnessError(f"cannot read client output {path}: {exc}") from None

    return records


def keep_stable(runs: list[list[CaseResult]]) -> list[CaseResult]:
    """Merge several runs: a test passes only if it passed in every run.

    The baseline is written from this, so that a test the cache passes
    only some of the time never becomes part of the gate.
    """
    merged = {r.id: r for r in runs[0]}
    for run in runs[1:]:
        for r in run:
            first = merged.get(r.id)
            if first is None:
                continue
            if first.is_own_pass and not r.is_own_pass:
                merged[r.id] = r
            elif first.passed and not r.passed:
                merged[r.id] = dataclasses.replace(first, passed=False)
    present_in_all = set.intersection(*({r.id for r in run} for run in runs))

    return [r for r in merged.values() if r.id in present_in_all]
