"""Lifecycle: init/shutdown cycles leak nothing; shutdown works in every awkward moment.

* 200 acquire → subscribe → confirm → release cycles, sync and async, with the
  thread count, the open file descriptors and the traced memory compared before
  and after (growth under 1 MB);
* shutdown while messages flow, while reconnecting, while handlers are blocked,
  and from inside a handler (sync and async): it returns, the server gets a close
  frame, no thread is left behind and no handler runs afterwards;
* interpreter exit without any shutdown does not hang, and the ``atexit`` hook
  still sends the close frame (a subprocess proves it).
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc

import pytest
from _reliability_support import (
    FIGURES,
    IEX,
    KEY,
    MEMORY_GROWTH_LIMIT,
    NOTES,
    SECRET,
    await_for,
    open_fds,
    scaled,
    top_growth,
    traced_bytes,
    wait_for,
)

from alpaca_di.credentials import Credentials
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.hub import ConnectionRegistry
from alpaca_di.protocol import StreamKind
from alpaca_di.testing.messages import quote
from alpaca_di.transport import ConnectionOptions, ConnectionState
from alpaca_di.transport.runtime import Runtime

CYCLES = int(scaled(200))
WARMUP = 10
WAIT = 10.0
@pytest.fixture
def options() -> ConnectionOptions:
    return ConnectionOptions(backoff_initial=0.01, backoff_max=0.05, open_timeout=5.0)


def _quiet(emulator: AlpacaEmulator) -> None:
    """Wait until the emulator closed its side of every connection."""
    emulator.wait_until(
        lambda: (
            emulator.stats().open_connections == 0 and emulator.counters(KEY, IEX).slots_held == 0
        ),
        WAIT,
        message="every connection closed on the server side",
    )


# ----------------------------------------------------------------------------- cycles


def test_sync_init_shutdown_cycles_leak_no_thread_socket_or_memory(
    emulator: AlpacaEmulator, creds: Credentials, options: ConnectionOptions, tracing: None
) -> None:
    registry = ConnectionRegistry()
    url = emulator.data_url(IEX)

    def cycle(n: int) -> None:
        lease = registry.acquire(creds, StreamKind.STOCK, url, options)
        sub = lease.hub.subscribe(lambda message: None, quotes=["AAPL"], trades=[f"C{n % 7}"])
        sub.wait_confirmed(WAIT)
        lease.release()
        assert lease.hub.state is ConnectionState.CLOSED
        _quiet(emulator)

    for n in range(WARMUP):
        cycle(n)
    gc.collect()
    threads, fds = threading.active_count(), open_fds()
    before = tracemalloc.take_snapshot()
    started = time.monotonic()
    for n in range(CYCLES):
        cycle(n)
    elapsed = time.monotonic() - started
    gc.collect()
    after = tracemalloc.take_snapshot()
    growth = traced_bytes(after) - traced_bytes(before)
    # Worker threads end and sockets close a moment after the last release returned.
    wait_for(lambda: threading.active_count() == threads, WAIT, f"threads: {threading.enumerate()}")
    wait_for(lambda: open_fds() == fds, WAIT, "file descriptors back to the baseline")
    assert growth < MEMORY_GROWTH_LIMIT, f"{growth} bytes more:\n{top_growth(before, after)}"
    assert registry.hubs() == []
    assert not Runtime.shared().running
    counters = emulator.counters(KEY, IEX)
    assert counters.connections_accepted == WARMUP + CYCLES
    assert counters.close_frames_received == WARMUP + CYCLES
    assert counters.max_concurrent == 1
    FIGURES["lifecycle cycles (sync registry)"] += CYCLES
    NOTES["lifecycle sync memory growth bytes"] = growth
    NOTES["lifecycle sync ms per cycle"] = round(elapsed / CYCLES * 1000, 1)


def test_async_init_shutdown_cycles_leak_no_task_thread_socket_or_memory(
    emulator: AlpacaEmulator, creds: Credentials, options: ConnectionOptions, tracing: None
) -> None:
    registry = ConnectionRegistry()
    url = emulator.data_url(IEX)

    async def main() -> dict[str, int]:
        received = asyncio.Event()

        async def on_quote(message: object) -> None:
            received.set()

        async def cycle(n: int) -> None:
            lease = registry.acquire(creds, StreamKind.STOCK, url, options)
            assert lease.hub.loop is not asyncio.get_running_loop()  # on the runtime
            sub = lease.hub.subscribe(on_quote, quotes=["AAPL"], trades=[f"C{n % 7}"])
            await sub.confirmed(WAIT)
            await lease.arelease()
            assert lease.hub.state is ConnectionState.CLOSED
            await emulator.until(
                lambda: (
                    emulator.stats().open_connections == 0
                    and emulator.counters(KEY, IEX).slots_held == 0
                ),
                WAIT,
            )

        for n in range(WARMUP):
            await cycle(n)
        gc.collect()
        tasks, threads, fds = len(asyncio.all_tasks()), threading.active_count(), open_fds()
        before = tracemalloc.take_snapshot()
        for n in range(CYCLES):
            await cycle(n)
        gc.collect()
        after = tracemalloc.take_snapshot()
        growth = traced_bytes(after) - traced_bytes(before)
        await await_for(lambda: len(asyncio.all_tasks()) == tasks, WAIT, "tasks at the baseline")
        await await_for(
            lambda: threading.active_count() == threads, WAIT, "threads at the baseline"
        )
        await await_for(lambda: open_fds() == fds, WAIT, "file descriptors at the baseline")
        assert growth < MEMORY_GROWTH_LIMIT, f"{growth} bytes more:\n{top_growth(before, after)}"
        return {"growth": growth}

    result = asyncio.run(main())
    assert registry.hubs() == []
    counters = emulator.counters(KEY, IEX)
    assert counters.close_frames_received == WARMUP + CYCLES
    FIGURES["lifecycle cycles (async registry)"] += CYCLES
    NOTES["lifecycle async memory growth bytes"] = result["growth"]


# ----------------------------------------------------------------------------- awkward moments


class Calls:
    """A handler counting its calls; after ``closed`` is set it records late ones."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.count = 0
        self.closed = False
        self.late = 0

    def __call__(self, message: object) -> None:
        with self.cond:
            self.count += 1
            if self.closed:
                self.late += 1
            self.cond.notify_all()

    def wait_for(self, count: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.count >= count, WAIT), self.count

    def close(self) -> None:
        with self.cond:
            self.closed = True


