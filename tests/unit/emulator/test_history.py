"""History served by the emulator: clock-paced bars on the streams and the market-data REST API.

Real sockets: a raw websockets client on the data streams and httpx on the REST port.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgpack
import pytest

from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.emulator.market import CRYPTO_UNIVERSE, OPTION_UNIVERSE, STOCK_UNIVERSE

from ._emulator_support import IEX, KEY, SECRET, Raw

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 1, 2, 14, 30, 15, tzinfo=UTC)  # a frozen clock, mid-minute
HEADERS = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}
CRYPTO = "/v1beta3/crypto/us"


@pytest.fixture
async def emu() -> AsyncIterator[AlpacaEmulator]:
    async with AlpacaEmulator(seed=7, clock=T0) as emulator:
        yield emulator


@pytest.fixture
async def http(emu: AlpacaEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=emu.api_url, headers=HEADERS, timeout=5) as client:
        yield client


async def bars_of(
    http: httpx.AsyncClient, symbols: str, timeframe: str = "1Min", path: str = "/v2/stocks/bars",
    **params: Any,
) -> dict[str, Any]:
    params = {"symbols": symbols, "timeframe": timeframe, "start": "2024-01-01T00:00:00Z", **params}
    reply = await http.get(path, params=params)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def iso(ts: msgpack.Timestamp) -> str:
    return dt.datetime.fromtimestamp(ts.seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_advance_publishes_one_bar_per_minute_per_symbol_and_records_it(
    emu: AlpacaEmulator, http: httpx.AsyncClient
) -> None:
    raw = await Raw.open(emu)
    await raw.auth()
    await raw.subscribe(bars=["*"])
    published = emu.advance(minutes=3)
    assert emu.clock.now() == T0 + dt.timedelta(minutes=3)
    stocks = [b for b in published if b["S"] in STOCK_UNIVERSE]
    assert len(stocks) == 3 * len(STOCK_UNIVERSE)
    assert {iso(b["t"]) for b in stocks} == {
        "2024-01-02T14:30:00Z", "2024-01-02T14:31:00Z", "2024-01-02T14:32:00Z"}
    streamed: list[dict[str, Any]] = []
    while len(streamed) < len(stocks):
        streamed.extend(await raw.recv())
    assert streamed == stocks  # in publishing order, exactly what advance() returned
    body = await bars_of(http, "AAPL,MSFT")
    assert body["next_page_token"] is None
    for symbol in ("AAPL", "MSFT"):
        mine = [b for b in stocks if b["S"] == symbol]
        assert body["bars"][symbol] == [
            {"t": iso(b["t"]), "o": b["o"], "h": b["h"], "l": b["l"], "c": b["c"],
             "v": b["v"], "n": b["n"], "vw": b["vw"]} for b in mine
        ]
    # consecutive bars join up and the last close is the price orders fill at
    aapl = body["bars"]["AAPL"]
    assert [b["o"] for b in aapl[1:]] == [b["c"] for b in aapl[:-1]]
    assert emu.price("AAPL") == aapl[-1]["c"]
    await raw.close()


async def test_daily_bars_are_stamped_at_new_york_midnight(
    emu: AlpacaEmulator, http: httpx.AsyncClient
) -> None:
    raw = await Raw.open(emu)
    await raw.auth()
    await raw.subscribe(dailyBars=["AAPL"])
    published = emu.advance(days=2, symbols=["AAPL"])
    assert [(b["T"], iso(b["t"])) for b in published] == [
        ("d", "2024-01-02T05:00:00Z"), ("d", "2024-01-03T05:00:00Z")]
    assert [*await raw.recv(), *await raw.recv()] == published  # one frame per day that closed
    body = await bars_of(http, "AAPL", "1Day")
    assert [b["t"] for b in body["bars"]["AAPL"]] == [
        "2024-01-02T05:00:00Z", "2024-01-03T05:00:00Z"]
    week = await bars_of(http, "AAPL", "1Week")
    assert len(week["bars"]["AAPL"]) == 1
    assert week["bars"]["AAPL"][0]["v"] == sum(b["v"] for b in published)
    await raw.close()


async def test_bars_go_to_subscribed_symbols_outside_the_universe_and_per_feed(
    emu: AlpacaEmulator,
) -> None:
    iex = await Raw.open(emu)
    await iex.auth()
    await iex.subscribe(bars=["IBM"])
    test_feed = await Raw.open(emu, "/v2/test")
    await test_feed.auth()
    await test_feed.subscribe(bars=["*"])
    crypto = await Raw.open(emu, CRYPTO)
    await crypto.auth()
    await crypto.subscribe(bars=["*"])
    published = emu.advance(minutes=1)
    symbols = {b["S"] for b in published}
    assert symbols == {*STOCK_UNIVERSE, "IBM", "FAKEPACA", *CRYPTO_UNIVERSE, *OPTION_UNIVERSE}
    assert [b["S"] for b in await iex.recv()] == ["IBM"]
    assert [b["S"] for b in await test_feed.recv()] == ["FAKEPACA"]
    assert {b["S"] for b in await crypto.recv()} == set(CRYPTO_UNIVERSE)
    for raw in (iex, test_feed, crypto):
        await raw.close()


async def test_pages_single_symbol_sort_and_aggregation(
    emu: AlpacaEmulator, http: httpx.AsyncClient
) -> None:
    emu.advance(minutes=10, symbols=["AAPL", "MSFT"])
    seen: list[tuple[str, str]] = []
    token = None
    while True:
        extra = {"page_token": token} if token else {}
        body = await bars_of(http, "MSFT,AAPL", limit="7", **extra)
        assert sum(len(v) for v in body["bars"].values()) <= 7
        seen.extend((s, b["t"]) for s, bars in body["bars"].items() for b in bars)
        token = body["next_page_token"]
        if token is None:
            break
    assert len(seen) == 20
    assert seen == sorted(seen)
    single = await http.get("/v2/stocks/AAPL/bars", params={
        "timeframe": "5Min", "start": "2024-01-02T14:30:00Z", "sort": "desc"})
    body = single.json()
    assert body["symbol"] == "AAPL"
    assert body["next_page_token"] is None
    assert [b["t"] for b in body["bars"]] == ["2024-01-02T14:35:00Z", "2024-01-02T14:30:00Z"]
    # start defaults to the clock's day, end to the clock's now
    default = await http.get("/v2/stocks/bars", params={"symbols": "AAPL", "timeframe": "1Min"})
    assert len(default.json()["bars"]["AAPL"]) == 10
    window = await bars_of(http, "AAPL", start="2024-01-02T14:32:00Z",
                           end="2024-01-02T14:33:00Z")
    assert [b["t"] for b in window["bars"]["AAPL"]] == [
        "2024-01-02T14:32:00Z", "2024-01-02T14:33:00Z"]


async def test_crypto_and_option_history_and_latest_data(
    emu: AlpacaEmulator, http: httpx.AsyncClient
) -> None:
    option = next(iter(OPTION_UNIVERSE))
    emu.advance(minutes=2, symbols=["BTC/USD", option])
    emu.publish(IEX, [{"T": "q", "S": "AAPL", "bx": "V", "bp": 10.0, "bs": 1, "ax": "V",
                       "ap": 10.1, "as": 2, "c": ["R"], "z": "C", "t": "2024-01-02T14:32:00Z"}])
    emu.publish(IEX, [{"T": "t", "S": "AAPL", "i": 9, "x": "V", "p": 10.05, "s": 5,
                       "c": ["@"], "z": "C", "t": "2024-01-02T14:32:01Z"}])
    async with httpx.AsyncClient(base_url=emu.api_url, timeout=5) as anonymous:
        crypto = (await anonymous.get(f"{CRYPTO}/bars", params={
            "symbols": "BTC/USD", "timeframe": "1Min", "start": "2024-01-02T00:00:00Z"})).json()
        assert len(crypto["bars"]["BTC/USD"]) == 2
        latest = (await anonymous.get(f"{CRYPTO}/latest/bars", params={"symbols": "BTC/USD"}))
        assert latest.json()["bars"]["BTC/USD"] == crypto["bars"]["BTC/USD"][-1]
        assert (await anonymous.get("/v2/stocks/bars", params={
            "symbols": "AAPL", "timeframe": "1Min"})).status_code == 401
    options = await bars_of(http, option, path="/v1beta1/options/bars")
    assert len(options["bars"][option]) == 2
    quotes = (await http.get("/v2/stocks/quotes/latest", params={"symbols": "AAPL,MSFT"})).json()
    assert quotes == {"quotes": {"AAPL": {
        "bx": "V", "bp": 10.0, "bs": 1, "ax": "V", "ap": 10.1, "as": 2, "c": ["R"], "z": "C",
        "t": "2024-01-02T14:32:00Z"}}}
    trade = (await http.get("/v2/stocks/AAPL/trades/latest")).json()
    assert trade["symbol"] == "AAPL"
    assert trade["trade"]["p"] == 10.05
    missing = await http.get("/v2/stocks/MSFT/quotes/latest")
    assert missing.status_code == 404


async def test_latest_quotes_follow_the_synthetic_stream(emu: AlpacaEmulator) -> None:
    raw = await Raw.open(emu, CRYPTO)
    await raw.auth()
    await raw.subscribe(quotes=["ETH/USD"])
    emu.rate = 200
    last: dict[str, Any] = {}
    while not last:
        frame = await raw.recv()
        last = next((m for m in reversed(frame) if m.get("T") == "q"), {})
    emu.rate = 0
    async with httpx.AsyncClient(base_url=emu.api_url, timeout=5) as client:
        reply = await client.get(f"{CRYPTO}/latest/quotes", params={"symbols": "ETH/USD"})
    quote = reply.json()["quotes"]["ETH/USD"]
    assert quote["t"] == "2024-01-02T14:30:15Z"  # stamped by the frozen emulator clock
    assert set(quote) == {"bp", "bs", "ap", "as", "t"}


async def test_bad_requests_get_alpaca_errors_naming_the_problem(
    emu: AlpacaEmulator, http: httpx.AsyncClient
) -> None:
    cases = [
        ({"symbols": "AAPL", "timeframe": "7Sec"}, 422, "invalid timeframe"),
        ({"timeframe": "1Min"}, 400, "missing symbols"),
        ({"symbols": "AAPL", "timeframe": "1Min", "limit": "0"}, 422, "invalid limit"),
        ({"symbols": "AAPL", "timeframe": "1Min", "sort": "up"}, 422, "invalid sort"),
        ({"symbols": "AAPL", "timeframe": "1Min", "start": "soon"}, 422, "invalid start"),
        ({"symbols": "AAPL", "timeframe": "1Min", "page_token": "x"}, 422, "invalid page_token"),
        ({"symbols": "AAPL", "timeframe": "1Min", "feed": "nasdaq"}, 422, "invalid feed"),
        ({"symbols": "AAPL", "timeframe": "1Min", "start": "2024-01-03T00:00:00Z",
          "end": "2024-01-02T00:00:00Z"}, 422, "end should not be before start"),
    ]
    for params, status, text in cases:
        reply = await http.get("/v2/stocks/bars", params=params)
        assert (reply.status_code, text in reply.json()["message"]) == (status, True), params
    assert (await http.get("/v2/stocks/AAPL/whatever")).status_code == 404
    assert (await http.get("/v1beta3/crypto/mars/bars")).status_code == 404
    emu.add_account(KEY, SECRET, feeds={"iex"})
    sip = await http.get("/v2/stocks/bars", params={
        "symbols": "AAPL", "timeframe": "1Min", "feed": "sip"})
    assert sip.status_code == 403
    assert sip.json()["message"] == "subscription does not permit querying recent SIP data"
    old = await http.get("/v2/stocks/bars", params={
        "symbols": "AAPL", "timeframe": "1Min", "feed": "sip", "end": "2024-01-02T14:00:00Z"})
    assert old.status_code == 200
    wrong = await http.get("/v2/stocks/bars", params={"symbols": "AAPL", "timeframe": "1Min"},
                           headers={"APCA-API-SECRET-KEY": "wrong-secret"})
    assert wrong.status_code == 401


async def test_throttle_and_fail_history_leave_trading_alone(
    emu: AlpacaEmulator, http: httpx.AsyncClient
) -> None:
    params = {"symbols": "AAPL", "timeframe": "1Min"}
    emu.throttle_history(2, retry_after=1.5)
    for _ in range(2):
        reply = await http.get("/v2/stocks/bars", params=params)
        assert reply.status_code == 429
        assert reply.headers["Retry-After"] == "1.5"
        assert reply.json() == {"code": 42910000, "message": "too many requests."}
    assert (await http.get("/v2/account")).status_code == 200  # not a market-data call
    assert (await http.get("/v2/stocks/bars", params=params)).status_code == 200
    emu.fail_history(503, times=None)
    for _ in range(3):
        assert (await http.get("/v2/stocks/quotes/latest", params=params)).status_code == 503
    emu.reset_faults()
    assert (await http.get("/v2/stocks/bars", params=params)).status_code == 200
    emu.fail_history(refuse=True)
    with pytest.raises(httpx.TransportError):
        await http.get("/v2/stocks/bars", params=params)
    assert (await http.get("/v2/stocks/bars", params=params)).status_code == 200
    stats = emu.stats()
    assert stats.market_data_requests == 9
    assert stats.rest_requests == 10


async def test_the_clock_stamps_synthetic_data_orders_and_the_rest_clock(
    emu: AlpacaEmulator, http: httpx.AsyncClient
) -> None:
    raw = await Raw.open(emu)
    await raw.auth()
    await raw.subscribe(trades=["AAPL"])
    emu.rate = 100
    trade = (await raw.recv())[0]
    emu.rate = 0
    assert iso(trade["t"]) == "2024-01-02T14:30:15Z"
    emu.clock.advance(hours=1)
    clock = (await http.get("/v2/clock")).json()
    assert dt.datetime.fromisoformat(clock["timestamp"]) == T0 + dt.timedelta(hours=1)
    order = (await http.post("/v2/orders", json={
        "symbol": "AAPL", "qty": 1, "side": "buy", "type": "market", "time_in_force": "day"}))
    assert order.json()["submitted_at"] == "2024-01-02T15:30:15.000000Z"
    await raw.close()


def test_advance_refuses_bad_steps_at_the_call() -> None:
    emu = AlpacaEmulator(clock=T0)
    for kwargs, text in [
        ({}, "one positive integer"),
        ({"minutes": 1, "days": 1}, "one positive integer"),
        ({"minutes": -1}, "one positive integer"),
        ({"minutes": 1.5}, "one positive integer"),
        ({"minutes": 10**6}, "at most"),
        ({"minutes": 1, "symbols": "AAPL"}, "not one string"),
        ({"minutes": 1, "symbols": [""]}, "non-empty strings"),
    ]:
        with pytest.raises(ValueError, match=text):
            emu.advance(**kwargs)
    for bad in ({"times": 0}, {"times": 1.5}, {"retry_after": -1}):
        with pytest.raises(ValueError):
            emu.throttle_history(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="HTTP error status"):
        emu.fail_history(200)
