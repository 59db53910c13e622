"""Fake containers: an ``AlpacaContainer`` whose stream providers are fake hubs.

Overriding providers is dependency-injector's own testing mechanism: the code
under test is built by the container as in production, and the real
``PricingService``, ``TradingService`` and ``Shared*Stream`` adapters run on
:class:`~alpaca_di.testing.fake_streams.FakeStreamHub` objects, in memory::

    container = fake_container()
    prices = container.pricing_service()
    prices.track("AAPL")
    fake_streams(container).stock.push_quote("AAPL", bid=10.0, ask=10.2)
    assert prices.price("AAPL") == 10.1
    reset_fake_container(container)               # shutdown, close the fakes, drop overrides
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from dependency_injector import containers, providers

from alpaca_di._aio import running_loop
from alpaca_di.containers import AlpacaContainer
from alpaca_di.hub.registry import ConnectionRegistry
from alpaca_di.protocol import StreamKind
from alpaca_di.testing.fake_streams import FAKE_KEY_ID, FAKE_SECRET, FakeStreamHub

__all__ = [
    "AnyContainer",
    "FakeStreams",
    "fake_container",
    "fake_streams",
    "override_streams",
    "reset_fake_container",
]

AnyContainer = containers.Container | providers.Container[Any]
"""An ``AlpacaContainer``, or the ``providers.Container`` embedding one (``app.alpaca``)."""

_C = TypeVar("_C", bound=containers.Container)
_D = TypeVar("_D")
_STREAM_PROVIDERS: dict[StreamKind, str] = {
    StreamKind.STOCK: "stock_stream",
    StreamKind.CRYPTO: "crypto_stream",
    StreamKind.OPTION: "option_stream",
    StreamKind.NEWS: "news_stream",
    StreamKind.TRADING: "trading_stream",
}
# What fake_container() put on a container (its config provider -> the placeholder
# config's override and the private registry's), for reset_fake_container() to remove.
_PLACED: weakref.WeakKeyDictionary[Any, tuple[Any, Any, ConnectionRegistry]] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True)
class FakeStreams:
    """The five fakes overriding a container's stream providers.

    Example::

        fakes = override_streams(container)
        fakes.stock.push_quote("AAPL")
        fakes[StreamKind.TRADING].push_trade_update("fill")
    """

    stock: FakeStreamHub
    crypto: FakeStreamHub
    option: FakeStreamHub
    news: FakeStreamHub
    trading: FakeStreamHub

    def __getitem__(self, kind: StreamKind | str) -> FakeStreamHub:
        hub: FakeStreamHub = getattr(self, StreamKind(kind).value)
        return hub

    def __iter__(self) -> Iterator[FakeStreamHub]:
        return iter((self.stock, self.crypto, self.option, self.news, self.trading))

    def close(self) -> None:
        """Close every fake (idempotent)."""
        for hub in self:
            hub.close()


def _streams(hubs: Mapping[StreamKind, FakeStreamHub]) -> FakeStreams:
    return FakeStreams(
        stock=hubs[StreamKind.STOCK],
        crypto=hubs[StreamKind.CRYPTO],
        option=hubs[StreamKind.OPTION],
        news=hubs[StreamKind.NEWS],
        trading=hubs[StreamKind.TRADING],
    )


def override_streams(container: AnyContainer) -> FakeStreams:
    """Override the five stream providers of an ``AlpacaContainer`` with new fakes.

    Everything built on the streams (``pricing_service``, ``trading_service``,
    ``shared_*_stream``, ``health``) then runs on the fakes. Undo with
    :func:`reset_fake_container`.

    Example::

        container = App().alpaca()                 # or an AlpacaContainer
        fakes = override_streams(container)
        fakes.stock.push_quote("AAPL", bid=1.0)
    """
    hubs = {kind: FakeStreamHub(kind) for kind in _STREAM_PROVIDERS}
    for kind, name in _STREAM_PROVIDERS.items():
        getattr(container, name).override(providers.Object(hubs[kind]))
    return _streams(hubs)


def fake_streams(container: AnyContainer) -> FakeStreams:
    """The fakes currently overriding ``container``'s stream providers.

    Raises ``LookupError`` when a stream provider is not overridden by a fake.

    Example::

        fake_streams(container).trading.push_trade_update("fill", symbol="AAPL")
    """
    found: dict[StreamKind, FakeStreamHub] = {}
    for kind, name in _STREAM_PROVIDERS.items():
        hub = _fake_of(getattr(container, name))
        if hub is None:
            raise LookupError(f"{name} is not overridden by a FakeStreamHub")
        found[kind] = hub
    return _streams(found)


@overload
def fake_container(container: None = None, **config: Any) -> AlpacaContainer: ...


@overload
def fake_container(container: _C, **config: Any) -> _C: ...


@overload
def fake_container(
    container: providers.Container[_D], **config: Any
) -> providers.Container[_D]: ...


def fake_container(container: Any = None, **config: Any) -> Any:
    """An ``AlpacaContainer`` whose five streams are :class:`FakeStreamHub` objects.

    Without ``container`` a new ``AlpacaContainer`` is built and configured
    with placeholder keys (:data:`FAKE_KEY_ID`), URLs on a closed loopback port
    and a private registry (never used), with ``config`` entries on top. Given a
    ``container`` (yours, or ``app.alpaca`` of a host container), its streams are
    overridden in place, and its configuration is set only when ``config`` is
    given or the container has none. Pair with :func:`reset_fake_container`.

    Example::

        container = fake_container(feed="sip")
        try:
            prices = container.pricing_service()
            prices.track("AAPL")
            fake_streams(container).stock.push_quote("AAPL", bid=10.0, ask=10.2)
            assert prices.price("AAPL") == 10.1
        finally:
            reset_fake_container(container)
    """
    if container is None:
        container = AlpacaContainer()
    if config or not container.config():
        values: dict[str, Any] = {
            "api_key": FAKE_KEY_ID,
            "secret_key": FAKE_SECRET,
            "data_stream_url": "ws://127.0.0.1:9",
            "trading_stream_url": "ws://127.0.0.1:9/stream",
            "api_url": "http://127.0.0.1:9",
        }
        values.update(config)
        container.config.from_dict(values)
        registry = ConnectionRegistry()
        container.registry.override(providers.Object(registry))
        placed = (container.config.last_overriding, container.registry.last_overriding, registry)
        _PLACED[container.config] = placed
    override_streams(container)
    return container


def reset_fake_container(container: AnyContainer) -> None:
    """Shut ``container`` down, close its fakes and remove their overrides. Idempotent.

    What :func:`fake_container` set up goes too: its placeholder configuration
    and its private registry's override, so the container is left as it was
    before (overrides made by others stay).

    Example::

        container = fake_container()
        ...
        reset_fake_container(container)
    """
    if running_loop() is None:
        container.shutdown_resources()
    else:
        # On a loop thread shutdown_resources() would return a coroutine; the
        # cleanups are synchronous, so run the sync path on a helper thread.
        errors: list[BaseException] = []

        def shutdown() -> None:
            try:
                container.shutdown_resources()
            except BaseException as exc:  # pragma: no cover - re-raised below
                errors.append(exc)

        thread = threading.Thread(target=shutdown, name="alpaca-di-fake-shutdown")
        thread.start()
        thread.join()
        if errors:
            raise errors[0]
    for name in _STREAM_PROVIDERS.values():
        provider = getattr(container, name)
        while True:
            hub = _fake_of(provider)
            if hub is None:
                break
            hub.close()
            provider.reset_last_overriding()
    placed = _PLACED.pop(container.config, None)
    if placed is not None:
        config_override, registry_override, registry = placed
        _drop_override(container.config, config_override)
        _drop_override(container.registry, registry_override)
        registry.close_all()


def _drop_override(provider: providers.Provider[Any], override: Any) -> None:
    """Remove ``override`` from ``provider``'s overrides, keeping the others in order."""
    others = [item for item in provider.overridden if item is not override]
    if len(others) == len(provider.overridden):
        return
    provider.reset_override()
    for item in others:
        provider.override(item)


def _fake_of(provider: providers.Provider[Any]) -> FakeStreamHub | None:
    overriding = provider.last_overriding if provider.overridden else None
    if isinstance(overriding, providers.Object):
        value = overriding()
        if isinstance(value, FakeStreamHub):
            return value
    return None
