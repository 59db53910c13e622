"""dependency-injector providers: StreamResource and the ``init_<thing>`` resource functions.

:func:`init_health_server` (and :func:`serve_health`, :class:`HealthServer`) serve
the container's health over HTTP from the application's own process;
:func:`init_metrics` (and :func:`register_metrics`, :func:`metrics_exposition`)
its Prometheus metrics, imported on first use (they need ``alpaca-di[metrics]``).
"""

from typing import TYPE_CHECKING

from alpaca_di._lazy import lazy_exports
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

if TYPE_CHECKING:
    from alpaca_di.providers.metrics import init_metrics, metrics_exposition, register_metrics

__all__ = [
    "HealthServer",
    "StreamResource",
    "init_crypto_stream",
    "init_health_server",
    "init_metrics",
    "init_news_stream",
    "init_option_stream",
    "init_pricing_service",
    "init_stock_stream",
    "init_trading_client",
    "init_trading_service",
    "init_trading_stream",
    "metrics_exposition",
    "register_metrics",
    "serve_health",
]

# The metrics need the optional prometheus_client: imported when first asked for.
_METRICS = "alpaca_di.providers.metrics"
__getattr__, __dir__ = lazy_exports(
    globals(),
    {"init_metrics": _METRICS, "metrics_exposition": _METRICS, "register_metrics": _METRICS},
)
