"""A container used from a second event loop, with a connection limit of 1.

pytest-asyncio gives each test its own loop, and ``asyncio.run()`` per request
does the same: a container initialised on one loop is then used from another
while the first idles, or after it closed. The sockets live on the runtime
thread, so the second loop gets a working hub over the same socket, and a sync
shutdown afterwards closes it with a close frame, promptly.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from alpaca_di import AlpacaContainer
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.testing.messages import quote

KEY = "PKSECONDLOOP0001"
SECRET = "second-loop-secret-do-not-leak"
IEX = "/v2/iex"
DEADLINE = 10.0


@pytest.fixture
def emu() -> Iterator[AlpacaEmulator]:
    with AlpacaEmulator(connection_limit=1) as emulator:
        yield emulator


@pytest.fixture
def container(emu: AlpacaEmulator) -> AlpacaContainer:
    container = AlpacaContainer()
    container.config.from_dict(
        {
            "api_key": KEY,
            "secret_key": SECRET,
            "data_stream_url": emu.ws_url,
            "trading_stream_url": emu.trading_stream_url,
            "api_url": emu.api_url,
            "backoff_initial": 0.01,
            "backoff_max": 0.05,
            "open_timeout": 5.0,
        }
    )
    return container


async def _receive_one(container: AlpacaContainer, emu: AlpacaEmulator, bid: float) -> Any:
    hub = container.stock_stream()
    got: asyncio.Queue[Any] = asyncio.Queue()

    async def on_quote(message: Any) -> None:
        got.put_nowait(message)

    sub = hub.subscribe(on_quote, quotes=["AAPL"])
    await sub.confirmed(DEADLINE)
    emu.publish(IEX, [quote("AAPL", bid=bid)], key_id=KEY)
    message = await asyncio.wait_for(got.get(), DEADLINE)
    sub.close()
    return message


async def _init(container: AlpacaContainer) -> None:
    pending = container.init_resources()
    if pending is not None:
        await pending


def _one_session(emu: AlpacaEmulator) -> bool:
    counters = emu.counters(KEY, IEX)
    return counters.open == 1 and counters.rejections.get(406, 0) == 0


def test_a_second_loop_receives_while_the_first_idles_and_after_it_closed(
    container: AlpacaContainer, emu: AlpacaEmulator
) -> None:
    first = asyncio.new_event_loop()
    first.run_until_complete(_init(container))
    assert first.run_until_complete(_receive_one(container, emu, 1.0)).bid_price == 1.0
    assert _one_session(emu)
    assert container.stock_stream().health().state == "connected"

    # The first loop idles (not running): a second loop uses the same socket.
    second = asyncio.new_event_loop()
    assert second.run_until_complete(_receive_one(container, emu, 2.0)).bid_price == 2.0
    assert _one_session(emu)
    assert container.stock_stream().health().healthy

    # The first loop is closed: a third loop still receives, health still true.
    first.close()
    assert asyncio.run(_receive_one(container, emu, 3.0)).bid_price == 3.0
    assert _one_session(emu)
    assert container.stock_stream().health().state == "connected"
    second.close()

    done = threading.Event()

    def shutdown() -> None:
        container.shutdown_resources()
        done.set()

    threading.Thread(target=shutdown, daemon=True).start()
    assert done.wait(DEADLINE), "sync shutdown hung"
    emu.wait_until(lambda: emu.counters(KEY, IEX).open == 0, DEADLINE)
    counters = emu.counters(KEY, IEX)
    assert counters.close_frames_received == counters.connections_accepted == 1
    assert counters.rejections.get(406, 0) == 0
