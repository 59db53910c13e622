"""Run in a subprocess by test_interrupts.py: real SIGINTs at random points of init_resources().

Prints one line of JSON: how many runs were interrupted, and what was left after
each shutdown (hubs in the registry, runtime users and threads, open sessions).
"""

from __future__ import annotations

import gc
import json
import os
import random
import signal
import sys
import threading
from typing import Any

from dependency_injector import providers

from alpaca_di import AlpacaContainer, ConnectionRegistry
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.transport.runtime import Runtime

armed = threading.Event()


def on_sigint(signum: int, frame: Any) -> None:
    if armed.is_set():
        armed.clear()
        raise KeyboardInterrupt


def main(seed: int, runs: int) -> dict[str, Any]:
    signal.signal(signal.SIGINT, on_sigint)
    rng = random.Random(seed)
    result: dict[str, Any] = {"runs": runs, "interrupted": 0, "hubs_left": 0, "sessions_left": 0}
    with AlpacaEmulator(connection_limit=5) as emu:
        threads = threading.active_count()
        for _ in range(runs):
            container = AlpacaContainer()
            container.config.from_dict(
                {
                    "api_key": "PKINTERRUPTS0001",
                    "secret_key": "interrupt-secret-do-not-leak",
                    "data_stream_url": emu.ws_url,
                    "trading_stream_url": emu.trading_stream_url,
                    "api_url": emu.api_url,
                }
            )
            registry = ConnectionRegistry()
            container.registry.override(providers.Object(registry))
            timer = threading.Timer(rng.uniform(0, 0.03), os.kill, (os.getpid(), signal.SIGINT))
            try:
                try:
                    armed.set()
                    timer.start()
                    container.init_resources()
                    container.stock_stream().wait_ready(5)
                    container.trading_service().listen(5)
                finally:
                    armed.clear()
            except KeyboardInterrupt:
                result["interrupted"] += 1
            timer.join()
            container.shutdown_resources()
            if registry.hubs():
                result["hubs_left"] += 1
            registry.close_all()
            try:
                emu.wait_until(lambda: emu.stats().open_connections == 0, 10)
            except TimeoutError:
                result["sessions_left"] += 1
        gc.collect()
        result["runtime_users"] = Runtime.shared().users
        result["runtime_running"] = Runtime.shared().running
        result["threads_left"] = threading.active_count() - threads
    return result


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), int(sys.argv[2]))))