def test_shutdown_while_messages_flow(
    registry: ConnectionRegistry, creds: Credentials, options: ConnectionOptions
) -> None:
    with AlpacaEmulator(rate=20_000, seed=2, batch_size=200) as emulator:
        threads = threading.active_count()
        lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX), options)
        handlers = [Calls() for _ in range(8)]
        for n, handler in enumerate(handlers):
            lease.hub.subscribe(handler, trades=["*"], quotes=["*"] if n % 2 else ["AAPL"])
        for handler in handlers:
            handler.wait_for(1000)
        started = time.perf_counter()
        lease.release()
        elapsed = time.perf_counter() - started
        for handler in handlers:
            handler.close()
        counters = emulator.counters(KEY, IEX)
        assert lease.hub.state is ConnectionState.CLOSED
        emulator.wait_until(lambda: emulator.counters(KEY, IEX).close_frames_received == 1, WAIT)
        assert emulator.counters(KEY, IEX).messages_sent >= counters.messages_sent
        wait_for(
            lambda: threading.active_count() == threads,
            WAIT,
            f"no thread left: {[t.name for t in threading.enumerate()]}",
        )
        # At most the one call each handler was already making.
        assert all(handler.late <= 1 for handler in handlers), [h.late for h in handlers]
        FIGURES["shutdowns: while messages flow"] += 1
        NOTES["shutdown while 20k msg/s flow ms"] = round(elapsed * 1000, 1)


