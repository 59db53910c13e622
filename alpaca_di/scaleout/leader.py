"""Leader election and the gateway: the one process that holds the real Alpaca socket.

In ``sharing="redis"`` mode every process runs a :class:`Gateway` candidate
(unless configured follower-only) and reads its data through
:class:`~alpaca_di.scaleout.follower.RedisUpstream`. For each
(account, endpoint) group one candidate wins a Redis lock
(:class:`LeaderElector`: ``SET NX PX``, renewed by a compare-and-``PEXPIRE``
script) and, while it leads and some live process wants data, holds one real
WebSocket :class:`~alpaca_di.transport.Connection` subscribed to the *union* of
the live processes' demand. Every batch it reads is republished on Redis
pub/sub, trade updates are appended to a Redis stream, and the upstream state
and acknowledged subscriptions are published as a
:class:`~alpaca_di.scaleout.wire.LeaderStatus`.

Never two sockets for one (key, endpoint): a candidate connects only after it
holds the lock, and a leader that cannot renew closes its socket *before* the
lock can expire (fencing: it steps down ``close_timeout + renew_interval``
ahead of the TTL). Batches carry the leader's epoch, so followers ignore a
deposed leader that is still talking.

Example (a dedicated gateway process; ``alpaca-di gateway`` does this)::

    gateway = Gateway("redis://127.0.0.1:6379/0")
    gateway.register(settings.credentials(), "stock", "wss://stream.data.alpaca.markets/v2/iex",
                     settings.to_options())
    ...
    gateway.close()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, cast

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from alpaca_di.credentials import Credentials
from alpaca_di.errors import ConfigurationError, ServerError, describe_error
from alpaca_di.protocol import StreamKind, SubscriptionState
from alpaca_di.scaleout.client import redis_client
from alpaca_di.scaleout.options import SharingOptions, new_identity
from alpaca_di.scaleout.wire import (
    LeaderStatus,
    Pair,
    SharingKeys,
    account_tag,
    decode_demand,
    encode_batch,
    error_record,
    update_entry,
)
from alpaca_di.transport.connection import Connection, ConnectionFactory, Upstream
from alpaca_di.transport.options import ConnectionOptions
from alpaca_di.transport.runtime import Runtime
from alpaca_di.transport.states import ConnectionState

__all__ = ["Gateway", "LeaderElector"]

_log = structlog.get_logger(__name__)

# KEYS: lock, epoch. ARGV: identity, ttl ms. Returns the new epoch, 0 when held by another.
# Epochs come from the server clock (and exceed the last one), so they keep increasing
# even when Redis lost the epoch key: it may expire after a week of disuse.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local last = tonumber(redis.call('GET', KEYS[2]) or '0')
  local epoch = math.max(now, last + 1)
  redis.call('SET', KEYS[2], string.format('%d', epoch), 'PX', 604800000)
  return epoch
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('GET', KEYS[2]) or '1')
end
return 0
"""
# KEYS: lock, status. ARGV: identity, ttl ms, status ('' for none), status channel.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
  redis.call('PUBLISH', ARGV[4], ARGV[3])
end
return 1
"""
# KEYS: lock, status. ARGV: identity, farewell status, status channel.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('PUBLISH', ARGV[3], ARGV[2])
return 1
"""
_MAX_BATCH = 2000  # messages merged into one pub/sub message
_OUTBOX_LIMIT = 10_000  # queued batches before the oldest market data is dropped


