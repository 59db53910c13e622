"""A loopback Alpaca: market-data and trading WebSockets plus a small REST API.

:class:`AlpacaEmulator` (in :mod:`alpaca_di.emulator.server`) speaks Alpaca's
protocols on ``127.0.0.1`` so alpaca-py's own clients and alpaca-di run against
it unchanged. It is also re-exported as ``alpaca_di.testing.AlpacaEmulator``::

    from alpaca_di.emulator import AlpacaEmulator

    with AlpacaEmulator(rate=100, seed=1) as emu:
        url = emu.data_url("/v2/iex")
"""

from __future__ import annotations

from alpaca_di.emulator.accounts import EmulatedAccount, EmulatorStats, EndpointCounters
from alpaca_di.emulator.server import DATA_PATHS, TRADING_PATH, AlpacaEmulator

__all__ = [
    "DATA_PATHS",
    "TRADING_PATH",
    "AlpacaEmulator",
    "EmulatedAccount",
    "EmulatorStats",
    "EndpointCounters",
]
