"""The Redis side of the scale-out: a hub's upstream that reads through Redis.

Alpaca allows one socket per account and endpoint, whatever the number of
processes. In ``sharing="redis"`` mode one process (the *leader*, see
:mod:`alpaca_di.scaleout.leader`) holds the real socket and republishes what it
reads; every process -- the leader's own consumers included -- reads through a
:class:`RedisUpstream`, which implements the
:class:`~alpaca_di.transport.connection.Upstream` protocol, so
:class:`~alpaca_di.services.StreamHub` and everything above it work unchanged.

Per (account, endpoint) *group*, with ``P`` the prefix and ``T`` the account tag
(:func:`account_tag`: an HMAC of the key id and endpoint keyed by the secret, so
no key holds a secret or a raw key id)::

    P:{T}:leader          lock: the leader's identity (SET NX PX, renewed by Lua)
    P:{T}:epoch           fencing epoch of the latest leadership term
    P:{T}:status          the leader's LeaderStatus (upstream state, ack, rejections)
    P:{T}:members         hash: member id -> registration time
    P:{T}:demand:<member> a member's wanted (channel, symbol) pairs, expiring (heartbeat)
    P:{T}:updates         stream of trade updates (XADD MAXLEN ~), read with XREAD
    P:{T}:cursor:<id>     a reader's last stream id, so a restarted reader resumes
    P:{T}:ch:data         pub/sub: msgpack batches [epoch, sent_ms, [[channel, symbol, raw]...]]
    P:{T}:ch:status       pub/sub: LeaderStatus, on every change and every renewal
    P:{T}:ch:demand       pub/sub: "a member's demand changed" (wakes the leader)

The ``{T}`` hash tag keeps a group's keys in one Redis Cluster slot.

Example (what :func:`alpaca_di.scaleout.registry.redis_registry` wires up)::

    upstream = RedisUpstream(url, kind=StreamKind.STOCK, credentials=creds,
                             options=ConnectionOptions(), subscriptions=state,
                             listener=hub, loop=loop, redis_url="redis://127.0.0.1:6379/0")
    upstream.start()
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import msgpack
import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from alpaca_di._aio import wake
from alpaca_di.credentials import Credentials
from alpaca_di.credentials import mask_url as mask_redis_url  # its former name, still exported
from alpaca_di.errors import (
    ConfigurationError,
    ConnectionClosedError,
    ProtocolError,
    ServerError,
    SymbolLimitError,
    describe_error,
    error_for_code,
)
from alpaca_di.protocol import StreamKind, SubscriptionState
from alpaca_di.transport.backoff import Backoff, ExponentialBackoff
from alpaca_di.transport.connection import ConnectionListener
from alpaca_di.transport.options import ConnectionOptions
from alpaca_di.transport.states import ConnectionState, StateHistory

__all__ = [
    "LeaderStatus",
    "RedisUpstream",
    "SharingKeys",
    "SharingOptions",
    "account_tag",
    "decode_batch",
    "decode_demand",
    "decode_update",
    "encode_batch",
    "encode_demand",
    "encode_update",
    "error_from_record",
    "error_record",
    "mask_redis_url",
    "new_identity",
    "redis_client",
]

Pair = tuple[str, str]
_log = structlog.get_logger(__name__)
_TAG_CONTEXT = b"alpaca-di/sharing/v1"



@dataclass(frozen=True)
class SharingOptions:
    """Timing and naming of the Redis scale-out, shared by every process of a deployment.

    Every process of one deployment must use the same ``prefix`` and compatible
    timings. Defaults give a failover of about ``lock_ttl`` + one renewal after a
    leader dies without a word (SIGKILL, power loss); a leader that stops cleanly
    hands over at once.

    Attributes:
        prefix: first part of every Redis key and channel (``ALPACA_REDIS_PREFIX``).
        lock_ttl: seconds the leader lock lives without renewal.
        renew_interval: seconds between renewals (and leader status heartbeats);
            must be well below ``lock_ttl``.
        heartbeat_interval: seconds between a member's demand refreshes.
        heartbeat_ttl: seconds a member's demand survives without a refresh; then
            the leader drops the symbols only that member wanted.
        stream_maxlen: approximate length bound of the trade-update stream.
        cursor_ttl: seconds a reader's saved stream position is kept.
        consumer_id: a stable reader id (``ALPACA_REDIS_CONSUMER_ID``): with it a
            restarted process resumes trade updates where it stopped; without it
            each process starts at the end of the stream.
        command_timeout: how long one Redis command may take (seconds) before the
            link counts as lost.

    Example::

        SharingOptions(prefix="myapp", lock_ttl=5.0, renew_interval=0.5)
    """

    prefix: str = "alpaca-di"
    lock_ttl: float = 3.0
    renew_interval: float = 0.5
    heartbeat_interval: float = 1.0
    heartbeat_ttl: float = 5.0
    stream_maxlen: int = 10_000
    cursor_ttl: float = 86_400.0
    consumer_id: str | None = None
    command_timeout: float = 2.0

    def __post_init__(self) -> None:
        if (
            not isinstance(self.prefix, str)
            or not self.prefix
            or any(c.isspace() for c in self.prefix)
        ):
            raise ConfigurationError(
                f"Redis key prefix must be a non-empty word without spaces, got {self.prefix!r} "
                "(ALPACA_REDIS_PREFIX)"
            )
        for name in (
            "lock_ttl",
            "renew_interval",
            "heartbeat_interval",
            "heartbeat_ttl",
            "cursor_ttl",
            "command_timeout",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        if self.renew_interval * 3 > self.lock_ttl:
            raise ConfigurationError(
                f"renew_interval ({self.renew_interval}) must be at most a third of lock_ttl "
                f"({self.lock_ttl}): a leader must renew several times per TTL"
            )
        if self.heartbeat_interval * 2 > self.heartbeat_ttl:
            raise ConfigurationError(
                f"heartbeat_interval ({self.heartbeat_interval}) must be at most half of "
                f"heartbeat_ttl ({self.heartbeat_ttl})"
            )
        if not isinstance(self.stream_maxlen, int) or self.stream_maxlen < 100:
            raise ConfigurationError("stream_maxlen must be an int >= 100")
        if self.consumer_id is not None and (
            not self.consumer_id or any(c.isspace() for c in self.consumer_id)
        ):
            raise ConfigurationError(
                "consumer_id must be a non-empty word without spaces (ALPACA_REDIS_CONSUMER_ID)"
            )


@dataclass(frozen=True)
class SharingKeys:
    """The Redis key and channel names of one (account, endpoint) group.

    Example::

        keys = SharingKeys("alpaca-di", account_tag(creds, url))
        keys.leader          # 'alpaca-di:{3f2a...}:leader'
    """

    prefix: str
    tag: str

    @property
    def base(self) -> str:
        """Common start of every name of the group (with the cluster hash tag)."""
        return f"{self.prefix}:{{{self.tag}}}"

    @property
    def leader(self) -> str:
        """The leader lock."""
        return f"{self.base}:leader"

    @property
    def epoch(self) -> str:
        """The fencing epoch counter."""
        return f"{self.base}:epoch"

    @property
    def status(self) -> str:
        """The leader's latest :class:`LeaderStatus` (expires with the lock)."""
        return f"{self.base}:status"

    @property
    def members(self) -> str:
        """Hash of registered members."""
        return f"{self.base}:members"

    def demand(self, member: str) -> str:
        """One member's demand (expiring)."""
        return f"{self.base}:demand:{member}"

    @property
    def updates(self) -> str:
        """The trade-update stream."""
        return f"{self.base}:updates"

    def cursor(self, consumer: str) -> str:
        """A reader's saved stream position."""
        return f"{self.base}:cursor:{consumer}"

    @property
    def data_channel(self) -> str:
        """Pub/sub channel of market-data batches."""
        return f"{self.base}:ch:data"

    @property
    def status_channel(self) -> str:
        """Pub/sub channel of leader status."""
        return f"{self.base}:ch:status"

    @property
    def demand_channel(self) -> str:
        """Pub/sub channel members use to wake the leader."""
        return f"{self.base}:ch:demand"


