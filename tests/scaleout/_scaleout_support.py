"""Constants and helpers shared by the scale-out tests (uniquely named: conftest names clash)."""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from alpaca_di.testing.messages import quote

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


def stop_workers(procs: list[Any], commands: list[Any]) -> None:
    """End worker processes: a stopped one first resumes, each is asked to stop, then killed."""
    for proc in procs:
        if proc.pid is not None and proc.is_alive():
            try:
                os.kill(proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    for i, proc in enumerate(procs):
        if proc.is_alive():
            commands[i].put("stop")
    for proc in procs:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)


class OrderReports(WorkerReports):
    """Reports of ``_outage_worker`` processes: trade updates, quotes, health, gateway groups."""

    def __init__(self, source: Any) -> None:
        self.updates: dict[int, list[tuple[str, str, bool]]] = defaultdict(list)
        self.received: dict[int, list[tuple[float, str]]] = defaultdict(list)
        self.quotes: dict[int, list[int]] = defaultdict(list)
        self.health: dict[int, list[dict[str, Any]]] = {}
        self.groups: dict[int, dict[str, dict[str, Any]]] = {}
        self.states: dict[int, set[str]] = defaultdict(set)
        super().__init__(source)

    def record(self, kind: str, index: int, item: tuple[Any, ...]) -> None:
        if kind == "update":  # (order id, event, reconciled) as the TradingService had it
            self.updates[index].append((item[2], item[3], item[4]))
            self.received[index].append((time.monotonic(), item[3]))
        elif kind == "quote":
            self.quotes[index].append(item[3])
        elif kind == "health":
            self.health[index] = item[2]
            for row in item[2]:
                self.states[index].add(row["state"])
                self.states[index].update(t["state"] for t in row["transitions"])
        elif kind == "groups":
            self.groups[index] = item[2]

    def fills(self, index: int) -> set[str]:
        """Order ids whose ``fill`` worker ``index`` received."""
        return {order for order, event, _r in self.updates[index] if event == "fill"}

    def check_fills_once(self, expected: set[str], workers: int, timeout: float) -> dict[int, int]:
        """Every worker got the ``fill`` of every order, once, and no other final state.

        Waits up to ``timeout`` for the fills; returns the reconciled fills per worker.
        """
        from alpaca_di.services.trading.orders import FINAL_EVENTS

        every = range(workers)
        complete = self.wait(lambda: all(expected <= self.fills(i) for i in every), timeout)
        with self.cond:
            missing = {i: len(expected - self.fills(i)) for i in range(workers)}
            counts = {
                i: Counter((o, e) for o, e, _r in self.updates[i] if e in FINAL_EVENTS)
                for i in range(workers)
            }
            reconciled = {
                i: sum(1 for _o, e, r in self.updates[i] if e == "fill" and r)
                for i in range(workers)
            }
        assert complete, f"fills missing per worker {missing} of {len(expected)} orders"
        for i in range(workers):
            twice = [final for final, n in counts[i].items() if n != 1]
            assert not twice, f"worker {i}: final states delivered more than once: {twice[:5]}"
            assert set(counts[i]) == {(oid, "fill") for oid in expected}, f"worker {i}"
        return reconciled


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


def quotes_reach(
    emulator: Any,
    reports: Any,
    marks: Iterator[int],
    indexes: list[int],
    timeout: float,
    what: str,
) -> None:
    """Publish a fresh AAPL quote per attempt (``bid_size`` = the next mark) until every
    worker in ``indexes`` reported it; ``reports.quotes[i]`` holds worker i's marks."""
    deadline = time.monotonic() + timeout
    for mark in marks:
        emulator.publish("/v2/iex", [quote("AAPL", bid_size=mark)])
        if reports.wait(lambda m=mark: all(m in reports.quotes[i] for i in indexes), 0.5):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"within {timeout} s: {what}")