def test_shutdown_while_reconnecting(
    registry: ConnectionRegistry, emulator: AlpacaEmulator, creds: Credentials
) -> None:
    options = ConnectionOptions(backoff_initial=0.05, backoff_max=0.2, open_timeout=5.0)
    threads = threading.active_count()
    lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX), options)
    hub = lease.hub
    sub = hub.subscribe(quotes=["AAPL"])
    sub.wait_confirmed(WAIT)
    changes: list[ConnectionState] = []
    seen = threading.Condition()

    def on_state(state: ConnectionState, previous: ConnectionState) -> None:
        with seen:
            changes.append(state)
            seen.notify_all()

    hub.add_state_listener(on_state)
    emulator.refuse_handshake(503, times=10**6, path=IEX)
    emulator.drop_connections(IEX, close_frame=False)
    with seen:
        assert seen.wait_for(lambda: changes.count(ConnectionState.RECONNECTING) >= 3, WAIT)
    lease.release()
    assert hub.state is ConnectionState.CLOSED
    assert sub.closed
    # The runtime loop is gone with the last hub: no attempt can follow.
    assert not Runtime.shared().running
    wait_for(lambda: threading.active_count() == threads, WAIT, "no thread left")
    FIGURES["shutdowns: while reconnecting"] += 1


def test_shutdown_while_handlers_are_blocked_does_not_wait_for_them(
    registry: ConnectionRegistry,
    emulator: AlpacaEmulator,
    creds: Credentials,
    options: ConnectionOptions,
) -> None:
    threads = threading.active_count()
    lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX), options)
    release_handlers = threading.Event()
    entered = threading.Semaphore(0)
    calls: list[int] = []
    blocked = 6

    def stuck(message: object) -> None:
        calls.append(1)
        entered.release()
        release_handlers.wait(60)

    subs = [lease.hub.subscribe(stuck, quotes=["AAPL"]) for _ in range(blocked)]
    for sub in subs:
        sub.wait_confirmed(WAIT)
    emulator.publish(IEX, [quote("AAPL", bid_size=n) for n in range(1, 4)])
    for _ in range(blocked):
        assert entered.acquire(timeout=WAIT)
    done = threading.Event()
    shutdown = threading.Thread(target=lambda: (lease.release(), done.set()), name="shutdown")
    shutdown.start()
    try:
        # Hang detector, not a timing assertion: the handlers stay blocked until
        # shutdown returned, so a shutdown that waits for them cannot return.
        assert done.wait(WAIT), "shutdown waited for blocked handlers"
        assert lease.hub.state is ConnectionState.CLOSED
        emulator.wait_until(lambda: emulator.counters(KEY, IEX).close_frames_received == 1, WAIT)
        count = len(calls)
    finally:
        release_handlers.set()
        shutdown.join(WAIT)
    # The blocked calls return; nothing queued after them is delivered.
    wait_for(lambda: threading.active_count() == threads, WAIT, "worker threads end")
    assert len(calls) == count == blocked
    FIGURES["shutdowns: with blocked handlers"] += 1


def test_shutdown_from_inside_a_sync_handler(
    registry: ConnectionRegistry,
    emulator: AlpacaEmulator,
    creds: Credentials,
    options: ConnectionOptions,
) -> None:
    threads = threading.active_count()
    lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX), options)
    returned = threading.Event()
    late: list[object] = []

    def handler(message: object) -> None:
        if returned.is_set():
            late.append(message)
            return
        lease.release()
        returned.set()

    sub = lease.hub.subscribe(handler, quotes=["AAPL"])
    sub.wait_confirmed(WAIT)
    emulator.publish(IEX, [quote("AAPL", bid_size=n) for n in range(1, 50)])
    assert returned.wait(WAIT)
    assert lease.hub.state is ConnectionState.CLOSED
    emulator.wait_until(lambda: emulator.counters(KEY, IEX).close_frames_received == 1, WAIT)
    wait_for(lambda: threading.active_count() == threads, WAIT, "no thread left")
    assert late == []
    FIGURES["shutdowns: from inside a handler"] += 1


