"""Protocol tests of AlpacaEmulator's data and trading streams, with a raw websockets client."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import threading
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from alpaca_di.emulator import AlpacaEmulator

from ._emulator_support import IEX, KEY, SECRET, Raw

STOCK_ACK_KEYS = [
    "T", "trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds",
    "corrections", "cancelErrors",
]


def error(code: int, msg: str) -> list[dict[str, Any]]:
    return [{"T": "error", "code": code, "msg": msg}]


@pytest.fixture
async def emu() -> AsyncIterator[AlpacaEmulator]:
    async with AlpacaEmulator(seed=3) as emulator:
        yield emulator


def quote(symbol: str, bp: float = 1.0, **extra: Any) -> dict[str, Any]:
    return {
        "T": "q", "S": symbol, "bx": "V", "bp": bp, "bs": 1, "ax": "V", "ap": bp + 0.1,
        "as": 2, "c": ["R"], "z": "C", "t": "2024-01-02T15:30:00.5Z", **extra,
    }


# ----------------------------------------------------------------------------- sequence


async def test_connect_auth_subscribe_sequence_msgpack(emu: AlpacaEmulator) -> None:
    raw = await Raw.open(emu)
    assert isinstance(raw.frame, bytes)
    assert await raw.auth() == [{"T": "success", "msg": "authenticated"}]
    ack = await raw.subscribe(trades=["AAPL"], quotes=["AAPL", "MSFT"], bars=["*"])
    assert list(ack[0]) == STOCK_ACK_KEYS
    assert ack == [{
        "T": "subscription", "trades": ["AAPL"], "quotes": ["AAPL", "MSFT"], "bars": ["*"],
        "updatedBars": [], "dailyBars": [], "statuses": [], "lulds": [],
        "corrections": ["AAPL"], "cancelErrors": ["AAPL"],
    }]
    assert isinstance(raw.frame, bytes)
    await raw.close()


async def test_json_mode_without_content_type(emu: AlpacaEmulator) -> None:
    raw = await Raw.open(emu, use_msgpack=False)
    assert isinstance(raw.frame, str)
    assert await raw.auth() == [{"T": "success", "msg": "authenticated"}]
    await raw.subscribe(quotes=["AAPL"])
    emu.publish(IEX, [quote("AAPL", t=dt.datetime(2024, 1, 2, 15, 30, 0, 500000, dt.timezone.utc))])
    data = await raw.recv()
    assert isinstance(raw.frame, str)
    assert data[0]["t"] == "2024-01-02T15:30:00.5Z"
    assert next(iter(data[0])) == "T"


async def test_msgpack_timestamps_are_ext_values_and_t_first(emu: AlpacaEmulator) -> None:
    raw = await Raw.open(emu)
    await raw.auth()
    await raw.subscribe(quotes=["AAPL"])
    message = quote("AAPL")
    message.pop("T")
    message["T"] = "q"  # T last in the input: the emulator moves it first
    emu.publish(IEX, [message])
    data = await raw.recv()
    assert next(iter(data[0])) == "T"
    assert data[0]["t"] == msgpack.Timestamp.from_unix_nano(1_704_209_400_500_000_000)


async def test_options_endpoint_is_msgpack_only(emu: AlpacaEmulator) -> None:
    raw = await Raw.open(emu, "/v1beta1/opra", use_msgpack=False, welcome=False)
    frame = await asyncio.wait_for(raw.ws.recv(), 5)
    assert isinstance(frame, bytes)
    assert msgpack.unpackb(frame) == [{"T": "success", "msg": "connected"}]


async def test_fragmented_subscribe_with_action_last(emu: AlpacaEmulator) -> None:
    raw = await Raw.open(emu)
    await raw.auth()
    packed = msgpack.packb({"trades": ["AAPL", "*"], "quotes": ["SPY"], "action": "subscribe"})
    await raw.ws.send(packed[i:i + 7] for i in range(0, len(packed), 7))
    ack = await raw.recv()
    assert ack[0]["trades"] == ["AAPL", "*"]
    assert ack[0]["quotes"] == ["SPY"]
    counters = emu.counters(KEY, IEX)
    assert counters.subscribe_messages == 1
    assert counters.subscribe_bytes == len(packed)


async def test_subscribe_additive_unsubscribe_subtractive_and_wildcard(emu: AlpacaEmulator) -> None:
    raw = await Raw.open(emu)
    await raw.auth()
    await raw.subscribe(quotes=["AAPL"], bars=["*", "MSFT"])
    ack = await raw.subscribe(quotes=["TSLA"])
    assert ack[0]["quotes"] == ["AAPL", "TSLA"]
    assert ack[0]["bars"] == ["*", "MSFT"]
    ack = await raw.subscribe("unsubscribe", bars=["*"], quotes=["AAPL", "NOPE"])
    assert ack[0]["bars"] == ["MSFT"]
    assert ack[0]["quotes"] == ["TSLA"]
    assert emu.subscriptions(KEY, IEX)["quotes"] == frozenset({"TSLA"})
    assert emu.counters(KEY, IEX).unsubscribe_messages == 1


async def test_crypto_and_news_ack_keys(emu: AlpacaEmulator) -> None:
    crypto = await Raw.open(emu, "/v1beta3/crypto/us")
    await crypto.auth()
    ack = await crypto.subscribe(orderbooks=["BTC/USD"])
    assert list(ack[0]) == [
        "T", "trades", "quotes", "orderbooks", "bars", "updatedBars", "dailyBars",
    ]
    news = await Raw.open(emu, "/v1beta1/news")
    await news.auth()
    assert await news.subscribe(news=["*"]) == [{"T": "subscription", "news": ["*"]}]


async def test_header_authentication(emu: AlpacaEmulator) -> None:
    raw = await Raw.open(
        emu, headers={"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}
    )
    assert await raw.recv() == [{"T": "success", "msg": "authenticated"}]
    assert emu.counters(KEY, IEX).open == 1


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "frame", [b"\xc1\xc1garbage", "not json", msgpack.packb([1, 2]), msgpack.packb({"action": 3})]
)
async def test_garbage_gets_400_and_the_session_survives(emu: AlpacaEmulator, frame: Any) -> None:
    raw = await Raw.open(emu)
    await raw.ws.send(frame)
    assert await raw.recv() == error(400, "invalid syntax")
    assert await raw.auth() == [{"T": "success", "msg": "authenticated"}]


async def test_unknown_action_400_before_and_after_auth(emu: AlpacaEmulator) -> None:
    raw = await Raw.open(emu)
    await raw.send({"action": "listen"})
    assert await raw.recv() == error(400, "invalid syntax")
    await raw.auth()
    await raw.send({"action": "dance", "quotes": ["AAPL"]})
    assert await raw.recv() == error(400, "invalid syntax")
    assert await raw.subscribe(quotes="AAPL") == error(400, "invalid syntax")


async def test_subscribe_before_auth_is_401(emu: AlpacaEmulator) -> None:
    raw = await Raw.open(emu)
    assert await raw.subscribe(quotes=["AAPL"]) == error(401, "not authenticated")
    assert await raw.auth() == [{"T": "success", "msg": "authenticated"}]


async def test_second_auth_is_403(emu: AlpacaEmulator) -> None:
    raw = await Raw.open(emu)
    await raw.auth()
    assert await raw.auth() == error(403, "already authenticated")
    assert emu.counters(KEY, IEX).rejections == {403: 1}


async def test_channel_of_another_feed_is_410_and_state_unchanged(emu: AlpacaEmulator) -> None:
    raw = await Raw.open(emu)
    await raw.auth()
    await raw.subscribe(quotes=["AAPL"])
    assert await raw.subscribe(quotes=["MSFT"], orderbooks=["AAPL"]) == error(
        410, "invalid subscribe action for this feed"
    )
    assert emu.subscriptions(KEY, IEX)["quotes"] == {"AAPL"}


async def test_auth_timeout_is_404_then_close() -> None:
    async with AlpacaEmulator(auth_timeout=0.2) as emu:
        raw = await Raw.open(emu)
        assert await raw.recv() == error(404, "auth timeout")
        await raw.expect_closed()


async def test_unknown_key_is_402_then_close_once_accounts_exist(emu: AlpacaEmulator) -> None:
    emu.add_account(KEY, SECRET)
    raw = await Raw.open(emu)
    assert await raw.auth(secret="wrong") == error(402, "auth failed")
    await raw.expect_closed()
    other = await Raw.open(emu)
    assert await other.auth(key="PKOTHER") == error(402, "auth failed")
    assert emu.counters(KEY, IEX).rejections == {402: 1}
    good = await Raw.open(emu)
    assert await good.auth() == [{"T": "success", "msg": "authenticated"}]


async def test_denied_feed_is_409_at_auth(emu: AlpacaEmulator) -> None:
    emu.add_account(KEY, SECRET, feeds={"iex"})
    raw = await Raw.open(emu, "/v2/sip")
    assert await raw.auth() == error(409, "insufficient subscription")
    await raw.expect_closed()
    iex = await Raw.open(emu)
    assert await iex.auth() == [{"T": "success", "msg": "authenticated"}]


async def test_symbol_limit_405_leaves_state_unchanged(emu: AlpacaEmulator) -> None:
    emu.add_account(KEY, SECRET, symbol_limit=3)
    raw = await Raw.open(emu)
    await raw.auth()
    await raw.subscribe(trades=["AAPL", "MSFT"], quotes=["AAPL"], bars=["*", "SPY", "TSLA"])
    rejected = await raw.subscribe(quotes=["TSLA"], bars=["NVDA"])
    assert rejected == error(405, "symbol limit exceeded")
    state = emu.subscriptions(KEY, IEX)
    assert state["quotes"] == {"AAPL"}
    assert state["bars"] == {"*", "SPY", "TSLA"}
    ack = await raw.subscribe("unsubscribe", trades=["MSFT"])
    assert ack[0]["trades"] == ["AAPL"]
    ack = await raw.subscribe(quotes=["TSLA"])
    assert ack[0]["quotes"] == ["AAPL", "TSLA"]


# ----------------------------------------------------------------------------- connection limit


async def test_connection_limit_406_per_key_and_endpoint(emu: AlpacaEmulator) -> None:
    first = await Raw.open(emu)
    await first.auth()
    second = await Raw.open(emu)
    assert await second.auth() == error(406, "connection limit exceeded")
    await second.expect_closed()
    other_path = await Raw.open(emu, "/v2/sip")
    assert await other_path.auth() == [{"T": "success", "msg": "authenticated"}]
    other_key = await Raw.open(emu)
    assert await other_key.auth(key="PKOTHER") == [{"T": "success", "msg": "authenticated"}]
    counters = emu.counters(KEY, IEX)
    assert counters.rejections == {406: 1}
    assert counters.open == 1
    assert counters.max_concurrent == 1
    assert counters.connections_accepted == 1
    await first.close()  # a clean close frees the slot at once
    await emu.until(lambda: emu.counters(KEY, IEX).slots_held == 0)
    # the rejected session (which echoed our close) and the first one
    assert emu.counters(KEY, IEX).close_frames_received == 2
    third = await Raw.open(emu)
    assert await third.auth() == [{"T": "success", "msg": "authenticated"}]


async def test_connection_limit_is_configurable() -> None:
    async with AlpacaEmulator(connection_limit=2) as emu:
        sessions = [await Raw.open(emu) for _ in range(3)]
        assert await sessions[0].auth() == [{"T": "success", "msg": "authenticated"}]
        assert await sessions[1].auth() == [{"T": "success", "msg": "authenticated"}]
        assert await sessions[2].auth() == error(406, "connection limit exceeded")
        assert emu.counters(KEY, IEX).max_concurrent == 2


async def test_unclean_drop_holds_the_slot() -> None:
    async with AlpacaEmulator(slot_hold_seconds=60) as emu:
        first = await Raw.open(emu)
        await first.auth()
        first.ws.transport.abort()  # no close frame: the server cannot tell it is gone
        await emu.until(lambda: emu.counters(KEY, IEX).open == 0)
        assert emu.counters(KEY, IEX).slots_held == 1
        again = await Raw.open(emu)
        assert await again.auth() == error(406, "connection limit exceeded")


async def test_held_slot_is_released_after_the_hold() -> None:
    async with AlpacaEmulator(slot_hold_seconds=0.2) as emu:
        first = await Raw.open(emu)
        await first.auth()
        first.ws.transport.abort()
        await emu.until(lambda: emu.counters(KEY, IEX).slots_held == 0)
        again = await Raw.open(emu)
        assert await again.auth() == [{"T": "success", "msg": "authenticated"}]


async def test_server_drop_without_close_frame_holds_slot() -> None:
    async with AlpacaEmulator(slot_hold_seconds=60) as emu:
        raw = await Raw.open(emu)
        await raw.auth()
        assert emu.drop_connections(IEX, close_frame=False) == 1
        closed = await raw.expect_closed()
        assert isinstance(closed, ConnectionClosedError)
        assert closed.rcvd is None
        again = await Raw.open(emu)
        assert await again.auth() == error(406, "connection limit exceeded")


# ----------------------------------------------------------------------------- routing


async def test_routing_specific_and_wildcard_delivered_once(emu: AlpacaEmulator) -> None:
    both = await Raw.open(emu)
    await both.auth()
    await both.subscribe(quotes=["AAPL", "*"])
    msft = await Raw.open(emu)
    await msft.auth(key="PK2")
    await msft.subscribe(quotes=["MSFT"])
    assert emu.publish(IEX, [quote("AAPL", 1.0), quote("MSFT", 2.0)]) == 3
    assert [m["S"] for m in await both.recv()] == ["AAPL", "MSFT"]
    assert [m["S"] for m in await msft.recv()] == ["MSFT"]
    assert emu.counters(KEY, IEX).messages_sent == 2
    assert emu.counters("PK2", IEX).messages_sent == 1


async def test_corrections_and_cancels_follow_trades(emu: AlpacaEmulator) -> None:
    raw = await Raw.open(emu)
    await raw.auth()
    await raw.subscribe(trades=["AAPL"])
    ts = "2024-01-02T15:30:00Z"
    correction = {"T": "c", "S": "AAPL", "x": "V", "oi": 1, "op": 1.0, "os": 1, "oc": ["@"],
                  "ci": 2, "cp": 1.1, "cs": 1, "cc": ["@"], "z": "C", "t": ts}
    cancel = {"T": "x", "S": "AAPL", "i": 1, "x": "V", "p": 1.0, "s": 1, "a": "C", "z": "C",
              "t": ts}
    other = dict(cancel, S="MSFT")
    quote_msg = quote("AAPL")
    emu.publish(IEX, [correction, other, quote_msg, cancel])
    assert [(m["T"], m["S"]) for m in await raw.recv()] == [("c", "AAPL"), ("x", "AAPL")]


async def test_news_routing_by_any_symbol(emu: AlpacaEmulator) -> None:
    raw = await Raw.open(emu, "/v1beta1/news")
    await raw.auth()
    await raw.subscribe(news=["TSLA"])
    ts = "2024-01-02T15:30:00Z"

    def story(ident: int, symbols: list[str]) -> dict[str, Any]:
        return {"T": "n", "id": ident, "headline": "h", "summary": "s", "author": "a",
                "created_at": ts, "updated_at": ts, "url": "u", "content": "",
                "symbols": symbols, "source": "x"}

    emu.publish("news", [story(1, ["AAPL"]), story(2, ["AAPL", "TSLA"]), story(3, [])])
    data = await raw.recv()
    assert [m["id"] for m in data] == [2]
    assert isinstance(data[0]["created_at"], msgpack.Timestamp)


async def test_publish_batches_at_most_100_per_frame(emu: AlpacaEmulator) -> None:
    raw = await Raw.open(emu)
    await raw.auth()
    await raw.subscribe(quotes=["*"])
    frames_before = emu.counters(KEY, IEX).frames_sent
    emu.publish(IEX, [quote("AAPL", 1.0 + i) for i in range(250)])
    sizes = [len(await raw.recv()) for _ in range(3)]
    assert sizes == [100, 100, 50]
    counters = emu.counters(KEY, IEX)
    assert counters.messages_sent == 250
    assert counters.frames_sent == frames_before + 3


async def test_publish_key_filter_and_unknown_path(emu: AlpacaEmulator) -> None:
    a = await Raw.open(emu)
    await a.auth()
    await a.subscribe(quotes=["AAPL"])
    b = await Raw.open(emu)
    await b.auth(key="PK2")
    await b.subscribe(quotes=["AAPL"])
    emu.publish(IEX, [quote("AAPL", 1.0)], key_id="PK2")
    emu.publish(IEX, [quote("AAPL", 2.0)])
    assert [m["bp"] for m in await a.recv()] == [2.0]
    assert [m["bp"] for m in await b.recv()] == [1.0]
    with pytest.raises(ValueError, match="unknown emulator path"):
        emu.publish("/v2/nope", [])


async def test_synthetic_data_only_for_subscriptions() -> None:
    async with AlpacaEmulator(rate=500, seed=1) as emu:
        raw = await Raw.open(emu)
        await raw.auth()
        await raw.subscribe(quotes=["AAPL"], trades=["MSFT"], bars=["SPY"])
        seen: set[tuple[str, str]] = set()
        while len(seen) < 3:
            for message in await raw.recv():
                assert next(iter(message)) == "T"
                assert isinstance(message["t"], msgpack.Timestamp)
                seen.add((message["T"], message["S"]))
        assert seen == {("q", "AAPL"), ("t", "MSFT"), ("b", "SPY")}
        await emu.until(lambda: emu.counters(KEY, IEX).messages_sent >= 10)


async def test_synthetic_wildcard_covers_default_universe() -> None:
    async with AlpacaEmulator(rate=1000, seed=1) as emu:
        raw = await Raw.open(emu, "/v1beta3/crypto/us")
        await raw.auth()
        await raw.subscribe(trades=["*"])
        symbols: set[str] = set()
        while not {"BTC/USD", "ETH/USD"} <= symbols:
            symbols.update(m["S"] for m in await raw.recv())


async def test_news_pace_can_change_while_running_and_json_sessions_get_rfc3339(
    emu: AlpacaEmulator,
) -> None:
    emu.news_per_minute = 0
    raw = await Raw.open(emu, "/v1beta1/news", use_msgpack=False)
    await raw.auth()
    await raw.subscribe(news=["*"])
    assert emu.counters(KEY, "news").messages_sent == 0
    emu.rate = 100  # news has its own pace, not the market-data rate...
    emu.news_per_minute = 6000  # ...which can change while running
    story = (await raw.recv())[0]
    assert isinstance(raw.frame, str)
    assert story["T"] == "n"
    assert story["created_at"].endswith("Z")
    assert story["symbols"][0] in {"AAPL", "MSFT", "SPY", "TSLA", "NVDA", "AMZN", "GOOGL",
                                   "META", "QQQ"}


# ----------------------------------------------------------------------------- faults


async def test_reject_auth_times_and_key_filter(emu: AlpacaEmulator) -> None:
    emu.reject_auth(406, times=1, key_id=KEY)
    other = await Raw.open(emu)
    assert await other.auth(key="PK2") == [{"T": "success", "msg": "authenticated"}]
    first = await Raw.open(emu)
    assert await first.auth() == error(406, "connection limit exceeded")
    second = await Raw.open(emu)
    assert await second.auth() == [{"T": "success", "msg": "authenticated"}]


async def test_reject_auth_until_reset(emu: AlpacaEmulator) -> None:
    emu.reject_auth(402)
    for _ in range(2):
        raw = await Raw.open(emu)
        assert await raw.auth() == error(402, "auth failed")
    emu.reset_faults()
    raw = await Raw.open(emu)
    assert await raw.auth() == [{"T": "success", "msg": "authenticated"}]
    assert emu.counters(KEY, IEX).auth_attempts == 3


async def test_refuse_handshake_429(emu: AlpacaEmulator) -> None:
    emu.refuse_handshake(429, times=1)
    with pytest.raises(InvalidStatus) as info:
        await Raw.open(emu)
    assert info.value.response.status_code == 429
    raw = await Raw.open(emu)
    assert await raw.auth() == [{"T": "success", "msg": "authenticated"}]
    stats = emu.stats()
    assert stats.refused_handshakes == 1
    assert stats.handshakes == 2


async def test_accept_handshakes_ends_the_refusals_and_keeps_other_faults(
    emu: AlpacaEmulator,
) -> None:
    emu.refuse_handshake(503, times=1_000, path=IEX)
    emu.reject_auth(402, times=1)
    with pytest.raises(InvalidStatus):
        await Raw.open(emu)
    emu.accept_handshakes(IEX)
    raw = await Raw.open(emu)
    assert await raw.auth() == error(402, "auth failed")  # the other fault is still there
    assert emu.stats().refused_handshakes == 1


async def test_unknown_path_is_refused_with_404(emu: AlpacaEmulator) -> None:
    with pytest.raises(InvalidStatus) as info:
        await connect(emu.ws_url + "/v2/unknown")
    assert info.value.response.status_code == 404


@pytest.mark.parametrize("code", [1000, 1011])
async def test_drop_connections_with_close_code(emu: AlpacaEmulator, code: int) -> None:
    raw = await Raw.open(emu)
    await raw.auth()
    assert emu.drop_connections(IEX, key_id=KEY, code=code) == 1
    closed = await raw.expect_closed()
    assert closed.rcvd is not None
    assert closed.rcvd.code == code
    await emu.until(lambda: emu.counters(KEY, IEX).slots_held == 0)


async def test_mute_stops_data_but_not_control(emu: AlpacaEmulator) -> None:
    raw = await Raw.open(emu)
    await raw.auth()
    await raw.subscribe(quotes=["AAPL"])
    emu.mute(IEX)
    assert emu.publish(IEX, [quote("AAPL", 1.0)]) == 0
    ack = await raw.subscribe(quotes=["MSFT"])  # control replies still flow
    assert ack[0]["T"] == "subscription"
    emu.mute(IEX, muted=False)
    emu.publish(IEX, [quote("AAPL", 2.0)])
    assert [m["bp"] for m in await raw.recv()] == [2.0]


async def test_stop_pongs(emu: AlpacaEmulator) -> None:
    raw = await Raw.open(emu)
    await raw.auth()
    emu.stop_pongs(IEX)
    waiter = await raw.ws.ping()
    done, _ = await asyncio.wait([waiter], timeout=0.3)
    assert not done
    emu.stop_pongs(IEX, stopped=False)
    await asyncio.wait_for(await raw.ws.ping(), 5)


async def test_slow_client_407_then_close(emu: AlpacaEmulator) -> None:
    raw = await Raw.open(emu)
    await raw.auth()
    assert emu.slow_client(IEX) == 1
    assert await raw.recv() == error(407, "slow client")
    await raw.expect_closed()
    assert emu.counters(KEY, IEX).rejections == {407: 1}


async def test_send_raw_injects_exact_frames(emu: AlpacaEmulator) -> None:
    raw = await Raw.open(emu)
    await raw.auth()
    assert emu.send_raw(IEX, b"\xc1garbage") == 1
    assert await asyncio.wait_for(raw.ws.recv(), 5) == b"\xc1garbage"
    emu.send_raw(IEX, "text frame", key_id=KEY)
    assert await asyncio.wait_for(raw.ws.recv(), 5) == "text frame"


async def test_one_bad_connection_never_affects_another(emu: AlpacaEmulator) -> None:
    good = await Raw.open(emu)
    await good.auth()
    await good.subscribe(quotes=["AAPL"])
    bad = await Raw.open(emu)
    for frame in (b"\x00" * 1000, "{", msgpack.packb({"action": "auth", "key": 1})):
        await bad.ws.send(frame)
        assert (await bad.recv())[0]["code"] == 400
    bad.ws.transport.abort()
    emu.publish(IEX, [quote("AAPL")])
    assert (await good.recv())[0]["S"] == "AAPL"


# ----------------------------------------------------------------------------- trading stream


async def trading_open(emu: AlpacaEmulator) -> ClientConnection:
    return await connect(emu.trading_stream_url, ping_interval=None, close_timeout=1)


async def trading_recv(ws: ClientConnection) -> tuple[Any, bool]:
    frame = await asyncio.wait_for(ws.recv(), 5)
    return json.loads(frame), isinstance(frame, bytes)


def trading_auth(key: str = KEY, secret: str = SECRET) -> str:
    return json.dumps({"action": "authenticate", "data": {"key_id": key, "secret_key": secret}})


LISTEN = json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}})


async def test_trading_stream_sequence_binary_json(emu: AlpacaEmulator) -> None:
    ws = await trading_open(emu)
    await ws.send(LISTEN)
    assert await trading_recv(ws) == (
        {"stream": "authorization", "data": {"status": "unauthorized", "action": "listen"}},
        True,
    )
    await ws.send(trading_auth())
    assert await trading_recv(ws) == (
        {"stream": "authorization", "data": {"action": "authenticate", "status": "authorized"}},
        True,
    )
    await ws.send(LISTEN)
    assert await trading_recv(ws) == (
        {"stream": "listening", "data": {"streams": ["trade_updates"]}}, True
    )
    assert emu.push_trade_update(KEY, {"event": "custom", "x": 1}) == 1
    assert await trading_recv(ws) == (
        {"stream": "trade_updates", "data": {"event": "custom", "x": 1}}, True
    )
    await ws.send(json.dumps({"action": "listen", "data": {"streams": []}}))
    assert await trading_recv(ws) == ({"stream": "listening", "data": {"streams": []}}, True)
    assert emu.push_trade_update(KEY, {"event": "lost"}) == 0


async def test_trading_stream_text_frames_knob() -> None:
    async with AlpacaEmulator(trading_text_frames=True) as emu:
        ws = await trading_open(emu)
        await ws.send(trading_auth())
        assert (await trading_recv(ws))[1] is False


async def test_trading_stream_bad_credentials() -> None:
    async with AlpacaEmulator() as emu:
        emu.add_account(KEY, SECRET)
        ws = await trading_open(emu)
        await ws.send(trading_auth(secret="wrong"))
        assert await trading_recv(ws) == ({
            "stream": "authorization",
            "data": {"action": "authenticate", "status": "unauthorized",
                     "message": "access key verification failed"},
        }, True)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert emu.counters(KEY, "/stream").rejections == {402: 1}


async def test_trading_stream_has_its_own_connection_limit(emu: AlpacaEmulator) -> None:
    data = await Raw.open(emu)
    await data.auth()
    first = await trading_open(emu)
    await first.send(trading_auth())
    assert (await trading_recv(first))[0]["data"]["status"] == "authorized"
    second = await trading_open(emu)
    await second.send(trading_auth())
    reply, _ = await trading_recv(second)
    assert reply["data"]["status"] == "unauthorized"
    assert reply["data"]["message"] == "connection limit exceeded"
    assert emu.counters(KEY, "/stream").rejections == {406: 1}


# --------------------------------------------------------------------- observation, lifecycle


async def test_wait_until_timeout_names_the_condition(emu: AlpacaEmulator) -> None:
    with pytest.raises(TimeoutError, match="never connected"):
        await emu.until(lambda: False, 0.05, message="never connected")
    with pytest.raises(RuntimeError, match=r"await emu\.until"):
        emu.wait_until(lambda: True)


def test_sync_mode_wait_until_and_clean_stop() -> None:
    before = {t.ident for t in threading.enumerate()}
    emu = AlpacaEmulator().start()
    port, rest_port = emu.port, emu.rest_port

    async def client() -> None:
        raw = await Raw.open(emu)
        await raw.auth()
        await raw.subscribe(quotes=["AAPL"])
        emu.publish(IEX, [quote("AAPL")])  # from another thread: marshalled onto the loop
        assert (await raw.recv())[0]["S"] == "AAPL"
        await raw.close()

    asyncio.run(client())
    emu.wait_until(lambda: emu.counters(KEY, IEX).close_frames_received == 1, 5)
    with pytest.raises(TimeoutError, match="emulator condition not met"):
        emu.wait_until(lambda: False, 0.05)
    emu.stop()
    emu.stop()  # idempotent
    assert {t.ident for t in threading.enumerate()} <= before
    for p in (port, rest_port):
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", p), timeout=1):
            pass
    with pytest.raises(RuntimeError, match="not running"):
        _ = emu.ws_url


async def test_stop_closes_open_sessions() -> None:
    emu = await AlpacaEmulator().astart()
    raw = await Raw.open(emu)
    await raw.auth()
    await emu.astop()
    closed = await raw.expect_closed()
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1001
    assert emu.stats().open_connections == 0


def test_urls_and_validation() -> None:
    with AlpacaEmulator() as emu:
        assert emu.ws_url == f"ws://127.0.0.1:{emu.port}"
        assert emu.trading_stream_url == emu.ws_url + "/stream"
        assert emu.api_url == f"http://127.0.0.1:{emu.rest_port}"
        assert emu.data_url("crypto") == emu.ws_url + "/v1beta3/crypto/us"
        assert emu.data_url("/v1beta1/opra") == emu.ws_url + "/v1beta1/opra"
        with pytest.raises(ValueError, match="valid paths"):
            emu.data_url("/v2/nope")
        with pytest.raises(ValueError, match="unknown feed"):
            emu.add_account("PK", "s", feeds={"bogus"})
    with pytest.raises(ValueError, match="connection_limit"):
        AlpacaEmulator(connection_limit=0)


def test_port_in_use_fails_cleanly() -> None:
    with AlpacaEmulator() as emu:
        before = threading.active_count()
        clash = AlpacaEmulator(port=emu.port)
        with pytest.raises(OSError):
            clash.start()
        assert threading.active_count() == before
        with pytest.raises(RuntimeError, match="not running"):
            _ = clash.port