def account_tag(credentials: Credentials, endpoint: str) -> str:
    """The group tag of (credentials, endpoint): safe to put in Redis key names.

    An HMAC-SHA256 of the key id and endpoint, keyed by the secret: it reveals
    neither, equal key pairs on the same endpoint get the same tag in every
    process, and a process holding a wrong secret lands in a group of its own
    (where its own leader gets the ``402``)::

        account_tag(Credentials("PKTEST", "s3cret"), "wss://stream.data.alpaca.markets/v2/iex")
    """
    message = b"\0".join((_TAG_CONTEXT, _utf8(credentials.key_id), _utf8(endpoint)))
    # No local variable holds the secret: tracebacks may be rendered with locals.
    return hmac.new(
        _utf8(credentials.secret.get_secret_value()), message, hashlib.sha256
    ).hexdigest()[:24]


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def new_identity() -> str:
    """A process identity for leadership and health: ``host:pid:random``.

    Example::

        new_identity()     # 'web-1:4242:9f3a1c'
    """
    host = socket.gethostname().replace(" ", "_") or "host"
    return f"{host}:{os.getpid()}:{secrets.token_hex(3)}"


def redis_client(url: str, *, timeout: float, name: str | None = None) -> Redis:
    """An asyncio Redis client that fails fast instead of retrying inside commands.

    The scale-out handles reconnection itself (and a leader must notice a lost
    Redis at once to fence itself), so redis-py's own retries are off. There is
    no *socket* timeout: with one, redis-py wraps every write in
    ``asyncio.wait_for``, and on Python < 3.12 cancelling such a command can
    leave the task hanging forever. Callers bound each command themselves
    (``command_timeout``); ``timeout`` bounds the connect::

        client = redis_client("redis://127.0.0.1:6379/0", timeout=2.0)
    """
    return Redis.from_url(
        url,
        socket_timeout=None,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        client_name=name,
    )


