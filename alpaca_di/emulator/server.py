"""``AlpacaEmulator``: a loopback server that speaks Alpaca's streaming and trading protocols.

It serves, on ``127.0.0.1``:

* every market-data WebSocket path (``/v2/iex``, ``/v2/sip``, ``/v2/delayed_sip``,
  ``/v2/test``, ``/v1beta3/crypto/us``, ``/v1beta1/indicative``, ``/v1beta1/opra``,
  ``/v1beta1/news``) with Alpaca's exact message sequence, error codes,
  MessagePack or JSON encoding and subscription semantics;
* the trading stream ``/stream`` (JSON, binary frames by default);
* a small REST API (account, clock, assets, orders, positions) on a second
  port, enough for alpaca-py's ``TradingClient(url_override=emu.api_url)``.

alpaca-py's own clients work against it unchanged, which is how we know it is
faithful. Use it as a sync context manager (it runs its own loop in a daemon
thread) or as an async one (it runs on your loop)::

    from alpaca.data.live import StockDataStream
    from alpaca_di.emulator import AlpacaEmulator

    with AlpacaEmulator(rate=100, seed=1) as emu:
        stream = StockDataStream("key", "secret", url_override=emu.data_url("/v2/iex"))
        ...

    async with AlpacaEmulator() as emu:
        emu.publish("/v2/iex", [{"T": "q", "S": "AAPL", "bp": 1.0, "bs": 1, "ap": 1.1,
                                 "as": 2, "t": "2024-01-02T15:30:00Z"}])
        await emu.until(lambda: emu.counters("key", "/v2/iex").messages_sent >= 1)

Every knob (``reject_auth``, ``drop_connections``, ``mute``, ``stop_pongs``,
``slow_client``, ``refuse_handshake``, ``pause_reading``, ``send_raw``,
``push_trade_update``, ``fail_rest``, ``publish``, ``set_price``, ``restart``) is
thread-safe: call it from the test thread in sync mode or from the loop in async
mode. Counters are immutable snapshots; :meth:`AlpacaEmulator.wait_until` blocks
on a condition notified at every state change, so tests never sleep-poll. With
``sequence=True`` every synthetic data point carries a number counting per
(connection, type, symbol), and :meth:`AlpacaEmulator.sequences` tells how far
each count went, so a test can prove that a consumer missed nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import msgpack
import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response

from alpaca_di.emulator.accounts import (
    CounterCell,
    EmulatedAccount,
    EmulatorStats,
    EndpointCounters,
)
from alpaca_di.emulator.broker import Broker
from alpaca_di.emulator.market import SyntheticMarket
from alpaca_di.emulator.rest import RestApi, RestServer
from alpaca_di.emulator.wire import (
    FEEDS,
    TYPE_TO_CHANNEL,
    FeedSpec,
    encode_json,
    encode_json_batch,
    encode_msgpack,
    encode_msgpack_batch,
    normalize_message,
)

__all__ = [
    "DATA_PATHS",
    "TRADING_PATH",
    "AlpacaEmulator",
    "EmulatedAccount",
    "EmulatorStats",
    "EndpointCounters",
]

_log = structlog.get_logger(__name__)
_T = TypeVar("_T")

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
    "indicative": "/v1beta1/indicative",
    "opra": "/v1beta1/opra",
    "news": "/v1beta1/news",
    "trading": TRADING_PATH,
    "stream": TRADING_PATH,
}
_FEED_NAMES = frozenset(spec.feed for spec in FEEDS.values())
_MESSAGES: Mapping[int, str] = {
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
_SYNTH_TYPE: Mapping[str, str] = {
    "trades": "t",
    "quotes": "q",
    "bars": "b",
    "updatedBars": "u",
    "dailyBars": "d",
    "statuses": "s",
    "lulds": "l",
    "orderbooks": "o",
    "news": "n",
}
_HIGH_WATER = 16  # queued frames before a synthetic producer waits
_LOW_WATER = 4
_STOP_CLOSE_TIMEOUT = 0.25


def _resolve_path(path: str) -> str:
    path = _ALIASES.get(path, path)
    if path != TRADING_PATH and path not in FEEDS:
        valid = ", ".join((*FEEDS, TRADING_PATH))
        raise ValueError(f"unknown emulator path {path!r}; valid paths: {valid}")
    return path


class _Close:
    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class _Session:
    """One WebSocket connection (data or trading) and its outbound queue."""

    __slots__ = (
        "authenticated",
        "cell",
        "closing",
        "drained",
        "key_id",
        "listening",
        "msgpack",
        "muted",
        "out",
        "path",
        "pongs_stopped",
        "reading",
        "seq",
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
        self, ws: ServerConnection, path: str, spec: FeedSpec | None, cell: CounterCell
    ) -> None:
        self.ws = ws
        self.path = path
        self.spec = spec
        self.cell = cell
        self.key_id: str | None = None
        self.authenticated = False
        self.closing = False
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

    def encode(self, obj: Any) -> bytes | str:
        if self.msgpack:
            return encode_msgpack(obj)
        text = encode_json(obj)
        if self.spec is None and not self.text_frames:
            return text.encode()
        return text

    def matches(self, path: str | None, key_id: str | None) -> bool:
        return (path is None or self.path == path) and (key_id is None or self.key_id == key_id)


class AlpacaEmulator:
    """A loopback Alpaca: market-data and trading WebSockets plus a small REST API.

    Args:
        port: WebSocket port (0 = a free port).
        rest_port: REST port (0 = a free port).
        rate: synthetic data points per second per data connection (0 = none);
            sent only for subscribed (channel, symbol) pairs, batched in frames.
        seed: seed of the synthetic market's random walk.
        connection_limit: authenticated sessions allowed per (key, data path).
        trading_connection_limit: the same for ``/stream`` (default: ``connection_limit``).
        slot_hold_seconds: after an unclean drop (no close frame from the client)
            the connection slot stays taken this long, like Alpaca's ~90 s reaping.
        auth_timeout: seconds to authenticate before ``404 auth timeout`` and close.
        trading_text_frames: send trading-stream JSON in text frames
            (default: binary frames, as Alpaca's paper server does).
        compression: accept permessage-deflate (alpaca-py offers it).
        batch_size: the most data points per frame.
        starting_cash: cash of every emulated trading account.
        sequence: stamp every synthetic data point with ``"seq"``, a number counting
            1, 2, 3 ... per (connection, message type, symbol). Parsed models keep it
            too: trades carry it as their trade id ``"i"`` (``Trade.id``), quotes as
            their bid size ``"bs"`` (``Quote.bid_size``). Lets a test prove that a
            consumer saw every point, once and in order; read the emulator's side
            with :meth:`sequences`.

    Example::

        with AlpacaEmulator(connection_limit=1) as emu:
            emu.add_account("PKTEST", "secret", feeds={"iex"}, symbol_limit=30)
            url = emu.data_url("/v2/iex")          # ws://127.0.0.1:PORT/v2/iex
            ...
            emu.wait_until(lambda: emu.counters("PKTEST", "/v2/iex").open == 1, 5)
    """

    def __init__(
        self,
        *,
        port: int = 0,
        rest_port: int = 0,
        rate: float = 0.0,
        seed: int | None = None,
        connection_limit: int = 1,
        trading_connection_limit: int | None = None,
        slot_hold_seconds: float = 0.0,
        auth_timeout: float = 10.0,
        trading_text_frames: bool = False,
        compression: bool = True,
        batch_size: int = 100,
        starting_cash: float = 100_000.0,
        sequence: bool = False,
    ) -> None:
        if connection_limit < 1:
            raise ValueError(f"connection_limit must be >= 1, got {connection_limit}")
        if trading_connection_limit is not None and trading_connection_limit < 1:
            raise ValueError(
                f"trading_connection_limit must be >= 1, got {trading_connection_limit}"
            )
        if rate < 0:
            raise ValueError(f"rate must be >= 0, got {rate}")
        if not 1 <= batch_size <= 10_000:
            raise ValueError(f"batch_size must be within 1..10000, got {batch_size}")
        if auth_timeout <= 0:
            raise ValueError(f"auth_timeout must be > 0, got {auth_timeout}")
        self._host = "127.0.0.1"
        self._requested_port = port
        self._requested_rest_port = rest_port
        self._rate = float(rate)
        self._connection_limit = connection_limit
        self._trading_limit = trading_connection_limit or connection_limit
        self._slot_hold = float(slot_hold_seconds)
        self._auth_timeout = float(auth_timeout)
        self._trading_text = trading_text_frames
        self._compression = compression
        self._batch = batch_size
        self._sequence = sequence

        self._cond = threading.Condition()
        self._accounts: dict[str, EmulatedAccount] = {}
        self._cells: dict[tuple[str, str], CounterCell] = {}
        self._subs_snapshot: dict[tuple[str, str], dict[str, frozenset[str]]] = {}
        self._stats = {"handshakes": 0, "refused_handshakes": 0, "open": 0, "rest": 0}

        self._market = SyntheticMarket(seed)
        self._broker = Broker(self._market, self._emit_trade_update, starting_cash=starting_cash)
        self._market.on_price = self._broker.on_price
        self._rest_api = RestApi(self._broker, self._authorize_rest, self._count_rest)

        self._sessions: dict[str, set[_Session]] = {p: set() for p in (*FEEDS, TRADING_PATH)}
        self._reject_rules: list[list[Any]] = []  # [code, remaining|None, key_id, path]
        self._refuse_rules: list[list[Any]] = []  # [status, remaining, path]
        self._mute_rules: set[tuple[str | None, str | None]] = set()
        self._pong_rules: set[tuple[str | None, str | None]] = set()
        self._read_rules: set[tuple[str | None, str | None]] = set()
        self._hold_timers: dict[asyncio.TimerHandle, CounterCell] = {}
        self._async_waiters: list[asyncio.Future[None]] = []

        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id: int | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None
        self._rest: RestServer | None = None
        self._port: int | None = None
        self._rest_port: int | None = None
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> AlpacaEmulator:
        """Start serving on a private event loop in a daemon thread; returns ``self``.

        Example::

            emu = AlpacaEmulator().start()
            try:
                print(emu.ws_url)
            finally:
                emu.stop()
        """
        if self._loop is not None:
            raise RuntimeError("AlpacaEmulator is already running")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=self._thread_main, args=(loop,), name="alpaca-di-emulator", daemon=True
        )
        thread.start()
        self._thread = thread
        future = asyncio.run_coroutine_threadsafe(self._astart(loop), loop)
        try:
            future.result(timeout=10)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            self._thread = None
            self._loop = None
            raise
        return self

    def stop(self) -> None:
        """Close every connection and both servers, stop the loop thread. Idempotent.

        Connections get a close frame (1001) when they answer within 250 ms and are
        aborted otherwise, so ``stop()`` returns well under a second.
        """
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if threading.get_ident() == self._loop_thread_id:
            raise RuntimeError("stop() called on the emulator loop; call it from another thread")
        try:
            asyncio.run_coroutine_threadsafe(self._astop(), loop).result(timeout=5)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            self._thread = None

    def restart(self, *, downtime: Callable[[], object] | None = None) -> AlpacaEmulator:
        """Stop, then serve again on the same ports: a server restart (sync mode).

        Every connection is closed (1001 when the client answers in time, else
        aborted); sessions, their subscriptions and held connection slots are
        forgotten, like a real server restart. Accounts, orders, counters and fault
        rules are kept. ``downtime``, if given, runs while nothing listens (clients
        get "connection refused"), for example to wait until a client noticed.

        Example::

            emu.restart()
            emu.restart(downtime=lambda: emu_client_saw_refusal.wait(5))
        """
        if self._loop is None or self._thread is None:
            raise RuntimeError("restart() needs an emulator started with start() or 'with'")
        ports = (self._port, self._rest_port)
        self.stop()
        requested = (self._requested_port, self._requested_rest_port)
        try:
            if downtime is not None:
                downtime()
        finally:
            self._requested_port, self._requested_rest_port = (ports[0] or 0, ports[1] or 0)
            try:
                self.start()
            finally:
                self._requested_port, self._requested_rest_port = requested
        return self

    @staticmethod
    def _thread_main(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def __enter__(self) -> AlpacaEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def astart(self) -> AlpacaEmulator:
        """Start serving on the running event loop; returns ``self``.

        Example::

            emu = await AlpacaEmulator().astart()
            try:
                ...
            finally:
                await emu.astop()
        """
        if self._loop is not None:
            raise RuntimeError("AlpacaEmulator is already running")
        await self._astart(asyncio.get_running_loop())
        return self

    async def astop(self) -> None:
        """Stop serving (async mode). Idempotent."""
        if self._loop is None:
            return
        if self._thread is not None:
            await asyncio.to_thread(self.stop)
            return
        await self._astop()

    async def __aenter__(self) -> AlpacaEmulator:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    async def _astart(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread_id = threading.get_ident()
        self._stopping = False
        try:
            self._server = await serve(
                self._handle_connection,
                self._host,
                self._requested_port,
                process_request=self._process_request,
                compression="deflate" if self._compression else None,
                ping_interval=None,
                close_timeout=2.0,
                max_size=2**24,
                max_queue=64,
                write_limit=2**18,
            )
            self._port = int(self._server.sockets[0].getsockname()[1])
            self._rest = RestServer(self._rest_api.handle)
            self._rest_port = await self._rest.start(self._host, self._requested_rest_port)
        except BaseException:
            await self._astop()
            raise
        _log.debug("emulator started", port=self._port, rest_port=self._rest_port)

    async def _astop(self) -> None:
        if self._loop is None:
            return
        self._stopping = True
        held, self._hold_timers = self._hold_timers, {}
        for timer, cell in held.items():
            # A stopped (or restarted) server forgets the slots it was holding.
            timer.cancel()
            self._release_slot(cell)
        sessions = [s for group in self._sessions.values() for s in group]
        for sess in sessions:
            sess.closing = True
        if sessions:
            closers = [asyncio.ensure_future(s.ws.close(1001, "server stopping")) for s in sessions]
            await asyncio.wait(closers, timeout=_STOP_CLOSE_TIMEOUT)
            for closer in closers:
                closer.cancel()
            for sess in sessions:
                sess.ws.transport.abort()
        if self._server is not None:
            self._server.close(close_connections=False)
            try:
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            except asyncio.TimeoutError:  # pragma: no cover - defensive
                _log.warning("emulator websocket server did not close in time")
            self._server = None
        if self._rest is not None:
            await self._rest.close()
            self._rest = None
        for waiter in self._async_waiters:
            waiter.cancel()
        self._async_waiters.clear()
        _log.debug("emulator stopped", port=self._port)
        self._loop = None
        self._loop_thread_id = None
        self._port = self._rest_port = None
        with self._cond:
            self._cond.notify_all()

    # ------------------------------------------------------------------ addresses

    def _require_port(self) -> int:
        if self._port is None:
            raise RuntimeError(
                "AlpacaEmulator is not running: call start() or use it as a context manager"
            )
        return self._port

    @property
    def host(self) -> str:
        """Always ``127.0.0.1``."""
        return self._host

    @property
    def port(self) -> int:
        """The WebSocket port (data and trading streams)."""
        return self._require_port()

    @property
    def rest_port(self) -> int:
        """The REST port."""
        self._require_port()
        assert self._rest_port is not None
        return self._rest_port

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:PORT``: the base of every data stream URL (append the path)."""
        return f"ws://{self._host}:{self._require_port()}"

    @property
    def trading_stream_url(self) -> str:
        """``ws://127.0.0.1:PORT/stream``: pass as ``TradingStream(url_override=...)``."""
        return self.ws_url + TRADING_PATH

    @property
    def api_url(self) -> str:
        """``http://127.0.0.1:RESTPORT``: pass as ``TradingClient(url_override=...)``."""
        return f"http://{self._host}:{self.rest_port}"

    def data_url(self, path: str) -> str:
        """The full WebSocket URL of a path or feed alias.

        Example::

            emu.data_url("/v2/sip")      # 'ws://127.0.0.1:PORT/v2/sip'
            emu.data_url("crypto")       # 'ws://127.0.0.1:PORT/v1beta3/crypto/us'
        """
        return self.ws_url + _resolve_path(path)

    # ------------------------------------------------------------------ thread plumbing

    def _on_loop(self) -> bool:
        return self._loop is None or threading.get_ident() == self._loop_thread_id

    def _call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the emulator's loop (directly when already there) and return its result."""
        loop = self._loop
        if loop is None or self._on_loop():
            return fn()
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def runner() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:
                    future.set_exception(exc)

        loop.call_soon_threadsafe(runner)
        return future.result(timeout=10)

    def _changed(self) -> None:
        with self._cond:
            self._cond.notify_all()
        self._wake_async()

    def _wake_async(self) -> None:
        if self._async_waiters:
            waiters, self._async_waiters = self._async_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _cell(self, key_id: str, path: str) -> CounterCell:
        cell = self._cells.get((key_id, path))
        if cell is None:
            with self._cond:
                cell = self._cells.setdefault((key_id, path), CounterCell(key_id, path))
        return cell

    # ------------------------------------------------------------------ accounts

    def add_account(
        self,
        key_id: str,
        secret: str,
        *,
        feeds: Iterable[str] | None = None,
        symbol_limit: int | None = None,
    ) -> EmulatedAccount:
        """Register a key pair; once any is registered, unknown keys or wrong secrets get 402.

        Args:
            feeds: feed names the plan includes (``iex``, ``sip``, ``delayed_sip``,
                ``test``, ``us`` (crypto), ``indicative``, ``opra``, ``news``, ...);
                ``None`` = all. Others get ``409 insufficient subscription`` at auth.
            symbol_limit: the most symbols across ``trades`` + ``quotes`` per data
                connection; a subscribe beyond it gets ``405`` and changes nothing.

        Example::

            emu.add_account("PKFREE", "s3cret", feeds={"iex"}, symbol_limit=30)
        """
        if not key_id or not secret:
            raise ValueError("add_account: key_id and secret must be non-empty strings")
        feed_set = None if feeds is None else frozenset(feeds)
        if feed_set is not None and not feed_set <= _FEED_NAMES:
            bad = ", ".join(sorted(feed_set - _FEED_NAMES))
            valid = ", ".join(sorted(_FEED_NAMES))
            raise ValueError(f"unknown feed(s) {bad}; valid feeds: {valid}")
        if symbol_limit is not None and symbol_limit < 0:
            raise ValueError(f"symbol_limit must be >= 0, got {symbol_limit}")
        account = EmulatedAccount(key_id, secret, feed_set, symbol_limit)
        with self._cond:
            self._accounts[key_id] = account
        return account

    def _check_credentials(self, key_id: str, secret: str) -> EmulatedAccount | bool | None:
        """``False`` when rejected; the account (or ``None`` in open mode) when accepted."""
        with self._cond:
            if not self._accounts:
                return None
            account = self._accounts.get(key_id)
        if account is None or account.secret != secret:
            return False
        return account

    def _authorize_rest(self, key_id: str, secret: str) -> bool:
        return self._check_credentials(key_id, secret) is not False

    def _count_rest(self) -> None:
        with self._cond:
            self._stats["rest"] += 1

    # ------------------------------------------------------------------ WebSocket server

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        with self._cond:
            self._stats["handshakes"] += 1
        if path != TRADING_PATH and path not in FEEDS:
            with self._cond:
                self._stats["refused_handshakes"] += 1
            return connection.respond(404, f"unknown path {path}\n")
        for rule in self._refuse_rules:
            if rule[2] is None or rule[2] == path:
                rule[1] -= 1
                if rule[1] <= 0:
                    self._refuse_rules.remove(rule)
                with self._cond:
                    self._stats["refused_handshakes"] += 1
                self._changed()
                status = int(rule[0])
                text = "Too Many Requests\n" if status == 429 else "refused\n"
                return connection.respond(status, text)
        return None

    async def _handle_connection(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        path = ws.request.path.split("?", 1)[0]
        spec = FEEDS.get(path)
        sess = _Session(ws, path, spec, self._cell("", path))
        if spec is not None:
            content_type = ws.request.headers.get("Content-Type", "") or ""
            sess.msgpack = spec.msgpack_only or "application/msgpack" in content_type.lower()
        else:
            sess.text_frames = self._trading_text
        self._install_pong_filter(sess)
        if any(sess.matches(p, k) for p, k in self._read_rules):
            sess.reading.clear()
        self._sessions[path].add(sess)
        with self._cond:
            self._stats["open"] += 1
        loop = asyncio.get_running_loop()
        sess.tasks.append(loop.create_task(self._writer(sess)))
        sess.timer = loop.call_later(self._auth_timeout, self._auth_timed_out, sess)
        _log.debug("emulator connection opened", path=path, msgpack=sess.msgpack)
        try:
            if spec is not None:
                self._send(sess, [{"T": "success", "msg": "connected"}])
                key = ws.request.headers.get("APCA-API-KEY-ID")
                secret = ws.request.headers.get("APCA-API-SECRET-KEY")
                if key and secret:
                    self._data_auth(sess, key, secret)
            self._changed()
            async for message in ws:
                if not sess.reading.is_set():
                    await sess.reading.wait()
                if sess.closing:
                    continue
                try:
                    if spec is not None:
                        self._on_data_message(sess, spec, message)
                    else:
                        self._on_trading_message(sess, message)
                except Exception:  # a bug must not kill the server; tell the client
                    _log.exception("emulator failed to handle a message", path=path)
                    self._error(sess, 500)
        except ConnectionClosed:
            pass
        except Exception:  # pragma: no cover - defensive
            _log.exception("emulator connection failed", path=path)
        finally:
            await self._cleanup(sess)

    def _install_pong_filter(self, sess: _Session) -> None:
        protocol = sess.ws.protocol
        original = protocol.send_frame

        def send_frame(frame: Frame) -> None:
            if frame.opcode is Opcode.PONG and sess.pongs_stopped:
                return
            original(frame)

        protocol.send_frame = send_frame  # type: ignore[method-assign]

    async def _writer(self, sess: _Session) -> None:
        ws, out, cond = sess.ws, sess.out, self._cond
        try:
            while True:
                if not out:
                    sess.drained.set()
                    sess.wake.clear()
                    await sess.wake.wait()
                    continue
                item = out.popleft()
                if type(item) is _Close:
                    await ws.close(item.code, item.reason)
                    return
                payload, count = item
                cell = sess.cell
                # counted before the write so a client never sees data the counters lack
                with cond:
                    cell.frames_sent += 1
                    cell.messages_sent += count
                    cond.notify_all()
                if self._async_waiters:
                    self._wake_async()
                await ws.send(payload)
                if len(out) <= _LOW_WATER:
                    sess.drained.set()
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:  # pragma: no cover - defensive
            _log.exception("emulator writer failed", path=sess.path)
            sess.ws.transport.abort()

    def _enqueue(self, sess: _Session, payload: bytes | str, count: int) -> None:
        if sess.closing:
            return
        sess.out.append((payload, count))
        sess.wake.set()

    def _send(self, sess: _Session, obj: Any) -> None:
        self._enqueue(sess, sess.encode(obj), 0)

    def _close(self, sess: _Session, code: int = 1000, reason: str = "") -> None:
        if sess.closing:
            return
        sess.out.append(_Close(code, reason))
        sess.closing = True
        sess.wake.set()

    def _count_rejection(self, sess: _Session, code: int) -> None:
        cell = sess.cell
        with self._cond:
            cell.rejections[code] = cell.rejections.get(code, 0) + 1

    def _error(
        self, sess: _Session, code: int, *, close: bool = False, msg: str | None = None
    ) -> None:
        text = msg or _MESSAGES.get(code, "error")
        self._count_rejection(sess, code)
        if sess.spec is not None:
            self._send(sess, [{"T": "error", "code": code, "msg": text}])
        else:
            self._send(sess, {"stream": "error", "data": {"code": code, "message": text}})
        if close:
            self._close(sess)
        self._changed()

    def _auth_timed_out(self, sess: _Session) -> None:
        sess.timer = None
        if sess.authenticated or sess.closing:
            return
        if sess.spec is not None:
            self._error(sess, 404, close=True)
        else:
            self._count_rejection(sess, 404)
            self._send(sess, self._unauthorized("authenticate", "auth timeout"))
            self._close(sess)
            self._changed()

    async def _cleanup(self, sess: _Session) -> None:
        sess.closing = True
        if sess.timer is not None:
            sess.timer.cancel()
            sess.timer = None
        for task in sess.tasks:
            task.cancel()
        await asyncio.gather(*sess.tasks, return_exceptions=True)
        self._sessions[sess.path].discard(sess)
        clean = sess.ws.protocol.close_rcvd is not None
        cell = sess.cell
        with self._cond:
            self._stats["open"] -= 1
            if clean:
                cell.close_frames_received += 1
            if sess.authenticated:
                cell.open -= 1
        if sess.authenticated and sess.key_id is not None:
            self._publish_subs(sess.key_id, sess.path)
        if sess.slot:
            sess.slot = False
            if clean or self._slot_hold <= 0 or self._stopping:
                self._release_slot(cell)
            else:
                loop = asyncio.get_running_loop()
                handle: asyncio.TimerHandle | None = None

                def release() -> None:
                    if handle is not None:
                        self._hold_timers.pop(handle, None)
                    self._release_slot(cell)

                handle = loop.call_later(self._slot_hold, release)
                self._hold_timers[handle] = cell
        _log.debug("emulator connection closed", path=sess.path, clean=clean)
        self._changed()

    def _release_slot(self, cell: CounterCell) -> None:
        with self._cond:
            cell.slots_held -= 1
        self._changed()

    # ------------------------------------------------------------------ auth

    def _auth_verdict(
        self, key_id: str, secret: str, path: str, feed: str | None
    ) -> tuple[int, EmulatedAccount | None]:
        for rule in self._reject_rules:
            code, remaining, rule_key, rule_path = rule
            if rule_key in (None, key_id) and rule_path in (None, path):
                if remaining is not None:
                    rule[1] -= 1
                    if rule[1] <= 0:
                        self._reject_rules.remove(rule)
                return int(code), None
        account = self._check_credentials(key_id, secret)
        if account is False:
            return 402, None
        assert account is not True
        feeds = account.feeds if account is not None else None
        if feed is not None and feeds is not None and feed not in feeds:
            return 409, account
        limit = self._trading_limit if path == TRADING_PATH else self._connection_limit
        if self._cell(key_id, path).slots_held >= limit:
            return 406, account
        return 0, account

    def _accept(self, sess: _Session, key_id: str, account: EmulatedAccount | None) -> None:
        cell = self._cell(key_id, sess.path)
        sess.key_id = key_id
        sess.cell = cell
        sess.authenticated = True
        sess.slot = True
        sess.symbol_limit = account.symbol_limit if account is not None else None
        if sess.timer is not None:
            sess.timer.cancel()
            sess.timer = None
        with self._cond:
            cell.slots_held += 1
            cell.connections_accepted += 1
            cell.open += 1
            cell.max_concurrent = max(cell.max_concurrent, cell.open)
        sess.muted = any(sess.matches(p, k) for p, k in self._mute_rules)
        sess.pongs_stopped = any(sess.matches(p, k) for p, k in self._pong_rules)
        _log.debug("emulator session authenticated", path=sess.path, key_id=key_id)

    def _data_auth(self, sess: _Session, key: Any, secret: Any) -> None:
        if sess.authenticated:
            self._error(sess, 403)
            return
        if not isinstance(key, str) or not isinstance(secret, str):
            self._error(sess, 400)
            return
        assert sess.spec is not None
        cell = self._cell(key, sess.path)
        with self._cond:
            cell.auth_attempts += 1
        code, account = self._auth_verdict(key, secret, sess.path, sess.spec.feed)
        if code:
            sess.cell = cell
            _log.info("emulator rejected auth", path=sess.path, key_id=key, code=code)
            self._error(sess, code, close=True)
            return
        self._accept(sess, key, account)
        self._send(sess, [{"T": "success", "msg": "authenticated"}])
        sess.tasks.append(asyncio.get_running_loop().create_task(self._synthetic(sess)))
        self._publish_subs(key, sess.path)
        self._changed()

    # ------------------------------------------------------------------ data streams

    @staticmethod
    def _decode(message: bytes | str) -> Any:
        if isinstance(message, bytes):
            try:
                return msgpack.unpackb(message, raw=False, strict_map_key=False)
            except Exception:
                try:
                    return json.loads(message)
                except ValueError:
                    return None
        try:
            return json.loads(message)
        except ValueError:
            return None

    def _on_data_message(self, sess: _Session, spec: FeedSpec, message: bytes | str) -> None:
        msg = self._decode(message)
        if not isinstance(msg, dict):
            self._error(sess, 400)
            return
        action = msg.get("action")
        if action == "auth":
            self._data_auth(sess, msg.get("key"), msg.get("secret"))
            return
        if action in ("subscribe", "unsubscribe"):
            cell = sess.cell
            with self._cond:
                if action == "subscribe":
                    cell.subscribe_messages += 1
                else:
                    cell.unsubscribe_messages += 1
                cell.subscribe_bytes += len(message)
            if not sess.authenticated:
                self._error(sess, 401)
                return
            self._change_subscription(sess, spec, msg, action == "subscribe")
            return
        self._error(sess, 400)

    def _change_subscription(
        self, sess: _Session, spec: FeedSpec, msg: dict[Any, Any], subscribe: bool
    ) -> None:
        changes: list[tuple[str, list[str]]] = []
        for key, value in msg.items():
            if key == "action":
                continue
            if key not in spec.channels:
                if key in spec.implicit:
                    continue
                self._error(sess, 410)
                return
            if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
                self._error(sess, 400)
                return
            changes.append((key, value))
        subs = {channel: dict(symbols) for channel, symbols in sess.subs.items()}
        for channel, symbols in changes:
            target = subs[channel]
            if subscribe:
                for symbol in symbols:
                    target[symbol] = None
            else:
                for symbol in symbols:
                    target.pop(symbol, None)
        limit = sess.symbol_limit
        if (
            subscribe
            and limit is not None
            and len(subs.get("trades", ())) + len(subs.get("quotes", ())) > limit
        ):
            self._error(sess, 405)
            return
        sess.subs = subs
        self._update_synth_pairs(sess, spec)
        ack: dict[str, Any] = {"T": "subscription"}
        for channel in spec.ack_channels:
            ack[channel] = list(subs["trades" if channel in spec.implicit else channel])
        self._send(sess, [ack])
        assert sess.key_id is not None
        self._publish_subs(sess.key_id, sess.path)
        self._changed()

    def _update_synth_pairs(self, sess: _Session, spec: FeedSpec) -> None:
        per_channel: list[list[tuple[str, str]]] = []
        universe = SyntheticMarket.universe(spec.kind, spec.feed)
        for channel, symbols in sess.subs.items():
            type_code = _SYNTH_TYPE.get(channel)
            if type_code is None or not symbols:
                continue
            names: dict[str, None] = {}
            for symbol in symbols:
                if symbol == "*" and type_code != "n":
                    names.update(dict.fromkeys(universe))
                else:
                    names[symbol] = None
            per_channel.append([(type_code, symbol) for symbol in names])
        # interleave channels so every subscribed channel gets data early
        pairs: list[tuple[str, str]] = []
        for i in range(max((len(group) for group in per_channel), default=0)):
            pairs.extend(group[i] for group in per_channel if i < len(group))
        sess.synth_pairs = pairs
        sess.synth_wake.set()

    def _publish_subs(self, key_id: str, path: str) -> None:
        spec = FEEDS.get(path)
        if spec is None:
            return
        merged: dict[str, set[str]] = {channel: set() for channel in spec.ack_channels}
        for sess in self._sessions[path]:
            if sess.key_id == key_id and sess.authenticated and not sess.closing:
                for channel, symbols in sess.subs.items():
                    merged[channel].update(symbols)
        for channel in spec.implicit:
            merged[channel] = set(merged["trades"])
        with self._cond:
            self._subs_snapshot[(key_id, path)] = {c: frozenset(s) for c, s in merged.items()}

    async def _synthetic(self, sess: _Session) -> None:
        spec = sess.spec
        assert spec is not None
        loop = asyncio.get_running_loop()
        market, kind, batch = self._market, spec.kind, self._batch
        seq = sess.seq if self._sequence else None
        credit, last, index = 0.0, loop.time(), 0
        while not sess.closing:
            rate, pairs = self._rate, sess.synth_pairs
            if rate <= 0 or not pairs or sess.muted:
                sess.synth_wake.clear()
                await sess.synth_wake.wait()
                credit, last = 0.0, loop.time()
                continue
            now = loop.time()
            credit = min(credit + (now - last) * rate, rate * 0.05 + batch)
            last = now
            count = int(credit)
            credit -= count
            while count > 0 and not sess.closing:
                size = min(count, batch)
                count -= size
                ts = market.now()
                npairs = len(pairs)
                points = []
                for _ in range(size):
                    type_code, symbol = pairs[index % npairs]
                    index += 1
                    point = market.message(type_code, symbol, kind, ts)
                    if seq is not None:
                        number = seq[(type_code, symbol)] = seq.get((type_code, symbol), 0) + 1
                        point["seq"] = number
                        if type_code == "t":
                            point["i"] = number
                        elif type_code == "q":
                            point["bs"] = number
                    points.append(point)
                payload = encode_msgpack(points) if sess.msgpack else encode_json(points)
                self._enqueue(sess, payload, size)
                if len(sess.out) >= _HIGH_WATER:
                    sess.drained.clear()
                    await sess.drained.wait()
                    last = loop.time()
            delay = (1.0 - credit) / rate
            await asyncio.sleep(min(0.05, max(0.002, delay)))

    # ------------------------------------------------------------------ trading stream

    @staticmethod
    def _unauthorized(action: str, message: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"action": action, "status": "unauthorized"}
        if message:
            data["message"] = message
        return {"stream": "authorization", "data": data}

    def _on_trading_message(self, sess: _Session, message: bytes | str) -> None:
        try:
            decoded: Any = json.loads(message)
        except ValueError:
            decoded = None
        if not isinstance(decoded, dict):
            self._error(sess, 400)
            return
        msg: dict[str, Any] = decoded
        action = msg.get("action")
        raw_data = msg.get("data")
        data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
        if action in ("authenticate", "auth"):
            key = data.get("key_id", msg.get("key"))
            secret = data.get("secret_key", msg.get("secret"))
            self._trading_auth(sess, key, secret)
        elif action == "listen":
            cell = sess.cell
            with self._cond:
                cell.subscribe_messages += 1
                cell.subscribe_bytes += len(message)
            if not sess.authenticated:
                self._count_rejection(sess, 401)
                self._send(sess, {"stream": "authorization",
                                  "data": {"status": "unauthorized", "action": "listen"}})
                self._changed()
                return
            streams = data.get("streams")
            if not isinstance(streams, list) or not all(isinstance(s, str) for s in streams):
                self._error(sess, 400)
                return
            sess.listening = [s for s in dict.fromkeys(streams) if s == "trade_updates"]
            self._send(sess, {"stream": "listening", "data": {"streams": list(sess.listening)}})
            self._changed()
        else:
            self._error(sess, 400)

    def _trading_auth(self, sess: _Session, key: Any, secret: Any) -> None:
        if not isinstance(key, str) or not isinstance(secret, str) or not key:
            self._count_rejection(sess, 402)
            self._send(sess, self._unauthorized("authenticate", "access key verification failed"))
            self._close(sess)
            self._changed()
            return
        if sess.authenticated:
            ok = sess.key_id == key
            self._send(sess, {"stream": "authorization",
                              "data": {"action": "authenticate",
                                       "status": "authorized" if ok else "unauthorized"}})
            return
        cell = self._cell(key, sess.path)
        with self._cond:
            cell.auth_attempts += 1
        code, account = self._auth_verdict(key, secret, sess.path, None)
        if code:
            sess.cell = cell
            self._count_rejection(sess, code)
            reason = {
                402: "access key verification failed",
                406: "connection limit exceeded",
            }.get(code, _MESSAGES.get(code, "unauthorized"))
            _log.info("emulator rejected trading auth", key_id=key, code=code)
            self._send(sess, self._unauthorized("authenticate", reason))
            self._close(sess)
            self._changed()
            return
        self._accept(sess, key, account)
        self._send(sess, {"stream": "authorization",
                          "data": {"action": "authenticate", "status": "authorized"}})
        self._changed()

    def _emit_trade_update(self, key_id: str | None, data: Mapping[str, Any]) -> int:
        text = encode_json({"stream": "trade_updates", "data": data})
        binary = text.encode()
        sent = 0
        for sess in self._sessions[TRADING_PATH]:
            if (
                sess.authenticated
                and not sess.muted
                and (key_id is None or sess.key_id == key_id)
                and "trade_updates" in sess.listening
            ):
                self._enqueue(sess, text if sess.text_frames else binary, 1)
                sent += 1
        return sent

    # ------------------------------------------------------------------ publishing

    def publish(
        self, path: str, messages: Iterable[Mapping[str, Any]], *, key_id: str | None = None
    ) -> int:
        """Send exact wire messages to the data connections of ``path`` that subscribed to them.

        Messages are dicts in wire form (``{"T": "q", "S": "AAPL", ...}``); ``"T"``
        is moved first and ``t``/``created_at``/``updated_at`` given as datetime,
        RFC 3339 text or integer nanoseconds become msgpack Timestamps (RFC 3339 in
        JSON sessions). Routing follows Alpaca: a specific symbol or ``"*"``
        subscription on the message's channel (``c``/``x`` follow ``trades``; news
        goes out if any of its ``symbols`` or ``"*"`` is subscribed); a message with
        an unknown ``T`` goes to every authenticated session. Up to ``batch_size``
        points share a frame. Returns the number of (connection, message) deliveries.

        Example::

            emu.publish("/v2/iex", [
                {"T": "t", "S": "AAPL", "i": 1, "x": "V", "p": 190.5, "s": 100,
                 "c": ["@"], "z": "C", "t": datetime.now(timezone.utc)},
            ])
        """
        resolved = _resolve_path(path)
        spec = FEEDS.get(resolved)
        if spec is None:
            raise ValueError("publish() serves data paths; use push_trade_update() for /stream")
        normalized = [normalize_message(m) for m in messages]
        return self._call(lambda: self._publish(spec, normalized, key_id))

    def _publish(self, spec: FeedSpec, messages: list[dict[str, Any]], key_id: str | None) -> int:
        sessions = [
            s for s in self._sessions[spec.path]
            if s.authenticated and not s.closing and not s.muted
            and (key_id is None or s.key_id == key_id)
        ]
        if not sessions or not messages:
            return 0
        routes: list[tuple[str | None, Any, list[Any] | None]] = []
        for msg in messages:
            channel = TYPE_TO_CHANNEL.get(msg.get("T", ""))
            if channel == "news":
                routes.append((channel, None, list(msg.get("symbols") or ())))
            else:
                routes.append((channel, msg.get("S"), None))
        packed: list[bytes | None] = [None] * len(messages)
        texts: list[str | None] = [None] * len(messages)
        delivered = 0
        batch = self._batch
        for sess in sessions:
            subs = sess.subs
            picked = []
            for i, (channel, symbol, symbols) in enumerate(routes):
                if channel is None:
                    picked.append(i)
                    continue
                wanted = subs.get(channel)
                if not wanted:
                    continue
                if symbols is not None:
                    if "*" in wanted or any(s in wanted for s in symbols):
                        picked.append(i)
                elif symbol in wanted or "*" in wanted:
                    picked.append(i)
            delivered += len(picked)
            for start in range(0, len(picked), batch):
                chunk = picked[start:start + batch]
                if sess.msgpack:
                    parts_b: list[bytes] = []
                    for i in chunk:
                        part = packed[i]
                        if part is None:
                            part = packed[i] = encode_msgpack(messages[i])
                        parts_b.append(part)
                    self._enqueue(sess, encode_msgpack_batch(parts_b), len(chunk))
                else:
                    parts_s: list[str] = []
                    for i in chunk:
                        text = texts[i]
                        if text is None:
                            text = texts[i] = encode_json(messages[i])
                        parts_s.append(text)
                    self._enqueue(sess, encode_json_batch(parts_s), len(chunk))
        return delivered

    def push_trade_update(self, key_id: str | None, data: Mapping[str, Any]) -> int:
        """Send ``{"stream": "trade_updates", "data": data}`` verbatim to a key's trading sessions.

        ``key_id=None`` sends to every listening trading session. Returns how many
        sessions it went to.

        Example::

            emu.push_trade_update("PKTEST", {"event": "fill", "order": order_dict,
                                             "timestamp": "2024-01-02T15:30:00Z"})
        """
        payload = dict(data)
        return self._call(lambda: self._emit_trade_update(key_id, payload))

    def send_raw(self, path: str, frame: bytes | str, *, key_id: str | None = None) -> int:
        """Inject one frame verbatim (bytes -> binary frame, str -> text frame) into open sessions.

        Reaches every open session on ``path`` (filtered by ``key_id`` once
        authenticated). Returns the number of sessions.

        Example::

            emu.send_raw("/v2/iex", b"\\xc1 not msgpack")
        """
        resolved = _resolve_path(path)

        def run() -> int:
            count = 0
            for sess in self._sessions[resolved]:
                if not sess.closing and (key_id is None or sess.key_id == key_id):
                    self._enqueue(sess, frame, 0)
                    count += 1
            return count

        return self._call(run)

    # ------------------------------------------------------------------ market

    @property
    def rate(self) -> float:
        """Synthetic data points per second per data connection; settable while running."""
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"rate must be >= 0, got {value}")

        def run() -> None:
            self._rate = float(value)
            for group in self._sessions.values():
                for sess in group:
                    sess.synth_wake.set()

        self._call(run)

    def set_price(self, symbol: str, price: float) -> None:
        """Set a symbol's current price (fills resting orders it crosses; makes it tradable).

        Example::

            emu.set_price("AAPL", 150.0)     # a resting buy limit at 151 fills now
        """
        self._call(lambda: self._market.set_price(symbol, price))

    def price(self, symbol: str) -> float:
        """The emulator's current price for a symbol (fills use it)."""
        return self._market.price(symbol)

    def orders(self, key_id: str) -> list[dict[str, Any]]:
        """Copies of every order of a key, oldest first, in REST form."""
        return self._call(lambda: self._broker.orders_snapshot(key_id))

    def positions(self, key_id: str) -> dict[str, float]:
        """Signed position quantity per symbol for a key."""
        return self._call(lambda: self._broker.positions_snapshot(key_id))

    # ------------------------------------------------------------------ faults

    def reject_auth(
        self,
        code: int,
        *,
        times: int | None = None,
        key_id: str | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next auth attempts with ``code`` (402, 406, 409, ...) and close.

        ``times=None`` rejects until :meth:`reset_faults`; filters by key and path.
        On ``/stream`` the reply is ``authorization``/``unauthorized``.

        Example::

            emu.reject_auth(406, times=2, path="/v2/iex")
        """
        if times is not None and times < 1:
            raise ValueError(f"times must be >= 1 or None, got {times}")
        resolved = None if path is None else _resolve_path(path)
        self._call(lambda: self._reject_rules.append([code, times, key_id, resolved]))

    def refuse_handshake(
        self, status: int = 429, *, times: int = 1, path: str | None = None
    ) -> None:
        """Reject the next ``times`` WebSocket upgrades with an HTTP ``status`` (e.g. 429).

        Example::

            emu.refuse_handshake(429, times=3)
        """
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times}")
        resolved = None if path is None else _resolve_path(path)
        self._call(lambda: self._refuse_rules.append([status, times, resolved]))

    def fail_rest(
        self, status: int, message: str, *, times: int = 1, code: int | None = None
    ) -> None:
        """Make the next ``times`` REST calls fail with ``status`` and ``{"code", "message"}``.

        Example::

            emu.fail_rest(500, "internal server error")
        """
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times}")
        self._call(lambda: self._rest_api.fail_next(status, message, times, code))

    def reset_faults(self) -> None:
        """Forget auth rejections, handshake refusals, REST failures, mutes, pongs, read pauses."""

        def run() -> None:
            self._reject_rules.clear()
            self._refuse_rules.clear()
            self._rest_api.clear_failures()
            self._mute_rules.clear()
            self._pong_rules.clear()
            self._read_rules.clear()
            self._apply_flags()

        self._call(run)

    def _matching(self, path: str | None, key_id: str | None) -> list[_Session]:
        groups = self._sessions.values() if path is None else (self._sessions[path],)
        return [s for group in groups for s in group if not s.closing and s.matches(path, key_id)]

    def drop_connections(
        self,
        path: str | None = None,
        *,
        key_id: str | None = None,
        close_frame: bool = True,
        code: int = 1000,
        reason: str = "",
    ) -> int:
        """Close the matching open connections now; returns how many.

        ``close_frame=False`` aborts the TCP connection without a close frame (a
        network drop: with ``slot_hold_seconds`` the slot stays held). ``code`` is
        the close code otherwise (1000, 1001, 1011, ...); queued frames are discarded.

        Example::

            emu.drop_connections("/v2/iex", close_frame=False)
        """
        resolved = None if path is None else _resolve_path(path)

        def run() -> int:
            sessions = self._matching(resolved, key_id)
            for sess in sessions:
                sess.out.clear()
                if close_frame:
                    self._close(sess, code, reason)
                else:
                    sess.closing = True
                    sess.ws.transport.abort()
            return len(sessions)

        return self._call(run)

    def slow_client(self, path: str | None = None, *, key_id: str | None = None) -> int:
        """Send ``407 slow client`` to the matching authenticated data sessions, then close them.

        Example::

            emu.slow_client("/v2/iex")
        """
        resolved = None if path is None else _resolve_path(path)

        def run() -> int:
            sessions = [s for s in self._matching(resolved, key_id) if s.authenticated]
            for sess in sessions:
                sess.out.clear()
                self._error(sess, 407, close=True)
            return len(sessions)

        return self._call(run)

    def mute(
        self, path: str | None = None, *, key_id: str | None = None, muted: bool = True
    ) -> None:
        """Stop (``muted=True``) or resume sending data to matching sessions, current and future.

        The socket stays open and control replies and pongs still flow: a
        "connected but mute" stream. ``mute(muted=False)`` without filters clears
        every mute.

        Example::

            emu.mute("/v2/iex")
            ...
            emu.mute("/v2/iex", muted=False)
        """
        self._set_rule(self._mute_rules, path, key_id, muted)

    def stop_pongs(
        self, path: str | None = None, *, key_id: str | None = None, stopped: bool = True
    ) -> None:
        """Stop answering WebSocket pings on matching sessions (current and future).

        Data still flows unless also muted, so client keepalive timeouts fire.

        Example::

            emu.stop_pongs("/v2/iex"); emu.mute("/v2/iex")   # a dead, half-open socket
        """
        self._set_rule(self._pong_rules, path, key_id, stopped)

    def pause_reading(
        self, path: str | None = None, *, key_id: str | None = None, paused: bool = True
    ) -> None:
        """Stop (``paused=True``) or resume processing what matching clients send.

        Their messages (auth, subscribe, ...) wait in order and are handled once
        reading resumes; data still flows to them meanwhile. Handy to hold a
        subscribe "in flight" for as long as a test needs. ``paused=False``
        without filters resumes every session.

        Example::

            emu.pause_reading("/v2/iex")
            ...                               # the client's subscribe is not acked yet
            emu.pause_reading("/v2/iex", paused=False)
        """
        self._set_rule(self._read_rules, path, key_id, paused)

    def _set_rule(
        self,
        rules: set[tuple[str | None, str | None]],
        path: str | None,
        key_id: str | None,
        on: bool,
    ) -> None:
        resolved = None if path is None else _resolve_path(path)

        def run() -> None:
            if on:
                rules.add((resolved, key_id))
            elif resolved is None and key_id is None:
                rules.clear()
            else:
                rules.discard((resolved, key_id))
            self._apply_flags()

        self._call(run)

    def _apply_flags(self) -> None:
        for group in self._sessions.values():
            for sess in group:
                muted = any(sess.matches(p, k) for p, k in self._mute_rules)
                if muted != sess.muted:
                    sess.muted = muted
                    sess.synth_wake.set()
                sess.pongs_stopped = any(sess.matches(p, k) for p, k in self._pong_rules)
                if any(sess.matches(p, k) for p, k in self._read_rules):
                    sess.reading.clear()
                else:
                    sess.reading.set()
        self._changed()

    # ------------------------------------------------------------------ observation

    def counters(self, key_id: str, path: str) -> EndpointCounters:
        """An immutable snapshot of the counters of ``(key_id, path)`` (zeros if never seen).

        Example::

            c = emu.counters("PKTEST", "/v2/iex")
            c.open, c.rejections.get(406, 0), c.messages_sent
        """
        resolved = _resolve_path(path)
        with self._cond:
            cell = self._cells.get((key_id, resolved))
            return cell.snapshot() if cell is not None else EndpointCounters(key_id, resolved)

    def subscriptions(self, key_id: str, path: str) -> dict[str, frozenset[str]]:
        """The server-side subscription state of the key's open sessions on a data path.

        Every channel key of the feed is present (empty when not subscribed);
        ``corrections``/``cancelErrors`` mirror ``trades`` on stock feeds.

        Example::

            emu.subscriptions("PKTEST", "/v2/iex")["quotes"] == {"AAPL", "*"}
        """
        resolved = _resolve_path(path)
        spec = FEEDS.get(resolved)
        if spec is None:
            raise ValueError("subscriptions() serves data paths; /stream has no symbols")
        with self._cond:
            snapshot = self._subs_snapshot.get((key_id, resolved))
        if snapshot is None:
            return {channel: frozenset() for channel in spec.ack_channels}
        return dict(snapshot)

    def sequences(self, key_id: str, path: str) -> dict[tuple[str, str], int]:
        """The last sequence number generated per (channel, symbol) for a key's open sessions.

        Only with ``AlpacaEmulator(sequence=True)``. Channels are the subscribe keys
        (``trades``, ``quotes``, ``updatedBars`` ...). A number is counted when the
        point is generated, before it is queued for the socket, so every point a
        client has seen has a number at most this one. With several open sessions
        (connection_limit > 1) the highest number per pair is given.

        Example::

            before = emu.sequences("PK", "/v2/iex").get(("quotes", "AAPL"), 0)
        """
        resolved = _resolve_path(path)

        def run() -> dict[tuple[str, str], int]:
            merged: dict[tuple[str, str], int] = {}
            for sess in self._sessions[resolved]:
                if sess.key_id != key_id or not sess.authenticated:
                    continue
                for (type_code, symbol), number in sess.seq.items():
                    key = (TYPE_TO_CHANNEL.get(type_code, type_code), symbol)
                    if number > merged.get(key, 0):
                        merged[key] = number
            return merged

        return self._call(run)

    def stats(self) -> EmulatorStats:
        """Server-wide figures (handshakes, refused handshakes, open connections, REST calls)."""
        with self._cond:
            return EmulatorStats(
                handshakes=self._stats["handshakes"],
                refused_handshakes=self._stats["refused_handshakes"],
                open_connections=self._stats["open"],
                rest_requests=self._stats["rest"],
            )

    def wait_until(
        self, predicate: Callable[[], object], timeout: float = 5.0, *, message: str | None = None
    ) -> None:
        """Block until ``predicate()`` is true; raise ``TimeoutError`` after ``timeout`` seconds.

        The predicate is re-evaluated on every emulator state change (connection,
        auth, subscription, frame sent, ...), and at least every 50 ms for state
        the emulator does not own. Not for the emulator's own loop thread: use
        :meth:`until` there.

        Example::

            emu.wait_until(lambda: emu.counters("PK", "/v2/iex").open == 1, 5,
                           message="stream never connected")
        """
        if self._loop is not None and self._on_loop():
            raise RuntimeError(
                "wait_until() would block the emulator's loop; use 'await emu.until()'"
            )
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(self._timeout_text(predicate, timeout, message))
                self._cond.wait(min(remaining, 0.05))

    async def until(
        self, predicate: Callable[[], object], timeout: float = 5.0, *, message: str | None = None
    ) -> None:
        """Async :meth:`wait_until`: await until ``predicate()`` is true, or ``TimeoutError``.

        Example::

            async with AlpacaEmulator() as emu:
                ...
                await emu.until(lambda: emu.counters("PK", "/v2/iex").open == 1)
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            await asyncio.to_thread(self.wait_until, predicate, timeout, message=message)
            return
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(self._timeout_text(predicate, timeout, message))
            waiter: asyncio.Future[None] = loop.create_future()
            self._async_waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, min(remaining, 0.05))
            except asyncio.TimeoutError:
                pass

    @staticmethod
    def _timeout_text(predicate: Callable[[], object], timeout: float, message: str | None) -> str:
        what = message or getattr(predicate, "__qualname__", repr(predicate))
        return f"emulator condition not met within {timeout:g}s: {what}"

    def __repr__(self) -> str:
        where = f"port={self._port}, rest_port={self._rest_port}" if self._port else "stopped"
        return f"AlpacaEmulator({where}, rate={self._rate:g})"
