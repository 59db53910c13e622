"""The inbox alone: no hub, no loop, no thread."""

from __future__ import annotations

import pytest

from alpaca_di.errors import SubscriptionOverflowError
from alpaca_di.hub.inbox import Inbox


class Listener:
    def __init__(self) -> None:
        self.ready = 0
        self.closed: list[BaseException | None] = []

    def inbox_ready(self) -> None:
        self.ready += 1

    def inbox_closed(self, error: BaseException | None) -> None:
        self.closed.append(error)


def test_the_listener_hears_every_push_and_one_close() -> None:
    inbox = Inbox(maxsize=None, overflow="drop_oldest", raw=False, held={("quotes", "A")})
    listener = inbox.listener = Listener()
    assert inbox.push([("quotes", "A", 1)])
    assert inbox.push([("quotes", "A", 2)])
    assert listener.ready == 2
    assert inbox.close()
    assert not inbox.close()
    assert listener.closed == [None]
    assert inbox.queued == 0
    assert inbox.push([("quotes", "A", 3)])  # after close: ignored, not an overflow
    assert listener.ready == 2


def test_an_error_policy_overflow_closes_the_inbox_with_the_named_error() -> None:
    inbox = Inbox(maxsize=2, overflow="error", raw=False)
    listener = inbox.listener = Listener()
    assert inbox.push([("quotes", "A", 1), ("quotes", "A", 2)])
    assert not inbox.push([("quotes", "A", 3)])
    assert inbox.closed
    assert isinstance(inbox.error, SubscriptionOverflowError)
    assert len(listener.closed) == 1
    with pytest.raises(SubscriptionOverflowError, match="queue of 2 messages is full"):
        raise listener.closed[0]  # type: ignore[misc]


def test_never_drop_ignores_the_bound() -> None:
    inbox = Inbox(maxsize=1, overflow="error", raw=False, never_drop=True)
    assert inbox.push([("trade_updates", "A", n) for n in range(1000)])
    assert inbox.queued == 1000
    assert inbox.stats().dropped == 0


def test_removed_pairs_are_filtered_out_of_what_is_already_queued() -> None:
    inbox = Inbox(
        maxsize=None, overflow="drop_oldest", raw=False, held={("quotes", "A"), ("quotes", "B")}
    )
    inbox.push([("quotes", "A", 1), ("quotes", "B", 2), ("quotes", "A", 3)])
    inbox.hold({("quotes", "A")}, add=False)
    with inbox.lock:
        assert inbox.pop() == ("quotes", "B", 2)
        assert inbox.pop() is None


def test_an_unhashable_news_symbol_never_breaks_the_filter() -> None:
    inbox = Inbox(maxsize=None, overflow="drop_oldest", raw=True, held={("news", "AAPL")})
    inbox.hold({("news", "MSFT")}, add=False)
    article = {"symbols": [["nested"], {"x": 1}, "AAPL"]}
    inbox.push([("news", "*", article)])
    with inbox.lock:
        assert inbox.pop() == ("news", "*", article)
