"""alpaca_di.protocol.channels: names, symbol rules and endpoint paths."""

from __future__ import annotations

import pytest
from alpaca.data.enums import CryptoFeed, DataFeed, OptionsFeed

from alpaca_di.protocol.channels import (
    CHANNEL_BY_TYPE,
    CHANNELS,
    StreamKind,
    data_path,
    validate_channel,
    validate_symbol,
    wire_channel,
)


def test_stream_kinds_are_plain_strings() -> None:
    assert [k.value for k in StreamKind] == ["stock", "crypto", "option", "news", "trading"]
    assert StreamKind("crypto") is StreamKind.CRYPTO
    assert isinstance(StreamKind.STOCK, str)
    assert StreamKind.STOCK.value == "stock"


def test_channels_per_kind() -> None:
    assert CHANNELS[StreamKind.STOCK] == {
        "trades",
        "quotes",
        "bars",
        "updated_bars",
        "daily_bars",
        "statuses",
        "lulds",
        "corrections",
        "cancel_errors",
    }
    assert CHANNELS[StreamKind.CRYPTO] == {
        "trades",
        "quotes",
        "bars",
        "updated_bars",
        "daily_bars",
        "orderbooks",
    }
    assert CHANNELS[StreamKind.OPTION] == {"trades", "quotes"}
    assert CHANNELS[StreamKind.NEWS] == {"news"}
    assert CHANNELS[StreamKind.TRADING] == {"trade_updates"}
    assert CHANNELS["stock"] is CHANNELS[StreamKind.STOCK]  # type: ignore[index]


def test_channel_by_type_covers_every_data_channel() -> None:
    assert CHANNEL_BY_TYPE == {
        "t": "trades",
        "q": "quotes",
        "b": "bars",
        "u": "updated_bars",
        "d": "daily_bars",
        "s": "statuses",
        "l": "lulds",
        "c": "corrections",
        "x": "cancel_errors",
        "o": "orderbooks",
        "n": "news",
    }
    data_channels = set().union(*CHANNELS.values()) - {"trade_updates"}
    assert set(CHANNEL_BY_TYPE.values()) == data_channels


@pytest.mark.parametrize(
    ("channel", "wire"),
    [
        ("trades", "trades"),
        ("quotes", "quotes"),
        ("bars", "bars"),
        ("updated_bars", "updatedBars"),
        ("daily_bars", "dailyBars"),
        ("statuses", "statuses"),
        ("lulds", "lulds"),
        ("corrections", "trades"),
        ("cancel_errors", "trades"),
        ("orderbooks", "orderbooks"),
        ("news", "news"),
        ("trade_updates", "trade_updates"),
        # wire names are accepted: the function is idempotent
        ("updatedBars", "updatedBars"),
        ("dailyBars", "dailyBars"),
        ("cancelErrors", "trades"),
    ],
)
def test_wire_channel(channel: str, wire: str) -> None:
    assert wire_channel(channel) == wire
    assert wire_channel(wire_channel(channel)) == wire


def test_wire_channel_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match=r"unknown channel 'quote'.*quotes"):
        wire_channel("quote")


def test_validate_channel_accepts_every_listed_channel() -> None:
    for kind, channels in CHANNELS.items():
        for channel in channels:
            validate_channel(kind, channel)
            validate_channel(kind.value, channel)


def test_validate_channel_names_channel_kind_and_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown channel") as info:
        validate_channel(StreamKind.OPTION, "bars")
    text = str(info.value)
    assert "'bars'" in text
    assert "option" in text
    assert "valid channels: quotes, trades" in text


def test_validate_channel_hints() -> None:
    with pytest.raises(ValueError, match="did you mean 'updated_bars'"):
        validate_channel(StreamKind.STOCK, "updatedBars")
    with pytest.raises(ValueError, match="belongs to the crypto stream"):
        validate_channel(StreamKind.STOCK, "orderbooks")


