"""MemoryUpstream: an in-memory :class:`~alpaca_di.transport.connection.Upstream`.

The fake lives at the seam, as httpx's ``MockTransport`` does: a real
:class:`~alpaca_di.hub.StreamHub` runs on top of it, so reference counting,
deltas, acks, routing, parsing, queues and handlers are the production code.
The upstream records what would go on the wire, acknowledges it at once like
a server, connects at once, and hands the batches a test feeds it to the hub
exactly as a WebSocket's reader does (``listener.on_batch``)::

    from alpaca_di.hub import StreamHub
    from alpaca_di.testing.memory import MemoryUpstream

    upstreams: list[MemoryUpstream] = []

    def factory(url, **kwargs):
        upstreams.append(MemoryUpstream(url, **kwargs))
        return upstreams[-1]

    hub = StreamHub(kind=StreamKind.STOCK, endpoint="memory://stock", credentials=creds,
                    options=ConnectionOptions(), loop=loop, connection_factory=factory)
    sub = hub.subscribe(print, quotes=["AAPL"])
    # on the hub's loop, a tick later:
    upstreams[0].wire()          # {"quotes": frozenset({"AAPL"})}
    upstreams[0].sent            # [WireFrame("subscribe", {"quotes": ("AAPL",)})]
    upstreams[0].feed([("quotes", "AAPL", messages.quote("AAPL", bid=1.0))])

Every method but the read-only ones must be called on the hub's loop (as for
:class:`~alpaca_di.transport.Connection`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from alpaca_di.credentials import Credentials
from alpaca_di.errors import ConnectionClosedError, ServerError, describe_error
from alpaca_di.protocol import StreamKind, SubscriptionState
from alpaca_di.transport.backoff import Backoff
from alpaca_di.transport.connection import ConnectionListener
from alpaca_di.transport.options import ConnectionOptions
from alpaca_di.transport.states import ConnectionState, StateHistory

__all__ = ["MemoryUpstream", "WireFrame"]

_log = structlog.get_logger("alpaca_di.testing.memory")


@dataclass(frozen=True)
class WireFrame:
    """One subscribe or unsubscribe the upstream "sent": channels and their symbols."""

    action: Literal["subscribe", "unsubscribe"]
    channels: Mapping[str, tuple[str, ...]]


class MemoryUpstream:
    """An upstream with no socket: what a hub subscribes is recorded, what a test feeds is read.

    Built by a hub through its ``connection_factory`` (the signature is
    :class:`~alpaca_di.transport.connection.ConnectionFactory`'s, plus ``state``).

    Args:
        state: the state to start in. ``idle`` (the default) connects at once on
            :meth:`start` (``connecting``, ``authenticating``, ``connected``, each
            reported to the listener); ``connected`` starts up already.

    Every subscription delta is "sent" one loop tick after the hub asked for it
    (coalesced, like the WebSocket connection), recorded in :attr:`sent`, and
    acknowledged at once with the whole subscription state, as Alpaca does.
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
        state: ConnectionState | str = ConnectionState.IDLE,
    ) -> None:
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
        self.sent: list[WireFrame] = []
        """Every subscribe and unsubscribe "sent", oldest first."""
        self.fingerprint = credentials.fingerprint
        self._listener = listener
        self._loop = loop
        self._started = False
        self._flush_scheduled = False
        self._reconnecting = False
        self._refused: dict[tuple[str, str], ServerError] = {}
        initial = ConnectionState(state)
        if initial is not ConnectionState.IDLE:
            # The hub is still being built: its listener must not be called yet.
            self.history.record(initial)

    # -- the Upstream protocol ------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The current state."""
        return self.history.state

    @property
    def started(self) -> bool:
        """True once the hub called :meth:`start`."""
        return self._started

    def start(self) -> None:
        """Connect at once (idempotent): report the states a real connection goes through."""
        if self._started or self.state.is_final:
            return
        self._started = True
        if self.state is ConnectionState.IDLE:
            self.set_state(ConnectionState.CONNECTING)
            self.set_state(ConnectionState.AUTHENTICATING)
            self.set_state(ConnectionState.CONNECTED)

    async def close(self) -> None:
        """Stop for good: the state becomes ``closed`` (a failed upstream stays failed)."""
        if not self.state.is_final:
            self.set_state(ConnectionState.CLOSED)

    def request_flush(self) -> None:
        """Send the pending subscription delta at the end of this loop tick."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def count_malformed(self, reason: str) -> None:
        """Count a message that could not be decoded or parsed, and tell the listener."""
        self.malformed += 1
        _log.warning("memory.malformed", reason=reason, total=self.malformed)
        self._listener.on_malformed(reason)

    def health_fields(self) -> dict[str, Any]:
        """Nothing beyond the standard health fields."""
        return {}

    # -- what a test drives ----------------------------------------------------------------

    def wire(self) -> dict[str, frozenset[str]]:
        """What the server holds now: every symbol subscribed and not unsubscribed, per channel."""
        return self.subscriptions.wire()

    def feed(self, messages: Iterable[tuple[str, str, dict[str, Any]]]) -> None:
        """Hand one frame of decoded messages ``(channel, symbol, dict)`` to the hub.

        Exactly what the WebSocket reader does with a decoded frame: counted,
        timestamped, then ``listener.on_batch``. Raises
        :class:`~alpaca_di.errors.ConnectionClosedError` once closed or failed.
        """
        batch = list(messages)
        if self.state.is_final:
            raise ConnectionClosedError(f"cannot feed a {self.state.value} upstream")
        self.messages_received += len(batch)
        self.last_message_monotonic = self._loop.time()
        self._listener.on_batch(batch)

    def set_state(self, state: ConnectionState | str, error: BaseException | None = None) -> None:
        """Move to ``state`` and tell the listener, as the real connection does.

        ``reconnecting`` forgets the wire (the server session is gone); the
        ``connected`` that follows counts a reconnect and re-sends the whole set
        once. ``failed`` keeps ``error`` as :attr:`last_error`.
        """
        new = ConnectionState(state)
        previous = self.state
        if new is previous:
            return
        if error is not None:
            self.last_error = error
        if new is ConnectionState.RECONNECTING:
            self.subscriptions.reset_wire()
            self._reconnecting = True
        self.history.record(new, describe_error(error))
        self._listener.on_state(new, previous, error)
        if new is ConnectionState.CONNECTED:
            if self._reconnecting:
                self.reconnects += 1
                self._reconnecting = False
            self._send(self.subscriptions.restore(), {})

    def refuse(self, pairs: Iterable[tuple[str, str]], error: ServerError) -> None:
        """Answer later subscribes of ``(channel, symbol)`` pairs like a server's 405.

        The subscribe still goes out; the refused pairs are rolled back and the
        listener told (their subscriptions' ``wait_confirmed()`` raises ``error``).
        Safe from any thread, before the subscriptions it is meant for.
        """
        for pair in pairs:
            self._refused[pair] = error

    # -- internals -------------------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.state is not ConnectionState.CONNECTED:
            return  # the whole set goes out at the next connect
        self._send(*self.subscriptions.take_delta())

    def _send(
        self, subscribe: Mapping[str, list[str]], unsubscribe: Mapping[str, list[str]]
    ) -> None:
        if subscribe:
            self.sent.append(WireFrame("subscribe", _frozen(subscribe)))
            refused = [
                (channel, symbol)
                for channel, symbols in subscribe.items()
                for symbol in symbols
                if (channel, symbol) in self._refused
            ]
            if refused:
                self.subscriptions.reject(refused)
                self._listener.on_rejected(refused, self._refused[refused[0]])
        if unsubscribe:
            self.sent.append(WireFrame("unsubscribe", _frozen(unsubscribe)))
            self._listener.on_unsubscribing(unsubscribe)
        if subscribe or unsubscribe:
            self._listener.on_ack(_frozen(self.subscriptions.wire()))

    def __repr__(self) -> str:
        return f"<MemoryUpstream {self.kind.value} {self.url} {self.state.value}>"


def _frozen(channels: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    return {channel: tuple(sorted(symbols)) for channel, symbols in channels.items()}
