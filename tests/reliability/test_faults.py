"""Connection faults: drops, mutes, 407, 429, a held slot (406), a server restart.

After every fault the scenario proves the same three things:

* **subscriptions restored**: the emulator's wire set for the key is exactly
  what the consumers hold, and a message published afterwards reaches them;
* **transitions as documented**: every state change the hub reported (state
  listener) is an edge of ``idle → connecting → authenticating → connected →
  reconnecting → connecting … → closed`` (or ``failed``), and ``health()``
  shows the same recent transitions;
* **health reflects it**: ``reconnects`` counts the reconnect attempts and
  ``last_error`` names the fault.

And throughout: never a second socket for the key (``max_concurrent == 1``).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable

import pytest
from _reliability_support import FIGURES, IEX, KEY
from alpaca.data.models import Quote, Trade

from alpaca_di.credentials import Credentials
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.errors import ConnectionLimitError
from alpaca_di.hub import ConnectionRegistry, Lease, StreamHub
from alpaca_di.protocol import StreamKind
from alpaca_di.testing.messages import quote, trade
from alpaca_di.transport import ConnectionOptions, ConnectionState

S = ConnectionState
ALLOWED = {
    (S.IDLE, S.CONNECTING),
    (S.CONNECTING, S.AUTHENTICATING),
    (S.CONNECTING, S.RECONNECTING),  # handshake refused or no server
    (S.AUTHENTICATING, S.CONNECTED),
    (S.AUTHENTICATING, S.RECONNECTING),  # 406, or dropped during auth
    (S.CONNECTED, S.RECONNECTING),
    (S.RECONNECTING, S.CONNECTING),
    *((state, S.CLOSED) for state in S if not state.is_final),
    *((state, S.FAILED) for state in S if not state.is_final),
}
WAIT = 10.0
MARK = 10_000_000  # published messages carry ids from here (synthetic ones count from 1)


class Marked:
    """A handler keeping the published (marked) messages, ignoring synthetic ones."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.items: list[int] = []

    def __call__(self, message: object) -> None:
        if isinstance(message, Quote):
            mark = int(message.bid_size)
        elif isinstance(message, Trade):
            mark = int(message.id)
        else:
            mark = 0
        if mark >= MARK:
            with self.cond:
                self.items.append(mark)
                self.cond.notify_all()

    def wait_for(self, count: int, timeout: float) -> list[int]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.items) >= count, timeout), (
                f"received {len(self.items)} of {count} published messages"
            )
            return list(self.items)


class Transitions:
    """Every (previous, state) the hub reports, with a wait for the next ``connected``."""

    def __init__(self, hub: StreamHub) -> None:
        self.cond = threading.Condition()
        self.changes: list[tuple[ConnectionState, ConnectionState]] = []
        self.remove = hub.add_state_listener(self._on_state)

    def _on_state(self, state: ConnectionState, previous: ConnectionState) -> None:
        with self.cond:
            self.changes.append((previous, state))
            self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.changes)

    def wait(self, predicate: Callable[[list[tuple[S, S]]], bool], what: str) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: predicate(self.changes), WAIT), (
                f"not within {WAIT} s: {what}; transitions: {self.changes[-12:]}"
            )

    def reached(self, state: ConnectionState, since: int) -> None:
        self.wait(lambda changes: any(new is state for _, new in changes[since:]), state.value)

    def check(self, hub: StreamHub) -> None:
        with self.cond:
            changes = list(self.changes)
        bad = [change for change in changes if change not in ALLOWED]
        assert not bad, f"undocumented transitions {bad} in {changes}"
        health = hub.health().transitions
        # health keeps the last ten; the listener saw them all, in the same order.
        assert [t.state for t in health] == [new.value for _, new in changes][-len(health) :]
        FIGURES["faults: state transitions checked"] += len(changes)


