"""One emulator connection (:class:`Session`) and the path facts every part of the emulator shares.

A :class:`Session` is one WebSocket connection, data or trading: its key once
authenticated, its subscriptions, its outbound queue (drained by one writer
task) and the fault flags that apply to it. :func:`resolve_path` turns a feed
alias into the path the emulator serves, or names the valid ones::

    from alpaca_di.emulator.session import resolve_path

    resolve_path("iex")          # '/v2/iex'
    resolve_path("trading")      # '/stream'
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from typing import Any

from websockets.asyncio.server import ServerConnection

from alpaca_di.emulator.accounts import CounterCell
from alpaca_di.emulator.wire import FEEDS, FeedSpec, encode_json, encode_msgpack

__all__ = [
    "DATA_PATHS",
    "ERROR_MESSAGES",
    "FEED_NAMES",
    "HIGH_WATER",
    "LOW_WATER",
    "TRADING_PATH",
    "Close",
    "Session",
    "resolve_path",
    "unauthorized",
]

TRADING_PATH = "/stream"
"""The trading stream's path."""
DATA_PATHS: tuple[str, ...] = tuple(FEEDS)
"""Every market-data path the emulator serves."""

_ALIASES: Mapping[str, str] = {
    "iex": "/v2/iex",
    "sip": "/v2/sip",
    "delayed_sip": "/v2/delayed_sip",
    "test": "/v2/test",
    "boats": "/v2/boats",
    "overnight": "/v2/overnight",
    "crypto": "/v1beta3/crypto/us",
    "us": "/v1beta3/crypto/us",
    "us-1": "/v1beta3/crypto/us-1",
    "eu-1": "/v1beta3/crypto/eu-1",
    "indicative": "/v1beta1/indicative",
    "opra": "/v1beta1/opra",
    "news": "/v1beta1/news",
    "trading": TRADING_PATH,
    "stream": TRADING_PATH,
}
FEED_NAMES = frozenset(spec.feed for spec in FEEDS.values())
ERROR_MESSAGES: Mapping[int, str] = {
    400: "invalid syntax",
    401: "not authenticated",
    402: "auth failed",
    403: "already authenticated",
    404: "auth timeout",
    405: "symbol limit exceeded",
    406: "connection limit exceeded",
    407: "slow client",
    408: "v2 not enabled",
    409: "insufficient subscription",
    410: "invalid subscribe action for this feed",
    500: "internal error",
}
HIGH_WATER = 16  # queued frames before a synthetic producer waits
LOW_WATER = 4


def resolve_path(path: str) -> str:
    """The served path of ``path`` or of a feed alias (``iex``, ``crypto``, ``trading``, ...).

    Raises:
        ValueError: naming the unknown path and every valid one.
    """
    path = _ALIASES.get(path, path)
    if path != TRADING_PATH and path not in FEEDS:
        valid = ", ".join((*FEEDS, TRADING_PATH))
        raise ValueError(f"unknown emulator path {path!r}; valid paths: {valid}")
    return path


class Close:
    """A queued request to close the session once the frames before it are sent."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class Session:
    """One WebSocket connection (data or trading) and its outbound queue."""

    __slots__ = (
        "authenticated",
        "cell",
        "closing",
        "drained",
        "id",
        "keepalive_wake",
        "key_id",
        "listening",
        "msgpack",
        "muted",
        "out",
        "path",
        "pongs_stopped",
        "reading",
        "reaped",
        "seq",
        "settled",
        "slot",
        "spec",
        "subs",
        "symbol_limit",
        "synth_pairs",
        "synth_wake",
        "tasks",
        "text_frames",
        "timer",
        "wake",
        "ws",
    )

    def __init__(
        self,
        ws: ServerConnection,
        path: str,
        spec: FeedSpec | None,
        cell: CounterCell,
        number: int = 0,
    ) -> None:
        self.id = number  # the emulator's connection number, 1, 2, 3 ...
        self.ws = ws
        self.path = path
        self.spec = spec
        self.cell = cell
        self.key_id: str | None = None
        self.authenticated = False
        self.closing = False
        self.reaped = False  # dropped by the server's keepalive: the slot is freed at once
        self.settled = False  # counted closed (at the close reply, or at cleanup)
        self.muted = False
        self.pongs_stopped = False
        self.slot = False
        self.msgpack = False
        self.text_frames = False
        self.symbol_limit: int | None = None
        self.subs: dict[str, dict[str, None]] = (
            {ch: {} for ch in spec.channels} if spec is not None else {}
        )
        self.listening: list[str] = []
        self.out: deque[Any] = deque()
        self.wake = asyncio.Event()
        self.reading = asyncio.Event()  # cleared by pause_reading()
        self.reading.set()
        self.drained = asyncio.Event()
        self.drained.set()
        self.synth_pairs: list[tuple[str, str]] = []
        self.seq: dict[tuple[str, str], int] = {}  # (type code, symbol) -> last sequence number
        self.synth_wake = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.keepalive_wake = asyncio.Event()  # set when the keepalive settings change

    def encode(self, obj: Any) -> bytes | str:
        if self.msgpack:
            return encode_msgpack(obj)
        text = encode_json(obj)
        if self.spec is None and not self.text_frames:
            return text.encode()
        return text

    def matches(self, path: str | None, key_id: str | None) -> bool:
        return (path is None or self.path == path) and (key_id is None or self.key_id == key_id)


def unauthorized(action: str, message: str | None = None) -> dict[str, Any]:
    """The trading stream's ``authorization``/``unauthorized`` reply to ``action``."""
    data: dict[str, Any] = {"action": action, "status": "unauthorized"}
    if message:
        data["message"] = message
    return {"stream": "authorization", "data": data}
