"""Figure 5: shutdown time with 1 and 5 idle connections.

alpaca-di: an :class:`~alpaca_di.containers.AlpacaContainer` whose stream
resources are initialised and connected (``wait_ready``: stock; or stock,
crypto, option, news and trading), then ``container.shutdown_resources()``:
close frames exchanged, runtime thread joined.

alpaca-py: the same stream kinds, each ``run()`` in its own thread with one quiet
subscription (it does not connect without one), then ``stop()`` on each and
``join()`` on each thread. No wake-up frame is sent: the readers notice the stop
request at their next 5 s receive timeout, as in production. How long that is
depends on when the last frame arrived, so each run stops after a random delay
(uniform in 0..5 s, fixed seed) after the connections went quiet; the 1-stream
and the 5-stream sets are measured at the same time (they only wait).
"""

from __future__ import annotations

import concurrent.futures
import random
import threading
import time
from typing import Any

from benchmarks._common import SECRET, Context, Row, new_key

__all__ = ["container", "run"]

_PATHS = ("/v2/iex", "/v1beta3/crypto/us", "/v1beta1/indicative", "/v1beta1/news", "/stream")


async def _ignore(message: Any) -> None:
    return None


def container(ctx: Context, key: str) -> Any:
    """An AlpacaContainer aimed at the emulator, on a private registry."""
    from dependency_injector import providers

    from alpaca_di.containers import AlpacaContainer
    from alpaca_di.hub.registry import ConnectionRegistry

    app = AlpacaContainer()
    app.config.from_dict(
        {
            "api_key": key,
            "secret_key": SECRET,
            "data_stream_url": ctx.emu.ws_url,
            "trading_stream_url": ctx.emu.ws_url + "/stream",
            "api_url": ctx.emu.api_url,
        }
    )
    app.registry.override(providers.Object(ConnectionRegistry()))
    return app


def _di(ctx: Context, count: int) -> float:
    app = container(ctx, new_key())
    streams = (
        app.stock_stream,
        app.crypto_stream,
        app.option_stream,
        app.news_stream,
        app.trading_stream,
    )[:count]
    for stream in streams:
        stream().wait_ready(10)
    started = time.perf_counter()
    app.shutdown_resources()
    return time.perf_counter() - started


def _py_streams(ctx: Context, count: int) -> list[tuple[Any, threading.Thread, str, str]]:
    from alpaca.data.live import (
        CryptoDataStream,
        NewsDataStream,
        OptionDataStream,
        StockDataStream,
    )
    from alpaca.trading.stream import TradingStream

    key = new_key()
    url = ctx.emu.ws_url
    made: list[tuple[Any, threading.Thread, str, str]] = []
    for path in _PATHS[:count]:
        if path == "/v2/iex":
            stream: Any = StockDataStream(key, SECRET, url_override=url + path)
            stream.subscribe_quotes(_ignore, "AAPL")
        elif path.startswith("/v1beta3"):
            stream = CryptoDataStream(key, SECRET, url_override=url + path)
            stream.subscribe_quotes(_ignore, "BTC/USD")
        elif path == "/v1beta1/indicative":
            stream = OptionDataStream(key, SECRET, url_override=url + path)
            stream.subscribe_quotes(_ignore, "AAPL250117C00190000")
        elif path == "/v1beta1/news":
            stream = NewsDataStream(key, SECRET, url_override=url + path)
            stream.subscribe_news(_ignore, "AAPL")
        else:
            stream = TradingStream(key, SECRET, url_override=url + path)
            stream.subscribe_trade_updates(_ignore)
        thread = threading.Thread(target=stream.run, daemon=True)
        thread.start()
        made.append((stream, thread, key, path))
    return made


def _py(ctx: Context, count: int, rng: random.Random) -> float:
    streams = _py_streams(ctx, count)
    for _stream, _thread, key, path in streams:
        ctx.emu.wait_open(key, path, 1)
    time.sleep(0.1 + rng.uniform(0.0, 5.0))  # subscribes acknowledged, then a random phase
    started = time.perf_counter()
    for stream, _thread, _key, _path in streams:
        stream.stop()
    for _stream, thread, _key, _path in streams:
        thread.join(30)
    elapsed = time.perf_counter() - started
    if any(thread.is_alive() for _stream, thread, _key, _path in streams):
        raise TimeoutError("an alpaca-py stream did not stop within 30 s")
    return elapsed


def run(ctx: Context) -> list[Row]:
    """Figure 5 rows."""
    rows = []
    for count in (1, 5):
        row = Row(
            5,
            f"shutdown_{count}",
            f"shutdown, {count} idle connection{'s' if count > 1 else ''}",
            "ms",
            "lower",
            note="alpaca-di: container.shutdown_resources(); alpaca-py: stop() + join() "
            + ("(stock, crypto, option, news, trading)" if count > 1 else "(stock)"),
        )
        rows.append(row)
    rng = random.Random(5)
    for run_index in range(ctx.runs):
        # The alpaca-py sets only wait (idle readers): run both at once to halve the wall time.
        phases = [random.Random(rng.random()) for _ in (1, 5)]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = [
                pool.submit(_py, ctx, count, phase)
                for count, phase in zip((1, 5), phases, strict=True)
            ]
            for row, future in zip(rows, futures, strict=True):
                row.py.append(future.result() * 1000)
        for row, count in zip(rows, (1, 5), strict=True):
            row.di.append(_di(ctx, count) * 1000)
        ctx.log(
            f"  run {run_index + 1}: 1 conn py {rows[0].py[-1]:.0f} ms di {rows[0].di[-1]:.1f} ms; "
            f"5 conns py {rows[1].py[-1]:.0f} ms di {rows[1].di[-1]:.1f} ms"
        )
    return rows
