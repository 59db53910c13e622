"""alpaca-py 0.44's real market-data clients against the emulator: parsed models, limits, errors."""

from __future__ import annotations

from datetime import datetime, timezone

from _conformance_support import Collector, StreamRunner
from alpaca.data.enums import DataFeed, OptionsFeed
from alpaca.data.live import CryptoDataStream, NewsDataStream, OptionDataStream, StockDataStream
from alpaca.data.models import Bar, News, Orderbook, Quote, Trade, TradingStatus
from alpaca.data.models.trades import TradeCancel, TradeCorrection

from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.emulator.market import OPTION_UNIVERSE

KEY, SECRET = "PKCONF0001", "conf-secret"
IEX, SIP, CRYPTO = "/v2/iex", "/v2/sip", "/v1beta3/crypto/us"
TS = datetime(2024, 1, 2, 15, 30, 0, 123456, tzinfo=timezone.utc)


def stock_messages(symbol: str) -> list[dict[str, object]]:
    return [
        {"T": "q", "S": symbol, "bx": "V", "bp": 189.5, "bs": 3, "ax": "V", "ap": 189.6,
         "as": 4, "c": ["R"], "z": "C", "t": TS},
        {"T": "t", "S": symbol, "i": 7, "x": "V", "p": 189.55, "s": 100, "c": ["@"],
         "z": "C", "t": TS},
        {"T": "b", "S": symbol, "o": 189.0, "h": 190.0, "l": 188.5, "c": 189.5, "v": 1000,
         "t": TS, "n": 12, "vw": 189.4},
        {"T": "u", "S": symbol, "o": 189.0, "h": 190.0, "l": 188.5, "c": 189.6, "v": 1100,
         "t": TS, "n": 13, "vw": 189.41},
        {"T": "d", "S": symbol, "o": 180.0, "h": 191.0, "l": 179.5, "c": 189.6, "v": 99000,
         "t": TS, "n": 900, "vw": 185.0},
        {"T": "s", "S": symbol, "sc": "H", "sm": "Trading Halt", "rc": "T12",
         "rm": "Additional Information Requested", "t": TS, "z": "C"},
        {"T": "c", "S": symbol, "x": "V", "oi": 7, "op": 189.55, "os": 100, "oc": ["@"],
         "ci": 8, "cp": 189.56, "cs": 100, "cc": ["@"], "z": "C", "t": TS},
        {"T": "x", "S": symbol, "i": 8, "x": "V", "p": 189.56, "s": 100, "a": "C", "z": "C",
         "t": TS},
    ]


def test_stock_iex_stream_receives_every_model(emu: AlpacaEmulator, runner: StreamRunner) -> None:
    got = Collector()
    stream = StockDataStream(KEY, SECRET, url_override=emu.data_url(IEX))
    stream.subscribe_quotes(got.handler, "AAPL")
    stream.subscribe_trades(got.handler, "AAPL")
    stream.subscribe_bars(got.handler, "AAPL")
    stream.subscribe_updated_bars(got.handler, "AAPL")
    stream.subscribe_daily_bars(got.handler, "AAPL")
    stream.subscribe_trading_statuses(got.handler, "AAPL")
    stream.register_trade_corrections(got.handler)
    stream.register_trade_cancels(got.handler)
    runner.start(stream, IEX, KEY)
    emu.wait_until(lambda: emu.subscriptions(KEY, IEX)["statuses"] == {"AAPL"})
    assert emu.subscriptions(KEY, IEX)["corrections"] == {"AAPL"}

    emu.publish(IEX, stock_messages("AAPL") + stock_messages("MSFT"))
    items = got.wait_count(8)
    assert [type(i) for i in items] == [
        Quote, Trade, Bar, Bar, Bar, TradingStatus, TradeCorrection, TradeCancel,
    ]
    quote, trade = items[0], items[1]
    assert (quote.symbol, quote.bid_price, quote.ask_size, quote.timestamp) == (
        "AAPL", 189.5, 4, TS,
    )
    assert (trade.price, trade.size, trade.id, trade.exchange) == (189.55, 100, 7, "V")
    assert items[2].vwap == 189.4
    assert items[4].trade_count == 900
    assert items[5].status_code == "H"
    assert items[7].action == "C"
    assert items[6].corrected_price == 189.56
    assert emu.counters(KEY, IEX).messages_sent == 8


