"""``AlpacaEmulator``: its configuration, lifecycle and addresses, its parts put together.

The emulator is one class assembled from parts that each own one concern --
:class:`~alpaca_di.emulator.connections.Connections` (WebSocket handshakes,
writers, slots), :class:`~alpaca_di.emulator.data.DataStreams` (market data),
:class:`~alpaca_di.emulator.history.History` (the clock and clock-paced bars),
:class:`~alpaca_di.emulator.news.News` (the news ticker),
:class:`~alpaca_di.emulator.trading.TradingStreams` (trading stream and broker),
:class:`~alpaca_di.emulator.faults.Faults` (fault knobs) and
:class:`~alpaca_di.emulator.observation.Observation` (counters, waits) -- over the
shared state of :class:`~alpaca_di.emulator.core.EmulatorCore`. This module adds
what ties them together: the constructor, start/stop (sync on a private loop
thread, or async on the caller's loop), restart, the URLs, and the dispatch of
each connection to the data or trading protocol::

    with AlpacaEmulator(rate=100, seed=1) as emu:
        url = emu.data_url("/v2/iex")
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import threading
from collections.abc import Callable
from types import TracebackType

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from alpaca_di.emulator.bars import BarHistory
from alpaca_di.emulator.broker import Broker
from alpaca_di.emulator.clock import EmulatorClock
from alpaca_di.emulator.connections import Connections
from alpaca_di.emulator.faults import Faults, check_keepalive
from alpaca_di.emulator.history import History
from alpaca_di.emulator.market import SyntheticMarket
from alpaca_di.emulator.market_data import MarketDataApi
from alpaca_di.emulator.news import News, check_news_per_minute
from alpaca_di.emulator.observation import Observation
from alpaca_di.emulator.rest import COUNTERS_PATH, RestApi, RestServer
from alpaca_di.emulator.session import DATA_PATHS, TRADING_PATH, Session, resolve_path
from alpaca_di.emulator.trading import TradingStreams
from alpaca_di.emulator.wire import FEEDS

__all__ = ["DATA_PATHS", "TRADING_PATH", "AlpacaEmulator"]

_log = structlog.get_logger("alpaca_di.emulator")
_STOP_CLOSE_TIMEOUT = 0.25


class AlpacaEmulator(Observation, Faults, TradingStreams, News, History, Connections):
    """A loopback Alpaca: market-data and trading WebSockets plus a small REST API.

    Args:
        port: WebSocket port (0 = a free port).
        rest_port: REST port (0 = a free port).
        rate: synthetic data points per second per data connection (0 = none);
            sent only for subscribed (channel, symbol) pairs, batched in frames.
            News is not paced by it: see ``news_per_minute``.
        news_per_minute: synthetic headlines per minute of emulator time,
            published once to every news subscriber of "*" or of the headline's
            symbol. ``None`` (the default): 3 a minute while ``rate`` > 0, none
            while it is 0; a number holds that pace whatever the rate. Settable
            while running (:attr:`news_per_minute`).
        seed: seed of the synthetic market's random walk.
        connection_limit: authenticated sessions allowed per (key, data path).
        trading_connection_limit: the same for ``/stream`` (default: ``connection_limit``).
        slot_hold_seconds: after an unclean drop (no close frame from the client)
            the connection slot stays taken this long, like Alpaca's ~90 s reaping.
        close_reply_delay: seconds the server takes to answer a client's close
            frame (the session, and its slot, stay open meanwhile), like a busy
            server: a client that connects again before its close completed
            meets its own old session.
        ping_interval: ping every connection this often (seconds) and drop those
            that do not answer within ``ping_timeout``, freeing their slot at once:
            how a frozen (SIGSTOP'd) client loses its connection. ``None`` (the
            default) sends no pings; change it later with :meth:`set_keepalive`.
        ping_timeout: seconds a pong may take (default: ``ping_interval``).
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
            with :meth:`sequences`. News headlines carry none (one ticker
            publishes each headline to every subscriber).
        clock: the emulator's clock (see :attr:`clock`): ``None`` follows the wall
            clock; a datetime (naive = UTC) or ISO text starts a frozen clock there,
            which moves only when the test sets or advances it; an
            :class:`~alpaca_di.emulator.clock.EmulatorClock` is used as is.

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
        news_per_minute: float | None = None,
        seed: int | None = None,
        connection_limit: int = 1,
        trading_connection_limit: int | None = None,
        slot_hold_seconds: float = 0.0,
        close_reply_delay: float = 0.0,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        auth_timeout: float = 10.0,
        trading_text_frames: bool = False,
        compression: bool = True,
        batch_size: int = 100,
        starting_cash: float = 100_000.0,
        sequence: bool = False,
        clock: EmulatorClock | _dt.datetime | str | None = None,
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
        if close_reply_delay < 0:
            raise ValueError(f"close_reply_delay must be >= 0, got {close_reply_delay}")
        if auth_timeout <= 0:
            raise ValueError(f"auth_timeout must be > 0, got {auth_timeout}")
        self._host = "127.0.0.1"
        self._requested_port = port
        self._requested_rest_port = rest_port
        self._rate = float(rate)
        self._news_per_minute = check_news_per_minute(news_per_minute)
        self._news_wake = self._news_task = self._news_unlisten = None
        self._connection_limit = connection_limit
        self._trading_limit = trading_connection_limit or connection_limit
        self._slot_hold = float(slot_hold_seconds)
        self._close_reply_delay = float(close_reply_delay)
        self._ping_interval, self._ping_timeout = check_keepalive(ping_interval, ping_timeout)
        self._auth_timeout = float(auth_timeout)
        self._trading_text = trading_text_frames
        self._compression = compression
        self._batch = batch_size
        self._sequence = sequence

        self._cond = threading.Condition()
        self._accounts = {}
        self._cells = {}
        self._subs_snapshot = {}
        self._stats = {
            "handshakes": 0,
            "refused_handshakes": 0,
            "open": 0,
            "rest": 0,
            "market_data": 0,
        }

        self._clock = clock if isinstance(clock, EmulatorClock) else EmulatorClock(clock)
        self._market = SyntheticMarket(seed, self._clock)
        self._history = BarHistory()
        self._broker = Broker(self._market, self._emit_trade_update, starting_cash=starting_cash)
        self._market.on_price = self._broker.on_price
        self._rest_api = RestApi(
            self._broker,
            self._authorize_rest,
            self._count_rest,
            MarketDataApi(self._history, self._clock, self._plan_of),
            self.snapshot,
        )

        self._sessions = {p: set() for p in (*FEEDS, TRADING_PATH)}
        self._reject_rules = []
        self._refuse_rules = []
        self._mute_rules = set()
        self._pong_rules = set()
        self._read_rules = set()
        self._hold_timers = {}
        self._connection_count = 0
        self._async_waiters = []

        self._loop = None
        self._loop_thread_id = None
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
            self._start_news(loop)
        except BaseException:
            await self._astop()
            raise
        _log.debug("emulator started", port=self._port, rest_port=self._rest_port)

    async def _astop(self) -> None:
        if self._loop is None:
            return
        self._stopping = True
        await self._stop_news()
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
        """``http://127.0.0.1:RESTPORT``: the trading and market-data REST APIs.

        Pass it as ``url_override`` to alpaca-py's ``TradingClient`` and to its
        historical data clients (``StockHistoricalDataClient`` ...).
        """
        return f"http://{self._host}:{self.rest_port}"

    @property
    def counters_url(self) -> str:
        """``http://127.0.0.1:RESTPORT/_emulator/counters``: :meth:`snapshot` as JSON (no key)."""
        return self.api_url + COUNTERS_PATH

    def data_url(self, path: str) -> str:
        """The full WebSocket URL of a path or feed alias.

        Example::

            emu.data_url("/v2/sip")      # 'ws://127.0.0.1:PORT/v2/sip'
            emu.data_url("crypto")       # 'ws://127.0.0.1:PORT/v1beta3/crypto/us'
        """
        return self.ws_url + resolve_path(path)

    # ------------------------------------------------------------------ connections

    async def _handle_connection(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        path = ws.request.path.split("?", 1)[0]
        spec = FEEDS.get(path)
        self._connection_count += 1
        sess = Session(ws, path, spec, self._cell("", path), self._connection_count)
        if spec is not None:
            content_type = ws.request.headers.get("Content-Type", "") or ""
            sess.msgpack = spec.msgpack_only or "application/msgpack" in content_type.lower()
        else:
            sess.text_frames = self._trading_text
        self._install_frame_hook(sess)
        if any(sess.matches(p, k) for p, k in self._read_rules):
            sess.reading.clear()
        self._sessions[path].add(sess)
        with self._cond:
            self._stats["open"] += 1
        loop = asyncio.get_running_loop()
        sess.tasks.append(loop.create_task(self._writer(sess)))
        sess.tasks.append(loop.create_task(self._keepalive(sess)))
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

    def __repr__(self) -> str:
        where = f"port={self._port}, rest_port={self._rest_port}" if self._port else "stopped"
        return f"AlpacaEmulator({where}, rate={self._rate:g})"