class World:
    """One hub with a consumer, and the checks run after every fault."""

    def __init__(self, lease: Lease, emulator: AlpacaEmulator) -> None:
        self.lease = lease
        self.hub = lease.hub
        self.emulator = emulator
        self.transitions = Transitions(self.hub)
        self.recorder = Marked()
        self.sub = self.hub.subscribe(
            self.recorder, quotes=["AAPL", "MSFT"], trades=["*"], daily_bars=["SPY"]
        )
        self.sub.wait_confirmed(WAIT)
        self.wanted = emulator.subscriptions(KEY, IEX)
        assert self.wanted["quotes"] == {"AAPL", "MSFT"}
        self.published = 0

    def restored(self, accepted: int) -> None:
        """The session ``accepted`` is up, restored, and data reaches the consumer."""
        emulator = self.emulator
        emulator.wait_until(
            lambda: (
                emulator.counters(KEY, IEX).connections_accepted >= accepted
                and emulator.counters(KEY, IEX).open == 1
                and emulator.subscriptions(KEY, IEX) == self.wanted
            ),
            WAIT,
            message=f"session {accepted} up with every subscription restored",
        )
        self.sub.wait_confirmed(WAIT)
        self.published += 1
        emulator.publish(IEX, [quote("AAPL", bid_size=MARK + self.published)])
        self.published += 1
        emulator.publish(IEX, [trade("TSLA", trade_id=MARK + self.published)])
        received = self.recorder.wait_for(self.published, WAIT)
        assert received == [MARK + n for n in range(1, self.published + 1)], "lost or duplicated"
        assert emulator.counters(KEY, IEX).max_concurrent == 1
        FIGURES["faults: recoveries proven"] += 1

    def finish(self) -> None:
        self.transitions.check(self.hub)
        self.lease.release()
        assert self.hub.state is ConnectionState.CLOSED
        assert self.emulator.counters(KEY, IEX).max_concurrent == 1


@pytest.fixture
def world(registry: ConnectionRegistry, emulator: AlpacaEmulator, creds: Credentials) -> World:
    options = ConnectionOptions(backoff_initial=0.01, backoff_max=0.05, open_timeout=5.0)
    lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX), options)
    return World(lease, emulator)


def test_twenty_drops_with_and_without_close_frames(world: World) -> None:
    emulator, hub = world.emulator, world.hub
    codes = itertools.cycle([1000, 1001, 1011, 4000])
    for n in range(20):
        close_frame = n % 2 == 0
        code = next(codes)
        mark = world.transitions.mark()
        assert emulator.drop_connections(IEX, close_frame=close_frame, code=code) == 1
        world.transitions.reached(ConnectionState.RECONNECTING, mark)
        error = hub.health().last_error or ""
        if close_frame:
            assert str(code) in error, error
        else:
            assert "no close frame" in error, error
        world.transitions.reached(ConnectionState.CONNECTED, mark)
        world.restored(accepted=n + 2)
        FIGURES["faults injected: drops"] += 1
    health = hub.health()
    # One attempt per drop, plus one per 406 if a new session outran the old one's cleanup.
    assert health.reconnects == 20 + emulator.counters(KEY, IEX).rejections.get(406, 0)
    assert health.state == "connected"
    assert emulator.counters(KEY, IEX).connections_accepted == 21
    world.finish()


def test_mute_longer_than_data_timeout_recycles_the_socket(
    registry: ConnectionRegistry, creds: Credentials
) -> None:
    options = ConnectionOptions(
        backoff_initial=0.01, backoff_max=0.05, open_timeout=5.0, data_timeout=0.5
    )
    with AlpacaEmulator(rate=400, seed=5, sequence=True) as emulator:
        lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX), options)
        world = World(lease, emulator)
        for _ in range(3):
            accepted = emulator.counters(KEY, IEX).connections_accepted
            mark = world.transitions.mark()
            emulator.mute(IEX)
            world.transitions.reached(ConnectionState.RECONNECTING, mark)
            emulator.mute(IEX, muted=False)
            assert "no data for 0.5 s" in (world.hub.health().last_error or "")
            world.transitions.reached(ConnectionState.CONNECTED, mark)
            world.restored(accepted=accepted + 1)
            FIGURES["faults injected: mutes"] += 1
        assert world.hub.health().reconnects >= 3
        world.finish()


