"""Helpers for running alpaca-py's real stream clients against the emulator.

alpaca-py's ``run()`` creates its own event loop, so each client runs in a
thread. Stopping: ``stop()`` only signals and the client notices within up to
5 s, so after signalling we also drop its connection on the emulator side —
the client then leaves ``_run_forever`` at once (its stop flag is already set).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alpaca_di.emulator import AlpacaEmulator


class Collector:
    """Thread-safe sink for handler calls with deadline-based waiting."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()

    async def handler(self, item: Any) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[Any]], bool], timeout: float = 5.0) -> list[Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.items), timeout):
                raise TimeoutError(f"collector condition not met; got {self.items!r}")
            return list(self.items)

    def wait_count(self, count: int, timeout: float = 5.0) -> list[Any]:
        return self.wait_for(lambda items: len(items) >= count, timeout)


@dataclass
class _Running:
    stream: Any
    path: str
    key_id: str
    thread: threading.Thread
    errors: list[BaseException] = field(default_factory=list)


class StreamRunner:
    """Runs alpaca-py stream clients in threads and stops them promptly."""

    def __init__(self, emu: AlpacaEmulator) -> None:
        self.emu = emu
        self._running: list[_Running] = []

    def start(self, stream: Any, path: str, key_id: str) -> threading.Thread:
        entry = _Running(stream, path, key_id, threading.Thread(daemon=True))

        def target() -> None:
            try:
                stream.run()
            except BaseException as exc:  # surfaced by stop_all
                entry.errors.append(exc)

        entry.thread = threading.Thread(target=target, name=f"alpaca-py {path}", daemon=True)
        entry.thread.start()
        self._running.append(entry)
        return entry.thread

    def wait_connected(self, key_id: str, path: str, count: int = 1, timeout: float = 5.0) -> None:
        self.emu.wait_until(
            lambda: self.emu.counters(key_id, path).connections_accepted >= count,
            timeout,
            message=f"{key_id} never authenticated on {path}",
        )

    def stop_all(self) -> None:
        for entry in self._running:
            if entry.thread.is_alive() and entry.stream._loop is not None:
                entry.stream.stop()
        for entry in self._running:
            if entry.thread.is_alive():
                self.emu.drop_connections(entry.path, key_id=entry.key_id)
        for entry in self._running:
            entry.thread.join(10)
        alive = [e.path for e in self._running if e.thread.is_alive()]
        errors = [e for entry in self._running for e in entry.errors]
        self._running.clear()
        assert not alive, f"alpaca-py clients did not stop: {alive}"
        assert not errors, f"alpaca-py run() raised: {errors!r}"
