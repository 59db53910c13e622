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


def _drain(inbox: Inbox) -> list[object]:
    with inbox.lock:
        items = []
        while (item := inbox.pop()) is not None:
            items.append(item[2])
        return items


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest", "error", "conflate"])
def test_a_notice_keeps_its_place_and_takes_no_room(policy: str) -> None:
    inbox = Inbox(maxsize=2, overflow=policy, raw=True, held={("quotes", "A")}, gaps=True)
    inbox.push([("quotes", "A", 1), ("quotes", "A", 2)])
    inbox.push_notice("gap")
    assert inbox.push([("quotes", "A", 3)]) is (policy != "error")
    if policy == "error":
        assert inbox.closed
        return
    expected = {
        "drop_oldest": [2, "gap", 3],  # the oldest message went, never the notice
        "drop_newest": [1, 2, "gap"],
        "conflate": [2, "gap", 3],  # what was conflated before the notice comes before it
    }[policy]
    assert _drain(inbox) == expected
    assert inbox.stats().queued == 0


def test_held_live_messages_follow_the_backfill_released_for_them() -> None:
    inbox = Inbox(maxsize=None, overflow="drop_oldest", raw=True,
                  held={("bars", "A"), ("quotes", "A")}, backfill=True)
    inbox.push([("bars", "A", "b1")])
    assert inbox.last_bars == {("bars", "A"): ("bars", "A", "b1")}
    inbox.hold_live([("bars", "A")])
    inbox.push([("quotes", "A", "q"), ("bars", "A", "b4")])
    assert inbox.first_held(("bars", "A")) == ("bars", "A", "b4")
    assert inbox.release([("bars", "A")], [("bars", "A", "b3"), ("bars", "A", "b2")], str)
    assert _drain(inbox) == ["b1", "q", "b2", "b3", "b4"]
    assert inbox.stats().backfilled == 2
    assert inbox.last_item == ("bars", "A", "b4")


def test_an_inbox_that_did_not_opt_in_tracks_nothing() -> None:
    inbox = Inbox(maxsize=None, overflow="drop_oldest", raw=True, held={("bars", "A")})
    inbox.push([("bars", "A", "b1")])
    assert (inbox.last_item, inbox.last_bars) == (None, {})


def test_a_live_copy_of_a_backfilled_bar_is_left_out() -> None:
    inbox = Inbox(maxsize=None, overflow="drop_oldest", raw=True, held={("bars", "A")},
                  backfill=True)
    inbox.hold_live([("bars", "A")])
    assert inbox.release([("bars", "A")], [("bars", "A", "b1"), ("bars", "A", "b2")], str)
    inbox.push([("bars", "A", "b2"), ("bars", "A", "b3")])  # b2 came late on the stream too
    inbox.push([("bars", "A", "b2")])  # past the floor now: delivered as it comes
    assert _drain(inbox) == ["b1", "b2", "b3", "b2"]
