"""``alpaca-di health``: connect, wait until ready, print a ``HealthReport`` as JSON.

It builds an :class:`~alpaca_di.AlpacaContainer` from the environment
(``APCA_API_KEY_ID``, ``APCA_API_SECRET_KEY``, ``ALPACA_*``; see
:class:`~alpaca_di.settings.AlpacaSettings`), opens each requested stream
(``--streams``, default ``stock``) without subscribing to anything, waits up to
``--timeout`` seconds for every one to be connected and authenticated, prints
``container.health()`` as JSON on stdout, and closes everything::

    $ alpaca-di health --streams stock,trading --timeout 10
    {"generated_at": "...", "healthy": true, "connections": [{"kind": "stock", ...}, ...]}

``--emulator`` runs the same check against the embedded
:class:`~alpaca_di.testing.AlpacaEmulator` (no account needed).

Exit codes: 0 when every requested connection is ``connected``; 1 when one is
not (failed, refused, timed out; the reason goes to stderr and the report still
prints); 2 when the settings are missing or invalid (the message names the
environment variable; the secret is never printed).
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alpaca_di.containers import AlpacaContainer
    from alpaca_di.errors import ConfigurationError
    from alpaca_di.hub.hub import StreamHub

__all__ = ["STREAMS", "configure", "run", "settings_problem"]

STREAMS: tuple[str, ...] = ("stock", "crypto", "option", "news", "trading")
"""The stream names ``--streams`` accepts."""

_EMULATOR_KEY_ID = "PKHEALTHCHECK001"
_EMULATOR_SECRET = "alpaca-di-health-secret-not-a-real-key"  # noqa: S105 - emulator placeholder


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``health`` subcommand's arguments."""
    parser.add_argument(
        "--streams", type=_streams, default=("stock",),
        help=f"comma-separated streams to connect: {','.join(STREAMS)} or all (default: stock)",
    )
    parser.add_argument(
        "--timeout", type=_positive, default=10.0,
        help="seconds each stream may take to connect and authenticate (default 10)",
    )
    parser.add_argument(
        "--emulator", action="store_true",
        help="check against the embedded emulator instead of the environment's account",
    )


def run(args: argparse.Namespace) -> int:
    """Connect, wait, print the report; returns the exit code (see the module docstring)."""
    from alpaca_di.containers import AlpacaContainer
    from alpaca_di.errors import ConfigurationError

    container = AlpacaContainer()
    emulator = None
    if args.emulator:
        from alpaca_di.emulator import AlpacaEmulator

        emulator = AlpacaEmulator().start()
        container.config.from_dict(
            {
                "api_key": _EMULATOR_KEY_ID,
                "secret_key": _EMULATOR_SECRET,
                "data_stream_url": emulator.ws_url,
                "trading_stream_url": emulator.trading_stream_url,
                "api_url": emulator.api_url,
            }
        )
    try:
        try:
            container.settings()
        except ConfigurationError as exc:
            print(f"alpaca-di health: {settings_problem(exc)}\n{exc}", file=sys.stderr)
            return 2
        try:
            healthy = _connect(container, args.streams, args.timeout)
            report = container.health()
            sys.stdout.write(report.model_dump_json(indent=2) + "\n")
            sys.stdout.flush()
        finally:
            container.shutdown_resources()
    finally:
        if emulator is not None:
            emulator.stop()
    return 0 if healthy and report.healthy else 1


def settings_problem(exc: ConfigurationError) -> str:
    """The first line of the bad-settings message: the variables at fault, never a value.

    Example::

        settings_problem(exc)   # 'invalid or missing setting ALPACA_FEED (or use --emulator)'
    """
    names = exc.env_vars
    if not names:
        return "the Alpaca settings are missing or invalid (see below, or use --emulator)"
    plural = "s" if len(names) > 1 else ""
    return f"invalid or missing setting{plural} {', '.join(names)} (or use --emulator)"


def _connect(container: AlpacaContainer, streams: tuple[str, ...], timeout: float) -> bool:
    """Open every stream at once and wait for each; report failures on stderr."""
    hubs: dict[str, StreamHub] = {name: getattr(container, f"{name}_stream")() for name in streams}
    errors: dict[str, str] = {}

    def wait(name: str, hub: StreamHub) -> None:
        try:
            hub.wait_ready(timeout)
        except Exception as exc:  # reported; the report shows the state
            errors[name] = f"{type(exc).__name__}: {exc}"

    threads = [
        threading.Thread(target=wait, args=(name, hub), name=f"health-{name}", daemon=True)
        for name, hub in hubs.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in streams:
        if name in errors:
            print(f"alpaca-di health: {name} stream: {errors[name]}", file=sys.stderr)
    return not errors


def _streams(text: str) -> tuple[str, ...]:
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return STREAMS
    unknown = sorted(set(names) - set(STREAMS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown stream(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(STREAMS)} or all"
        )
    return tuple(dict.fromkeys(names))


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value
