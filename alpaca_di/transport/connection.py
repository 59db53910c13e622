"""One WebSocket to one Alpaca endpoint: connect, authenticate, subscribe, read, reconnect.

This is the thin asyncio shell around :mod:`alpaca_di.protocol`. It owns no
consumer logic: decoded batches go to a :class:`ConnectionListener` (the hub),
which never awaits consumer code, so one slow consumer cannot stall the socket.

Subscriptions live in a shared :class:`~alpaca_di.protocol.SubscriptionState`:
the listener changes reference counts and calls :meth:`Connection.request_flush`;
the connection sends at most one delta per loop tick while connected, and the
whole set once after every (re)connect.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException

from alpaca_di._check import is_loopback
from alpaca_di.credentials import Credentials
from alpaca_di.errors import (
    AlpacaDIError,
    AuthenticationError,
    ConfigurationError,
    ConnectionLimitError,
    InsufficientSubscriptionError,
    ServerError,
    SlowClientError,
    SymbolLimitError,
    describe_error,
)
from alpaca_di.protocol import (
    Authenticated,
    DataBatch,
    DataStreamProtocol,
    Event,
    Malformed,
    ServerErrorEvent,
    StreamKind,
    SubscriptionAck,
    SubscriptionState,
    Welcome,
    protocol_for,
)
from alpaca_di.transport.backoff import Backoff, ExponentialBackoff
from alpaca_di.transport.options import ConnectionOptions
from alpaca_di.transport.states import ConnectionState, StateHistory

__all__ = [
    "Connection",
    "ConnectionFactory",
    "ConnectionListener",
    "Upstream",
    "check_url",
]

_USER_AGENT = "alpaca-di/0.1"
_FATAL = (AuthenticationError, InsufficientSubscriptionError, ConfigurationError)
# Codes the server sends in reply to a subscribe or unsubscribe it refused.
_SUBSCRIBE_REPLY_CODES = frozenset({400, 405, 410})


class ConnectionListener(Protocol):
    """What a connection tells its owner. Every call happens on the connection's loop."""

    def on_state(
        self, state: ConnectionState, previous: ConnectionState, error: BaseException | None
    ) -> None:
        """The connection moved to ``state``."""

    def on_batch(
        self,
        messages: list[tuple[str, str, dict[str, Any]]],
        structs: list[Any] | None = None,
        sources: list[Any] | None = None,
    ) -> None:
        """Decoded data messages of one frame, in wire order. Must not block.

        ``structs`` and ``sources`` (model sources) only when
        :meth:`Connection.decode_forms` asked for them, each parallel to
        ``messages`` (see :class:`~alpaca_di.protocol.events.DataBatch`).
        """

    def on_ack(self, channels: Mapping[str, tuple[str, ...]]) -> None:
        """The server confirmed its full subscription state."""

    def on_rejected(self, pairs: list[tuple[str, str]], error: ServerError) -> None:
        """A subscribe was refused (405 ...); ``pairs`` were rolled back already."""

    def on_malformed(self, reason: str) -> None:
        """A frame or element could not be decoded; it was dropped."""

    def on_unsubscribing(self, channels: Mapping[str, list[str]]) -> None:
        """An unsubscribe of ``channels`` went out: the last ack no longer covers them."""


class Upstream(Protocol):
    """What a hub needs from its source of messages.

    :class:`Connection` is the WebSocket implementation; the Redis scale-out
    provides another, so hubs and everything above them stay unchanged.
    """

    history: StateHistory
    reconnects: int
    messages_received: int
    malformed: int
    last_message_monotonic: float | None
    last_error: BaseException | None

    @property
    def state(self) -> ConnectionState:
        """The current state."""

    def start(self) -> None:
        """Begin connecting (idempotent)."""

    async def close(self) -> None:
        """Stop for good, cleanly."""

    def request_flush(self) -> None:
        """Send the pending subscription delta soon (coalesced per loop tick)."""

    def count_malformed(self, reason: str) -> None:
        """Count (and log) a message that could not be decoded or parsed."""

    def health_fields(self) -> dict[str, Any]:
        """Extra :class:`~alpaca_di.services.ConnectionHealth` fields (role, lag ...)."""