class LeaderElector:
    """One Redis lock with a TTL: acquire, renew (fenced), release.

    ``deadline`` is the monotonic time by which the holder must have stopped
    acting as leader if no renewal succeeded: the TTL counted from when the
    last successful command was *sent*, minus ``guard`` (the time the holder
    needs to close its socket). All methods run on the client's loop.

    Example::

        elector = LeaderElector(client, SharingKeys("alpaca-di", tag), "web-1:42:ab12cd",
                                ttl=3.0, guard=1.5)
        if await elector.acquire():
            ...                                  # lead until elector.deadline
            assert await elector.renew(status.encode())
            await elector.release(farewell.encode())
    """

    def __init__(
        self, client: Redis, keys: SharingKeys, identity: str, *, ttl: float, guard: float
    ) -> None:
        if guard >= ttl:
            raise ConfigurationError(
                f"the fencing guard ({guard} s) must be below the TTL ({ttl} s)"
            )
        self.keys = keys
        self.identity = identity
        self.ttl = ttl
        self.guard = guard
        self.epoch = 0
        self.leading = False
        self.deadline = 0.0
        self._client = client
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    @property
    def ttl_ms(self) -> int:
        """The lock TTL in milliseconds."""
        return int(self.ttl * 1000)

    def expired(self) -> bool:
        """True when the holder must step down now (no renewal within the guard)."""
        return time.monotonic() >= self.deadline

    async def acquire(self) -> int:
        """Try to take the lock; returns the new term's epoch, or 0 when another holds it."""
        sent = time.monotonic()
        result = await self._acquire(
            keys=[self.keys.leader, self.keys.epoch], args=[self.identity, self.ttl_ms]
        )
        epoch = int(result or 0)
        if epoch > 0:
            self.leading = True
            self.epoch = epoch
            self.deadline = sent + self.ttl - self.guard
        return epoch

    async def renew(self, status: bytes = b"") -> bool:
        """Extend the lock (and publish ``status``) if still held; False when lost."""
        sent = time.monotonic()
        result = await self._renew(
            keys=[self.keys.leader, self.keys.status],
            args=[self.identity, self.ttl_ms, status, self.keys.status_channel],
        )
        if int(result or 0) == 1:
            self.deadline = sent + self.ttl - self.guard
            return True
        self.leading = False
        return False

    async def release(self, farewell: bytes) -> bool:
        """Give the lock up (and publish ``farewell``) if still held."""
        self.leading = False
        result = await self._release(
            keys=[self.keys.leader, self.keys.status],
            args=[self.identity, farewell, self.keys.status_channel],
        )
        return int(result or 0) == 1


class _Tap:
    """The listener of one leadership term's upstream connection."""

    def __init__(self, group: _Group, generation: int) -> None:
        self._group = group
        self._generation = generation

    def _current(self) -> bool:
        return self._group.generation == self._generation and self._group.leading

    def on_state(
        self, state: ConnectionState, previous: ConnectionState, error: BaseException | None
    ) -> None:
        if self._current():
            self._group.upstream_state(state, error)

    def on_batch(self, messages: list[tuple[str, str, dict[str, Any]]]) -> None:
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


