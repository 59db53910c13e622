"""Alpaca's streaming protocols without I/O: bytes in, events out.

Everything here is pure and synchronous, so it is tested without sockets; the
asyncio transport is a thin shell around it::

    from alpaca_di.protocol import DataBatch, StreamKind, SubscriptionState, protocol_for, parse

    protocol = protocol_for(StreamKind.STOCK)
    state = SubscriptionState()
    state.add("quotes", ["AAPL"])
    subscribe, _ = state.take_delta()
    frame = protocol.subscribe_message(subscribe)          # bytes to send
    for event in protocol.receive(incoming):               # bytes received
        if isinstance(event, DataBatch):
            for channel, symbol, raw in event.messages:
                quote = parse(channel, symbol, raw)

The typed fast form (:mod:`alpaca_di.protocol.structs`: ``Quote``, ``Trade``...,
msgspec structs decoded straight from the frame) is here too::

    protocol.forms = frozenset({"struct"})
    for event in protocol.receive(incoming):
        if isinstance(event, DataBatch):
            for quote in event.structs:
                print(quote.symbol, quote.bid_price)

Imports only the standard library, msgpack, alpaca-py's models, msgspec and
:mod:`alpaca_di.errors`; the models (and with them alpaca-py and pandas) only
when :func:`parse` is first used, msgspec when a struct is.
"""

from typing import TYPE_CHECKING

from alpaca_di._lazy import lazy_exports
from alpaca_di.protocol.channels import (
    CHANNEL_BY_TYPE,
    CHANNELS,
    StreamKind,
    carrier_channel,
    data_path,
    validate_channel,
    validate_symbol,
    wire_channel,
)
from alpaca_di.protocol.codec import DataStreamProtocol, TradingStreamProtocol, protocol_for
from alpaca_di.protocol.events import (
    Authenticated,
    DataBatch,
    Event,
    Malformed,
    ServerErrorEvent,
    SubscriptionAck,
    Welcome,
)
from alpaca_di.protocol.subscriptions import SubscriptionState

_STRUCTS = (
    "Bar",
    "DailyBar",
    "Luld",
    "MarketStruct",
    "News",
    "Orderbook",
    "OrderbookLevel",
    "Quote",
    "Trade",
    "TradeCancel",
    "TradeCorrection",
    "TradingStatus",
    "UpdatedBar",
)

__all__ = [
    "CHANNELS",
    "CHANNEL_BY_TYPE",
    "Authenticated",
    "Bar",
    "DailyBar",
    "DataBatch",
    "DataStreamProtocol",
    "Event",
    "Luld",
    "Malformed",
    "MarketStruct",
    "News",
    "Orderbook",
    "OrderbookLevel",
    "Quote",
    "ServerErrorEvent",
    "StreamKind",
    "SubscriptionAck",
    "SubscriptionState",
    "Trade",
    "TradeCancel",
    "TradeCorrection",
    "TradingStatus",
    "TradingStreamProtocol",
    "UpdatedBar",
    "Welcome",
    "carrier_channel",
    "data_path",
    "parse",
    "protocol_for",
    "validate_channel",
    "validate_symbol",
    "wire_channel",
]

if TYPE_CHECKING:
    from alpaca_di.protocol.models import parse
    from alpaca_di.protocol.structs import (
        Bar,
        DailyBar,
        Luld,
        MarketStruct,
        News,
        Orderbook,
        OrderbookLevel,
        Quote,
        Trade,
        TradeCancel,
        TradeCorrection,
        TradingStatus,
        UpdatedBar,
    )

__getattr__, __dir__ = lazy_exports(
    globals(),
    {
        "parse": "alpaca_di.protocol.models",
        **dict.fromkeys(_STRUCTS, "alpaca_di.protocol.structs"),
    },
)
