"""Zone checks done at load time, as BIND does them."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsrouter.errors import ZoneError
from dnsrouter.zone import load_zone

HEAD = "$TTL 300\n@ SOA ns1 h 1 2 3 4 300\n@ NS ns1\nns1 A 192.0.2.53\n"


def load(tmp_path: Path, text: str) -> None:
    path = tmp_path / "example.net.zone"
    path.write_text(text)
    load_zone("example.net", path)


@pytest.mark.parametrize(
    "text,message",
    [
        (HEAD + "x CNAME y\nx A 192.0.2.1\n", ":5: CNAME and other data"),
        (HEAD + "@ CNAME y\n", ":5: CNAME and other data"),
        (HEAD + "x CNAME a\nx CNAME b\n", ":6: multiple RRs of singleton type CNAME"),
        (
            "$TTL 300\n@ NS ns1\nns1 A 192.0.2.53\n",
            ":1: zone example.net has no SOA record",
        ),
        (
            "$TTL 300\n@ SOA ns1 h 1 2 3 4 300\nns1 A 192.0.2.53\n",
            ":1: zone example.net has no NS records",
        ),
        (
            "$TTL 300\n@ SOA ns1 h 1 2 3 4 300\n@ NS ns1\n",
            ":3: NS 'ns1.example.net' has no address records",
        ),
    ],
)
def test_zone_errors_are_reported_with_file_and_line(
    tmp_path: Path, text: str, message: str
) -> None:
    """Each problem BIND rejects is a ZoneError naming file and line."""
    with pytest.raises(ZoneError) as info:
        load(tmp_path, text)

    assert str(tmp_path / "example.net.zone") + message in str(info.value)


def test_duplicate_records_collapse(tmp_path: Path) -> None:
    """Identical records are one record, as in BIND."""
    load(tmp_path, HEAD + "x A 192.0.2.1\nx A 192.0.2.1\n")
