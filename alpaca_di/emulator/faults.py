"""Fault knobs: rejected auth, refused handshakes, REST failures, drops, mutes, keepalive.

Every knob of :class:`Faults` is thread-safe (it runs on the emulator's loop) and
filters by path and key where that makes sense. Rules that outlive one call
(mutes, stopped pongs, paused reading) apply to current and future sessions until
cleared or :meth:`Faults.reset_faults`::

    emu.reject_auth(406, times=2, path="/v2/iex")
    emu.mute("/v2/iex"); emu.stop_pongs("/v2/iex")     # a dead, half-open socket
    emu.reset_faults()
"""

from __future__ import annotations

import math

from alpaca_di.emulator.core import EmulatorCore, Rule
from alpaca_di.emulator.session import Session, resolve_path

__all__ = ["Faults", "check_keepalive"]


def check_keepalive(
    ping_interval: float | None, ping_timeout: float | None
) -> tuple[float | None, float]:
    """Validated ``(ping_interval, ping_timeout)``; the timeout defaults to the interval.

    Raises:
        ValueError: for a non-positive or non-finite interval or timeout.
    """
    for name, value in (("ping_interval", ping_interval), ("ping_timeout", ping_timeout)):
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ValueError(f"{name} must be a number of seconds > 0 or None, got {value!r}")
    timeout = ping_timeout if ping_timeout is not None else ping_interval
    return (None if ping_interval is None else float(ping_interval)), float(timeout or 0.0)


