"""A loopback Alpaca: a server that speaks Alpaca's streaming, trading and REST protocols.

It serves, on ``127.0.0.1``:

* every market-data WebSocket path (``/v2/iex``, ``/v2/sip``, ``/v2/delayed_sip``,
  ``/v2/test``, ``/v1beta3/crypto/us``, ``/v1beta3/crypto/us-1``,
  ``/v1beta3/crypto/eu-1``, ``/v1beta1/indicative``, ``/v1beta1/opra``,
  ``/v1beta1/news``) with Alpaca's exact message sequence, error codes,
  MessagePack or JSON encoding and subscription semantics;
* the trading stream ``/stream`` (JSON, binary frames by default);
* a small REST API (account, clock, assets, orders, positions) on a second
  port, enough for alpaca-py's ``TradingClient(url_override=emu.api_url)``, and
  on the same port Alpaca's market-data API (historical bars, latest quote,
  trade and bar) answered from what the streams published, for alpaca-py's
  historical data clients.

Every timestamp comes from the emulator's clock (``emu.clock``): it follows the
wall clock unless the test freezes, sets or advances it; ``emu.advance(minutes=N)``
moves it and publishes (and records) the bars that closed.

alpaca-py's own clients work against it unchanged, which is how we know it is
faithful. Use it as a sync context manager (it runs its own loop in a daemon
thread) or as an async one (it runs on your loop)::

    from alpaca.data.live import StockDataStream
    from alpaca_di.emulator import AlpacaEmulator

    with AlpacaEmulator(rate=100, seed=1) as emu:
        stream = StockDataStream("key", "secret", url_override=emu.data_url("/v2/iex"))
        ...

    async with AlpacaEmulator() as emu:
        emu.publish("/v2/iex", [{"T": "q", "S": "AAPL", "bp": 1.0, "bs": 1, "ap": 1.1,
                                 "as": 2, "t": "2024-01-02T15:30:00Z"}])
        await emu.until(lambda: emu.counters("key", "/v2/iex").messages_sent >= 1)

Every knob (``reject_auth``, ``drop_connections``, ``drop_connection``,
``set_keepalive``, ``mute``, ``stop_pongs``,
``slow_client``, ``refuse_handshake``, ``pause_reading``, ``send_raw``,
``push_trade_update``, ``fail_rest``, ``throttle_history``, ``fail_history``,
``publish``, ``advance``, ``set_price``, ``restart``) is
thread-safe: call it from the test thread in sync mode or from the loop in async
mode. Counters are immutable snapshots (plain dataclasses, also served as JSON
at ``GET /_emulator/counters`` on the REST port); :meth:`AlpacaEmulator.wait_until` blocks
on a condition notified at every state change, so tests never sleep-poll. With
``sequence=True`` every synthetic data point carries a number counting per
(connection, type, symbol), and :meth:`AlpacaEmulator.sequences` tells how far
each count went, so a test can prove that a consumer missed nothing.

:class:`AlpacaEmulator` is re-exported as ``alpaca_di.testing.AlpacaEmulator``.
It is one class assembled from parts, one module each:

* :mod:`~alpaca_di.emulator.server` -- the constructor, start/stop/restart, URLs;
* :mod:`~alpaca_di.emulator.connections` -- handshakes, writers, connection slots;
* :mod:`~alpaca_di.emulator.data` -- market-data protocol, synthetic data, ``publish``;
* :mod:`~alpaca_di.emulator.history` -- the clock and clock-paced bars (``advance``);
* :mod:`~alpaca_di.emulator.news` -- synthetic news, a few headlines per emulator minute;
* :mod:`~alpaca_di.emulator.trading` -- trading stream, trade updates, broker queries;
* :mod:`~alpaca_di.emulator.faults` -- the fault knobs;
* :mod:`~alpaca_di.emulator.observation` -- counters, subscriptions, waits;
* :mod:`~alpaca_di.emulator.core` -- the state they share;

and helpers: :mod:`~alpaca_di.emulator.session` (one connection),
:mod:`~alpaca_di.emulator.wire` (feeds, encoders), :mod:`~alpaca_di.emulator.market`
(synthetic prices and messages), :mod:`~alpaca_di.emulator.clock` (the clock),
:mod:`~alpaca_di.emulator.bars` (recorded bars, quotes, trades),
:mod:`~alpaca_di.emulator.market_data` (the market-data REST routes),
:mod:`~alpaca_di.emulator.broker` (paper trading), :mod:`~alpaca_di.emulator.rest`
(the HTTP server), :mod:`~alpaca_di.emulator.accounts` (accounts and counters).
"""

from __future__ import annotations

from alpaca_di.emulator.accounts import (
    ConnectionInfo,
    Counts,
    EmulatedAccount,
    EmulatorStats,
    EndpointCounters,
)
from alpaca_di.emulator.clock import EmulatorClock
from alpaca_di.emulator.server import DATA_PATHS, TRADING_PATH, AlpacaEmulator

__all__ = [
    "DATA_PATHS",
    "TRADING_PATH",
    "AlpacaEmulator",
    "ConnectionInfo",
    "Counts",
    "EmulatedAccount",
    "EmulatorClock",
    "EmulatorStats",
    "EndpointCounters",
]
