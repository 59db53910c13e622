"""A release racing an acquire of the same endpoint never opens a second socket (issue 12, 1).

The registry keeps the close of a key's last hub; a new hub of that key opens its
socket only once that close has completed, so the server never sees two sessions of
one key and endpoint at once — with a connection limit of 1, no ``406``.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest

from alpaca_di import ConnectionRegistry, Lease
from alpaca_di.credentials import Credentials
from alpaca_di.protocol import StreamKind
from alpaca_di.testing import AlpacaEmulator
from alpaca_di.transport import ConnectionOptions

KEY = "PKHANDOVER000001"
SECRET = "handover-secret-do-not-leak"
IEX = "/v2/iex"
DEADLINE = 30.0
HANDOVERS = 2_000  # per test: 1,000 between threads, 1,000 between asyncio tasks
OPTIONS = ConnectionOptions(backoff_initial=0.01, backoff_max=0.05, open_timeout=5.0)


@pytest.fixture
def creds() -> Credentials:
    return Credentials(KEY, SECRET)


def _handover_threads(
    registry: ConnectionRegistry, creds: Credentials, url: str, count: int, seed: int
) -> None:
    """Each hand-over: the holder releases the last lease while another thread acquires."""
    rng = random.Random(seed)
    lease = registry.acquire(creds, StreamKind.STOCK, url, OPTIONS)
    lease.hub.wait_ready(DEADLINE)
    for _ in range(count):
        taken: list[Lease] = []
        delay = rng.uniform(0, 0.002)

        def take(delay: float = delay, taken: list[Lease] = taken) -> None:
            threading.Event().wait(delay)  # jitter: where in the release the acquire lands
            new = registry.acquire(creds, StreamKind.STOCK, url, OPTIONS)
            taken.append(new)
            new.hub.wait_ready(DEADLINE)  # connects at once, racing the release's close

        other = threading.Thread(target=take)
        other.start()
        threading.Event().wait(rng.uniform(0, 0.002))
        lease.release()
        other.join(DEADLINE)
        [lease] = taken
    lease.release()


async def _handover_tasks(
    registry: ConnectionRegistry, creds: Credentials, url: str, count: int, seed: int
) -> None:
    """The same between asyncio tasks: an ``arelease`` racing an ``acquire``."""
    rng = random.Random(seed)

    async def take(delay: float) -> Lease:
        await asyncio.sleep(delay)  # jitter, not synchronisation
        new = registry.acquire(creds, StreamKind.STOCK, url, OPTIONS)
        await new.hub.ready(DEADLINE)  # connects at once, racing the release's close
        return new

    lease = registry.acquire(creds, StreamKind.STOCK, url, OPTIONS)
    await lease.hub.ready(DEADLINE)
    for _ in range(count):
        acquiring = asyncio.ensure_future(take(rng.uniform(0, 0.002)))
        await asyncio.sleep(rng.uniform(0, 0.002))
        await lease.arelease()
        lease = await acquiring
    await lease.arelease()


@pytest.mark.parametrize("limit", [1, 10])
def test_handovers_never_hold_two_sessions_of_one_key(
    creds: Credentials, limit: int
) -> None:
    with AlpacaEmulator(connection_limit=limit) as emu:
        url = emu.data_url(IEX)
        registry = ConnectionRegistry()
        try:
            _handover_threads(registry, creds, url, HANDOVERS // 2, seed=limit)
            asyncio.run(_handover_tasks(registry, creds, url, HANDOVERS // 2, seed=limit))
        finally:
            registry.close_all()
        counters = emu.counters(KEY, IEX)
    assert counters.rejections.get(406, 0) == 0
    assert counters.max_concurrent == 1
    assert counters.connections_accepted >= HANDOVERS // 4


@pytest.mark.parametrize("limit", [1, 10])
def test_handovers_wait_for_a_slow_close_before_connecting_again(
    creds: Credentials, limit: int
) -> None:
    """The server takes 10 ms to answer each close: a new socket must wait for it.

    Without the registry's closing entries this ends in ``406`` (limit 1) or two
    authenticated sessions at once (limit 10) in most hand-overs.
    """
    handovers = 200
    with AlpacaEmulator(connection_limit=limit, close_reply_delay=0.01) as emu:
        url = emu.data_url(IEX)
        registry = ConnectionRegistry()
        try:
            _handover_threads(registry, creds, url, handovers // 2, seed=limit)
            asyncio.run(_handover_tasks(registry, creds, url, handovers // 2, seed=limit))
        finally:
            registry.close_all()
        counters = emu.counters(KEY, IEX)
    assert counters.rejections.get(406, 0) == 0
    assert counters.max_concurrent == 1
    assert counters.connections_accepted >= handovers // 4


def _after_a_slow_close(
    creds: Credentials, scenario: Callable[[ConnectionRegistry, str], object]
) -> Any:
    """Run ``scenario`` against a server that takes 0.3 s to answer a close, limit 1.

    Another hub's lease keeps the runtime thread, so a slow close runs to its
    end whatever the scenario gave up on. Returns the key's counters.
    """
    with AlpacaEmulator(connection_limit=1, close_reply_delay=0.3) as emu:
        registry = ConnectionRegistry()
        keeper = registry.acquire(creds, StreamKind.STOCK, emu.data_url("/v2/sip"), OPTIONS)
        try:
            scenario(registry, emu.data_url(IEX))
        finally:
            keeper.release()
            registry.close_all()
        return emu.counters(KEY, IEX)


def test_a_release_that_gives_up_waiting_still_gates_the_next_socket(creds: Credentials) -> None:
    """``release(timeout)`` returns before a slow close ends; the key's next socket waits."""

    def scenario(registry: ConnectionRegistry, url: str) -> None:
        lease = registry.acquire(creds, StreamKind.STOCK, url, OPTIONS)
        lease.hub.wait_ready(DEADLINE)
        lease.release(timeout=0.01)
        again = registry.acquire(creds, StreamKind.STOCK, url, OPTIONS)
        again.hub.wait_ready(DEADLINE)
        again.release()

    counters = _after_a_slow_close(creds, scenario)
    assert counters.rejections.get(406, 0) == 0
    assert counters.max_concurrent == 1
    assert counters.connections_accepted == 2


def test_a_cancelled_arelease_still_closes_and_gates_the_next_socket(creds: Credentials) -> None:
    async def scenario(registry: ConnectionRegistry, url: str) -> None:
        lease = registry.acquire(creds, StreamKind.STOCK, url, OPTIONS)
        await lease.hub.ready(DEADLINE)
        releasing = asyncio.ensure_future(lease.arelease())
        while not lease.released:  # its first step gives the lease back, then waits
            await asyncio.sleep(0)
        releasing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await releasing
        again = registry.acquire(creds, StreamKind.STOCK, url, OPTIONS)
        await again.hub.ready(DEADLINE)
        assert lease.hub.closed
        await again.arelease()

    counters = _after_a_slow_close(creds, lambda reg, url: asyncio.run(scenario(reg, url)))
    assert counters.rejections.get(406, 0) == 0
    assert counters.max_concurrent == 1
    assert counters.connections_accepted == 2
