"""What every daemon shares: options from flags or a config file, signals, the event loop,
the metrics endpoint.

A daemon is ``async def serve(options, log, stop)``: it starts its node, waits for ``stop``
(set by SIGTERM or SIGINT), closes its sockets and returns; the process exits 0. A config file
(``--config FILE.toml``) holds the same settings as the long flags (``listen = "0.0.0.0:7400"``,
``link = ["west-fs1=4"]``); flags given on the command line win. With ``--metrics HOST:PORT``
a daemon serves its node's metrics to Prometheus (docs/operations.md §1).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import tomllib
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from ...errors import ConfigError, ScaffoldError
from ...runtime.aio import calm_collector, run
from ...runtime.prometheus import MetricsEndpoint, Source
from ..address import parse_address
from .jsonlog import JsonLog

__all__ = ["Serve", "add_metrics_argument", "parse_peer_values", "run_daemon", "serve_metrics", "with_config"]

Serve = Callable[[argparse.Namespace, JsonLog, asyncio.Event], Coroutine[Any, Any, None]]


def parse_peer_values(items: list[str] | None, what: str) -> dict[str, str]:
    """``["peer=value", ...]`` as a dict.

    Raises:
        ConfigError: an item has no ``=``.
    """
    out: dict[str, str] = {}
    for item in items or []:
        peer, sep, value = str(item).partition("=")
        if not sep or not peer:
            raise ConfigError(f"{what}: want PEER=VALUE, got {item!r}")
        out[peer] = value
    return out


def add_metrics_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics on this address (GET /metrics; port 0 picks one)",
    )


def serve_metrics(args: argparse.Namespace, source: Source, log: JsonLog) -> MetricsEndpoint | None:
    """Start the metrics endpoint ``--metrics`` asks for (None if it asks for none); the
    caller closes it.

    Raises:
        ConfigError: a bad address, or one that cannot be bound.
    """
    if not getattr(args, "metrics", None):
        return None
    endpoint = MetricsEndpoint(source, parse_address(args.metrics))
    endpoint.start()
    log.info("metrics", url=endpoint.url)
    return endpoint


def with_config(parser: argparse.ArgumentParser, args: argparse.Namespace, argv_given: set[str]) -> None:
    """Fill options not given as flags from ``args.config`` (a TOML file of long-flag names).

    Raises:
        ConfigError: the file cannot be read, is not TOML, or has an unknown key.
    """
    if not getattr(args, "config", None):
        return
    path = Path(args.config)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    known = {a.dest for a in parser._actions}
    for key, value in data.items():
        dest = key.replace("-", "_")
        if dest not in known or dest in ("config", "func"):
            raise ConfigError(f"{path}: unknown setting {key!r}")
        if dest not in argv_given:
            setattr(args, dest, value)


def run_daemon(serve: Serve, args: argparse.Namespace, node: str) -> int:
    """Run ``serve`` until SIGTERM or SIGINT; 0 on a clean stop, 2 on a ``ScaffoldError``."""
    log = JsonLog(node, debug=bool(getattr(args, "debug", False)))

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(signum: signal.Signals) -> None:
            log.info("signal", signal=signum.name)
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        calm_collector()  # a node holding many flows must not stop for a full collection
        try:
            await serve(args, log, stop)
        except ScaffoldError as exc:
            log.error("failed", error=str(exc))
            return 2
        except OSError as exc:
            log.error("failed", error=f"{type(exc).__name__}: {exc}")
            return 2
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        log.info("stopped")
        return 0

    return run(main())
