"""The connection engine against the emulator: sharing, fan-out, deltas, faults."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from alpaca_di.credentials import Credentials
from alpaca_di.errors import (
    AuthenticationError,
    ConnectionClosedError,
    ConnectionLimitError,
    InsufficientSubscriptionError,
    SymbolLimitError,
)
from alpaca_di.protocol import StreamKind
from alpaca_di.testing.messages import quote as _quote
from alpaca_di.testing.messages import trade as _trade
from alpaca_di.testing.recorder import Recorder as Collector
from alpaca_di.transport import ConnectionOptions, ConnectionState

KEY = "PKINTEGRATION01"


def quote(symbol: str, seq: int = 0):
    return _quote(symbol, bid_size=seq)


def trade(symbol: str, seq: int = 0):
    return _trade(symbol, trade_id=seq)


IEX = "/v2/iex"


def test_fifty_threads_racing_share_one_connection_and_all_receive(
    registry, emulator, creds, fast_options
):
    barrier = threading.Barrier(50)
    collectors = [Collector() for _ in range(50)]
    subs = [None] * 50
    leases = [None] * 50

    def consumer(n: int) -> None:
        barrier.wait()
        leases[n] = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX), fast_options)
        subs[n] = leases[n].hub.subscribe(collectors[n], quotes=["AAPL", "MSFT"])

    threads = [threading.Thread(target=consumer, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(lease.hub) for lease in leases}) == 1
    for sub in subs:
        sub.wait_confirmed(10)
    emulator.publish(IEX, [quote("AAPL", n) for n in range(20)] + [quote("MSFT", 99)])
    for collector in collectors:
        received = collector.wait_for(21)
        assert [q.bid_size for q in received if q.symbol == "AAPL"] == list(range(20))
    counters = emulator.counters(KEY, IEX)
    assert counters.connections_accepted == 1
    assert counters.max_concurrent == 1
    for lease in leases:
        lease.release()


def test_symbol_and_wildcard_consumers_all_receive_and_unsubscribe_waits_for_the_last(
    stock_lease, emulator
):
    hub = stock_lease.hub
    first, second, everything = Collector(), Collector(), Collector()
    subs = [
        hub.subscribe(first, quotes=["AAPL"]),
        hub.subscribe(second, quotes=["AAPL"]),
        hub.subscribe(everything, quotes=["*"]),
    ]
    for sub in subs:
        sub.wait_confirmed(5)
    assert emulator.subscriptions(KEY, IEX)["quotes"] == {"AAPL", "*"}
    emulator.publish(IEX, [quote("AAPL", 1), quote("MSFT", 2)])
    assert [q.symbol for q in first.wait_for(1)] == ["AAPL"]
    assert [q.symbol for q in second.wait_for(1)] == ["AAPL"]
    assert sorted(q.symbol for q in everything.wait_for(2)) == ["AAPL", "MSFT"]
    assert everything.items[0] is first.items[0], "one parsed model shared by all consumers"

    subs[2].close()
    subs[0].close()
    emulator.wait_until(lambda: emulator.subscriptions(KEY, IEX)["quotes"] == {"AAPL"}, 5)
    unsubscribes = emulator.counters(KEY, IEX).unsubscribe_messages
    subs[1].close()
    emulator.wait_until(lambda: emulator.subscriptions(KEY, IEX)["quotes"] == frozenset(), 5)
    assert emulator.counters(KEY, IEX).unsubscribe_messages == unsubscribes + 1


def test_adding_two_thousand_symbols_one_call_at_a_time_sends_linear_bytes(stock_lease, emulator):
    hub = stock_lease.hub
    sub = hub.subscribe(quotes=["SYM0"])
    sub.wait_confirmed(5)
    symbols = [f"SYM{n}" for n in range(1, 2001)]
    for symbol in symbols:
        sub.add(quotes=[symbol])
    sub.wait_confirmed(10)
    emulator.wait_until(lambda: len(emulator.subscriptions(KEY, IEX)["quotes"]) == 2001, 10)
    added = emulator.counters(KEY, IEX).subscribe_bytes
    # A full-set protocol would send ~2000²/2 × 8 bytes ≈ 16 MB; deltas need ~10 bytes each.
    assert added < 200_000
    for symbol in symbols:
        sub.remove(quotes=[symbol])
    emulator.wait_until(lambda: emulator.subscriptions(KEY, IEX)["quotes"] == {"SYM0"}, 10)
    assert emulator.counters(KEY, IEX).subscribe_bytes - added < 200_000


def test_changes_in_one_loop_tick_are_coalesced_into_one_delta(registry, emulator, creds):
    async def main() -> None:
        lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX))
        hub = lease.hub
        sub = hub.subscribe(quotes=["AAPL"])
        await hub.ready(5)
        await sub.confirmed(5)
        before = emulator.counters(KEY, IEX).subscribe_messages
        for symbol in ("MSFT", "TSLA", "NVDA", "SPY"):
            sub.add(quotes=[symbol], trades=[symbol])
        sub.remove(quotes=["SPY"])
        await sub.confirmed(5)
        assert emulator.counters(KEY, IEX).subscribe_messages == before + 1
        assert emulator.subscriptions(KEY, IEX)["quotes"] == {"AAPL", "MSFT", "TSLA", "NVDA"}
        await lease.arelease()

    asyncio.run(main())


def test_a_blocked_consumer_drops_per_its_policy_and_delays_nobody(stock_lease, emulator):
    hub = stock_lease.hub
    release = threading.Event()
    entered = threading.Event()

    def blocked(message) -> None:
        entered.set()
        release.wait(30)

    fast = Collector()
    slow = hub.subscribe(blocked, quotes=["AAPL"], maxsize=10, overflow="drop_oldest")
    quick = hub.subscribe(fast, quotes=["AAPL"])
    slow.wait_confirmed(5)
    quick.wait_confirmed(5)
    emulator.publish(IEX, [quote("AAPL", 0)])
    assert entered.wait(5)
    emulator.publish(IEX, [quote("AAPL", n) for n in range(1, 501)])
    assert [q.bid_size for q in fast.wait_for(501)] == list(range(501))
    assert slow.stats.dropped == 500 - 10
    assert slow.stats.queued == 10
    assert hub.health().messages_dropped == 490
    release.set()


def test_a_raising_handler_is_counted_and_stops_nobody(stock_lease, emulator):
    hub = stock_lease.hub
    seen = Collector()

    def explode(message) -> None:
        seen(message)
        raise RuntimeError("handler bug")

    other = Collector()
    bad = hub.subscribe(explode, quotes=["AAPL"])
    good = hub.subscribe(other, quotes=["AAPL"])
    bad.wait_confirmed(5)
    good.wait_confirmed(5)
    emulator.publish(IEX, [quote("AAPL", n) for n in range(5)])
    assert len(seen.wait_for(5)) == 5
    assert len(other.wait_for(5)) == 5
    assert bad.stats.errors == 5
    assert hub.health().handler_errors == 5
    assert hub.state is ConnectionState.CONNECTED


def test_async_handlers_and_iterators_run_on_the_apps_loop(registry, emulator, creds):
    async def main() -> None:
        loop = asyncio.get_running_loop()
        threads_before = set(threading.enumerate())
        lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX))
        assert lease.hub.loop is not loop  # the socket lives on the runtime thread
        seen_on: list[asyncio.AbstractEventLoop] = []
        done = asyncio.Event()

        async def on_quote(message) -> None:
            seen_on.append(asyncio.get_running_loop())
            done.set()

        handler_sub = lease.hub.subscribe(on_quote, quotes=["AAPL"])
        async with lease.hub.subscribe(trades=["AAPL"]) as sub:
            await handler_sub.confirmed(5)
            await sub.confirmed(5)
            emulator.publish(IEX, [quote("AAPL", 1), trade("AAPL", 7)])
            async for message in sub:
                assert message.id == 7
                break
        await asyncio.wait_for(done.wait(), 5)
        assert seen_on == [loop]
        new = {thread.name for thread in set(threading.enumerate()) - threads_before}
        assert new <= {"alpaca-di-runtime"}, "only the runtime thread that holds the sockets"
        await lease.arelease()

    asyncio.run(main())


def test_subscribe_and_close_from_inside_a_handler(stock_lease, emulator):
    hub = stock_lease.hub
    later = Collector()
    subs = {}
    subscribed = threading.Event()

    def first(message) -> None:
        subs["first"].close()
        subs["second"] = hub.subscribe(later, quotes=["MSFT"])
        subscribed.set()

    subs["first"] = hub.subscribe(first, quotes=["AAPL"])
    subs["first"].wait_confirmed(5)
    emulator.publish(IEX, [quote("AAPL", 1)])
    assert subscribed.wait(5)
    subs["second"].wait_confirmed(5)
    assert "MSFT" in emulator.subscriptions(KEY, IEX)["quotes"]
    emulator.publish(IEX, [quote("MSFT", 2), quote("AAPL", 3)])
    assert [q.symbol for q in later.wait_for(1)] == ["MSFT"]
    assert subs["first"].stats.delivered == 1


@pytest.mark.parametrize("close_frame", [True, False])
def test_forced_drops_reconnect_and_restore_every_subscription(stock_lease, emulator, close_frame):
    hub = stock_lease.hub
    collector = Collector()
    sub = hub.subscribe(collector, quotes=["AAPL", "MSFT"], trades=["*"])
    sub.wait_confirmed(5)
    wanted = emulator.subscriptions(KEY, IEX)
    for round_ in range(3):
        emulator.drop_connections(IEX, close_frame=close_frame)
        emulator.wait_until(
            lambda r=round_: (
                emulator.counters(KEY, IEX).connections_accepted == r + 2
                and emulator.subscriptions(KEY, IEX) == wanted
            ),
            10,
        )
    hub.wait_ready(5)
    emulator.publish(IEX, [quote("AAPL", 1)])
    assert collector.wait_for(1)[0].symbol == "AAPL"
    health = hub.health()
    assert health.reconnects == 3
    assert "reconnecting" in [t.state for t in health.transitions]
    assert emulator.counters(KEY, IEX).max_concurrent == 1


def test_a_clean_close_we_did_not_ask_for_reconnects(stock_lease, emulator):
    hub = stock_lease.hub
    sub = hub.subscribe(quotes=["AAPL"])
    sub.wait_confirmed(5)
    emulator.drop_connections(IEX, close_frame=True, code=1000)
    emulator.wait_until(lambda: emulator.counters(KEY, IEX).connections_accepted == 2, 10)
    hub.wait_ready(5)


@pytest.mark.parametrize(
    ("code", "error"), [(402, AuthenticationError), (409, InsufficientSubscriptionError)]
)
def test_fatal_auth_errors_surface_at_once_without_a_retry_loop(stock_lease, emulator, code, error):
    emulator.reject_auth(code)
    hub = stock_lease.hub
    sub = hub.subscribe(quotes=["AAPL"])
    with pytest.raises(error):
        hub.wait_ready(5)
    assert hub.state is ConnectionState.FAILED
    assert emulator.counters(KEY, IEX).auth_attempts == 1
    assert sub.closed
    with pytest.raises(error):
        sub.get(timeout=1)
    with pytest.raises(error):
        _kept3 = hub.subscribe(quotes=["MSFT"])  # kept: unreachable ones are reclaimed


def test_insufficient_subscription_names_the_feed(registry, emulator, creds, fast_options):
    emulator.add_account(KEY, creds.secret.get_secret_value(), feeds={"iex"})
    options = ConnectionOptions(backoff_initial=0.01, backoff_max=0.05, feed="sip")
    lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url("/v2/sip"), options)
    with pytest.raises(InsufficientSubscriptionError, match=r"'sip'.*iex"):
        lease.hub.wait_ready(5)
    lease.release()


def test_symbol_limit_rolls_back_only_the_offending_symbols(stock_lease, emulator, creds):
    emulator.add_account(KEY, creds.secret.get_secret_value(), symbol_limit=3)
    hub = stock_lease.hub
    kept = hub.subscribe(quotes=["AAPL", "MSFT"])
    kept.wait_confirmed(5)
    too_many = hub.subscribe(quotes=["TSLA", "NVDA"])
    with pytest.raises(SymbolLimitError) as caught:
        too_many.wait_confirmed(5)
    assert set(caught.value.symbols) == {("quotes", "TSLA"), ("quotes", "NVDA")}
    assert too_many.symbols == {}
    assert kept.symbols == {"quotes": frozenset({"AAPL", "MSFT"})}
    assert emulator.subscriptions(KEY, IEX)["quotes"] == {"AAPL", "MSFT"}
    fits = hub.subscribe(quotes=["SPY"])
    fits.wait_confirmed(5)
    assert hub.state is ConnectionState.CONNECTED


def test_connection_limit_is_retried_inside_the_grace_window(stock_lease, emulator):
    emulator.reject_auth(406, times=2)
    hub = stock_lease.hub
    _kept4 = hub.subscribe(quotes=["AAPL"])  # kept: unreachable ones are reclaimed
    hub.wait_ready(10)
    counters = emulator.counters(KEY, IEX)
    assert counters.rejections.get(406) == 2
    assert counters.open == 1


def test_connection_limit_fails_after_the_grace_window(registry, emulator, creds):
    emulator.reject_auth(406)
    options = ConnectionOptions(backoff_initial=0.01, backoff_max=0.02, connection_limit_grace=0.2)
    lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX), options)
    with pytest.raises(ConnectionLimitError, match="406"):
        lease.hub.wait_ready(10)
    assert emulator.counters(KEY, IEX).rejections.get(406, 0) >= 2
    lease.release()


def test_release_of_the_last_lease_closes_with_a_close_frame(registry, emulator, creds):
    before = set(threading.enumerate())
    lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX))
    second = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX))
    _kept5 = lease.hub.subscribe(quotes=["AAPL"])  # kept: unreachable ones are reclaimed
    lease.hub.wait_ready(5)
    lease.release()
    assert emulator.counters(KEY, IEX).open == 1
    second.release()
    # The release returned after the close handshake; the emulator counts it on its thread.
    emulator.wait_until(
        lambda: (
            emulator.counters(KEY, IEX).close_frames_received == 1
            and emulator.counters(KEY, IEX).slots_held == 0
        ),
        5,
    )
    assert lease.hub.state is ConnectionState.CLOSED
    with pytest.raises(ConnectionClosedError):
        _kept6 = lease.hub.subscribe(quotes=["AAPL"])  # kept: unreachable ones are reclaimed
    assert set(threading.enumerate()) - before == set()


def test_acquire_release_cycles_leave_nothing_behind(registry, emulator, creds):
    import os

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX))
    _kept7 = lease.hub.subscribe(quotes=["AAPL"])  # kept: unreachable ones are reclaimed
    _kept7.wait_confirmed(5)
    lease.release()
    threads, files = set(threading.enumerate()), fds()
    for _ in range(20):
        lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX))
        lease.hub.subscribe(lambda message: None, quotes=["AAPL"]).wait_confirmed(5)
        lease.release()
    assert set(threading.enumerate()) - threads == set()
    assert fds() <= files
    assert registry.hubs() == []
    assert emulator.counters(KEY, IEX).connections_accepted == 21


def test_a_sync_app_uses_one_runtime_thread_for_every_connection(registry, emulator, creds):
    before = {thread.name for thread in threading.enumerate()}
    leases = [
        registry.acquire(creds, kind, emulator.data_url(path))
        for kind, path in [
            (StreamKind.STOCK, "/v2/iex"),
            (StreamKind.CRYPTO, "/v1beta3/crypto/us"),
            (StreamKind.NEWS, "/v1beta1/news"),
        ]
    ]
    for lease in leases:
        lease.hub.wait_ready(5)
    new = {thread.name for thread in threading.enumerate()} - before
    assert new == {"alpaca-di-runtime"}
    for lease in leases:
        lease.release()


def test_different_credentials_get_their_own_connection(registry, emulator):
    a = registry.acquire(Credentials("PKACCOUNTA01", "a"), StreamKind.STOCK, emulator.data_url(IEX))
    b = registry.acquire(Credentials("PKACCOUNTB01", "b"), StreamKind.STOCK, emulator.data_url(IEX))
    assert a.hub is not b.hub
    a.hub.wait_ready(5)
    b.hub.wait_ready(5)
    assert emulator.counters("PKACCOUNTA01", IEX).open == 1
    assert emulator.counters("PKACCOUNTB01", IEX).open == 1
    a.release()
    b.release()


def test_wait_ready_times_out_with_the_state_named(registry, creds):
    # Nothing listens on port 9: connects fail, the hub keeps reconnecting.
    options = ConnectionOptions(backoff_initial=0.01, backoff_max=0.02, open_timeout=0.5)
    lease = registry.acquire(creds, StreamKind.STOCK, "ws://127.0.0.1:9/v2/iex", options)
    with pytest.raises(TimeoutError, match="not ready within"):
        lease.hub.wait_ready(0.3)
    assert lease.hub.health().last_error
    lease.release()


def test_mute_socket_is_recycled_after_data_timeout(registry, emulator, creds):
    options = ConnectionOptions(backoff_initial=0.01, backoff_max=0.05, data_timeout=0.3)
    lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX), options)
    sub = lease.hub.subscribe(quotes=["AAPL"])  # kept: unreachable ones are reclaimed
    sub.wait_confirmed(5)
    emulator.mute(IEX)
    emulator.wait_until(lambda: emulator.counters(KEY, IEX).connections_accepted >= 2, 10)
    emulator.mute(IEX, muted=False)
    lease.hub.wait_ready(5)
    assert lease.hub.health().reconnects >= 1
    lease.release()


def test_health_reports_no_secret(stock_lease, emulator, creds):
    _kept8 = stock_lease.hub.subscribe(
        quotes=["AAPL"]
    )  # kept: unreachable ones are reclaimed
    _kept8.wait_confirmed(5)
    text = stock_lease.hub.health().model_dump_json() + repr(stock_lease.hub)
    assert creds.secret.get_secret_value() not in text
    assert creds.key_id not in text
    assert creds.fingerprint in text


def test_shutdown_of_five_connections_is_prompt(registry, emulator, creds):
    paths = ["/v2/iex", "/v2/sip", "/v1beta3/crypto/us", "/v1beta1/news", "/v1beta1/indicative"]
    kinds = [StreamKind.STOCK, StreamKind.STOCK, StreamKind.CRYPTO, StreamKind.NEWS]
    kinds.append(StreamKind.OPTION)
    leases = [
        registry.acquire(creds, k, emulator.data_url(p)) for k, p in zip(kinds, paths, strict=True)
    ]
    for lease in leases:
        lease.hub.wait_ready(5)
    started = time.perf_counter()
    for lease in leases:
        lease.release()
    elapsed = time.perf_counter() - started
    print(f"closing 5 connections took {elapsed * 1000:.1f} ms")  # reported, not asserted
    assert all(emulator.counters(KEY, p).open == 0 for p in paths)
