"""406 connection limit exceeded: final after the grace window, or never (``grace=None``)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from alpaca_di.credentials import Credentials
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.errors import ConnectionLimitError
from alpaca_di.protocol import StreamKind, SubscriptionState
from alpaca_di.transport import ConnectionOptions
from alpaca_di.transport.connection import Connection
from alpaca_di.transport.states import ConnectionState

KEY, SECRET = "PKLIMIT0001", "limit-secret"


class _Listener:
    def __init__(self) -> None:
        self.states: list[ConnectionState] = []
        self.changed = asyncio.Event()

    def on_state(self, state: ConnectionState, previous: Any, error: Any) -> None:
        self.states.append(state)
        self.changed.set()

    def on_batch(self, messages: Any, structs: Any = None, sources: Any = None) -> None: ...
    def on_ack(self, channels: Mapping[str, tuple[str, ...]]) -> None: ...
    def on_rejected(self, pairs: Any, error: Any) -> None: ...
    def on_malformed(self, reason: str) -> None: ...
    def on_unsubscribing(self, channels: Any) -> None: ...


def _connection(url: str, listener: _Listener, grace: float | None) -> Connection:
    return Connection(
        url,
        kind=StreamKind.STOCK,
        credentials=Credentials(KEY, SECRET),
        options=ConnectionOptions(
            backoff_initial=0.01, backoff_max=0.05, connection_limit_grace=grace
        ),
        subscriptions=SubscriptionState(),
        listener=listener,
        loop=asyncio.get_running_loop(),
    )


async def _until(predicate: Any, listener: _Listener, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            listener.changed.clear()
            await listener.changed.wait()


def test_grace_none_is_accepted_and_negative_still_refused() -> None:
    assert ConnectionOptions(connection_limit_grace=None).connection_limit_grace is None
    with pytest.raises(ValueError, match="connection_limit_grace"):
        ConnectionOptions(connection_limit_grace=-1)


@pytest.mark.parametrize("grace", [0.0, None])
def test_a_held_slot_fails_after_the_grace_or_is_retried_until_it_frees(
    grace: float | None,
) -> None:
    async def scenario(emu: AlpacaEmulator) -> None:
        holder_listener, listener = _Listener(), _Listener()
        holder = _connection(emu.ws_url + "/v2/iex", holder_listener, 90.0)
        holder.start()
        await _until(lambda: holder.state is ConnectionState.CONNECTED, holder_listener)
        second = _connection(emu.ws_url + "/v2/iex", listener, grace)
        second.start()
        try:
            if grace is not None:
                await _until(lambda: second.state is ConnectionState.FAILED, listener)
                assert isinstance(second.last_error, ConnectionLimitError)
                return
            await _until(lambda: second.limit_rejections >= 5, listener)
            assert ConnectionState.FAILED not in listener.states
            assert isinstance(second.last_error, ConnectionLimitError)
            await holder.close()  # the slot frees: the retrying socket gets it
            await _until(lambda: second.state is ConnectionState.CONNECTED, listener)
        finally:
            await second.close()
            await holder.close()

    with AlpacaEmulator(connection_limit=1) as emu:
        asyncio.run(scenario(emu))
