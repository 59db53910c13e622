import asyncio
import threading

from alpaca_di.transport import Runtime


def test_runtime_starts_on_first_acquire_and_stops_on_last_release():
    runtime = Runtime(name="test-runtime")
    before = threading.active_count()
    loop = runtime.acquire()
    assert runtime.running
    assert runtime.acquire() is loop
    assert asyncio.run_coroutine_threadsafe(asyncio.sleep(0, result=42), loop).result(2) == 42
    runtime.release()
    assert runtime.running
    runtime.release()
    assert not runtime.running
    assert loop.is_closed()
    assert threading.active_count() == before


def test_extra_release_is_harmless():
    runtime = Runtime(name="test-runtime-2")
    runtime.release()
    runtime.acquire()
    runtime.release()
    runtime.release()
    assert runtime.users == 0


def test_release_from_the_runtime_thread_does_not_deadlock():
    runtime = Runtime(name="test-runtime-3")
    loop = runtime.acquire()
    thread = runtime.thread
    assert thread is not None
    loop.call_soon_threadsafe(runtime.release)
    thread.join(timeout=5)
    assert not thread.is_alive()
