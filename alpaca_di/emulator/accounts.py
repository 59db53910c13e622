"""Accounts and counters of the emulator.

:class:`EmulatedAccount` is one registered key pair with its plan (feeds, symbol
limit). :class:`EndpointCounters` is the immutable snapshot a test reads for a
``(key_id, path)`` pair; :class:`CounterCell` is its mutable, lock-protected
twin that the emulator updates on its hot path. Every snapshot is a plain
dataclass: ``dataclasses.asdict()`` and ``copy.deepcopy()`` work on it, and its
``rejections`` mapping is a read-only ``dict``::

    cell = CounterCell("PKTEST", "/v2/iex")
    cell.frames_sent += 1
    cell.snapshot().frames_sent      # 1
    dataclasses.asdict(cell.snapshot())["rejections"]     # {}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

__all__ = [
    "ConnectionInfo",
    "CounterCell",
    "Counts",
    "EmulatedAccount",
    "EmulatorStats",
    "EndpointCounters",
]


class Counts(dict[int, int]):
    """A read-only ``dict`` of counts (error code -> times), as counter snapshots carry.

    A real ``dict`` (so ``dataclasses.asdict``, ``json.dumps`` and ``copy`` take it
    as one) that refuses every change with ``TypeError``.

    Example::

        counts = Counts({406: 2})
        counts[406]          # 2
        counts[402] = 1      # TypeError: counter snapshots are read-only
    """

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("counter snapshots are read-only")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[type[Counts], tuple[dict[int, int]]]:
        # copy and pickle rebuild it in one call rather than item by item
        return (Counts, (dict(self),))

    def __copy__(self) -> Counts:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Counts:
        return self


@dataclass(frozen=True)
class EmulatedAccount:
    """A key pair registered with :meth:`AlpacaEmulator.add_account`.

    Attributes:
        key_id: the API key id.
        secret: the secret key (never shown in ``repr``).
        feeds: feed names the plan includes (``{"iex"}``); ``None`` means every feed.
        symbol_limit: the most symbols across ``trades`` + ``quotes`` one data
            connection may hold (``None`` = unlimited); beyond it, ``405``.
    """

    key_id: str
    secret: str = field(repr=False)
    feeds: frozenset[str] | None = None
    symbol_limit: int | None = None


@dataclass(frozen=True)
class EndpointCounters:
    """What the emulator saw for one ``(key_id, path)``: a point-in-time, immutable snapshot.

    Sessions that have not authenticated yet are counted under ``key_id=""``.

    Attributes:
        connections_accepted: authenticated sessions accepted.
        open: authenticated sessions open now.
        max_concurrent: the most authenticated sessions open at once.
        auth_attempts: auth messages received naming this key.
        rejections: error code -> how many times it was sent (402, 405, 406, ...).
        subscribe_messages / unsubscribe_messages: messages received.
        subscribe_bytes: size of the subscribe and unsubscribe messages received.
        messages_sent: data points sent (controls excluded; one trade update = 1),
            counted as each frame is handed to the socket.
        frames_sent: every frame sent, control frames included.
        close_frames_received: sessions that ended with a close frame from the client.
        slots_held: connection-limit slots held now (open sessions plus slots kept
            after an unclean drop, see ``slot_hold_seconds``).
        keepalive_drops: sessions the server dropped because they did not answer
            its pings in time (see ``ping_interval``); their slots were freed at once.

    Example::

        c = emu.counters("PKTEST", "/v2/iex")
        assert c.rejections.get(406, 0) == 1 and c.open == 1
    """

    key_id: str
    path: str
    connections_accepted: int = 0
    open: int = 0
    max_concurrent: int = 0
    auth_attempts: int = 0
    rejections: Mapping[int, int] = field(default_factory=Counts)
    subscribe_messages: int = 0
    unsubscribe_messages: int = 0
    subscribe_bytes: int = 0
    messages_sent: int = 0
    frames_sent: int = 0
    close_frames_received: int = 0
    slots_held: int = 0
    keepalive_drops: int = 0


class CounterCell:
    """Mutable counters for one ``(key_id, path)``; guarded by the emulator's condition lock."""

    __slots__ = (
        "auth_attempts",
        "close_frames_received",
        "connections_accepted",
        "frames_sent",
        "keepalive_drops",
        "key_id",
        "max_concurrent",
        "messages_sent",
        "open",
        "path",
        "rejections",
        "slots_held",
        "subscribe_bytes",
        "subscribe_messages",
        "unsubscribe_messages",
    )

    def __init__(self, key_id: str, path: str) -> None:
        self.key_id = key_id
        self.path = path
        self.connections_accepted = 0
        self.open = 0
        self.max_concurrent = 0
        self.auth_attempts = 0
        self.rejections: dict[int, int] = {}
        self.subscribe_messages = 0
        self.unsubscribe_messages = 0
        self.subscribe_bytes = 0
        self.messages_sent = 0
        self.frames_sent = 0
        self.close_frames_received = 0
        self.slots_held = 0
        self.keepalive_drops = 0

    def snapshot(self) -> EndpointCounters:
        """An immutable copy of the current values."""
        return EndpointCounters(
            key_id=self.key_id,
            path=self.path,
            connections_accepted=self.connections_accepted,
            open=self.open,
            max_concurrent=self.max_concurrent,
            auth_attempts=self.auth_attempts,
            rejections=Counts(self.rejections),
            subscribe_messages=self.subscribe_messages,
            unsubscribe_messages=self.unsubscribe_messages,
            subscribe_bytes=self.subscribe_bytes,
            messages_sent=self.messages_sent,
            frames_sent=self.frames_sent,
            close_frames_received=self.close_frames_received,
            slots_held=self.slots_held,
            keepalive_drops=self.keepalive_drops,
        )


@dataclass(frozen=True)
class ConnectionInfo:
    """One open WebSocket connection as the emulator sees it.

    Attributes:
        id: the emulator's number for it (1, 2, 3 ... in order of arrival); give it
            to :meth:`AlpacaEmulator.drop_connection` to drop this one connection.
        path: the path it connected to (``/v2/iex``, ``/stream`` ...).
        key_id: the key it authenticated with (``None`` until then).
        authenticated: whether it has authenticated.
        peer: the client's ``(host, port)``.

    Example::

        (conn,) = emu.connections("/v2/iex", key_id="PKTEST")
        emu.drop_connection(conn.id, close_frame=False)
    """

    id: int
    path: str
    key_id: str | None
    authenticated: bool
    peer: tuple[str, int]


@dataclass(frozen=True)
class EmulatorStats:
    """Server-wide figures, not tied to a key.

    Attributes:
        handshakes: WebSocket upgrade requests received.
        refused_handshakes: upgrades rejected over HTTP (``refuse_handshake`` or unknown path).
        open_connections: WebSocket connections open now (authenticated or not).
        rest_requests: REST requests served (trading and market data).
        market_data_requests: of which market-data requests (bars, latest ...).
    """

    handshakes: int = 0
    refused_handshakes: int = 0
    open_connections: int = 0
    rest_requests: int = 0
    market_data_requests: int = 0
