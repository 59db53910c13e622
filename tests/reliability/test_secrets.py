"""Secrets: the secret key is in no log line, repr, health report, message or traceback.

Every test of this suite already runs under the conftest guard (all structlog
output, rendered by structlog's default ``ConsoleRenderer``, and every stdlib
log record are scanned). Here the failure paths are provoked on purpose, each
error is *logged by the application* the way apps do (``log.exception``, which
the default renderer prints with every local variable of every frame), and its
traceback is scanned frame by frame. Reprs and health reports of everything
the user can hold are scanned too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from _reliability_support import FIGURES, IEX, KEY, SECRET
from alpaca.trading.requests import MarketOrderRequest
from dependency_injector import providers

from alpaca_di.containers import AlpacaContainer
from alpaca_di.credentials import Credentials
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.errors import (
    AlpacaAPIError,
    AuthenticationError,
    ConnectionLimitError,
    InsufficientSubscriptionError,
)
from alpaca_di.hub import ConnectionRegistry
from alpaca_di.protocol import StreamKind
from alpaca_di.settings import AlpacaSettings
from alpaca_di.testing.pytest_plugin import emulator_config
from alpaca_di.transport import ConnectionOptions

WAIT = 10.0
app_log = structlog.get_logger("app")


@pytest.fixture
def container(emulator: AlpacaEmulator) -> Iterator[AlpacaContainer]:
    registry = ConnectionRegistry()
    container = AlpacaContainer()
    container.config.from_dict(emulator_config(emulator, api_key=KEY, secret_key=SECRET))
    container.registry.override(providers.Object(registry))
    try:
        yield container
    finally:
        container.shutdown_resources()
        registry.close_all()


def _stream_failure(emulator: AlpacaEmulator, code: int, **options: Any) -> BaseException:
    """The error ``wait_ready`` raises when the server answers auth with ``code``."""
    emulator.reject_auth(code)
    registry = ConnectionRegistry()
    try:
        opts = ConnectionOptions(backoff_initial=0.01, backoff_max=0.02, **options)
        lease = registry.acquire(
            Credentials(KEY, SECRET), StreamKind.STOCK, emulator.data_url(IEX), opts
        )
        _kept1 = lease.hub.subscribe(quotes=["AAPL"])  # kept: unreachable ones are reclaimed
        try:
            lease.hub.wait_ready(WAIT)
        except Exception as exc:
            return exc
        raise AssertionError(f"auth rejected with {code} but wait_ready() returned")
    finally:
        emulator.reset_faults()
        registry.close_all()


def _raised(call: Callable[[], object]) -> BaseException:
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError("nothing was raised")


def _market(symbol: str = "AAPL") -> MarketOrderRequest:
    return MarketOrderRequest(symbol=symbol, qty=1, side="buy", time_in_force="day")


def test_errors_of_every_failure_path_logged_with_locals_hold_no_secret(
    emulator: AlpacaEmulator,
    container: AlpacaContainer,
    guard: Any,
    logged: Callable[[], str],
) -> None:
    errors: list[tuple[str, BaseException, type[BaseException]]] = [
        ("402 at auth", _stream_failure(emulator, 402), AuthenticationError),
        ("409 at auth", _stream_failure(emulator, 409), InsufficientSubscriptionError),
        (
            "406 past the grace window",
            _stream_failure(emulator, 406, connection_limit_grace=0.05),
            ConnectionLimitError,
        ),
    ]
    manager = container.alpaca_manager()
    errors.append(
        ("REST 422", _raised(lambda: manager.submit_order(_market("ZZZZZZ"))), AlpacaAPIError)
    )
    emulator.fail_rest(500, "internal server error")
    errors.append(("REST 500", _raised(manager.account), AlpacaAPIError))
    emulator.fail_rest(401, "request is not authorized", times=2)
    errors.append(("REST 401", _raised(manager.positions), AlpacaAPIError))
    errors.append(
        (
            "REST 401 in submit_and_wait",
            _raised(lambda: manager.submit_and_wait(_market(), 5)),
            AlpacaAPIError,
        )
    )
    emulator.refuse_handshake(503, times=10**6)
    registry = ConnectionRegistry()
    lease = registry.acquire(
        Credentials(KEY, SECRET),
        StreamKind.NEWS,
        emulator.data_url("/v1beta1/news"),
        ConnectionOptions(backoff_initial=0.01, backoff_max=0.02),
    )
    errors.append(
        ("handshake refused, not ready", _raised(lambda: lease.hub.wait_ready(0.3)), TimeoutError)
    )
    registry.close_all()
    emulator.reset_faults()

    mark = len(logged())
    for what, error, kind in errors:
        assert isinstance(error, kind), f"{what}: {type(error).__name__}: {error}"
        guard.exception(error)
        app_log.exception("the application logs what it caught", what=what, exc_info=error)
    rendered = logged()[mark:]
    # structlog's default renderer printed the tracebacks with their locals...
    assert "locals" in rendered
    # ...and the secret is in none of them (the conftest guard checks again at teardown).
    guard.text(rendered, "tracebacks rendered by structlog's default ConsoleRenderer")
    FIGURES["secrets: failure paths logged with locals and scanned"] += len(errors)


def test_reprs_and_health_reports_hold_no_secret(
    emulator: AlpacaEmulator, container: AlpacaContainer, guard: Any
) -> None:
    pricing = container.pricing_service()
    pricing.track("AAPL")
    trading = container.trading_service()
    trading.listen(WAIT)
    hub = container.stock_stream()
    hub.wait_ready(WAIT)
    sub = hub.subscribe(quotes=["MSFT"])
    settings = container.settings()
    credentials = container.credentials()
    objects: list[Any] = [
        hub,
        container.trading_stream(),
        sub,
        pricing,
        trading,
        container.alpaca_manager(),
        settings,
        credentials,
        credentials.secret,
        container.registry(),
        ConnectionOptions(),
        hub._connection,
        trading.stats(),
        sub.stats,
        emulator,
    ]
    for value in objects:
        guard.text(repr(value), f"repr({type(value).__name__})")
        guard.text(str(value), f"str({type(value).__name__})")
    reports = [
        hub.health().model_dump_json(),
        container.health().model_dump_json(),
        container.registry().health().model_dump_json(),
        repr(hub.health()),
        repr(settings.model_dump()),
        settings.model_dump_json(),
        repr(AlpacaSettings(api_key=KEY, secret_key=SECRET)),
    ]
    for text in reports:
        guard.text(text, "a health report or settings dump")
    assert credentials.fingerprint in reports[0]
    assert KEY not in reports[0], "the key id itself is masked in health reports too"
    FIGURES["secrets: reprs and reports scanned"] += len(objects) * 2 + len(reports)