class ConnectionFactory(Protocol):
    """Builds the upstream of a hub; :class:`Connection` itself is one."""

    def __call__(
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
    ) -> Upstream:
        """Return a new, unstarted upstream."""


def check_url(url: str, *, allow_insecure: bool) -> None:
    """Refuse URLs that cannot work or would leak the secret.

    Plain ``ws://`` is accepted for loopback hosts only, unless ``allow_insecure``::

        check_url("ws://127.0.0.1:8765/v2/iex", allow_insecure=False)   # fine
        check_url("ws://example.com/v2/iex", allow_insecure=False)      # ConfigurationError
    """
    if not isinstance(url, str):
        raise TypeError(f"stream URL must be a str, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigurationError(
            f"stream URL {url!r} must be ws:// or wss:// with a host "
            "(set ALPACA_DATA_STREAM_URL / ALPACA_TRADING_STREAM_URL)"
        )
    if parts.username or parts.password:
        raise ConfigurationError("stream URL must not carry credentials in it")
    if parts.scheme == "ws" and not allow_insecure and not is_loopback(parts.hostname):
        raise ConfigurationError(
            f"refusing plain ws:// to non-loopback host {parts.hostname!r}: the secret key "
            "would travel unencrypted. Use wss://, or set allow_insecure=True "
            "(ALPACA_ALLOW_INSECURE=true) if you really mean it"
        )


