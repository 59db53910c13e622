"""A FastAPI application: lifespan, ``/health``, and quotes relayed to browsers over WebSocket.

What it shows:

* The application container embeds :class:`~alpaca_di.AlpacaContainer`;
  :func:`alpaca_di.containers.lifespan` initialises it when the server starts
  and shuts every connection down when it stops. The connections run on the
  server's event loop.
* ``GET /health`` returns ``container.health()`` (a
  :class:`~alpaca_di.HealthReport`) as JSON, with status 503 when unhealthy.
* ``GET /metrics`` serves the Prometheus metrics (``alpaca-di[metrics]``): with
  ``PROMETHEUS_MULTIPROC_DIR`` set and several uvicorn workers, every worker's
  values, aggregated. The browsers' subscriptions are named ``ws-quotes`` there.
* ``WS /ws/quotes?symbols=AAPL,MSFT`` relays live quotes to each browser. Every
  client gets its own subscription on the **one** shared stock connection,
  with ``overflow="conflate"``: a slow client gets the latest quote per symbol
  instead of a growing backlog. The subscription is closed when the client
  goes away (even if no quote is flowing) or when the server shuts down.
* ``GET /`` serves a tiny page that opens that WebSocket.
* Dependencies are injected with dependency-injector's ``@inject`` and
  ``Depends(Provide[...])``.

Run it (no account needed: an emulator runs in the same process)::

    python examples/fastapi_app.py                 # http://127.0.0.1:8000/
    curl -s http://127.0.0.1:8000/health
    curl -s http://127.0.0.1:8000/metrics

Against your Alpaca paper account (``APCA_API_KEY_ID``, ``APCA_API_SECRET_KEY``;
quotes flow during market hours)::

    python examples/fastapi_app.py --live

In your own project, build the app with ``create_app()`` (configuration from
the environment) and serve it with ``uvicorn module:app``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from contextlib import ExitStack, suppress
from typing import Any

import anyio
import structlog
import uvicorn
from alpaca.data.models import Quote
from dependency_injector import containers, providers
from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends, FastAPI, Response, WebSocket
from fastapi.responses import HTMLResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from alpaca_di import (
    AlpacaContainer,
    AlpacaSettings,
    ConfigurationError,
    HealthReport,
    StreamHub,
    Subscription,
)
from alpaca_di.containers import lifespan
from alpaca_di.providers.metrics import metrics_exposition, register_metrics
from alpaca_di.testing import AlpacaEmulator

KEY_ID = "PKEXAMPLE0000003"


class Container(containers.DeclarativeContainer):
    """The web application's container."""

    config = providers.Configuration()
    alpaca = providers.Container(AlpacaContainer, config=config.alpaca)


router = APIRouter()


@router.get("/health", response_model=HealthReport)
@inject
def health(
    response: Response,
    report: HealthReport = Depends(Provide[Container.alpaca.health]),  # noqa: B008
) -> HealthReport:
    """Every shared connection's state and counters; 503 when one failed or is reconnecting."""
    if not report.healthy:
        response.status_code = 503
    return report


