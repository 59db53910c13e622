"""``alpaca-di emulator``: serve the loopback Alpaca emulator until SIGINT/SIGTERM.

Once it accepts connections it prints one line per address::

    $ alpaca-di emulator --connection-limit 1
    ready ws://127.0.0.1:PORT                      (the data base URL)
    trading ws://127.0.0.1:PORT/stream
    rest http://127.0.0.1:RESTPORT
    counters http://127.0.0.1:RESTPORT/_emulator/counters   (JSON, no secrets)
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``emulator`` subcommand's arguments."""
    parser.add_argument("--port", type=int, default=0, help="WebSocket port (0 = a free port)")
    parser.add_argument("--rest-port", type=int, default=0, help="REST port (0 = a free port)")
    parser.add_argument(
        "--rate",
        type=float,
        default=10.0,
        help="synthetic data points per second per connection (0 = none; default 10)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the synthetic market")
    parser.add_argument(
        "--connection-limit",
        type=int,
        default=1,
        help="authenticated sessions per key and endpoint (default 1, like Alpaca)",
    )
    parser.add_argument(
        "--slot-hold",
        type=float,
        default=0.0,
        help="seconds a slot stays taken after an unclean drop (Alpaca: about 90)",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit code (1 when the ports are taken)."""
    from alpaca_di.emulator import AlpacaEmulator

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        emulator = AlpacaEmulator(
            port=args.port,
            rest_port=args.rest_port,
            rate=args.rate,
            seed=args.seed,
            connection_limit=args.connection_limit,
            slot_hold_seconds=args.slot_hold,
        )
        async with emulator as emu:
            print(f"ready {emu.ws_url}", flush=True)
            print(f"trading {emu.trading_stream_url}", flush=True)
            print(f"rest {emu.api_url}", flush=True)
            print(f"counters {emu.api_url}/_emulator/counters", flush=True)
            await stop.wait()

    try:
        asyncio.run(serve())
    except OSError as exc:
        print(f"alpaca-di emulator: {exc}", file=sys.stderr)
        return 1
    return 0
