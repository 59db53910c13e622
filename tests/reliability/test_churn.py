"""Churn under load: many threads and tasks subscribing and unsubscribing on one hub.

While the emulator streams sequence-numbered trades and quotes at a high rate,
50 threads (sync handlers) and 50 asyncio tasks (async handlers, on an app loop
of their own) subscribe, add, remove and close random (channel, symbol) pairs.
Every message carries a number counting 1, 2, 3 ... per (connection, channel,
symbol) (``AlpacaEmulator(sequence=True)``), so each consumer can prove, per
subscription episode of a pair:

* **no duplicate, no reordering**, ever;
* **no gap, completeness**: past the number the emulator had generated when
  ``wait_confirmed`` returned (the bound), the consumer receives exactly
  ``bound+1, bound+2, ...`` up to everything generated before it removes the
  pair (consumers whose queue never overflowed; overflows are counted);
* **no foreign message**: nothing for a pair it does not hold; after ``remove()``
  or ``close()`` returned, at most one handler call that was already starting
  (a sync handler runs on a worker thread) and never a second one;
* **valid objects**: alpaca-py ``Trade``/``Quote`` models, or wire dicts with
  ``raw=True``, of the expected symbol.

At quiescent points (every actor parked with its subscription confirmed) the
wire set the emulator holds must equal the union of what the consumers hold, and
the hub's health must count the same consumers and symbols. Throughout, the
emulator must never see a second socket for the key (``max_concurrent == 1``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from _reliability_support import FIGURES, IEX, KEY, NOTES, scaled, wait_for
from alpaca.data.models import Quote, Trade

from alpaca_di.credentials import Credentials
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.hub import ConnectionRegistry, StreamHub, Subscription
from alpaca_di.protocol import StreamKind
from alpaca_di.transport import ConnectionOptions

Pair = tuple[str, str]

THREADS = 50
TASKS = 50
DURATION = scaled(10.0)
CHECKPOINTS = 3
RATE = 20_000
SYMBOLS = [f"CH{n:02d}" for n in range(32)]
CHANNELS = ("trades", "quotes")
MAX_HELD = 5
WAIT = 15.0  # deadline of every wait in this scenario


def _channels(pairs: set[Pair]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for channel, symbol in sorted(pairs):
        out.setdefault(channel, []).append(symbol)
    return out


class Consumer:
    """One subscription's expectations; its handler checks every message it gets."""

    def __init__(self, name: str, *, raw: bool) -> None:
        self.name = name
        self.raw = raw
        self.sub: Subscription | None = None
        self.cond = threading.Condition()
        self.held: set[Pair] = set()
        self.seqs: dict[Pair, list[int]] = {}  # numbers received in the current episode
        self.bound: dict[Pair, int] = {}
        self.closed = False
        self.epoch = 0  # counts remove()/close() calls that returned
        self.removed_at: dict[Pair, int] = {}  # pair -> the epoch of its last removal
        self.closed_at = -1
        self.late: Counter[int] = Counter()  # epoch -> deliveries after that call returned
        self.messages = 0
        self.messages_verified = 0
        self.episodes = 0
        self.lossy = False
        self.violations: list[str] = []
        self.on_progress: Callable[[], None] | None = None

    # -- the handler side -------------------------------------------------------------

    def decode(self, message: Any) -> tuple[str, str, int] | None:
        if self.raw:
            if type(message) is not dict:
                self.violation(f"raw consumer got a {type(message).__name__}")
                return None
            channel = {"t": "trades", "q": "quotes"}.get(message.get("T"))
            symbol, seq = message.get("S"), message.get("seq")
            if channel is None or type(symbol) is not str or type(seq) is not int:
                self.violation(f"raw consumer got a bad dict {message!r:.200}")
                return None
            return channel, symbol, seq
        if type(message) is Trade:
            return "trades", message.symbol, int(message.id)
        if type(message) is Quote:
            return "quotes", message.symbol, int(message.bid_size)
        self.violation(f"model consumer got a {type(message).__name__}")
        return None

    def check(self, message: Any) -> None:
        decoded = self.decode(message)
        if decoded is None:
            return
        channel, symbol, seq = decoded
        pair = (channel, symbol)
        with self.cond:
            self.messages += 1
            if self.closed or (pair not in self.held and (channel, "*") not in self.held):
                # After remove()/close() returned, one handler call that had already
                # started may finish (it runs on a worker thread); never a second one.
                epoch = self.closed_at if self.closed else self.removed_at.get(pair)
                if epoch is None:
                    self.violation(f"{pair} #{seq} delivered but never subscribed")
                    return
                self.late[epoch] += 1
                if self.late[epoch] > 1:
                    what = "closed" if self.closed else "removed"
                    self.violation(f"second late delivery of {pair} #{seq} ({what})")
                return
            seqs = self.seqs.setdefault(pair, [])
            if seqs and seq <= seqs[-1]:
                self.violation(f"{pair}: #{seq} after #{seqs[-1]} (duplicate or reordered)")
            seqs.append(seq)
            self.cond.notify_all()
        if self.on_progress is not None:
            self.on_progress()

    def _dropped(self) -> bool:
        if self.sub is not None and self.sub.stats.dropped:
            self.lossy = True
        return self.lossy

    def violation(self, text: str) -> None:
        self.violations.append(f"{self.name}: {text}")

    async def acheck(self, message: Any) -> None:
        self.check(message)

    # -- the actor side -----------------------------------------------------------------

    def will_hold(self, pairs: set[Pair]) -> None:
        """Before subscribe/add: the pairs are allowed, their episodes start fresh."""
        with self.cond:
            for pair in pairs:
                self.held.add(pair)
                self.seqs.pop(pair, None)
                self.bound.pop(pair, None)

    def confirmed(self, pairs: set[Pair], sequences: dict[Pair, int]) -> None:
        """After wait_confirmed: every number past this one must arrive, in order."""
        with self.cond:
            for pair in pairs:
                self.bound[pair] = sequences.get(pair, 0)

    def _last(self, pair: Pair) -> int:
        seqs = self.seqs.get(pair)
        return seqs[-1] if seqs else 0

    def missing(self, pairs: set[Pair], sequences: dict[Pair, int]) -> dict[Pair, tuple[int, int]]:
        """Pairs whose messages up to the emulator's current number did not all arrive yet."""
        with self.cond:
            return {
                pair: (self._last(pair), sequences.get(pair, 0))
                for pair in pairs
                if self._last(pair) < sequences.get(pair, 0)
            }

    def verify(self, pair: Pair) -> None:
        """One episode of ``pair`` is over: it must hold every number past its bound.

        Numbers up to the bound (what the emulator had generated when the add was
        confirmed) may be missing or stale: they were routed before the pair was
        (re-)added. Past it, the episode must be exactly ``bound+1, bound+2, ...``.
        """
        bound = self.bound.get(pair, 0)
        fresh = [seq for seq in self.seqs.get(pair, ()) if seq > bound]
        broken = fresh and fresh != list(range(bound + 1, bound + 1 + len(fresh)))
        if broken and not self._dropped():
            gaps = [(a, b) for a, b in itertools.pairwise(fresh) if b != a + 1][:3]
            start = fresh[0]
            self.violation(f"{pair}: after #{bound}, starts at #{start}, gaps {gaps}")
        self.messages_verified += len(fresh)

    def end_episodes(self, pairs: set[Pair], *, closing: bool) -> None:
        """After remove()/close() returned: verify each episode, then let the pairs go."""
        with self.cond:
            for pair in pairs:
                if pair[1] == "*":  # a wildcard episode: every symbol of the channel
                    for seen in [p for p in self.seqs if p[0] == pair[0]]:
                        self.verify(seen)
                else:
                    self.verify(pair)
                self.held.discard(pair)
                self.removed_at[pair] = self.epoch
                self.episodes += 1
            if closing:
                self.closed = True
                self.closed_at = self.epoch
            self.epoch += 1

    def complete(self, emulator: AlpacaEmulator, pairs: set[Pair], timeout: float) -> None:
        """Wait (sync handler) until every message generated so far for ``pairs`` arrived."""
        sequences = emulator.sequences(KEY, IEX)
        with self.cond:
            done = self.cond.wait_for(
                lambda: self._dropped() or not self.missing(pairs, sequences), timeout
            )
            if not done:
                self.violation(f"never received {self.missing(pairs, sequences)} (last, due)")


