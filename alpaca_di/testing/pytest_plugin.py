"""pytest plugin of alpaca-di: fixtures for testing code that uses ``AlpacaContainer``.

Installed with alpaca-di (the ``pytest11`` entry point ``alpaca_di``), so the
fixtures are available in every test suite without any import:

``alpaca_emulator``
    A running :class:`~alpaca_di.testing.AlpacaEmulator` on ``127.0.0.1``
    (free ports, no synthetic data), stopped at teardown.

``alpaca_container``
    An ``AlpacaContainer`` wired to ``alpaca_emulator``: every URL points at it,
    the key pair is :data:`TEST_KEY_ID` / :data:`TEST_SECRET`, reconnects back
    off fast (10-50 ms), and its ``registry`` is a fresh
    :class:`~alpaca_di.providers.ConnectionRegistry`, so no connection is shared
    with another test. Teardown shuts every resource down and closes whatever
    the registry still holds.

``alpaca_fake_container``
    An ``AlpacaContainer`` whose five stream providers are
    :class:`~alpaca_di.testing.fake_streams.FakeStreamHub` objects (no socket at all);
    the real services run on top of them. Reach the fakes with
    ``alpaca_fake_container.stock_stream()`` or
    :func:`~alpaca_di.testing.overrides.fake_streams`. Teardown shuts down, closes
    the fakes and removes the overrides.

Example::

    from alpaca_di.testing.messages import quote
    from alpaca_di.testing.pytest_plugin import TEST_KEY_ID

    def test_price(alpaca_container, alpaca_emulator):
        prices = alpaca_container.pricing_service()
        prices.track("AAPL")
        alpaca_emulator.wait_until(
            lambda: "AAPL" in alpaca_emulator.subscriptions(TEST_KEY_ID, "/v2/iex")["quotes"])
        alpaca_emulator.publish("/v2/iex", [quote("AAPL", bid=10.0, ask=10.2)])
        assert prices.wait_for_price("AAPL", timeout=5) == 10.1

    def test_strategy(alpaca_fake_container):
        prices = alpaca_fake_container.pricing_service()
        prices.track("AAPL")
        alpaca_fake_container.stock_stream().push_quote("AAPL", bid=10.0, ask=10.2)
        assert prices.price("AAPL") == 10.1

In an ``async def`` test, connections opened by the container run on the test's
event loop: ``await alpaca_container.shutdown_resources()`` before the test
returns (the teardown then has nothing left to close).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dependency_injector import providers

from alpaca_di.containers import AlpacaContainer
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.hub.registry import ConnectionRegistry
from alpaca_di.testing import register_secret
from alpaca_di.testing.overrides import fake_container, reset_fake_container

__all__ = [
    "TEST_KEY_ID",
    "TEST_SECRET",
    "alpaca_container",
    "alpaca_emulator",
    "alpaca_fake_container",
    "emulator_config",
]

TEST_KEY_ID = "PKPYTEST00000001"
"""The key id ``alpaca_container`` uses."""
TEST_SECRET = "alpaca-di-pytest-secret-do-not-leak"  # noqa: S105 - a test placeholder
"""The secret ``alpaca_container`` uses (the emulator accepts any key pair)."""

register_secret(TEST_SECRET)


def emulator_config(emulator: AlpacaEmulator, **overrides: Any) -> dict[str, Any]:
    """A container config pointing every URL at ``emulator``, with fast backoff.

    Example::

        container.config.from_dict(emulator_config(emu, feed="sip"))
    """
    config: dict[str, Any] = {
        "api_key": TEST_KEY_ID,
        "secret_key": TEST_SECRET,
        "data_stream_url": emulator.ws_url,
        "trading_stream_url": emulator.trading_stream_url,
        "api_url": emulator.api_url,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
        "open_timeout": 5.0,
    }
    config.update(overrides)
    return config


@pytest.fixture
def alpaca_emulator() -> Iterator[AlpacaEmulator]:
    """A running :class:`~alpaca_di.testing.AlpacaEmulator`, stopped at teardown."""
    with AlpacaEmulator() as emulator:
        yield emulator


@pytest.fixture
def alpaca_container(alpaca_emulator: AlpacaEmulator) -> Iterator[AlpacaContainer]:
    """An ``AlpacaContainer`` wired to ``alpaca_emulator`` with a private registry."""
    registry = ConnectionRegistry()
    container = AlpacaContainer()
    container.config.from_dict(emulator_config(alpaca_emulator))
    container.registry.override(providers.Object(registry))
    try:
        yield container
    finally:
        try:
            container.shutdown_resources()
        finally:
            registry.close_all()
            container.registry.reset_override()


@pytest.fixture
def alpaca_fake_container() -> Iterator[AlpacaContainer]:
    """An ``AlpacaContainer`` whose stream providers are in-memory fakes."""
    container = fake_container()
    try:
        yield container
    finally:
        reset_fake_container(container)
