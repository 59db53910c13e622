"""Consumer names and the per-name tally: bounded groups, totals that never go down."""

from __future__ import annotations

import pytest

from alpaca_di.hub.consumers import UNNAMED, ConsumerTally, check_consumer_name
from alpaca_di.hub.inbox import Inbox


def _inbox(name: str | None = None) -> Inbox:
    return Inbox(maxsize=2, overflow="drop_oldest", raw=True, name=name)


@pytest.mark.parametrize("name", ["risk", "momentum-1", "a.b:c_d", "X" * 64, "7days"])
def test_valid_names_are_returned_as_given(name: str) -> None:
    assert check_consumer_name(name) == name


def test_none_means_unnamed() -> None:
    assert check_consumer_name(None) is None


@pytest.mark.parametrize("name", ["", "_private", "has space", "X" * 65, "é", "a/b", "x\n"])
def test_invalid_names_raise_naming_the_rule(name: str) -> None:
    with pytest.raises(ValueError, match="invalid consumer name") as raised:
        check_consumer_name(name)
    assert "1 to 64" in str(raised.value)


def test_a_name_that_is_not_a_str_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="name must be a str"):
        check_consumer_name(42)


def test_unnamed_cannot_collide_with_a_valid_name() -> None:
    with pytest.raises(ValueError):
        check_consumer_name(UNNAMED)


def test_subscriptions_of_one_name_add_up_and_unnamed_ones_share_a_group() -> None:
    tally = ConsumerTally()
    a, b, c, d = _inbox("risk"), _inbox("risk"), _inbox(), _inbox()
    for inbox in (a, b, c, d):
        tally.track(inbox)
    a.push([("quotes", "AAPL", {})])
    b.push([("quotes", "AAPL", {}), ("quotes", "MSFT", {}), ("quotes", "TSLA", {})])  # 1 dropped
    c.push([("quotes", "AAPL", {})])
    with a.lock:
        a.pop()
        a.delivered += 1
    snapshot = tally.snapshot()
    assert set(snapshot) == {"risk", UNNAMED}
    risk = snapshot["risk"]
    assert (risk.subscriptions, risk.delivered, risk.dropped, risk.queued) == (2, 1, 1, 2)
    assert snapshot[UNNAMED].subscriptions == 2
    assert snapshot[UNNAMED].queued == 1


def test_closed_subscriptions_keep_their_counts_in_their_name() -> None:
    tally = ConsumerTally()
    first = _inbox("risk")
    tally.track(first)
    first.push([("quotes", "AAPL", {})])
    with first.lock:
        first.pop()
        first.delivered += 1
        first.errors += 1
    first.close()
    second = _inbox("risk")
    tally.track(second)
    risk = tally.snapshot()["risk"]
    assert (risk.subscriptions, risk.delivered, risk.errors, risk.queued) == (1, 1, 1, 0)


def test_many_short_lived_subscriptions_leave_one_group_and_are_not_kept() -> None:
    tally = ConsumerTally()
    for _ in range(10_000):
        inbox = _inbox()
        tally.track(inbox)
        inbox.push([("quotes", "AAPL", {})])
        with inbox.lock:
            inbox.pop()
            inbox.delivered += 1
        inbox.close()
    assert len(tally._open) < 200  # closed inboxes are folded in as new ones come
    snapshot = tally.snapshot()
    assert list(snapshot) == [UNNAMED]
    assert snapshot[UNNAMED].delivered == 10_000
    assert snapshot[UNNAMED].subscriptions == 0
