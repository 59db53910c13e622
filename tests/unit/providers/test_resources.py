"""StreamResource: thread-safe first use, sync/async lifecycle, failing shutdowns."""

from __future__ import annotations

import asyncio
import copy
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import structlog
from dependency_injector import containers, providers, resources
from dependency_injector.wiring import Closing, Provide, inject

from alpaca_di.credentials import Credentials
from alpaca_di.providers.resources import StreamResource

DEADLINE = 10.0
SECRET = "never-print-this-secret-42"


class Handle:
    """What the test initializers yield: records whether it was closed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False


class Journal:
    """Opened/closed handles, in order."""

    def __init__(self) -> None:
        self.opened: list[Handle] = []
        self.closed: list[str] = []

    def init(self, name: str, *, fail_close: bool = False, **_deps: Any) -> Iterator[Handle]:
        handle = Handle(name)
        self.opened.append(handle)
        try:
            yield handle
        finally:
            handle.closed = True
            self.closed.append(name)
            if fail_close:
                raise RuntimeError(f"cleanup of {name} failed")


# -- first use from many threads ----------------------------------------------------------


def _race(provider: providers.Provider[Any], threads: int) -> list[Any]:
    """Resolve ``provider`` from ``threads`` threads released together."""
    barrier = threading.Barrier(threads, timeout=DEADLINE)
    results: list[Any] = [None] * threads
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            barrier.wait()
            results[index] = provider()
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(DEADLINE)
    assert not any(thread.is_alive() for thread in pool)
    assert not errors, errors
    return results


def test_plain_resource_races_on_first_use() -> None:
    """The dependency-injector gap StreamResource exists for (deterministic)."""
    inside = 0
    cond = threading.Condition()
    inits: list[object] = []

    def init() -> Iterator[object]:
        nonlocal inside
        with cond:
            inside += 1
            cond.notify_all()
            # Hold the first initialisation open until a second thread is inside too.
            cond.wait_for(lambda: inside >= 2, timeout=DEADLINE)
        obj = object()
        inits.append(obj)
        yield obj

    resource = providers.Resource(init)
    _race(resource, 2)
    assert len(inits) == 2  # two initialisations, one of them leaked
    resource.shutdown()


def test_twenty_threads_first_use_initialise_once() -> None:
    journal = Journal()
    attempts = 0
    cond = threading.Condition()
    threads = 20

    def init() -> Iterator[Handle]:
        # Stay inside the initializer until every thread has asked for the resource.
        with cond:
            cond.wait_for(lambda: attempts >= threads, timeout=DEADLINE)
        yield from journal.init("shared")

    class Counting(StreamResource[Handle]):
        def _provide(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            nonlocal attempts
            with cond:
                attempts += 1
                cond.notify_all()
            return super()._provide(args, kwargs)

    resource = Counting(init)
    results = _race(resource, threads)
    assert attempts == threads
    assert len(journal.opened) == 1
    assert all(result is journal.opened[0] for result in results)
    resource.shutdown()
    assert journal.closed == ["shared"]


def test_container_copies_have_their_own_lock_and_state() -> None:
    journal = Journal()

    class App(containers.DeclarativeContainer):
        stream = StreamResource(journal.init, "s")

    first, second = App(), App()
    assert first.stream is not second.stream
    assert first.stream._guard is not second.stream._guard
    assert first.stream._guard is not App.stream._guard
    a = _race(first.stream, 8)
    b = _race(second.stream, 8)
    assert len({id(x) for x in a}) == len({id(x) for x in b}) == 1
    assert a[0] is not b[0]
    assert len(journal.opened) == 2
    assert not App.stream.initialized
    first.shutdown_resources()
    second.shutdown_resources()
    assert sorted(journal.closed) == ["s", "s"]


def test_deepcopy_and_shallow_copy() -> None:
    journal = Journal()
    original = StreamResource(journal.init, "s")
    deep = copy.deepcopy(original)
    assert type(deep) is StreamResource
    assert deep.args == ("s",)
    assert deep._guard is not original._guard
    shallow = copy.copy(original)
    assert shallow._guard is not original._guard  # recreated lazily, never shared
    assert deep() is not original()
    original.shutdown()
    deep.shutdown()


# -- sync and async lifecycle --------------------------------------------------------------


def _app(journal: Journal, *, fail: str = "") -> containers.DeclarativeContainer:
    """Three StreamResources in a chain: shutdown order is c, b, a (b in the middle)."""

    class App(containers.DeclarativeContainer):
        a = StreamResource(journal.init, "a", fail_close=fail == "a")
        b = StreamResource(journal.init, "b", fail_close=fail == "b", dep=a)
        c = StreamResource(journal.init, "c", fail_close=fail == "c", dep=b)
        uses_c = providers.Factory(lambda handle: ("service", handle), c)

    return App()


def test_sync_lifecycle() -> None:
    journal = Journal()
    app: Any = _app(journal)
    assert app.init_resources() is None
    assert sorted(h.name for h in journal.opened) == ["a", "b", "c"]
    handle = app.c()
    assert app.c() is handle
    assert app.uses_c() == ("service", handle)
    assert app.shutdown_resources() is None
    assert journal.closed == ["c", "b", "a"]
    assert all(h.closed for h in journal.opened)
    fresh = app.c()  # resolving again re-initialises
    assert fresh is not handle
    assert not fresh.closed
    app.shutdown_resources()


def test_init_returns_resource_outside_a_loop() -> None:
    journal = Journal()
    resource = StreamResource(journal.init, "s")
    handle = resource.init()
    assert isinstance(handle, Handle)
    assert resource() is handle
    assert resource.shutdown() is None
    assert resource.shutdown() is None  # twice is harmless


async def test_async_lifecycle() -> None:
    journal = Journal()
    app: Any = _app(journal)
    await app.init_resources()
    handle = app.c()  # resolving stays synchronous inside the loop
    assert isinstance(handle, Handle)
    assert app.uses_c() == ("service", handle)
    await app.shutdown_resources()
    assert journal.closed == ["c", "b", "a"]
    fresh = app.c()  # re-initialises c and, through its injections, b and a
    assert fresh is not handle
    await app.shutdown_resources()
    assert journal.closed == ["c", "b", "a", "c", "b", "a"]


async def test_init_and_shutdown_return_completed_futures_inside_a_loop() -> None:
    journal = Journal()
    resource = StreamResource(journal.init, "s")
    future = resource.init()
    assert isinstance(future, asyncio.Future)
    assert future.done()
    handle = await future
    assert isinstance(handle, Handle)
    assert resource() is handle
    done = resource.shutdown()
    assert isinstance(done, asyncio.Future)
    assert done.done()
    await done
    assert handle.closed


def test_asyncio_run_and_sync_use_of_one_container() -> None:
    journal = Journal()
    app: Any = _app(journal)

    async def main() -> Handle:
        await app.init_resources()
        handle: Handle = app.a()
        await app.shutdown_resources()
        return handle

    first = asyncio.run(main())
    assert first.closed
    second = app.a()  # same container, now from sync code
    assert second is not first
    app.shutdown_resources()
    assert second.closed


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_initializer_error_is_raised_at_the_call(mode: str) -> None:
    def init() -> Iterator[object]:
        raise OSError("cannot open")
        yield  # pragma: no cover

    class App(containers.DeclarativeContainer):
        stream = StreamResource(init)

    app: Any = App()
    if mode == "sync":
        with pytest.raises(OSError, match="cannot open"):
            app.init_resources()
    else:

        async def main() -> None:
            await app.init_resources()

        with pytest.raises(OSError, match="cannot open"):
            asyncio.run(main())
    assert not app.stream.initialized


# -- a failing shutdown never stops the others --------------------------------------------


def test_plain_resource_shutdown_stops_at_first_failure() -> None:
    """The dependency-injector gap: one failing cleanup leaves the rest open."""
    journal = Journal()

    class App(containers.DeclarativeContainer):
        a = providers.Resource(journal.init, "a")
        b = providers.Resource(journal.init, "b", fail_close=True, dep=a)

    app = App()
    app.init_resources()
    with pytest.raises(RuntimeError):
        app.shutdown_resources()
    assert journal.closed == ["b"]
    app.shutdown_resources()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_failing_shutdown_is_logged_and_others_still_close(mode: str) -> None:
    journal = Journal()
    app: Any = _app(journal, fail="b")
    credentials = Credentials("PKTEST1234ABCD", SECRET)
    with structlog.testing.capture_logs() as logs:
        if mode == "sync":
            app.init_resources()
            app.shutdown_resources()
        else:

            async def main() -> None:
                await app.init_resources()
                await app.shutdown_resources()

            asyncio.run(main())
    assert journal.closed == ["c", "b", "a"]
    assert not any(r.initialized for r in (app.a, app.b, app.c))
    error = app.b.last_shutdown_error
    assert isinstance(error, RuntimeError)
    assert "cleanup of b failed" in str(error)
    assert app.a.last_shutdown_error is None
    assert app.c.last_shutdown_error is None
    failures = [e for e in logs if e["event"] == "stream_resource.shutdown_failed"]
    assert len(failures) == 1
    assert failures[0]["log_level"] == "error"
    assert failures[0]["exc_info"] is True  # structlog renders the traceback
    assert failures[0]["resource"] == "StreamResource(Journal.init)"
    assert failures[0]["error_type"] == "RuntimeError"
    assert SECRET not in repr(logs)
    assert SECRET not in repr(credentials)


def test_last_shutdown_error_is_cleared_by_a_clean_shutdown() -> None:
    failures = [True]

    def init() -> Iterator[object]:
        try:
            yield object()
        finally:
            if failures and failures.pop():
                raise ValueError("first close fails")

    resource = StreamResource(init)
    assert resource.last_shutdown_error is None
    resource()
    with structlog.testing.capture_logs():
        assert resource.shutdown() is None
    assert isinstance(resource.last_shutdown_error, ValueError)
    resource()
    resource.shutdown()
    assert resource.last_shutdown_error is None


# -- filtering, nesting, wiring -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_resource_type_filtering(mode: str) -> None:
    journal = Journal()

    class App(containers.DeclarativeContainer):
        stream = StreamResource(journal.init, "stream")
        other = providers.Resource(journal.init, "other")

    app = App()

    async def run(call: Any) -> None:
        result = call()
        if result is not None:
            await result

    def do(call: Any) -> None:
        if mode == "sync":
            assert call() is None
        else:
            asyncio.run(run(call))

    do(lambda: app.init_resources(StreamResource))
    assert app.stream.initialized
    assert not app.other.initialized
    app.other.init()
    do(lambda: app.shutdown_resources(StreamResource))
    assert not app.stream.initialized
    assert app.other.initialized
    assert journal.closed == ["stream"]
    do(app.shutdown_resources)
    assert journal.closed == ["stream", "other"]


async def test_nested_container_and_factory() -> None:
    journal = Journal()

    class Streams(containers.DeclarativeContainer):
        stock = StreamResource(journal.init, "stock")
        crypto = StreamResource(journal.init, "crypto")

    class Host(containers.DeclarativeContainer):
        streams = providers.Container(Streams)
        service = providers.Factory(lambda s, c: (s, c), streams.stock, streams.crypto)

    host: Any = Host()
    await host.init_resources()
    assert sorted(h.name for h in journal.opened) == ["crypto", "stock"]
    stock, crypto = host.service()
    assert stock is host.streams.stock()
    assert crypto is host.streams.crypto()
    await host.shutdown_resources()
    assert sorted(journal.closed) == ["crypto", "stock"]

    host.init_resources()  # and the same from sync code, on another thread
    await asyncio.to_thread(host.shutdown_resources)
    assert sorted(journal.closed) == ["crypto", "crypto", "stock", "stock"]


class _Wired(containers.DeclarativeContainer):
    stream = StreamResource(Journal().init, "wired")


@inject
async def _async_consumer(stream: Handle = Provide[_Wired.stream]) -> Handle:
    return stream


@inject
def _closing_consumer(stream: Handle = Closing[Provide[_Wired.stream]]) -> Handle:
    return stream


async def test_inject_into_async_function_stays_synchronous() -> None:
    container: Any = _Wired()
    container.wire(modules=[sys.modules[__name__]])
    try:
        handle = await _async_consumer()
        assert isinstance(handle, Handle)
        assert handle is container.stream()
        await container.shutdown_resources()
        assert handle.closed
        closed = await asyncio.to_thread(_closing_consumer)
        assert closed.closed
        assert not container.stream.initialized
    finally:
        container.unwire()


def test_overridden_provider() -> None:
    journal = Journal()
    resource = StreamResource(journal.init, "real")
    fake = Handle("fake")
    with resource.override(providers.Object(fake)):
        assert resource() is fake
        assert resource.init() is fake
        assert resource.shutdown() is None
    assert journal.opened == []


# -- refusals ---------------------------------------------------------------------------


async def _async_gen() -> AsyncIterator[object]:
    yield object()


async def _coroutine() -> object:
    return object()


class _AsyncRes(resources.AsyncResource[object]):
    async def init(self) -> object:
        return object()


@pytest.mark.parametrize("initializer", [_async_gen, _coroutine, _AsyncRes])
def test_async_initializers_are_refused(initializer: Any) -> None:
    with pytest.raises(TypeError, match="initialises synchronously"):
        StreamResource(initializer)
    resource: StreamResource[object] = StreamResource()
    with pytest.raises(TypeError, match="initialises synchronously"):
        resource.set_provides(initializer)
    assert resource.provides is None


async def test_async_dependency_is_refused() -> None:
    journal = Journal()

    class App(containers.DeclarativeContainer):
        dep = providers.Resource(_coroutine)
        stream = StreamResource(journal.init, "s", dep=dep)

    app: Any = App()
    with pytest.raises(TypeError, match="dependencies is async"):
        app.stream()
    assert not app.stream.initialized
    assert journal.opened == []
    await app.shutdown_resources()


# -- repeated cycles leak nothing -----------------------------------------------------------


def test_hundred_cycles_sync_and_async() -> None:
    started: list[threading.Thread] = []

    def threaded_init() -> Iterator[threading.Event]:
        """A resource owning a thread, like a connection would."""
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait, args=(DEADLINE,), daemon=True)
        thread.start()
        started.append(thread)
        try:
            yield stop
        finally:
            stop.set()
            thread.join(DEADLINE)

    class App(containers.DeclarativeContainer):
        a = StreamResource(threaded_init)
        b = StreamResource(threaded_init)
        service = providers.Factory(lambda x, y: (x, y), a, b)

    app: Any = App()
    baseline = threading.active_count()
    seen: list[threading.Event] = []
    for cycle in range(100):
        if cycle % 2:
            app.init_resources()
            seen.append(app.service()[0])
            app.shutdown_resources()
        else:

            async def main() -> None:
                await app.init_resources()
                seen.append(app.service()[0])
                await app.shutdown_resources()

            asyncio.run(main())
    assert len(started) == 200
    assert len({id(event) for event in seen}) == 100  # a fresh object every cycle
    assert all(event.is_set() for event in seen)
    assert not any(thread.is_alive() for thread in started)
    assert threading.active_count() == baseline
