"""The ``cdn-edge`` command: ``serve --config FILE`` and ``check --config FILE``.

Exit status: 0 on a clean stop, 2 for a bad configuration (one line on
stderr naming file, key and problem), 1 when the listening socket
cannot be opened. SIGTERM and SIGINT stop the server; SIGUSR1 starts
draining (health answers 503) and SIGUSR2 stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from edge.app import Edge
from edge.config import EdgeConfig, load_config
from edge.errors import ConfigError

log = logging.getLogger("edge.cli")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="cdn-edge",
                                     description="HTTP edge cache")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("serve", "run the edge"),
                       ("check", "validate the configuration only")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--config", required=True, help="TOML file")
        sub.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"cdn-edge: {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        print(f"{args.config}: ok, {len(config.sites)} site(s)")
        return 0
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if not config.server.access_log:
        logging.getLogger("edge.access").setLevel(logging.WARNING)
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        print(f"cdn-edge: cannot listen on {config.server.host}:"
              f"{config.server.port}: {exc.strerror}", file=sys.stderr)
        return 1

    return 0


async def serve(config: EdgeConfig) -> None:
    """Serve until SIGTERM or SIGINT."""
    edge = Edge(config)
    await edge.start()
    try:
        await edge.listen(config.server.host, config.server.port)
    except OSError:
        await edge.close()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, _set_draining, edge, True)
    loop.add_signal_handler(signal.SIGUSR2, _set_draining, edge, False)
    log.info("edge %s listening on %s:%d sites=%s", config.server.name,
             config.server.host, config.server.port,
             ",".join(s.hostname for s in config.sites))
    await stop.wait()
    log.info("edge %s stopping", config.server.name)
    await edge.close()


def _set_draining(edge: Edge, value: bool) -> None:
    edge.draining = value
    log.info("draining=%s set by signal", value)


if __name__ == "__main__":
    sys.exit(main())
