"""The state every part of the emulator shares, and the primitives they all use.

:class:`EmulatorCore` is the base class of each part of
:class:`~alpaca_di.emulator.AlpacaEmulator` (connections, data, trading, faults,
observation). It declares the shared state, which ``AlpacaEmulator.__init__``
assigns once, and owns the plumbing every part needs: running a call on the
emulator's loop (:meth:`EmulatorCore._call`), waking waiters after a state change
(:meth:`EmulatorCore._changed`), queueing frames on a session, the account table
and the auth verdict. State is only touched on the emulator's loop; counters and
snapshots that other threads read are guarded by ``_cond``. A part's public
knob typically validates its arguments on the caller's thread, then does the work
on the loop::

    def set_price(self, symbol: str, price: float) -> None:
        self._call(lambda: self._market.set_price(symbol, price))
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import structlog

from alpaca_di.emulator.accounts import CounterCell, EmulatedAccount
from alpaca_di.emulator.bars import BarHistory
from alpaca_di.emulator.broker import Broker
from alpaca_di.emulator.clock import EmulatorClock
from alpaca_di.emulator.market import SyntheticMarket
from alpaca_di.emulator.rest import RestApi
from alpaca_di.emulator.session import (
    ERROR_MESSAGES,
    FEED_NAMES,
    TRADING_PATH,
    Close,
    Session,
)
from alpaca_di.emulator.wire import FEEDS

__all__ = ["EmulatorCore", "Rule"]

_log = structlog.get_logger("alpaca_di.emulator")
_T = TypeVar("_T")

Rule = tuple[str | None, str | None]
"""A fault rule's filter: ``(path, key_id)``, ``None`` matching any."""


class EmulatorCore:
    """Shared state and plumbing of the emulator's parts (assigned by ``AlpacaEmulator``)."""

    _rate: float
    _connection_limit: int
    _trading_limit: int
    _slot_hold: float
    _close_reply_delay: float
    _ping_interval: float | None
    _ping_timeout: float
    _batch: int
    _sequence: bool

    _cond: threading.Condition
    _accounts: dict[str, EmulatedAccount]
    _cells: dict[tuple[str, str], CounterCell]
    _subs_snapshot: dict[tuple[str, str], dict[str, frozenset[str]]]
    _stats: dict[str, int]

    _clock: EmulatorClock
    _market: SyntheticMarket
    _history: BarHistory
    _broker: Broker
    _rest_api: RestApi

    _sessions: dict[str, set[Session]]
    _reject_rules: list[list[Any]]  # [code, remaining|None, key_id, path]
    _refuse_rules: list[list[Any]]  # [status, remaining, path]
    _mute_rules: set[Rule]
    _pong_rules: set[Rule]
    _read_rules: set[Rule]
    _hold_timers: dict[asyncio.TimerHandle, CounterCell]
    _connection_count: int
    _async_waiters: list[asyncio.Future[None]]
    _news_wake: asyncio.Event | None  # wakes the news ticker (its pace follows rate)

    _loop: asyncio.AbstractEventLoop | None
    _loop_thread_id: int | None
    _stopping: bool

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
        if feed_set is not None and not feed_set <= FEED_NAMES:
            bad = ", ".join(sorted(feed_set - FEED_NAMES))
            valid = ", ".join(sorted(FEED_NAMES))
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

    def _plan_of(self, key_id: str) -> frozenset[str] | None:
        with self._cond:
            account = self._accounts.get(key_id)
        return None if account is None else account.feeds

    def _count_rest(self, api: str) -> None:
        with self._cond:
            self._stats["rest"] += 1
            if api == "data":
                self._stats["market_data"] += 1

    # ------------------------------------------------------------------ sessions

    def _matching(self, path: str | None, key_id: str | None) -> list[Session]:
        groups = self._sessions.values() if path is None else (self._sessions[path],)
        return [s for group in groups for s in group if not s.closing and s.matches(path, key_id)]

    def _enqueue(self, sess: Session, payload: bytes | str, count: int) -> None:
        if sess.closing:
            return
        sess.out.append((payload, count))
        sess.wake.set()

    def _send(self, sess: Session, obj: Any) -> None:
        self._enqueue(sess, sess.encode(obj), 0)

    def _close(self, sess: Session, code: int = 1000, reason: str = "") -> None:
        if sess.closing:
            return
        sess.out.append(Close(code, reason))
        sess.closing = True
        sess.wake.set()

    def _count_rejection(self, sess: Session, code: int) -> None:
        cell = sess.cell
        with self._cond:
            cell.rejections[code] = cell.rejections.get(code, 0) + 1

    def _error(
        self, sess: Session, code: int, *, close: bool = False, msg: str | None = None
    ) -> None:
        text = msg or ERROR_MESSAGES.get(code, "error")
        self._count_rejection(sess, code)
        if sess.spec is not None:
            self._send(sess, [{"T": "error", "code": code, "msg": text}])
        else:
            self._send(sess, {"stream": "error", "data": {"code": code, "message": text}})
        if close:
            self._close(sess)
        self._changed()

    def _release_slot(self, cell: CounterCell) -> None:
        with self._cond:
            cell.slots_held -= 1
        self._changed()

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

    def _accept(self, sess: Session, key_id: str, account: EmulatedAccount | None) -> None:
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
