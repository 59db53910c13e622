"""A forked child (gunicorn --preload, multiprocessing's fork) gets its own connections.

The child inherits the parent's hubs, whose loop thread does not exist in it.
They start over in the child, idle, on the child's own runtime: the first
subscription opens the child's socket, the parent keeps receiving on its own,
and the child's exit waits on nothing of the parent's. The emulator allows two
sessions here; several forked workers on one key need ``sharing="redis"``.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from typing import Any

import pytest
from _integration_support import wait_until

from alpaca_di import AlpacaContainer
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.errors import ConnectionClosedError
from alpaca_di.testing.messages import quote

KEY = "PKFORKEDCHILD001"
SECRET = "fork-secret-do-not-leak"
IEX = "/v2/iex"
DEADLINE = 10.0


@pytest.fixture
def emu() -> Iterator[AlpacaEmulator]:
    with AlpacaEmulator(connection_limit=2) as emulator:
        yield emulator


@pytest.fixture
def container(emu: AlpacaEmulator) -> Iterator[AlpacaContainer]:
    container = AlpacaContainer()
    container.config.from_dict(
        {
            "api_key": KEY,
            "secret_key": SECRET,
            "data_stream_url": emu.ws_url,
            "trading_stream_url": emu.trading_stream_url,
            "api_url": emu.api_url,
            "backoff_initial": 0.01,
            "backoff_max": 0.05,
            "open_timeout": 5.0,
        }
    )
    container.init_resources()
    yield container
    container.shutdown_resources()


def _child(container: AlpacaContainer, inherited: Any, report: Any) -> None:
    """Runs in the forked child: subscribe, receive one quote, shut down, report."""
    try:
        try:
            inherited.get(timeout=0)
            outcome = "the inherited subscription still delivered"
        except ConnectionClosedError as exc:
            outcome = "forked" if "forked" in str(exc) else f"unexpected error: {exc}"
        if outcome == "forked":
            sub = container.stock_stream().subscribe(quotes=["CHILD"])
            sub.wait_confirmed(DEADLINE)
            message = sub.get(timeout=DEADLINE)
            outcome = f"received {message.bid_price}"
        container.shutdown_resources()
    except BaseException as exc:  # report anything: the parent asserts on it
        outcome = f"failed: {type(exc).__name__}: {exc}"
    report.send(outcome)
    report.close()


def _run_parent_side(container: AlpacaContainer, emu: AlpacaEmulator, start: Any) -> str:
    parent_sub = container.stock_stream().subscribe(quotes=["PARENT"])
    parent_sub.wait_confirmed(DEADLINE)
    assert emu.counters(KEY, IEX).open == 1
    receive, send = multiprocessing.Pipe(duplex=False)
    finished = start(container, parent_sub, send)
    send.close()
    wait_until(
        lambda: "CHILD" in emu.subscriptions(KEY, IEX)["quotes"], DEADLINE, "child subscribed"
    )
    assert emu.counters(KEY, IEX).open == 2  # the child's own socket
    emu.publish(IEX, [quote("CHILD", bid=7.0), quote("PARENT", bid=8.0)], key_id=KEY)
    assert parent_sub.get(timeout=DEADLINE).bid_price == 8.0  # the parent keeps receiving
    assert receive.poll(DEADLINE), "the child never reported"
    outcome: str = receive.recv()
    assert finished(), "the child did not exit"
    emu.publish(IEX, [quote("PARENT", bid=9.0)], key_id=KEY)
    assert parent_sub.get(timeout=DEADLINE).bid_price == 9.0
    assert emu.counters(KEY, IEX).rejections.get(406, 0) == 0
    parent_sub.close()
    return outcome


def test_a_plain_os_fork_child_opens_its_own_socket(
    container: AlpacaContainer, emu: AlpacaEmulator
) -> None:
    def start(container: AlpacaContainer, inherited: Any, send: Any) -> Any:
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 1
            try:
                _child(container, inherited, send)
                code = 0
            finally:
                os._exit(code)

        def finished() -> bool:
            exited: list[int] = []

            def reaped() -> bool:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    exited.append(os.waitstatus_to_exitcode(status))
                return bool(done)

            try:
                wait_until(reaped, DEADLINE, "the child exited")
            except AssertionError:
                os.kill(pid, 9)
                return False
            return exited == [0]

        return finished

    assert _run_parent_side(container, emu, start) == "received 7.0"


def test_a_multiprocessing_fork_child_opens_its_own_socket(
    container: AlpacaContainer, emu: AlpacaEmulator
) -> None:
    context = multiprocessing.get_context("fork")

    def start(container: AlpacaContainer, inherited: Any, send: Any) -> Any:
        process = context.Process(target=_child, args=(container, inherited, send))
        process.start()

        def finished() -> bool:
            process.join(DEADLINE)
            if process.is_alive():
                process.kill()
                return False
            return process.exitcode == 0

        return finished

    assert _run_parent_side(container, emu, start) == "received 7.0"
