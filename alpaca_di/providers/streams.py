"""The ``init_<thing>`` resource functions behind :class:`~alpaca_di.AlpacaContainer`.

Each one is a plain generator function for a
:class:`~alpaca_di.providers.resources.StreamResource`: the code before ``yield``
opens, the ``finally`` block closes. A stream function takes a lease on the
shared hub of ``(credentials, endpoint)`` from the registry and gives it back at
shutdown; the last lease of a hub closes its socket with a close frame. No
function here touches the network: a hub connects at its first subscription.

They are usable in any container of yours, not only in ``AlpacaContainer``::

    from dependency_injector import containers, providers
    from alpaca_di import ConnectionRegistry, StreamResource
    from alpaca_di.providers.streams import init_stock_stream
    from alpaca_di.settings import AlpacaSettings, settings_from_mapping

    class Streams(containers.DeclarativeContainer):
        config = providers.Configuration()
        settings = providers.Callable(settings_from_mapping, config)
        credentials = providers.Callable(AlpacaSettings.credentials, settings)
        registry = providers.Object(ConnectionRegistry.default())
        stock_stream = StreamResource(
            init_stock_stream, registry=registry, credentials=credentials, settings=settings
        )

The service functions (:func:`init_pricing_service`, :func:`init_trading_service`,
:func:`init_alpaca_manager`) build a service over the hubs (or services) they are
given and close it at shutdown, and
:func:`init_trading_client` closes the HTTP session of alpaca-py's
``TradingClient``. Because they are resources that depend *directly* on the
stream resources, dependency-injector shuts them down before the streams.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

import structlog

from alpaca_di.credentials import Credentials
from alpaca_di.hub.hub import StreamHub
from alpaca_di.hub.registry import ConnectionRegistry
from alpaca_di.protocol import StreamKind
from alpaca_di.settings import AlpacaSettings, endpoint_for, stream_feed

if TYPE_CHECKING:
    from alpaca.trading.client import TradingClient

    from alpaca_di.services.interfaces import OrderUpdates, PriceSource
    from alpaca_di.services.manager import AlpacaManager
    from alpaca_di.services.pricing import PricingService
    from alpaca_di.services.trading import TradingService

__all__ = [
    "init_alpaca_manager",
    "init_crypto_stream",
    "init_news_stream",
    "init_option_stream",
    "init_pricing_service",
    "init_stock_stream",
    "init_trading_client",
    "init_trading_service",
    "init_trading_stream",
    "stream_lease",
]

_log = structlog.get_logger(__name__)


def stream_lease(
    registry: ConnectionRegistry,
    credentials: Credentials,
    settings: AlpacaSettings,
    kind: StreamKind | str,
) -> Generator[StreamHub, None, None]:
    """Lease the hub of ``kind`` for the resource's lifetime (the body of every ``init_*``).

    Yields the shared :class:`~alpaca_di.services.StreamHub`; at shutdown the lease
    is released (the last one closes the socket with a close frame), whatever fails.

    Example::

        def init_sip_stream(registry, credentials, settings):
            yield from stream_lease(registry, credentials, settings.model_copy(
                update={"feed": "sip"}), "stock")
    """
    kind = StreamKind(kind)
    if not isinstance(registry, ConnectionRegistry):
        raise TypeError(f"registry must be a ConnectionRegistry, got {type(registry).__name__}")
    endpoint = endpoint_for(settings, kind)
    options = settings.to_options()
    feed = stream_feed(settings, kind)
    if options.feed != feed:
        options = dataclasses.replace(options, feed=feed)
    lease = registry.acquire(credentials, kind, endpoint, options)
    try:
        yield lease.hub
    finally:
        lease.release()


def init_stock_stream(
    registry: ConnectionRegistry,
    credentials: Credentials,
    settings: AlpacaSettings,
) -> Generator[StreamHub, None, None]:
    """The stock hub (``data_stream_url`` + ``/v2/<feed>``) for the resource's lifetime.

    Example::

        stock_stream = StreamResource(init_stock_stream, registry, credentials, settings)
    """
    yield from stream_lease(registry, credentials, settings, StreamKind.STOCK)


def init_crypto_stream(
    registry: ConnectionRegistry,
    credentials: Credentials,
    settings: AlpacaSettings,
) -> Generator[StreamHub, None, None]:
    """The crypto hub (``/v1beta3/crypto/<crypto_feed>``) for the resource's lifetime.

    Example::

        crypto_stream = StreamResource(init_crypto_stream, registry, credentials, settings)
    """
    yield from stream_lease(registry, credentials, settings, StreamKind.CRYPTO)


def init_option_stream(
    registry: ConnectionRegistry,
    credentials: Credentials,
    settings: AlpacaSettings,
) -> Generator[StreamHub, None, None]:
    """The option hub (``/v1beta1/<option_feed>``) for the resource's lifetime.

    Example::

        option_stream = StreamResource(init_option_stream, registry, credentials, settings)
    """
    yield from stream_lease(registry, credentials, settings, StreamKind.OPTION)


def init_news_stream(
    registry: ConnectionRegistry,
    credentials: Credentials,
    settings: AlpacaSettings,
) -> Generator[StreamHub, None, None]:
    """The news hub (``/v1beta1/news``) for the resource's lifetime.

    Example::

        news_stream = StreamResource(init_news_stream, registry, credentials, settings)
    """
    yield from stream_lease(registry, credentials, settings, StreamKind.NEWS)


def init_trading_stream(
    registry: ConnectionRegistry,
    credentials: Credentials,
    settings: AlpacaSettings,
) -> Generator[StreamHub, None, None]:
    """The trading hub (``resolved_trading_stream_url``) for the resource's lifetime.

    Example::

        trading_stream = StreamResource(init_trading_stream, registry, credentials, settings)
    """
    yield from stream_lease(registry, credentials, settings, StreamKind.TRADING)


def init_pricing_service(
    stock_stream: StreamHub, crypto_stream: StreamHub | None = None
) -> Generator[PricingService, None, None]:
    """A :class:`~alpaca_di.services.pricing.PricingService` over the hubs; closed at shutdown.

    Example::

        pricing_service = StreamResource(
            init_pricing_service, stock_stream=stock_stream, crypto_stream=crypto_stream
        )
    """
    from alpaca_di.services.pricing import PricingService  # alpaca-py: when first built

    service = PricingService(stock_stream=stock_stream, crypto_stream=crypto_stream)
    try:
        yield service
    finally:
        service.close()


def init_trading_service(
    trading_stream: StreamHub, trading_client: TradingClient | None = None
) -> Generator[TradingService, None, None]:
    """A :class:`~alpaca_di.services.trading.TradingService` on the trading hub; closed at shutdown.

    Example::

        trading_service = StreamResource(
            init_trading_service, trading_stream=trading_stream, trading_client=trading_client
        )
    """
    from alpaca_di.services.trading import TradingService  # alpaca-py: when first built

    service = TradingService(trading_stream=trading_stream, trading_client=trading_client)
    try:
        yield service
    finally:
        service.close()


def init_alpaca_manager(
    trading_client: Callable[[], TradingClient],
    trading_service: Callable[[], OrderUpdates] | None = None,
    pricing_service: Callable[[], PriceSource] | None = None,
) -> Generator[AlpacaManager, None, None]:
    """An :class:`~alpaca_di.services.manager.AlpacaManager`; closed at shutdown.

    A resource (not a Factory) so that a manager resolved before
    ``shutdown_resources()`` learns that its container shut down: its calls then
    raise :class:`~alpaca_di.errors.ServiceClosedError` instead of using a closed
    HTTP session and closed services. The arguments are zero-argument callables
    (providers' ``.provider``), resolved when a method needs them
    (:meth:`AlpacaManager.deferred <alpaca_di.services.manager.AlpacaManager.deferred>`),
    so building the manager resolves none of them.

    Example::

        alpaca_manager = StreamResource(
            init_alpaca_manager, trading_client=trading_client.provider,
            trading_service=trading_service.provider,
            pricing_service=pricing_service.provider,
        )
    """
    from alpaca_di.services.manager import AlpacaManager  # alpaca-py: when first built

    manager = AlpacaManager.deferred(
        trading_client=trading_client,
        trading_service=trading_service,
        pricing_service=pricing_service,
    )
    try:
        yield manager
    finally:
        manager.close()


def init_trading_client(settings: AlpacaSettings) -> Generator[TradingClient, None, None]:
    """alpaca-py's ``TradingClient`` for ``settings``; its HTTP session is closed at shutdown.

    Building it does no network I/O. The secret is passed straight through and
    never bound to a local name of this frame (tracebacks that show locals stay
    clean).

    Example::

        trading_client = StreamResource(init_trading_client, settings)
    """
    from alpaca.trading.client import TradingClient

    client = TradingClient(
        settings.api_key,
        settings.secret_key.get_secret_value(),
        paper=settings.paper,
        url_override=settings.resolved_api_url,
    )
    try:
        yield client
    finally:
        session = getattr(client, "_session", None)
        if session is not None:
            session.close()
