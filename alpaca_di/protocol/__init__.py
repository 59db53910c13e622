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

Imports only the standard library, msgpack, alpaca-py's models and
:mod:`alpaca_di.errors`; the models (and with them alpaca-py and pandas) only
when :func:`parse` is first used.
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

__all__ = [
    "CHANNELS",
    "CHANNEL_BY_TYPE",
    "Authenticated",
    "DataBatch",
    "DataStreamProtocol",
    "Event",
    "Malformed",
    "ServerErrorEvent",
    "StreamKind",
    "SubscriptionAck",
    "SubscriptionState",
    "TradingStreamProtocol",
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

__getattr__, __dir__ = lazy_exports(globals(), {"parse": "alpaca_di.protocol.models"})