class Quiescence:
    """Parks every actor (thread or task) so the test can compare wire and consumers."""

    def __init__(self, actors: int) -> None:
        self.cond = threading.Condition()
        self.actors = actors
        self.parked = 0
        self.generation = 0
        self.pause = threading.Event()
        self.stop = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[int, asyncio.Event] = {}

    def park_sync(self) -> None:
        with self.cond:
            generation = self.generation
            self.parked += 1
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.generation != generation, WAIT * 4)

    async def park_async(self) -> None:
        with self.cond:
            generation = self.generation
            self.parked += 1
            self.cond.notify_all()
        event = self._events.setdefault(generation, asyncio.Event())
        with self.cond:
            if self.generation != generation:
                return
        await asyncio.wait_for(event.wait(), WAIT * 4)

    def wait_parked(self) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.parked == self.actors, WAIT), (
                f"only {self.parked} of {self.actors} actors parked"
            )

    def resume(self) -> None:
        with self.cond:
            generation = self.generation
            self.generation += 1
            self.parked = 0
            self.pause.clear()
            self.cond.notify_all()
        loop = self.loop
        if loop is not None:

            def release() -> None:
                self._events.setdefault(generation, asyncio.Event()).set()

            loop.call_soon_threadsafe(release)


class Churn:
    """The shared world of one churn run."""

    def __init__(self, hub: StreamHub, emulator: AlpacaEmulator) -> None:
        self.hub = hub
        self.emulator = emulator
        self.quiet = Quiescence(THREADS + TASKS)
        self.consumers: list[Consumer] = []
        self.lock = threading.Lock()
        self.ops: Counter[str] = Counter()
        self.errors: list[str] = []

    def new_consumer(self, name: str, raw: bool) -> Consumer:
        consumer = Consumer(name, raw=raw)
        with self.lock:
            self.consumers.append(consumer)
        return consumer

    def count(self, op: str) -> None:
        with self.lock:
            self.ops[op] += 1

    def open_pairs(self) -> set[Pair]:
        held: set[Pair] = set()
        with self.lock:
            consumers = list(self.consumers)
        for consumer in consumers:
            with consumer.cond:
                if not consumer.closed and consumer.sub is not None:
                    held |= consumer.held
        return held

    @staticmethod
    def pick(rng: random.Random, exclude: set[Pair], count: int) -> set[Pair]:
        pairs: set[Pair] = set()
        while len(pairs) < count:
            pair = (rng.choice(CHANNELS), rng.choice(SYMBOLS))
            if pair not in exclude:
                pairs.add(pair)
        return pairs


