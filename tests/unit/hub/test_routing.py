"""The router alone: index, fan-out of a frame, models parsed once, overflow reported."""

from __future__ import annotations

from typing import Any

from alpaca_di.hub.inbox import Inbox
from alpaca_di.hub.routing import Router
from alpaca_di.testing.messages import quote


def inbox(*pairs: tuple[str, str], raw: bool = False, maxsize: int | None = None) -> Inbox:
    return Inbox(maxsize=maxsize, overflow="error", raw=raw, held=set(pairs))


def drain(box: Inbox) -> list[Any]:
    with box.lock:
        return [item[2] for item in box.take_all()]


def wire(symbol: str) -> dict[str, Any]:
    message = quote(symbol)
    message["t"] = "2024-01-02T15:30:00Z"
    return message


def test_one_model_per_message_is_shared_by_every_typed_consumer() -> None:
    router = Router()
    a, b = inbox(("quotes", "AAPL")), inbox(("quotes", "*"))
    raw = inbox(("quotes", "AAPL"), raw=True)
    for box, symbol in ((a, "AAPL"), (b, "*"), (raw, "AAPL")):
        router.add(box, ("quotes", symbol))
    message = wire("AAPL")
    assert router.dispatch([("quotes", "AAPL", message)], on_malformed=print) == []
    [model_a], [model_b], [raw_a] = drain(a), drain(b), drain(raw)
    assert model_a is model_b  # parsed once, shared
    assert model_a.bid_price == message["bp"]
    assert raw_a is message


def test_a_message_no_model_can_be_built_from_still_reaches_raw_consumers() -> None:
    router = Router()
    typed, raw = inbox(("quotes", "AAPL")), inbox(("quotes", "AAPL"), raw=True)
    router.add(typed, ("quotes", "AAPL"))
    router.add(raw, ("quotes", "AAPL"))
    bad = {**wire("AAPL"), "bp": "not a price"}
    reasons: list[str] = []
    router.dispatch([("quotes", "AAPL", bad), ("quotes", "AAPL", wire("AAPL"))], reasons.append)
    assert len(reasons) == 1
    assert len(drain(typed)) == 1
    assert drain(raw)[0] is bad


def test_unrouted_messages_are_counted_and_removal_takes_effect_after_changed() -> None:
    router = Router()
    box = inbox(("quotes", "AAPL"))
    router.add(box, ("quotes", "AAPL"))
    router.dispatch([("quotes", "MSFT", wire("MSFT"))], on_malformed=print)
    assert router.unrouted == 1
    router.remove(box, ("quotes", "AAPL"))
    router.changed()
    router.dispatch([("quotes", "AAPL", wire("AAPL"))], on_malformed=print)
    assert router.unrouted == 2
    assert router.symbols_per_channel() == {"quotes": 0}


def test_an_inbox_that_overflows_under_error_is_returned_to_the_hub() -> None:
    router = Router()
    small = inbox(("quotes", "*"), raw=True, maxsize=1)
    router.add(small, ("quotes", "*"))
    overflowed = router.dispatch(
        [("quotes", "A", wire("A")), ("quotes", "B", wire("B"))], on_malformed=print
    )
    assert overflowed == [small]
    assert small.closed


def test_news_is_routed_by_the_articles_string_symbols() -> None:
    router = Router()
    box = inbox(("news", "AAPL"), raw=True)
    router.add(box, ("news", "AAPL"))
    article = {"T": "n", "symbols": [["odd"], "AAPL"], "headline": "h"}
    router.dispatch([("news", "", article)], on_malformed=print)
    assert drain(box) == [article]


def struct_inbox(*pairs: tuple[str, str]) -> Inbox:
    return Inbox(maxsize=None, overflow="error", form="struct", held=set(pairs))


def test_symbols_held_by_the_same_inboxes_share_one_holder_set() -> None:
    router = Router()
    boxes = [inbox() for _ in range(3)]
    pairs = [router.intern(("quotes", f"S{n}")) for n in range(50)]
    for box in boxes:
        router.add(box, *pairs)
    holder_sets = {id(router._index["quotes"][symbol]) for _, symbol in pairs}
    assert len(holder_sets) == 1
    assert len(router._holder_sets) == 1  # the partial sets of the build-up are gone
    router.remove(boxes[0], *pairs[:10])
    assert len(router._holder_sets) == 2
    for box in boxes:
        router.remove(box, *pairs)
    assert router._index["quotes"] == {}
    assert router._holder_sets == {}
    assert router._pairs == {}  # the interned tuples went with their last holder


def test_a_pair_is_one_tuple_however_many_hold_it() -> None:
    router = Router()
    first = router.intern(("quotes", "AAPL"))
    assert router.intern(("quotes", "AAP" + "L")) is first


def test_forms_follow_the_inboxes_routed_to() -> None:
    router = Router()
    assert router.forms() == {"raw"}
    fast = struct_inbox(("quotes", "AAPL"))
    router.add(fast, ("quotes", "AAPL"))
    assert router.forms() == {"struct"}
    model = inbox(("quotes", "AAPL"))
    router.add(model, ("quotes", "AAPL"))
    assert router.forms() == {"model", "struct"}  # model sources, not dicts, for models
    router.remove(model, ("quotes", "AAPL"))
    assert router.forms() == {"struct"}


def test_structs_are_made_from_dicts_when_the_upstream_gives_dicts_only() -> None:
    router = Router()
    fast, other = struct_inbox(("quotes", "AAPL")), struct_inbox(("quotes", "*"))
    router.add(fast, ("quotes", "AAPL"))
    router.add(other, ("quotes", "*"))
    bad = {**quote("AAPL"), "bp": "not a price"}
    malformed: list[str] = []
    router.dispatch(
        [("quotes", "AAPL", quote("AAPL", bid=3.0)), ("quotes", "AAPL", bad)], malformed.append
    )
    [mine], [theirs] = drain(fast), drain(other)
    assert mine is theirs
    assert mine.bid_price == 3.0
    assert len(malformed) == 1
    assert "quotes" in malformed[0]