# -- wire encodings ------------------------------------------------------------------------


def encode_demand(version: int, pairs: list[Pair]) -> bytes:
    """Encode a member's demand: its version and its (channel, symbol) pairs::

    encode_demand(3, [("quotes", "AAPL")])
    """
    return cast(bytes, msgpack.packb([version, sorted(pairs)]))


def decode_demand(data: bytes) -> tuple[int, set[Pair]]:
    """Decode :func:`encode_demand`; raises ``ProtocolError`` on garbage::

    decode_demand(encode_demand(3, [("quotes", "AAPL")]))   # (3, {("quotes", "AAPL")})
    """
    try:
        version, items = msgpack.unpackb(data)
        return int(version), {(str(channel), str(symbol)) for channel, symbol in items}
    except Exception as exc:
        raise ProtocolError(f"undecodable demand record: {type(exc).__name__}") from None


def encode_batch(epoch: int, messages: list[Any]) -> bytes:
    """Encode market-data messages ``[(channel, symbol, raw), ...]`` for pub/sub.

    msgpack Timestamps inside ``raw`` survive the round trip::

        encode_batch(7, [("quotes", "AAPL", {"T": "q", "S": "AAPL"})])
    """
    return cast(bytes, msgpack.packb([epoch, time.time() * 1000.0, messages]))


def decode_batch(data: bytes) -> tuple[int, float, list[Any]]:
    """Decode :func:`encode_batch`: ``(epoch, sent_ms, messages)``; ``ProtocolError`` on garbage."""
    try:
        epoch, sent_ms, messages = msgpack.unpackb(data)
    except Exception as exc:
        raise ProtocolError(f"undecodable data batch: {type(exc).__name__}") from None
    if not isinstance(epoch, int) or not isinstance(messages, list):
        raise ProtocolError("data batch has the wrong shape")
    return epoch, float(sent_ms), messages


def encode_update(channel: str, symbol: str, raw: Mapping[str, Any]) -> bytes:
    """Encode one trade update for the stream (the entry's ``m`` field)::

    encode_update("trade_updates", "AAPL", {"event": "fill", ...})
    """
    return cast(bytes, msgpack.packb([channel, symbol, raw]))


def decode_update(data: bytes) -> list[Any]:
    """Decode :func:`encode_update`: ``[channel, symbol, raw]``; ``ProtocolError`` on garbage."""
    try:
        item = msgpack.unpackb(data)
    except Exception as exc:
        raise ProtocolError(f"undecodable trade update: {type(exc).__name__}") from None
    if not isinstance(item, list) or len(item) != 3 or not isinstance(item[2], dict):
        raise ProtocolError("trade update has the wrong shape")
    return item


def error_record(error: BaseException | None) -> tuple[str, int | None, str] | None:
    """``(type name, Alpaca code or None, message)`` of an upstream error, for followers.

    Example::

        error_record(AuthenticationError(402, "auth failed"))
        # ('AuthenticationError', 402, 'auth failed')
    """
    if error is None:
        return None
    if isinstance(error, ServerError):
        return (type(error).__name__, error.code, error.server_message)
    return (type(error).__name__, None, str(error))


def error_from_record(
    record: tuple[str, int | None, str] | None, *, feed: str | None = None
) -> BaseException:
    """Rebuild the exception a leader reported (:func:`error_record`).

    Example::

        error_from_record(("AuthenticationError", 402, "auth failed"))  # AuthenticationError
    """
    if record is None:
        return ConnectionClosedError("the shared upstream connection failed")
    name, code, message = record
    if code is not None:
        return error_for_code(code, message, feed=feed)
    if name == "ConfigurationError":
        return ConfigurationError(message)
    return ConnectionClosedError(f"the shared upstream connection failed: {name}: {message}")


