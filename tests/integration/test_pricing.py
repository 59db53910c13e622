"""PricingService against the emulator: shared tracking, first-price waits, bad input."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from alpaca_di.credentials import Credentials
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.errors import AuthenticationError, ConnectionClosedError
from alpaca_di.hub import ConnectionRegistry, StreamHub
from alpaca_di.protocol import StreamKind
from alpaca_di.services.interfaces import PriceSource, PriceTracker
from alpaca_di.services.pricing import PriceSnapshot, PricingService
from alpaca_di.testing.messages import quote, trade
from alpaca_di.transport import ConnectionOptions

KEY = "PKINTEGRATION01"
IEX = "/v2/iex"
CRYPTO = "/v1beta3/crypto/us"

Acquire = Callable[[StreamKind, str], StreamHub]


@pytest.fixture
def acquire(
    registry: ConnectionRegistry,
    emulator: AlpacaEmulator,
    creds: Credentials,
    fast_options: ConnectionOptions,
) -> Iterator[Acquire]:
    leases = []

    def acquire(kind: StreamKind, path: str) -> StreamHub:
        lease = registry.acquire(creds, kind, emulator.data_url(path), fast_options)
        leases.append(lease)
        return lease.hub

    yield acquire
    for lease in leases:
        lease.release()


@pytest.fixture
def pricing(acquire: Acquire) -> Iterator[PricingService]:
    service = PricingService(
        stock_stream=acquire(StreamKind.STOCK, IEX),
        crypto_stream=acquire(StreamKind.CRYPTO, CRYPTO),
    )
    yield service
    service.close()


def wire(emulator: AlpacaEmulator, path: str = IEX) -> tuple[frozenset[str], frozenset[str]]:
    subs = emulator.subscriptions(KEY, path)
    return subs["quotes"], subs["trades"]


def wait_wire(emulator: AlpacaEmulator, symbols: set[str], path: str = IEX) -> None:
    expected = (frozenset(symbols), frozenset(symbols))
    emulator.wait_until(
        lambda: wire(emulator, path) == expected,
        5,
        message=f"emulator subscriptions to become {sorted(symbols)} (now {wire(emulator, path)})",
    )


def test_three_components_share_one_connection_and_untracking_keeps_the_others(
    pricing: PricingService, emulator: AlpacaEmulator
) -> None:
    pricing.track("AAPL", "MSFT", owner="momentum")
    pricing.track("MSFT", "TSLA", owner="risk")
    pricing.track("AAPL", "TSLA", "NVDA", owner="report")
    wait_wire(emulator, {"AAPL", "MSFT", "TSLA", "NVDA"})

    counters = emulator.counters(KEY, IEX)
    assert counters.connections_accepted == 1
    assert counters.max_concurrent == 1
    assert pricing._stock.health().consumers == 1  # one subscription per hub

    pricing.untrack("AAPL", "MSFT", owner="momentum")
    assert pricing.tracked() == {"AAPL", "MSFT", "TSLA", "NVDA"}
    assert pricing.owners("AAPL") == {"report": 1}

    pricing.untrack_all(owner="report")
    wait_wire(emulator, {"MSFT", "TSLA"})
    assert pricing.tracked() == {"MSFT", "TSLA"}

    pricing.untrack_all(owner="risk")
    wait_wire(emulator, set())
    assert emulator.counters(KEY, IEX).connections_accepted == 1


def test_anonymous_owner_is_reference_counted(
    pricing: PricingService, emulator: AlpacaEmulator
) -> None:
    pricing.track("AAPL")
    pricing.track("AAPL")
    pricing.untrack("AAPL")
    assert pricing.tracked() == {"AAPL"}
    wait_wire(emulator, {"AAPL"})
    pricing.untrack("AAPL")
    wait_wire(emulator, set())
    with pytest.raises(ValueError, match="'AAPL' is not tracked by owner None"):
        pricing.untrack("AAPL")


def test_wait_for_price_returns_when_the_first_quote_arrives(
    pricing: PricingService, emulator: AlpacaEmulator
) -> None:
    pricing.track("AAPL", owner="strategy")
    result: dict[str, float] = {}
    started = threading.Event()

    def waiter() -> None:
        started.set()
        result["price"] = pricing.wait_for_price("AAPL", timeout=10)

    thread = threading.Thread(target=waiter)
    thread.start()
    started.wait(5)
    wait_wire(emulator, {"AAPL"})
    emulator.publish(IEX, [quote("AAPL", bid=100.0, ask=100.02)])
    thread.join(10)
    assert not thread.is_alive()
    assert result["price"] == pytest.approx(100.01)
    # known now: returns at once, and equals price()
    assert pricing.wait_for_price("AAPL", timeout=1) == pytest.approx(100.01)
    assert pricing.price("AAPL") == pytest.approx(100.01)
    assert pricing.latest_quote("AAPL").bid_price == 100.0


def test_wait_for_price_tracks_an_untracked_symbol_only_for_the_call(
    pricing: PricingService, emulator: AlpacaEmulator
) -> None:
    result: dict[str, float] = {}

    def waiter() -> None:
        result["price"] = pricing.wait_for_price("MSFT", timeout=10)

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_wire(emulator, {"MSFT"})
    emulator.publish(IEX, [trade("MSFT", price=410.5)])
    thread.join(10)
    assert result["price"] == 410.5
    assert pricing.tracked() == frozenset()
    wait_wire(emulator, set())
    assert pricing.price("MSFT") is None


def test_price_prefers_the_quote_mid_over_the_last_trade_and_honours_max_age(
    pricing: PricingService, emulator: AlpacaEmulator
) -> None:
    pricing.track("TSLA")
    wait_wire(emulator, {"TSLA"})
    emulator.publish(IEX, [trade("TSLA", price=250.0)])
    assert pricing.wait_for_price("TSLA", timeout=5) == 250.0
    assert pricing.latest_trade("TSLA").price == 250.0
    received: list[tuple[str, float]] = []
    got_quote = threading.Event()

    def listener(symbol: str, price: float) -> None:
        received.append((symbol, price))
        got_quote.set()

    remove = pricing.add_listener(listener)
    emulator.publish(IEX, [quote("TSLA", bid=249.0, ask=251.0)])
    assert got_quote.wait(5)
    remove()
    assert received == [("TSLA", 250.0)]
    assert pricing.price("TSLA") == 250.0  # the mid this time
    # data received "longer ago" than a nanosecond is not fresh enough
    assert pricing.price("TSLA", max_age=1e-9) is None
    assert pricing.price("TSLA", max_age=3600) == 250.0

    snapshot = pricing.snapshot()
    assert set(snapshot) == {"TSLA"}
    snap = snapshot["TSLA"]
    assert isinstance(snap, PriceSnapshot)
    assert (snap.bid, snap.ask, snap.last, snap.price) == (249.0, 251.0, 250.0, 250.0)
    assert snap.age is not None
    assert snap.age >= 0
    assert snap.received_at is not None


def test_one_sided_quote_falls_back_to_the_trade(
    pricing: PricingService, emulator: AlpacaEmulator
) -> None:
    pricing.track("NVDA")
    wait_wire(emulator, {"NVDA"})
    emulator.publish(IEX, [quote("NVDA", bid=0.0, ask=120.0), trade("NVDA", price=119.5)])
    assert pricing.wait_for_price("NVDA", timeout=5) == 119.5


def test_crypto_pairs_go_to_the_crypto_stream(
    pricing: PricingService, emulator: AlpacaEmulator
) -> None:
    with pricing.tracking("BTC/USD", "AAPL", owner="arb"):
        wait_wire(emulator, {"BTC/USD"}, CRYPTO)
        wait_wire(emulator, {"AAPL"}, IEX)
        emulator.publish(CRYPTO, [{**quote("BTC/USD", bid=60_000, ask=60_010), "bx": None}])
        assert pricing.wait_for_price("BTC/USD", timeout=5) == 60_005
    wait_wire(emulator, set(), CRYPTO)
    assert pricing.tracked() == frozenset()


async def test_async_tracking_and_wait_for_price_async(
    pricing: PricingService, emulator: AlpacaEmulator
) -> None:
    async with pricing.tracking("SPY", owner="async-component"):
        await emulator.until(lambda: wire(emulator) == ({"SPY"}, {"SPY"}), 5)
        emulator.publish(IEX, [quote("SPY", bid=500.0, ask=500.1)])
        assert await pricing.wait_for_price_async("SPY", timeout=5) == pytest.approx(500.05)
    assert pricing.tracked() == frozenset()
    with pytest.raises(TimeoutError, match=r"no price for 'QQQ' within 0\.2 s"):
        await pricing.wait_for_price_async("QQQ", timeout=0.2)


def test_bad_input_gives_clear_errors(pricing: PricingService) -> None:
    with pytest.raises(ValueError, match="'aapl'"):
        pricing.track("aapl")
    with pytest.raises(ValueError, match="empty"):
        pricing.track("")
    with pytest.raises(TypeError, match="int"):
        pricing.track(123)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"not '\*'"):
        pricing.track("*")
    with pytest.raises(ValueError, match="at least one symbol"):
        pricing.track()
    with pytest.raises(ValueError, match="'BTCUSD/'"):
        pricing.track("BTCUSD/")
    with pytest.raises(ValueError, match="timeout must be a positive, finite number"):
        pricing.wait_for_price("AAPL", timeout=0)
    with pytest.raises(ValueError, match="timeout must be a positive, finite number"):
        pricing.wait_for_price("AAPL", timeout=-1)
    with pytest.raises(ValueError, match="max_age must be a positive, finite number"):
        pricing.price("AAPL", max_age=-1)
    with pytest.raises(ValueError, match="not tracked by owner 'x'"):
        pricing.untrack("AAPL", owner="x")
    with pytest.raises(ValueError, match="'msft'"):
        pricing.tracking("AAPL", "msft")

    async def listener(symbol: str, price: float) -> None: ...

    with pytest.raises(TypeError, match="plain function"):
        pricing.add_listener(listener)  # type: ignore[arg-type]
    assert pricing.tracked() == frozenset()


def test_wait_for_price_times_out_naming_the_symbol(pricing: PricingService) -> None:
    with pytest.raises(TimeoutError, match=r"no price for 'AMZN' within 0.2 s \(stock stream"):
        pricing.wait_for_price("AMZN", timeout=0.2)
    assert pricing.tracked() == frozenset()


def test_wait_for_price_timeout_names_the_streams_state_and_last_error(
    emulator: AlpacaEmulator, acquire: Acquire
) -> None:
    emulator.refuse_handshake(429, times=10_000, path=IEX)
    hub = acquire(StreamKind.STOCK, IEX)
    service = PricingService(stock_stream=hub)
    try:
        service.track("AMZN")
        emulator.wait_until(
            lambda: hub.last_error is not None, 10.0, message="the 429 never reached the hub"
        )
        with pytest.raises(TimeoutError) as caught:
            service.wait_for_price("AMZN", timeout=0.2)
    finally:
        service.close()
    text = str(caught.value)
    assert "no price for 'AMZN' within 0.2 s (stock stream " in text
    assert any(f"stream {state}" in text for state in ("connecting", "reconnecting"))
    assert "last error: ConnectionError: HTTP 429 at the WebSocket handshake" in text


def test_crypto_without_a_crypto_stream_is_refused(acquire: Acquire) -> None:
    service = PricingService(stock_stream=acquire(StreamKind.STOCK, IEX))
    with pytest.raises(ValueError, match="'ETH/USD' is a crypto pair but this PricingService"):
        service.track("ETH/USD")
    with pytest.raises(ValueError, match="stock_stream must be a stock or option stream"):
        PricingService(stock_stream=acquire(StreamKind.CRYPTO, CRYPTO))
    with pytest.raises(TypeError, match="StreamHub"):
        PricingService(stock_stream=object())  # type: ignore[arg-type]
    service.close()


def test_a_failed_stream_raises_its_error_instead_of_timing_out(
    pricing: PricingService, emulator: AlpacaEmulator
) -> None:
    emulator.reject_auth(402, path=IEX)
    with pytest.raises(AuthenticationError):
        pricing.wait_for_price("AAPL", timeout=10)


def test_closed_service_refuses_work_and_wakes_waiters(
    pricing: PricingService, emulator: AlpacaEmulator
) -> None:
    errors: list[BaseException] = []
    waiting = threading.Event()

    def waiter() -> None:
        waiting.set()
        try:
            pricing.wait_for_price("META", timeout=10)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    waiting.wait(5)
    wait_wire(emulator, {"META"})
    pricing.close()
    thread.join(10)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], ConnectionClosedError)
    with pytest.raises(ConnectionClosedError):
        pricing.track("AAPL")


def test_satisfies_the_protocols(pricing: PricingService) -> None:
    source: PriceSource = pricing
    tracker: PriceTracker = pricing
    assert isinstance(source, PriceSource)
    assert isinstance(tracker, PriceTracker)
