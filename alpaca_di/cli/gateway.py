"""``alpaca-di gateway``: hold the shared Alpaca sockets of a ``sharing=redis`` deployment.

A dedicated leader process (:func:`run_gateway`): it builds no hubs, only a
:class:`~alpaca_di.scaleout.gateway.Gateway` registered for each requested
kind's endpoint, so that every worker process can run follower-only
(``ALPACA_REDIS_ROLE=follower``)::

    $ export ALPACA_SHARING=redis ALPACA_REDIS_URL=redis://cache:6379/0
    $ alpaca-di gateway --kinds stock,trading
    ready web-1:4242:9f3a1c
    group stock wss://stream.data.alpaca.markets/v2/iex 3f2a...
    group trading wss://paper-api.alpaca.markets/stream 9b1c...

Exit codes: 0 after SIGINT/SIGTERM (every socket handed over with a close
frame), 1 when Redis is unavailable, 2 for bad settings or ``--kinds``.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alpaca_di.settings import AlpacaSettings

__all__ = ["configure", "run", "run_gateway"]


# The settings field naming each data kind's feed (the other kinds have none).
_FEED_FIELDS: dict[str, str] = {"stock": "feed", "crypto": "crypto_feed", "option": "option_feed"}


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``gateway`` subcommand's arguments."""
    parser.add_argument(
        "--kinds",
        default="stock,crypto,option,news,trading",
        help="comma-separated stream kinds to lead (default: all of them)",
    )


def run(args: argparse.Namespace) -> int:
    """Lead the ``--kinds`` until stopped; returns the exit code (see the module docstring)."""
    return run_gateway([kind.strip() for kind in args.kinds.split(",") if kind.strip()])


def run_gateway(
    kinds: list[str],
    *,
    settings: AlpacaSettings | None = None,
    stop: threading.Event | None = None,
) -> int:
    """``alpaca-di gateway``: lead every ``kind`` for the environment's account until stopped.

    A dedicated leader process: it builds no hubs, only a
    :class:`~alpaca_di.scaleout.gateway.Gateway` registered for each kind's
    endpoint, so that worker processes can all run follower-only
    (``ALPACA_REDIS_ROLE=follower``). Prints ``ready <identity>`` once registered
    and one ``group <kind> <endpoint> <tag>`` line per kind; stops on SIGINT or
    SIGTERM (or ``stop``), handing every socket over with a close frame. Returns
    the exit code: 2 for bad settings, 1 when Redis is unavailable.

    Example::

        export ALPACA_SHARING=redis ALPACA_REDIS_URL=redis://cache:6379/0
        alpaca-di gateway --kinds stock,trading
    """
    from alpaca_di.errors import ConfigurationError, RedisUnavailableError
    from alpaca_di.protocol import StreamKind
    from alpaca_di.scaleout.gateway import Gateway
    from alpaca_di.scaleout.registry import check_redis, redis_connection, sharing_options
    from alpaca_di.settings import AlpacaSettings, endpoint_for

    try:
        settings = settings or AlpacaSettings()
        sharing, _candidate, _fallback = sharing_options(settings)
        connection = redis_connection(settings)
        unknown = [kind for kind in kinds if kind not in {k.value for k in StreamKind}]
        if unknown or not kinds:
            valid = ", ".join(k.value for k in StreamKind)
            raise ConfigurationError(f"--kinds {','.join(unknown) or '(none)'}: use {valid}")
        parsed = [StreamKind(kind) for kind in kinds]
    except ConfigurationError as exc:
        print(f"alpaca-di gateway: {exc}", file=sys.stderr)
        return 2
    try:
        check_redis(connection)
    except RedisUnavailableError as exc:
        print(f"alpaca-di gateway: {exc}", file=sys.stderr)
        return 1
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    gateway = Gateway(
        connection,
        sharing=sharing,
        rest_url=settings.resolved_api_url,
        data_url=settings.resolved_data_url,
    )
    credentials = settings.credentials()
    try:
        lines = []
        for kind in parsed:
            feed_field = _FEED_FIELDS.get(kind.value)
            try:
                endpoint = endpoint_for(settings, kind)
                options = dataclasses.replace(
                    settings.to_options(),
                    feed=getattr(settings, feed_field) if feed_field else None,
                )
                tag = gateway.register(credentials, kind, endpoint, options)
            except ConfigurationError as exc:
                print(f"alpaca-di gateway: {exc}", file=sys.stderr)
                return 2
            lines.append(f"group {kind.value} {endpoint} {tag}")
        print(f"ready {gateway.identity}", flush=True)
        for line in lines:
            print(line, flush=True)
        import structlog  # with the command, not at ``--help``

        structlog.get_logger(__name__).info(
            "gateway.serving", identity=gateway.identity, kinds=[k.value for k in parsed]
        )
        stop.wait()
    finally:
        gateway.close()
    return 0
