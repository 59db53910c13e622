"""dependency-injector containers of alpaca-di.

:class:`AlpacaContainer` declares every stream, service and client; embed it in
your application container with ``providers.Container``::

    from dependency_injector import containers, providers
    from alpaca_di.containers import AlpacaContainer

    class App(containers.DeclarativeContainer):
        config = providers.Configuration()
        alpaca = providers.Container(AlpacaContainer, config=config.alpaca)

:func:`lifespan` wires a container's resources to an ASGI application's lifespan;
:func:`init_resources` and :func:`shutdown_resources` await them from async code
(typed, unlike the stubs' ``container.init_resources()``).
"""

from alpaca_di.containers.alpaca import AlpacaContainer, container_health, settings_from_config
from alpaca_di.containers.lifecycle import init_resources, lifespan, shutdown_resources

__all__ = [
    "AlpacaContainer",
    "container_health",
    "init_resources",
    "lifespan",
    "settings_from_config",
    "shutdown_resources",
]