@router.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics of every shared connection (all workers' in multiprocess mode)."""
    body, content_type = metrics_exposition()
    return Response(body, media_type=content_type)


@router.websocket("/ws/quotes")
@inject
async def quotes(
    websocket: WebSocket,
    symbols: str = "AAPL,MSFT",
    stock_stream: StreamHub = Depends(Provide[Container.alpaca.stock_stream]),  # noqa: B008
) -> None:
    """Relay quotes of ``symbols`` (comma-separated) to this client until it disconnects."""
    await websocket.accept()
    wanted = [symbol.strip().upper() for symbol in symbols.split(",") if symbol.strip()]
    try:
        subscription = stock_stream.subscribe(
            quotes=wanted, maxsize=max(len(wanted), 1), overflow="conflate", name="ws-quotes"
        )
    except ValueError as exc:  # an invalid symbol: tell the client why
        await websocket.close(code=1008, reason=str(exc)[:120])
        return
    async with subscription, anyio.create_task_group() as tasks:
        # Two tasks: relay quotes, and notice the client leaving even when no quote
        # flows (market closed). Whichever ends first ends both.

        async def relay() -> None:
            with suppress(WebSocketDisconnect):  # the client left during a send
                await _relay(subscription, websocket)
            tasks.cancel_scope.cancel()

        async def watch() -> None:
            await _until_disconnected(websocket)
            tasks.cancel_scope.cancel()

        tasks.start_soon(relay)
        tasks.start_soon(watch)
    if websocket.application_state is WebSocketState.CONNECTED and (
        websocket.client_state is WebSocketState.CONNECTED
    ):
        await websocket.close(code=1001)  # the stream ended: the server is shutting down


async def _relay(subscription: Subscription, websocket: WebSocket) -> None:
    async for quote in subscription:  # ends when the subscription is closed
        if isinstance(quote, Quote):
            await websocket.send_json(
                {
                    "symbol": quote.symbol,
                    "bid": quote.bid_price,
                    "ask": quote.ask_price,
                    "bid_size": quote.bid_size,
                    "ask_size": quote.ask_size,
                    "timestamp": quote.timestamp.isoformat(),
                }
            )


async def _until_disconnected(websocket: WebSocket) -> None:
    with suppress(WebSocketDisconnect):
        while True:
            await websocket.receive_text()  # the page sends nothing; this notices the close


@router.get("/", response_class=HTMLResponse)
def index() -> str:
    """A page showing the relayed quotes."""
    return _PAGE


_PAGE = """<!doctype html>
<meta charset="utf-8"><title>alpaca-di quotes</title>
<style>body{font:14px monospace} td{padding:2px 12px;text-align:right}</style>
<h3>Quotes relayed over one shared Alpaca connection</h3>
<table id="t"><tr><th>symbol</th><th>bid</th><th>ask</th><th>time</th></tr></table>
<script>
const rows = {};
const ws = new WebSocket(`ws://${location.host}/ws/quotes?symbols=AAPL,MSFT,SPY,TSLA,NVDA`);
ws.onmessage = (event) => {
  const q = JSON.parse(event.data);
  const row = rows[q.symbol] ??= document.getElementById("t").insertRow();
  row.innerHTML = `<td>${q.symbol}</td><td>${q.bid.toFixed(2)}</td>` +
                  `<td>${q.ask.toFixed(2)}</td><td>${q.timestamp.slice(11, 23)}</td>`;
};
</script>
"""


def create_app(alpaca_config: dict[str, Any] | None = None) -> FastAPI:
    """Build the application; ``alpaca_config`` is ``AlpacaSettings`` fields (default: env).

    Example::

        app = create_app()                    # APCA_API_KEY_ID, APCA_API_SECRET_KEY, ALPACA_*
        app = create_app({"api_key": "PK...", "secret_key": "...", "feed": "sip"})
    """
    container = Container()
    if alpaca_config is not None:
        container.config.alpaca.from_dict(alpaca_config)
    container.wire(modules=[sys.modules[__name__]])
    # Every worker process registers (idempotent): in multiprocess mode each one
    # writes its own values for whichever worker serves the scrape.
    register_metrics()
    app = FastAPI(title="alpaca-di example", lifespan=lifespan(container))
    app.state.container = container
    app.include_router(router)
    return app


def emulator_config(emulator: AlpacaEmulator) -> dict[str, Any]:
    """Container settings pointing every URL at the in-process emulator."""
    return {
        "api_key": KEY_ID,
        "secret_key": "example-secret-for-the-emulator",
        "data_stream_url": emulator.ws_url,
        "trading_stream_url": emulator.trading_stream_url,
        "api_url": emulator.api_url,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--live", action="store_true", help="use your Alpaca paper account")
    args = parser.parse_args(argv)
    # Logging is the application's choice; alpaca-di only logs through structlog.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    with ExitStack() as stack:
        if args.live:
            try:
                config = AlpacaSettings(paper=True).model_dump()
            except ConfigurationError as exc:
                print(exc, file=sys.stderr)
                return 2
        else:
            emulator = stack.enter_context(AlpacaEmulator(rate=20, seed=3))
            config = emulator_config(emulator)
        uvicorn.run(create_app(config), host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
