"""Whether the CDN names of a config fit the zones they live in.

A CDN name is answered by the router ahead of the zone data: A and AAAA
come from routing, every other type is NODATA. So a CDN name that is a
zone apex would hide the zone's SOA and NS, one that owns records in a
zone file would silently replace them, and one below a delegation or a
DNAME would answer for a name the zone sends elsewhere. Each is a
configuration error naming the config file, the key, the zone file and
the problem; the service refuses such a config at start and on reload,
and `dnsrouter check` reports it.
"""

from __future__ import annotations

from dnsrouter import names, rdata
from dnsrouter.config import CdnConfig, RouterConfig
from dnsrouter.errors import ConfigError
from dnsrouter.zone import DNAME, Zone, ZoneSet


def find_cdn_name_conflicts(config: RouterConfig, zones: ZoneSet) -> list[str]:
    """One message per CDN name that clashes with zone data; [] when none.

    Pure: reads the loaded zones, never the files. Call it before the
    responder marks CDN names as existing in their zones (that adds only
    empty nodes, which are not conflicts either way).
    """
    problems = []
    for cdn in config.cdns:
        problem = _conflict(cdn, zones)
        if problem is not None:
            problems.append(
                f'{config.path}: {cdn.key}.name: {problem}, got "{cdn.name}"'
            )

    return problems


def check_cdn_names(config: RouterConfig, zones: ZoneSet) -> None:
    """Raise ConfigError listing every conflict, one per line."""
    problems = find_cdn_name_conflicts(config, zones)
    if problems:
        raise ConfigError("\n".join(problems))


def _conflict(cdn: CdnConfig, zones: ZoneSet) -> str | None:
    """What is wrong with one CDN name in its zone, or None."""
    key = names.key_of(names.from_text(cdn.name, None))
    zone = zones.find_zone(key)
    if zone is None:
        return None  # the config check already names a name in no zone
    if key == zone.key:
        return (
            f"is the apex of zone file {zone.source}, whose SOA and NS a "
            "CDN name would hide; use a name below it"
        )
    cut = zone.find_cut(key, rdata.A)
    if cut is not None:
        return (
            f"lies below the delegation of {names.to_text(cut)} in zone file "
            f"{zone.source}; resolvers ask the child zone's servers for it"
        )
    dname = zone.find_dname(key)
    if dname is not None:
        return (
            f"lies below the DNAME of {names.to_text(dname)} in zone file "
            f"{zone.source}, which redirects it (RFC 6672 section 2.3)"
        )

    return _owned_data(zone, key)


def _owned_data(zone: Zone, key: bytes) -> str | None:
    node = zone.nodes.get(key)
    if not node:
        return None
    types = ", ".join(sorted(rdata.type_text(rtype) for rtype in node))

    return (
        f"owns {types} records in zone file {zone.source}, which the CDN "
        "answer would replace; remove them there or pick another name"
    )