# ------------------------------------------------------------------------------- sync actors


def _sync_actor(world: Churn, index: int) -> None:
    rng = random.Random(1000 + index)
    emulator, hub, quiet = world.emulator, world.hub, world.quiet
    consumer: Consumer | None = None
    generation = 0
    try:
        while not quiet.stop.is_set():
            if quiet.pause.is_set():
                quiet.park_sync()
                continue
            if consumer is None:
                generation += 1
                consumer = world.new_consumer(f"thread{index}.{generation}", raw=index % 2 == 1)
                pairs = world.pick(rng, set(), rng.randint(1, 3))
                consumer.will_hold(pairs)
                consumer.sub = hub.subscribe(consumer.check, raw=consumer.raw, **_channels(pairs))
                consumer.sub.wait_confirmed(WAIT)
                consumer.confirmed(pairs, emulator.sequences(KEY, IEX))
                world.count("subscribe")
                continue
            assert consumer.sub is not None
            roll = rng.random()
            if roll < 0.45 and len(consumer.held) < MAX_HELD:
                pairs = world.pick(rng, consumer.held, rng.randint(1, 2))
                consumer.will_hold(pairs)
                consumer.sub.add(**_channels(pairs))
                consumer.sub.wait_confirmed(WAIT)
                consumer.confirmed(pairs, emulator.sequences(KEY, IEX))
                world.count("add")
            elif roll < 0.93 and consumer.held:
                pairs = {rng.choice(sorted(consumer.held))}
                consumer.complete(emulator, pairs, WAIT)
                consumer.sub.remove(**_channels(pairs))
                consumer.end_episodes(pairs, closing=False)
                consumer.sub.wait_confirmed(WAIT)
                world.count("remove")
            else:
                _close(consumer, emulator)
                world.count("close")
                consumer = None
        if consumer is not None:
            _close(consumer, emulator)
            consumer = None
    except BaseException as exc:
        world.errors.append(f"thread {index}: {type(exc).__name__}: {exc}")
        raise
    finally:
        if consumer is not None and consumer.sub is not None:
            consumer.sub.close()


