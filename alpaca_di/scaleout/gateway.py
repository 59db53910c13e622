"""Gateway: this process's leader candidate for every group it registered.

In ``sharing="redis"`` mode every process runs a :class:`Gateway` candidate
(unless configured follower-only) and reads its data through
:class:`~alpaca_di.scaleout.follower.RedisUpstream`. For each
(account, endpoint) group one candidate wins a Redis lock
(:class:`~alpaca_di.scaleout.election.LeaderElector`: ``SET NX PX``, renewed by a
compare-and-``PEXPIRE`` script) and, while it leads and some live process wants data, holds one real
WebSocket :class:`~alpaca_di.transport.Connection` subscribed to the *union* of
the live processes' demand. Every batch it reads is republished on Redis
pub/sub, trade updates are appended to a Redis stream, and the upstream state
and acknowledged subscriptions are published as a
:class:`~alpaca_di.scaleout.wire.LeaderStatus`.

Never two sockets for one (key, endpoint): a candidate connects only after it
holds the lock, and a leader that cannot renew closes its socket *before* the
lock can expire (fencing: it steps down ``close_timeout + renew_interval``
ahead of the TTL). Batches carry the leader's epoch, so followers ignore a
deposed leader that is still talking. What a candidate does for one group is
:class:`~alpaca_di.scaleout.leader.GroupLeader`; this module runs them all on
one private loop thread, ticks their locks and wakes them when demand changes.

Example (a dedicated gateway process, as ``alpaca-di gateway`` runs it)::

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
from typing import Any, cast

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from alpaca_di.credentials import Credentials
from alpaca_di.errors import ConfigurationError, ProtocolError, describe_error
from alpaca_di.protocol import StreamKind
from alpaca_di.scaleout.client import RedisTarget, redis_client
from alpaca_di.scaleout.leader import GroupLeader, LocalTap
from alpaca_di.scaleout.options import SharingOptions, new_identity
from alpaca_di.scaleout.wire import (
    LeaderStatus,
    account_tag,
    demand_channel_pattern,
    status_channel_pattern,
    tag_of_channel,
)
from alpaca_di.transport.connection import Connection, ConnectionFactory
from alpaca_di.transport.options import ConnectionOptions
from alpaca_di.transport.runtime import Runtime

__all__ = ["Gateway"]

_log = structlog.get_logger(__name__)


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
        rest_url: the trading REST API of the accounts (``settings.resolved_api_url``):
            a trading leader reads back through it what no socket saw after a
            takeover (:mod:`alpaca_di.scaleout.recovery`); ``None`` skips that.
        data_url: the market-data REST API (``settings.resolved_data_url``): a
            stock or crypto leader backfills each gap of its socket through it,
            once for the group (:mod:`alpaca_di.scaleout.backfill`); ``None``
            leaves every follower to fetch its own.

    Example::

        gateway = Gateway("redis://127.0.0.1:6379/0", sharing=SharingOptions(prefix="app"))
        tag = gateway.register(creds, "stock", url, ConnectionOptions())
        gateway.is_leader(tag)       # True once this process won the lock
        gateway.unregister(tag)      # hands over at once if it was leading
        gateway.close()
    """

    def __init__(
        self,
        redis_url: RedisTarget,
        *,
        sharing: SharingOptions | None = None,
        identity: str | None = None,
        connection_factory: ConnectionFactory = Connection,
        rest_url: str | None = None,
        data_url: str | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.rest_url = rest_url
        self.data_url = data_url
        self.sharing = sharing or SharingOptions()
        self.identity = identity or new_identity()
        self._connection_factory = connection_factory
        self._runtime = Runtime(name="alpaca-di-gateway")
        self._lock = threading.Lock()
        self._groups: dict[str, GroupLeader] = {}
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
            group = GroupLeader(
                tag,
                kind,
                endpoint,
                credentials,
                options,
                sharing=sharing,
                identity=self.identity,
                connection_factory=self._connection_factory,
                client=self._current_client,
                rest_url=self.rest_url if kind is StreamKind.TRADING else None,
                data_url=self.data_url,
            )
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

    def _take(self, tag: str) -> tuple[GroupLeader, asyncio.AbstractEventLoop] | None:
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

    def attach(self, tag: str, name: str, tap: LocalTap) -> None:
        """Hand the trade updates this process reads as leader of ``tag`` to ``tap`` at once.

        ``tap(epoch, [(seq, channel, symbol, raw), ...])`` runs on the gateway
        loop and must not block. Held until :meth:`detach` (or the group retires).
        """
        group = self._groups.get(tag)
        if group is not None:
            group.attach(name, tap)

    def detach(self, tag: str, name: str) -> None:
        """Undo :meth:`attach`."""
        group = self._groups.get(tag)
        if group is not None:
            group.detach(name)

    def held(self, tag: str) -> int:
        """Messages this process read as leader of ``tag`` that Redis has not taken yet."""
        group = self._groups.get(tag)
        return group.held if group is not None else 0

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
                "held": group.held,
                "carried": group.publisher.carried,
                "abandoned": group.publisher.abandoned,
            }
            for tag, group in list(self._groups.items())
        }

    # -- the gateway loop ----------------------------------------------------------------

    def _current_client(self) -> Redis | None:
        return self._client

    def _ensure_main(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop and self._main:
            return
        self._loop = loop
        self._client = redis_client(self.redis_url, timeout=self.sharing.command_timeout, name=None)
        self._main = [
            loop.create_task(self._ticker(), name="alpaca-di gateway ticker"),
            loop.create_task(self._listen(), name="alpaca-di gateway listener"),
        ]

    async def _retire(self, group: GroupLeader) -> None:
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
        # One pattern subscription wakes the leader of whichever group's demand changed;
        # another wakes the candidates of a group whose leader just said goodbye (it
        # released the lock: take over now, not at the next renewal tick).
        demand = demand_channel_pattern(self.sharing.prefix)
        status = status_channel_pattern(self.sharing.prefix).encode()
        delay = self.sharing.renew_interval
        bound = self.sharing.command_timeout
        mine = self._client
        while mine is not None and self._client is mine:
            client = mine
            generation = self._link_generation
            pubsub = client.pubsub()
            try:
                await asyncio.wait_for(pubsub.psubscribe(demand, status), bound)
                # Wakes up every second: a link the ticker saw fail and recover is
                # resubscribed (a silently dead pub/sub connection never raises).
                while self._client is mine and self._link_generation == generation:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if not message or message.get("type") != "pmessage":
                        continue
                    tag = tag_of_channel(cast(bytes, message["channel"]))
                    group = self._groups.get(tag) if tag else None
                    if group is None:
                        continue
                    if message.get("pattern") != status:
                        group.recompute_soon()
                    elif _farewell(message["data"]):
                        group.take_over_soon()
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                _log.debug("gateway.listener_lost", error=describe_error(exc))
            finally:
                try:
                    await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]
                except Exception as exc:
                    _log.debug("gateway.pubsub_close_failed", error=describe_error(exc))
            await asyncio.sleep(delay)


def _farewell(data: bytes) -> bool:
    """Whether a status message is a leader's farewell (it released the lock)."""
    try:
        return LeaderStatus.decode(data).state == "gone"
    except ProtocolError:
        return False  # the followers count malformed statuses; a candidate just ignores them
