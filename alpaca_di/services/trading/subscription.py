"""The subscription a :class:`~alpaca_di.services.trading.TradingService` hands out.

Every trade update of the account, never dropped, in order; fed by the service
(stream and reconciled updates), not by the hub's symbol routing::

    with trading.subscribe() as updates:
        update = updates.get(timeout=30)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from alpaca_di.hub.inbox import Inbox, Pair
from alpaca_di.hub.subscription import Subscription
from alpaca_di.protocol import StreamKind

__all__ = ["TradeUpdateFeed", "TradeUpdateSubscription"]

_NO_SYMBOLS = "a trade-updates subscription receives every order; it has no symbols"


class TradeUpdateSubscription(Subscription):
    """A :class:`~alpaca_di.services.Subscription` to every trade update of the account.

    Fed by the :class:`TradingService` (stream and reconciled updates, never
    dropped, never a final state twice). Handler, iteration, ``stats``,
    ``close`` and the context managers work as on any subscription; ``add`` and
    ``remove`` raise ``TypeError`` (there are no symbols); ``wait_confirmed``
    returns once the server streams the account's updates.

    Example::

        with trading.subscribe() as updates:
            update = updates.get(timeout=30)
    """


class TradeUpdateFeed:
    """The :class:`~alpaca_di.hub.subscription.Feed` of a service's subscriptions."""

    def __init__(
        self,
        *,
        endpoint: str,
        listen: Callable[[float], None],
        listen_async: Callable[[float], Awaitable[None]],
        discard: Callable[[Inbox], None],
    ) -> None:
        self._endpoint = endpoint
        self._listen = listen
        self._listen_async = listen_async
        self._discard = discard

    @property
    def kind(self) -> StreamKind:
        return StreamKind.TRADING

    @property
    def endpoint(self) -> str:
        return self._endpoint

    def pairs(self, channels: Mapping[str, Any]) -> set[Pair]:
        raise TypeError(_NO_SYMBOLS)

    def change(self, inbox: Inbox, pairs: set[Pair], *, add: bool) -> None:
        raise TypeError(_NO_SYMBOLS)

    def detach(self, inbox: Inbox) -> None:
        self._discard(inbox)

    def abandon(self, inbox: Inbox) -> None:
        self._discard(inbox)  # a set discard under the service's reentrant lock

    def wait_confirmed(self, inbox: Inbox, timeout: float) -> None:
        self._listen(timeout)

    async def confirmed(self, inbox: Inbox, timeout: float) -> None:
        await self._listen_async(timeout)