def _close(consumer: Consumer, emulator: AlpacaEmulator) -> None:
    assert consumer.sub is not None
    held = set(consumer.held)
    consumer.complete(emulator, held, WAIT)
    consumer.sub.close()
    consumer.end_episodes(held, closing=True)


# ------------------------------------------------------------------------------- async actors


async def _async_actor(world: Churn, index: int, helpers: concurrent.futures.Executor) -> None:
    rng = random.Random(5000 + index)
    emulator, hub, quiet = world.emulator, world.hub, world.quiet
    loop = asyncio.get_running_loop()
    consumer: Consumer | None = None
    progress = asyncio.Event()
    generation = 0

    async def sequences() -> dict[Pair, int]:
        return await loop.run_in_executor(helpers, emulator.sequences, KEY, IEX)

    async def complete(pairs: set[Pair]) -> None:
        assert consumer is not None
        due = await sequences()
        deadline = loop.time() + WAIT
        while not consumer._dropped() and consumer.missing(pairs, due):
            progress.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                consumer.violation(f"never received {consumer.missing(pairs, due)} (last, due)")
                return
            try:
                await asyncio.wait_for(progress.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def close() -> None:
        assert consumer is not None
        assert consumer.sub is not None
        held = set(consumer.held)
        await complete(held)
        consumer.sub.close()
        consumer.end_episodes(held, closing=True)

    try:
        while not quiet.stop.is_set():
            if quiet.pause.is_set():
                await quiet.park_async()
                continue
            if consumer is None:
                generation += 1
                consumer = world.new_consumer(f"task{index}.{generation}", raw=index % 2 == 1)
                consumer.on_progress = progress.set
                pairs = world.pick(rng, set(), rng.randint(1, 3))
                consumer.will_hold(pairs)
                consumer.sub = hub.subscribe(consumer.acheck, raw=consumer.raw, **_channels(pairs))
                await consumer.sub.confirmed(WAIT)
                consumer.confirmed(pairs, await sequences())
                world.count("subscribe")
                continue
            assert consumer.sub is not None
            roll = rng.random()
            if roll < 0.45 and len(consumer.held) < MAX_HELD:
                pairs = world.pick(rng, consumer.held, rng.randint(1, 2))
                consumer.will_hold(pairs)
                consumer.sub.add(**_channels(pairs))
                await consumer.sub.confirmed(WAIT)
                consumer.confirmed(pairs, await sequences())
                world.count("add")
            elif roll < 0.93 and consumer.held:
                pairs = {rng.choice(sorted(consumer.held))}
                await complete(pairs)
                consumer.sub.remove(**_channels(pairs))
                consumer.end_episodes(pairs, closing=False)
                await consumer.sub.confirmed(WAIT)
                world.count("remove")
            else:
                await close()
                world.count("close")
                consumer = None
        if consumer is not None:
            await close()
            consumer = None
    except BaseException as exc:
        world.errors.append(f"task {index}: {type(exc).__name__}: {exc}")
        raise
    finally:
        if consumer is not None and consumer.sub is not None:
            consumer.sub.close()


def _run_tasks(world: Churn, ready: threading.Event) -> None:
    async def main() -> None:
        world.quiet.loop = asyncio.get_running_loop()
        with concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="churn-helper") as pool:
            tasks = [asyncio.create_task(_async_actor(world, n, pool)) for n in range(TASKS)]
            ready.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                world.errors.append(f"task failed: {type(result).__name__}: {result}")

    asyncio.run(main())


