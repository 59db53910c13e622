"""Trade updates of one account: the service, the order-state rules, reconciliation.

``service`` holds :class:`TradingService` (fan-out, per-order memory, waiters);
``orders`` the pure rules over alpaca-py's ``Order``/``TradeUpdate``;
``reconcile`` the REST read-back of what a socket never saw::

    from alpaca_di import TradingService

    trading = TradingService(trading_stream=trading_hub, trading_client=client)
    fill = trading.wait_for_order(order.id, timeout=30.0)
"""

from alpaca_di.services.trading.orders import FINAL_EVENTS, TRADE_EVENTS, ReconciledTradeUpdate
from alpaca_di.services.trading.service import TradingService, TradingStats
from alpaca_di.services.trading.subscription import TradeUpdateSubscription

__all__ = [
    "FINAL_EVENTS",
    "TRADE_EVENTS",
    "ReconciledTradeUpdate",
    "TradeUpdateSubscription",
    "TradingService",
    "TradingStats",
]