class Connection:
    """A self-healing WebSocket to one endpoint for one key pair.

    Created and driven by :class:`~alpaca_di.services.StreamHub`; all methods
    must be called on ``loop``. Example (inside a running loop)::

        conn = Connection(url, kind=StreamKind.STOCK, credentials=creds,
                          options=ConnectionOptions(), subscriptions=state,
                          listener=hub, loop=asyncio.get_running_loop())
        conn.start()
        state.add("quotes", ["AAPL"]); conn.request_flush()
        ...
        await conn.close()
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
    ) -> None:
        check_url(url, allow_insecure=options.allow_insecure)
        self.url = url
        self.kind = kind
        self.options = options
        self.subscriptions = subscriptions
        self.history = StateHistory()
        self.reconnects = 0
        self.messages_received = 0
        self.malformed = 0
        self.last_message_monotonic: float | None = None
        self.last_error: BaseException | None = None
        # 406 replies (connection limit exceeded) over the connection's life.
        self.limit_rejections = 0
        self._credentials = credentials
        self._listener = listener
        self._loop = loop
        self._backoff = backoff or ExponentialBackoff(options.backoff_initial, options.backoff_max)
        self._protocol = protocol_for(kind)
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # Why the current session is about to end, when we know better than the
        # transport error that follows (a 407 before the close, a mute timeout).
        self._cause: BaseException | None = None
        self._limit_since: float | None = None
        self._flush_scheduled = False
        self._pending_replies: deque[list[tuple[str, str]] | None] = deque()
        self._log = structlog.get_logger("alpaca_di.connection").bind(
            kind=kind.value, endpoint=url, fingerprint=credentials.fingerprint
        )

    # -- state -------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The current state."""
        return self.history.state

    @property
    def started(self) -> bool:
        """True once :meth:`start` ran."""
        return self._task is not None

    def _set_state(self, state: ConnectionState, error: BaseException | None = None) -> None:
        if state is self.history.state:
            return
        previous = self.history.record(state, describe_error(error))
        if error is not None:
            self.last_error = error
        log = self._log.warning if state is ConnectionState.FAILED else self._log.info
        log(
            "connection.state",
            state=state.value,
            previous=previous.value,
            error=describe_error(error),
        )
        self._listener.on_state(state, previous, error)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Begin connecting (idempotent)."""
        if self._task is None and not self._closing:
            self._task = self._loop.create_task(self._run(), name=f"alpaca-di {self.url}")

    async def close(self) -> None:
        """Send a close frame, stop reconnecting, and wait (bounded) until done."""
        self._closing = True
        ws, task = self._ws, self._task
        if ws is not None:
            await _close_quietly(ws, self.options.close_timeout)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if not self.state.is_final:
            self._set_state(ConnectionState.CLOSED)

    # -- subscriptions -----------------------------------------------------

    def request_flush(self) -> None:
        """Send the pending subscription delta at the end of this loop tick."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        ws = self._ws
        if ws is None or self._closing or self.state is not ConnectionState.CONNECTED:
            return  # the full set goes out after the next connect
        to_subscribe, to_unsubscribe = self.subscriptions.take_delta()
        self._send_changes(ws, to_subscribe, to_unsubscribe)

    def _send_changes(
        self,
        ws: ClientConnection,
        to_subscribe: Mapping[str, list[str]],
        to_unsubscribe: Mapping[str, list[str]],
    ) -> None:
        frames: list[bytes | str] = []
        if to_subscribe:
            frames.append(self._protocol.subscribe_message(to_subscribe))
            self._pending_replies.append(
                [
                    (channel, symbol)
                    for channel, symbols in to_subscribe.items()
                    for symbol in symbols
                ]
            )
        if to_unsubscribe:
            frames.append(self._protocol.unsubscribe_message(to_unsubscribe))
            self._pending_replies.append(None)
            self._listener.on_unsubscribing(to_unsubscribe)
        if frames:
            self._loop.create_task(self._send(ws, frames))

    async def _send(self, ws: ClientConnection, frames: list[bytes | str]) -> None:
        try:
            for frame in frames:
                await ws.send(frame)
        except (ConnectionClosed, OSError) as exc:
            # The reader sees the same failure and reconnects; restore() resends all.
            self._log.debug("connection.send_failed", error=describe_error(exc))

    # -- the connection loop -------------------------------------------------

    async def _run(self) -> None:
        first = True
        while not self._closing:
            if not first:
                self._set_state(ConnectionState.RECONNECTING, self.last_error)
                await asyncio.sleep(self._backoff.next_delay())
                if self._closing:
                    break
                self.reconnects += 1
            first = False
            try:
                await self._session()
            except _FATAL as exc:
                self._set_state(ConnectionState.FAILED, exc)
                return
            except ConnectionLimitError as exc:
                if self._limited(exc):
                    self._set_state(ConnectionState.FAILED, exc)
                    return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every transport failure reconnects
                if self._closing:
                    break
                cause, self._cause = self._cause, None
                self.last_error = cause or exc
                self._log.warning(
                    "connection.lost", error=describe_error(exc), cause=describe_error(cause)
                )
            finally:
                self._disconnected()

    def _limited(self, error: ConnectionLimitError) -> bool:
        """Count a 406; True when it is final (its grace window is over)."""
        now = time.monotonic()
        self._limit_since = self._limit_since or now
        self.limit_rejections += 1
        self.last_error = error
        grace = self.options.connection_limit_grace
        final = grace is not None and now - self._limit_since >= grace
        if not final and (self.limit_rejections <= 10 or self.limit_rejections % 100 == 0):
            self._log.warning(
                "connection.limit_retry",
                rejections=self.limit_rejections,
                seconds=round(now - self._limit_since, 3),
                grace=grace,
            )
        return final

    async def _session(self) -> None:
        self._cause = None
        self._set_state(ConnectionState.CONNECTING)
        headers = (
            {"Content-Type": "application/msgpack"} if self.kind is not StreamKind.TRADING else {}
        )
        opts = self.options
        try:
            ws = await connect(
                self.url,
                additional_headers=headers,
                user_agent_header=_USER_AGENT,
                open_timeout=opts.open_timeout,
                ping_interval=opts.ping_interval,
                ping_timeout=opts.ping_timeout,
                close_timeout=opts.close_timeout,
                compression=None,
                max_size=16 * 2**20,
                max_queue=256,
                proxy=None,
            )
        except InvalidStatus as exc:
            raise _handshake_error(exc, self.url, self.kind, self.options.feed) from None
        except InvalidURI as exc:
            raise ConfigurationError(f"invalid stream URL {self.url!r}: {exc}") from None
        self._ws = ws
        try:
            self._set_state(ConnectionState.AUTHENTICATING)
            await asyncio.wait_for(self._authenticate(ws), opts.open_timeout)
            self._limit_since = None
            self._set_state(ConnectionState.CONNECTED)
            self._send_changes(ws, self.subscriptions.restore(), {})
            watchdog = self._loop.create_task(self._watch_mute(ws)) if opts.data_timeout else None
            try:
                await self._read(ws)
            finally:
                if watchdog is not None:
                    watchdog.cancel()
        finally:
            self._ws = None
            if not self._closing:
                await _close_quietly(ws, self.options.close_timeout)

    async def _authenticate(self, ws: ClientConnection) -> None:
        # No local variable of this frame (or of any frame an exception can carry
        # out of here) may hold the secret: tracebacks are logged with their locals
        # by structlog's default renderer, and errors raised here reach the user.
        if self.kind is StreamKind.TRADING:
            await self._send_auth(ws)
        while True:
            for event in self._protocol.receive(await ws.recv()):
                if isinstance(event, Welcome):
                    await self._send_auth(ws)
                elif isinstance(event, Authenticated):
                    return
                elif isinstance(event, ServerErrorEvent):
                    raise event.exception(feed=self.options.feed)
                elif isinstance(event, Malformed):
                    self.count_malformed(event.reason)

    async def _send_auth(self, ws: ClientConnection) -> None:
        credentials = self._credentials
        error: BaseException | None = None
        try:
            await ws.send(
                self._protocol.auth_message(
                    credentials.key_id, credentials.secret.get_secret_value()
                )
            )
        except (ConnectionClosed, OSError) as exc:
            error = exc
        if error is not None:
            # Its traceback runs through websockets' send(), whose locals hold the
            # auth message: raise it without them (and outside the except block).
            raise error.with_traceback(None)

    async def _read(self, ws: ClientConnection) -> None:
        protocol, loop = self._protocol, self._loop
        async for frame in ws:
            self.last_message_monotonic = loop.time()
            for events in protocol.receive_slices(frame):
                self._handle(events)
                # Let the consumers' drain tasks (and every other hub on this loop)
                # run between slices and frames: websockets hands out buffered frames
                # without suspending, so a backlog or one huge frame would otherwise
                # be parsed whole before anyone else ran. Deep queues keep thousands of
                # parsed models alive long enough to reach the GC's oldest generation,
                # and each full collection then costs tens of ms.
                await asyncio.sleep(0)
        # The server closed cleanly without being asked: reconnect like a drop.
        raise ConnectionClosedByServer(ws.close_code, ws.close_reason)

    def _handle(self, events: list[Event]) -> None:
        listener = self._listener
        for event in events:
            if isinstance(event, DataBatch):
                if self._cause is not None:  # data flows again: that error is history
                    self._cause = None
                self.messages_received += len(event.messages)
                listener.on_batch(event.messages, event.structs, event.sources)
                self._backoff.reset()
            elif isinstance(event, SubscriptionAck):
                if self._pending_replies:
                    self._pending_replies.popleft()
                self._backoff.reset()
                listener.on_ack(event.channels)
            elif isinstance(event, ServerErrorEvent):
                self._server_error(event)
            elif isinstance(event, Malformed):
                self.count_malformed(event.reason)

    def _server_error(self, event: ServerErrorEvent) -> None:
        error = event.exception(feed=self.options.feed)
        if event.code in _SUBSCRIBE_REPLY_CODES and self._pending_replies:
            pairs = self._pending_replies.popleft()
            if pairs:
                self.subscriptions.reject(pairs)
                if isinstance(error, SymbolLimitError):
                    error = SymbolLimitError(error.code, error.server_message, symbols=pairs)
                self._log.warning("connection.subscribe_rejected", error=str(error))
                self._listener.on_rejected(pairs, error)
                return
        level = self._log.warning if isinstance(error, SlowClientError) else self._log.error
        level("connection.server_error", code=event.code, message=event.message)
        self.last_error = self._cause = error

    @property
    def decoded_forms(self) -> frozenset[str]:
        """The forms data frames are decoded into now (``{"raw"}`` on the trading stream)."""
        if isinstance(self._protocol, DataStreamProtocol):
            return self._protocol.forms
        return frozenset({"raw"})

    def decode_forms(self, forms: frozenset[str]) -> None:
        """Decode data frames into ``forms`` from the next frame on (``DataStreamProtocol.forms``).

        The hub asks for what its consumers need: ``{"struct"}`` or ``{"model"}``
        alone builds no dict for a message that decodes into them. The trading
        stream's JSON has one form: ignored there::

            connection.decode_forms(frozenset({"raw", "struct"}))
        """
        if isinstance(self._protocol, DataStreamProtocol):
            self._protocol.forms = forms

    def health_fields(self) -> dict[str, Any]:
        """A direct WebSocket adds nothing to the health report."""
        return {}

    def count_malformed(self, reason: str) -> None:
        """Count (and log, rate-limited) a message that could not be decoded or parsed."""
        self.malformed += 1
        if self.malformed <= 10 or self.malformed % 1000 == 0:
            self._log.warning("connection.malformed", reason=reason, total=self.malformed)
        self._listener.on_malformed(reason)

    async def _watch_mute(self, ws: ClientConnection) -> None:
        timeout = self.options.data_timeout
        assert timeout is not None
        since = self._loop.time()
        while True:
            last = max(since, self.last_message_monotonic or since)
            remaining = last + timeout - self._loop.time()
            if remaining > 0:
                await asyncio.sleep(remaining)
                continue
            if not self.subscriptions.desired():
                since = self._loop.time()
                continue
            self._log.warning("connection.mute", seconds=timeout)
            self.last_error = self._cause = TimeoutError(
                f"no data for {timeout} s on a subscribed connection"
            )
            ws.transport.abort()
            return

    def _disconnected(self) -> None:
        self._pending_replies.clear()
        self.subscriptions.reset_wire()


