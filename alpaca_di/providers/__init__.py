"""dependency-injector providers: StreamResource and the ``init_<thing>`` resource functions."""

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
    "StreamResource",
    "init_crypto_stream",
    "init_news_stream",
    "init_option_stream",
    "init_pricing_service",
    "init_stock_stream",
    "init_trading_client",
    "init_trading_service",
    "init_trading_stream",
]
