"""Slow, blocked and raising consumers under load never break the others.

One hub streams sequence-numbered trades and quotes at a high rate to:

* fast consumers (sync handler, async handler, raw, a thread iterating ``get()``)
  that must receive every message, in order, without a gap (their queues are
  unbounded, so on any machine a gap can only be a lost message);
* a consumer blocked forever (``drop_oldest``, small queue), a slow one
  (``drop_newest``), a blocked ``conflate`` one, a blocked ``overflow="error"`` one
  and one whose handler raises on every message.

Their drops and errors are counted (per subscription and in health), their
queues stay bounded, the ``error`` one is closed with its error, no handler runs
concurrently with itself, and the socket never drops.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from _reliability_support import FIGURES, IEX, KEY, NOTES, scaled
from alpaca.data.models import Quote, Trade

from alpaca_di.credentials import Credentials
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.errors import ConnectionClosedError, SubscriptionOverflowError
from alpaca_di.hub import ConnectionRegistry, Subscription
from alpaca_di.protocol import StreamKind
from alpaca_di.transport import ConnectionOptions

WAIT = 20.0
LOAD = scaled(3.0)
SYMBOLS = [f"LD{n}" for n in range(8)]


class InOrder:
    """Checks contiguous numbers per (channel, symbol) and that calls never overlap."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cond = threading.Condition()
        self.last: dict[tuple[str, str], int] = {}
        self.problems: list[str] = []
        self.active = 0
        self.count = 0

    def key(self, message: Any) -> tuple[tuple[str, str], int]:
        if isinstance(message, dict):
            channel = "trades" if message["T"] == "t" else "quotes"
            return (channel, message["S"]), int(message["seq"])
        if isinstance(message, Trade):
            return ("trades", message.symbol), int(message.id)
        assert isinstance(message, Quote)
        return ("quotes", message.symbol), int(message.bid_size)

    def __call__(self, message: Any) -> None:
        with self.cond:
            self.active += 1
            if self.active > 1:
                self.problems.append(f"{self.name}: the handler ran concurrently with itself")
        pair, seq = self.key(message)
        with self.cond:
            last = self.last.get(pair)
            if last is not None and seq != last + 1:
                self.problems.append(f"{self.name}: {pair} #{last} -> #{seq}")
            self.last[pair] = seq
            self.count += 1
            self.active -= 1
            self.cond.notify_all()

    async def acall(self, message: Any) -> None:
        self(message)

    def caught_up(self, due: dict[tuple[str, str], int]) -> bool:
        return all(self.last.get(pair, 0) >= seq for pair, seq in due.items())

    def wait_caught_up(self, due: dict[tuple[str, str], int]) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.caught_up(due), WAIT), (
                f"{self.name} is behind: {[(p, self.last.get(p), s) for p, s in due.items()]}"
            )


def test_slow_blocked_and_raising_consumers_do_not_disturb_the_others(
    registry: ConnectionRegistry, creds: Credentials
) -> None:
    options = ConnectionOptions(backoff_initial=0.01, backoff_max=0.05, open_timeout=5.0)
    with AlpacaEmulator(rate=20_000, sequence=True, seed=4, batch_size=200) as emulator:
        lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX), options)
        hub = lease.hub
        everything = {"trades": SYMBOLS, "quotes": SYMBOLS}
        fast = [InOrder("sync"), InOrder("async"), InOrder("raw"), InOrder("iterator")]
        blocked = threading.Event()
        raising_calls: list[int] = []

        def stuck(message: Any) -> None:
            blocked.wait(60)

        def slow(message: Any) -> None:
            blocked.wait(0.0005)  # a slow handler: load, not synchronisation

        def explode(message: Any) -> None:
            raising_calls.append(1)
            raise RuntimeError("consumer bug")

        # The fast consumers' queues are unbounded: whatever the machine's speed, a
        # gap can only be a lost message, never an overflow they were allowed.
        subs: dict[str, Subscription] = {
            "sync": hub.subscribe(fast[0], maxsize=None, **everything),
            "raw": hub.subscribe(fast[2], raw=True, maxsize=None, **everything),
            "iterator": hub.subscribe(maxsize=None, **everything),
            "blocked": hub.subscribe(stuck, maxsize=100, overflow="drop_oldest", **everything),
            "slow": hub.subscribe(slow, maxsize=200, overflow="drop_newest", **everything),
            "conflate": hub.subscribe(stuck, overflow="conflate", **everything),
            "error": hub.subscribe(stuck, maxsize=50, overflow="error", **everything),
            "raising": hub.subscribe(explode, **everything),
        }
        loop_ready = threading.Event()
        stop = threading.Event()
        app_done: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

        def app() -> None:
            async def main() -> None:
                done = asyncio.Event()
                app_done.append((asyncio.get_running_loop(), done))
                subs["async"] = hub.subscribe(fast[1].acall, maxsize=None, **everything)
                loop_ready.set()
                await done.wait()  # the app's loop runs the async handler meanwhile

            asyncio.run(main())

        def iterate() -> None:
            for message in subs["iterator"]:
                fast[3](message)

        threads = [
            threading.Thread(target=app, name="app"),
            threading.Thread(target=iterate, name="iterator"),
        ]
        for thread in threads:
            thread.start()
        assert loop_ready.wait(WAIT)
        for sub in subs.values():
            if sub is not subs["error"]:
                sub.wait_confirmed(WAIT)
        sent_before = emulator.counters(KEY, IEX).messages_sent
        stop.wait(LOAD)  # load generation: let the stream run
        due = emulator.sequences(KEY, IEX)
        for consumer in fast:
            consumer.wait_caught_up(due)
        sent = emulator.counters(KEY, IEX).messages_sent - sent_before

        problems = [problem for consumer in fast for problem in consumer.problems]
        stats = {name: subs[name].stats for name in ("sync", "async", "raw", "iterator")}
        assert not problems, f"{stats}\n" + "\n".join(problems[:20])
        for name in ("sync", "async", "raw", "iterator"):
            assert subs[name].stats.dropped == 0, name
        assert subs["blocked"].stats.dropped > 0
        assert subs["blocked"].stats.queued <= 100
        assert subs["slow"].stats.queued <= 200
        assert subs["conflate"].stats.queued <= 2 * len(SYMBOLS)  # one per (channel, symbol)
        assert subs["error"].closed
        with pytest.raises(SubscriptionOverflowError):
            subs["error"].wait_confirmed(1)
        raising = subs["raising"].stats
        assert raising.errors == len(raising_calls) > 0
        health = hub.health()
        assert health.handler_errors >= raising.errors
        assert health.messages_dropped >= subs["blocked"].stats.dropped
        assert health.reconnects == 0
        assert emulator.counters(KEY, IEX).connections_accepted == 1

        stop.set()
        blocked.set()
        for loop, done in app_done:
            loop.call_soon_threadsafe(done.set)
        for sub in subs.values():
            sub.close()
        for thread in threads:
            thread.join(WAIT)
        with pytest.raises(ConnectionClosedError):
            subs["iterator"].get(timeout=0)
        lease.release()
    FIGURES["consumers: in-order messages checked under load"] += sum(c.count for c in fast)
    FIGURES["consumers: handler errors isolated"] += raising.errors
    NOTES["consumers: emulator msg/s with blocked consumers"] = round(sent / LOAD)
