"""Readiness over real sockets: a hub in use is not ready until connected and confirmed."""

from __future__ import annotations

from alpaca_di.hub import HealthReport, Lease
from alpaca_di.testing import AlpacaEmulator

IEX = "/v2/iex"
DEADLINE = 10.0


def test_in_use_hub_is_unready_until_connected_then_until_its_subscribe_is_acked(
    stock_lease: Lease, emulator: AlpacaEmulator
) -> None:
    hub = stock_lease.hub
    idle = hub.health()
    assert not idle.in_use
    assert idle.healthy
    assert HealthReport.of([idle]).ready

    emulator.pause_reading(IEX)  # the auth waits: the socket never reaches "connected"
    sub = hub.subscribe(quotes=["AAPL"])
    emulator.wait_until(lambda: hub.health().state == "authenticating", DEADLINE)
    waiting = hub.health()
    assert waiting.in_use
    assert not waiting.ever_connected
    assert not waiting.healthy
    assert not waiting.ready
    assert not HealthReport.of([waiting]).ready

    emulator.pause_reading(IEX, paused=False)
    sub.wait_confirmed(DEADLINE)
    emulator.wait_until(lambda: hub.health().ready, DEADLINE)
    ready = hub.health()
    assert ready.healthy
    assert ready.ever_connected
    assert ready.subscriptions_pending == 0

    emulator.pause_reading(IEX)  # connected, but the next subscribe is not acked yet
    sub.add(quotes=["MSFT"])
    emulator.wait_until(lambda: hub.health().subscriptions_pending > 0, DEADLINE)
    assert hub.health().healthy
    assert not HealthReport.of([hub.health()]).ready
    emulator.pause_reading(IEX, paused=False)
    sub.wait_confirmed(DEADLINE)
    emulator.wait_until(lambda: hub.health().ready, DEADLINE)
    sub.close()