def test_407_slow_client_disconnects_reconnect_and_say_so(world: World) -> None:
    emulator, hub = world.emulator, world.hub
    for n in range(5):
        mark = world.transitions.mark()
        assert emulator.slow_client(IEX) == 1
        world.transitions.reached(ConnectionState.RECONNECTING, mark)
        assert "407" in (hub.health().last_error or ""), hub.health().last_error
        world.transitions.reached(ConnectionState.CONNECTED, mark)
        world.restored(accepted=n + 2)
        FIGURES["faults injected: 407 slow client"] += 1
    counters = emulator.counters(KEY, IEX)
    assert counters.rejections.get(407) == 5
    assert hub.health().reconnects == 5 + counters.rejections.get(406, 0)
    world.finish()


def test_429_at_the_handshake_is_retried_with_backoff(world: World) -> None:
    emulator, hub = world.emulator, world.hub
    refused = emulator.stats().refused_handshakes
    emulator.refuse_handshake(429, times=5, path=IEX)
    mark = world.transitions.mark()
    emulator.drop_connections(IEX, close_frame=True, code=1001)
    world.transitions.wait(
        lambda changes: (
            sum(1 for old, new in changes[mark:] if (old, new) == (S.CONNECTING, S.RECONNECTING))
            >= 5
        ),
        "five refused handshakes",
    )
    assert "HTTP 429" in (hub.health().last_error or "")
    world.transitions.reached(ConnectionState.CONNECTED, mark)
    world.restored(accepted=2)
    assert emulator.stats().refused_handshakes - refused == 5
    assert hub.health().reconnects == 6 + emulator.counters(KEY, IEX).rejections.get(406, 0)
    FIGURES["faults injected: HTTP 429 handshakes"] += 5
    world.finish()


def test_a_slot_held_after_an_unclean_drop_gives_406_then_recovers(
    registry: ConnectionRegistry, creds: Credentials
) -> None:
    options = ConnectionOptions(
        backoff_initial=0.02, backoff_max=0.1, open_timeout=5.0, connection_limit_grace=30.0
    )
    with AlpacaEmulator(slot_hold_seconds=1.0, seed=5) as emulator:
        lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX), options)
        world = World(lease, emulator)
        for n in range(2):
            mark = world.transitions.mark()
            rejected = emulator.counters(KEY, IEX).rejections.get(406, 0)
            emulator.drop_connections(IEX, close_frame=False)
            emulator.wait_until(
                lambda r=rejected: emulator.counters(KEY, IEX).rejections.get(406, 0) > r,
                WAIT,
                message="a reconnect refused with 406 while the slot is held",
            )
            world.transitions.wait(
                lambda changes, m=mark: (S.AUTHENTICATING, S.RECONNECTING) in changes[m:],
                "the 406 seen by the client",
            )
            assert "406" in (world.hub.health().last_error or "")
            assert world.hub.state is not ConnectionState.FAILED
            world.transitions.reached(ConnectionState.CONNECTED, mark)
            world.restored(accepted=n + 2)
            FIGURES["faults injected: held slots (406)"] += 1
        world.finish()


def test_406_past_the_grace_window_fails_with_the_named_error(
    registry: ConnectionRegistry, creds: Credentials, guard
) -> None:
    options = ConnectionOptions(
        backoff_initial=0.02, backoff_max=0.05, open_timeout=5.0, connection_limit_grace=0.3
    )
    with AlpacaEmulator(slot_hold_seconds=60.0, seed=5) as emulator:
        lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX), options)
        world = World(lease, emulator)
        emulator.drop_connections(IEX, close_frame=False)
        world.transitions.reached(ConnectionState.FAILED, 0)
        with pytest.raises(ConnectionLimitError, match="406") as caught:
            world.hub.wait_ready(WAIT)
        guard.exception(caught.value)
        assert world.sub.closed, "a failed connection closes its subscriptions"
        attempts = emulator.counters(KEY, IEX).auth_attempts
        assert world.hub.health().state == "failed"
        world.transitions.check(world.hub)
        lease.release()
        # failed is final: no attempt after it.
        assert emulator.counters(KEY, IEX).auth_attempts == attempts
        FIGURES["faults injected: 406 past the grace window"] += 1


