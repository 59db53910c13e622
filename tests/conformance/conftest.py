"""Fixtures of the conformance suite: a sync emulator and a runner for alpaca-py clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _conformance_support import StreamRunner

from alpaca_di.emulator import AlpacaEmulator


@pytest.fixture
def emu() -> Iterator[AlpacaEmulator]:
    with AlpacaEmulator(seed=11) as emulator:
        yield emulator


@pytest.fixture
def runner(emu: AlpacaEmulator) -> Iterator[StreamRunner]:
    streams = StreamRunner(emu)
    try:
        yield streams
    finally:
        streams.stop_all()
