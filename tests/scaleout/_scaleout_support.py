"""Constants and helpers shared by the scale-out tests (uniquely named: conftest names clash)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

REDIS_URL = "redis://127.0.0.1:6379/0"
KEY = "PKSCALEOUT0001"
SECRET = "scale-out-secret-never-in-redis"


class WorkerReports:
    """What worker processes put on a queue, gathered by a thread; deadline-bound waits.

    Every worker sends ``("ready", index, ...)`` once and may send ``("stopped",
    index)``; a test's subclass records the other kinds in :meth:`record`.
    """

    def __init__(self, source: Any) -> None:
        self._source = source
        self.cond = threading.Condition()
        self.ready: dict[int, tuple[Any, ...]] = {}
        self.stopped: set[int] = set()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def record(self, kind: str, index: int, item: tuple[Any, ...]) -> None:
        """Keep one report of ``kind`` (called with ``cond`` held)."""

    def _pump(self) -> None:
        while not self._done.is_set():
            try:
                item = self._source.get(timeout=0.1)
            except queue.Empty:
                continue
            with self.cond:
                kind, index = item[0], item[1]
                if kind == "ready":
                    self.ready[index] = tuple(item[2:])
                elif kind == "stopped":
                    self.stopped.add(index)
                else:
                    self.record(kind, index, item)
                self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Whether ``predicate`` came true within ``timeout`` (re-checked on every report)."""
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def require(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Like :meth:`wait`, failing with ``TimeoutError`` naming ``what``."""
        if not self.wait(predicate, timeout):
            raise TimeoutError(f"within {timeout} s: {what}")

    def close(self) -> None:
        self._done.set()
        self._thread.join(2)


def worker_registry(config: dict[str, Any]) -> tuple[Any, Any]:
    """In a worker process: its settings and its ``sharing="redis"`` registry, from ``config``.

    ``config`` holds ``key``, ``secret``, ``data_url``, ``redis_url`` and ``sharing``
    (SharingOptions fields), optionally ``trading_url``, ``api_url`` and extra
    ``settings`` (redis_password, connection_limit_grace ...).
    """
    from alpaca_di.scaleout.options import SharingOptions
    from alpaca_di.scaleout.registry import redis_registry
    from alpaca_di.settings import AlpacaSettings

    optional = {
        name: config[field]
        for name, field in (("trading_stream_url", "trading_url"), ("api_url", "api_url"))
        if config.get(field) is not None
    }
    settings = AlpacaSettings(
        api_key=config["key"],
        secret_key=config["secret"],
        data_stream_url=config["data_url"],
        sharing="redis",
        redis_url=config["redis_url"],
        backoff_initial=0.05,
        backoff_max=0.25,
        close_timeout=0.5,
        open_timeout=5.0,
        **optional,
        **config.get("settings", {}),
    )
    registry = redis_registry(
        settings, sharing=SharingOptions(**config["sharing"]), candidate=True, fallback_local=False
    )
    return settings, registry


class OrderFlow:
    """Market orders through REST at a steady pace (each: ``new`` then ``fill``)."""

    def __init__(self, api_url: str) -> None:
        # alpaca-py imported on use: the worker processes import this module too.
        from alpaca.trading.client import TradingClient

        self._client = TradingClient(KEY, SECRET, url_override=api_url)
        self.submitted: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        from alpaca.trading.enums import OrderSide, TimeInForce
        from alpaca.trading.requests import MarketOrderRequest

        side = OrderSide.BUY
        while not self._stop.is_set():
            order = self._client.submit_order(
                MarketOrderRequest(symbol="AAPL", qty=1, side=side, time_in_force=TimeInForce.DAY)
            )
            self.submitted.append((time.monotonic(), str(order.id)))
            side = OrderSide.SELL if side is OrderSide.BUY else OrderSide.BUY
            self._stop.wait(0.1)  # the producer's pace (~20 updates/s), not synchronisation

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