def test_emulator_restart_on_the_same_port(world: World) -> None:
    emulator, hub = world.emulator, world.hub
    port = emulator.port
    for n in range(3):
        mark = world.transitions.mark()

        def while_down(mark: int = mark) -> None:
            # Nothing listens: the hub must notice and keep retrying.
            world.transitions.wait(
                lambda changes: (
                    sum(
                        1
                        for old, new in changes[mark:]
                        if (old, new) == (S.CONNECTING, S.RECONNECTING)
                    )
                    >= 2
                ),
                "two refused connection attempts while the server is down",
            )

        emulator.restart(downtime=while_down)
        assert emulator.port == port
        assert hub.health().last_error
        world.transitions.reached(ConnectionState.CONNECTED, mark)
        # A restarted server starts empty: the hub must subscribe everything again.
        world.restored(accepted=n + 2)
        FIGURES["faults injected: server restarts"] += 1
    assert hub.health().reconnects >= 3 * 3  # per restart: two refused attempts, one success
    world.finish()


def test_async_waits_from_another_loop_during_an_outage_tie_up_no_thread(
    registry: ConnectionRegistry, emulator: AlpacaEmulator, creds: Credentials
) -> None:
    """An async app awaiting a hub that runs elsewhere (the runtime thread) uses no thread.

    Forty ``await hub.ready()`` / ``await sub.confirmed()`` while the server
    refuses every handshake: a thread per waiter would starve the app's default
    executor for as long as the outage lasts.
    """
    options = ConnectionOptions(backoff_initial=0.01, backoff_max=0.05, open_timeout=5.0)
    lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX), options)
    hub = lease.hub
    emulator.refuse_handshake(503, times=10**6, path=IEX)
    sub = hub.subscribe(quotes=["AAPL"])

    async def main() -> None:
        assert hub.loop is not asyncio.get_running_loop()
        threads = threading.active_count()
        waits = [asyncio.ensure_future(hub.ready(WAIT)) for _ in range(20)]
        waits += [asyncio.ensure_future(sub.confirmed(WAIT)) for _ in range(20)]
        await asyncio.sleep(0)  # one loop turn: every waiter has started waiting
        assert not any(wait.done() for wait in waits)
        assert threading.active_count() == threads, [t.name for t in threading.enumerate()]
        emulator.reset_faults()
        await asyncio.gather(*waits)

    asyncio.run(main())
    assert hub.state is ConnectionState.CONNECTED
    FIGURES["faults: async waits across loops during an outage"] += 40
    lease.release()


def test_a_406_storm_inside_the_grace_window_recovers(world: World) -> None:
    emulator, hub = world.emulator, world.hub
    mark = world.transitions.mark()
    emulator.reject_auth(406, times=20, path=IEX)
    emulator.drop_connections(IEX, close_frame=False)
    world.transitions.wait(
        lambda changes: changes[mark:].count((S.AUTHENTICATING, S.RECONNECTING)) >= 20,
        "twenty 406 replies",
    )
    assert "406" in (hub.health().last_error or "")
    world.transitions.reached(ConnectionState.CONNECTED, mark)
    world.restored(accepted=2)
    rejected = emulator.counters(KEY, IEX).rejections.get(406, 0)
    assert rejected >= 20
    assert hub.health().reconnects == 1 + rejected
    FIGURES["faults injected: 406 storm replies"] += 20
    world.finish()