# ------------------------------------------------------------------------------- the scenario


def _check_quiescent(world: Churn, everything: list[Consumer]) -> None:
    """Every actor is parked: the wire must hold exactly what the consumers hold."""
    held = world.open_pairs()
    for consumer in everything:
        held |= consumer.held
    wanted = {channel: frozenset(s for c, s in held if c == channel) for channel in CHANNELS}
    emulator = world.emulator

    def wire() -> dict[str, frozenset[str]]:
        subs = emulator.subscriptions(KEY, IEX)
        return {channel: subs[channel] for channel in CHANNELS}

    emulator.wait_until(lambda: wire() == wanted, WAIT, message="wire set == union of consumers")
    with world.lock:
        open_subs = sum(1 for c in world.consumers if c.sub is not None and not c.closed)
    counts = {ch: len(symbols) for ch, symbols in wanted.items() if symbols}
    # A close() returns before the hub's loop forgets the subscription: wait, bounded.
    wait_for(
        lambda: (
            world.hub.health().consumers == open_subs + len(everything)
            and world.hub.health().subscriptions == counts
        ),
        WAIT,
        f"health counts {open_subs + len(everything)} consumers and {counts}",
    )
    counters = emulator.counters(KEY, IEX)
    assert counters.max_concurrent == 1
    assert counters.connections_accepted == 1