@pytest.mark.parametrize("app", ["sync app (runtime loop)", "async app (its own loop)"])
def test_shutdown_from_inside_an_async_handler(
    registry: ConnectionRegistry,
    emulator: AlpacaEmulator,
    creds: Credentials,
    options: ConnectionOptions,
    app: str,
) -> None:
    threads = threading.active_count()
    url = emulator.data_url(IEX)

    if app.startswith("sync"):
        lease = registry.acquire(creds, StreamKind.STOCK, url, options)
        returned = threading.Event()
        late: list[object] = []

        async def handler(message: object) -> None:
            if returned.is_set():
                late.append(message)
                return
            lease.release()  # on the hub's own loop: schedules the close
            returned.set()

        sub = lease.hub.subscribe(handler, quotes=["AAPL"])
        sub.wait_confirmed(WAIT)
        emulator.publish(IEX, [quote("AAPL", bid_size=n) for n in range(1, 50)])
        assert returned.wait(WAIT)
    else:

        async def main() -> list[object]:
            lease = registry.acquire(creds, StreamKind.STOCK, url, options)
            done = asyncio.Event()
            late: list[object] = []

            async def handler(message: object) -> None:
                if done.is_set():
                    late.append(message)
                    return
                await lease.arelease()
                done.set()

            sub = lease.hub.subscribe(handler, quotes=["AAPL"])
            await sub.confirmed(WAIT)
            emulator.publish(IEX, [quote("AAPL", bid_size=n) for n in range(1, 50)])
            await asyncio.wait_for(done.wait(), WAIT)
            assert lease.hub.state is ConnectionState.CLOSED
            return late

        late = asyncio.run(main())
    emulator.wait_until(lambda: emulator.counters(KEY, IEX).close_frames_received == 1, WAIT)
    wait_for(lambda: threading.active_count() == threads, WAIT, "no thread left")
    assert registry.hubs() == []
    assert late == []
    FIGURES["shutdowns: from inside a handler"] += 1


# ----------------------------------------------------------------------------- interpreter exit

_SYNC_EXIT = """
import sys, threading
from alpaca_di.protocol import StreamKind
from alpaca_di import ConnectionRegistry
from alpaca_di.settings import Credentials

lease = ConnectionRegistry.default().acquire(
    Credentials({key!r}, {secret!r}), StreamKind.STOCK, sys.argv[1])
stuck = threading.Event()
sub = lease.hub.subscribe(lambda message: stuck.wait(), quotes=["AAPL"])   # blocks forever
sub.wait_confirmed(10)
print("subscribed", flush=True)
sys.stdin.readline()              # the test publishes a quote, then lets us exit
# no release, no shutdown: the interpreter exits with a live connection and a
# handler blocked forever
"""

_ASYNC_EXIT = """
import asyncio, sys
from alpaca_di.protocol import StreamKind
from alpaca_di import ConnectionRegistry
from alpaca_di.settings import Credentials

async def main():
    lease = ConnectionRegistry.default().acquire(
        Credentials({key!r}, {secret!r}), StreamKind.STOCK, sys.argv[1])
    async def on_quote(message):
        await asyncio.Event().wait()                              # blocks forever
    sub = lease.hub.subscribe(on_quote, quotes=["AAPL"])
    await sub.confirmed(10)
    print("subscribed", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    # returns without arelease(): asyncio.run() closes the loop under the hub

asyncio.run(main())
"""


@pytest.mark.parametrize("script", [_SYNC_EXIT, _ASYNC_EXIT], ids=["sync", "async"])
def test_interpreter_exit_without_shutdown_does_not_hang_and_sends_a_close_frame(
    emulator: AlpacaEmulator, script: str, guard
) -> None:
    code = textwrap.dedent(script).format(key=KEY, secret=SECRET)
    process = subprocess.Popen(
        [sys.executable, "-c", code, emulator.data_url(IEX)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdin is not None
        lines = []  # structlog prints to stdout too: read up to the marker
        while not lines or lines[-1] not in ("subscribed\n", ""):
            lines.append(process.stdout.readline())
        assert lines[-1] == "subscribed\n", "".join(lines)
        emulator.publish(IEX, [quote("AAPL", bid_size=1)])
        emulator.wait_until(lambda: emulator.counters(KEY, IEX).messages_sent >= 1, WAIT)
        process.stdin.write("exit\n")
        process.stdin.flush()
        out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"the interpreter did not exit:\n{err[-3000:]}") from None
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    guard.text("".join(lines) + out + err, "the output of the exiting interpreter")
    assert process.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "Warning" not in err, err[-3000:]
    emulator.wait_until(
        lambda: emulator.counters(KEY, IEX).open == 0, WAIT, message="connection gone"
    )
    counters = emulator.counters(KEY, IEX)
    assert counters.close_frames_received == 1, "no close frame: Alpaca would hold the slot"
    assert counters.slots_held == 0
    FIGURES["interpreter exits without shutdown"] += 1
