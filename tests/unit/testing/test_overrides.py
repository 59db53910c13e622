"""fake_container / reset_fake_container: the reset leaves the container as it found it."""

from __future__ import annotations

from dependency_injector import containers, providers

from alpaca_di import AlpacaContainer, ConnectionRegistry
from alpaca_di.testing import FakeStreamHub, fake_container, reset_fake_container
from alpaca_di.testing.fake_streams import FAKE_KEY_ID

STREAMS = ("stock_stream", "crypto_stream", "option_stream", "news_stream", "trading_stream")


def test_reset_removes_the_placeholder_config_and_the_registry_override() -> None:
    container = fake_container()
    assert container.config()["api_key"] == FAKE_KEY_ID
    assert container.registry.overridden

    reset_fake_container(container)

    assert not container.config()  # the placeholder keys and URLs are gone
    assert not container.registry.overridden
    assert not any(getattr(container, name).overridden for name in STREAMS)
    reset_fake_container(container)  # idempotent
    assert not container.config()


def test_reset_keeps_what_others_configured_and_overrode() -> None:
    class App(containers.DeclarativeContainer):
        config = providers.Configuration()
        alpaca = providers.Container(AlpacaContainer, config=config.alpaca)

    app = App()
    app.config.alpaca.from_dict({"api_key": "PKAPPKEY0001", "secret_key": "app-secret-1234"})
    mine = ConnectionRegistry()
    app.alpaca.registry.override(providers.Object(mine))

    fake_container(app.alpaca)  # has a config: only the streams are faked
    assert isinstance(app.alpaca.stock_stream(), FakeStreamHub)
    reset_fake_container(app.alpaca)

    assert app.alpaca.config()["api_key"] == "PKAPPKEY0001"
    assert app.alpaca.registry() is mine
    assert not app.alpaca.stock_stream.overridden


def test_reset_of_an_embedded_container_given_config_restores_the_hosts_config() -> None:
    class App(containers.DeclarativeContainer):
        config = providers.Configuration()
        alpaca = providers.Container(AlpacaContainer, config=config.alpaca)

    app = App()
    app.config.alpaca.from_dict({"api_key": "PKAPPKEY0002", "secret_key": "app-secret-5678"})

    fake_container(app.alpaca, feed="sip")
    assert app.alpaca.config()["api_key"] == FAKE_KEY_ID
    reset_fake_container(app.alpaca)

    assert app.alpaca.config()["api_key"] == "PKAPPKEY0002"
    assert "feed" not in app.alpaca.config()
    assert not app.alpaca.registry.overridden
