"""Test helpers shipped with alpaca-di (like ``structlog.testing``).

* :class:`AlpacaEmulator` -- a loopback Alpaca (data and trading WebSockets, REST).
* :class:`FakeStreamHub` -- a real hub on an in-memory upstream
  (:class:`~alpaca_di.testing.memory.MemoryUpstream`) that tests push messages
  into, and :func:`fake_container` to run an ``AlpacaContainer`` on them.
* :class:`FakePriceSource`, :class:`FakeOrderUpdates` -- fakes of the service protocols.
* :class:`FakeTradingClient` -- alpaca-py's ``TradingClient`` in memory; its orders
  push ``new`` / ``fill`` (or ``rejected``, partial fills) into a ``FakeOrderUpdates``.
* :class:`FakeHistoricalDataClient` -- alpaca-py's historical bar clients in memory (for
  the ``*_history_client`` providers and bar backfill).
* :class:`Recorder` -- a handler that records messages and waits for them.
* :mod:`~alpaca_di.testing.messages` -- wire-form quote/trade/bar/news builders.
* :func:`register_secret` / :func:`find_leaks` -- the secrets a test suite must
  never print, and a scanner for captured output.
* the pytest plugin (:mod:`alpaca_di.testing.pytest_plugin`): fixtures
  ``alpaca_emulator``, ``alpaca_container``, ``alpaca_fake_container``.

Example::

    from alpaca_di.testing import AlpacaEmulator, Recorder, messages

    with AlpacaEmulator() as emu:
        ...
        emu.publish("/v2/iex", [messages.quote("AAPL", bid=10.0)])
        recorder.wait_for(1, timeout=5)
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.testing import fakes, messages
from alpaca_di.testing.fakes import (
    FakeOrderUpdates,
    FakePriceSource,
    FakeStreamHub,
    FakeSubscription,
    fake_container,
    fake_streams,
    override_streams,
    reset_fake_container,
)
from alpaca_di.testing.history_client import FakeHistoricalDataClient
from alpaca_di.testing.memory import MemoryUpstream
from alpaca_di.testing.recorder import Recorder
from alpaca_di.testing.trading_client import FakeTradingClient

__all__ = [
    "AlpacaEmulator",
    "FakeHistoricalDataClient",
    "FakeOrderUpdates",
    "FakePriceSource",
    "FakeStreamHub",
    "FakeSubscription",
    "FakeTradingClient",
    "MemoryUpstream",
    "Recorder",
    "fake_container",
    "fake_streams",
    "fakes",
    "find_leaks",
    "messages",
    "override_streams",
    "register_secret",
    "registered_secrets",
    "reset_fake_container",
]

_MIN_SECRET_LENGTH = 6
_secrets_lock = threading.Lock()
_secrets: set[str] = {fakes.FAKE_SECRET}


def register_secret(*secrets: str) -> None:
    """Declare test secrets that must never appear in captured output.

    Scanners built on :func:`find_leaks` (alpaca-di's own test suite fails any
    test whose stdout, stderr or log capture contains one) pick them up. Secrets
    shorter than 6 characters are refused: they would match by accident.

    Example::

        SECRET = "my-test-secret-123"
        register_secret(SECRET)
    """
    for secret in secrets:
        if not isinstance(secret, str) or len(secret) < _MIN_SECRET_LENGTH:
            raise ValueError(
                f"a registered secret must be a str of at least {_MIN_SECRET_LENGTH} characters"
            )
    with _secrets_lock:
        _secrets.update(secrets)


def registered_secrets() -> frozenset[str]:
    """Every secret registered so far."""
    with _secrets_lock:
        return frozenset(_secrets)


def find_leaks(text: str, secrets: Iterable[str] | None = None) -> list[str]:
    """The secrets (registered ones by default) that occur in ``text``, masked for display.

    Matching is case-insensitive. The result never contains a secret itself, only
    its first two characters and its length, so it can go into a failure message.

    Example::

        register_secret("my-test-secret-123")
        assert find_leaks("log line: my-test-secret-123") == ["my****************(18 chars)"]
    """
    if not text:
        return []
    haystack = text.lower()
    found = []
    for secret in sorted(registered_secrets() if secrets is None else set(secrets)):
        if secret and secret.lower() in haystack:
            found.append(f"{secret[:2]}{'*' * (len(secret) - 2)}({len(secret)} chars)")
    return found
