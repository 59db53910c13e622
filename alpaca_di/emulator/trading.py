"""The trading stream ``/stream`` and the paper broker behind the REST API.

:class:`TradingStreams` speaks the JSON trading protocol (``authenticate``,
``listen``; binary frames unless ``trading_text_frames``), fans out every order
event of the :class:`~alpaca_di.emulator.broker.Broker` to the key's listening
sessions, and exposes the broker's state and the market price it fills at::

    emu.set_price("AAPL", 150.0)          # a resting buy limit at 151 fills now
    emu.orders("PKTEST")[-1]["status"]    # 'filled'
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import structlog

from alpaca_di.emulator.core import EmulatorCore
from alpaca_di.emulator.session import ERROR_MESSAGES, TRADING_PATH, Session, unauthorized
from alpaca_di.emulator.wire import encode_json

__all__ = ["TradingStreams"]

_log = structlog.get_logger("alpaca_di.emulator")


class TradingStreams(EmulatorCore):
    """The trading-stream protocol, trade-update fan-out and broker queries."""

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

    # ------------------------------------------------------------------ protocol

    def _on_trading_message(self, sess: Session, message: bytes | str) -> None:
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
                self._send(
                    sess,
                    {
                        "stream": "authorization",
                        "data": {"status": "unauthorized", "action": "listen"},
                    },
                )
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

    def _trading_auth(self, sess: Session, key: Any, secret: Any) -> None:
        if not isinstance(key, str) or not isinstance(secret, str) or not key:
            self._count_rejection(sess, 402)
            self._send(sess, unauthorized("authenticate", "access key verification failed"))
            self._close(sess)
            self._changed()
            return
        if sess.authenticated:
            ok = sess.key_id == key
            self._send(
                sess,
                {
                    "stream": "authorization",
                    "data": {
                        "action": "authenticate",
                        "status": "authorized" if ok else "unauthorized",
                    },
                },
            )
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
            }.get(code, ERROR_MESSAGES.get(code, "unauthorized"))
            _log.info("emulator rejected trading auth", key_id=key, code=code)
            self._send(sess, unauthorized("authenticate", reason))
            self._close(sess)
            self._changed()
            return
        self._accept(sess, key, account)
        self._send(
            sess,
            {"stream": "authorization", "data": {"action": "authenticate", "status": "authorized"}},
        )
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
