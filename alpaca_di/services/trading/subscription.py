"""The subscription a :class:`~alpaca_di.services.trading.TradingService` hands out.

Every trade update of the account, never dropped, in order; fed by the service
(stream and reconciled updates), not by the hub's symbol routing::

    with trading.subscribe() as updates:
        update = updates.get(timeout=30)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from alpaca_di.hub.hub import StreamHub
from alpaca_di.hub.subscription import Handler, Subscription

__all__ = ["TradeUpdateSubscription"]


class TradeUpdateSubscription(Subscription):
    """A :class:`~alpaca_di.services.Subscription` to every trade update of the account.

    Fed by the :class:`TradingService` (stream and reconciled updates, never
    dropped, never a final state twice). Handler, iteration, ``stats``,
    ``close`` and the context managers work as on any subscription; ``add`` and
    ``remove`` do not apply (there are no symbols).

    Example::

        with trading.subscribe() as updates:
            update = updates.get(timeout=30)
    """

    def __init__(
        self,
        hub: StreamHub,
        handler: Handler | None,
        *,
        consumer_loop: asyncio.AbstractEventLoop,
        listen: Callable[[float], None],
        listen_async: Callable[[float], Awaitable[None]],
        on_close: Callable[[TradeUpdateSubscription], None],
    ) -> None:
        super().__init__(
            hub,
            handler,
            maxsize=None,
            overflow="drop_oldest",
            raw=False,
            consumer_loop=consumer_loop,
            never_drop=True,
        )
        self._listen = listen
        self._listen_async = listen_async
        self._on_close = on_close

    def add(self, **channels: Any) -> None:
        """Not supported: a trade-updates subscription has no symbols."""
        raise TypeError("a trade-updates subscription receives every order; it has no symbols")

    def remove(self, **channels: Any) -> None:
        """Not supported: a trade-updates subscription has no symbols."""
        raise TypeError("a trade-updates subscription receives every order; it has no symbols")

    def wait_confirmed(self, timeout: float = 10.0) -> None:
        """Block until the server confirmed that the account's updates are streamed."""
        self._listen(timeout)

    async def confirmed(self, timeout: float = 10.0) -> None:
        """Async :meth:`wait_confirmed`."""
        await self._listen_async(timeout)

    def close(self) -> None:
        """Stop receiving. Idempotent."""
        self._on_close(self)
        super().close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<TradeUpdateSubscription {state} {self.stats}>"
