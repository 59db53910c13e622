"""deferred_interrupts: a SIGINT inside the block lands after it, through the installed handler."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from types import FrameType

import pytest

from alpaca_di._interrupts import deferred_interrupts


@pytest.fixture
def default_sigint() -> Iterator[None]:
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_sigint_during_the_block_is_raised_when_it_ends(default_sigint: None) -> None:
    steps: list[str] = []

    def block() -> None:
        with deferred_interrupts():
            signal.raise_signal(signal.SIGINT)
            steps.append("after the signal")  # still runs: the interrupt waits
        steps.append("never")

    with pytest.raises(KeyboardInterrupt):
        block()
    assert steps == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_installed_handler_gets_the_held_signal(default_sigint: None) -> None:
    seen: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        seen.append(signum)

    signal.signal(signal.SIGINT, handler)
    with deferred_interrupts():
        signal.raise_signal(signal.SIGINT)
        assert seen == []
    assert seen == [signal.SIGINT]


def test_nothing_changes_off_the_main_thread() -> None:
    handlers: list[object] = []

    def work() -> None:
        with deferred_interrupts():
            handlers.append(signal.getsignal(signal.SIGINT))

    before = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)
    assert handlers == [before]
