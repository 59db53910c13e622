"""GroupLeader: what one process does to lead one (account, endpoint) group.

Never two sockets for one (key, endpoint): a candidate connects only after it
holds the lock (:class:`~alpaca_di.scaleout.election.LeaderElector`), and a
leader that cannot renew closes its socket *before* the lock can expire
(fencing: it steps down ``close_timeout + renew_interval`` ahead of the TTL).
While it leads, its one WebSocket
:class:`~alpaca_di.transport.Connection` follows the *union* of the live
processes' demand; every batch it reads is republished
(:class:`~alpaca_di.scaleout.publisher.Publisher`) with the leader's epoch, so
followers ignore a deposed leader that is still talking, and the upstream state
and acknowledged subscriptions are published as a
:class:`~alpaca_di.scaleout.wire.LeaderStatus`.

Trade updates are also handed at once, from memory, to this process's own
consumers (:meth:`GroupLeader.attach`), whatever Redis does; and each time the
trading socket starts listening, the leader reads back through REST what no
socket saw (:mod:`alpaca_di.scaleout.recovery`) and publishes it as reconciled
updates. A market-data leader backfills the bars each gap of its socket lost,
once for the whole group (:mod:`alpaca_di.scaleout.backfill`).

:class:`~alpaca_di.scaleout.gateway.Gateway` runs one per registered group.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from alpaca_di.credentials import Credentials
from alpaca_di.errors import ConnectionLimitError, ServerError, describe_error
from alpaca_di.protocol import StreamKind, SubscriptionState
from alpaca_di.scaleout.backfill import LeaderBackfill, history_source
from alpaca_di.scaleout.election import LeaderElector
from alpaca_di.scaleout.options import SharingOptions
from alpaca_di.scaleout.publisher import Publisher
from alpaca_di.scaleout.recovery import (
    close_rest_client,
    missed_updates,
    read_tail,
    rest_client,
)
from alpaca_di.scaleout.wire import (
    SLOT_HELD,
    LeaderStatus,
    Pair,
    SharingKeys,
    decode_demand,
    decode_wants,
    error_record,
)
from alpaca_di.transport.connection import ConnectionFactory, Upstream
from alpaca_di.transport.options import ConnectionOptions
from alpaca_di.transport.states import ConnectionState

if TYPE_CHECKING:
    from alpaca.trading.client import TradingClient

__all__ = ["GroupLeader", "LocalTap"]

_log = structlog.get_logger(__name__)

LocalTap = Callable[[int, list[Any]], None]
"""Receives ``(epoch, [(seq, channel, symbol, raw), ...])``: trade updates the leader read."""


class GroupLeader:
    """This process's candidacy for one (account, endpoint) group.

    :meth:`tick` takes or renews the group's lock; while it leads, it holds one
    upstream socket subscribed to the union of the live members' demand and
    republishes what that socket reads (:class:`Publisher`), and it publishes
    its :class:`~alpaca_di.scaleout.wire.LeaderStatus` with every renewal.
    ``client`` returns the gateway's current Redis client (``None`` once it
    stopped). All methods but the constructor run on the gateway loop.

    Example (what :class:`~alpaca_di.scaleout.gateway.Gateway` does per group)::

        group = GroupLeader(tag, StreamKind.STOCK, url, creds, ConnectionOptions(),
                            sharing=SharingOptions(), identity=new_identity(),
                            connection_factory=Connection, client=lambda: client)
        await group.tick(client)        # every renew_interval
        await group.retire()            # hands over at once if it was leading
    """

    def __init__(
        self,
        tag: str,
        kind: StreamKind,
        endpoint: str,
        credentials: Credentials,
        options: ConnectionOptions,
        *,
        sharing: SharingOptions,
        identity: str,
        connection_factory: ConnectionFactory,
        client: Callable[[], Redis | None],
        rest_url: str | None = None,
        data_url: str | None = None,
    ) -> None:
        self.sharing = sharing
        self.rest_url = rest_url
        self.identity = identity
        self._connection_factory = connection_factory
        self._client = client
        self.tag = tag
        self.keys = SharingKeys(sharing.prefix, tag)
        self.kind = kind
        self.endpoint = endpoint
        self.credentials = credentials
        self.options = options
        self.refs = 1
        self.retired = False
        self.leading = False
        self.term = 0
        self.generation = 0
        self.epoch = 0
        self.elector: LeaderElector | None = None
        self.connection: Upstream | None = None
        self.subscriptions = SubscriptionState()
        self.applied: set[Pair] = set()
        self.rejected: dict[Pair, tuple[int, str]] = {}
        self.ack: dict[str, tuple[str, ...]] = {}
        self.seen: dict[str, int] = {}
        self.state = ConnectionState.IDLE
        self.error: BaseException | None = None
        self.limit_rejections = 0
        self.members = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._fence: asyncio.Task[None] | None = None
        self._stepping: asyncio.Task[None] | None = None
        self._closing_connection: asyncio.Task[None] | None = None
        self._status_lock = asyncio.Lock()
        self._tick_lock = asyncio.Lock()
        self._status_pending = False
        self._recompute_pending = False
        self._recompute_running = False
        self._taps: dict[str, LocalTap] = {}
        self._rest: TradingClient | None = None
        self._recovering: asyncio.Task[None] | None = None
        self.recoveries = 0
        self._log = _log.bind(
            kind=kind.value, endpoint=endpoint, fingerprint=credentials.fingerprint, group=tag
        )
        self.publisher = Publisher(kind, self.keys, sharing, client=client, log=self._log)
        source, self._close_history = None, None
        if data_url is not None and kind in (StreamKind.STOCK, StreamKind.CRYPTO):
            source, self._close_history = history_source(kind, credentials, data_url, options.feed)
        self.backfill = LeaderBackfill(
            self.keys, sharing, source, client=client, log=self._log, filled=self._status_soon
        )

    @property
    def published(self) -> int:
        """Messages this process published to Redis for the group, over every term."""
        return self.publisher.published

    @property
    def dropped(self) -> int:
        """Market-data messages dropped because Redis could not keep up."""
        return self.publisher.dropped

    @property
    def held(self) -> int:
        """Messages read from the socket that Redis has not taken yet (0 unless leading)."""
        return self.publisher.held

    def attach(self, name: str, tap: LocalTap) -> None:
        """Hand this process's consumer ``name`` every trade update at once (any thread).

        ``tap`` runs on the gateway loop and must not block (hop to your own loop).
        """
        self._taps = {**self._taps, name: tap}  # copy on write: read without a lock

    def detach(self, name: str) -> None:
        """Stop handing trade updates to ``name`` (any thread)."""
        self._taps = {key: tap for key, tap in self._taps.items() if key != name}

    # -- leadership ------------------------------------------------------------------------

    def _elector(self, client: Redis) -> LeaderElector:
        if self.elector is None or self.elector.client is not client:
            guard = self.options.close_timeout + self.sharing.renew_interval
            self.elector = LeaderElector(
                client,
                self.keys,
                self.identity,
                ttl=self.sharing.lock_ttl,
                guard=guard,
            )
        return self.elector

    async def tick(self, client: Redis) -> None:
        """Acquire or renew the lock, then bring the upstream in line with the demand."""
        async with self._tick_lock:  # the ticker's and a take-over's never interleave
            await self._tick(client)

    def take_over_soon(self) -> None:
        """The group's leader released the lock: try to take it now (a candidate only)."""
        if self.leading or self.retired:
            return
        self._spawn(self._take_over())

    async def _take_over(self) -> None:
        client = self._client()
        if client is None:
            return
        try:
            await asyncio.wait_for(self.tick(client), self.sharing.command_timeout)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._log.debug("gateway.take_over_failed", error=describe_error(exc))

    async def _tick(self, client: Redis) -> None:
        if self.retired:
            return
        if self._stepping is not None and not self._stepping.done():
            return  # a step-down is still closing the socket: never overlap terms
        elector = self._elector(client)
        if not self.leading:
            epoch = await elector.acquire()
            if epoch and not self.retired:
                self._lead(epoch)
                await self._recompute(client)
            elif epoch:
                await elector.release(self._farewell())
            return
        term = self.term
        if not await self._renew(elector):
            if self.term == term:
                await self.step_down("another process holds the lock", release=False)
            return
        await self._recompute(client)

    def _lead(self, epoch: int) -> None:
        self.leading = True
        self.term += 1
        self.epoch = epoch
        self.state = ConnectionState.IDLE
        self.error = None
        self.limit_rejections = 0
        self.ack = {}
        self.seen = {}
        self.rejected = {}
        self._log.info("gateway.leading", epoch=epoch, identity=self.identity)
        self.publisher.start(epoch)
        self.backfill.start(epoch)
        self._fence = asyncio.get_running_loop().create_task(self._fence_loop(self.term))
        self._status_soon()

    async def _fence_loop(self, term: int) -> None:
        elector = self.elector
        assert elector is not None
        while self.leading and self.term == term:
            remaining = elector.deadline - time.monotonic()
            if remaining > 0:
                await asyncio.sleep(remaining)
                continue
            self._log.warning(
                "gateway.fenced",
                reason="could not renew the leader lock in time; closing the upstream socket",
            )
            self._fence = None  # step_down must not cancel the task running it
            await self.step_down("lock renewal overdue", release=False)
            return

    async def step_down(self, reason: str, *, release: bool) -> None:
        """Stop leading: close the upstream socket first, then flush and release.

        The work runs in its own task, shielded: cancelling a caller (a tick
        that timed out) never leaves the socket half-closed.
        """
        stepping = self._stepping
        if stepping is None or stepping.done():
            if not self.leading:
                return
            self.leading = False  # at once: nothing acts as leader from here on
            stepping = self._stepping = asyncio.get_running_loop().create_task(
                self._step_down(reason, release)
            )
        await asyncio.shield(stepping)

    async def _step_down(self, reason: str, release: bool) -> None:
        self.term += 1
        self.generation += 1
        connection, self.connection = self.connection, None
        fence, self._fence = self._fence, None
        if fence is not None and fence is not asyncio.current_task():
            fence.cancel()
        self.backfill.stop()
        self._log.info("gateway.stepping_down", reason=reason, epoch=self.epoch)
        if connection is not None:
            try:
                await connection.close()
            except Exception:
                self._log.exception("gateway.close_failed")
        closing = self._closing_connection
        if closing is not None and not closing.done():
            await asyncio.wait({closing}, timeout=self.options.close_timeout + 1.0)
        recovering, self._recovering = self._recovering, None
        if recovering is not None and not recovering.done():
            recovering.cancel()
        # Then let the publisher finish what the socket delivered, bounded: market
        # data left then is dropped (counted); trade updates read before the close
        # stay held under this term's epoch and reach the stream once Redis takes
        # them, whoever leads by then (a fenced leader's link may be down now).
        await self.publisher.stop(self._flush_timeout(release))
        if release and self.elector is not None:
            try:
                await asyncio.wait_for(
                    self.elector.release(self._farewell()), self.sharing.command_timeout
                )
            except Exception as exc:
                self._log.debug("gateway.release_failed", error=describe_error(exc))
        self.subscriptions = SubscriptionState()
        self.applied = set()
        self.ack = {}
        self.seen = {}
        self.state = ConnectionState.IDLE
        self._log.info("gateway.stepped_down", reason=reason)

    def _flush_timeout(self, release: bool) -> float:
        return 1.0 if release else 0.25

    # -- demand ----------------------------------------------------------------------------

    def recompute_soon(self) -> None:
        """A member's demand changed: recompute the union once, soon."""
        if not self.leading:
            return
        self._recompute_pending = True
        if not self._recompute_running:
            self._spawn(self._recompute_loop())

    async def _recompute_loop(self) -> None:
        self._recompute_running = True
        try:
            while self._recompute_pending and self.leading:
                self._recompute_pending = False
                client = self._client()
                if client is None:
                    return
                try:
                    await asyncio.wait_for(self._recompute(client), self.sharing.command_timeout)
                except (RedisError, OSError, asyncio.TimeoutError) as exc:
                    self._log.debug("gateway.recompute_failed", error=describe_error(exc))
                    return
        finally:
            self._recompute_running = False

    async def _recompute(self, client: Redis) -> None:
        term = self.term
        keys = self.keys
        names = await client.hkeys(keys.members)
        members = [m.decode() if isinstance(m, bytes) else str(m) for m in names]
        names_of = [keys.demand(m) for m in members] + [keys.wants(m) for m in members]
        values = await client.mget(names_of) if members else []
        if not self.leading or self.term != term:
            return
        values, wanted = values[: len(members)], values[len(members) :]
        wants: set[Pair] = set()
        for member, value in zip(members, wanted, strict=True):
            if value is not None:
                try:
                    wants |= decode_wants(value if isinstance(value, bytes) else value.encode())
                except Exception as exc:
                    self._log.warning("gateway.bad_wants", member=member, error=describe_error(exc))
        self.backfill.wants = wants
        union: set[Pair] = set()
        dead: list[str] = []
        seen: dict[str, int] = {}
        for member, value in zip(members, values, strict=True):
            if value is None:
                dead.append(member)
                continue
            try:
                version, pairs = decode_demand(
                    value if isinstance(value, bytes) else value.encode()
                )
            except Exception as exc:
                self._log.warning("gateway.bad_demand", member=member, error=describe_error(exc))
                continue
            union |= pairs
            seen[member] = version
        self.members = len(seen)
        self.rejected = {pair: why for pair, why in self.rejected.items() if pair in union}
        union -= self.rejected.keys()
        if self._apply(union, len(seen)) and seen != self.seen:
            self.seen = seen
            self._status_soon()
        if dead:
            await client.hdel(keys.members, *dead)

    def _apply(self, union: set[Pair], live: int) -> bool:
        """Make the upstream follow ``union``; False when it cannot yet (a close in flight)."""
        if live == 0:
            if self.connection is not None:
                connection, self.connection = self.connection, None
                self.generation += 1  # silence the old connection's callbacks
                self._closing_connection = asyncio.get_running_loop().create_task(
                    self._close_idle(connection)
                )
                self.subscriptions = SubscriptionState()
                self.applied = set()
                self.ack = {}
                self.error = None
                self.state = ConnectionState.IDLE
                self.backfill.idle()
                self._log.info("gateway.upstream_closed", reason="no live demand")
                self._status_soon()
            return True
        if self.connection is None:
            closing = self._closing_connection
            if closing is not None and not closing.done():
                return False  # the previous socket is still closing: open after it (never two)
            self.subscriptions = SubscriptionState()
            self.applied = set()
            self.connection = self._connection_factory(
                self.endpoint,
                kind=self.kind,
                credentials=self.credentials,
                # A 406 here means a previous leader's socket still holds the slot (a
                # frozen or partitioned process that has not noticed it was deposed):
                # it frees when that process is fenced or the server reaps it, so the
                # leader retries for as long as the group wants the stream; only what
                # cannot heal (402, 409) ends in FAILED.
                options=dataclasses.replace(self.options, connection_limit_grace=None),
                subscriptions=self.subscriptions,
                listener=_Tap(self, self.generation),
                loop=asyncio.get_running_loop(),
            )
            self.connection.start()
            self._log.info("gateway.upstream_opening", members=live)
        added = union - self.applied
        removed = self.applied - union
        for channel, symbol in added:
            self.subscriptions.add(channel, (symbol,))
        for channel, symbol in removed:
            self.subscriptions.remove(channel, (symbol,))
        self.applied = union
        if added or removed:
            self.connection.request_flush()
        return True

    async def _close_idle(self, connection: Upstream) -> None:
        try:
            await connection.close()
        except Exception:
            self._log.exception("gateway.close_failed")
        finally:
            self.recompute_soon()  # demand may have come back meanwhile

    # -- the upstream's events (on the gateway loop) ---------------------------------------

    def upstream_state(self, state: ConnectionState, error: BaseException | None) -> None:
        """The upstream socket changed state; its last error travels with the status."""
        if self.state is ConnectionState.CONNECTED and state is not ConnectionState.CONNECTED:
            self.backfill.lost(self.ack)  # before the ack is forgotten: what the loss hit
        self.state = state
        if state is ConnectionState.CONNECTED:
            self.error = None
        elif error is not None:
            if state is ConnectionState.RECONNECTING and isinstance(error, ConnectionLimitError):
                self.limit_rejections += 1
                if self.limit_rejections == 1 or self.limit_rejections % 50 == 0:
                    self._log.warning(
                        "gateway.slot_held",
                        rejections=self.limit_rejections,
                        epoch=self.epoch,
                        reason=SLOT_HELD,
                    )
            self.error = error
        if state is not ConnectionState.CONNECTED:
            self.ack = {}
        self._status_soon()

    def upstream_batch(self, messages: list[tuple[str, str, dict[str, Any]]]) -> None:
        """A decoded frame: queue it for Redis, hand trade updates to local consumers."""
        if self.kind is not StreamKind.TRADING:
            self.backfill.observe(messages)
        numbered = self.publisher.enqueue(messages)
        if numbered:
            epoch = self.publisher.epoch
            for name, tap in list(self._taps.items()):
                try:
                    tap(epoch, numbered)
                except Exception:
                    self._log.exception("gateway.local_delivery_failed", consumer=name)

    def upstream_ack(self, channels: Mapping[str, tuple[str, ...]]) -> None:
        """The server confirmed its full subscription state."""
        listening = bool(self.ack.get("trade_updates"))
        self.ack = {channel: tuple(symbols) for channel, symbols in channels.items()}
        if self.state is ConnectionState.CONNECTED and self.backfill.restored():
            # A gap, counted in the status and fetched once. What the new session
            # reads waits for that status: followers restore (gap notice, held bars)
            # before its first message reaches them.
            self.publisher.hold()
            self._spawn(self._announce_gap(self.term))
        self._status_soon()
        if self.kind is StreamKind.TRADING and channels.get("trade_updates") and not listening:
            # A socket (re)started listening: what happened before it is read back via REST.
            self._recover_soon()

    # -- recovery through REST -------------------------------------------------------------

    def _recover_soon(self) -> None:
        if self.rest_url is None:
            self._log.warning(
                "gateway.reconcile_skipped",
                reason="no trading REST URL: updates no socket saw cannot be recovered",
            )
            return
        running = self._recovering
        if running is not None and not running.done():
            running.cancel()  # a newer session: start over from the stream's tail
        self._recovering = asyncio.get_running_loop().create_task(self._recover(self.term))

    async def _recover(self, term: int) -> None:
        assert self.rest_url is not None
        delay = self.sharing.renew_interval
        for attempt in range(1, 6):
            client = self._client()
            if client is None or not self.leading or self.term != term:
                return
            try:
                tail = await asyncio.wait_for(
                    read_tail(client, self.keys, count=self.sharing.stream_maxlen),
                    self.sharing.command_timeout * 2,
                )
                if self._rest is None:
                    self._rest = rest_client(self.credentials, self.rest_url)
                since, orders, messages = await asyncio.to_thread(
                    missed_updates, self._rest, tail, lookback=self.sharing.reconcile_lookback
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis or REST away: try again, then give up loudly
                self._log.warning(
                    "gateway.reconcile_failed", attempt=attempt, error=describe_error(exc)
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if not self.leading or self.term != term:
                return
            if messages:
                self.upstream_batch(messages)
            self.recoveries += 1
            self._log.info(
                "gateway.reconciled",
                since=since.isoformat(),
                stream_empty=tail.last_ms is None,
                orders=orders,
                emitted=len(messages),
            )
            return

    def upstream_rejected(self, pairs: list[Pair], error: ServerError) -> None:
        """The server refused pairs (rolled back already)."""
        for pair in pairs:
            self.applied.discard(pair)
            self.rejected[pair] = (error.code, error.server_message)
        self._status_soon()

    # -- publishing ------------------------------------------------------------------------

    def _status(self) -> LeaderStatus:
        return LeaderStatus(
            leader=self.identity,
            epoch=self.epoch,
            state=self.state.value,
            ack=dict(self.ack),
            rejected=tuple((c, s, code, text) for (c, s), (code, text) in self.rejected.items()),
            error=error_record(self.error) if self.state is not ConnectionState.CONNECTED else None,
            seen=dict(self.seen),
            limit_rejections=self.limit_rejections,
            gap=self.backfill.gap,
            filled=self.backfill.filled,
        )

    async def _renew(self, elector: LeaderElector) -> bool:
        # Serialised, and the status is built once the lock is ours: statuses reach
        # Redis in the order of the changes, the last one always the current state.
        async with self._status_lock:
            return await elector.renew(self._status().encode())

    def _farewell(self) -> bytes:
        return LeaderStatus(self.identity, self.epoch, "gone").encode()

    def _status_soon(self) -> None:
        if self._status_pending or not self.leading:
            return
        self._status_pending = True
        self._spawn(self._send_status(self.term))

    async def _send_status(self, term: int) -> None:
        await asyncio.sleep(0)  # coalesce the changes of this loop tick
        self._status_pending = False
        client = self._client()
        if client is None or self.elector is None or not self.leading or self.term != term:
            return
        try:
            held = await asyncio.wait_for(self._renew(self.elector), self.sharing.command_timeout)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._log.debug("gateway.status_failed", error=describe_error(exc))
            return
        if not held and self.term == term:
            await self.step_down("another process holds the lock", release=False)

    async def _announce_gap(self, term: int) -> None:
        try:
            await self._send_status(term)  # bounded by command_timeout
        finally:
            self.publisher.release()

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def retire(self) -> None:
        """The last local registration went away: hand over and forget the group."""
        self.retired = True
        await self.step_down("no local registration left", release=True)
        for task in list(self._tasks):
            task.cancel()
        # Trade updates an earlier term could not append yet get a last chance.
        await self.publisher.close(self._flush_timeout(True))
        rest, self._rest = self._rest, None
        if rest is not None:
            close_rest_client(rest)
        if self._close_history is not None:
            self._close_history()


class _Tap:
    """The listener of one leadership term's upstream connection."""

    def __init__(self, group: GroupLeader, generation: int) -> None:
        self._group = group
        self._generation = generation

    def _current(self) -> bool:
        return self._group.generation == self._generation and self._group.leading

    def on_state(
        self, state: ConnectionState, previous: ConnectionState, error: BaseException | None
    ) -> None:
        if self._current():
            self._group.upstream_state(state, error)

    def on_batch(
        self,
        messages: list[tuple[str, str, dict[str, Any]]],
        structs: list[Any] | None = None,
        sources: list[Any] | None = None,
    ) -> None:
        # The leader's connection decodes dicts only (they are what it publishes).
        if self._current():
            self._group.upstream_batch(messages)

    def on_ack(self, channels: Mapping[str, tuple[str, ...]]) -> None:
        if self._current():
            self._group.upstream_ack(channels)

    def on_rejected(self, pairs: list[Pair], error: ServerError) -> None:
        if self._current():
            self._group.upstream_rejected(pairs, error)

    def on_malformed(self, reason: str) -> None:
        """Counted by the connection."""

    def on_unsubscribing(self, channels: Mapping[str, list[str]]) -> None:
        """The leader only republishes; acks are forwarded whole, nothing to drop."""
