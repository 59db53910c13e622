"""alpaca-di: one shared Alpaca WebSocket per account and endpoint, via dependency-injector.

Embed :class:`AlpacaContainer` in your application container; every component
asking for a stream, a pricing service or a trading service shares one socket
per (credentials, endpoint), closed by the container's resource lifecycle::

    from dependency_injector import containers, providers
    from alpaca_di import AlpacaContainer, AlpacaSettings

    class App(containers.DeclarativeContainer):
        config = providers.Configuration()
        alpaca = providers.Container(AlpacaContainer, config=config.alpaca)

    app = App()
    app.config.alpaca.from_pydantic(AlpacaSettings())  # APCA_API_KEY_ID, APCA_API_SECRET_KEY
    app.init_resources()
    prices = app.alpaca.pricing_service()
    prices.track("AAPL")
    print(prices.wait_for_price("AAPL", timeout=10))
    app.shutdown_resources()

Probes of a running application ask the application itself, over HTTP, instead of
opening sockets of their own (Alpaca would refuse a second one with 406)::

    from alpaca_di import serve_health

    server = serve_health(app.alpaca, host="0.0.0.0", port=8080)
    # GET http://...:8080/healthz -> 200 when healthy, GET /readyz -> 200 when ready
    server.close()

or, declared in the container: ``providers.Resource(init_health_server, alpaca, port=8080)``;
it also serves Prometheus metrics at ``/metrics`` with the ``alpaca-di[metrics]`` extra
(:func:`register_metrics`). :func:`configure_logging` is the one opt-in call that sets up
JSON-lines (or console) logging, secret-free; alpaca-di never configures logging itself.

Test helpers live in :mod:`alpaca_di.testing` (the emulator, fakes, a pytest plugin).
"""

from typing import TYPE_CHECKING

from alpaca_di._lazy import lazy_exports

# Importing alpaca_di stays cheap: each public name is imported from its module on
# first use (PEP 562), so ``alpaca-di --help`` and ``from alpaca_di import
# AlpacaSettings`` do not pay for alpaca-py, pandas and the rest. The imports
# under TYPE_CHECKING are what type checkers and IDEs read.

if TYPE_CHECKING:
    from alpaca_di.compat.streams import (
        SharedCryptoDataStream,
        SharedNewsDataStream,
        SharedOptionDataStream,
        SharedStockDataStream,
        SharedTradingStream,
    )
    from alpaca_di.containers import AlpacaContainer, lifespan
    from alpaca_di.credentials import Credentials
    from alpaca_di.errors import (
        AlpacaAPIError,
        AlpacaDIError,
        AuthenticationError,
        ConfigurationError,
        ConnectionClosedError,
        ConnectionLimitError,
        InsufficientSubscriptionError,
        ProtocolError,
        ServerError,
        ServiceClosedError,
        SlowClientError,
        SubscriptionOverflowError,
        SymbolLimitError,
    )
    from alpaca_di.hub import (
        ConnectionHealth,
        ConnectionRegistry,
        HealthReport,
        Lease,
        StreamHub,
        Subscription,
        SubscriptionStats,
    )
    from alpaca_di.logs import LoggingSetup, configure_logging
    from alpaca_di.protocol import StreamKind
    from alpaca_di.providers.health_server import HealthServer, init_health_server, serve_health
    from alpaca_di.providers.metrics import init_metrics, metrics_exposition, register_metrics
    from alpaca_di.providers.resources import StreamResource
    from alpaca_di.services.interfaces import OrderUpdates, PriceSource, PriceTracker
    from alpaca_di.services.manager import AlpacaManager
    from alpaca_di.services.pricing import PricingService
    from alpaca_di.services.trading import TradingService
    from alpaca_di.settings import AlpacaSettings
    from alpaca_di.transport import ConnectionOptions, ConnectionState

