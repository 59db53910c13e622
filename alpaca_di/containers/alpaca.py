"""``AlpacaContainer``: every Alpaca connection of an application, as dependency-injector providers.

See :class:`AlpacaContainer` for the providers and a usage example, and
:func:`lifespan` for ASGI applications.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dependency_injector import containers, providers

from alpaca_di.compat.streams import (
    SharedCryptoDataStream,
    SharedNewsDataStream,
    SharedOptionDataStream,
    SharedStockDataStream,
    SharedTradingStream,
)
from alpaca_di.credentials import Credentials
from alpaca_di.errors import ConfigurationError
from alpaca_di.hub.health import ConnectionHealth, HealthReport
from alpaca_di.providers.resources import StreamResource
from alpaca_di.providers.streams import (
    init_alpaca_manager,
    init_crypto_history_client,
    init_crypto_stream,
    init_news_client,
    init_news_stream,
    init_option_history_client,
    init_option_stream,
    init_pricing_service,
    init_stock_history_client,
    init_stock_stream,
    init_trading_client,
    init_trading_service,
    init_trading_stream,
)
from alpaca_di.scaleout.registry import registry_for
from alpaca_di.settings import AlpacaSettings, settings_from_mapping

__all__ = ["AlpacaContainer", "container_health", "settings_from_config"]


def settings_from_config(config: Mapping[str, Any] | None) -> AlpacaSettings:
    """Turn the container's ``config`` into :class:`~alpaca_di.settings.AlpacaSettings`.

    A configuration with at least one value is the single source of truth
    (:func:`~alpaca_di.settings.settings_from_mapping`: keys are the field names,
    nothing is read from the environment). An empty one (never loaded, or only
    ``None`` values) means "read the environment": ``AlpacaSettings()`` with
    ``APCA_API_KEY_ID``, ``APCA_API_SECRET_KEY`` and ``ALPACA_*``.

    Errors raise one :class:`~alpaca_di.errors.ConfigurationError` naming every bad
    key and its environment variable, never the secret; its traceback starts
    here, so a traceback printer that shows local variables sees no secret.

    Example::

        settings_from_config({"api_key": "PK...", "secret_key": "...", "feed": "sip"})
        settings_from_config({})          # from the environment alone
    """
    try:
        if config is None or (
            isinstance(config, Mapping) and all(value is None for value in config.values())
        ):
            return AlpacaSettings()
        return settings_from_mapping(config)
    except ConfigurationError as exc:
        message, fields, env_vars = str(exc), exc.fields, exc.env_vars
    # Drop the mapping (it holds the secret) before raising: a traceback rendered
    # with local variables (structlog + rich) then shows nothing sensitive.
    config = None
    raise ConfigurationError(message, fields=fields, env_vars=env_vars) from None


def _credentials_of(settings: AlpacaSettings) -> Credentials:
    return settings.credentials()


def container_health(*stream_providers: providers.Provider[Any]) -> HealthReport:
    """The :class:`~alpaca_di.hub.health.HealthReport` of one container.

    Lists the hub of every stream resource the container has initialised, and of
    every stream provider overridden with something that reports ``health()`` (a
    fake stream in a test). Nothing is initialised or connected by asking.

    Example::

        report = container.health()
        print(report.model_dump_json(indent=2))
    """
    connections: list[ConnectionHealth] = []
    seen: set[int] = set()
    for provider in stream_providers:
        in_use = provider.overridden or (
            isinstance(provider, StreamResource) and provider.initialized
        )
        if not in_use:
            continue
        stream = provider()
        health = getattr(stream, "health", None)
        if callable(health) and id(stream) not in seen:
            seen.add(id(stream))
            connections.append(health())
    return HealthReport.of(connections)


class AlpacaContainer(containers.DeclarativeContainer):
    """Alpaca's streams, services and REST client, sharing one connection per endpoint.

    Providers:

    * ``config`` -- :class:`~dependency_injector.providers.Configuration`; keys are
      the fields of :class:`~alpaca_di.settings.AlpacaSettings` (``api_key``,
      ``secret_key``, ``paper``, ``feed``, ``data_stream_url``, ``backoff_initial``
      ...). Left empty, everything is read from the environment
      (``APCA_API_KEY_ID``, ``APCA_API_SECRET_KEY``, ``ALPACA_*``).
    * ``settings`` -- the resolved :class:`~alpaca_di.settings.AlpacaSettings`;
      a bad or missing value raises :class:`~alpaca_di.errors.ConfigurationError`
      naming the key and its environment variable, at first resolution.
    * ``credentials`` -- :class:`~alpaca_di.settings.Credentials` (the sharing key).
    * ``registry`` -- the :class:`~alpaca_di.providers.ConnectionRegistry`
      picked by the ``sharing`` setting: ``local`` (default) is the process-wide
      :meth:`ConnectionRegistry.default() <alpaca_di.providers.ConnectionRegistry.default>`,
      so every container with the same credentials shares one socket per
      endpoint; ``redis`` shares one socket per deployment
      (:func:`~alpaca_di.scaleout.registry.registry_for`). Tests isolate
      themselves with ``container.registry.override(ConnectionRegistry())``.
    * ``stock_stream``, ``crypto_stream``, ``option_stream``, ``news_stream``,
      ``trading_stream`` -- :class:`~alpaca_di.providers.resources.StreamResource`
      providers of :class:`~alpaca_di.services.StreamHub`: a lease on the shared
      hub, taken at first resolution (thread-safe: one init for any number of
      racing threads) and given back by ``shutdown_resources()``. No socket
      opens before the first subscription.
    * ``trading_client`` -- alpaca-py's ``TradingClient`` (``url_override`` =
      ``settings.resolved_api_url``); a resource so that its HTTP session is
      closed at shutdown. Building it does no network I/O.
    * ``stock_history_client``, ``crypto_history_client``, ``option_history_client``,
      ``news_client`` -- alpaca-py's ``StockHistoricalDataClient``,
      ``CryptoHistoricalDataClient``, ``OptionHistoricalDataClient`` and
      ``NewsClient`` with the same key pair, on ``settings.resolved_data_url``
      (``ALPACA_DATA_URL``; the emulator's ``api_url`` in tests). Resources, so
      their HTTP sessions close at shutdown; building one does no network I/O.
      The stream hubs use the first three for bar backfill; override one with a
      :class:`~alpaca_di.testing.FakeHistoricalDataClient` in a test.
    * ``pricing_service``, ``trading_service`` -- one
      :class:`~alpaca_di.services.pricing.PricingService` and one
      :class:`~alpaca_di.services.trading.TradingService` per container, like
      Singletons, but built as ``StreamResource`` providers that depend directly
      on the hubs. That buys three things a ``Singleton`` cannot give: first use
      is thread-safe; ``shutdown_resources()`` closes the service *before* its
      hubs (dependency-injector shuts dependants down first, and a Singleton is
      invisible to that ordering); and after a shutdown the next resolution
      builds a fresh service on the fresh connections, instead of handing out a
      service bound to closed hubs.
    * ``alpaca_manager`` -- :class:`~alpaca_di.services.manager.AlpacaManager`
      (a stateless facade over the client and the services), one per container;
      a ``StreamResource`` so that ``shutdown_resources()`` closes it with the
      services it wraps (its calls then raise
      :class:`~alpaca_di.errors.ServiceClosedError`). It is built with
      :meth:`AlpacaManager.deferred <alpaca_di.services.manager.AlpacaManager.deferred>`:
      ``trading_client``, ``trading_service`` and ``pricing_service`` are
      resolved only when a method needs them, so overriding the one provider a
      component uses (for example ``trading_client`` with a
      :class:`~alpaca_di.testing.FakeTradingClient`) is enough, without
      settings for the others.
    * ``shared_stock_stream`` ... ``shared_trading_stream`` -- Factories of the
      alpaca-py-shaped ``Shared*Stream`` adapters over the hubs.
    * ``health`` -- a :class:`~alpaca_di.hub.health.HealthReport` of *this*
      container's initialised connections; it never initialises or connects
      anything.

    Usage, embedded in an application container::

        from dependency_injector import containers, providers
        from alpaca_di import AlpacaContainer, AlpacaSettings

        class App(containers.DeclarativeContainer):
            config = providers.Configuration()
            alpaca = providers.Container(AlpacaContainer, config=config.alpaca)
            strategy = providers.Factory(Strategy, prices=alpaca.pricing_service)

        app = App()
        app.config.alpaca.from_pydantic(AlpacaSettings())   # or from_dict({...}),
                                                              # or nothing: environment
        app.init_resources()          # sync app: connections run on one runtime thread
        ...
        app.shutdown_resources()      # closes every connection (close frames)

    In an async application, await the same two calls inside the running loop
    (the sockets stay on the runtime thread; async handlers run on your loop)::

        async def main() -> None:
            app = App()
            await app.init_resources()
            try:
                ...
            finally:
                await app.shutdown_resources()

        asyncio.run(main())

    Only the streams: ``app.init_resources(StreamResource)``.
    """

    config = providers.Configuration()
    settings = providers.Callable(settings_from_config, config)
    credentials = providers.Callable(_credentials_of, settings)
    registry = providers.Callable(registry_for, settings)

    # Resolved only when a backfill needs them (the hubs hold their .provider).
    stock_history_client = StreamResource(init_stock_history_client, settings=settings)
    crypto_history_client = StreamResource(init_crypto_history_client, settings=settings)
    option_history_client = StreamResource(init_option_history_client, settings=settings)
    news_client = StreamResource(init_news_client, settings=settings)

    stock_stream = StreamResource(
        init_stock_stream,
        registry=registry,
        credentials=credentials,
        settings=settings,
        history_client=stock_history_client.provider,
    )
    crypto_stream = StreamResource(
        init_crypto_stream,
        registry=registry,
        credentials=credentials,
        settings=settings,
        history_client=crypto_history_client.provider,
    )
    option_stream = StreamResource(
        init_option_stream,
        registry=registry,
        credentials=credentials,
        settings=settings,
    )
    news_stream = StreamResource(
        init_news_stream,
        registry=registry,
        credentials=credentials,
        settings=settings,
    )
    trading_stream = StreamResource(
        init_trading_stream,
        registry=registry,
        credentials=credentials,
        settings=settings,
    )

    trading_client = StreamResource(init_trading_client, settings=settings)
    pricing_service = StreamResource(
        init_pricing_service, stock_stream=stock_stream, crypto_stream=crypto_stream
    )
    trading_service = StreamResource(
        init_trading_service, trading_stream=trading_stream, trading_client=trading_client
    )
    # Lazy: the manager resolves each provider when a method needs it, so a test
    # overrides only the one its component uses (no settings for the others).
    alpaca_manager = StreamResource(
        init_alpaca_manager,
        trading_client=trading_client.provider,
        trading_service=trading_service.provider,
        pricing_service=pricing_service.provider,
    )

    shared_stock_stream = providers.Factory(SharedStockDataStream, stock_stream)
    shared_crypto_stream = providers.Factory(SharedCryptoDataStream, crypto_stream)
    shared_option_stream = providers.Factory(SharedOptionDataStream, option_stream)
    shared_news_stream = providers.Factory(SharedNewsDataStream, news_stream)
    shared_trading_stream = providers.Factory(SharedTradingStream, trading_stream)

    health = providers.Callable(
        container_health,
        stock_stream.provider,
        crypto_stream.provider,
        option_stream.provider,
        news_stream.provider,
        trading_stream.provider,
    )
