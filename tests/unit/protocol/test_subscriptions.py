"""alpaca_di.protocol.subscriptions: reference counts and wire deltas."""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alpaca_di.protocol.subscriptions import SubscriptionState


def test_first_consumer_subscribes_last_one_unsubscribes() -> None:
    state = SubscriptionState()
    state.add("quotes", ["AAPL", "MSFT"])
    assert state.take_delta() == ({"quotes": ["AAPL", "MSFT"]}, {})
    state.add("quotes", ["AAPL"])
    assert state.count("quotes", "AAPL") == 2
    assert state.take_delta() == ({}, {})
    state.remove("quotes", ["AAPL"])
    assert state.take_delta() == ({}, {})
    state.remove("quotes", ["AAPL", "MSFT"])
    assert state.take_delta() == ({}, {"quotes": ["AAPL", "MSFT"]})
    assert state.count("quotes", "AAPL") == 0
    assert state.desired() == {}
    assert state.wire() == {}


def test_changes_between_deltas_are_coalesced() -> None:
    state = SubscriptionState()
    state.add("trades", ["AAPL"])
    state.remove("trades", ["AAPL"])
    state.add("trades", ["TSLA"])
    state.remove("trades", ["TSLA"])
    state.add("trades", ["TSLA"])
    assert state.take_delta() == ({"trades": ["TSLA"]}, {})
    state.remove("trades", ["TSLA"])
    state.add("trades", ["TSLA"])
    assert state.take_delta() == ({}, {})
    assert state.wire() == {"trades": frozenset({"TSLA"})}


def test_channels_are_independent_and_star_is_a_symbol() -> None:
    state = SubscriptionState()
    state.add("quotes", ["*", "AAPL"])
    state.add("trades", ["AAPL"])
    state.add("corrections", ["*"])
    assert state.take_delta() == (
        {"quotes": ["*", "AAPL"], "trades": ["AAPL"], "corrections": ["*"]},
        {},
    )
    state.remove("quotes", ["*"])
    assert state.take_delta() == ({}, {"quotes": ["*"]})
    assert state.desired() == {
        "quotes": frozenset({"AAPL"}),
        "trades": frozenset({"AAPL"}),
        "corrections": frozenset({"*"}),
    }


def test_duplicate_symbols_in_one_call_count_twice() -> None:
    state = SubscriptionState()
    state.add("quotes", ["AAPL", "AAPL"])
    assert state.count("quotes", "AAPL") == 2
    state.remove("quotes", ("AAPL", "AAPL"))
    assert state.count("quotes", "AAPL") == 0


def test_remove_below_zero_is_an_error_and_changes_nothing() -> None:
    state = SubscriptionState()
    state.add("quotes", ["AAPL"])
    state.take_delta()
    with pytest.raises(ValueError, match=r"quotes:'MSFT'.*only 0"):
        state.remove("quotes", ["AAPL", "MSFT"])
    with pytest.raises(ValueError, match=r"quotes:'AAPL' 2 time\(s\).*only 1"):
        state.remove("quotes", ["AAPL", "AAPL"])
    with pytest.raises(ValueError, match="bars"):
        state.remove("bars", ["AAPL"])
    assert state.count("quotes", "AAPL") == 1
    assert state.take_delta() == ({}, {})


def test_a_bare_string_is_refused() -> None:
    state = SubscriptionState()
    with pytest.raises(TypeError, match=r"\['AAPL'\]"):
        state.add("quotes", "AAPL")
    with pytest.raises(TypeError):
        state.remove("quotes", "AAPL")


def test_generators_and_empty_iterables() -> None:
    state = SubscriptionState()
    state.add("quotes", (s for s in ["AAPL", "MSFT"]))
    state.add("bars", [])
    state.remove("bars", [])
    assert state.desired() == {"quotes": frozenset({"AAPL", "MSFT"})}


def test_reconnect_restores_everything_once() -> None:
    state = SubscriptionState()
    state.add("quotes", ["AAPL", "MSFT"])
    state.add("bars", ["*"])
    state.take_delta()
    state.reset_wire()  # connection lost
    assert state.wire() == {}
    state.add("quotes", ["TSLA"])  # while disconnected
    state.remove("quotes", ["MSFT"])
    full = state.restore()
    assert {channel: set(symbols) for channel, symbols in full.items()} == {
        "quotes": {"AAPL", "TSLA"},
        "bars": {"*"},
    }
    assert state.wire() == state.desired()
    assert state.take_delta() == ({}, {})


def test_restore_with_nothing_desired() -> None:
    state = SubscriptionState()
    state.add("quotes", ["AAPL"])
    state.remove("quotes", ["AAPL"])
    assert state.restore() == {}


def test_reject_rolls_back_a_refused_subscribe() -> None:
    state = SubscriptionState()
    state.add("quotes", ["AAPL"])
    state.take_delta()
    state.add("quotes", ["MSFT", "TSLA"])
    state.add("quotes", ["MSFT"])
    subscribe, _ = state.take_delta()
    assert subscribe == {"quotes": ["MSFT", "TSLA"]}
    state.reject([("quotes", "MSFT"), ("quotes", "TSLA")])  # 405
    assert state.count("quotes", "MSFT") == 0
    assert state.wire() == {"quotes": frozenset({"AAPL"})}
    assert state.desired() == {"quotes": frozenset({"AAPL"})}
    assert state.take_delta() == ({}, {})
    state.reject([("bars", "AAPL")])  # unknown pairs are ignored
    state.reject([("quotes", "AAPL")])
    assert state.wire() == {}
    assert state.desired() == {}


