"""check-zone against BIND's named-checkzone over the corpus in zones/.

For every `*.zone` file both tools must agree on accept/reject, and for
accepted zones `check-zone --print` and `named-checkzone -D -o -` must
give the same set of records (compared as parsed RDATA, so presentation
details such as spacing or hex case do not matter).  named-checkzone runs
with the corpus as working directory because it resolves $INCLUDE paths
against it, where we resolve them beside the including file.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest

from dnsrouter import checkzone

CORPUS = Path(__file__).parent / "zones"
FILES = sorted(p.name for p in CORPUS.glob("*.zone"))
ORIGIN = "example.com"

Record = tuple[str, int, str, str, bytes]


def records(text: str) -> set[Record]:
    """Parse dump lines into (owner, ttl, class, type, canonical RDATA)."""
    out = set()
    for line in text.splitlines():
        if not line.strip() or line.startswith(";"):
            continue
        owner, ttl, rclass, rtype, rest = (line.split(None, 4) + [""])[:5]
        parsed = dns.rdata.from_text(
            dns.rdataclass.from_text(rclass),
            dns.rdatatype.from_text(rtype),
            rest,
            origin=dns.name.root,
        )
        out.add(
            (
                dns.name.from_text(owner).to_text().lower(),
                int(ttl),
                rclass,
                rtype,
                parsed.to_digestable(dns.name.root),
            )
        )

    return out


def bind_check(name: str) -> tuple[int, str]:
    result = subprocess.run(
        ["named-checkzone", "-D", "-o", "-", ORIGIN, name],
        cwd=CORPUS,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.returncode, result.stdout


def our_check(name: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = checkzone.main(ORIGIN, str(CORPUS / name), True, out, err)
    return code, out.getvalue(), err.getvalue()


def test_corpus_has_at_least_30_zones_each_with_its_intended_verdict() -> None:
    """The corpus is big enough, and BIND rejects exactly the files named
    `-bad-`, so no zone meant to load fails for an unnoticed reason."""
    rejected = {name for name in FILES if bind_check(name)[0] != 0}

    assert len(FILES) >= 30
    assert rejected == {name for name in FILES if "-bad-" in name}


@pytest.mark.parametrize("name", FILES)
def test_check_zone_matches_named_checkzone(name: str) -> None:
    """Same verdict as named-checkzone, and the same records when loaded;
    each problem we report is `file:line: reason`."""
    bind_code, bind_out = bind_check(name)
    code, out, err = our_check(name)

    assert code == (0 if bind_code == 0 else 1), err
    if code == 0:
        assert records(out) == records(bind_out)
    else:
        first = err.splitlines()[0]
        assert first.startswith(str(CORPUS / name.split(".")[0])) or ".inc:" in first
        path, line, reason = first.split(":", 2)
        assert line.isdigit() and reason.strip()


ACCEPTED = [name for name in FILES if "-bad-" not in name]


@pytest.mark.parametrize("name", ACCEPTED)
def test_zone_dumped_by_bind_loads_back_unchanged(name: str, tmp_path: Path) -> None:
    """A zone as BIND writes it (named-checkzone -D) loads through our
    parser into the same records, and our --print output loads into BIND
    unchanged: the two dump formats are interchangeable."""
    _, bind_out = bind_check(name)
    (tmp_path / "bind.zone").write_text(bind_out)
    _, our_out, _ = our_check(name)
    (tmp_path / "ours.zone").write_text(our_out)

    out, err = io.StringIO(), io.StringIO()
    code = checkzone.main(ORIGIN, str(tmp_path / "bind.zone"), True, out, err)
    bind_again = subprocess.run(
        ["named-checkzone", "-D", "-o", "-", ORIGIN, str(tmp_path / "ours.zone")],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert code == 0, err.getvalue()
    assert records(out.getvalue()) == records(bind_out)
    assert bind_again.returncode == 0, bind_again.stdout
    assert records(bind_again.stdout) == records(our_out)


def test_cli_check_zone_exit_status_and_print() -> None:
    """`dnsrouter check-zone ORIGIN FILE [--print]` as an operator runs it:
    0 and one canonical line a record, or 1 and `file:line: reason`."""
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dnsrouter.cli", "check-zone", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )

    good = cli(ORIGIN, str(CORPUS / "01-fixture.zone"), "--print")
    bad = cli(ORIGIN, str(CORPUS / "40-bad-cname-and-other.zone"))

    assert good.returncode == 0
    assert "www.example.com. 300 IN A 192.0.2.10" in good.stdout.splitlines()
    assert len(good.stdout.splitlines()) == 51
    assert bad.returncode == 1
    assert bad.stderr.startswith(str(CORPUS / "40-bad-cname-and-other.zone") + ":6: ")