def test_validate_channel_type_and_kind_errors() -> None:
    with pytest.raises(TypeError, match="int"):
        validate_channel(StreamKind.STOCK, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown stream kind 'forex'.*stock, crypto"):
        validate_channel("forex", "quotes")


GOOD = {
    StreamKind.STOCK: ["AAPL", "A", "BRK.B", "BF.B", "GOOGL", "FAKEPACA", "SPY", "AAC.U",
                       "PSA.PRH", "T", "ABC-W", "X1", "*"],
    StreamKind.CRYPTO: ["BTC/USD", "ETH/USD", "ETH/BTC", "USDT/USD", "1INCH/USD", "SHIB/USDC",
                        "*"],
    StreamKind.OPTION: ["AAPL250117C00150000", "SPY241220P00450000", "SPXW240621C05000000",
                        "A250117C00010000", "BRKB1250117P00300000", "*"],
    StreamKind.NEWS: ["AAPL", "TSLA", "BTCUSD", "BRK.B", "*"],
}  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "symbol"), [(kind, symbol) for kind, symbols in GOOD.items() for symbol in symbols]
)
def test_valid_symbols_are_returned(kind: StreamKind, symbol: str) -> None:
    assert validate_symbol(kind, symbol) == symbol
    assert validate_symbol(kind.value, symbol) == symbol


BAD = [
    # (kind, symbol, text the message must contain)
    (StreamKind.STOCK, "aapl", "use 'AAPL' (symbol.upper())"),
    (StreamKind.STOCK, "Brk.b", "use 'BRK.B'"),
    (StreamKind.STOCK, " AAPL", "remove the surrounding whitespace: 'AAPL'"),
    (StreamKind.STOCK, "AAPL\n", "whitespace"),
    (StreamKind.STOCK, "BTC/USD", "crypto stream"),
    (StreamKind.STOCK, "BRK/B", "share classes use a dot: 'BRK.B'"),
    (StreamKind.STOCK, "BRK..B", "upper-case ticker"),
    (StreamKind.STOCK, "BRK.", "upper-case ticker"),
    (StreamKind.STOCK, ".B", "upper-case ticker"),
    (StreamKind.STOCK, "1ABC", "upper-case ticker"),
    (StreamKind.STOCK, "AB CD", "upper-case ticker"),
    (StreamKind.STOCK, "ABCDEFGHIJKLMNOPQ", "at most 16 characters"),
    (StreamKind.STOCK, "**", "or '*'"),
    (StreamKind.STOCK, "AAPL*", "e.g. 'AAPL', 'BRK.B'"),
    (StreamKind.CRYPTO, "BTCUSD", "crypto pairs need a slash: 'BTC/USD'"),
    (StreamKind.CRYPTO, "BTCUSDT", "'BTC/USDT'"),
    (StreamKind.CRYPTO, "ETHBTC", "'ETH/BTC'"),
    (StreamKind.CRYPTO, "BTC-USD", "use a slash: 'BTC/USD'"),
    (StreamKind.CRYPTO, "btc/usd", "use 'BTC/USD'"),
    (StreamKind.CRYPTO, "BTC/", "BASE/QUOTE"),
    (StreamKind.CRYPTO, "/USD", "BASE/QUOTE"),
    (StreamKind.CRYPTO, "BTC/USD/EUR", "BASE/QUOTE"),
    (StreamKind.CRYPTO, "AAPL", "BASE/QUOTE"),
    (StreamKind.OPTION, "AAPL", "stock stream"),
    (StreamKind.OPTION, "AAPL  250117C00150000", "remove the OCC padding spaces"),
    (StreamKind.OPTION, "O:AAPL250117C00150000", "drop the 'O:' prefix"),
    (StreamKind.OPTION, "aapl250117c00150000", "use 'AAPL250117C00150000'"),
    (StreamKind.OPTION, "AAPL250117X00150000", "OCC contract symbol"),
    (StreamKind.OPTION, "AAPL251317C00150000", "OCC"),  # month 13
    (StreamKind.OPTION, "AAPL250100C00150000", "OCC"),  # day 0
    (StreamKind.OPTION, "AAPL250117C0015000", "OCC"),  # 7-digit strike
    (StreamKind.OPTION, "ABCDEFG250117C00150000", "OCC"),  # 7-letter root
    (StreamKind.NEWS, "aapl", "use 'AAPL'"),
    (StreamKind.NEWS, "BTC/USD", "upper-case ticker"),
]


