"""The Redis sharing path in one process: registries standing in for processes.

Each :class:`RedisConnectionRegistry` has its own gateway identity and Redis
links, exactly like a separate process; keeping them in one process lets these
tests inject Redis outages (a cuttable TCP proxy) and inspect everything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import msgpack
import pytest
import redis
import structlog.testing
from _proxy import TcpProxy
from _scaleout_support import KEY, REDIS_URL, SECRET
from dependency_injector import providers

from alpaca_di.containers import AlpacaContainer
from alpaca_di.credentials import Credentials
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.errors import (
    AuthenticationError,
    ConfigurationError,
    RedisUnavailableError,
    SymbolLimitError,
)
from alpaca_di.hub.hub import StreamHub
from alpaca_di.hub.registry import ConnectionRegistry
from alpaca_di.scaleout.client import redis_client
from alpaca_di.scaleout.election import LeaderElector
from alpaca_di.scaleout.follower import mask_redis_url
from alpaca_di.scaleout.options import SharingOptions
from alpaca_di.scaleout.registry import (
    RedisConnectionRegistry,
    redis_registry,
    registry_for,
    sharing_options,
)
from alpaca_di.scaleout.wire import LeaderStatus, SharingKeys, account_tag
from alpaca_di.settings import AlpacaSettings
from alpaca_di.testing.messages import quote
from alpaca_di.testing.recorder import Recorder
from alpaca_di.transport import ConnectionOptions, ConnectionState

pytestmark = pytest.mark.redis

IEX = "/v2/iex"
STREAM = "/stream"
CREDS = Credentials(KEY, SECRET)
OPTIONS = ConnectionOptions(
    backoff_initial=0.05, backoff_max=0.25, close_timeout=0.5, open_timeout=5.0
)


def fast_sharing(prefix: str, **overrides: Any) -> SharingOptions:
    values: dict[str, Any] = {
        "prefix": prefix,
        "lock_ttl": 1.5,
        "renew_interval": 0.25,
        "heartbeat_interval": 0.25,
        "heartbeat_ttl": 1.0,
        "command_timeout": 1.0,
    }
    values.update(overrides)
    return SharingOptions(**values)


_NEVER = threading.Event()


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll state this test does not own (Redis, health snapshots) until a deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"within {timeout} s: {what}")
        _NEVER.wait(0.02)  # the polling period, bounded by the deadline above


@pytest.fixture
def emulator() -> Iterator[AlpacaEmulator]:
    with AlpacaEmulator() as emu:
        yield emu


@pytest.fixture
def rclient() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def registries(redis_prefix: str) -> Iterator[Callable[..., RedisConnectionRegistry]]:
    made: list[RedisConnectionRegistry] = []

    def make(
        *, url: str = REDIS_URL, candidate: bool = True, **sharing: Any
    ) -> RedisConnectionRegistry:
        registry = RedisConnectionRegistry(
            url, sharing=fast_sharing(redis_prefix, **sharing), candidate=candidate
        )
        made.append(registry)
        return registry

    yield make
    for registry in made:
        registry.close_all()


def health_of(registry: RedisConnectionRegistry, hub: StreamHub) -> Any:
    return registry.sharing_health(hub)


# -- sharing, union, confirmation, health -----------------------------------------------------


def test_two_processes_share_one_socket_subscribed_to_the_union(
    emulator: AlpacaEmulator, registries: Callable[..., RedisConnectionRegistry]
) -> None:
    first, second = registries(), registries()
    url = emulator.data_url(IEX)
    hub_a = first.acquire(CREDS, "stock", url, OPTIONS).hub
    hub_b = second.acquire(CREDS, "stock", url, OPTIONS).hub
    got_a, got_b = Recorder(), Recorder()
    sub_a = hub_a.subscribe(got_a, quotes=["AAPL", "MSFT"])
    sub_b = hub_b.subscribe(got_b, quotes=["MSFT", "TSLA"], trades=["TSLA"])
    sub_a.wait_confirmed(10)
    sub_b.wait_confirmed(10)

    subs = emulator.subscriptions(KEY, IEX)
    assert subs["quotes"] == {"AAPL", "MSFT", "TSLA"}
    assert subs["trades"] == {"TSLA"}
    emulator.publish(
        IEX, [quote("AAPL", bid_size=1), quote("MSFT", bid_size=2), quote("TSLA", bid_size=3)]
    )
    assert sorted(q.symbol for q in got_a.wait_for(2)) == ["AAPL", "MSFT"]
    assert sorted(q.symbol for q in got_b.wait_for(2)) == ["MSFT", "TSLA"]
    counters = emulator.counters(KEY, IEX)
    assert (counters.connections_accepted, counters.max_concurrent) == (1, 1)

    # Health: one leader, one follower, both naming the same leader, Redis up.
    rows = [health_of(first, hub_a), health_of(second, hub_b)]
    assert sorted(row.role for row in rows) == ["follower", "leader"]
    assert {row.leader for row in rows} == {
        first.identity if rows[0].role == "leader" else second.identity
    }
    assert {row.redis for row in rows} == {"up"}
    assert all(row.lag_ms is not None and row.lag_ms >= 0 for row in rows)
    assert first.health().connections[0].role == rows[0].role

    # The last interested process leaving drops a symbol upstream; a shared one stays.
    sub_b.close()
    emulator.wait_until(
        lambda: (
            emulator.subscriptions(KEY, IEX)["quotes"] == {"AAPL", "MSFT"}
            and not emulator.subscriptions(KEY, IEX)["trades"]
        ),
        5,
        message="TSLA dropped upstream",
    )
    sub_a.remove(quotes=["MSFT"])
    emulator.wait_until(lambda: emulator.subscriptions(KEY, IEX)["quotes"] == {"AAPL"}, 5)
    assert emulator.counters(KEY, IEX).max_concurrent == 1


def test_confirmed_means_subscribed_upstream_even_right_after_an_unsubscribe(
    emulator: AlpacaEmulator, registries: Callable[..., RedisConnectionRegistry]
) -> None:
    url = emulator.data_url(IEX)
    leader, follower = registries(), registries(candidate=False)
    leader.acquire(CREDS, "stock", url, OPTIONS).hub.subscribe(
        Recorder(), quotes=["SPY"]
    ).wait_confirmed(10)
    hub = follower.acquire(CREDS, "stock", url, OPTIONS).hub
    got = Recorder()
    sub = hub.subscribe(got, quotes=["AAPL"])
    sub.wait_confirmed(10)
    for round_ in range(8):
        sub.close()  # the only consumer of AAPL anywhere: the leader unsubscribes it
        if round_ % 2:
            wait_for(
                lambda: "AAPL" not in emulator.subscriptions(KEY, IEX)["quotes"],
                5,
                "AAPL unsubscribed upstream",
            )
        sub = hub.subscribe(got, quotes=["AAPL"])
        sub.wait_confirmed(10)
        assert "AAPL" in emulator.subscriptions(KEY, IEX)["quotes"], round_
        emulator.publish(IEX, [quote("AAPL", bid_size=round_)])
        assert got.wait_for(round_ + 1)[-1].bid_size == round_
    assert emulator.counters(KEY, IEX).max_concurrent == 1


def test_messages_keep_their_types_through_redis(
    emulator: AlpacaEmulator, registries: Callable[..., RedisConnectionRegistry]
) -> None:
    hub = registries().acquire(CREDS, "stock", emulator.data_url(IEX), OPTIONS).hub
    raw, models = Recorder(), Recorder()
    hub.subscribe(raw, quotes=["AAPL"], raw=True).wait_confirmed(10)
    hub.subscribe(models, quotes=["AAPL"]).wait_confirmed(10)
    at = datetime(2024, 1, 2, 15, 30, 0, 123456, tzinfo=timezone.utc)
    emulator.publish(IEX, [quote("AAPL", bid=189.5, timestamp=at)])
    [message] = raw.wait_for(1)
    assert isinstance(message["t"], msgpack.Timestamp)
    [model] = models.wait_for(1)
    assert model.timestamp == at
    assert model.bid_price == 189.5


def test_a_container_works_unchanged_on_the_redis_registry(
    emulator: AlpacaEmulator, registries: Callable[..., RedisConnectionRegistry]
) -> None:
    registry = registries()
    container = AlpacaContainer()
    container.config.from_dict(
        {
            "api_key": KEY,
            "secret_key": SECRET,
            "data_stream_url": emulator.ws_url,
            "trading_stream_url": emulator.trading_stream_url,
            "api_url": emulator.api_url,
            "backoff_initial": 0.05,
            "backoff_max": 0.25,
            "close_timeout": 0.5,
            "sharing": "redis",
            "redis_url": REDIS_URL,
        }
    )
    container.registry.override(providers.Object(registry))
    container.init_resources()
    try:
        got = Recorder()
        container.stock_stream().subscribe(got, quotes=["NVDA"]).wait_confirmed(10)
        emulator.publish(IEX, [quote("NVDA")])
        assert got.wait_for(1)[0].symbol == "NVDA"
        assert container.stock_stream().state is ConnectionState.CONNECTED
    finally:
        container.shutdown_resources()
    emulator.wait_until(lambda: emulator.counters(KEY, IEX).open == 0, 5)
    assert emulator.counters(KEY, IEX).close_frames_received == 1


# -- errors from the leader reach every follower ---------------------------------------------


def test_a_symbol_limit_rejection_reaches_the_process_that_asked(
    emulator: AlpacaEmulator, registries: Callable[..., RedisConnectionRegistry]
) -> None:
    emulator.add_account(KEY, SECRET, symbol_limit=2)
    leader, follower = registries(), registries(candidate=False)
    url = emulator.data_url(IEX)
    hub_l = leader.acquire(CREDS, "stock", url, OPTIONS).hub
    hub_f = follower.acquire(CREDS, "stock", url, OPTIONS).hub
    kept = hub_l.subscribe(Recorder(), quotes=["AAPL", "MSFT"])
    kept.wait_confirmed(10)
    refused = hub_f.subscribe(Recorder(), quotes=["TSLA"])
    with pytest.raises(SymbolLimitError) as caught:
        refused.wait_confirmed(10)
    assert caught.value.symbols == (("quotes", "TSLA"),)
    # Everything else keeps working, and the refused symbol is not retried forever.
    got = Recorder()
    hub_f.subscribe(got, quotes=["AAPL"]).wait_confirmed(10)
    emulator.publish(IEX, [quote("AAPL")])
    assert got.wait_for(1)[0].symbol == "AAPL"
    assert emulator.counters(KEY, IEX).rejections.get(405, 0) == 1
    assert emulator.subscriptions(KEY, IEX)["quotes"] == {"AAPL", "MSFT"}


def test_bad_credentials_fail_every_process_with_the_named_error(
    emulator: AlpacaEmulator, registries: Callable[..., RedisConnectionRegistry]
) -> None:
    emulator.add_account(KEY, SECRET)
    wrong = Credentials(KEY, "not-the-secret")
    leader, follower = registries(), registries(candidate=False)
    url = emulator.data_url(IEX)
    hub_l = leader.acquire(wrong, "stock", url, OPTIONS).hub
    hub_f = follower.acquire(wrong, "stock", url, OPTIONS).hub
    hub_l.subscribe(Recorder(), quotes=["AAPL"])
    with pytest.raises(AuthenticationError):
        hub_f.wait_ready(10)
    with pytest.raises(AuthenticationError):
        hub_l.wait_ready(10)
    assert emulator.counters(KEY, IEX).rejections.get(402, 0) == 1  # not retried


# -- trade updates: exactly once, resumable ----------------------------------------------------


def test_trade_updates_reach_each_process_once_and_a_restarted_reader_resumes(
    emulator: AlpacaEmulator,
    registries: Callable[..., RedisConnectionRegistry],
    rclient: redis.Redis,
    redis_prefix: str,
) -> None:
    url = emulator.trading_stream_url
    leader = registries()
    got_l = Recorder()
    leader.acquire(CREDS, "trading", url, OPTIONS).hub.subscribe(
        got_l, trade_updates=True, raw=True
    ).wait_confirmed(10)
    reader = registries(candidate=False, consumer_id="reporting-1")
    lease = reader.acquire(CREDS, "trading", url, OPTIONS)
    got_r = Recorder()
    lease.hub.subscribe(got_r, trade_updates=True, raw=True).wait_confirmed(10)
    for seq in range(3):
        assert emulator.push_trade_update(KEY, _update(seq)) == 1
    assert [u["seq"] for u in got_r.wait_for(3)] == [0, 1, 2]

    # The reader stops; updates keep coming (the leader appends them to the stream).
    lease.release()
    reader.close_all()
    for seq in range(3, 6):
        assert emulator.push_trade_update(KEY, _update(seq)) == 1
    assert [u["seq"] for u in got_l.wait_for(6)] == list(range(6))

    # A new reader with the same consumer id resumes exactly where the old one stopped.
    again = registries(candidate=False, consumer_id="reporting-1")
    got_again = Recorder()
    again.acquire(CREDS, "trading", url, OPTIONS).hub.subscribe(
        got_again, trade_updates=True, raw=True
    ).wait_confirmed(10)
    assert emulator.push_trade_update(KEY, _update(6)) == 1
    assert [u["seq"] for u in got_again.wait_for(4)] == [3, 4, 5, 6]
    assert [u["seq"] for u in got_l.wait_for(7)] == list(range(7))

    # A lost XADD reply retried by the leader is delivered once: (epoch, seq) dedupes.
    keys = SharingKeys(redis_prefix, account_tag(CREDS, url))
    [(_id, fields)] = rclient.xrevrange(keys.updates, count=1)
    rclient.xadd(keys.updates, fields)
    assert emulator.push_trade_update(KEY, _update(7)) == 1
    assert [u["seq"] for u in got_again.wait_for(5)] == [3, 4, 5, 6, 7]
    assert [u["seq"] for u in got_l.wait_for(8)] == list(range(8))


# -- Redis failures ------------------------------------------------------------------------------


def test_a_follower_reports_a_lost_redis_and_recovers(
    emulator: AlpacaEmulator, registries: Callable[..., RedisConnectionRegistry]
) -> None:
    url = emulator.data_url(IEX)
    leader = registries()
    hub_l = leader.acquire(CREDS, "stock", url, OPTIONS).hub
    hub_l.subscribe(Recorder(), quotes=["SPY"]).wait_confirmed(10)
    with TcpProxy(6379) as proxy:
        follower = registries(url=f"redis://127.0.0.1:{proxy.port}/0", candidate=False)
        hub = follower.acquire(CREDS, "stock", url, OPTIONS).hub
        got = Recorder()
        hub.subscribe(got, quotes=["SPY"]).wait_confirmed(10)

        proxy.cut()
        wait_for(lambda: health_of(follower, hub).redis == "down", 10, "redis down in health")
        assert hub.state is ConnectionState.RECONNECTING
        assert not follower.health().healthy

        proxy.restore()
        wait_for(lambda: hub.state is ConnectionState.CONNECTED, 10, "follower back")
        assert health_of(follower, hub).redis == "up"
        emulator.publish(IEX, [quote("SPY", bid_size=7)])
        assert got.wait_for(1)[-1].bid_size == 7
        follower.close_all()
    assert emulator.counters(KEY, IEX).max_concurrent == 1


def test_a_leader_that_loses_redis_closes_its_socket_before_its_lock_expires(
    emulator: AlpacaEmulator,
    registries: Callable[..., RedisConnectionRegistry],
    rclient: redis.Redis,
    redis_prefix: str,
) -> None:
    url = emulator.data_url(IEX)
    keys = SharingKeys(redis_prefix, account_tag(CREDS, url))
    with TcpProxy(6379) as proxy:
        cut_off = registries(url=f"redis://127.0.0.1:{proxy.port}/0", lock_ttl=3.0)
        hub = cut_off.acquire(CREDS, "stock", url, OPTIONS).hub
        hub.subscribe(Recorder(), quotes=["AAPL"]).wait_confirmed(10)
        assert rclient.get(keys.leader).decode() == cut_off.identity
        standby = registries()
        standby_hub = standby.acquire(CREDS, "stock", url, OPTIONS).hub
        got = Recorder()
        standby_hub.subscribe(got, quotes=["AAPL"]).wait_confirmed(10)

        proxy.cut()
        emulator.wait_until(
            lambda: emulator.counters(KEY, IEX).open == 0,
            10,
            message="the fenced leader closed its socket",
        )
        remaining_ms = rclient.pttl(keys.leader)
        assert remaining_ms > 0, "the socket must close while the old lock still stands"
        # The standby takes over only once the lock expired: never two sockets.
        wait_for(
            lambda: (rclient.get(keys.leader) or b"").decode() == standby.identity,
            10,
            "the standby leads",
        )
        emulator.wait_until(lambda: emulator.counters(KEY, IEX).open == 1, 10)
        standby_hub.wait_ready(10)
        # Ready means authenticated; the new leader resends the subscription after that,
        # and the server drops quotes for symbols nobody subscribed to yet.
        emulator.wait_until(
            lambda: emulator.subscriptions(KEY, IEX)["quotes"] == {"AAPL"},
            10,
            message="the new leader resubscribed",
        )
        emulator.publish(IEX, [quote("AAPL", bid_size=9)])
        assert got.wait_for(1)[-1].bid_size == 9
        assert emulator.counters(KEY, IEX).max_concurrent == 1
        assert emulator.counters(KEY, IEX).close_frames_received == 1
        cut_off.close_all()  # before the proxy goes: no reconnect attempts to a closed port


def test_a_leader_holds_trade_updates_while_redis_is_away_and_appends_them_after(
    emulator: AlpacaEmulator, registries: Callable[..., RedisConnectionRegistry]
) -> None:
    url = emulator.trading_stream_url
    with TcpProxy(6379) as proxy:
        # A long lock: the blip below ends well before the leader would fence itself,
        # however slowly a loaded machine runs it.
        leader = registries(url=f"redis://127.0.0.1:{proxy.port}/0", lock_ttl=30.0)
        lease = leader.acquire(CREDS, "trading", url, OPTIONS)
        got_l = Recorder()
        lease.hub.subscribe(got_l, trade_updates=True, raw=True).wait_confirmed(10)
        follower = registries(candidate=False)
        got_f = Recorder()
        follower.acquire(CREDS, "trading", url, OPTIONS).hub.subscribe(
            got_f, trade_updates=True, raw=True
        ).wait_confirmed(10)
        assert emulator.push_trade_update(KEY, _update(0)) == 1
        got_f.wait_for(1)
        # The follower can read the entry before the leader has the XADD's reply: wait
        # for that too, or a cut in between leaves it held (and retried) as well.
        wait_for(lambda: health_of(leader, lease.hub).unpublished == 0, 10, "update 0 acked")

        proxy.cut()
        for seq in range(1, 6):
            assert emulator.push_trade_update(KEY, _update(seq)) == 1
        # The leader's own consumers have them at once, from memory; Redis has none yet.
        assert [u["seq"] for u in got_l.wait_for(6)] == list(range(6))
        wait_for(lambda: health_of(leader, lease.hub).unpublished == 5, 15, "five held")
        # The process notices a cut link at its next read or ping: wait for it to say so.
        wait_for(lambda: health_of(leader, lease.hub).redis == "down", 15, "redis down")
        assert [u["seq"] for u in got_f.items] == [0]

        proxy.restore()
        assert [u["seq"] for u in got_f.wait_for(6)] == list(range(6))
        wait_for(lambda: health_of(leader, lease.hub).unpublished == 0, 10, "all appended")
        assert emulator.push_trade_update(KEY, _update(6)) == 1
        assert [u["seq"] for u in got_f.wait_for(7)] == list(range(7))
        assert [u["seq"] for u in got_l.wait_for(7)] == list(range(7))  # once each
        assert emulator.counters(KEY, STREAM).connections_accepted == 1  # never fenced
        leader.close_all()  # before the proxy goes


def test_a_candidate_takes_over_as_soon_as_the_leader_says_goodbye(
    emulator: AlpacaEmulator,
    registries: Callable[..., RedisConnectionRegistry],
    rclient: redis.Redis,
    redis_prefix: str,
) -> None:
    url = emulator.data_url(IEX)
    keys = SharingKeys(redis_prefix, account_tag(CREDS, url))
    # Renewals a minute apart: a candidate that waited for its next tick would sit idle
    # for up to a minute; the leader's farewell wakes it instead.
    slow = {"lock_ttl": 180.0, "renew_interval": 60.0}
    leaving = registries(**slow)
    leaving.acquire(CREDS, "stock", url, OPTIONS).hub.subscribe(
        Recorder(), quotes=["AAPL"]
    ).wait_confirmed(10)
    assert rclient.get(keys.leader).decode() == leaving.identity
    standby = registries(**slow)
    got = Recorder()
    standby.acquire(CREDS, "stock", url, OPTIONS).hub.subscribe(
        got, quotes=["AAPL"]
    ).wait_confirmed(10)

    leaving.close_all()  # releases the lock after its close frame, with a farewell
    wait_for(
        lambda: (rclient.get(keys.leader) or b"").decode() == standby.identity,
        10,
        "the candidate took the released lock",
    )
    emulator.wait_until(
        lambda: emulator.subscriptions(KEY, IEX)["quotes"] == {"AAPL"},
        10,
        message="the new leader subscribed",
    )
    emulator.publish(IEX, [quote("AAPL", bid_size=3)])
    assert got.wait_for(1)[-1].bid_size == 3
    assert emulator.counters(KEY, IEX).max_concurrent == 1


def test_a_leader_whose_lock_is_taken_steps_down_at_once(
    emulator: AlpacaEmulator,
    registries: Callable[..., RedisConnectionRegistry],
    rclient: redis.Redis,
    redis_prefix: str,
) -> None:
    url = emulator.data_url(IEX)
    keys = SharingKeys(redis_prefix, account_tag(CREDS, url))
    registry = registries()
    hub = registry.acquire(CREDS, "stock", url, OPTIONS).hub
    got = Recorder()
    hub.subscribe(got, quotes=["AAPL"]).wait_confirmed(10)
    rclient.set(keys.leader, "impostor:1:000000", px=1000)  # e.g. an operator's mistake
    emulator.wait_until(
        lambda: emulator.counters(KEY, IEX).open == 0,
        5,
        message="the deposed leader closed its socket",
    )
    # Once the impostor's lock lapses, the registry leads again and data flows.
    emulator.wait_until(lambda: emulator.counters(KEY, IEX).open == 1, 10)
    hub.wait_ready(10)
    wait_for(lambda: emulator.subscriptions(KEY, IEX)["quotes"] == {"AAPL"}, 5, "resubscribed")
    emulator.publish(IEX, [quote("AAPL", bid_size=4)])
    assert got.wait_for(1)[-1].bid_size == 4
    assert emulator.counters(KEY, IEX).max_concurrent == 1


def test_redis_down_at_start_is_a_clear_error_or_an_explicit_fallback() -> None:
    settings = AlpacaSettings(
        api_key=KEY,
        secret_key=SECRET,
        sharing="redis",
        redis_url="redis://:hunter2@127.0.0.1:1/0",
    )
    sharing = SharingOptions(prefix="alpaca-di-test-down")
    with pytest.raises(RedisUnavailableError) as caught:
        redis_registry(settings, sharing=sharing, fallback_local=False)
    text = str(caught.value)
    assert "ALPACA_REDIS_URL" in text
    assert "redis://:***@127.0.0.1:1/0" in text
    assert "hunter2" not in text
    fallback = redis_registry(
        settings, sharing=SharingOptions(prefix="alpaca-di-test-fallback"), fallback_local=True
    )
    assert fallback is ConnectionRegistry.default()


# -- pieces ------------------------------------------------------------------------------------


def test_followers_without_any_candidate_say_so_when_they_time_out(
    emulator: AlpacaEmulator, registries: Callable[..., RedisConnectionRegistry]
) -> None:
    hub = registries(candidate=False).acquire(CREDS, "stock", emulator.data_url(IEX), OPTIONS).hub
    hub.subscribe(Recorder(), quotes=["AAPL"])
    with pytest.raises(TimeoutError, match="ALPACA_REDIS_ROLE=candidate"):
        hub.wait_ready(1.0)
    assert emulator.counters(KEY, IEX).connections_accepted == 0


def test_registry_for_follows_the_sharing_setting(redis_prefix: str) -> None:
    local = AlpacaSettings(api_key=KEY, secret_key=SECRET)
    assert registry_for(local) is ConnectionRegistry.default()
    shared = AlpacaSettings(
        api_key=KEY,
        secret_key=SECRET,
        sharing="redis",
        redis_url=REDIS_URL,
        redis_prefix=redis_prefix,
    )
    first = registry_for(shared)
    try:
        assert isinstance(first, RedisConnectionRegistry)
        assert registry_for(shared) is first  # one per process
        assert first.sharing.prefix == redis_prefix
    finally:
        first.close_all()


def test_sharing_options_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_REDIS_PREFIX", "app")
    monkeypatch.setenv("ALPACA_REDIS_ROLE", "Follower")
    monkeypatch.setenv("ALPACA_REDIS_FALLBACK_LOCAL", "true")
    monkeypatch.setenv("ALPACA_REDIS_LOCK_TTL", "6")
    monkeypatch.setenv("ALPACA_REDIS_CONSUMER_ID", "web-1")
    options, candidate, fallback = sharing_options(AlpacaSettings(api_key=KEY, secret_key=SECRET))
    assert (options.prefix, options.lock_ttl, options.renew_interval) == ("app", 6.0, 1.0)
    assert options.consumer_id == "web-1"
    assert (candidate, fallback) == (False, True)
    with pytest.raises(ConfigurationError, match="ALPACA_REDIS_ROLE"):
        AlpacaSettings(api_key=KEY, secret_key=SECRET, redis_role="boss")
    with pytest.raises(ConfigurationError, match="renew_interval"):
        SharingOptions(lock_ttl=1.0, renew_interval=0.5)
    with pytest.raises(ConfigurationError, match="lock_ttl"):
        RedisConnectionRegistry(
            REDIS_URL, sharing=SharingOptions(lock_ttl=1.0, renew_interval=0.2)
        ).acquire(CREDS, "stock", "ws://127.0.0.1:1/v2/iex", ConnectionOptions(close_timeout=1.0))


def test_keys_and_values_in_redis_hold_no_secret_and_no_key_id(
    emulator: AlpacaEmulator,
    registries: Callable[..., RedisConnectionRegistry],
    rclient: redis.Redis,
    redis_prefix: str,
) -> None:
    with structlog.testing.capture_logs() as logs:
        registry = registries()
        stock = registry.acquire(CREDS, "stock", emulator.data_url(IEX), OPTIONS).hub
        trading = registry.acquire(CREDS, "trading", emulator.trading_stream_url, OPTIONS).hub
        stock.subscribe(Recorder(), quotes=["AAPL"]).wait_confirmed(10)
        got = Recorder()
        trading.subscribe(got, trade_updates=True, raw=True).wait_confirmed(10)
        emulator.push_trade_update(KEY, _update(1))
        got.wait_for(1)
    assert any(entry["event"] == "gateway.leading" for entry in logs)
    assert SECRET not in repr(logs)
    assert SECRET not in repr(registry)
    dump = b""
    names = list(rclient.scan_iter(match=f"{redis_prefix}:*"))
    assert len(names) >= 6
    for name in names:
        dump += name
        kind = rclient.type(name)
        if kind == b"string":
            dump += rclient.get(name) or b""
        elif kind == b"hash":
            dump += b"".join(k + v for k, v in rclient.hgetall(name).items())
        elif kind == b"stream":
            for _id, fields in rclient.xrange(name):
                dump += b"".join(k + v for k, v in fields.items())
    assert KEY.encode() not in dump
    assert SECRET.encode() not in dump
    tag = account_tag(CREDS, emulator.data_url(IEX))
    assert tag != account_tag(CREDS, emulator.trading_stream_url)
    assert tag != account_tag(Credentials(KEY, "other-secret"), emulator.data_url(IEX))
    assert mask_redis_url("rediss://u:pw@h:1/0") == "rediss://u:***@h:1/0"


def test_leader_election_is_exclusive_renewable_and_fenced(redis_prefix: str) -> None:
    import asyncio

    async def scenario() -> None:
        client = redis_client(REDIS_URL, timeout=1.0)
        try:
            keys = SharingKeys(redis_prefix, "election")
            one = LeaderElector(client, keys, "one", ttl=0.6, guard=0.2)
            two = LeaderElector(client, keys, "two", ttl=0.6, guard=0.2)
            first_epoch = await one.acquire()
            assert first_epoch > 0
            assert one.leading
            assert await two.acquire() == 0
            status = LeaderStatus("one", first_epoch, "connected", {"quotes": ("AAPL",)})
            assert await one.renew(status.encode())
            assert LeaderStatus.decode(await client.get(keys.status)) == status
            assert not one.expired()
            assert await one.release(LeaderStatus("one", first_epoch, "gone").encode())
            second_epoch = await two.acquire()
            assert second_epoch > first_epoch
            assert not await one.renew()  # not the holder: no renewal
            await asyncio.sleep(0.7)  # the TTL itself is what this checks
            assert two.expired()
            third_epoch = await one.acquire()
            assert third_epoch > second_epoch  # the lapsed lock is free
            # Taking its own lock again (after stepping down) is a new term, never the
            # old epoch: the new term's updates are numbered from 1 again.
            assert await one.acquire() > third_epoch
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_redis_is_not_imported_in_local_mode() -> None:
    code = (
        "import sys\n"
        "from alpaca_di.containers import AlpacaContainer\n"
        "from alpaca_di.scaleout.registry import registry_for\n"
        "from alpaca_di.settings import AlpacaSettings\n"
        "registry_for(AlpacaSettings(api_key='PK', secret_key='s'))\n"
        "print('redis' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "False"


def test_the_gateway_command_leads_for_follower_only_processes(
    emulator: AlpacaEmulator,
    registries: Callable[..., RedisConnectionRegistry],
    redis_prefix: str,
) -> None:
    env = {
        **os.environ,
        "APCA_API_KEY_ID": KEY,
        "APCA_API_SECRET_KEY": SECRET,
        "ALPACA_DATA_STREAM_URL": emulator.ws_url,
        "ALPACA_TRADING_STREAM_URL": emulator.trading_stream_url,
        "ALPACA_SHARING": "redis",
        "ALPACA_REDIS_URL": REDIS_URL,
        "ALPACA_REDIS_PREFIX": redis_prefix,
        "ALPACA_REDIS_LOCK_TTL": "1.5",
        "ALPACA_CLOSE_TIMEOUT": "0.5",
    }
    gateway = subprocess.Popen(
        [sys.executable, "-m", "alpaca_di", "gateway", "--kinds", "stock,trading"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert gateway.stdout is not None
        line = gateway.stdout.readline()
        assert line.startswith("ready "), line + (gateway.stderr.read() if gateway.stderr else "")
        follower = registries(candidate=False)
        hub = follower.acquire(CREDS, "stock", emulator.data_url(IEX), OPTIONS).hub
        got = Recorder()
        hub.subscribe(got, quotes=["MSFT"]).wait_confirmed(15)
        emulator.publish(IEX, [quote("MSFT")])
        assert got.wait_for(1)[0].symbol == "MSFT"
        assert health_of(follower, hub).role == "follower"
        assert health_of(follower, hub).leader == line.split()[1]
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(10) == 0
        emulator.wait_until(lambda: emulator.counters(KEY, IEX).open == 0, 5)
        assert emulator.counters(KEY, IEX).close_frames_received == 1
        wait_for(lambda: hub.state is not ConnectionState.CONNECTED, 5, "follower sees it go")
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait(5)


def test_closing_is_prompt_while_demand_changes_are_in_flight(
    emulator: AlpacaEmulator, registries: Callable[..., RedisConnectionRegistry]
) -> None:
    url = emulator.data_url(IEX)
    for round_ in range(5):
        registry = registries()
        hub = registry.acquire(CREDS, "stock", url, OPTIONS).hub
        subs = [hub.subscribe(Recorder(), quotes=[s]) for s in ("AAPL", "MSFT", "TSLA", "SPY")]
        subs[0].wait_confirmed(10)
        for sub in subs[1:]:
            sub.close()
        registry.close_all(timeout=5)
        assert hub.state is ConnectionState.CLOSED, round_
    emulator.wait_until(lambda: emulator.counters(KEY, IEX).open == 0, 5)


def _update(seq: int) -> dict[str, Any]:
    order = {"id": f"order-{seq}", "client_order_id": f"c-{seq}", "symbol": "AAPL"}
    return {"event": "new", "timestamp": "2024-01-02T15:30:00Z", "order": order, "seq": seq}
