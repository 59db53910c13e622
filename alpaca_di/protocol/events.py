"""What the protocol core reports after reading a frame.

:meth:`DataStreamProtocol.receive <alpaca_di.protocol.codec.DataStreamProtocol.receive>`
turns every frame into a list of these immutable events; the transport reacts to
them and the hub routes the :class:`DataBatch` contents::

    for event in protocol.receive(frame):
        if isinstance(event, DataBatch):
            for channel, symbol, raw in event.messages:
                ...
        elif isinstance(event, ServerErrorEvent):
            raise event.exception(feed="iex")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from alpaca_di.errors import ServerError, error_for_code

__all__ = [
    "Authenticated",
    "DataBatch",
    "Event",
    "Malformed",
    "ServerErrorEvent",
    "SubscriptionAck",
    "Welcome",
]


@dataclass(frozen=True, slots=True)
class Welcome:
    """The server accepted the socket (``[{"T":"success","msg":"connected"}]``).

    ::

        protocol.receive(frame) == [Welcome()]
    """


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The key pair was accepted (data: ``success/authenticated``; trading: ``authorized``).

    ::

        if Authenticated() in protocol.receive(frame): ...
    """


@dataclass(frozen=True, slots=True)
class ServerErrorEvent:
    """An error the server reported (``{"T":"error","code":N,"msg":"..."}``).

    The trading stream's ``unauthorized`` reply is reported as code 402.

    ::

        event = ServerErrorEvent(402, "auth failed")
        raise event.exception()   # AuthenticationError

    Attributes:
        code: Alpaca's numeric error code.
        message: the server's text, verbatim (truncated to a sane length).
    """

    code: int
    message: str

    def exception(self, feed: str | None = None) -> ServerError:
        """Build the matching :class:`~alpaca_di.errors.ServerError` subclass.

        ``feed`` lets a 409 name the feed that the plan lacks.
        """
        return error_for_code(self.code, self.message, feed=feed)


@dataclass(frozen=True, slots=True)
class SubscriptionAck:
    """The server's full subscription state after a subscribe or unsubscribe.

    Keys are Python channel names (``updated_bars``, ``cancel_errors``...); only
    channels the server listed are present, possibly with an empty tuple::

        SubscriptionAck({"quotes": ("AAPL",), "trades": ()})
    """

    channels: dict[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class DataBatch:
    """The data messages of one frame, in wire order.

    Each message is ``(python channel, symbol, raw dict)``. ``raw`` is the decoded
    map exactly as received (timestamps are ``msgpack.Timestamp``); it is shared by
    every consumer, so nobody may mutate it. News messages have symbol ``""`` (the
    article's ``symbols`` list is in ``raw``); trade updates use the order's symbol::

        DataBatch([("quotes", "AAPL", {"T": "q", "S": "AAPL", ...})])

    When the protocol was asked for the struct form too
    (:attr:`DataStreamProtocol.forms <alpaca_di.protocol.codec.DataStreamProtocol.forms>`),
    ``structs`` is a list parallel to ``messages``: each message's struct of
    :mod:`alpaca_di.protocol.structs`, or ``None`` where the message has none (a
    value of the wrong type: raw consumers still get it). Likewise ``sources``
    with the model form: each message's model source of
    :mod:`alpaca_di.protocol.sources`, or ``None`` where the message has none
    (its ``raw`` is then the dict, even without the raw form). Without the raw
    form, every other ``raw`` is ``None``.
    """

    messages: list[tuple[str, str, Any]]
    structs: list[Any] | None = None
    sources: list[Any] | None = None


@dataclass(frozen=True, slots=True)
class Malformed:
    """A frame or one element of it that did not follow the protocol.

    Counted and logged by the caller, never delivered to consumers. ``reason``
    names what was wrong without quoting the (possibly huge) payload::

        Malformed("element 3: quotes message for 'AAPL' lacks field(s) 'bp'")
    """

    reason: str


Event: TypeAlias = (
    Welcome | Authenticated | ServerErrorEvent | SubscriptionAck | DataBatch | Malformed
)
"""Anything :meth:`receive` can return."""
