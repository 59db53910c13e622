"""Gap notices over real sockets: the emulator drops the stream, the hub reconnects.

Every subscription made with ``gaps=True`` gets one GapNotice per loss, between
the last message before it and the first one after; a subscription that did not
opt in sees exactly what it saw before this feature existed.
"""

from __future__ import annotations

import pytest
from _integration_support import CLOCK_START, wait_until

from alpaca_di import AlpacaContainer, GapNotice
from alpaca_di.testing import AlpacaEmulator, Recorder

IEX = "/v2/iex"
DEADLINE = 10.0




def _closes(messages: list[object]) -> list[object]:
    return [m if isinstance(m, GapNotice) else m.close for m in messages]  # type: ignore[attr-defined]


@pytest.mark.parametrize("close_frame", [True, False], ids=["clean", "abrupt"])
def test_a_lost_stream_gives_each_opted_in_subscription_one_notice_in_order(
    clocked_emu: AlpacaEmulator, clocked_container: AlpacaContainer, close_frame: bool
) -> None:
    hub = clocked_container.stock_stream()
    told, plain = Recorder(), Recorder()
    told_sub = hub.subscribe(told, bars=["AAPL"], quotes=["MSFT"], gaps=True)
    plain_sub = hub.subscribe(plain, bars=["AAPL"])
    iterated = hub.subscribe(bars=["AAPL"], gaps=True)
    for sub in (told_sub, plain_sub, iterated):
        sub.wait_confirmed(DEADLINE)
    before = clocked_emu.advance(minutes=2, symbols=["AAPL"])
    told.wait_for(2, DEADLINE)
    plain.wait_for(2, DEADLINE)

    assert clocked_emu.drop_connections(IEX, close_frame=close_frame) == 1
    told.wait_for(3, DEADLINE)  # the notice: the restored subscription was confirmed
    after = clocked_emu.advance(minutes=1, symbols=["AAPL"])
    got = told.wait_for(4, DEADLINE)
    plain_got = plain.wait_for(3, DEADLINE)

    notice = got[2]
    assert isinstance(notice, GapNotice)
    assert _closes(got) == [before[0]["c"], before[1]["c"], notice, after[0]["c"]]
    assert (notice.kind, notice.endpoint) == ("stock", hub.endpoint)
    assert notice.symbols == {"bars": frozenset({"AAPL"}), "quotes": frozenset({"MSFT"})}
    assert notice.last_message_at == got[1].timestamp  # server time, not the wall clock
    assert notice.lost_at <= notice.confirmed_at
    assert (notice.backfill, notice.backfill_error, dict(notice.not_backfilled)) == (
        False, None, {})
    assert _closes(plain_got) == [before[0]["c"], before[1]["c"], after[0]["c"]]

    seen = [iterated.get(timeout=DEADLINE) for _ in range(4)]
    assert isinstance(seen[2], GapNotice)
    assert seen[2].symbols == {"bars": frozenset({"AAPL"})}
    assert [m.close for m in (seen[0], seen[1], seen[3])] == [b["c"] for b in before + after]

    assert (told_sub.stats.gaps, iterated.stats.gaps, plain_sub.stats.gaps) == (1, 1, 0)
    assert told_sub.stats.delivered == 4
    assert plain_sub.stats.delivered == 3
    health = clocked_container.health()
    assert health.connections[0].gaps == 2
    assert health.gaps == 2
    assert health.connections[0].reconnects == 1


def test_one_notice_per_loss_however_many_reconnect_attempts_fail(
    clocked_emu: AlpacaEmulator, clocked_container: AlpacaContainer
) -> None:
    hub = clocked_container.stock_stream()
    told = Recorder()
    sub = hub.subscribe(told, bars=["AAPL"], gaps=True, raw=True)
    sub.wait_confirmed(DEADLINE)
    clocked_emu.advance(minutes=1, symbols=["AAPL"])
    told.wait_for(1, DEADLINE)
    clocked_emu.refuse_handshake(503, times=3, path=IEX)
    clocked_emu.drop_connections(IEX, close_frame=False)
    wait_until(lambda: clocked_emu.stats().refused_handshakes == 3, DEADLINE, "three refusals")
    [raw_bar, notice] = told.wait_for(2, DEADLINE)
    assert isinstance(notice, GapNotice)
    assert sub.stats.gaps == 1
    assert notice.last_message_at == CLOCK_START  # the raw bar's msgpack time, as a datetime
    assert raw_bar["T"] == "b"
    assert hub.health().reconnects == 4


def test_a_notice_is_never_dropped_by_the_overflow_policy(
    clocked_emu: AlpacaEmulator, clocked_container: AlpacaContainer
) -> None:
    hub = clocked_container.stock_stream()
    for policy in ("drop_oldest", "drop_newest", "conflate"):
        sub = hub.subscribe(bars=["AAPL"], gaps=True, maxsize=1, overflow=policy)
        sub.wait_confirmed(DEADLINE)
        clocked_emu.drop_connections(IEX)
        wait_until(lambda s=sub: s.stats.queued == 1, DEADLINE, "the notice queued")
        bars = clocked_emu.advance(minutes=2, symbols=["AAPL"])  # more than the queue holds
        wait_until(lambda s=sub: s.stats.dropped >= 1, DEADLINE, f"{policy} dropping")
        first = sub.get(timeout=DEADLINE)
        assert isinstance(first, GapNotice), policy
        kept = bars[0] if policy == "drop_newest" else bars[1]
        assert sub.get(timeout=DEADLINE).close == kept["c"], policy
        assert sub.stats.queued == 0, policy
        sub.close()


def test_subscriptions_without_gaps_and_bad_arguments(clocked_container: AlpacaContainer) -> None:
    hub = clocked_container.stock_stream()
    with pytest.raises(TypeError, match="gaps must be True or False"):
        hub.subscribe(bars=["AAPL"], gaps="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="trade updates missed are reconciled"):
        clocked_container.trading_stream().subscribe(trade_updates=True, gaps=True)
    with pytest.raises(ValueError, match="the news stream carries no bars"):
        clocked_container.news_stream().subscribe(news=["*"], backfill=True)
    hub.subscribe(bars=["AAPL"], backfill=True, form="struct").close()  # BackfilledBar structs
    hub.subscribe(bars=["AAPL"], gaps=True, form="struct").close()  # notices in any form
    with pytest.raises(ValueError, match="the option stream carries no bars"):
        clocked_container.option_stream().subscribe(quotes=["AAPL240315C00180000"], backfill=True)
