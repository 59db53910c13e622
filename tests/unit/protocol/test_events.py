"""alpaca_di.protocol.events: immutable values and the error mapping."""

from __future__ import annotations

import dataclasses

import pytest

from alpaca_di.errors import (
    AuthenticationError,
    ConnectionLimitError,
    InsufficientSubscriptionError,
    ServerError,
    SlowClientError,
    SymbolLimitError,
)
from alpaca_di.protocol.events import (
    Authenticated,
    DataBatch,
    Event,
    Malformed,
    ServerErrorEvent,
    SubscriptionAck,
    Welcome,
)


@pytest.mark.parametrize(
    "event",
    [
        Welcome(),
        Authenticated(),
        ServerErrorEvent(402, "auth failed"),
        SubscriptionAck({"quotes": ("AAPL",)}),
        DataBatch([("quotes", "AAPL", {"T": "q"})]),
        Malformed("bad"),
    ],
)
def test_events_are_frozen_and_slotted(event: Event) -> None:
    assert isinstance(event, Event)
    assert not hasattr(event, "__dict__")
    for field in dataclasses.fields(event):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(event, field.name, None)


def test_events_compare_by_value() -> None:
    assert Welcome() == Welcome()
    controls: list[object] = [Welcome(), Authenticated()]
    assert controls[0] != controls[1]
    assert ServerErrorEvent(405, "symbol limit exceeded") == ServerErrorEvent(
        405, "symbol limit exceeded"
    )
    assert hash(ServerErrorEvent(1, "x")) == hash(ServerErrorEvent(1, "x"))
    assert Malformed("a") != Malformed("b")


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (402, AuthenticationError),
        (405, SymbolLimitError),
        (406, ConnectionLimitError),
        (407, SlowClientError),
        (409, InsufficientSubscriptionError),
        (400, ServerError),
        (500, ServerError),
    ],
)
def test_exception_maps_codes(code: int, cls: type[ServerError]) -> None:
    error = ServerErrorEvent(code, "server text").exception()
    assert type(error) is cls
    assert error.code == code
    assert error.server_message == "server text"


def test_exception_names_the_feed_for_409() -> None:
    error = ServerErrorEvent(409, "insufficient subscription").exception(feed="sip")
    assert isinstance(error, InsufficientSubscriptionError)
    assert "'sip'" in str(error)
