"""Stream kinds, channel names, symbol rules and endpoint paths.

Users name channels the Python way (``updated_bars``); the wire uses Alpaca's
names (``updatedBars``). This module holds both vocabularies and the checks that
turn a bad symbol or channel into a clear ``ValueError`` at the call site::

    from alpaca_di.protocol.channels import StreamKind, validate_symbol, wire_channel

    validate_symbol(StreamKind.CRYPTO, "BTC/USD")   # -> "BTC/USD"
    wire_channel("updated_bars")                     # -> "updatedBars"
"""

from __future__ import annotations

import re
from enum import Enum

__all__ = [
    "CHANNELS",
    "CHANNEL_BY_TYPE",
    "StreamKind",
    "carrier_channel",
    "data_path",
    "validate_channel",
    "validate_symbol",
    "wire_channel",
]


class StreamKind(str, Enum):
    """The five Alpaca streams; each is its own endpoint and its own connection.

    A plain string is accepted wherever a kind is expected::

        StreamKind("crypto") is StreamKind.CRYPTO   # True
    """

    STOCK = "stock"
    CRYPTO = "crypto"
    OPTION = "option"
    NEWS = "news"
    TRADING = "trading"


CHANNELS: dict[StreamKind, frozenset[str]] = {
    StreamKind.STOCK: frozenset(
        {
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
    ),
    StreamKind.CRYPTO: frozenset(
        {"trades", "quotes", "bars", "updated_bars", "daily_bars", "orderbooks"}
    ),
    StreamKind.OPTION: frozenset({"trades", "quotes"}),
    StreamKind.NEWS: frozenset({"news"}),
    StreamKind.TRADING: frozenset({"trade_updates"}),
}
"""Python channel names valid on each stream kind."""

CHANNEL_BY_TYPE: dict[str, str] = {
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
"""The ``T`` code of a server data message -> the Python channel it belongs to."""

_ALL_CHANNELS: frozenset[str] = frozenset().union(*CHANNELS.values())

# The server subscribes corrections and cancel errors implicitly with trades.
_CARRIED_BY: dict[str, str] = {"corrections": "trades", "cancel_errors": "trades"}

# Python name -> wire subscribe key, where they differ.
_WIRE_BY_CHANNEL: dict[str, str] = {
    "updated_bars": "updatedBars",
    "daily_bars": "dailyBars",
    **_CARRIED_BY,
}

# Alpaca's camelCase names -> Python names (used for hints and for server acks).
_CHANNEL_BY_WIRE: dict[str, str] = {
    "updatedBars": "updated_bars",
    "dailyBars": "daily_bars",
    "cancelErrors": "cancel_errors",
}

_FEEDS: dict[StreamKind, tuple[str, ...]] = {
    StreamKind.STOCK: ("iex", "sip", "delayed_sip", "test", "boats", "overnight"),
    StreamKind.CRYPTO: ("us", "us-1", "eu-1"),  # the locations AlpacaSettings.crypto_feed allows
    StreamKind.OPTION: ("indicative", "opra"),
}

_STOCK_RE = re.compile(r"[A-Z][A-Z0-9]*(?:[.\-][A-Z0-9]+)*")
_CRYPTO_RE = re.compile(r"[A-Z0-9]{1,15}/[A-Z0-9]{1,10}")
_OPTION_RE = re.compile(r"[A-Z][A-Z0-9]{0,5}(\d{2})(\d{2})(\d{2})[CP]\d{8}")
_MAX_STOCK_LEN = 16
_MAX_HINTED_LEN = 40
_CRYPTO_QUOTES = ("USDT", "USDC", "USD", "BTC", "ETH")

_FORMS: dict[StreamKind, tuple[str, str]] = {
    StreamKind.STOCK: ("an upper-case ticker (share classes with a dot)", "'AAPL', 'BRK.B'"),
    StreamKind.CRYPTO: ("an upper-case BASE/QUOTE pair", "'BTC/USD', 'ETH/USDT'"),
    StreamKind.OPTION: (
        "an OCC contract symbol ROOT+YYMMDD+C/P+strike*1000 (8 digits)",
        "'AAPL250117C00150000'",
    ),
    StreamKind.NEWS: ("an upper-case ticker", "'AAPL', 'BTCUSD'"),
}


def _kind(kind: StreamKind | str) -> StreamKind:
    if isinstance(kind, StreamKind):
        return kind
    try:
        return StreamKind(kind)
    except ValueError:
        valid = ", ".join(k.value for k in StreamKind)
        raise ValueError(f"unknown stream kind {kind!r}; valid kinds: {valid}") from None


def _short(value: str, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 4]}...'"


def carrier_channel(channel: str) -> str:
    """The channel whose subscription carries ``channel`` (Python names).

    Corrections and cancel errors ride on trades; every other channel carries itself::

        carrier_channel("corrections")  # -> "trades"
        carrier_channel("quotes")       # -> "quotes"
    """
    return _CARRIED_BY.get(channel, channel)


def wire_channel(channel: str) -> str:
    """Return the key Alpaca expects in subscribe messages for ``channel``.

    ``corrections`` and ``cancel_errors`` have no key of their own: the server sends
    them to whoever subscribes ``trades``. Wire names are accepted too and map to
    themselves, so the function is idempotent::

        wire_channel("daily_bars")     # -> "dailyBars"
        wire_channel("cancel_errors")  # -> "trades"
        wire_channel("dailyBars")      # -> "dailyBars"
    """
    if channel in _ALL_CHANNELS:
        return _WIRE_BY_CHANNEL.get(channel, channel)
    python = _CHANNEL_BY_WIRE.get(channel) if isinstance(channel, str) else None
    if python is not None:
        return _WIRE_BY_CHANNEL.get(python, python)
    valid = ", ".join(sorted(_ALL_CHANNELS))
    raise ValueError(f"unknown channel {channel!r}; valid channels: {valid}")


def validate_channel(kind: StreamKind | str, channel: str) -> None:
    """Raise ``ValueError`` unless ``channel`` is a Python channel name of ``kind``.

    ::

        validate_channel(StreamKind.STOCK, "quotes")       # fine
        validate_channel(StreamKind.STOCK, "orderbooks")   # ValueError: ... crypto ...
    """
    kind = _kind(kind)
    if not isinstance(channel, str):
        raise TypeError(f"channel must be a str, not {type(channel).__name__}")
    valid = CHANNELS[kind]
    if channel in valid:
        return
    hint = ""
    python = _CHANNEL_BY_WIRE.get(channel)
    if python is not None and python in valid:
        hint = f" (did you mean {python!r}?)"
    elif channel in _ALL_CHANNELS:
        owners = ", ".join(k.value for k, chans in CHANNELS.items() if channel in chans)
        hint = f" ({channel!r} belongs to the {owners} stream)"
    listed = ", ".join(sorted(valid))
    raise ValueError(
        f"unknown channel {_short(channel)} for the {kind.value} stream{hint}; "
        f"valid channels: {listed}"
    )


def _symbol_hint(kind: StreamKind, symbol: str) -> str:
    if len(symbol) > _MAX_HINTED_LEN:
        return f"; {len(symbol)} characters is far too long for a symbol"
    stripped = symbol.strip()
    if stripped != symbol and stripped:
        return f"; remove the surrounding whitespace: {stripped!r} (symbol.strip())"
    if symbol != symbol.upper():
        upper = symbol.upper()
        if _matches(kind, upper):
            return f"; symbols are upper-case: use {upper!r} (symbol.upper())"
        return "; symbols are upper-case (symbol.upper())"
    if kind is StreamKind.CRYPTO:
        for sep in ("-", "_"):
            if sep in symbol:
                return f"; use a slash: {symbol.replace(sep, '/', 1)!r}"
        for quote in _CRYPTO_QUOTES:
            if symbol.endswith(quote) and len(symbol) > len(quote):
                return f"; crypto pairs need a slash: {symbol[: -len(quote)] + '/' + quote!r}"
    if kind is StreamKind.STOCK and "/" in symbol:
        if _CRYPTO_RE.fullmatch(symbol) and len(symbol.rpartition("/")[2]) >= 3:
            return "; this looks like a crypto pair: subscribe it on the crypto stream"
        return f"; share classes use a dot: {symbol.replace('/', '.')!r}"
    if kind is StreamKind.OPTION:
        if " " in symbol:
            return f"; remove the OCC padding spaces: {symbol.replace(' ', '')!r}"
        if symbol.startswith("O:"):
            return f"; drop the 'O:' prefix: {symbol[2:]!r}"
        if _STOCK_RE.fullmatch(symbol):
            return "; this is a ticker: stock symbols belong on the stock stream"
    if kind in (StreamKind.STOCK, StreamKind.NEWS) and len(symbol) > _MAX_STOCK_LEN:
        return f"; at most {_MAX_STOCK_LEN} characters"
    return ""


def _matches(kind: StreamKind, symbol: str) -> bool:
    if kind is StreamKind.CRYPTO:
        return _CRYPTO_RE.fullmatch(symbol) is not None
    if kind is StreamKind.OPTION:
        match = _OPTION_RE.fullmatch(symbol)
        if match is None:
            return False
        month, day = int(match.group(2)), int(match.group(3))
        return 1 <= month <= 12 and 1 <= day <= 31
    return len(symbol) <= _MAX_STOCK_LEN and _STOCK_RE.fullmatch(symbol) is not None


def validate_symbol(kind: StreamKind | str, symbol: str) -> str:
    """Return ``symbol`` if it is valid for ``kind``, else raise with a helpful message.

    ``"*"`` (every symbol) is valid on every data stream. The trading stream takes
    no symbols at all. Non-strings raise ``TypeError``; malformed strings raise
    ``ValueError`` naming the symbol, the expected form and, when it can guess,
    the fix::

        validate_symbol("stock", "BRK.B")                 # -> "BRK.B"
        validate_symbol("option", "AAPL250117C00150000")  # -> "AAPL250117C00150000"
        validate_symbol("crypto", "BTCUSD")
        # ValueError: invalid crypto symbol 'BTCUSD': expected an upper-case BASE/QUOTE
        # pair (e.g. 'BTC/USD', 'ETH/USDT') or '*'; crypto pairs need a slash: 'BTC/USD'
    """
    kind = _kind(kind)
    if not isinstance(symbol, str):
        raise TypeError(f"a {kind.value} symbol must be a str, not {type(symbol).__name__}")
    if kind is StreamKind.TRADING:
        raise ValueError(
            f"the trading stream takes no symbols (got {_short(symbol)}); "
            "subscribe with trade_updates=True"
        )
    if symbol == "*":
        return symbol
    if not symbol:
        raise ValueError(f"empty {kind.value} symbol; pass a symbol such as {_FORMS[kind][1]}")
    if _matches(kind, symbol):
        return symbol
    form, example = _FORMS[kind]
    hint = _symbol_hint(kind, symbol)
    raise ValueError(
        f"invalid {kind.value} symbol {_short(symbol)}: expected {form} "
        f"(e.g. {example}) or '*'{hint}"
    )


def data_path(kind: StreamKind | str, feed: str | None = None) -> str:
    """Return the URL path of a stream for ``kind`` and ``feed``.

    Feeds: stock ``iex`` (default), ``sip``, ``delayed_sip``, ``test``, ``boats``,
    ``overnight``; crypto ``us`` (default); option ``indicative`` (default) or
    ``opra``. News and trading take no feed. alpaca-py's feed enums are accepted::

        data_path("stock", "sip")    # -> "/v2/sip"
        data_path("crypto")          # -> "/v1beta3/crypto/us"
        data_path("trading")         # -> "/stream"
    """
    kind = _kind(kind)
    name: object = feed.value if isinstance(feed, Enum) else feed
    if name is not None and not isinstance(name, str):
        raise TypeError(f"feed must be a str or None, not {type(name).__name__}")
    valid = _FEEDS.get(kind)
    if valid is None:
        if name is not None:
            raise ValueError(f"the {kind.value} stream has no feeds (got feed={name!r})")
        return "/v1beta1/news" if kind is StreamKind.NEWS else "/stream"
    chosen = valid[0] if name is None else name.lower()
    if chosen not in valid:
        raise ValueError(f"unknown {kind.value} feed {name!r}; valid feeds: {', '.join(valid)}")
    if kind is StreamKind.STOCK:
        return f"/v2/{chosen}"
    if kind is StreamKind.CRYPTO:
        return f"/v1beta3/crypto/{chosen}"
    return f"/v1beta1/{chosen}"
