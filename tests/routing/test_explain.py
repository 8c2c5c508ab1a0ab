"""`dnsrouter explain` output: every step of the decision is shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsrouter.cli import main
from dnsrouter.explain import explain_text
from dnsrouter.routing import QTYPE_A, QTYPE_AAAA

from .helpers import (
    CASES_TOML,
    DOWN,
    LOCAL,
    TEST_DB,
    ecs,
    load,
    make_router,
    write_config,
)


def test_explain_shows_geoip_record_pops_health_answer_scope_and_ttl(tmp_path):
    router, clock, prober = make_router(load(tmp_path, CASES_TOML))
    prober.set("eu22", DOWN)
    router.start()
    clock.advance(0)

    subnet = ecs("198.51.100.0/24")

    text = explain_text(router, LOCAL, "CDN.example.com", QTYPE_A, subnet)

    assert (
        "client:   198.51.100.0 (ECS 198.51.100.0/24 sent by resolver 127.0.0.1)"
    ) in text
    assert (
        "GeoIP Berlin, DE (52.5200, 13.4000), network 198.51.100.0/24, "
        "accuracy 20 km"
    ) in text
    assert "1. eu" in text and "eu22 down (HTTP 503)" in text
    assert "eu21 up" in text
    assert "eu23 up" in text
    assert "answer:   cdn.example.com. 30 IN A 192.0.2.21, 192.0.2.23" in text
    assert "scope:    /24 (ECS option data 00011818c63364)" in text
    assert "ttl:      30" in text


def test_explain_names_map_entries_default_pop_and_missing_families(tmp_path):
    body = CASES_TOML + '\n[[netmap]]\nnetwork = "10.0.0.0/8"\npop = "ap"\n'
    router, _, _ = make_router(load(tmp_path, body))

    subnet = ecs("10.1.0.0/16")

    mapped = explain_text(router, LOCAL, "cdn.example.com.", QTYPE_AAAA, subnet)
    default = explain_text(router, LOCAL, "cdn.example.com.", QTYPE_A, None)

    assert "decided:  network map 10.0.0.0/8 -> ap" in mapped
    assert "ap32 assumed-up (no IPv6)" in mapped
    assert "default PoP us" in default
    assert "scope:    no ECS in the query" in default


def test_explain_command_prints_and_rejects_unknown_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    header = f'[geoip]\ndatabase = "{TEST_DB}"\n'
    path = write_config(tmp_path, CASES_TOML + "\n" + header)

    ok = main(["explain", "203.0.113.9", "cdn.example.com", "--config", str(path)])
    out = capsys.readouterr().out
    bad = main(["explain", "203.0.113.9", "www.example.com", "--config", str(path)])

    assert ok == 0 and "GeoIP Osaka, JP" in out and "1. ap" in out
    assert bad == 2
    assert "not a configured CDN name" in capsys.readouterr().err
