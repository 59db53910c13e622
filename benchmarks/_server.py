"""The emulator in a process of its own, driven over a pipe.

The machine has few cores, and the emulator and a client in one process would
share one GIL: the client would be measured while it competes with the server.
So the :class:`~alpaca_di.emulator.AlpacaEmulator` runs in a child
process (``multiprocessing`` spawn context, its own interpreter and core) and the
benchmark process talks to it through a small command protocol::

    with EmulatorProcess() as emu:
        url = emu.data_url("/v2/iex")
        ...                                    # connect a client as key "PKA"
        emu.wait_quotes("PKA", "/v2/iex", {"*"})
        emu.burst("PKA", "/v2/iex", 200_000)   # pre-encoded frames, as fast as TCP takes them
        emu.pace("PKA", "/v2/iex", rate=5_000, seconds=2.0)   # send time embedded in "t"

Data messages are stock quotes. In :meth:`EmulatorProcess.burst` the frames are
encoded before the first one is sent (and cached between runs), so the child
only copies bytes into the socket while the client is being timed. In
:meth:`EmulatorProcess.pace` every frame is encoded just before it is sent and
its quotes carry ``time.time_ns()`` of that moment as their ``t`` timestamp,
which the client compares with its own clock (same host, same ``CLOCK_REALTIME``).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Iterable
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["SYMBOLS", "EmulatorProcess", "quote_frames"]

_SYMBOL_TEXT = (
    "AAPL MSFT SPY TSLA NVDA AMZN GOOG META NFLX AMD INTC ORCL IBM QQQ IWM DIA JPM BAC WFC GS "
    "MS C V MA PYPL SQ SHOP UBER LYFT ABNB KO PEP MCD SBUX NKE DIS WMT TGT COST HD LOW XOM CVX "
    "COP BA CAT DE GE F GM"
)
SYMBOLS: tuple[str, ...] = tuple(_SYMBOL_TEXT.split())
"""The 50 symbols the benchmark quotes cycle through."""


def _quote(symbol: str, stamp: Any, bid: float) -> dict[str, Any]:
    return {
        "T": "q",
        "S": symbol,
        "bx": "V",
        "bp": bid,
        "bs": 3,
        "ax": "V",
        "ap": round(bid + 0.01, 2),
        "as": 2,
        "c": ["R"],
        "z": "C",
        "t": stamp,
    }


def quote_frames(
    count: int, batch: int, symbols: tuple[str, ...] = SYMBOLS, stamp_ns: int | None = None
) -> list[bytes]:
    """Encode ``count`` quotes cycling over ``symbols`` as msgpack frames of ``batch``.

    Example::

        frames = quote_frames(1000, 100)     # 10 frames of 100 quotes
    """
    import msgpack

    stamp = msgpack.Timestamp.from_unix_nano(stamp_ns or time.time_ns())
    frames: list[bytes] = []
    nsym = len(symbols)
    for start in range(0, count, batch):
        size = min(batch, count - start)
        points = [
            _quote(symbols[(start + i) % nsym], stamp, 100.0 + ((start + i) % 97) / 100)
            for i in range(size)
        ]
        frames.append(msgpack.packb(points))
    return frames


# ---------------------------------------------------------------------------- child side


def _quiet_logging() -> None:
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    logging.getLogger().setLevel(logging.ERROR)


class _Driver:
    """Runs on the child's event loop; one method per command."""

    def __init__(self, emu: Any) -> None:
        self.emu = emu
        self.cache: dict[tuple[Any, ...], list[bytes]] = {}

    def _frames(self, count: int, batch: int, symbols: tuple[str, ...]) -> list[bytes]:
        cache_key = (count, batch, symbols)
        frames = self.cache.get(cache_key)
        if frames is None:
            frames = self.cache[cache_key] = quote_frames(count, batch, symbols)
        return frames

    async def prepare(self, count: int, batch: int, symbols: tuple[str, ...]) -> int:
        """Encode (and cache) the frames of a later :meth:`burst`."""
        return len(self._frames(count, batch, symbols))

    async def burst(
        self, key: str, path: str, count: int, batch: int, symbols: tuple[str, ...]
    ) -> int:
        frames = self._frames(count, batch, symbols)
        sent = 0
        for frame in frames:
            sent = self.emu.send_raw(path, frame, key_id=key)
        return sent * len(frames)

    async def pace(
        self,
        key: str,
        path: str,
        rate: float,
        seconds: float,
        tick: float,
        symbols: tuple[str, ...],
    ) -> int:
        import msgpack

        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        nsym = len(symbols)
        while True:
            elapsed = loop.time() - start
            if elapsed >= seconds:
                break
            due = int(elapsed * rate) + 1 - sent
            if due > 0:
                stamp = msgpack.Timestamp.from_unix_nano(time.time_ns())
                points = [
                    _quote(symbols[(sent + i) % nsym], stamp, 100.0 + (sent + i) % 97 / 100)
                    for i in range(due)
                ]
                self.emu.send_raw(path, msgpack.packb(points), key_id=key)
                sent += due
            await asyncio.sleep(tick)
        return sent

    async def big_frame(
        self, key: str, big_path: str, probe_path: str, count: int, rate: float, seconds: float
    ) -> int:
        """One frame of ``count`` quotes on ``big_path``, then stamped probes on ``probe_path``."""
        [frame] = self._frames(count, count, tuple(f"BIG{n}" for n in range(50)))
        self.emu.send_raw(big_path, frame, key_id=key)
        return await self.pace(key, probe_path, rate, seconds, 0.005, ("PROBE",))

    async def counters(self, key: str, path: str) -> dict[str, Any]:
        snap = self.emu.counters(key, path)
        fields = (
            "connections_accepted",
            "open",
            "auth_attempts",
            "subscribe_messages",
            "unsubscribe_messages",
            "subscribe_bytes",
            "messages_sent",
            "frames_sent",
            "close_frames_received",
            "slots_held",
        )
        result = {name: getattr(snap, name) for name in fields}
        result["rejections"] = dict(snap.rejections)
        return result

    async def wait_quotes(
        self, key: str, path: str, expected: frozenset[str] | int, timeout: float
    ) -> float:
        """Wait until the key's quotes subscription is ``expected`` (a set, or a size)."""
        emu = self.emu

        def done() -> bool:
            quotes = emu.subscriptions(key, path).get("quotes", frozenset())
            if isinstance(expected, int):
                return len(quotes) == expected
            return quotes == expected

        await emu.until(done, timeout, message=f"quotes of {key} never became {expected!r}")
        return time.perf_counter()

    async def wait_open(self, key: str, path: str, count: int, timeout: float) -> float:
        emu = self.emu
        await emu.until(
            lambda: emu.counters(key, path).open == count,
            timeout,
            message=f"{key} never had {count} open session(s) on {path}",
        )
        return time.perf_counter()

    async def set_rate(self, rate: float) -> None:
        self.emu.rate = rate

    async def wake(self, path: str, key: str | None) -> int:
        """Send an empty data frame: an idle alpaca-py reader then sees its stop request."""
        return int(self.emu.send_raw(path, b"\x90", key_id=key))

    async def drop(self, path: str, key: str) -> int:
        """Abort the key's sessions (no close frame): teardown of a client that will not stop."""
        return int(self.emu.drop_connections(path, key_id=key, close_frame=False))

    async def cpu(self) -> float:
        return time.process_time()


