"""The `dnsrouter` command: serve, check, explain, check-zone, lab.

Exit status: 0 success, 1 a check found problems (a zone that does not
load, a CDN name that clashes with zone data), 2 bad usage or a bad
configuration (the error names the file, key and problem; no traceback).
Each subcommand imports its module lazily, so the CLI works while parts
of the server are missing or being rewritten.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dnsrouter.errors import DnsRouterError

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="dnsrouter",
        description="Authoritative DNS server that routes CDN names to the "
        "nearest healthy edge.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the DNS server")
    serve.add_argument("--config", required=True, help="router TOML file")

    check = commands.add_parser("check", help="validate a config without serving")
    check.add_argument("--config", required=True, help="router TOML file")

    explain = commands.add_parser(
        "explain", help="show how a client would be routed, and why"
    )
    explain.add_argument("client", help="client or resolver address")
    explain.add_argument("name", help="CDN hostname, e.g. cdn.example.com")
    explain.add_argument("--type", default="A", choices=["A", "AAAA"])
    explain.add_argument("--subnet", help="ECS client subnet, e.g. 198.51.100.0/24")
    explain.add_argument(
        "--probe", action="store_true",
        help="run one health probe of every edge first (else all assumed up)",
    )
    explain.add_argument("--config", required=True, help="router TOML file")

    zone = commands.add_parser("check-zone", help="validate a zone file")
    zone.add_argument("origin", help="zone origin, e.g. example.com.")
    zone.add_argument("file", help="RFC 1035 master file")
    zone.add_argument("--print", action="store_true", help="print the parsed zone")

    commands.add_parser("lab", help="run a whole CDN on loopback", add_help=False)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default sys.argv[1:]); return the exit
    status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "lab":
        from dnsrouter.lab import main as lab

        return lab(argv[1:])
    args = build_parser().parse_args(argv)

    try:
        return _dispatch(args)
    except DnsRouterError as error:
        print(f"dnsrouter {args.command}: {error}", file=sys.stderr)
        return EXIT_USAGE


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "serve":
        from dnsrouter.service import run

        return run(args.config)
    if args.command == "check":
        return _check(args.config)
    if args.command == "explain":
        from dnsrouter.explain import main as explain

        return explain(
            args.config, args.client, args.name, args.type, args.subnet,
            probe=args.probe,
        )
    if args.command == "check-zone":
        from dnsrouter.checkzone import main as check_zone

        return check_zone(args.origin, args.file, args.print)

    return EXIT_USAGE


def _check(path: str) -> int:
    """Validate what `serve` loads at start, with the same code: config,
    netmap file, GeoIP database and zones, then how CDN names sit in the
    zones. Zone problems and CDN name conflicts go to stderr one a line
    (`file:line: reason`, `file: key: problem`) and give EXIT_PROBLEM; a
    bad config raises ConfigError (EXIT_USAGE)."""
    from dnsrouter.cdnzones import find_cdn_name_conflicts
    from dnsrouter.config import load_config
    from dnsrouter.errors import ZoneError
    from dnsrouter.geoip import GeoDatabase
    from dnsrouter.routing import Router
    from dnsrouter.zone import load_zone_dir

    config = load_config(path)
    geo = GeoDatabase(config.geoip.database)
    router = Router.from_config(config, reactor=None, geo=geo)
    try:
        zones = load_zone_dir(config.zones_dir)
    except ZoneError as error:
        print(error, file=sys.stderr)
        return EXIT_PROBLEM
    problems = find_cdn_name_conflicts(config, zones)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return EXIT_PROBLEM

    print(
        f"{path}: ok: {len(config.cdns)} CDN names, {len(config.pops)} PoPs, "
        f"{len(config.edges)} edges, {len(zones.zones)} zones, "
        f"{len(router.netmap)} netmap entries, "
        f"GeoIP {geo.database_type} at {geo.path}"
    )

    return EXIT_OK

if __name__ == "__main__":
    sys.exit(main())
