"""Async handlers on one loop share a few drain tasks (hub/delivery.py AsyncDrains).

A real hub that is never started: items are pushed into the inboxes the way its
reader pushes them, on the loop that runs the handlers.
"""

import asyncio
import sys

import pytest

from alpaca_di.credentials import Credentials
from alpaca_di.errors import ConnectionClosedError
from alpaca_di.hub import StreamHub
from alpaca_di.hub.delivery import AsyncDrains
from alpaca_di.protocol import StreamKind
from alpaca_di.transport import ConnectionOptions

WAIT = 5.0


def new_hub(loop: asyncio.AbstractEventLoop) -> StreamHub:
    return StreamHub(
        kind=StreamKind.STOCK,
        endpoint="ws://127.0.0.1:9/v2/iex",
        credentials=Credentials("PKUNIT0001", "unit-secret"),
        options=ConnectionOptions(),
        loop=loop,
    )


def frame(start: int, count: int = 10) -> list[tuple[str, str, int]]:
    return [("quotes", "AAPL", n) for n in range(start, start + count)]


async def until(condition, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0)


class Recorder:
    """An async handler that records what it got and notices re-entry."""

    def __init__(self, pause: bool = False) -> None:
        self.seen: list[int] = []
        self.inside = False
        self.reentered = False
        self.pause = pause

    async def __call__(self, message: int) -> None:
        if self.inside:
            self.reentered = True
        self.inside = True
        try:
            if self.pause:
                await asyncio.sleep(0)  # suspends: other consumers run meanwhile
            self.seen.append(message)
        finally:
            self.inside = False


async def each_got_in_order(recorders: list[Recorder], count: int) -> None:
    """Wait until every recorder saw ``count`` messages; each in order, never re-entered."""
    await until(lambda: all(len(r.seen) == count for r in recorders), "every message")
    for recorder in recorders:
        assert recorder.seen == list(range(count))
        assert not recorder.reentered


def test_a_handler_suspended_forever_delays_no_other_consumer_on_its_loop():
    async def main() -> None:
        hub = new_hub(asyncio.get_running_loop())
        never = asyncio.Event()
        stuck_calls = 0

        async def stuck(message: int) -> None:
            nonlocal stuck_calls
            stuck_calls += 1
            await never.wait()

        first, last = Recorder(), Recorder()
        subs = [
            hub.subscribe(first, quotes=["AAPL"], maxsize=None),
            hub.subscribe(stuck, quotes=["AAPL"], maxsize=None),
            hub.subscribe(last, quotes=["AAPL"], maxsize=None),
        ]
        for n in range(0, 50, 10):
            for sub in subs:
                sub._inbox.push(frame(n))
            await until(lambda n=n: len(last.seen) == n + 10, f"message {n + 9}")
        assert first.seen == last.seen == list(range(50))
        assert stuck_calls == 1  # it never returned, and was never entered twice
        for sub in subs:
            sub.close()
        never.set()

    asyncio.run(main())


def test_handlers_that_suspend_keep_their_order_and_never_run_concurrently_with_themselves():
    async def main() -> None:
        hub = new_hub(asyncio.get_running_loop())
        recorders = [Recorder(pause=True) for _ in range(5)]
        subs = [hub.subscribe(r, quotes=["AAPL"], maxsize=None) for r in recorders]
        for n in range(0, 200, 10):
            for sub in subs:
                sub._inbox.push(frame(n))
            if n % 50 == 0:
                await asyncio.sleep(0)  # let some frames land mid-delivery
        await each_got_in_order(recorders, 200)
        for sub in subs:
            sub.close()

    asyncio.run(main())


def test_a_hundred_consumers_share_a_bounded_number_of_drain_tasks():
    async def main() -> None:
        loop = asyncio.get_running_loop()
        hub = new_hub(loop)
        recorders = [Recorder() for _ in range(100)]
        subs = [hub.subscribe(r, quotes=["AAPL"], maxsize=None) for r in recorders]
        most = 0
        for n in range(0, 100, 10):
            for sub in subs:
                sub._inbox.push(frame(n))
            await until(lambda n=n: all(len(r.seen) == n + 10 for r in recorders), "a frame")
            most = max(most, AsyncDrains.of(loop).tasks)
        assert most <= 3, most
        for sub in subs:
            sub.close()

    asyncio.run(main())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is Python 3.11+")