async def _serve_async(conn: Connection, config: dict[str, Any]) -> None:
    from alpaca_di.emulator import AlpacaEmulator

    loop = asyncio.get_running_loop()
    async with AlpacaEmulator(**config) as emu:
        driver = _Driver(emu)
        stopped = asyncio.Event()

        def reader() -> None:
            while True:
                try:
                    name, args = conn.recv()
                except (EOFError, OSError):
                    loop.call_soon_threadsafe(stopped.set)
                    return
                if name == "stop":
                    loop.call_soon_threadsafe(stopped.set)
                    conn.send(("ok", None))
                    return
                future = asyncio.run_coroutine_threadsafe(getattr(driver, name)(*args), loop)
                try:
                    conn.send(("ok", future.result()))
                except Exception as exc:
                    conn.send(("error", f"{type(exc).__name__}: {exc}"))

        conn.send(("ready", (emu.ws_url, emu.api_url, os.getpid())))
        threading.Thread(target=reader, name="bench-emulator-commands", daemon=True).start()
        await stopped.wait()


def _serve(conn: Connection, config: dict[str, Any]) -> None:
    _quiet_logging()
    asyncio.run(_serve_async(conn, config))


# ---------------------------------------------------------------------------- parent side


class EmulatorProcess:
    """An :class:`~alpaca_di.emulator.AlpacaEmulator` in a child process.

    Args:
        batch_size: the emulator's most data points per frame (Alpaca's are ~100).
        connection_limit: sessions per key and path (benchmarks use a key per client).
        rate: synthetic data rate (0: only the benchmark's own frames).

    Permessage-deflate is off, so neither client pays for compression (alpaca-py
    would negotiate it with the real server; alpaca-di never offers it).
    """

    def __init__(self, *, batch_size: int = 100, connection_limit: int = 100, rate: float = 0):
        self.config = {
            "batch_size": batch_size,
            "connection_limit": connection_limit,
            "rate": rate,
            "compression": False,
            "auth_timeout": 60.0,
        }
        self.batch_size = batch_size
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._lock = threading.Lock()
        self.ws_url = ""
        self.api_url = ""
        self.pid = 0

    def start(self) -> EmulatorProcess:
        """Spawn the child and wait until it serves."""
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        process = ctx.Process(
            target=_serve, args=(child, self.config), name="bench-emulator", daemon=True
        )
        process.start()
        child.close()
        if not parent.poll(60):
            process.kill()
            raise RuntimeError("the emulator process did not start within 60 s")
        status, payload = parent.recv()
        if status != "ready":
            raise RuntimeError(f"the emulator process failed: {payload}")
        self.ws_url, self.api_url, self.pid = payload
        self._conn, self._process = parent, process
        return self

    def stop(self) -> None:
        """Stop the child (idempotent)."""
        conn, process = self._conn, self._process
        self._conn = self._process = None
        if conn is not None:
            try:
                conn.send(("stop", ()))
                conn.poll(5)
            except OSError:
                pass
            conn.close()
        if process is not None:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, name: str, *args: Any, timeout: float = 120.0) -> Any:
        """Run one driver command in the child and return its result."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise RuntimeError("the emulator process is not running")
            conn.send((name, args))
            if not conn.poll(timeout):
                raise TimeoutError(f"emulator command {name} took more than {timeout} s")
            status, payload = conn.recv()
        if status != "ok":
            raise RuntimeError(f"emulator command {name} failed: {payload}")
        return payload

    def big_frame(
        self, key: str, big_path: str, probe_path: str, count: int, *, rate: float, seconds: float
    ) -> int:
        """Send one frame of ``count`` quotes, then paced, stamped probes on another path."""
        return int(
            self.call(
                "big_frame", key, big_path, probe_path, count, rate, seconds, timeout=seconds + 120
            )
        )

    def data_url(self, path: str = "/v2/iex") -> str:
        """``ws://127.0.0.1:PORT`` + ``path``."""
        return self.ws_url + path

    def burst(self, key: str, path: str, count: int, *, symbols: Iterable[str] = SYMBOLS) -> int:
        """Send ``count`` pre-encoded quotes to ``key``'s sessions; returns frames x sessions."""
        return int(self.call("burst", key, path, count, self.batch_size, tuple(symbols)))

    def prepare(self, count: int, *, symbols: Iterable[str] = SYMBOLS) -> None:
        """Encode the frames of a later :meth:`burst` now, outside any timed section."""
        self.call("prepare", count, self.batch_size, tuple(symbols))

    def pace(
        self,
        key: str,
        path: str,
        *,
        rate: float,
        seconds: float,
        tick: float = 0.005,
        symbols: Iterable[str] = SYMBOLS,
    ) -> int:
        """Send quotes at ``rate`` per second for ``seconds``, stamped with their send time."""
        return int(
            self.call("pace", key, path, rate, seconds, tick, tuple(symbols), timeout=seconds + 60)
        )

    def counters(self, key: str, path: str = "/v2/iex") -> dict[str, Any]:
        """The emulator's counters of (key, path) as a dict."""
        result: dict[str, Any] = self.call("counters", key, path)
        return result

    def wait_quotes(
        self, key: str, path: str, expected: Iterable[str] | int, timeout: float = 30.0
    ) -> float:
        """Block until the server-side quotes subscription of ``key`` is ``expected``.

        Returns the child's ``perf_counter`` at that moment (not comparable to ours).
        """
        want: frozenset[str] | int = expected if isinstance(expected, int) else frozenset(expected)
        return float(self.call("wait_quotes", key, path, want, timeout, timeout=timeout + 5))

    def wait_open(self, key: str, path: str, count: int, timeout: float = 30.0) -> None:
        """Block until ``key`` has ``count`` authenticated sessions open on ``path``."""
        self.call("wait_open", key, path, count, timeout, timeout=timeout + 5)

    def set_rate(self, rate: float) -> None:
        """Set the synthetic data rate (points per second per connection)."""
        self.call("set_rate", rate)

    def wake(self, path: str = "/v2/iex", key: str | None = None) -> int:
        """Send an empty frame to the sessions of ``path`` (teardown helper, never timed)."""
        return int(self.call("wake", path, key))

    def drop(self, path: str, key: str) -> int:
        """Abort ``key``'s sessions on ``path`` (teardown helper, never timed)."""
        return int(self.call("drop", path, key))

    def cpu(self) -> float:
        """The child's CPU time so far, in seconds."""
        return float(self.call("cpu"))