def test_stock_sip_stream_gets_synthetic_data(runner: StreamRunner, emu: AlpacaEmulator) -> None:
    emu.rate = 300
    got = Collector()
    stream = StockDataStream(KEY, SECRET, feed=DataFeed.SIP, url_override=emu.data_url(SIP))
    stream.subscribe_quotes(got.handler, "*")
    stream.subscribe_trades(got.handler, "TSLA")
    runner.start(stream, SIP, KEY)
    items = got.wait_for(
        lambda xs: {type(x) for x in xs} == {Quote, Trade}
        and {"AAPL", "MSFT", "SPY", "TSLA", "NVDA"} <= {x.symbol for x in xs if type(x) is Quote}
    )
    assert {x.symbol for x in items if type(x) is Trade} == {"TSLA"}
    assert all(x.ask_price > x.bid_price > 0 for x in items if type(x) is Quote)


def test_crypto_stream_models(emu: AlpacaEmulator, runner: StreamRunner) -> None:
    got = Collector()
    stream = CryptoDataStream(KEY, SECRET, url_override=emu.data_url(CRYPTO))
    stream.subscribe_trades(got.handler, "BTC/USD")
    stream.subscribe_quotes(got.handler, "BTC/USD")
    stream.subscribe_bars(got.handler, "*")
    stream.subscribe_orderbooks(got.handler, "ETH/USD")
    runner.start(stream, CRYPTO, KEY)
    emu.wait_until(lambda: emu.subscriptions(KEY, CRYPTO)["orderbooks"] == {"ETH/USD"})
    emu.publish(CRYPTO, [
        {"T": "t", "S": "BTC/USD", "p": 61000.5, "s": 0.25, "t": TS, "i": 99, "tks": "B"},
        {"T": "q", "S": "BTC/USD", "bp": 61000.0, "bs": 1.5, "ap": 61001.0, "as": 0.7, "t": TS},
        {"T": "b", "S": "ETH/USD", "o": 3000.0, "h": 3010.0, "l": 2990.0, "c": 3005.0,
         "v": 12.5, "t": TS, "n": 40, "vw": 3001.2},
        {"T": "o", "S": "ETH/USD", "t": TS, "b": [{"p": 3004.9, "s": 1.0}],
         "a": [{"p": 3005.1, "s": 2.0}], "r": True},
    ])
    items = got.wait_count(4)
    assert [type(i) for i in items] == [Trade, Quote, Bar, Orderbook]
    assert items[0].price == 61000.5
    assert items[1].ask_size == 0.7
    assert items[3].bids[0].price == 3004.9
    assert items[3].reset is True


def test_option_stream_models(emu: AlpacaEmulator, runner: StreamRunner) -> None:
    contract = next(iter(OPTION_UNIVERSE))
    path = "/v1beta1/indicative"
    got = Collector()
    stream = OptionDataStream(
        KEY, SECRET, feed=OptionsFeed.INDICATIVE, url_override=emu.data_url(path)
    )
    stream.subscribe_trades(got.handler, contract)
    stream.subscribe_quotes(got.handler, contract)
    runner.start(stream, path, KEY)
    emu.wait_until(lambda: emu.subscriptions(KEY, path)["quotes"] == {contract})
    emu.publish(path, [
        {"T": "t", "S": contract, "t": TS, "p": 42.1, "s": 3, "x": "C", "c": "I"},
        {"T": "q", "S": contract, "t": TS, "bx": "C", "bp": 42.0, "bs": 10, "ax": "C",
         "ap": 42.2, "as": 12, "c": "A"},
    ])
    trade, quote = got.wait_count(2)
    assert isinstance(trade, Trade)
    assert trade.symbol == contract
    assert trade.price == 42.1
    assert isinstance(quote, Quote)
    assert quote.bid_size == 10


