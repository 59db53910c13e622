"""Starting and stopping a container's resources from async code, typed.

Inside a running loop dependency-injector's ``init_resources()`` and
``shutdown_resources()`` return awaitables, but its stubs say ``None`` (so
``await app.init_resources()`` needs a ``type: ignore`` under ``mypy --strict``).
These helpers await whatever the calls return::

    from alpaca_di.containers import init_resources, shutdown_resources

    async def main() -> None:
        app = App()
        await init_resources(app)
        try:
            ...
        finally:
            await shutdown_resources(app)

:func:`lifespan` does the same around an ASGI application's lifetime.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from dependency_injector import containers, providers

__all__ = ["init_resources", "lifespan", "shutdown_resources"]


async def init_resources(
    container: containers.Container,
    resource_type: type[providers.Resource[Any]] = providers.Resource,
) -> None:
    """Initialise ``container``'s resources (of ``resource_type``) and await them.

    Example::

        await init_resources(app)                   # every resource
        await init_resources(app, StreamResource)   # the streams only
    """
    await _settled(container.init_resources(resource_type))


async def shutdown_resources(
    container: containers.Container,
    resource_type: type[providers.Resource[Any]] = providers.Resource,
) -> None:
    """Shut ``container``'s resources (of ``resource_type``) down and await their cleanup.

    Example::

        await shutdown_resources(app)   # every connection closed with a close frame
    """
    await _settled(container.shutdown_resources(resource_type))


async def _settled(result: object) -> None:
    if inspect.isawaitable(result):
        await result


def lifespan(
    container: containers.Container,
    resource_type: type[providers.Resource[Any]] = providers.Resource,
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """An ASGI lifespan (FastAPI, Starlette) that inits and shuts down ``container``.

    Equivalent to dependency-injector's
    ``dependency_injector.ext.starlette.Lifespan``, as a plain function::

        from fastapi import FastAPI
        from alpaca_di.containers import lifespan

        container = App()
        app = FastAPI(lifespan=lifespan(container))
        container.wire(modules=[__name__])

    Resources initialised here run on the server's event loop; shutdown awaits
    their cleanup and runs even when the application failed.
    """

    @asynccontextmanager
    async def _lifespan(app: Any) -> AsyncIterator[None]:
        await init_resources(container, resource_type)
        try:
            yield
        finally:
            await shutdown_resources(container, resource_type)

    return _lifespan