__all__ = [
    "AlpacaAPIError",
    "AlpacaContainer",
    "AlpacaDIError",
    "AlpacaManager",
    "AlpacaSettings",
    "AuthenticationError",
    "ConfigurationError",
    "ConnectionClosedError",
    "ConnectionHealth",
    "ConnectionLimitError",
    "ConnectionOptions",
    "ConnectionRegistry",
    "ConnectionState",
    "Credentials",
    "HealthReport",
    "HealthServer",
    "InsufficientSubscriptionError",
    "Lease",
    "LoggingSetup",
    "OrderUpdates",
    "PriceSource",
    "PriceTracker",
    "PricingService",
    "ProtocolError",
    "ServerError",
    "ServiceClosedError",
    "SharedCryptoDataStream",
    "SharedNewsDataStream",
    "SharedOptionDataStream",
    "SharedStockDataStream",
    "SharedTradingStream",
    "SlowClientError",
    "StreamHub",
    "StreamKind",
    "StreamResource",
    "Subscription",
    "SubscriptionOverflowError",
    "SubscriptionStats",
    "SymbolLimitError",
    "TradingService",
    "configure_logging",
    "init_health_server",
    "init_metrics",
    "lifespan",
    "metrics_exposition",
    "register_metrics",
    "serve_health",
]

_EXPORTS: dict[str, str] = {
    "AlpacaAPIError": "alpaca_di.errors",
    "AlpacaContainer": "alpaca_di.containers",
    "AlpacaDIError": "alpaca_di.errors",
    "AlpacaManager": "alpaca_di.services.manager",
    "AlpacaSettings": "alpaca_di.settings",
    "AuthenticationError": "alpaca_di.errors",
    "ConfigurationError": "alpaca_di.errors",
    "ConnectionClosedError": "alpaca_di.errors",
    "ConnectionHealth": "alpaca_di.hub",
    "ConnectionLimitError": "alpaca_di.errors",
    "ConnectionOptions": "alpaca_di.transport",
    "ConnectionRegistry": "alpaca_di.hub",
    "ConnectionState": "alpaca_di.transport",
    "Credentials": "alpaca_di.credentials",
    "HealthReport": "alpaca_di.hub",
    "HealthServer": "alpaca_di.providers.health_server",
    "InsufficientSubscriptionError": "alpaca_di.errors",
    "Lease": "alpaca_di.hub",
    "LoggingSetup": "alpaca_di.logs",
    "OrderUpdates": "alpaca_di.services.interfaces",
    "PriceSource": "alpaca_di.services.interfaces",
    "PriceTracker": "alpaca_di.services.interfaces",
    "PricingService": "alpaca_di.services.pricing",
    "ProtocolError": "alpaca_di.errors",
    "ServerError": "alpaca_di.errors",
    "ServiceClosedError": "alpaca_di.errors",
    "SharedCryptoDataStream": "alpaca_di.compat.streams",
    "SharedNewsDataStream": "alpaca_di.compat.streams",
    "SharedOptionDataStream": "alpaca_di.compat.streams",
    "SharedStockDataStream": "alpaca_di.compat.streams",
    "SharedTradingStream": "alpaca_di.compat.streams",
    "SlowClientError": "alpaca_di.errors",
    "StreamHub": "alpaca_di.hub",
    "StreamKind": "alpaca_di.protocol",
    "StreamResource": "alpaca_di.providers.resources",
    "Subscription": "alpaca_di.hub",
    "SubscriptionOverflowError": "alpaca_di.errors",
    "SubscriptionStats": "alpaca_di.hub",
    "SymbolLimitError": "alpaca_di.errors",
    "TradingService": "alpaca_di.services.trading",
    "configure_logging": "alpaca_di.logs",
    "init_health_server": "alpaca_di.providers.health_server",
    "init_metrics": "alpaca_di.providers.metrics",
    "lifespan": "alpaca_di.containers",
    "metrics_exposition": "alpaca_di.providers.metrics",
    "register_metrics": "alpaca_di.providers.metrics",
    "serve_health": "alpaca_di.providers.health_server",
}


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
