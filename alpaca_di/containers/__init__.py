"""dependency-injector containers of alpaca-di.

:class:`AlpacaContainer` declares every stream, service and client; embed it in
your application container with ``providers.Container``::

    from dependency_injector import containers, providers
    from alpaca_di.containers import AlpacaContainer

    class App(containers.DeclarativeContainer):
        config = providers.Configuration()
        alpaca = providers.Container(AlpacaContainer, config=config.alpaca)

:func:`lifespan` wires a container's resources to an ASGI application's lifespan.
"""

from alpaca_di.containers.alpaca import (
    AlpacaContainer,
    container_health,
    lifespan,
    settings_from_config,
)

__all__ = ["AlpacaContainer", "container_health", "lifespan", "settings_from_config"]
