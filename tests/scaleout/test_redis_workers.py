"""Four worker processes, one Alpaca account: one socket per endpoint, shared through Redis.

The workers (``_scaleout_worker.run_worker``, started with ``multiprocessing``
spawn) build their hubs through :func:`alpaca_di.scaleout.registry.redis_registry`
against one :class:`AlpacaEmulator` running in this process, and report what
they receive over a queue. Worker 0 starts first, so it leads both groups; it is
then killed with SIGKILL and another worker must take over.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from _scaleout_support import KEY, REDIS_URL, SECRET, WorkerReports, stop_workers
from _scaleout_worker import run_worker

from alpaca_di.credentials import Credentials
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.scaleout.wire import SharingKeys, account_tag
from alpaca_di.testing.messages import quote

pytestmark = pytest.mark.redis

IEX = "/v2/iex"
STREAM = "/stream"
SYMBOLS = [["AAPL", "NVDA"], ["MSFT", "AAPL"], ["TSLA", "MSFT"], ["SPY"]]
SHARING = {
    "lock_ttl": 2.0,
    "renew_interval": 0.25,
    "heartbeat_interval": 0.25,
    "heartbeat_ttl": 1.0,
}


class Results(WorkerReports):
    """Everything the workers report: quotes, trade updates, health."""

    def __init__(self, source: Any) -> None:
        self.quotes: dict[int, list[tuple[str, int]]] = defaultdict(list)
        self.updates: dict[int, list[int]] = defaultdict(list)
        self.health: dict[int, list[dict[str, Any]]] = {}
        super().__init__(source)

    def record(self, kind: str, index: int, item: tuple[Any, ...]) -> None:
        if kind == "quote":
            self.quotes[index].append((item[2], item[3]))
        elif kind == "update":
            self.updates[index].append(item[2])
        elif kind == "health":
            self.health[index] = item[2]


@pytest.fixture
def emulator() -> Iterator[AlpacaEmulator]:
    with AlpacaEmulator() as emu:
        yield emu


def _leader(client: redis.Redis, keys: SharingKeys) -> str | None:
    value = client.get(keys.leader)
    return value.decode() if value else None


def test_four_processes_share_one_connection_and_survive_a_leader_kill(
    emulator: AlpacaEmulator, redis_prefix: str
) -> None:
    started = time.monotonic()
    ctx = multiprocessing.get_context("spawn")
    results_queue = ctx.Queue()
    commands = [ctx.Queue() for _ in SYMBOLS]
    config = {
        "key": KEY,
        "secret": SECRET,
        "data_url": emulator.ws_url,
        "trading_url": emulator.trading_stream_url,
        "api_url": emulator.api_url,
        "redis_url": REDIS_URL,
        "symbols": SYMBOLS,
        "sharing": {"prefix": redis_prefix, **SHARING},
    }
    procs = [
        ctx.Process(target=run_worker, args=(i, config, commands[i], results_queue), daemon=True)
        for i in range(len(SYMBOLS))
    ]
    results = Results(results_queue)
    client = redis.Redis.from_url(REDIS_URL)
    creds = Credentials(KEY, SECRET)
    stock_keys = SharingKeys(redis_prefix, account_tag(creds, emulator.data_url(IEX)))
    trading_keys = SharingKeys(redis_prefix, account_tag(creds, emulator.trading_stream_url))
    try:
        # Worker 0 first: alone, it wins both locks, so the kill below hits both groups.
        procs[0].start()
        results.require(lambda: 0 in results.ready, 45, "worker 0 ready")
        for proc in procs[1:]:
            proc.start()
        results.require(lambda: len(results.ready) == 4, 45, "all four workers ready")
        identities = {index: identity for index, (_pid, identity) in results.ready.items()}
        assert _leader(client, stock_keys) == identities[0]
        assert _leader(client, trading_keys) == identities[0]

        # One socket per endpoint, subscribed to the union of the demand and nothing more.
        union = {symbol for symbols in SYMBOLS for symbol in symbols}
        emulator.wait_until(
            lambda: emulator.subscriptions(KEY, IEX)["quotes"] == union,
            10,
            message="union of the workers' quotes subscribed upstream",
        )
        subs = emulator.subscriptions(KEY, IEX)
        assert {channel for channel, symbols in subs.items() if symbols} == {"quotes"}
        for path in (IEX, STREAM):
            counters = emulator.counters(KEY, path)
            assert (counters.connections_accepted, counters.max_concurrent) == (1, 1), path

        # Every worker's consumers receive their symbols, and only those.
        emulator.publish(IEX, [quote(symbol, bid_size=1) for symbol in sorted(union)])
        results.require(
            lambda: all({(s, 1) for s in SYMBOLS[i]} <= set(results.quotes[i]) for i in range(4)),
            10,
            "every worker received its quotes",
        )

        # Trade updates before the kill: each worker, exactly once.
        for seq in range(5):
            assert emulator.push_trade_update(KEY, _update(seq)) == 1
        results.require(
            lambda: all(len(results.updates[i]) >= 5 for i in range(4)), 10, "updates 0-4"
        )

        # SIGKILL the leader of both groups.
        killed_at = time.monotonic()
        os.kill(results.ready[0][0], signal.SIGKILL)
        procs[0].join(10)
        survivors = [1, 2, 3]
        emulator.wait_until(
            lambda: emulator.counters(KEY, STREAM).open == 0,
            10,
            message="the dead leader's trading socket is gone",
        )

        # Trade updates published during the handover (paced from a thread).
        pushed: list[tuple[int, int]] = []
        stop_pushing = threading.Event()

        def push() -> None:
            seq = 100
            while not stop_pushing.is_set():
                pushed.append((seq, emulator.push_trade_update(KEY, _update(seq))))
                seq += 1
                stop_pushing.wait(0.02)  # pacing of the producer, not synchronisation

        pusher = threading.Thread(target=push, daemon=True)
        pusher.start()
        try:
            deadline = 15.0
            results.require(
                lambda: _leader(client, stock_keys) not in (None, identities[0]),
                deadline,
                "a new stock leader",
            )
            elected = time.monotonic() - killed_at
            emulator.wait_until(
                lambda: (
                    emulator.counters(KEY, IEX).connections_accepted == 2
                    and emulator.counters(KEY, IEX).open == 1
                ),
                deadline,
                message="the new leader's data socket",
            )
            data_up = time.monotonic() - killed_at
            emulator.wait_until(
                lambda: sum(1 for _seq, sent in pushed if sent) >= 10,
                deadline,
                message="trade updates reach the new leader's socket",
            )
            trading_up = time.monotonic() - killed_at
        finally:
            stop_pushing.set()
            pusher.join(5)
        new_leader = _leader(client, stock_keys)
        assert new_leader in {identities[i] for i in survivors}
        assert _leader(client, trading_keys) in {identities[i] for i in survivors}
        for path in (IEX, STREAM):
            assert emulator.counters(KEY, path).max_concurrent == 1, path

        # A sentinel last: once a worker has it, it has everything sent before it.
        assert emulator.push_trade_update(KEY, _update(999_999)) == 1
        results.require(
            lambda: all(999_999 in results.updates[i] for i in survivors), 10, "sentinel"
        )
        delivered = [seq for seq, sent in pushed if sent]
        unsent = [seq for seq, sent in pushed if not sent]
        expected = list(range(5)) + delivered + [999_999]
        for i in survivors:
            counts = Counter(results.updates[i])
            assert all(count == 1 for count in counts.values()), f"worker {i} duplicates"
            assert sorted(counts) == sorted(expected), f"worker {i} missed updates"
            assert results.updates[i] == expected, f"worker {i} order"
        assert not set(unsent) & {u for i in survivors for u in results.updates[i]}

        # Data flows to the survivors through the new leader.
        emulator.publish(IEX, [quote(symbol, bid_size=2) for symbol in sorted(union)])
        results.require(
            lambda: all({(s, 2) for s in SYMBOLS[i]} <= set(results.quotes[i]) for i in survivors),
            10,
            "survivors receive quotes from the new leader",
        )
        for i in range(4):
            assert {s for s, _n in results.quotes[i]} <= set(SYMBOLS[i])

        # NVDA was only worker 0's: its demand expired, so it leaves the upstream.
        survivors_union = {s for i in survivors for s in SYMBOLS[i]}
        emulator.wait_until(
            lambda: emulator.subscriptions(KEY, IEX)["quotes"] == survivors_union,
            10,
            message="the dead worker's symbols dropped upstream",
        )

        # Health: one leader per group among the survivors, everyone agrees on it.
        # (A snapshot may catch a transient state: ask again until the deadline.)
        def health_agrees() -> bool:
            results.health.clear()
            for i in survivors:
                commands[i].put("health")
            results.require(lambda: all(i in results.health for i in survivors), 10, "health")
            for kind, keys in (("stock", stock_keys), ("trading", trading_keys)):
                rows = [next(c for c in results.health[i] if c["kind"] == kind) for i in survivors]
                if (
                    [row["role"] for row in rows].count("leader") != 1
                    or {row["leader"] for row in rows} != {_leader(client, keys)}
                    or {row["redis"] for row in rows} != {"up"}
                    or {row["state"] for row in rows} != {"connected"}
                ):
                    return False
            return True

        health_deadline = time.monotonic() + 10
        while not health_agrees():
            assert time.monotonic() < health_deadline, results.health
        print(
            f"\nscale-out: new leader elected {elected:.2f} s after SIGKILL, data socket up "
            f"{data_up:.2f} s, trade updates flowing {trading_up:.2f} s; "
            f"{len(delivered)} updates delivered during the handover, {len(unsent)} emitted "
            f"while no socket listened; data sockets opened in all: "
            f"{emulator.counters(KEY, IEX).connections_accepted}; "
            f"test took {time.monotonic() - started:.1f} s"
        )
    finally:
        stop_workers(procs, commands)
        results.close()
        client.close()


def _update(seq: int) -> dict[str, Any]:
    order = {"id": f"order-{seq}", "client_order_id": f"c-{seq}", "symbol": "AAPL"}
    return {"event": "new", "timestamp": "2024-01-02T15:30:00Z", "order": order, "seq": seq}