class ConnectionClosedByServer(AlpacaDIError):
    """The server closed the socket without being asked; we reconnect."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"server closed the connection (code {code}, reason {reason!r})")


# The settings (and environment variables) that make up a stream's URL, per kind.
_URL_SETTINGS: dict[StreamKind, tuple[tuple[str, str], ...]] = {
    StreamKind.STOCK: (("feed", "ALPACA_FEED"),),
    StreamKind.CRYPTO: (("crypto_feed", "ALPACA_CRYPTO_FEED"),),
    StreamKind.OPTION: (("option_feed", "ALPACA_OPTION_FEED"),),
}


def _handshake_error(
    exc: InvalidStatus, url: str, kind: StreamKind, feed: str | None = None
) -> Exception:
    status = exc.response.status_code
    if status in (401, 403):
        return AuthenticationError(402, f"HTTP {status} at the WebSocket handshake")
    if status == 404:
        settings: tuple[tuple[str, str], ...]
        if kind is StreamKind.TRADING:
            settings = (("trading_stream_url", "ALPACA_TRADING_STREAM_URL"),)
        else:
            settings = (*_URL_SETTINGS.get(kind, ()), ("data_stream_url", "ALPACA_DATA_STREAM_URL"))
        fields = tuple(field for field, _env in settings)
        env_vars = tuple(env for _field, env in settings)
        shown = f" with feed {feed!r}" if feed and kind in _URL_SETTINGS else ""
        return ConfigurationError(
            f"no Alpaca {kind.value} stream at {url!r}{shown} (HTTP 404): check "
            + " and ".join(f"{field} ({env})" for field, env in settings),
            fields=fields,
            env_vars=env_vars,
        )
    return ConnectionError(f"HTTP {status} at the WebSocket handshake of {url}")


async def _close_quietly(ws: ClientConnection, timeout: float) -> None:
    try:
        await asyncio.wait_for(ws.close(), timeout)
    except (asyncio.TimeoutError, OSError, WebSocketException):
        ws.transport.abort()
