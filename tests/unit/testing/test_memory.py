"""alpaca_di.testing.memory: the in-memory Upstream under a real StreamHub."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from alpaca.data.models import Quote

from alpaca_di import ConnectionState, StreamKind
from alpaca_di.credentials import Credentials
from alpaca_di.errors import ConnectionClosedError, SymbolLimitError
from alpaca_di.hub import StreamHub
from alpaca_di.testing import Recorder, messages
from alpaca_di.testing.fake_streams import FakeStreamHub
from alpaca_di.testing.memory import MemoryUpstream, WireFrame
from alpaca_di.transport.options import ConnectionOptions

DEADLINE = 5.0


@pytest.fixture
def hub() -> Iterator[FakeStreamHub]:
    hub = FakeStreamHub("stock")
    yield hub
    hub.close()


def on_wire(hub: FakeStreamHub) -> tuple[dict[str, frozenset[str]], list[WireFrame]]:
    """What the upstream holds and sent, once the loop flushed what it was handed."""
    future: concurrent.futures.Future[tuple[dict[str, frozenset[str]], list[WireFrame]]]
    future = concurrent.futures.Future()

    def read() -> None:
        future.set_result((hub.upstream.wire(), list(hub.upstream.sent)))

    # After the changes handed to the loop so far, and after the flush they schedule.
    hub.loop.call_soon_threadsafe(hub.loop.call_soon, read)
    return future.result(DEADLINE)


# -- the wire -----------------------------------------------------------------------------------


def test_a_subscription_puts_its_symbols_on_the_wire_once(hub):
    first = hub.subscribe(quotes=["AAPL", "MSFT"], trades=["AAPL"])
    first.wait_confirmed(DEADLINE)  # acknowledged by the upstream, as a server would
    second = hub.subscribe(quotes=["AAPL"])  # held already: nothing sent
    second.wait_confirmed(DEADLINE)

    wire, sent = on_wire(hub)
    assert wire == {"quotes": {"AAPL", "MSFT"}, "trades": {"AAPL"}}
    assert sent == [WireFrame("subscribe", {"quotes": ("AAPL", "MSFT"), "trades": ("AAPL",)})]


def test_the_unsubscribe_goes_out_when_the_last_subscriber_leaves(hub):
    first = hub.subscribe(quotes=["AAPL"])
    first.wait_confirmed(DEADLINE)
    second = hub.subscribe(quotes=["AAPL", "TSLA"])
    second.wait_confirmed(DEADLINE)

    first.close()
    wire, sent = on_wire(hub)
    assert wire == {"quotes": {"AAPL", "TSLA"}}
    assert [frame.action for frame in sent] == ["subscribe", "subscribe"]

    second.remove(quotes=["TSLA"])
    wire, sent = on_wire(hub)
    assert wire == {"quotes": {"AAPL"}}
    assert sent[-1] == WireFrame("unsubscribe", {"quotes": ("TSLA",)})

    second.close()
    wire, sent = on_wire(hub)
    assert wire == {}
    assert sent[-1] == WireFrame("unsubscribe", {"quotes": ("AAPL",)})
    assert len(sent) == 4


def test_changes_in_one_loop_tick_are_coalesced(hub):
    def churn() -> None:  # on the loop, in one callback: add then remove
        sub = hub.subscribe(quotes=["NVDA"])
        sub.close()

    hub.loop.call_soon_threadsafe(churn)
    assert on_wire(hub) == ({}, [])


def test_a_reconnect_resends_the_whole_set_once(hub):
    sub = hub.subscribe(quotes=["AAPL"], trades=["MSFT"])  # kept: an unreachable one is reclaimed
    sub.wait_confirmed(DEADLINE)
    hub.set_state("reconnecting")
    assert on_wire(hub)[0] == {}  # the server session is gone

    hub.set_state("connected")
    wire, sent = on_wire(hub)
    assert wire == {"quotes": {"AAPL"}, "trades": {"MSFT"}}
    assert sent[-1] == WireFrame("subscribe", {"quotes": ("AAPL",), "trades": ("MSFT",)})
    assert hub.upstream.reconnects == 1
    assert hub.health().reconnects == 1


def test_a_rejected_subscribe_is_rolled_back_and_named(hub):
    kept = hub.subscribe(quotes=["AAPL"])
    kept.wait_confirmed(DEADLINE)
    error = SymbolLimitError(405, "symbol limit exceeded", symbols=[("quotes", "TSLA")])
    hub.upstream.refuse([("quotes", "TSLA")], error)
    added = hub.subscribe(quotes=["TSLA"])

    with pytest.raises(SymbolLimitError):
        added.wait_confirmed(DEADLINE)
    assert on_wire(hub)[0] == {"quotes": {"AAPL"}}


# -- states --------------------------------------------------------------------------------------


async def test_an_idle_upstream_connects_at_the_first_subscription() -> None:
    """A plain StreamHub on the running loop, built with MemoryUpstream as its factory."""
    built: list[MemoryUpstream] = []

    def factory(url: str, **kwargs: Any) -> MemoryUpstream:
        built.append(MemoryUpstream(url, **kwargs))
        return built[-1]

    hub = StreamHub(
        kind=StreamKind.CRYPTO,
        endpoint="memory://crypto",
        credentials=Credentials("PKMEMORY00000000", "memory-secret-placeholder"),
        options=ConnectionOptions(),
        loop=asyncio.get_running_loop(),
        connection_factory=factory,
    )
    seen: list[ConnectionState] = []
    hub.add_state_listener(lambda state, previous: seen.append(state))
    assert hub.state is ConnectionState.IDLE

    async with hub.subscribe(quotes=["BTC/USD"]) as sub:
        await hub.ready(DEADLINE)
        await sub.confirmed(DEADLINE)
        assert seen == [
            ConnectionState.CONNECTING,
            ConnectionState.AUTHENTICATING,
            ConnectionState.CONNECTED,
        ]
        built[0].feed([("quotes", "BTC/USD", messages.quote("BTC/USD", bid=60_000.0))])
        async for quote in sub:
            assert isinstance(quote, Quote)
            assert quote.bid_price == 60_000.0
            break
    await hub.aclose()
    assert hub.state is ConnectionState.CLOSED
    assert built[0].messages_received == 1
    with pytest.raises(ConnectionClosedError):
        built[0].feed([("quotes", "BTC/USD", messages.quote("BTC/USD"))])


def test_a_failure_fails_the_subscriptions_with_the_named_error(hub):
    sub = hub.subscribe(quotes=["AAPL"])
    error = ConnectionClosedError("gone for good")
    hub.fail(error)
    with pytest.raises(ConnectionClosedError, match="gone for good"):
        sub.get(timeout=0)
    assert hub.health().state == "failed"


# -- delivery ------------------------------------------------------------------------------------


def test_sync_handlers_have_run_when_push_returns(hub):
    calls: list[str] = []
    started, release = threading.Event(), threading.Event()

    def slow(quote: Quote) -> None:
        started.set()
        release.wait(DEADLINE)  # holds its worker until the test lets it go
        calls.append(quote.symbol)

    hub.subscribe(slow, quotes=["AAPL"])
    pusher = threading.Thread(target=hub.push_quote, args=("AAPL",))
    pusher.start()
    assert started.wait(DEADLINE)
    assert pusher.is_alive()  # push is waiting for the handler
    release.set()
    pusher.join(DEADLINE)
    assert not pusher.is_alive()
    assert calls == ["AAPL"]


def test_async_handlers_on_the_hub_loop_have_run_when_push_returns(hub):
    seen: list[float] = []

    async def handler(quote: Quote) -> None:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        seen.append(quote.bid_price)

    hub.subscribe(handler, quotes=["AAPL"])
    for bid in (1.0, 2.0, 3.0):
        hub.push_quote("AAPL", bid=bid)
        assert seen[-1] == bid


def test_a_handler_may_push_again_without_deadlocking(hub):
    recorder = Recorder()

    def chain(quote: Quote) -> None:
        if quote.symbol == "AAPL":
            hub.push_quote("MSFT", bid=quote.bid_price)  # its own handler runs later

    hub.subscribe(chain, quotes=["AAPL", "MSFT"])
    hub.subscribe(recorder, quotes=["MSFT"])
    hub.push_quote("AAPL", bid=5.0)
    assert [q.bid_price for q in recorder.items] == [5.0]


def test_an_unparsable_message_reaches_raw_subscribers_only(hub):
    raw, models = Recorder(), Recorder()
    hub.subscribe(raw, quotes=["AAPL"], raw=True)
    hub.subscribe(models, quotes=["AAPL"])
    broken = {"T": "q", "S": "AAPL", "bp": "not-a-price"}

    assert hub.push("quotes", broken) == 1

    assert raw.items == [broken]
    assert models.items == []
    assert hub.upstream.malformed == 1
    assert hub.health().malformed == 1


def test_an_attached_inbox_is_fed_inside_the_push():
    """TradingService attaches an inbox drained inline on the hub's loop: done when push returns."""
    from alpaca_di import TradingService

    hub = FakeStreamHub("trading")
    trading = TradingService(trading_stream=hub)
    try:
        trading.listen(DEADLINE)
        raw = messages.trade_update("fill", symbol="AAPL")
        assert hub.push("trade_updates", raw) == 1
        last = trading.last_update(raw["order"]["id"])
        assert last is not None
        assert last.event == "fill"
    finally:
        trading.close()
        hub.close()
