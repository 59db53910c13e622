"""The WebSocket side of every connection: handshake, writer, keepalive, auth timeout, cleanup.

:class:`Connections` turns HTTP upgrades into sessions and back: it refuses
handshakes (unknown path, :meth:`~alpaca_di.emulator.AlpacaEmulator.refuse_handshake`),
runs the one writer task per session that drains its queue (counting each frame
before it is written, so a client never sees data the counters lack), swallows
pongs when a fault says so, closes sessions that never authenticate, pings
clients like Alpaca does and drops those that stop answering (only with
``ping_interval``; off by default), and on the way out releases the connection
slot -- at once after a clean close or a keepalive drop, or ``slot_hold_seconds``
after any other drop, like Alpaca's reaping.
"""

from __future__ import annotations

import asyncio

import structlog
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import SEND_EOF

from alpaca_di.emulator.core import EmulatorCore
from alpaca_di.emulator.session import LOW_WATER, TRADING_PATH, Close, Session, unauthorized
from alpaca_di.emulator.wire import FEEDS

__all__ = ["Connections"]

_log = structlog.get_logger("alpaca_di.emulator")


class Connections(EmulatorCore):
    """Handshakes, per-session writers, keepalive, auth timeouts and slot release."""

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

    def _install_frame_hook(self, sess: Session) -> None:
        """Swallow pongs when a fault says so; settle a client-closed session at its close reply.

        The reply to a client's close frame is the moment the client learns the
        connection is over, so the counters and the slot are settled before it goes
        out: a client that closes and reconnects at once never meets its own slot.
        """
        protocol = sess.ws.protocol
        original = protocol.send_frame
        original_eof = protocol.send_eof
        delay = self._close_reply_delay
        held: list[Frame] = []  # the close reply while close_reply_delay runs
        eof_held: list[bool] = []

        def reply_to_close(frame: Frame) -> None:
            self._settle(sess)
            original(frame)
            if eof_held:
                protocol.writes.append(SEND_EOF)
            sess.ws.send_data()

        def send_frame(frame: Frame) -> None:
            if frame.opcode is Opcode.PONG and sess.pongs_stopped:
                return
            if frame.opcode is Opcode.CLOSE and protocol.close_rcvd is not None:
                if delay > 0:
                    held.append(frame)
                    asyncio.get_running_loop().call_later(delay, reply_to_close, frame)
                    return
                self._settle(sess)
            original(frame)

        def send_eof() -> None:
            if held:  # goes out with the delayed close reply; the state says it went
                protocol.eof_sent = True
                eof_held.append(True)
                return
            original_eof()

        protocol.send_frame = send_frame  # type: ignore[method-assign]
        protocol.send_eof = send_eof  # type: ignore[method-assign]

    async def _writer(self, sess: Session) -> None:
        ws, out, cond = sess.ws, sess.out, self._cond
        try:
            while True:
                if not out:
                    sess.drained.set()
                    sess.wake.clear()
                    await sess.wake.wait()
                    continue
                item = out.popleft()
                if type(item) is Close:
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
                if len(out) <= LOW_WATER:
                    sess.drained.set()
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:  # pragma: no cover - defensive
            _log.exception("emulator writer failed", path=sess.path)
            sess.ws.transport.abort()

    async def _keepalive(self, sess: Session) -> None:
        """Ping every ``ping_interval``; drop the client if no pong comes in ``ping_timeout``."""
        wake = sess.keepalive_wake
        while not sess.closing:
            wake.clear()
            interval, timeout = self._ping_interval, self._ping_timeout
            if interval is None:
                await wake.wait()
                continue
            try:
                await asyncio.wait_for(wake.wait(), interval)
                continue  # the settings changed: start over with the new ones
            except asyncio.TimeoutError:
                pass
            try:
                async with asyncio.timeout(timeout):
                    pong = await sess.ws.ping()
                    await pong
            except asyncio.TimeoutError:
                self._reap(sess, timeout)
                return
            except ConnectionClosed:
                return
            except Exception:  # pragma: no cover - defensive: a dead pinger must say so
                _log.exception("emulator keepalive failed", path=sess.path)
                return

    def _reap(self, sess: Session, timeout: float) -> None:
        if sess.closing:
            return
        _log.info(
            "emulator dropped a client that stopped answering pings",
            path=sess.path,
            key_id=sess.key_id,
            timeout=timeout,
        )
        with self._cond:
            sess.cell.keepalive_drops += 1
        sess.reaped = True
        sess.closing = True
        sess.out.clear()
        # no close frame: the client is not reading; like a server reaping a dead peer
        sess.ws.transport.abort()
        self._changed()

    def _auth_timed_out(self, sess: Session) -> None:
        sess.timer = None
        if sess.authenticated or sess.closing:
            return
        if sess.spec is not None:
            self._error(sess, 404, close=True)
        else:
            self._count_rejection(sess, 404)
            self._send(sess, unauthorized("authenticate", "auth timeout"))
            self._close(sess)
            self._changed()

    async def _cleanup(self, sess: Session) -> None:
        sess.closing = True
        if sess.timer is not None:
            sess.timer.cancel()
            sess.timer = None
        for task in sess.tasks:
            task.cancel()
        await asyncio.gather(*sess.tasks, return_exceptions=True)
        self._sessions[sess.path].discard(sess)
        self._settle(sess)

    def _settle(self, sess: Session) -> None:
        """Count the session closed, once: counters, subscription snapshot, its slot."""
        if sess.settled:
            return
        sess.settled = True
        sess.closing = True
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
            if clean or sess.reaped or self._slot_hold <= 0 or self._stopping:
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