@dataclass(frozen=True)
class LeaderStatus:
    """What the leader of a group publishes about its upstream socket.

    Attributes:
        leader: the leader's identity (``host:pid:random``).
        epoch: the fencing epoch of its term; followers ignore older epochs.
        state: the upstream :class:`ConnectionState` value, or ``"gone"`` when the
            leader stepped down.
        ack: the server's confirmed subscription state (channel -> symbols).
        rejected: ``(channel, symbol, code, message)`` the server refused (405).
        error: the upstream's fatal error (:func:`error_record`) when ``state`` is
            ``failed``.
        seen: member id -> the version of its demand the leader has applied; a
            member trusts ``ack`` for its own pairs only once its latest version
            is seen.

    Example::

        status = LeaderStatus("web-1:42:ab12cd", 7, "connected", {"quotes": ("AAPL",)})
        LeaderStatus.decode(status.encode()) == status
    """

    leader: str
    epoch: int
    state: str
    ack: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    rejected: tuple[tuple[str, str, int, str], ...] = ()
    error: tuple[str, int | None, str] | None = None
    seen: Mapping[str, int] = field(default_factory=dict)

    def encode(self) -> bytes:
        """msgpack bytes of this status."""
        return cast(
            bytes,
            msgpack.packb(
                {
                    "v": 1,
                    "leader": self.leader,
                    "epoch": self.epoch,
                    "state": self.state,
                    "ack": {channel: list(symbols) for channel, symbols in self.ack.items()},
                    "rejected": [list(item) for item in self.rejected],
                    "error": list(self.error) if self.error else None,
                    "seen": dict(self.seen),
                }
            ),
        )

    @classmethod
    def decode(cls, data: bytes) -> LeaderStatus:
        """Parse :meth:`encode` output; ``ProtocolError`` on garbage."""
        try:
            record = msgpack.unpackb(data)
            error = record.get("error")
            return cls(
                leader=str(record["leader"]),
                epoch=int(record["epoch"]),
                state=str(record["state"]),
                ack={str(c): tuple(str(s) for s in syms) for c, syms in record["ack"].items()},
                rejected=tuple(
                    (str(c), str(s), int(code), str(text))
                    for c, s, code, text in record.get("rejected") or ()
                ),
                error=(str(error[0]), error[1], str(error[2])) if error else None,
                seen={str(m): int(v) for m, v in (record.get("seen") or {}).items()},
            )
        except Exception as exc:
            raise ProtocolError(f"undecodable leader status: {type(exc).__name__}") from None


# -- the follower ----------------------------------------------------------------------------


_NO_LEADER = ConnectionClosedError(
    "no process leads this account and endpoint yet: is a leader candidate running "
    "(ALPACA_REDIS_ROLE=candidate, or an `alpaca-di gateway` process)?"
)


class _LeaderFailed(Exception):
    """The leader reported a fatal upstream error: this upstream fails too."""


def _stream_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