def test_churn_under_load_keeps_every_consumer_exact(
    registry: ConnectionRegistry, creds: Credentials
) -> None:
    options = ConnectionOptions(backoff_initial=0.01, backoff_max=0.05, open_timeout=5.0)
    with AlpacaEmulator(rate=RATE, sequence=True, seed=11, batch_size=200) as emulator:
        lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX), options)
        hub = lease.hub
        world = Churn(hub, emulator)
        # Two long-lived wildcard consumers see every symbol of their channel.
        everything = [Consumer("all-trades", raw=False), Consumer("all-quotes", raw=True)]
        for consumer, channel in zip(everything, CHANNELS, strict=True):
            consumer.will_hold({(channel, "*")})
            # Unbounded: they must see every number. A bounded queue may drop (counted)
            # under load, and a pair whose generation stopped would never be completed.
            consumer.sub = hub.subscribe(
                consumer.check, raw=consumer.raw, maxsize=None, **{channel: "*"}
            )
            consumer.sub.wait_confirmed(WAIT)
            consumer.confirmed(set(), {})
        sent_before = emulator.counters(KEY, IEX).messages_sent
        started = time.monotonic()

        threads = [
            threading.Thread(target=_sync_actor, args=(world, n), name=f"churn-{n}")
            for n in range(THREADS)
        ]
        tasks_ready = threading.Event()
        task_thread = threading.Thread(target=_run_tasks, args=(world, tasks_ready), name="app")
        task_thread.start()
        assert tasks_ready.wait(WAIT)
        for thread in threads:
            thread.start()
        try:
            for checkpoint in range(1, CHECKPOINTS + 1):
                # Load generation: let the actors churn for a while, then park them.
                world.quiet.stop.wait(DURATION / CHECKPOINTS)
                world.quiet.pause.set()
                world.quiet.wait_parked()
                _check_quiescent(world, everything)
                FIGURES["churn quiescent checks"] += 1
                if checkpoint < CHECKPOINTS:
                    world.quiet.resume()
        finally:
            world.quiet.stop.set()
            world.quiet.resume()
            for thread in threads:
                thread.join(WAIT * 2)
            task_thread.join(WAIT * 2)
        elapsed = time.monotonic() - started
        sent = emulator.counters(KEY, IEX).messages_sent - sent_before
        assert not any(thread.is_alive() for thread in [*threads, task_thread])
        assert not world.errors, "\n".join(world.errors[:20])

        # The wildcard consumers saw every number of every symbol, then close.
        final = emulator.sequences(KEY, IEX)
        for consumer, channel in zip(everything, CHANNELS, strict=True):
            pairs = {pair for pair in final if pair[0] == channel}
            consumer.complete(emulator, pairs, WAIT)
            assert consumer.sub is not None
            consumer.sub.close()
            consumer.end_episodes({(channel, "*")}, closing=True)
        emulator.wait_until(
            lambda: not any(emulator.subscriptions(KEY, IEX).values()),
            WAIT,
            message="every wire subscription released",
        )
        counters = emulator.counters(KEY, IEX)
        assert counters.max_concurrent == 1, "a second socket was opened for the same key"
        assert counters.connections_accepted == 1, "the connection was dropped under churn"
        health = hub.health()
        assert health.consumers == 0
        assert health.malformed == 0
        lease.release()

    consumers = [*world.consumers, *everything]
    violations = [text for consumer in consumers for text in consumer.violations]
    assert not violations, f"{len(violations)} violations:\n" + "\n".join(violations[:30])
    checked = sum(consumer.messages for consumer in consumers)
    lossy = sum(1 for consumer in consumers if consumer.lossy)
    assert checked > 0
    FIGURES["churn messages checked"] += checked
    FIGURES["churn messages proven in sequence"] += sum(c.messages_verified for c in consumers)
    FIGURES["churn messages sent by the emulator"] += sent
    FIGURES["churn episodes verified"] += sum(consumer.episodes for consumer in consumers)
    FIGURES["churn operations"] += sum(world.ops.values())
    FIGURES["churn consumers"] += len(consumers)
    FIGURES["churn consumers that overflowed"] += lossy
    NOTES["churn duration s"] = round(elapsed, 1)
    NOTES["churn achieved rate msg/s"] = round(sent / elapsed)
    NOTES["churn deliveries/s"] = round(checked / elapsed)
    NOTES["churn ops"] = dict(world.ops)


def test_a_symbol_readded_while_its_unsubscribe_is_in_flight_waits_for_the_new_ack(
    stock_lease: Any, emulator: AlpacaEmulator
) -> None:
    """``wait_confirmed`` means the server acknowledged: never on a stale ack.

    The last consumer of AAPL leaves (an unsubscribe goes out) and another one
    arrives before the server answered: the old ack, which listed AAPL, must not
    confirm the newcomer, or it would believe in data the server stopped sending.
    """
    hub = stock_lease.hub
    first = hub.subscribe(quotes=["AAPL"])
    first.wait_confirmed(WAIT)
    for round_ in range(3):
        emulator.pause_reading(IEX)
        first.remove(quotes=["AAPL"])
        first.wait_confirmed(WAIT)  # applied: the unsubscribe is on its way
        again = hub.subscribe(quotes=["AAPL"])
        try:
            # The server reads nothing now, so nothing can be acknowledged.
            again.wait_confirmed(0.2)
        except TimeoutError:
            pass
        else:
            raise AssertionError(
                f"round {round_}: confirmed by the ack that preceded the unsubscribe"
            )
        emulator.pause_reading(IEX, paused=False)
        again.wait_confirmed(WAIT)
        assert "AAPL" in emulator.subscriptions(KEY, IEX)["quotes"]
        first.add(quotes=["AAPL"])
        again.close()
        first.wait_confirmed(WAIT)
        FIGURES["stale-ack re-subscribe rounds"] += 1