def test_reject_of_a_pending_pair_drops_it() -> None:
    state = SubscriptionState()
    state.add("quotes", ["AAPL"])
    state.reject([("quotes", "AAPL")])
    assert state.take_delta() == ({}, {})


class CountingStr(str):
    """A str that counts how often it is hashed (i.e. looked up in a dict or set)."""

    hashes: ClassVar[int] = 0

    def __hash__(self) -> int:
        CountingStr.hashes += 1
        return super().__hash__()


def test_take_delta_work_is_proportional_to_changes_not_to_the_total() -> None:
    state = SubscriptionState()
    symbols = [CountingStr(f"S{n}") for n in range(20_000)]
    state.add("quotes", symbols)
    state.take_delta()
    CountingStr.hashes = 0
    state.add("quotes", [CountingStr("NEW")])
    state.remove("quotes", symbols[:2])
    subscribe, unsubscribe = state.take_delta()
    assert subscribe == {"quotes": ["NEW"]}
    assert unsubscribe == {"quotes": ["S0", "S1"]}
    assert CountingStr.hashes < 50  # a full scan would hash 20,000 symbols
    CountingStr.hashes = 0
    assert state.take_delta() == ({}, {})
    assert CountingStr.hashes == 0


def test_repr() -> None:
    state = SubscriptionState()
    state.add("quotes", ["AAPL"])
    assert repr(state) == "<SubscriptionState desired=1 wire=0 pending=1>"


# --- property tests --------------------------------------------------------------------

CHANNELS = ["quotes", "trades", "bars"]
SYMBOLS = ["AAPL", "MSFT", "TSLA", "*"]

operation = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(CHANNELS), st.lists(st.sampled_from(SYMBOLS))),
    st.tuples(st.just("remove"), st.sampled_from(CHANNELS), st.lists(st.sampled_from(SYMBOLS))),
    st.tuples(st.just("delta"), st.just(""), st.just([])),
    st.tuples(st.just("reset"), st.just(""), st.just([])),
    st.tuples(st.just("restore"), st.just(""), st.just([])),
    st.tuples(st.just("reject"), st.sampled_from(CHANNELS), st.lists(st.sampled_from(SYMBOLS))),
)


def as_sets(mapping: dict[str, frozenset[str]]) -> set[tuple[str, str]]:
    return {(channel, symbol) for channel, symbols in mapping.items() for symbol in symbols}


@settings(max_examples=400, deadline=None)
@given(ops=st.lists(operation, max_size=60))
def test_replayed_deltas_always_equal_the_wire_and_converge_to_desired(
    ops: list[tuple[str, str, list[str]]],
) -> None:
    state = SubscriptionState()
    counts: Counter[tuple[str, str]] = Counter()  # reference model
    server: set[tuple[str, str]] = set()  # what a server that obeys our messages holds
    for op, channel, symbols in ops:
        if op == "add":
            state.add(channel, symbols)
            counts.update((channel, s) for s in symbols)
        elif op == "remove":
            wanted = Counter((channel, s) for s in symbols)
            if all(counts[key] >= n for key, n in wanted.items()):
                state.remove(channel, symbols)
                counts.subtract(wanted)
            else:
                with pytest.raises(ValueError, match="cannot remove"):
                    state.remove(channel, symbols)
        elif op == "delta":
            subscribe, unsubscribe = state.take_delta()
            for channel_, symbols_ in subscribe.items():
                assert symbols_
                for symbol in symbols_:
                    assert (channel_, symbol) not in server, "subscribed twice"
                    server.add((channel_, symbol))
            for channel_, symbols_ in unsubscribe.items():
                assert symbols_
                for symbol in symbols_:
                    assert (channel_, symbol) in server, "unsubscribed what was not there"
                    server.discard((channel_, symbol))
        elif op == "reset":
            state.reset_wire()
            server.clear()
        elif op == "restore":
            server = {(c, s) for c, symbols_ in state.restore().items() for s in symbols_}
        elif op == "reject":
            pairs = [(channel, s) for s in symbols]
            state.reject(pairs)
            for pair in pairs:
                counts.pop(pair, None)
                server.discard(pair)
        counts = +counts  # drop zeros
        assert as_sets(state.wire()) == server
        assert as_sets(state.desired()) == set(counts)
        for (channel_, symbol), n in counts.items():
            assert state.count(channel_, symbol) == n
    subscribe, unsubscribe = state.take_delta()
    for channel_, symbols_ in subscribe.items():
        server.update((channel_, s) for s in symbols_)
    for channel_, symbols_ in unsubscribe.items():
        server.difference_update((channel_, s) for s in symbols_)
    assert as_sets(state.wire()) == server == as_sets(state.desired()) == set(counts)
    assert state.take_delta() == ({}, {})


def test_take_delta_after_reset_resubscribes_everything() -> None:
    state = SubscriptionState()
    state.add("quotes", ["AAPL", "MSFT"])
    state.take_delta()
    state.reset_wire()
    state.remove("quotes", ["MSFT"])
    assert state.take_delta() == ({"quotes": ["AAPL"]}, {})
    assert state.wire() == state.desired()
