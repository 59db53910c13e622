"""FastAPI under several uvicorn workers, all sharing ONE Alpaca connection per endpoint.

Alpaca allows one WebSocket per account and endpoint; ``uvicorn --workers 4``
runs four processes. With ``ALPACA_SHARING=redis`` every worker builds the same
container as always, but its hubs read through Redis, and one elected worker
holds the real sockets (see ``docs/scale-out.md``).

What it shows:

* ``registry_for(settings)`` as the container's ``registry``: ``local`` or
  ``redis`` from the ``sharing`` setting, nothing else changes.
* ``GET /price/{symbol}`` -- the latest price through the pricing service of
  whichever worker answers (``worker`` is its pid).
* ``GET /health`` -- this worker's connections with ``role`` (``leader`` or
  ``follower``), ``leader`` (which worker holds the socket), ``redis`` and
  ``lag_ms``; 503 when unhealthy.

Run it against the emulator (a Redis on 127.0.0.1:6379 is needed)::

    python examples/fastapi_workers/app.py --workers 3     # http://127.0.0.1:8000
    curl -s http://127.0.0.1:8000/price/AAPL
    curl -s http://127.0.0.1:8000/health

or with uvicorn's own command line, configured from the environment::

    export APCA_API_KEY_ID=... APCA_API_SECRET_KEY=...
    export ALPACA_SHARING=redis ALPACA_REDIS_URL=redis://127.0.0.1:6379/0
    uvicorn app:app --app-dir examples/fastapi_workers --workers 4
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import structlog
import uvicorn
from dependency_injector import containers, providers
from fastapi import APIRouter, FastAPI, HTTPException, Request, Response

from alpaca_di.containers import AlpacaContainer, lifespan
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.hub.health import HealthReport
from alpaca_di.scaleout.registry import RedisConnectionRegistry, check_redis, registry_for

KEY_ID = "PKEXAMPLEWORKERS"


class Container(containers.DeclarativeContainer):
    """The web application's container: the Alpaca container, sharing chosen by settings."""

    config = providers.Configuration()
    alpaca = providers.Container(AlpacaContainer, config=config.alpaca)


router = APIRouter()


def _container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


@router.get("/price/{symbol}")
async def price(symbol: str, request: Request) -> dict[str, Any]:
    """The latest price of ``symbol`` (waits up to 10 s for the first one)."""
    pricing = _container(request).alpaca.pricing_service()
    try:
        pricing.track(symbol.upper())
        value = await asyncio.to_thread(pricing.wait_for_price, symbol.upper(), 10.0)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    except TimeoutError:
        raise HTTPException(status_code=504, detail=f"no price for {symbol} yet") from None
    return {"symbol": symbol.upper(), "price": value, "worker": os.getpid()}


@router.get("/health", response_model=HealthReport)
def health(request: Request, response: Response) -> HealthReport:
    """This worker's connections, with the sharing fields; 503 when one is unhealthy."""
    container = _container(request)
    registry = container.alpaca.registry()
    report: HealthReport = (
        registry.health()
        if isinstance(registry, RedisConnectionRegistry)
        else container.alpaca.health()
    )
    if not report.healthy:
        response.status_code = 503
    return report


def create_app() -> FastAPI:
    """Build the app from the environment; uvicorn calls this in every worker process.

    Example::

        app = create_app()      # APCA_API_KEY_ID, APCA_API_SECRET_KEY, ALPACA_SHARING=redis ...
    """
    container = Container()
    # One line: the registry follows the `sharing` setting (local or redis).
    container.alpaca.registry.override(providers.Callable(registry_for, container.alpaca.settings))
    app = FastAPI(title="alpaca-di workers example", lifespan=lifespan(container))
    app.state.container = container
    app.include_router(router)
    return app


app = create_app()


def main(argv: Sequence[str] | None = None) -> int:
    """Start an emulator (unless ``--live``) and serve the app with several workers."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--live", action="store_true", help="use your Alpaca paper account")
    args = parser.parse_args(argv)
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    os.environ.setdefault("ALPACA_SHARING", "redis")
    redis_url = os.environ.setdefault("ALPACA_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        check_redis(redis_url)
    except ConnectionError as exc:
        print(exc, file=sys.stderr)
        return 1
    with ExitStack() as stack:
        if not args.live:
            emulator = stack.enter_context(AlpacaEmulator(rate=20, seed=3))
            os.environ.update(
                {
                    "APCA_API_KEY_ID": KEY_ID,
                    "APCA_API_SECRET_KEY": "example-secret-for-the-emulator",
                    "ALPACA_DATA_STREAM_URL": emulator.ws_url,
                    "ALPACA_TRADING_STREAM_URL": emulator.trading_stream_url,
                    "ALPACA_API_URL": emulator.api_url,
                }
            )
        # Workers are separate processes that import "app:app" from this directory.
        # They import alpaca-py on start: give them more than uvicorn's default 5 s
        # health-check window on a small machine (recent uvicorn versions have the option).
        extra: dict[str, Any] = {}
        if "timeout_worker_healthcheck" in inspect.signature(uvicorn.run).parameters:
            extra["timeout_worker_healthcheck"] = 30
        uvicorn.run(
            "app:app",
            app_dir=os.path.dirname(os.path.abspath(__file__)),
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level="info",
            **extra,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
