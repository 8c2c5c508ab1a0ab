"""The ``cdn-edge`` command: ``serve --config FILE`` and ``check --config FILE``.

Exit status: 0 on a clean stop, 2 for a bad configuration (one line on
stderr naming file, key and problem; an unusable ``server.cache_dir``
counts, for ``check`` as for ``serve``), 1 when the listening socket
cannot be opened (one line naming file, ``server.listen`` and the
reason). SIGTERM and SIGINT stop the server; SIGUSR1 starts
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
from edge.storage import prepare_directory

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
        check_cache_dir(config)
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
        print(f"cdn-edge: {config.path}: server.listen: cannot listen on "
              f"{config.server.host}:{config.server.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1

    return 0


def check_cache_dir(config: EdgeConfig) -> None:
    """Raise ConfigError unless ``server.cache_dir`` can hold the cache.

    Creates the directory (as ``serve`` would) and writes a probe file.
    """
    try:
        prepare_directory(config.server.cache_dir)
    except OSError as exc:
        where = exc.filename or config.server.cache_dir
        raise ConfigError(
            config.path, "server.cache_dir",
            f"cannot use {where}: {exc.strerror or exc}",
        ) from None


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