class _Group:
    """One (account, endpoint): its elector and, while leading, its upstream socket."""

    def __init__(
        self,
        gateway: Gateway,
        tag: str,
        kind: StreamKind,
        endpoint: str,
        credentials: Credentials,
        options: ConnectionOptions,
    ) -> None:
        self.gateway = gateway
        self.tag = tag
        self.keys = SharingKeys(gateway.sharing.prefix, tag)
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
        self.members = 0
        self.published = 0
        self.dropped = 0
        self._outbox: deque[list[Any]] = deque()
        self._update_seq = 0
        self._outbox_ready = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._publisher: asyncio.Task[None] | None = None
        self._stopping = False
        self._fence: asyncio.Task[None] | None = None
        self._stepping: asyncio.Task[None] | None = None
        self._closing_connection: asyncio.Task[None] | None = None
        self._status_lock = asyncio.Lock()
        self._status_pending = False
        self._recompute_pending = False
        self._recompute_running = False
        self._log = _log.bind(
            kind=kind.value, endpoint=endpoint, fingerprint=credentials.fingerprint, group=tag
        )

    # -- leadership ------------------------------------------------------------------------

    def _elector(self, client: Redis) -> LeaderElector:
        if self.elector is None or self.elector._client is not client:
            guard = self.options.close_timeout + self.gateway.sharing.renew_interval
            self.elector = LeaderElector(
                client,
                self.keys,
                self.gateway.identity,
                ttl=self.gateway.sharing.lock_ttl,
                guard=guard,
            )
        return self.elector

    async def tick(self, client: Redis) -> None:
        """Acquire or renew the lock, then bring the upstream in line with the demand."""
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
        self.ack = {}
        self.seen = {}
        self.rejected = {}
        self._outbox.clear()
        self._update_seq = 0
        self._stopping = False
        self._log.info("gateway.leading", epoch=epoch, identity=self.gateway.identity)
        loop = asyncio.get_running_loop()
        self._publisher = loop.create_task(self._publish_loop())
        self._fence = loop.create_task(self._fence_loop(self.term))
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
        self._log.info("gateway.stepping_down", reason=reason, epoch=self.epoch)
        if connection is not None:
            try:
                await connection.close()
            except Exception:
                self._log.exception("gateway.close_failed")
        closing = self._closing_connection
        if closing is not None and not closing.done():
            await asyncio.wait({closing}, timeout=self.options.close_timeout + 1.0)
        # Then let the publisher finish what the socket delivered (trade updates
        # read before the close still reach the stream), bounded.
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            self._stopping = True
            self._outbox_ready.set()
            await asyncio.wait({publisher}, timeout=self._flush_timeout(release))
            if not publisher.done():
                publisher.cancel()
                await asyncio.wait({publisher}, timeout=0.5)
            if self._outbox:
                lost = sum(len(batch) for batch in self._outbox)
                self._log.warning("gateway.unpublished", messages=lost)
        self._outbox.clear()
        if release and self.elector is not None:
            try:
                await asyncio.wait_for(
                    self.elector.release(self._farewell()), self.gateway.sharing.command_timeout
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
                client = self.gateway._client
                if client is None:
                    return
                try:
                    await asyncio.wait_for(
                        self._recompute(client), self.gateway.sharing.command_timeout
                    )
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
        values = await client.mget([keys.demand(m) for m in members]) if members else []
        if not self.leading or self.term != term:
            return
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
                self._log.info("gateway.upstream_closed", reason="no live demand")
                self._status_soon()
            return True
        if self.connection is None:
            closing = self._closing_connection
            if closing is not None and not closing.done():
                return False  # the previous socket is still closing: open after it (never two)
            self.subscriptions = SubscriptionState()
            self.applied = set()
            self.connection = self.gateway._connection_factory(
                self.endpoint,
                kind=self.kind,
                credentials=self.credentials,
                options=self.options,
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
        """The upstream socket changed state."""
        self.state = state
        if state is ConnectionState.FAILED:
            self.error = error
        if state is not ConnectionState.CONNECTED:
            self.ack = {}
        self._status_soon()

    def upstream_batch(self, messages: list[tuple[str, str, dict[str, Any]]]) -> None:
        """A decoded frame: queue it for Redis (never blocks)."""
        outbox = self._outbox
        if self.kind is StreamKind.TRADING:
            # Numbered per term: a retried XADD (reply lost) is recognised by followers.
            numbered: list[Any] = []
            for channel, symbol, raw in messages:
                self._update_seq += 1
                numbered.append((self._update_seq, channel, symbol, raw))
            outbox.append(numbered)
        else:
            if len(outbox) >= _OUTBOX_LIMIT:
                self.dropped += len(outbox.popleft())
            outbox.append(messages)
        self._outbox_ready.set()

    def upstream_ack(self, channels: Mapping[str, tuple[str, ...]]) -> None:
        """The server confirmed its full subscription state."""
        self.ack = {channel: tuple(symbols) for channel, symbols in channels.items()}
        self._status_soon()

    def upstream_rejected(self, pairs: list[Pair], error: ServerError) -> None:
        """The server refused pairs (rolled back already)."""
        for pair in pairs:
            self.applied.discard(pair)
            self.rejected[pair] = (error.code, error.server_message)
        self._status_soon()

    # -- publishing ------------------------------------------------------------------------

    def _status(self) -> LeaderStatus:
        return LeaderStatus(
            leader=self.gateway.identity,
            epoch=self.epoch,
            state=self.state.value,
            ack=dict(self.ack),
            rejected=tuple((c, s, code, text) for (c, s), (code, text) in self.rejected.items()),
            error=error_record(self.error) if self.state is ConnectionState.FAILED else None,
            seen=dict(self.seen),
        )

    async def _renew(self, elector: LeaderElector) -> bool:
        # Serialised, and the status is built once the lock is ours: statuses reach
        # Redis in the order of the changes, the last one always the current state.
        async with self._status_lock:
            return await elector.renew(self._status().encode())

    def _farewell(self) -> bytes:
        return LeaderStatus(self.gateway.identity, self.epoch, "gone").encode()

    def _status_soon(self) -> None:
        if self._status_pending or not self.leading:
            return
        self._status_pending = True
        self._spawn(self._send_status(self.term))

    async def _send_status(self, term: int) -> None:
        await asyncio.sleep(0)  # coalesce the changes of this loop tick
        self._status_pending = False
        client = self.gateway._client
        if client is None or self.elector is None or not self.leading or self.term != term:
            return
        try:
            held = await asyncio.wait_for(
                self._renew(self.elector), self.gateway.sharing.command_timeout
            )
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._log.debug("gateway.status_failed", error=describe_error(exc))
            return
        if not held and self.term == term:
            await self.step_down("another process holds the lock", release=False)

    async def _publish_loop(self) -> None:
        ready = self._outbox_ready
        while True:
            await ready.wait()
            ready.clear()
            client = self.gateway._client
            bound = self.gateway.sharing.command_timeout
            while self._outbox and client is not None:
                try:
                    await asyncio.wait_for(self._drain(client, self.epoch), bound)
                except (RedisError, OSError, asyncio.TimeoutError) as exc:
                    if self._stopping:
                        return
                    if self.kind is StreamKind.TRADING:
                        self._log.warning("gateway.xadd_failed", error=describe_error(exc))
                        await asyncio.sleep(self.gateway.sharing.renew_interval)
                    else:
                        self.dropped += sum(len(batch) for batch in self._outbox)
                        self._outbox.clear()
                        self._log.warning("gateway.publish_failed", error=describe_error(exc))
            if self._stopping:
                return

    async def _drain(self, client: Redis, epoch: int) -> None:
        outbox = self._outbox
        if self.kind is StreamKind.TRADING:
            batches = list(outbox)
            maxlen = self.gateway.sharing.stream_maxlen
            async with client.pipeline(transaction=False) as pipe:
                for batch in batches:
                    for seq, channel, symbol, raw in batch:
                        pipe.xadd(
                            self.keys.updates,
                            update_entry(epoch, seq, channel, symbol, raw),
                            maxlen=maxlen,
                            approximate=True,
                        )
                # Bounded in length by MAXLEN, in time by the readers' cursor lifetime.
                pipe.pexpire(self.keys.updates, int(self.gateway.sharing.cursor_ttl * 1000))
                await pipe.execute()
            for _ in batches:  # only now: a failed XADD keeps them for the retry
                outbox.popleft()
                self.published += 1
            return
        messages: list[Any] = []
        while outbox and len(messages) < _MAX_BATCH:
            messages.extend(outbox.popleft())
        await client.publish(self.keys.data_channel, encode_batch(epoch, messages))
        self.published += len(messages)

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


class Gateway:
    """This process's leader candidate for every (account, endpoint) it registered.

    Runs on a private event loop thread (``alpaca-di-gateway``), so a busy
    application loop never delays a lock renewal. Thread-safe: :meth:`register`
    and :meth:`unregister` may be called from any thread; the first registration
    starts the thread, the last unregistration stops it.

    Args:
        redis_url: the Redis server every process of the deployment shares.
        sharing: prefix and timings (:class:`SharingOptions`).
        identity: this process's identity (default ``host:pid:random``).
        connection_factory: the upstream of a leader (the WebSocket
            :class:`~alpaca_di.transport.Connection`; tests may inject another).

    Example::

        gateway = Gateway("redis://127.0.0.1:6379/0", sharing=SharingOptions(prefix="app"))
        tag = gateway.register(creds, "stock", url, ConnectionOptions())
        gateway.is_leader(tag)       # True once this process won the lock
        gateway.unregister(tag)      # hands over at once if it was leading
        gateway.close()
    """

    def __init__(
        self,
        redis_url: str,
        *,
        sharing: SharingOptions | None = None,
        identity: str | None = None,
        connection_factory: ConnectionFactory = Connection,
    ) -> None:
        self.redis_url = redis_url
        self.sharing = sharing or SharingOptions()
        self.identity = identity or new_identity()
        self._connection_factory = connection_factory
        self._runtime = Runtime(name="alpaca-di-gateway")
        self._lock = threading.Lock()
        self._groups: dict[str, _Group] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Redis | None = None
        self._main: list[asyncio.Task[None]] = []
        self._link_generation = 0
        self.redis_up = False

    def __repr__(self) -> str:
        leading = sum(1 for g in list(self._groups.values()) if g.leading)
        return f"<Gateway {self.identity} groups={len(self._groups)} leading={leading}>"

    # -- registration (any thread) -------------------------------------------------------

    def register(
        self,
        credentials: Credentials,
        kind: StreamKind | str,
        endpoint: str,
        options: ConnectionOptions | None = None,
    ) -> str:
        """Become a candidate for (credentials, endpoint); returns the group tag.

        Registrations are counted: each needs one :meth:`unregister`.

        Raises:
            ConfigurationError: the lock TTL leaves no room to close the socket
                before it expires (``lock_ttl`` must exceed ``close_timeout`` plus
                two renewals).
        """
        kind = StreamKind(kind)
        options = options or ConnectionOptions()
        sharing = self.sharing
        if sharing.lock_ttl < options.close_timeout + 2 * sharing.renew_interval:
            raise ConfigurationError(
                f"lock_ttl ({sharing.lock_ttl} s) must be at least close_timeout "
                f"({options.close_timeout} s) + 2 x renew_interval ({sharing.renew_interval} s): "
                "a leader must be able to close its socket before its lock expires"
            )
        tag = account_tag(credentials, endpoint)
        with self._lock:
            group = self._groups.get(tag)
            if group is not None:
                group.refs += 1
                return tag
            loop = self._runtime.acquire()
            group = _Group(self, tag, kind, endpoint, credentials, options)
            self._groups[tag] = group
        loop.call_soon_threadsafe(self._ensure_main, loop)
        return tag

    def unregister(self, tag: str, timeout: float = 5.0) -> None:
        """Drop one registration; the last one steps down (closing the socket) and forgets.

        Blocks until done (bounded by ``timeout``); use :meth:`aunregister` in async code.
        """
        retired = self._take(tag)
        if retired is None:
            return
        group, loop = retired
        future = asyncio.run_coroutine_threadsafe(self._retire(group), loop)
        try:
            future.result(timeout)
        except concurrent.futures.TimeoutError:
            _log.error("gateway.unregister_timeout", group=tag, timeout=timeout)
        finally:
            self._runtime.release()

    async def aunregister(self, tag: str) -> None:
        """Async :meth:`unregister`, awaitable from any loop."""
        retired = self._take(tag)
        if retired is None:
            return
        group, loop = retired
        try:
            future = asyncio.run_coroutine_threadsafe(self._retire(group), loop)
            await asyncio.wait_for(asyncio.wrap_future(future), 5.0)
        except Exception as exc:
            _log.error("gateway.unregister_failed", group=tag, error=describe_error(exc))
        finally:
            await asyncio.to_thread(self._runtime.release)

    def _take(self, tag: str) -> tuple[_Group, asyncio.AbstractEventLoop] | None:
        with self._lock:
            group = self._groups.get(tag)
            if group is None:
                return None
            group.refs -= 1
            if group.refs > 0:
                return None
            del self._groups[tag]
            loop = self._loop
        if loop is None or loop.is_closed():
            self._runtime.release()
            return None
        return group, loop

    def close(self, timeout: float = 5.0) -> None:
        """Step down everywhere and stop the gateway thread (idempotent)."""
        while True:
            with self._lock:
                if not self._groups:
                    return
                tag, group = next(iter(self._groups.items()))
                group.refs = 1
            self.unregister(tag, timeout)

    # -- observation (any thread) --------------------------------------------------------

    def is_leader(self, tag: str) -> bool:
        """True while this process leads the group ``tag``."""
        group = self._groups.get(tag)
        return group is not None and group.leading

    def groups(self) -> dict[str, dict[str, Any]]:
        """A snapshot per registered group: kind, endpoint, role, upstream state, members."""
        return {
            tag: {
                "kind": group.kind.value,
                "endpoint": group.endpoint,
                "role": "leader" if group.leading else "candidate",
                "upstream": group.state.value if group.leading else None,
                "members": group.members if group.leading else None,
                "published": group.published,
                "dropped": group.dropped,
            }
            for tag, group in list(self._groups.items())
        }

    # -- the gateway loop ----------------------------------------------------------------

    def _ensure_main(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop and self._main:
            return
        self._loop = loop
        self._client = redis_client(self.redis_url, timeout=self.sharing.command_timeout, name=None)
        self._main = [
            loop.create_task(self._ticker(), name="alpaca-di gateway ticker"),
            loop.create_task(self._listen(), name="alpaca-di gateway listener"),
        ]

    async def _retire(self, group: _Group) -> None:
        try:
            await group.retire()
        finally:
            with self._lock:
                last = not self._groups
            if last:
                await self._stop_main()

    async def _stop_main(self) -> None:
        tasks, self._main = self._main, []
        client, self._client = self._client, None
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        if client is not None:
            try:
                await asyncio.wait_for(client.aclose(), 1.0)
            except Exception as exc:
                _log.debug("gateway.client_close_failed", error=describe_error(exc))

    async def _ticker(self) -> None:
        interval = self.sharing.renew_interval
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        failures = 0
        bound = self.sharing.command_timeout
        mine = self._client
        while mine is not None and self._client is mine:
            client = mine
            groups = list(self._groups.values())
            if groups:
                results = await asyncio.gather(
                    *(asyncio.wait_for(group.tick(client), bound) for group in groups),
                    return_exceptions=True,
                )
                errors = [r for r in results if isinstance(r, BaseException)]
                if errors:
                    failures += 1
                    if self.redis_up or failures in (1, 10) or failures % 100 == 0:
                        _log.warning(
                            "gateway.redis_unavailable",
                            identity=self.identity,
                            error=describe_error(errors[0]),
                            failures=failures,
                        )
                    self.redis_up = False
                else:
                    if not self.redis_up and failures:
                        _log.info("gateway.redis_back", identity=self.identity)
                        self._link_generation += 1  # the listener resubscribes
                    failures = 0
                    self.redis_up = True
            next_at += interval
            now = loop.time()
            if next_at < now:
                next_at = now
            await asyncio.sleep(next_at - now)

    async def _listen(self) -> None:
        # One pattern subscription wakes the leader of whichever group's demand changed.
        prefix = _glob_escape(self.sharing.prefix)
        pattern = f"{prefix}:*:ch:demand"
        delay = self.sharing.renew_interval
        bound = self.sharing.command_timeout
        mine = self._client
        while mine is not None and self._client is mine:
            client = mine
            generation = self._link_generation
            pubsub = client.pubsub()
            try:
                await asyncio.wait_for(pubsub.psubscribe(pattern), bound)
                # Wakes up every second: a link the ticker saw fail and recover is
                # resubscribed (a silently dead pub/sub connection never raises).
                while self._client is mine and self._link_generation == generation:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if not message or message.get("type") != "pmessage":
                        continue
                    tag = _tag_of(cast(bytes, message["channel"]))
                    group = self._groups.get(tag) if tag else None
                    if group is not None:
                        group.recompute_soon()
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                _log.debug("gateway.listener_lost", error=describe_error(exc))
            finally:
                try:
                    await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]
                except Exception as exc:
                    _log.debug("gateway.pubsub_close_failed", error=describe_error(exc))
            await asyncio.sleep(delay)


def _tag_of(channel: bytes) -> str | None:
    text = channel.decode(errors="replace")
    start = text.rfind("{")
    end = text.find("}", start)
    return text[start + 1 : end] if start >= 0 and end > start else None


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


