"""Iterator subscriptions nobody can reach are reclaimed; handler subscriptions live on.

``for quote in hub.subscribe(...): break`` and async generators dropped half-way
leave a subscription nobody will ever read: its symbols must leave the wire and
its queue must be freed. A subscription with a handler whose result was discarded
(``hub.subscribe(handler, ...)``) is a normal idiom and keeps receiving until closed.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from typing import Any

from _integration_support import wait_until

from alpaca_di import Lease
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.testing.messages import quote

KEY = "PKINTEGRATION01"  # the conftest's stock_lease key
IEX = "/v2/iex"
DEADLINE = 20.0
ABANDONED = 1_000
SYMBOLS = [f"AB{n:02d}" for n in range(100)]


def _on_wire(emulator: AlpacaEmulator) -> frozenset[str]:
    return emulator.subscriptions(KEY, IEX)["quotes"]


def test_abandoned_sync_iterators_leave_the_wire_and_free_their_queues(
    stock_lease: Lease, emulator: AlpacaEmulator
) -> None:
    hub = stock_lease.hub
    keeper = hub.subscribe(quotes=["KEEP"])
    subs = [hub.subscribe(quotes=[SYMBOLS[n % len(SYMBOLS)]]) for n in range(ABANDONED)]
    subs[-1].wait_confirmed(DEADLINE)  # every earlier change went out before this one
    assert _on_wire(emulator) == {"KEEP", *SYMBOLS}
    emulator.publish(IEX, [quote(symbol) for symbol in SYMBOLS], key_id=KEY)
    for sub in subs[::2]:
        for _quote in sub:  # the idiom that abandons: a break, no close()
            break
    refs = [weakref.ref(sub) for sub in subs]
    del subs, sub
    gc.collect()
    assert not _any_alive(refs)
    wait_until(lambda: hub.health().consumers == 1, DEADLINE, "only the keeper left")
    wait_until(lambda: _on_wire(emulator) == {"KEEP"}, DEADLINE, "abandoned symbols unsubscribed")
    emulator.publish(IEX, [quote("KEEP", bid=1.0)], key_id=KEY)
    assert keeper.get(timeout=DEADLINE).bid_price == 1.0
    keeper.close()


def _any_alive(refs: list[weakref.ref[Any]]) -> bool:
    return any(ref() is not None for ref in refs)


def test_abandoned_async_iterators_leave_the_wire_while_the_loop_runs(
    stock_lease: Lease, emulator: AlpacaEmulator
) -> None:
    hub = stock_lease.hub

    async def main() -> None:
        keeper = hub.subscribe(quotes=["KEEP"])
        subs = [hub.subscribe(quotes=[SYMBOLS[n % len(SYMBOLS)]]) for n in range(ABANDONED)]
        await subs[-1].confirmed(DEADLINE)
        assert _on_wire(emulator) == {"KEEP", *SYMBOLS}
        emulator.publish(IEX, [quote(symbol) for symbol in SYMBOLS], key_id=KEY)
        for sub in subs[::2]:
            async for _quote in sub:  # dropped half-way, never closed
                break
        refs = [weakref.ref(sub) for sub in subs]
        del subs, sub
        # The loop finalizes dropped async generators with a task of its own.
        deadline = asyncio.get_running_loop().time() + DEADLINE
        while _any_alive(refs):
            assert asyncio.get_running_loop().time() < deadline, "never reclaimed"
            gc.collect()
            await asyncio.sleep(0.01)
        while _on_wire(emulator) != {"KEEP"}:
            assert asyncio.get_running_loop().time() < deadline, "still on the wire"
            await asyncio.sleep(0.01)
        assert hub.health().consumers == 1
        keeper.close()

    asyncio.run(main())


def test_discarded_handler_subscriptions_keep_receiving(
    stock_lease: Lease, emulator: AlpacaEmulator
) -> None:
    hub = stock_lease.hub
    lock = threading.Lock()
    calls = [0, 0]
    done = threading.Event()

    def handler(message: Any) -> None:
        with lock:
            calls[0] += 1
            if calls[0] == ABANDONED:
                done.set()

    async def async_handler(message: Any) -> None:
        with lock:
            calls[1] += 1

    for _ in range(ABANDONED):
        hub.subscribe(handler, quotes=["HOLD"])  # result discarded: a normal idiom
    last = hub.subscribe(async_handler, quotes=["HOLD"])
    last.wait_confirmed(DEADLINE)
    del last
    gc.collect()
    emulator.publish(IEX, [quote("HOLD", bid=2.0)], key_id=KEY)
    assert done.wait(DEADLINE), f"{calls[0]} of {ABANDONED} handlers ran"
    wait_until(lambda: calls[1] == 1, DEADLINE, "the async handler ran")
    assert hub.health().consumers == ABANDONED + 1
    assert "HOLD" in _on_wire(emulator)
