"""dependency-injector providers: StreamResource and the ``init_<thing>`` resource functions.

:func:`init_health_server` (and :func:`serve_health`, :class:`HealthServer`) serve
the container's health over HTTP from the application's own process.
"""

from alpaca_di.providers.health_server import HealthServer, init_health_server, serve_health
from alpaca_di.providers.resources import StreamResource
from alpaca_di.providers.streams import (
    init_crypto_stream,
    init_news_stream,
    init_option_stream,
    init_pricing_service,
    init_stock_stream,
    init_trading_client,
    init_trading_service,
    init_trading_stream,
)

__all__ = [
    "HealthServer",
    "StreamResource",
    "init_crypto_stream",
    "init_health_server",
    "init_news_stream",
    "init_option_stream",
    "init_pricing_service",
    "init_stock_stream",
    "init_trading_client",
    "init_trading_service",
    "init_trading_stream",
    "serve_health",
]
