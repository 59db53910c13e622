"""The emulator's clock: the time its data, bars, news and REST answers are stamped with.

By default an :class:`EmulatorClock` follows the wall clock. A test takes control
by setting, advancing or freezing it; a frozen clock only moves when told to, so
every timestamp the emulator produces is known in advance::

    from datetime import datetime, timezone
    from alpaca_di.emulator.clock import EmulatorClock

    clock = EmulatorClock(datetime(2024, 1, 2, 14, 30, tzinfo=timezone.utc))  # frozen there
    clock.advance(minutes=1)
    clock.now()            # datetime(2024, 1, 2, 14, 31, tzinfo=timezone.utc)
    clock.resume()         # runs again, at wall-clock pace, from 14:31

The clock is thread-safe. Callbacks registered with :meth:`EmulatorClock.on_change`
run (on the caller's thread) after every jump, so producers paced by emulator time
(news) notice at once.
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from collections.abc import Callable

__all__ = ["EmulatorClock", "to_datetime", "to_ns"]

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def to_datetime(when: _dt.datetime | str) -> _dt.datetime:
    """An aware UTC datetime from a datetime (naive = UTC) or ISO 8601 / RFC 3339 text.

    Raises:
        ValueError: for text that is not an ISO 8601 date or date-time.

    Example::

        to_datetime("2024-01-02T15:30:00Z")    # datetime(2024, 1, 2, 15, 30, tzinfo=utc)
    """
    if isinstance(when, str):
        try:
            when = _dt.datetime.fromisoformat(when.replace("z", "Z"))
        except ValueError:
            raise ValueError(f"not an ISO 8601 / RFC 3339 time: {when!r}") from None
    if not isinstance(when, _dt.datetime):
        raise TypeError(f"expected a datetime or ISO 8601 text, got {type(when).__name__}")
    if when.tzinfo is None:
        return when.replace(tzinfo=_dt.timezone.utc)
    return when.astimezone(_dt.timezone.utc)


def to_ns(when: _dt.datetime) -> int:
    """Integer nanoseconds since the Unix epoch of an aware datetime (exact, no float)."""
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


class EmulatorClock:
    """A wall-following clock that a test can set, advance, freeze and resume.

    Args:
        start: where the clock starts. ``None`` follows the wall clock (running);
            a datetime (naive = UTC) or ISO text starts it there, frozen.
        frozen: override whether it starts frozen.

    Example::

        clock = EmulatorClock()                 # wall time, running
        clock.freeze()                          # stands still from now on
        clock.set("2024-01-02T14:30:00Z")
        clock.advance(seconds=90)
    """

    def __init__(
        self, start: _dt.datetime | str | None = None, *, frozen: bool | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        start_ns = time.time_ns() if start is None else to_ns(to_datetime(start))
        self._frozen = (start is not None) if frozen is None else frozen
        # running: now = wall + offset; frozen: now = frozen_ns
        self._offset = start_ns - time.time_ns()
        self._frozen_ns = start_ns

    # ------------------------------------------------------------------ reading

    def now_ns(self) -> int:
        """Now, in integer nanoseconds since the Unix epoch."""
        with self._lock:
            return self._now_ns()

    def _now_ns(self) -> int:
        return self._frozen_ns if self._frozen else time.time_ns() + self._offset

    def now(self) -> _dt.datetime:
        """Now, as an aware UTC datetime (microsecond precision)."""
        ns = self.now_ns()
        return _EPOCH + _dt.timedelta(microseconds=ns // 1000)

    @property
    def frozen(self) -> bool:
        """True while the clock stands still between jumps."""
        return self._frozen

    # ------------------------------------------------------------------ control

    def set(self, when: _dt.datetime | str) -> None:
        """Jump to ``when`` (backwards too); a running clock keeps running from there."""
        self._jump_to(to_ns(to_datetime(when)))

    def advance(
        self,
        delta: _dt.timedelta | None = None,
        *,
        seconds: float = 0,
        minutes: float = 0,
        hours: float = 0,
        days: float = 0,
    ) -> _dt.datetime:
        """Move forward by ``delta`` plus the keyword amounts; returns the new time.

        Raises:
            ValueError: for a negative total (use :meth:`set` to go back).
        """
        step = (delta or _dt.timedelta()) + _dt.timedelta(
            seconds=seconds, minutes=minutes, hours=hours, days=days
        )
        if step < _dt.timedelta():
            raise ValueError(f"advance() moves forward only, got {step}; use set() to go back")
        step_ns = (step.days * 86_400 + step.seconds) * 1_000_000_000 + step.microseconds * 1000
        self.advance_ns(step_ns)
        return self.now()

    def advance_ns(self, delta_ns: int) -> tuple[int, int]:
        """Move forward by ``delta_ns`` nanoseconds; returns ``(before_ns, after_ns)`` (atomic).

        Raises:
            ValueError: for a negative step.
        """
        if delta_ns < 0:
            raise ValueError(f"advance_ns() moves forward only, got {delta_ns}")
        with self._lock:
            before = self._now_ns()
            self._set_locked(before + delta_ns)
        self._notify()
        return before, before + delta_ns

    def freeze(self) -> None:
        """Stop the clock where it is; it moves only by :meth:`set` and :meth:`advance`."""
        with self._lock:
            if not self._frozen:
                self._frozen_ns = self._now_ns()
                self._frozen = True

    def resume(self) -> None:
        """Let a frozen clock run again at wall-clock pace from where it stands."""
        with self._lock:
            if self._frozen:
                self._offset = self._frozen_ns - time.time_ns()
                self._frozen = False
        self._notify()

    def on_change(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` after every jump or resume; returns a function to unregister it."""
        with self._lock:
            self._listeners.append(callback)

        def remove() -> None:
            with self._lock:
                if callback in self._listeners:
                    self._listeners.remove(callback)

        return remove

    def _jump_to(self, target_ns: int) -> None:
        with self._lock:
            self._set_locked(target_ns)
        self._notify()

    def _set_locked(self, target_ns: int) -> None:
        if self._frozen:
            self._frozen_ns = target_ns
        else:
            self._offset = target_ns - time.time_ns()

    def _notify(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for callback in listeners:
            callback()

    def __repr__(self) -> str:
        state = "frozen" if self._frozen else "running"
        return f"EmulatorClock({self.now().isoformat()}, {state})"
