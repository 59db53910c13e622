"""Market-data streams: auth, subscriptions, synthetic data and ``publish``.

:class:`DataStreams` handles what a data client sends (``auth``, ``subscribe``,
``unsubscribe``; MessagePack or JSON), keeps each session's subscriptions with
Alpaca's semantics (``"*"``, ``405`` beyond the plan's symbol limit, ``410`` for a
channel the feed lacks), produces synthetic data at ``rate`` points per second
for the subscribed pairs, and routes published messages the way Alpaca does::

    emu.publish("/v2/iex", [{"T": "q", "S": "AAPL", "bp": 1.0, "bs": 1, "ap": 1.1,
                             "as": 2, "t": "2024-01-02T15:30:00Z"}])
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from typing import Any

import msgpack
import structlog

from alpaca_di.emulator.core import EmulatorCore
from alpaca_di.emulator.market import SyntheticMarket
from alpaca_di.emulator.session import HIGH_WATER, Session, resolve_path
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

__all__ = ["DataStreams"]

_log = structlog.get_logger("alpaca_di.emulator")

_SYNTH_TYPE: Mapping[str, str] = {
    "trades": "t",
    "quotes": "q",
    "bars": "b",
    "updatedBars": "u",
    "dailyBars": "d",
    "statuses": "s",
    "lulds": "l",
    "orderbooks": "o",
}  # news is not per connection: one ticker paces it (alpaca_di.emulator.news)


class DataStreams(EmulatorCore):
    """The market-data protocol, synthetic data and publishing."""

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
            if self._news_wake is not None:
                self._news_wake.set()  # the default news pace follows the rate
            for group in self._sessions.values():
                for sess in group:
                    sess.synth_wake.set()

        self._call(run)

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

        Bars (``b``, ``u``, ``d``), quotes and trades are also recorded, whoever
        subscribed: the market-data REST API (historical bars, latest quote, trade
        and bar) answers from them.

        Example::

            emu.publish("/v2/iex", [
                {"T": "t", "S": "AAPL", "i": 1, "x": "V", "p": 190.5, "s": 100,
                 "c": ["@"], "z": "C", "t": datetime.now(timezone.utc)},
            ])
        """
        resolved = resolve_path(path)
        spec = FEEDS.get(resolved)
        if spec is None:
            raise ValueError("publish() serves data paths; use push_trade_update() for /stream")
        normalized = [normalize_message(m) for m in messages]
        return self._call(lambda: self._publish(spec, normalized, key_id))

    def _publish(self, spec: FeedSpec, messages: list[dict[str, Any]], key_id: str | None) -> int:
        history = self._history
        for msg in messages:
            history.record(spec.kind, msg)
        return self._deliver(spec, messages, key_id)

    def _deliver(self, spec: FeedSpec, messages: list[dict[str, Any]], key_id: str | None) -> int:
        """Route messages to the sessions of ``spec`` that subscribed; returns deliveries."""
        sessions = [
            s
            for s in self._sessions[spec.path]
            if s.authenticated
            and not s.closing
            and not s.muted
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
                chunk = picked[start : start + batch]
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

    def send_raw(self, path: str, frame: bytes | str, *, key_id: str | None = None) -> int:
        """Inject one frame verbatim (bytes -> binary frame, str -> text frame) into open sessions.

        Reaches every open session on ``path`` (filtered by ``key_id`` once
        authenticated). Returns the number of sessions.

        Example::

            emu.send_raw("/v2/iex", b"\\xc1 not msgpack")
        """
        resolved = resolve_path(path)

        def run() -> int:
            count = 0
            for sess in self._sessions[resolved]:
                if not sess.closing and (key_id is None or sess.key_id == key_id):
                    self._enqueue(sess, frame, 0)
                    count += 1
            return count

        return self._call(run)

    # ------------------------------------------------------------------ protocol

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

    def _data_auth(self, sess: Session, key: Any, secret: Any) -> None:
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

    def _on_data_message(self, sess: Session, spec: FeedSpec, message: bytes | str) -> None:
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
        self, sess: Session, spec: FeedSpec, msg: dict[Any, Any], subscribe: bool
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

    def _update_synth_pairs(self, sess: Session, spec: FeedSpec) -> None:
        per_channel: list[list[tuple[str, str]]] = []
        universe = SyntheticMarket.universe(spec.kind, spec.feed)
        for channel, symbols in sess.subs.items():
            type_code = _SYNTH_TYPE.get(channel)
            if type_code is None or not symbols:
                continue
            names: dict[str, None] = {}
            for symbol in symbols:
                if symbol == "*":
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

    # ------------------------------------------------------------------ synthetic data

    async def _synthetic(self, sess: Session) -> None:
        spec = sess.spec
        assert spec is not None
        loop = asyncio.get_running_loop()
        market, kind, batch = self._market, spec.kind, self._batch
        note_latest = self._history.note_latest
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
                # points cycle through the pairs: the last npairs hold each pair's latest
                for point in points[-npairs:]:
                    if point["T"] == "q" or point["T"] == "t":
                        note_latest(kind, point["T"], point["S"], point)  # REST "latest"
                payload = encode_msgpack(points) if sess.msgpack else encode_json(points)
                self._enqueue(sess, payload, size)
                if len(sess.out) >= HIGH_WATER:
                    sess.drained.clear()
                    await sess.drained.wait()
                    last = loop.time()
            delay = (1.0 - credit) / rate
            await asyncio.sleep(min(0.05, max(0.002, delay)))
