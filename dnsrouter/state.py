"""What a serving process serves, loaded and checked as one unit.

`load_state` does all the blocking work of a start or a reload: it reads
the config, every zone file, the GeoIP database (copied into memory and
checked, see geoip.py) and the netmap file, and checks the CDN names
against the zones. It touches no reactor and no shared object, so it
runs in a thread beside a serving reactor (one process) or in the
supervisor before it forks workers (several). Either way a process never
serves a file the operator changed without a SIGHUP: a worker started
again after a crash is forked from the state in force, not from disk.
"""

from __future__ import annotations

from dataclasses import dataclass

from dnsrouter.config import RouterConfig
from dnsrouter.geoip import GeoDatabase
from dnsrouter.netmap import NetmapFile, NetworkMap
from dnsrouter.zone import ZoneSet


@dataclass(frozen=True)
class ServingState:
    """Config, zones, GeoIP and network map that serve together."""

    config: RouterConfig
    zones: ZoneSet
    geo: GeoDatabase
    netmap: NetworkMap
    netmap_file: NetmapFile | None


def load_state(config_path: str) -> ServingState:
    """Load and check everything a config names; blocks on file I/O.

    Raises ConfigError, ZoneError or GeoIPError (all DnsRouterError)
    naming the file and the problem; nothing is left open on failure.
    """
    from dnsrouter.cdnzones import check_cdn_names
    from dnsrouter.config import load_config
    from dnsrouter.netmap import load_netmap
    from dnsrouter.zone import load_zone_dir

    config = load_config(config_path)
    zones = load_zone_dir(config.zones_dir)
    check_cdn_names(config, zones)
    netmap, watched = load_netmap(config)
    geo = GeoDatabase(config.geoip.database)

    return ServingState(config, zones, geo, netmap, watched)
