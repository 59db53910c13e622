"""Fixtures for tests that talk to the emulator over real sockets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _integration_support import CLOCK_START

from alpaca_di.containers import AlpacaContainer
from alpaca_di.credentials import Credentials
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.hub import ConnectionRegistry, Lease
from alpaca_di.protocol import StreamKind
from alpaca_di.transport import ConnectionOptions

KEY = "PKINTEGRATION01"
SECRET = "integration-secret-do-not-leak"


@pytest.fixture
def emulator() -> Iterator[AlpacaEmulator]:
    with AlpacaEmulator() as emu:
        yield emu


@pytest.fixture
def clocked_emu() -> Iterator[AlpacaEmulator]:
    """An emulator whose clock stands at CLOCK_START until the test advances it."""
    with AlpacaEmulator(seed=11, clock=CLOCK_START) as emu:
        yield emu


@pytest.fixture
def clocked_container(clocked_emu: AlpacaEmulator) -> Iterator[AlpacaContainer]:
    """An AlpacaContainer on ``clocked_emu`` (streams, trading and data REST), fast reconnects."""
    emu = clocked_emu
    container = AlpacaContainer()
    container.config.from_dict(
        {"api_key": KEY, "secret_key": SECRET, "data_stream_url": emu.ws_url,
         "trading_stream_url": emu.trading_stream_url, "api_url": emu.api_url,
         "data_url": emu.api_url, "backoff_initial": 0.01, "backoff_max": 0.05}
    )
    registry = ConnectionRegistry()
    container.registry.override(registry)
    yield container
    container.shutdown_resources()
    registry.close_all()


@pytest.fixture
def creds() -> Credentials:
    return Credentials(KEY, SECRET)


@pytest.fixture
def fast_options() -> ConnectionOptions:
    return ConnectionOptions(backoff_initial=0.01, backoff_max=0.05, open_timeout=5.0)


@pytest.fixture
def registry() -> Iterator[ConnectionRegistry]:
    registry = ConnectionRegistry()
    yield registry
    registry.close_all()


@pytest.fixture
def stock_lease(
    registry: ConnectionRegistry,
    emulator: AlpacaEmulator,
    creds: Credentials,
    fast_options: ConnectionOptions,
) -> Iterator[Lease]:
    lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url("/v2/iex"), fast_options)
    yield lease
    lease.release()
