"""``StreamResource``: a dependency-injector ``Resource`` that is safe to share.

dependency-injector's own :class:`~dependency_injector.providers.Resource` has three
gaps that matter for a process-wide connection:

* resolved by many threads at once, it runs the initializer once per thread and
  leaks all but one result;
* ``container.shutdown_resources()`` stops at the first cleanup that raises, so
  the resources after it are never closed;
* a synchronous resource cannot be awaited: ``await container.init_resources()``
  and ``await container.shutdown_resources()`` fail inside a running loop.

:class:`StreamResource` closes them and changes nothing else: same constructor,
same injections, same ``init_resources(resource_type)`` filtering::

    from dependency_injector import containers, providers
    from alpaca_di.providers.resources import StreamResource

    def init_stock_stream(registry, credentials):
        lease = registry.acquire(credentials, "stock")
        try:
            yield lease.hub
        finally:
            lease.release()

    class Streams(containers.DeclarativeContainer):
        registry = providers.Dependency()
        credentials = providers.Dependency()
        stock_stream = StreamResource(init_stock_stream, registry, credentials)
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar, cast, overload

import structlog
from dependency_injector import providers, resources

from alpaca_di._aio import running_loop
from alpaca_di._interrupts import deferred_interrupts

__all__ = ["StreamResource"]

T = TypeVar("T")

_logger = structlog.get_logger(__name__)

# Guards only the lazy creation of a provider's own lock (see StreamResource._guard).
_LOCK_CREATION = threading.Lock()


def _is_async_initializer(provides: object) -> bool:
    target = getattr(provides, "__wrapped__", provides)  # DI wraps generator functions
    if inspect.isclass(target):
        return issubclass(target, resources.AsyncResource)
    return inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)


class StreamResource(providers.Resource[T]):
    """A ``providers.Resource`` that initialises once, synchronously, under a lock.

    The initializer is a plain generator function (or a context manager, or a
    ``resources.Resource`` class, or a plain callable): the code before ``yield``
    opens, the ``finally`` block after it closes. Async initializers are refused
    with ``TypeError``: resolving a ``StreamResource`` never needs ``await``, so
    Factories and Singletons that depend on it stay synchronous.

    Semantics:

    * **First use is thread-safe.** Each provider (and each copy a container
      makes of it) has its own re-entrant lock; the first caller runs the
      initializer, concurrent callers wait and receive the same object.
      ``shutdown()`` waits for an initialisation in progress, then runs the
      cleanup without holding the lock.
    * **init()** initialises synchronously and returns the resource. When called
      on a thread that is running an asyncio loop, it returns an already
      completed ``Future`` holding the resource instead, so that
      ``await container.init_resources()`` works. An initializer error is raised
      at the call, in both cases.
    * **shutdown()** runs the cleanup synchronously. It never raises: an error is
      logged (``stream_resource.shutdown_failed``, with traceback) and kept in
      :attr:`last_shutdown_error`, so ``container.shutdown_resources()`` goes on
      closing the other resources. It returns ``None``, or a completed ``Future``
      when called on a thread running a loop.
    * **Containers.** ``container.shutdown_resources()`` takes dependency-injector's
      async path, and must be awaited, exactly when it is called on a thread with
      a running loop; otherwise it closes everything before returning. (A hidden,
      never-initialised marker resource, reachable through :attr:`related`,
      makes that choice; the provider's own async mode stays off, so injecting it
      with ``@inject`` into ``async def`` functions keeps working.) Calling it
      un-awaited from a loop thread closes nothing, as with any async resource;
      from sync code running inside a loop, use
      ``await asyncio.to_thread(container.shutdown_resources)``.
    * **Inside a loop** the initializer and the cleanup still run synchronously,
      on the loop's thread: they must be quick (acquiring or releasing a lease is).
    * **Re-use.** After shutdown the next resolution initialises a fresh object.

    Sync application::

        container = App()
        container.init_resources()           # or just resolve: container.stock_stream()
        ...
        container.shutdown_resources()       # closes all, even if one cleanup fails

    Async application (FastAPI lifespan, ``asyncio.run``)::

        async def main() -> None:
            container = App()
            await container.init_resources()
            try:
                ...
            finally:
                await container.shutdown_resources()

    Only the streams: ``container.init_resources(StreamResource)`` and
    ``container.shutdown_resources(StreamResource)``.

    Attributes:
        last_shutdown_error: the exception the most recent cleanup raised, or
            ``None`` if it succeeded (or nothing was shut down yet).
    """

    last_shutdown_error: Exception | None

    @overload
    def __init__(
        self,
        provides: Callable[..., Iterator[T]] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None: ...

    @overload
    def __init__(
        self,
        provides: Callable[..., AbstractContextManager[T]] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None: ...

    @overload
    def __init__(
        self,
        provides: Callable[..., T] | str | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None: ...

    def __init__(self, provides: Any = None, *args: Any, **kwargs: Any) -> None:
        # dependency-injector copies providers with ``type(self)()`` followed by
        # set_provides/set_args/set_kwargs: every copy runs this and gets its own lock.
        self._lock_owner_id = id(self)
        self._lock = threading.RLock()
        self.last_shutdown_error = None
        super().__init__(provides, *args, **kwargs)

    @property
    def _guard(self) -> threading.RLock:
        """This provider's own lock, recreated if ``__dict__`` was copied from another."""
        if self.__dict__.get("_lock_owner_id") != id(self):
            with _LOCK_CREATION:
                if self.__dict__.get("_lock_owner_id") != id(self):
                    self._lock = threading.RLock()
                    self._lock_owner_id = id(self)
        return self._lock

    def set_provides(self, provides: Any) -> StreamResource[T]:
        """Set the initializer; async ones are refused with ``TypeError``."""
        super().set_provides(provides)
        if _is_async_initializer(self.provides):
            super().set_provides(None)
            raise TypeError(
                f"{type(self).__name__} initialises synchronously; "
                f"{provides!r} is async. Use a plain generator function "
                "(def init_x(...): ... yield resource ...)."
            )
        return self

    def _provide(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # A Ctrl-C between the initializer taking its lease and dependency-injector
        # recording the resource would leave a lease no shutdown releases: the
        # (network-free) initialisation completes first, then the interrupt lands.
        # Once initialised, a resolution only returns the resource: nothing to hold.
        interrupts = nullcontext() if self.initialized else deferred_interrupts()
        with interrupts, self._guard:
            resource = cast(Any, super())._provide(args, kwargs)
            if asyncio.isfuture(resource) or inspect.iscoroutine(resource):
                # An async dependency made dependency-injector start an async init.
                cast(Any, self).reset_state()  # public in DI, missing from its stub
                if inspect.iscoroutine(resource):
                    resource.close()
                else:
                    resource.cancel()
                raise TypeError(
                    f"{self._label} initialises synchronously, but one of its "
                    "dependencies is async; inject synchronous providers only"
                )
            return resource

    # The stub declares Optional[Awaitable[T]], but dependency-injector's sync init
    # returns the resource itself; so does this one, outside a running loop.
    def init(self) -> T | asyncio.Future[T]:  # type: ignore[override]
        """Initialise now; inside a running loop, return a completed Future of it."""
        resource = self()
        loop = running_loop()
        if loop is None or asyncio.isfuture(resource) or inspect.iscoroutine(resource):
            return resource
        future: asyncio.Future[T] = loop.create_future()
        future.set_result(resource)
        return future

    def shutdown(self) -> asyncio.Future[None] | None:
        """Run the cleanup; never raises (see the class docstring)."""
        with self._guard:
            pass  # let a first-use initialisation in progress finish, so it gets closed
        loop = running_loop()
        # Tasks the cleanup starts on this loop (a close handshake that cannot block
        # the loop) are what the async shutdown must await before it completes.
        before = asyncio.all_tasks(loop) if loop is not None else set()
        # The cleanup runs outside the lock: it may wait for threads (handlers) that
        # are themselves resolving this provider.
        if self.initialized:
            try:
                # Returns NULL_AWAITABLE at most: async states are refused in _provide.
                super().shutdown()
            except Exception as exc:
                self.last_shutdown_error = exc
                _logger.exception(
                    "stream_resource.shutdown_failed",
                    resource=self._label,
                    error_type=type(exc).__name__,
                )
            else:
                self.last_shutdown_error = None
        if loop is None:
            return None
        started = asyncio.all_tasks(loop) - before
        if started:
            return asyncio.ensure_future(self._await_cleanup_tasks(started))
        future: asyncio.Future[None] = loop.create_future()
        future.set_result(None)
        return future

    async def _await_cleanup_tasks(self, tasks: set[asyncio.Task[Any]]) -> None:
        """Wait for the tasks a cleanup started; log their failures, never raise."""
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, Exception):
                self.last_shutdown_error = result
                _logger.error(
                    "stream_resource.shutdown_failed",
                    resource=self._label,
                    error_type=type(result).__name__,
                )

    @property
    def related(self) -> Iterator[providers.Provider[Any]]:
        """Related providers, plus the marker that picks the async shutdown path."""
        yield from super().related
        yield _ASYNC_SHUTDOWN_MARKER

    @property
    def _label(self) -> str:
        provides = self.provides
        target = getattr(provides, "__wrapped__", provides)
        name = getattr(target, "__qualname__", None) or type(target).__name__
        return f"{type(self).__name__}({name})"


class _AsyncShutdownMarker(StreamResource[None]):
    """Never resolved, never initialised: it only votes for the async shutdown path.

    ``Container.shutdown_resources()`` returns a coroutine when
    ``is_async_mode_enabled()`` is true for any resource it traverses. Overriding
    that on ``StreamResource`` itself would also make ``@inject async def``
    functions await the injected object, so the vote comes from this marker, which
    is reachable only through ``StreamResource.related`` and never injected.
    """

    def is_async_mode_enabled(self) -> bool:
        return running_loop() is not None

    def init(self) -> None:
        return None

    def shutdown(self) -> None:
        return None

    @property
    def related(self) -> Iterator[providers.Provider[Any]]:
        return iter(())

    def _provide(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        raise RuntimeError("internal marker of alpaca_di.providers.resources; not resolvable")

    def __deepcopy__(self, memo: dict[Any, Any] | None) -> _AsyncShutdownMarker:
        return self


_ASYNC_SHUTDOWN_MARKER = _AsyncShutdownMarker()