def test_asyncio_timeout_inside_a_handler_times_out_that_handler_only():
    async def main() -> None:
        hub = new_hub(asyncio.get_running_loop())
        never = asyncio.Event()
        timed_out: list[int] = []

        async def impatient(message: int) -> None:
            try:
                async with asyncio.timeout(0.01):
                    await never.wait()
            except TimeoutError:
                timed_out.append(message)

        other = Recorder()
        subs = [
            hub.subscribe(impatient, quotes=["AAPL"], maxsize=None),
            hub.subscribe(other, quotes=["AAPL"], maxsize=None),
        ]
        for sub in subs:
            sub._inbox.push(frame(0, 3))
        await until(lambda: len(timed_out) == 3, "three timeouts")
        await until(lambda: len(other.seen) == 3, "the other consumer")
        assert timed_out == [0, 1, 2]
        assert subs[0].stats.errors == 0
        for sub in subs:
            sub.close()

    asyncio.run(main())


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="Task.cancelling() is Python 3.11+: there it ends the drain"
)
def test_a_handlers_own_cancelled_error_is_counted_and_delivery_goes_on():
    async def main() -> None:
        loop = asyncio.get_running_loop()
        hub = new_hub(loop)
        got: list[int] = []

        async def awaits_a_cancelled_future(message: int) -> None:
            got.append(message)
            if message == 1:
                future = loop.create_future()
                future.cancel()
                await future  # raises CancelledError: the handler's, not the drain's

        sub = hub.subscribe(awaits_a_cancelled_future, quotes=["AAPL"], maxsize=None)
        sub._inbox.push(frame(0, 3))
        await until(lambda: len(got) == 3, "every message")
        sub._inbox.push(frame(3, 2))
        await until(lambda: len(got) == 5, "the next frame")
        assert got == [0, 1, 2, 3, 4]
        assert sub.stats.errors == 1
        sub.close()

    asyncio.run(main())


def test_each_loop_has_its_own_drains_and_a_closed_loop_refuses_subscriptions():
    loops = [asyncio.new_event_loop() for _ in range(2)]
    try:
        assert AsyncDrains.of(loops[0]) is AsyncDrains.of(loops[0])
        assert AsyncDrains.of(loops[0]) is not AsyncDrains.of(loops[1])
    finally:
        for loop in loops:
            loop.close()
    hub = new_hub(loops[0])

    async def handler(message: int) -> None:
        return None

    with pytest.raises(ConnectionClosedError, match="event loop is closed"):
        hub.subscribe(handler, quotes=["AAPL"])


def test_pushes_from_another_thread_reach_every_consumer_of_an_app_loop():
    """The runtime thread's pushes for many consumers hop to the app's loop together."""
    import threading

    async def main() -> None:
        loop = asyncio.get_running_loop()
        hub = new_hub(loop)
        recorders = [Recorder(pause=n % 2 == 0) for n in range(20)]
        subs = [hub.subscribe(r, quotes=["AAPL"], maxsize=None) for r in recorders]

        def reader() -> None:
            for n in range(0, 500, 10):
                for sub in subs:
                    sub._inbox.push(frame(n))

        thread = threading.Thread(target=reader)
        thread.start()
        await each_got_in_order(recorders, 500)
        thread.join(WAIT)
        for sub in subs:
            sub.close()

    asyncio.run(main())


def test_a_push_after_the_consumer_loop_closed_closes_the_subscription():
    loop = asyncio.new_event_loop()
    hub = new_hub(loop)

    async def subscribe():
        async def handler(message: int) -> None:
            return None

        return hub.subscribe(handler, quotes=["AAPL"], maxsize=None)

    sub = loop.run_until_complete(subscribe())
    loop.close()
    sub._inbox.push(frame(0))  # from this thread: the hop to the closed loop fails
    assert sub.closed


def test_loops_that_delivered_are_not_kept_alive_by_their_drains():
    """pytest-asyncio runs each test on its own loop: none may outlive its test."""
    import gc
    import weakref

    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def main() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        hub = new_hub(asyncio.get_running_loop())
        recorder = Recorder(pause=True)
        sub = hub.subscribe(recorder, quotes=["AAPL"], maxsize=None)
        sub._inbox.push(frame(0))
        await until(lambda: len(recorder.seen) == 10, "a frame")
        sub.close()
        hub.start_close()

    for _ in range(10):
        asyncio.run(main())
    gc.collect()
    assert [ref for ref in loops if ref() is not None] == []
