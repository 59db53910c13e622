"""The Redis side of the scale-out: a hub's upstream that reads through Redis.

Alpaca allows one socket per account and endpoint, whatever the number of
processes. In ``sharing="redis"`` mode one process (the *leader*, see
:mod:`alpaca_di.scaleout.leader`) holds the real socket and republishes what it
reads; every process -- the leader's own consumers included -- reads through a
:class:`RedisUpstream`, which implements the
:class:`~alpaca_di.transport.connection.Upstream` protocol, so
:class:`~alpaca_di.services.StreamHub` and everything above it work unchanged.
In the leader's own process, trade updates also arrive at once from the
leader's memory (:meth:`RedisUpstream.local_updates`), whatever Redis does.

The Redis keys and encodings it reads and writes are in
:mod:`alpaca_di.scaleout.wire`. A gap of the leader's socket reaches the hub as
a loss and a restore (also when no status said ``reconnecting``: the status
counts gaps), and the hub's backfill reads the leader's one fetch of it
(:class:`~alpaca_di.scaleout.backfill.SharedBarSource`).

Example (what :func:`alpaca_di.scaleout.registry.redis_registry` wires up)::

    upstream = RedisUpstream(url, kind=StreamKind.STOCK, credentials=creds,
                             options=ConnectionOptions(), subscriptions=state,
                             listener=hub, loop=loop, redis_url="redis://127.0.0.1:6379/0")
    upstream.start()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from alpaca_di._aio import wake
from alpaca_di.credentials import Credentials
from alpaca_di.credentials import mask_url as mask_redis_url  # its former name, still exported
from alpaca_di.errors import (
    ConnectionClosedError,
    ConnectionLimitError,
    ProtocolError,
    SymbolLimitError,
    describe_error,
    error_for_code,
)
from alpaca_di.protocol import StreamKind, SubscriptionState
from alpaca_di.scaleout.backfill import SharedBarSource
from alpaca_di.scaleout.client import RedisTarget, redis_client
from alpaca_di.scaleout.options import SharingOptions, new_identity
from alpaca_di.scaleout.updates import UpdateReader
from alpaca_di.scaleout.wire import (
    SLOT_HELD,
    GapRecord,
    LeaderStatus,
    Pair,
    SharingKeys,
    account_tag,
    decode_batch,
    encode_demand,
    encode_wants,
    error_from_record,
    is_permanent,
)
from alpaca_di.transport.backoff import Backoff, ExponentialBackoff
from alpaca_di.transport.connection import ConnectionListener
from alpaca_di.transport.options import ConnectionOptions
from alpaca_di.transport.states import ConnectionState, StateHistory

if TYPE_CHECKING:
    from alpaca_di.hub.gaps import BarSource

__all__ = ["RedisUpstream", "mask_redis_url"]

_log = structlog.get_logger(__name__)


_NO_LEADER = ConnectionClosedError(
    "no process leads this account and endpoint yet: is a leader candidate running "
    "(ALPACA_REDIS_ROLE=candidate, or an `alpaca-di gateway` process)?"
)


class _LeaderFailed(Exception):
    """The leader reported an upstream error retrying cannot heal: this upstream fails too."""


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


class RedisUpstream:
    """A hub's upstream fed through Redis by the group's leader.

    Implements :class:`~alpaca_di.transport.connection.Upstream`: it publishes
    the hub's demand (:meth:`SubscriptionState.desired`) with a heartbeat,
    delivers the leader's market-data batches (pub/sub) or trade updates (a
    Redis stream read from this reader's own position by an
    :class:`~alpaca_di.scaleout.updates.UpdateReader`: each update once per
    process, even across a leader change), confirms subscriptions from the
    leader's ack, and reports ``connected`` only while Redis is reachable *and*
    a leader holds a connected upstream socket. It reconnects to Redis with the
    hub's backoff. All methods run on ``loop``.

    Built by :func:`alpaca_di.scaleout.registry.redis_registry`; by hand::

        registry = ConnectionRegistry(connection_factory=functools.partial(
            RedisUpstream, redis_url="redis://127.0.0.1:6379/0"))
        hub = registry.acquire(creds, "stock", url).hub   # a Gateway must lead somewhere
    """

    def __init__(
        self,
        url: str,
        *,
        kind: StreamKind,
        credentials: Credentials,
        options: ConnectionOptions,
        subscriptions: SubscriptionState,
        listener: ConnectionListener,
        loop: asyncio.AbstractEventLoop,
        backoff: Backoff | None = None,
        redis_url: RedisTarget,
        sharing: SharingOptions | None = None,
        member: str | None = None,
        role: Callable[[], str] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
        held: Callable[[], int] | None = None,
    ) -> None:
        self.url = url
        self.kind = kind
        self.options = options
        self.subscriptions = subscriptions
        self.sharing = sharing or SharingOptions()
        self.keys = SharingKeys(self.sharing.prefix, account_tag(credentials, url))
        self.member = member or new_identity()
        self.history = StateHistory()
        self.reconnects = 0
        self.messages_received = 0
        self.malformed = 0
        self.stale = 0
        self.last_message_monotonic: float | None = None
        self.last_error: BaseException | None = None
        self._redis_url = redis_url
        self._listener = listener
        self._loop = loop
        self._backoff = backoff or ExponentialBackoff(options.backoff_initial, options.backoff_max)
        self._role = role
        self._on_close = on_close
        self._held = held
        self._client: Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._redis_up = False
        self._status: LeaderStatus | None = None
        self._status_seen = 0.0
        self._epoch = 0
        self._forwarded_ack: Mapping[str, tuple[str, ...]] | None = None
        self._ever_connected = False
        self._fatal: BaseException | None = None
        self._flush_scheduled = False
        self._demand_dirty = False
        self._demand_version = 0
        self._demand_waiter: asyncio.Future[None] | None = None
        self._lag_ms: float | None = None
        # Gaps of the leader's socket (per term): the last counted and filled, where
        # this upstream's loss began, and the one leader gap its last restore followed.
        self._gap_epoch = 0
        self._gap_seen = 0
        self._filled_seen = 0
        self._loss_mark: tuple[int, int, bool] | None = None
        self._restored: tuple[int, int] | None = None
        self._status_waiters: list[asyncio.Future[None]] = []
        self._records: dict[tuple[int, int], GapRecord | None] = {}
        self._wants: list[Pair] = []
        self._updates = UpdateReader(
            self.keys,
            self.sharing,
            self.sharing.consumer_id or self.member,
            deliver=self._deliver,
            malformed=self.count_malformed,
        )
        self._log = _log.bind(
            kind=kind.value, endpoint=url, fingerprint=credentials.fingerprint, group=self.keys.tag
        )

    # -- Upstream protocol ---------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The current state (``connected`` while Redis and the leader's socket are up)."""
        return self.history.state

    @property
    def started(self) -> bool:
        """True once :meth:`start` ran."""
        return self._task is not None

    def start(self) -> None:
        """Connect to Redis and register this process's demand (idempotent)."""
        if self._task is None and not self._closing:
            self._task = self._loop.create_task(self._run(), name=f"alpaca-di redis {self.url}")

    async def close(self) -> None:
        """Withdraw the demand, disconnect from Redis and tell the gateway; bounded."""
        if self._closing:
            return
        self._closing = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=self.options.close_timeout)
        client, self._client = self._client, None
        if client is not None:
            try:
                if task is not None:
                    await asyncio.wait_for(self._withdraw(client), self.sharing.command_timeout)
            except Exception as exc:  # Redis down: the demand expires with its TTL
                self._log.debug("redis.withdraw_failed", error=describe_error(exc))
            await _close_client(client)
        if self._on_close is not None:
            try:
                await self._on_close()
            except Exception as exc:
                self._log.warning("redis.gateway_release_failed", error=describe_error(exc))
        if not self.state.is_final:
            self._set_state(ConnectionState.CLOSED)

    def request_flush(self) -> None:
        """Publish the changed demand at the end of this loop tick (coalesced)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def count_malformed(self, reason: str) -> None:
        """Count (and log, rate-limited) a message that could not be decoded or parsed."""
        self.malformed += 1
        if self.malformed <= 10 or self.malformed % 1000 == 0:
            self._log.warning("redis.malformed", reason=reason, total=self.malformed)
        self._listener.on_malformed(reason)

    @property
    def duplicates(self) -> int:
        """Trade updates read twice (a leader retried an ``XADD``) and delivered once."""
        return self._updates.duplicates

    def local_updates(self, epoch: int, numbered: list[Any]) -> None:
        """Trade updates this process's own leader read: deliver them now (any thread).

        A :data:`~alpaca_di.scaleout.leader.LocalTap`: the same entries read back
        from the stream later are skipped, so each is delivered once.
        """
        if self.kind is not StreamKind.TRADING or self._closing:
            return
        try:
            self._loop.call_soon_threadsafe(self._on_local, epoch, list(numbered))
        except RuntimeError:  # the hub's loop is closed: nobody left to deliver to
            return

    def _on_local(self, epoch: int, numbered: list[Any]) -> None:
        if self._closing:
            return
        fresh = self._updates.take_local(epoch, numbered)
        if fresh:
            self._deliver(fresh)

    # -- health --------------------------------------------------------------------------

    def health_fields(self) -> dict[str, Any]:
        """Sharing fields for :class:`~alpaca_di.hub.health.ConnectionHealth`.

        ``role`` (``leader`` when this process's gateway holds the group's lock,
        else ``follower``), ``leader`` (the leader's identity), ``redis`` (``up``,
        ``down``, or ``None`` before the hub first connects), ``lag_ms`` (smoothed
        delay from the leader's publish to this process's receipt; wall clocks, so it
        includes clock skew across hosts) and ``unpublished`` (what this process's
        leader read that Redis has not taken yet) and ``limit_rejections`` (the 406
        replies the leader's socket got this term)::

            health = hub.health().model_copy(update=upstream.health_fields())
        """
        status = self._status
        return {
            "role": self._role() if self._role is not None else "follower",
            "leader": status.leader if status is not None else None,
            "redis": "up" if self._redis_up else ("down" if self.started else None),
            "lag_ms": round(self._lag_ms, 3) if self._lag_ms is not None else None,
            "unpublished": self._held() if self._held is not None else 0,
            "limit_rejections": status.limit_rejections if status is not None else None,
        }

    # -- state -----------------------------------------------------------------------------

    def _set_state(self, state: ConnectionState, error: BaseException | None = None) -> None:
        if state is self.history.state:
            return
        previous = self.history.record(state, describe_error(error))
        if error is not None:
            self.last_error = error
        if state is ConnectionState.RECONNECTING:
            self.reconnects += 1
            if previous is ConnectionState.CONNECTED and self._loss_mark is None:
                # Redis up: the leader's socket was lost (its gap count will grow).
                self._loss_mark = (self._gap_epoch, self._gap_seen, self._redis_up)
        log = self._log.warning if state is ConnectionState.FAILED else self._log.info
        log(
            "redis.state",
            state=state.value,
            previous=previous.value,
            leader=self._status.leader if self._status else None,
            error=describe_error(error),
        )
        self._listener.on_state(state, previous, error)

    def _evaluate(self) -> None:
        if self._closing or self.state.is_final:
            return
        status = self._status
        leader_error = self._leader_error(status)
        if leader_error is not None and status is not None:
            if status.state == ConnectionState.FAILED.value and is_permanent(leader_error):
                self._fatal = leader_error
                return
            # Anything else the leader reports (a 406 while an old socket holds the
            # slot, a drop, even a FAILED that retrying may heal) is transient here:
            # mirrored as reconnecting, with the leader's error as ours.
            self.last_error = leader_error
        if self._redis_up and status is not None and status.state == "connected":
            if self.state is not ConnectionState.CONNECTED:
                self._ever_connected = True
                self._forwarded_ack = None
                self._set_state(ConnectionState.CONNECTED)
            # The ack confirms our pairs only once the leader has applied our latest
            # demand: an older ack may predate an unsubscribe we caused.
            seen = status.seen.get(self.member, -1) >= self._demand_version
            if seen and status.ack != self._forwarded_ack and self._restore_ready(status):
                self._forwarded_ack = status.ack
                self._resolve_loss()
                self._listener.on_ack(status.ack)
            return
        if self._redis_up and status is None:
            self.last_error = _NO_LEADER
        self._set_state(
            ConnectionState.RECONNECTING if self._ever_connected else ConnectionState.CONNECTING
        )

    def _restore_ready(self, status: LeaderStatus) -> bool:
        """Whether ``status.ack`` confirms the session after a loss (the hub restores on it).

        After a loss of the leader's socket, its status says ``connected`` before the
        server confirmed the subscriptions again (the ack still empty): the restore
        waits for the status that counts the gap (or, from a leader that does not
        count gaps, carries an ack again).
        """
        mark = self._loss_mark
        if mark is None or not mark[2] or mark[0] != self._gap_epoch:
            return True
        return status.gap > mark[1] or bool(status.ack)

    def _resolve_loss(self) -> None:
        mark, self._loss_mark = self._loss_mark, None
        if mark is not None:
            # One leader gap alone in this loss (same term): its record is ours to read.
            alone = mark[:2] == (self._gap_epoch, self._gap_seen - 1)
            self._restored = (self._gap_epoch, self._gap_seen) if alone else None

    def _leader_error(self, status: LeaderStatus | None) -> BaseException | None:
        """The error the leader's status reports, rebuilt; ``None`` while it is connected."""
        if status is None or status.state == "connected":
            return None
        if status.error is None:
            if status.state == ConnectionState.FAILED.value:
                return ConnectionClosedError("the shared upstream failed")
            return None
        error = error_from_record(status.error, feed=self.options.feed)
        if isinstance(error, ConnectionLimitError):
            error = ConnectionLimitError(
                error.code,
                error.server_message,
                f"{SLOT_HELD} (leader {status.leader}: {status.limit_rejections} times this term)",
            )
        return error

    def _apply_status(self, status: LeaderStatus | None) -> None:
        if status is None:
            self._status = None
        elif status.epoch < self._epoch:
            self.stale += 1
            return
        elif status.state == "gone":
            self._epoch = status.epoch
            self._status = None
        else:
            new_term = status.epoch != self._epoch
            self._epoch = status.epoch
            self._status = status
            self._status_seen = self._loop.time()
            if new_term and self.state is ConnectionState.CONNECTED:
                # A new leader means a new upstream session: acks start over.
                self._set_state(ConnectionState.RECONNECTING)
            elif (
                status.epoch == self._gap_epoch
                and status.gap > self._gap_seen
                and self.state is ConnectionState.CONNECTED
            ):
                # The leader's socket dropped and came back between two statuses we
                # saw: a loss and a restore all the same (gap notice, backfill).
                self._set_state(ConnectionState.RECONNECTING)
            self._count_gaps(status)
            if status.rejected:
                self._apply_rejections(status.rejected)
        self._evaluate()

    def _count_gaps(self, status: LeaderStatus) -> None:
        if status.epoch != self._gap_epoch:
            self._gap_epoch, self._gap_seen, self._filled_seen = status.epoch, 0, 0
            self._records.clear()
        self._gap_seen = max(self._gap_seen, status.gap)
        self._filled_seen = max(self._filled_seen, status.filled)
        waiters, self._status_waiters = self._status_waiters, []
        for waiter in waiters:
            wake(waiter)

    # -- backfill through the leader -----------------------------------------------------

    def shared_backfill(self, fallback: BarSource) -> BarSource:
        """The hub's bar source: the leader's one fetch of a gap, ``fallback`` for the rest."""
        return SharedBarSource(self, fallback)

    def restored_gap(self) -> tuple[int, int] | None:
        """``(epoch, gap)`` of the leader gap the last restore followed, if it was one alone.

        ``None`` when the loss was this process's alone (its Redis link), spanned a
        new leader's term or several gaps: the hub's own REST source fetches then.
        """
        return self._restored

    def gap_record(self, gap: tuple[int, int]) -> GapRecord | None:
        """The leader's record of ``gap``, waiting for it up to ``backfill_timeout`` (a thread).

        ``None`` when it cannot be had (a new leader, or the record is gone): the
        caller fetches for itself.

        Raises:
            TimeoutError: the leader did not write it in time.
        """
        if self._loop.is_running() and _on_loop(self._loop):
            raise RuntimeError("gap_record() blocks: call it from a thread, not the hub's loop")
        if gap in self._records:
            return self._records[gap]
        timeout = self.sharing.backfill_timeout
        future = asyncio.run_coroutine_threadsafe(self._await_record(gap, timeout), self._loop)
        try:
            return future.result(timeout + self.sharing.command_timeout + 1.0)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(
                f"the group's leader did not publish its backfill within {timeout} s"
            ) from None

    async def _await_record(self, gap: tuple[int, int], timeout: float) -> GapRecord | None:
        epoch, seq = gap
        deadline = self._loop.time() + timeout
        while True:
            if self._gap_epoch != epoch:
                return None  # a new leader: it knows nothing of this gap
            client = self._client
            if self._filled_seen >= seq and client is not None and self._redis_up:
                try:
                    raw = await asyncio.wait_for(
                        client.get(self.keys.gap(epoch, seq)), self.sharing.command_timeout
                    )
                except (RedisError, OSError, asyncio.TimeoutError) as exc:
                    self._log.debug("redis.gap_record_failed", error=describe_error(exc))
                else:
                    record = GapRecord.decode(_bytes(raw)) if raw else None
                    self._records[gap] = record  # None: expired, or Redis restarted empty
                    return record
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"the group's leader did not publish its backfill within {timeout} s"
                )
            # Statuses come with every renewal: each one re-checks (bounded by the deadline).
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._status_waiters.append(waiter)
            timer = self._loop.call_later(min(remaining, self.sharing.lock_ttl), wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()

    def _apply_rejections(self, rejected: tuple[tuple[str, str, int, str], ...]) -> None:
        count = self.subscriptions.count
        mine = [(c, s, code, text) for c, s, code, text in rejected if count(c, s)]
        if not mine:
            return
        by_code: dict[tuple[int, str], list[Pair]] = {}
        for channel, symbol, code, text in mine:
            by_code.setdefault((code, text), []).append((channel, symbol))
        for (code, text), pairs in by_code.items():
            self.subscriptions.reject(pairs)
            error = error_for_code(code, text, feed=self.options.feed)
            if isinstance(error, SymbolLimitError):
                error = SymbolLimitError(error.code, error.server_message, symbols=pairs)
            self._log.warning("redis.subscribe_rejected", error=str(error))
            self._listener.on_rejected(pairs, error)
        self.request_flush()

    # -- the session loop ------------------------------------------------------------------

    async def _run(self) -> None:
        first = True
        while not self._closing:
            if not first:
                await asyncio.sleep(self._backoff.next_delay())
                if self._closing:
                    break
            first = False
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except _LeaderFailed:
                error = self._fatal or ConnectionClosedError("the shared upstream failed")
                self._set_state(ConnectionState.FAILED, error)
                client = self._client
                if client is not None:
                    try:
                        await asyncio.wait_for(self._withdraw(client), self.sharing.command_timeout)
                    except Exception as exc:
                        self._log.debug("redis.withdraw_failed", error=describe_error(exc))
                return
            except Exception as exc:  # Redis errors, OSError, undecodable records
                if self._closing:
                    break
                self.last_error = exc
                self._log.warning("redis.lost", error=describe_error(exc))
            finally:
                self._redis_up = False
                self.subscriptions.reset_wire()
                self._evaluate()

    async def _session(self) -> None:
        if self._client is None:
            self._client = redis_client(
                self._redis_url, timeout=self.sharing.command_timeout, name=None
            )
        client = self._client
        keys = self.keys
        bound = self.sharing.command_timeout
        pubsub = client.pubsub()
        session = _Session()
        try:
            await asyncio.wait_for(pubsub.subscribe(keys.data_channel, keys.status_channel), bound)
            # Subscribed first, then the snapshot: no status change falls in between.
            self._epoch = 0  # Redis may have restarted: accept the current term whatever it is
            raw = await asyncio.wait_for(client.get(keys.status), bound)
            if self.kind is StreamKind.TRADING:
                await asyncio.wait_for(self._updates.resume(client), bound)
            self.subscriptions.restore()
            self._demand_version += 1
            self._forwarded_ack = None
            await asyncio.wait_for(self._write_demand(client, notify=True), bound)
            self._redis_up = True
            self._backoff.reset()
            self._apply_status(LeaderStatus.decode(_bytes(raw)) if raw else None)
            if self._fatal is not None:
                raise _LeaderFailed
            tasks = [
                self._loop.create_task(self._read_pubsub(pubsub, session)),
                self._loop.create_task(self._keep_demand(client, session)),
                self._loop.create_task(self._watch_leader(session)),
            ]
            if self.kind is StreamKind.TRADING:
                tasks.append(
                    self._loop.create_task(self._updates.read(client, lambda: session.live))
                )
            await _first_failure(tasks, session)
        finally:
            try:
                await asyncio.wait_for(
                    pubsub.aclose(),  # type: ignore[no-untyped-call]
                    self.options.close_timeout,
                )
            except Exception as exc:
                self._log.debug("redis.pubsub_close_failed", error=describe_error(exc))

    async def _read_pubsub(self, pubsub: PubSub, session: _Session) -> None:
        data_channel = self.keys.data_channel.encode()
        while session.live:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            if not message or message.get("type") != "message":
                continue
            payload = message["data"]
            if message["channel"] == data_channel:
                self._on_data(payload)
            else:
                try:
                    status = LeaderStatus.decode(payload)
                except ProtocolError as exc:
                    self.count_malformed(str(exc))
                    continue
                self._apply_status(status)
                if self._fatal is not None:
                    raise _LeaderFailed

    def _on_data(self, payload: bytes) -> None:
        try:
            epoch, sent_ms, messages = decode_batch(payload)
        except ProtocolError as exc:
            self.count_malformed(str(exc))
            return
        if epoch < self._epoch:
            self.stale += 1  # a deposed leader still talking: fenced out
            return
        lag = time.time() * 1000.0 - sent_ms
        self._lag_ms = lag if self._lag_ms is None else self._lag_ms * 0.8 + lag * 0.2
        self._deliver(messages)

    def _deliver(self, messages: list[Any]) -> None:
        self.messages_received += len(messages)
        self.last_message_monotonic = self._loop.time()
        self._listener.on_batch(messages)

    async def _watch_leader(self, session: _Session) -> None:
        ttl = self.sharing.lock_ttl
        while session.live:
            if self._status is None:
                await asyncio.sleep(ttl)
                continue
            remaining = self._status_seen + ttl - self._loop.time()
            if remaining > 0:
                await asyncio.sleep(remaining)
                continue
            self._log.warning("redis.leader_silent", leader=self._status.leader, seconds=ttl)
            self._status = None
            self._evaluate()

    # -- demand ----------------------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._redis_up:
            return  # the session start publishes the whole set
        # The demand record is this upstream's "wire".
        to_subscribe, to_unsubscribe = self.subscriptions.take_delta()
        wants = self._backfill_wants()
        if not to_subscribe and not to_unsubscribe:
            if wants != self._wants:  # the same pairs, another wish: refresh the record
                self._demand_dirty = True
                waiter = self._demand_waiter
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            return
        if to_unsubscribe:
            # As over a socket: the last ack no longer covers what we withdrew.
            self._listener.on_unsubscribing(to_unsubscribe)
        self._demand_version += 1
        self._forwarded_ack = None
        self._demand_dirty = True
        waiter = self._demand_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _backfill_wants(self) -> list[Pair]:
        pairs = getattr(self._listener, "backfill_pairs", None)
        return sorted(pairs()) if callable(pairs) else []

    def _demand(self) -> list[Pair]:
        return [
            (channel, symbol)
            for channel, symbols in self.subscriptions.desired().items()
            for symbol in symbols
        ]

    async def _write_demand(self, client: Redis, *, notify: bool) -> None:
        keys = self.keys
        ttl_ms = int(self.sharing.heartbeat_ttl * 1000)
        async with client.pipeline(transaction=True) as pipe:
            pipe.hset(keys.members, self.member, str(int(time.time())))
            pipe.pexpire(keys.members, 2 * ttl_ms)  # gone with the last live member
            pipe.set(
                keys.demand(self.member),
                encode_demand(self._demand_version, self._demand()),
                px=ttl_ms,
            )
            self._wants = wants = self._backfill_wants()
            if wants:  # beside the demand: a leader that predates backfill reads it unchanged
                pipe.set(keys.wants(self.member), encode_wants(wants), px=ttl_ms)
            else:
                pipe.delete(keys.wants(self.member))
            if notify:
                pipe.publish(keys.demand_channel, self.member)
            await pipe.execute()

    async def _keep_demand(self, client: Redis, session: _Session) -> None:
        # A bare future rather than wait_for(event.wait()): on Python < 3.12 wait_for
        # swallows a cancellation that coincides with the event. The write is bounded:
        # a Redis that stops answering ends the session (and the follower reconnects).
        interval = self.sharing.heartbeat_interval
        bound = self.sharing.command_timeout
        loop = self._loop
        while session.live:
            if not self._demand_dirty:
                waiter: asyncio.Future[None] = loop.create_future()
                self._demand_waiter = waiter
                timer = loop.call_later(interval, wake, waiter)
                try:
                    await waiter
                finally:
                    timer.cancel()
                    self._demand_waiter = None
            if not session.live:
                return
            notify, self._demand_dirty = self._demand_dirty, False
            try:
                await asyncio.wait_for(self._write_demand(client, notify=notify), bound)
            except asyncio.TimeoutError:
                raise ConnectionError(f"Redis did not answer within {bound} s") from None

    async def _withdraw(self, client: Redis) -> None:
        keys = self.keys
        async with client.pipeline(transaction=True) as pipe:
            pipe.delete(keys.demand(self.member), keys.wants(self.member))
            pipe.hdel(keys.members, self.member)
            pipe.publish(keys.demand_channel, self.member)
            await pipe.execute()


class _Session:
    """One Redis session's liveness flag: its loops stop even if a cancel gets lost."""

    __slots__ = ("live",)

    def __init__(self) -> None:
        self.live = True


async def _first_failure(tasks: list[asyncio.Task[None]], session: _Session) -> None:
    """Run ``tasks`` until one ends; stop the rest (bounded) and re-raise its error."""
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        session.live = False
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=1.0)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise cast(BaseException, task.exception())
    raise ConnectionError("a Redis reader stopped")


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


async def _close_client(client: Redis) -> None:
    try:
        await asyncio.wait_for(client.aclose(), 1.0)
    except Exception as exc:
        _log.debug("redis.client_close_failed", error=describe_error(exc))