@pytest.mark.parametrize(("kind", "symbol", "expected"), BAD)
def test_invalid_symbols_name_the_symbol_and_the_form(
    kind: StreamKind, symbol: str, expected: str
) -> None:
    with pytest.raises(ValueError, match="invalid") as info:
        validate_symbol(kind, symbol)
    text = str(info.value)
    assert repr(symbol) in text
    assert kind.value in text
    assert "expected" in text
    assert expected in text


@pytest.mark.parametrize("kind", [k for k in StreamKind if k is not StreamKind.TRADING])
def test_empty_symbol(kind: StreamKind) -> None:
    with pytest.raises(ValueError, match=f"empty {kind.value} symbol"):
        validate_symbol(kind, "")


@pytest.mark.parametrize("value", [None, 1, b"AAPL", ["AAPL"], 1.5])
def test_non_str_symbol_is_a_type_error(value: object) -> None:
    with pytest.raises(TypeError, match=type(value).__name__):
        validate_symbol(StreamKind.STOCK, value)  # type: ignore[arg-type]


def test_trading_stream_takes_no_symbols() -> None:
    for symbol in ("*", "AAPL"):
        with pytest.raises(ValueError, match="trade_updates=True"):
            validate_symbol(StreamKind.TRADING, symbol)


def test_huge_symbol_message_stays_short() -> None:
    with pytest.raises(ValueError, match="far too long") as info:
        validate_symbol(StreamKind.STOCK, "a" * 1_000_000)
    assert len(str(info.value)) < 300


@pytest.mark.parametrize(
    ("kind", "feed", "path"),
    [
        (StreamKind.STOCK, None, "/v2/iex"),
        (StreamKind.STOCK, "iex", "/v2/iex"),
        (StreamKind.STOCK, "sip", "/v2/sip"),
        (StreamKind.STOCK, "delayed_sip", "/v2/delayed_sip"),
        (StreamKind.STOCK, "test", "/v2/test"),
        (StreamKind.STOCK, "boats", "/v2/boats"),
        (StreamKind.STOCK, "overnight", "/v2/overnight"),
        (StreamKind.STOCK, "SIP", "/v2/sip"),
        (StreamKind.STOCK, DataFeed.SIP, "/v2/sip"),
        (StreamKind.CRYPTO, None, "/v1beta3/crypto/us"),
        (StreamKind.CRYPTO, "us", "/v1beta3/crypto/us"),
        (StreamKind.CRYPTO, CryptoFeed.US, "/v1beta3/crypto/us"),
        (StreamKind.OPTION, None, "/v1beta1/indicative"),
        (StreamKind.OPTION, "opra", "/v1beta1/opra"),
        (StreamKind.OPTION, OptionsFeed.INDICATIVE, "/v1beta1/indicative"),
        (StreamKind.NEWS, None, "/v1beta1/news"),
        (StreamKind.TRADING, None, "/stream"),
        ("stock", "sip", "/v2/sip"),
    ],
)
def test_data_path(kind: StreamKind, feed: str | None, path: str) -> None:
    assert data_path(kind, feed) == path


@pytest.mark.parametrize(
    ("kind", "feed", "expected"),
    [
        (StreamKind.STOCK, "otc", "valid feeds: iex, sip, delayed_sip, test, boats, overnight"),
        (StreamKind.STOCK, "opra", "unknown stock feed 'opra'"),
        (StreamKind.CRYPTO, "iex", "valid feeds: us"),
        (StreamKind.OPTION, "sip", "valid feeds: indicative, opra"),
        (StreamKind.NEWS, "iex", "has no feeds"),
        (StreamKind.TRADING, "sip", "has no feeds"),
    ],
)
def test_data_path_rejects_unknown_feeds(kind: StreamKind, feed: str, expected: str) -> None:
    with pytest.raises(ValueError, match="feed") as info:
        data_path(kind, feed)
    assert expected in str(info.value)


def test_data_path_type_errors() -> None:
    with pytest.raises(TypeError, match="int"):
        data_path(StreamKind.STOCK, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown stream kind"):
        data_path("forex")
