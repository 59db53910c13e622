"""SystemExit, KeyboardInterrupt and GeneratorExit from a handler end only that subscription.

Decided behaviour (documented on ``Subscription``): the exception is counted as a
handler error, logged once and kept as the subscription's error; it is not re-raised,
so no worker thread or event loop that other consumers share dies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from _integration_support import wait_until

from alpaca_di import ConnectionRegistry, StreamHub
from alpaca_di.credentials import Credentials
from alpaca_di.protocol import StreamKind
from alpaca_di.testing import AlpacaEmulator, Recorder
from alpaca_di.testing.messages import quote
from alpaca_di.transport import ConnectionOptions

KEY = "PKHANDLEREXIT001"
SECRET = "handler-exit-secret-do-not-leak"
IEX = "/v2/iex"
DEADLINE = 10.0
EXITS = [SystemExit, KeyboardInterrupt, GeneratorExit]
OPTIONS = ConnectionOptions(backoff_initial=0.01, backoff_max=0.05, open_timeout=5.0)


@pytest.fixture
def emu() -> Iterator[AlpacaEmulator]:
    with AlpacaEmulator() as emulator:
        yield emulator


@pytest.fixture
def registry() -> Iterator[ConnectionRegistry]:
    registry = ConnectionRegistry()
    yield registry
    registry.close_all()


def _hub(registry: ConnectionRegistry, emu: AlpacaEmulator) -> StreamHub:
    return registry.acquire(
        Credentials(KEY, SECRET), StreamKind.STOCK, emu.data_url(IEX), OPTIONS
    ).hub


def _raiser(exc: type[BaseException]) -> Any:
    def handler(message: Any) -> None:
        raise exc()

    return handler


@pytest.mark.parametrize("exc", EXITS, ids=lambda e: e.__name__)
def test_sync_handlers_raising_exits_close_only_themselves(
    registry: ConnectionRegistry, emu: AlpacaEmulator, exc: type[BaseException]
) -> None:
    hub = _hub(registry, emu)
    good = Recorder()
    good_sub = hub.subscribe(good, quotes=["AAPL"])
    # More bad handlers than the handler pool ever had idle workers when they died.
    bad = [hub.subscribe(_raiser(exc), quotes=["AAPL"]) for _ in range(8)]
    for sub in [good_sub, *bad]:
        sub.wait_confirmed(DEADLINE)
    emu.publish(IEX, [quote("AAPL", bid=float(n)) for n in range(1, 6)], key_id=KEY)
    assert len(good.wait_for(5, DEADLINE)) == 5
    wait_until(lambda: all(sub.closed for sub in bad) and hub.health().consumers == 1, DEADLINE)
    health = hub.health()
    assert health.handler_errors == len(bad)
    assert health.consumers == 1
    assert health.state == "connected"
    later = Recorder()
    with hub.subscribe(later, quotes=["MSFT"]) as sub:
        sub.wait_confirmed(DEADLINE)
        emu.publish(IEX, [quote("MSFT", bid=1.0)], key_id=KEY)
        assert len(later.wait_for(1, DEADLINE)) == 1
    good_sub.close()


@pytest.mark.parametrize("exc", EXITS, ids=lambda e: e.__name__)
async def test_async_handlers_raising_exits_close_only_themselves(
    registry: ConnectionRegistry, emu: AlpacaEmulator, exc: type[BaseException]
) -> None:
    hub = _hub(registry, emu)
    got: list[Any] = []
    arrived = asyncio.Event()

    async def good(message: Any) -> None:
        got.append(message)
        if len(got) >= 5:
            arrived.set()

    async def bad_handler(message: Any) -> None:
        raise exc()

    good_sub = hub.subscribe(good, quotes=["AAPL"])
    bad = [hub.subscribe(bad_handler, quotes=["AAPL"]) for _ in range(3)]
    for sub in [good_sub, *bad]:
        await sub.confirmed(DEADLINE)
    emu.publish(IEX, [quote("AAPL", bid=float(n)) for n in range(1, 6)], key_id=KEY)
    await asyncio.wait_for(arrived.wait(), DEADLINE)
    for _ in range(int(DEADLINE / 0.01)):
        if all(sub.closed for sub in bad) and hub.health().consumers == 1:
            break
        await asyncio.sleep(0.01)  # re-check with a deadline
    health = hub.health()
    assert all(sub.closed for sub in bad)
    assert health.handler_errors == len(bad)
    assert health.state == "connected"
    # the loop that ran them is alive: a new async subscription still gets messages
    later = asyncio.Event()

    async def on_msft(message: Any) -> None:
        later.set()

    sub = hub.subscribe(on_msft, quotes=["MSFT"])
    await sub.confirmed(DEADLINE)
    emu.publish(IEX, [quote("MSFT", bid=1.0)], key_id=KEY)
    await asyncio.wait_for(later.wait(), DEADLINE)
    sub.close()
    good_sub.close()
