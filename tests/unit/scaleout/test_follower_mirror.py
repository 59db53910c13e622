"""How a follower mirrors its leader's upstream state: only what cannot heal is fatal."""

from __future__ import annotations

import asyncio
from typing import Any

from alpaca_di.errors import (
    AuthenticationError,
    ConnectionClosedError,
    ConnectionLimitError,
    InsufficientSubscriptionError,
)
from alpaca_di.scaleout.wire import LeaderStatus, error_record, is_permanent
from alpaca_di.transport.states import ConnectionState

from ._upstream_support import RecordingListener, live_upstream


def _status(state: str, error: BaseException | None, epoch: int = 5, **kw: Any) -> LeaderStatus:
    return LeaderStatus("host:1:abc", epoch, state, error=error_record(error), **kw)


def test_a_406_retried_by_the_leader_is_transient_with_the_reason_and_count() -> None:
    loop = asyncio.new_event_loop()
    try:
        listener = RecordingListener()
        upstream = live_upstream(loop, listener, "PKMIRROR0001")
        upstream._apply_status(_status("connected", None))
        limit = ConnectionLimitError(406, "connection limit exceeded")
        upstream._apply_status(_status("reconnecting", limit, limit_rejections=11))
        assert upstream.state is ConnectionState.RECONNECTING
        assert upstream._fatal is None
        text = str(upstream.last_error)
        assert isinstance(upstream.last_error, ConnectionLimitError)
        assert "previous leader's socket may still hold the slot" in text
        assert "11 times" in text
        assert upstream.health_fields()["limit_rejections"] == 11
        # Even a FAILED 406 (an older leader honouring its grace) is mirrored as transient.
        upstream._apply_status(_status("failed", limit, limit_rejections=12))
        assert upstream._fatal is None
        assert ConnectionState.FAILED not in listener.states
        upstream._apply_status(_status("connected", None))
        assert upstream.state is ConnectionState.CONNECTED
    finally:
        loop.close()


def test_only_what_cannot_heal_makes_the_follower_fail() -> None:
    loop = asyncio.new_event_loop()
    try:
        upstream = live_upstream(loop, RecordingListener(), "PKMIRROR0001")
        upstream._apply_status(_status("failed", AuthenticationError(402, "auth failed")))
        assert isinstance(upstream._fatal, AuthenticationError)
    finally:
        loop.close()
    assert is_permanent(InsufficientSubscriptionError(409, "insufficient subscription"))
    assert not is_permanent(ConnectionLimitError(406, "connection limit exceeded"))
    assert not is_permanent(ConnectionClosedError("dropped"))


def test_the_status_carries_the_406_count() -> None:
    status = _status("reconnecting", ConnectionLimitError(406, "x"), limit_rejections=3)
    assert LeaderStatus.decode(status.encode()) == status
    assert LeaderStatus.decode(_status("connected", None).encode()).limit_rejections == 0
