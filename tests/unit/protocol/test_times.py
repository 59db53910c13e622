"""The server's timestamp of a message, whatever its form (one home: protocol/times.py)."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import msgpack
import pytest

from alpaca_di.protocol.times import message_time

AT = datetime(2026, 1, 5, 14, 30, 0, 123456, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "message",
    [
        SimpleNamespace(timestamp=AT),  # alpaca-py models, typed structs
        {"t": msgpack.Timestamp.from_datetime(AT)},  # raw msgpack dicts
        {"t": "2026-01-05T14:30:00.123456789Z"},  # raw JSON, nanoseconds
        {"timestamp": AT.isoformat()},  # raw trade updates
        {"created_at": int(AT.timestamp() * 1e9)},  # integer nanoseconds
        SimpleNamespace(created_at=AT),  # news models
    ],
)
def test_the_server_time_is_read_from_every_form(message: object) -> None:
    moment = message_time(message)
    assert moment is not None
    assert moment.tzinfo is not None
    assert abs(moment.timestamp() - AT.timestamp()) < 1e-6


@pytest.mark.parametrize("message", [{}, {"t": "not a time"}, object(), {"t": [1]}])
def test_a_message_without_a_usable_time_has_none(message: object) -> None:
    assert message_time(message) is None


def test_an_out_of_range_integer_is_none_not_an_error() -> None:
    assert message_time({"t": 10**30}) is None