class Faults(EmulatorCore):
    """The emulator's fault injection knobs."""

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
        resolved = None if path is None else resolve_path(path)
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
        resolved = None if path is None else resolve_path(path)
        self._call(lambda: self._refuse_rules.append([status, times, resolved]))

    def accept_handshakes(self, path: str | None = None) -> None:
        """Forget the :meth:`refuse_handshake` rules (of ``path``); every other fault stays.

        Ends an outage made with ``refuse_handshake(times=...)`` while, say, a REST
        failure set for the reconnect stays in force (:meth:`reset_faults` clears all).

        Example::

            emu.refuse_handshake(503, times=1_000_000, path="/v2/iex")
            ...                                  # the client cannot reconnect
            emu.fail_history(503)                # its backfill will fail
            emu.accept_handshakes("/v2/iex")     # now it reconnects
        """
        resolved = None if path is None else resolve_path(path)

        def run() -> None:
            self._refuse_rules[:] = [
                rule for rule in self._refuse_rules if resolved is not None and rule[2] != resolved
            ]

        self._call(run)

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

    def throttle_history(self, times: int | None = 1, *, retry_after: float = 1.0) -> None:
        """Answer the next ``times`` market-data REST calls with ``429`` and ``Retry-After``.

        Covers every market-data endpoint (bars, latest quote/trade/bar);
        ``times=None`` throttles until :meth:`reset_faults`. The body is Alpaca's
        ``{"code": 42910000, "message": "too many requests."}``. Note that alpaca-py's
        REST clients retry a 429 by themselves (3 times, 3 s apart, by default).

        Example::

            emu.throttle_history(2, retry_after=0.5)     # the third bars call succeeds
        """
        self._check_times(times)
        if not retry_after >= 0:
            raise ValueError(f"retry_after must be >= 0 seconds, got {retry_after!r}")
        self._call(
            lambda: self._rest_api.fail_next(
                429, "too many requests.", times, 42910000, api="data", retry_after=retry_after
            )
        )

    def fail_history(
        self, status: int = 500, *, times: int | None = 1, refuse: bool = False
    ) -> None:
        """Make the next ``times`` market-data REST calls fail: ``status`` (5xx), or no answer.

        ``refuse=True`` drops the TCP connection without an answer instead (the
        client sees a connection error); ``times=None`` fails until
        :meth:`reset_faults`. Trading REST calls are not affected.

        Example::

            emu.fail_history(503, times=None)      # every backfill attempt fails
            emu.fail_history(refuse=True)          # the next one gets a dropped connection
        """
        self._check_times(times)
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status (400..599), got {status}")
        message = "connection refused" if refuse else "internal server error"
        self._call(
            lambda: self._rest_api.fail_next(
                status, message, times, None, api="data", refuse=refuse
            )
        )

    @staticmethod
    def _check_times(times: int | None) -> None:
        if times is not None and (
            isinstance(times, bool) or not isinstance(times, int) or times < 1
        ):
            raise ValueError(f"times must be an integer >= 1 or None, got {times!r}")

    def reset_faults(self) -> None:
        """Forget every fault rule and go back to normal.

        That is auth rejections, handshake refusals, REST failures and throttles,
        mutes, stopped pongs and read pauses.
        """

        def run() -> None:
            self._reject_rules.clear()
            self._refuse_rules.clear()
            self._rest_api.clear_failures()
            self._mute_rules.clear()
            self._pong_rules.clear()
            self._read_rules.clear()
            self._apply_flags()

        self._call(run)

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
        resolved = None if path is None else resolve_path(path)

        def run() -> int:
            sessions = self._matching(resolved, key_id)
            for sess in sessions:
                self._drop(sess, close_frame, code, reason)
            return len(sessions)

        return self._call(run)

    def drop_connection(
        self, connection_id: int, *, close_frame: bool = True, code: int = 1000, reason: str = ""
    ) -> bool:
        """Close one open connection, picked by its :attr:`ConnectionInfo.id`; False if gone.

        The same as :meth:`drop_connections` for a single connection, when several
        share a path and key (``connection_limit`` > 1) or before authentication.

        Example::

            newest = max(emu.connections("/v2/iex"), key=lambda c: c.id)
            emu.drop_connection(newest.id, close_frame=False)
        """

        def run() -> bool:
            for group in self._sessions.values():
                for sess in group:
                    if sess.id == connection_id and not sess.closing:
                        self._drop(sess, close_frame, code, reason)
                        return True
            return False

        return self._call(run)

    def _drop(self, sess: Session, close_frame: bool, code: int, reason: str) -> None:
        sess.out.clear()
        if close_frame:
            self._close(sess, code, reason)
        else:
            sess.closing = True
            sess.ws.transport.abort()

    def set_keepalive(self, ping_interval: float | None, ping_timeout: float | None = None) -> None:
        """Ping every connection each ``ping_interval`` s; drop those silent past ``ping_timeout``.

        Like Alpaca, which reaps clients that stop answering its pings: a dropped
        client's slot is freed at once (``slot_hold_seconds`` does not apply),
        :attr:`EndpointCounters.keepalive_drops` counts it and the TCP connection
        is aborted (no close frame: the client is not reading). Applies to current
        and future connections; ``ping_interval=None`` stops pinging (the default).
        ``ping_timeout`` defaults to ``ping_interval``.

        Example::

            emu.set_keepalive(0.2, ping_timeout=0.5)
            os.kill(client_pid, signal.SIGSTOP)      # a frozen client...
            emu.wait_until(lambda: emu.counters("PK", "/v2/iex").keepalive_drops == 1, 10)
        """
        interval, timeout = check_keepalive(ping_interval, ping_timeout)

        def run() -> None:
            self._ping_interval, self._ping_timeout = interval, timeout
            for group in self._sessions.values():
                for sess in group:
                    sess.keepalive_wake.set()

        self._call(run)

    def slow_client(self, path: str | None = None, *, key_id: str | None = None) -> int:
        """Send ``407 slow client`` to the matching authenticated data sessions, then close them.

        Example::

            emu.slow_client("/v2/iex")
        """
        resolved = None if path is None else resolve_path(path)

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
        rules: set[Rule],
        path: str | None,
        key_id: str | None,
        on: bool,
    ) -> None:
        resolved = None if path is None else resolve_path(path)

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
