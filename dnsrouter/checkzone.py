"""`dnsrouter check-zone`: the operator's named-checkzone.

Loads one zone exactly as the server would (same parser, same checks)
and reports each problem as `file:line: reason` on stderr.  With
`print_zone` the zone is written in canonical form, one record a line:
absolute owner, TTL, class, type and presentation data, owners in DNSSEC
canonical order (RFC 4034 section 6.1) so two dumps can be diffed.
"""

from __future__ import annotations

import logging
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from dnsrouter import names, rdata
from dnsrouter.errors import ZoneError
from dnsrouter.zone import Zone, load_zone

EXIT_OK, EXIT_BAD_ZONE = 0, 1
_CLASSES = {1: "IN", 3: "CH", 4: "HS"}


def main(
    origin: str,
    path: str,
    print_zone: bool,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Check one zone file; 0 when it loads, 1 when it does not.

    Never raises for a bad zone; `out` and `err` default to stdout and
    stderr.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    label = origin.rstrip(".") or "."
    # Warnings are printed below as `file:line: reason`; the loader's own
    # log lines (meant for the server's log) would repeat them.
    zone_log = logging.getLogger("dnsrouter.zone")
    level = zone_log.level
    zone_log.setLevel(logging.ERROR)
    try:
        zone = load_zone(origin, path, Path(path).parent)
    except ZoneError as exc:
        for line in str(exc).splitlines():
            print(line, file=err)
        print("zone %s/IN: not loaded due to errors." % label, file=err)
        return EXIT_BAD_ZONE
    finally:
        zone_log.setLevel(level)

    for warning in zone.warnings:
        print(warning, file=err)
    if print_zone:
        for line in canonical_lines(zone):
            print(line, file=out)
    else:
        serial = struct.unpack("!I", zone.soa.rdatas[0][-20:-16])[0]
        print("zone %s/IN: loaded serial %d" % (label, serial), file=out)
        print("OK", file=out)

    return EXIT_OK


def canonical_key(wire: bytes) -> list[bytes]:
    """Sort key of RFC 4034 section 6.1: labels right to left, folded."""
    return list(reversed(names.labels_of(names.key_of(wire))))


def canonical_lines(zone: Zone) -> Iterator[str]:
    """Every record of the zone as one presentation line, sorted."""
    for key in sorted(zone.nodes, key=canonical_key):
        node = zone.nodes[key]
        # The SOA leads, as in BIND's dumps; then types in number order.
        for rtype in sorted(node, key=lambda t: (t != rdata.SOA, t)):
            rrset = node[rtype]
            owner = names.to_text(rrset.name)
            rclass = _CLASSES.get(rrset.rclass, "CLASS%d" % rrset.rclass)
            kind = rdata.type_text(rtype)
            for data in sorted(rrset.rdatas):
                yield "%s %d %s %s %s" % (
                    owner, rrset.ttl, rclass, kind, rdata.show(rtype, data)
                )