class RedisUpstream:
    """A hub's upstream fed through Redis by the group's leader.

    Implements :class:`~alpaca_di.transport.connection.Upstream`: it publishes
    the hub's demand (:meth:`SubscriptionState.desired`) with a heartbeat,
    delivers the leader's market-data batches (pub/sub) or trade updates (a
    Redis stream read from this reader's own position: each update once per
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
        redis_url: str,
        sharing: SharingOptions | None = None,
        member: str | None = None,
        role: Callable[[], str] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
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
        self.duplicates = 0
        self.last_message_monotonic: float | None = None
        self.last_error: BaseException | None = None
        self._redis_url = redis_url
        self._listener = listener
        self._loop = loop
        self._backoff = backoff or ExponentialBackoff(options.backoff_initial, options.backoff_max)
        self._role = role
        self._on_close = on_close
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
        self._last_id: str | None = None
        self._seen_updates: dict[int, int] = {}
        self._lag_ms: float | None = None
        self._consumer = self.sharing.consumer_id or self.member
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

    # -- health --------------------------------------------------------------------------

    def health_fields(self) -> dict[str, Any]:
        """Sharing fields for :class:`~alpaca_di.hub.health.ConnectionHealth`.

        ``role`` (``leader`` when this process's gateway holds the group's lock,
        else ``follower``), ``leader`` (the leader's identity), ``redis`` (``up``,
        ``down``, or ``None`` before the hub first connects) and ``lag_ms`` (smoothed
        delay from the leader's publish to this process's receipt; wall clocks, so it
        includes clock skew across hosts)::

            health = hub.health().model_copy(update=upstream.health_fields())
        """
        status = self._status
        return {
            "role": self._role() if self._role is not None else "follower",
            "leader": status.leader if status is not None else None,
            "redis": "up" if self._redis_up else ("down" if self.started else None),
            "lag_ms": round(self._lag_ms, 3) if self._lag_ms is not None else None,
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
        if status is not None and status.state == ConnectionState.FAILED.value:
            self._fatal = error_from_record(status.error, feed=self.options.feed)
            return
        if self._redis_up and status is not None and status.state == "connected":
            if self.state is not ConnectionState.CONNECTED:
                self._ever_connected = True
                self._forwarded_ack = None
                self._set_state(ConnectionState.CONNECTED)
            # The ack confirms our pairs only once the leader has applied our latest
            # demand: an older ack may predate an unsubscribe we caused.
            seen = status.seen.get(self.member, -1) >= self._demand_version
            if seen and status.ack != self._forwarded_ack:
                self._forwarded_ack = status.ack
                self._listener.on_ack(status.ack)
            return
        if self._redis_up and status is None:
            self.last_error = _NO_LEADER
        self._set_state(
            ConnectionState.RECONNECTING if self._ever_connected else ConnectionState.CONNECTING
        )

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
            if status.rejected:
                self._apply_rejections(status.rejected)
        self._evaluate()

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
                await asyncio.wait_for(self._init_cursor(client), bound)
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
                tasks.append(self._loop.create_task(self._read_updates(client, session)))
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
        if not to_subscribe and not to_unsubscribe:
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
            pipe.delete(keys.demand(self.member))
            pipe.hdel(keys.members, self.member)
            pipe.publish(keys.demand_channel, self.member)
            await pipe.execute()

    # -- trade updates ---------------------------------------------------------------------

    async def _init_cursor(self, client: Redis) -> None:
        keys = self.keys
        newest = await client.xrevrange(keys.updates, count=1)
        top = _text(newest[0][0]) if newest and newest[0][0] else None
        if self._last_id is None:
            saved = None
            if self.sharing.consumer_id:
                saved = await client.get(keys.cursor(self._consumer))
            self._last_id = _text(saved) if saved else (top or "0-0")
        elif top is None or _stream_id(top) < _stream_id(self._last_id):
            # The stream is younger than our position (Redis restarted empty): read it all.
            self._last_id = "0-0"

    async def _read_updates(self, client: Redis, session: _Session) -> None:
        keys = self.keys
        bound = self.sharing.command_timeout
        block_ms = max(1, int(min(1.0, bound / 2) * 1000))
        cursor_ttl = int(self.sharing.cursor_ttl * 1000)
        while session.live:
            assert self._last_id is not None
            # XREAD blocks server-side for block_ms: a reply well after that means a dead link.
            response = await asyncio.wait_for(
                client.xread({keys.updates: self._last_id}, block=block_ms, count=256),
                block_ms / 1000 + bound,
            )
            if not response or not session.live:
                continue
            for _name, entries in cast(list[Any], response):
                batch: list[Any] = []
                for entry_id, fields in entries:
                    self._last_id = _text(entry_id)
                    item = self._decode_entry(fields)
                    if item is not None:
                        batch.append(item)
                if batch:
                    self.messages_received += len(batch)
                    self.last_message_monotonic = self._loop.time()
                    self._listener.on_batch(batch)
            await asyncio.wait_for(
                client.set(keys.cursor(self._consumer), self._last_id, px=cursor_ttl), bound
            )

    def _decode_entry(self, fields: Mapping[bytes, bytes] | None) -> list[Any] | None:
        payload = fields.get(b"m") if fields else None
        if fields is None or payload is None:
            self.count_malformed("trade-update entry without a payload")
            return None
        try:
            epoch, seq = int(fields.get(b"e", b"0")), int(fields.get(b"n", b"0"))
            item = decode_update(payload)
        except (ProtocolError, ValueError) as exc:
            self.count_malformed(str(exc))
            return None
        # A leader retries an XADD whose reply it lost: (epoch, seq) makes that idempotent.
        if seq:
            seen = self._seen_updates
            if seq <= seen.get(epoch, 0):
                self.duplicates += 1
                return None
            seen[epoch] = seq
            if len(seen) > 16:
                del seen[min(seen)]
        return item


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


async def _close_client(client: Redis) -> None:
    try:
        await asyncio.wait_for(client.aclose(), 1.0)
    except Exception as exc:
        _log.debug("redis.client_close_failed", error=describe_error(exc))