def test_news_stream_models(emu: AlpacaEmulator, runner: StreamRunner) -> None:
    path = "/v1beta1/news"
    got = Collector()
    stream = NewsDataStream(KEY, SECRET, url_override=emu.data_url(path))
    stream.subscribe_news(got.handler, "AAPL")
    runner.start(stream, path, KEY)
    emu.wait_until(lambda: emu.subscriptions(KEY, path)["news"] == {"AAPL"})

    def story(ident: int, symbols: list[str]) -> dict[str, object]:
        return {"T": "n", "id": ident, "headline": f"story {ident}", "summary": "s",
                "author": "a", "created_at": TS, "updated_at": TS, "url": "https://x.invalid",
                "content": "", "symbols": symbols, "source": "emulator"}

    emu.publish(path, [story(1, ["AAPL", "TSLA"]), story(2, ["MSFT"]), story(3, ["AAPL"])])
    items = got.wait_count(2)
    assert all(isinstance(i, News) for i in items)
    assert [(i.id, i.created_at) for i in items] == [(1, TS), (3, TS)]


def test_same_key_second_client_on_endpoint_gets_406_other_endpoint_fine(
    emu: AlpacaEmulator, runner: StreamRunner
) -> None:
    first = Collector()
    a = StockDataStream(KEY, SECRET, url_override=emu.data_url(IEX))
    a.subscribe_quotes(first.handler, "AAPL")
    runner.start(a, IEX, KEY)
    runner.wait_connected(KEY, IEX)

    b = StockDataStream(KEY, SECRET, url_override=emu.data_url(IEX))
    b.subscribe_quotes(Collector().handler, "MSFT")
    runner.start(b, IEX, KEY)
    crypto = Collector()
    c = CryptoDataStream(KEY, SECRET, url_override=emu.data_url(CRYPTO))
    c.subscribe_trades(crypto.handler, "BTC/USD")
    runner.start(c, CRYPTO, KEY)

    # alpaca-py retries a 406 forever with backoff: the second attempt proves it.
    emu.wait_until(lambda: emu.counters(KEY, IEX).rejections.get(406, 0) >= 2)
    emu.wait_until(lambda: emu.subscriptions(KEY, CRYPTO)["trades"] == {"BTC/USD"})
    emu.publish(CRYPTO, [{"T": "t", "S": "BTC/USD", "p": 1.0, "s": 1.0, "t": TS, "i": 1}])
    assert crypto.wait_count(1)[0].price == 1.0
    emu.publish(IEX, stock_messages("AAPL")[:1])
    assert first.wait_count(1)[0].bid_price == 189.5
    counters = emu.counters(KEY, IEX)
    assert counters.open == 1
    assert counters.max_concurrent == 1


def test_402_is_retried_forever_by_alpaca_py(emu: AlpacaEmulator, runner: StreamRunner) -> None:
    emu.add_account(KEY, SECRET)
    stream = StockDataStream(KEY, "wrong-secret", url_override=emu.data_url(IEX))
    stream.subscribe_quotes(Collector().handler, "AAPL")
    thread = runner.start(stream, IEX, KEY)
    emu.wait_until(lambda: emu.counters(KEY, IEX).rejections.get(402, 0) >= 2)
    assert thread.is_alive()
    assert emu.counters(KEY, IEX).connections_accepted == 0


def test_409_makes_run_return(emu: AlpacaEmulator, runner: StreamRunner) -> None:
    emu.add_account(KEY, SECRET, feeds={"iex"})
    stream = StockDataStream(KEY, SECRET, feed=DataFeed.SIP, url_override=emu.data_url(SIP))
    stream.subscribe_quotes(Collector().handler, "AAPL")
    thread = runner.start(stream, SIP, KEY)
    thread.join(10)
    assert not thread.is_alive()
    assert emu.counters(KEY, SIP).rejections == {409: 1}


def test_405_is_only_logged_and_state_is_kept(emu: AlpacaEmulator, runner: StreamRunner) -> None:
    emu.add_account(KEY, SECRET, symbol_limit=1)
    got = Collector()
    stream = StockDataStream(KEY, SECRET, url_override=emu.data_url(IEX))
    stream.subscribe_quotes(got.handler, "AAPL", "MSFT")
    stream.subscribe_bars(got.handler, "SPY")
    runner.start(stream, IEX, KEY)
    emu.wait_until(lambda: emu.counters(KEY, IEX).rejections.get(405, 0) == 1)
    assert emu.subscriptions(KEY, IEX)["quotes"] == frozenset()
    assert emu.counters(KEY, IEX).open == 1  # the connection stays up
