"""The emulator's view of single connections: keepalive pings that reap silent clients,
listing connections and dropping exactly one. Real sockets, a raw websockets client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from websockets.frames import Frame, Opcode

from alpaca_di.emulator import AlpacaEmulator

from ._emulator_support import IEX, KEY, SECRET, Raw

OTHER = "PKTEST0002"


@pytest.fixture
async def emu() -> AsyncIterator[AlpacaEmulator]:
    async with AlpacaEmulator(slot_hold_seconds=60.0, connection_limit=2) as emulator:
        yield emulator


async def test_a_client_that_stops_answering_pings_is_dropped_and_its_slot_freed(
    emu: AlpacaEmulator,
) -> None:
    frozen = await Raw.open(emu)
    await frozen.auth()
    healthy = await Raw.open(emu)
    await healthy.auth(OTHER, SECRET)
    # a frozen process reads nothing, so it answers no ping: stop reading its socket
    frozen.ws.transport.pause_reading()
    emu.set_keepalive(0.05, ping_timeout=1.0)
    await emu.until(lambda: emu.counters(KEY, IEX).keepalive_drops == 1, 10)
    await emu.until(lambda: emu.counters(KEY, IEX).open == 0, 10)
    # freed at once although an unclean drop would hold the slot for 60 s
    assert emu.counters(KEY, IEX).slots_held == 0
    healthy_counters = emu.counters(OTHER, IEX)
    assert healthy_counters.open == 1
    assert healthy_counters.keepalive_drops == 0
    again = await Raw.open(emu)
    assert await again.auth() == [{"T": "success", "msg": "authenticated"}]
    frozen.ws.transport.abort()
    for raw in (healthy, again):
        await raw.close()


def count_pings(raw: Raw) -> list[int]:
    """Count the PING frames the client's protocol parses (it answers them by itself)."""
    seen = [0]
    protocol = raw.ws.protocol
    original = protocol.recv_frame

    def recv_frame(frame: Frame) -> None:
        if frame.opcode is Opcode.PING:
            seen[0] += 1
        original(frame)

    protocol.recv_frame = recv_frame  # type: ignore[method-assign]
    return seen


async def test_pings_flow_only_while_keepalive_is_on(emu: AlpacaEmulator) -> None:
    raw = await Raw.open(emu)
    await raw.auth()
    pings = count_pings(raw)
    await raw.subscribe(quotes=["AAPL"])  # a round trip: no ping came meanwhile
    assert pings[0] == 0
    emu.set_keepalive(0.02)
    await emu.until(lambda: pings[0] >= 3, 10)
    emu.set_keepalive(None)
    assert emu.counters(KEY, IEX).keepalive_drops == 0
    assert emu.counters(KEY, IEX).open == 1
    await raw.close()


async def test_connections_are_listed_and_one_of_two_can_be_dropped(
    emu: AlpacaEmulator,
) -> None:
    first = await Raw.open(emu)
    await first.auth()
    second = await Raw.open(emu)
    await second.auth()
    pending = await Raw.open(emu, "/v1beta3/crypto/us")
    listed = emu.connections(IEX, key_id=KEY)
    assert [c.authenticated for c in listed] == [True, True]
    assert listed[0].id < listed[1].id
    assert listed[1].peer == second.ws.local_address[:2]
    (anonymous,) = emu.connections("/v1beta3/crypto/us")
    assert (anonymous.key_id, anonymous.authenticated) == (None, False)
    assert len(emu.connections()) == 3

    assert emu.drop_connection(listed[1].id, code=1001, reason="one of two")
    closed = await second.expect_closed()
    assert (closed.rcvd.code, closed.rcvd.reason) == (1001, "one of two")  # type: ignore[union-attr]
    await emu.until(lambda: [c.id for c in emu.connections(IEX)] == [listed[0].id])
    assert not emu.drop_connection(listed[1].id)  # already gone
    assert emu.drop_connection(anonymous.id, close_frame=False)
    await pending.expect_closed()
    await emu.until(lambda: emu.stats().open_connections == 1)
    await first.close()


def test_keepalive_settings_are_checked_at_the_call() -> None:
    for bad in (0, -1, float("nan"), float("inf"), "1", True):
        with pytest.raises(ValueError, match="ping_interval must be"):
            AlpacaEmulator(ping_interval=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="ping_timeout must be"):
            AlpacaEmulator().set_keepalive(1.0, ping_timeout=bad)  # type: ignore[arg-type]


async def test_keepalive_from_the_constructor_reaps_a_silent_trading_client() -> None:
    async with AlpacaEmulator(ping_interval=0.05, ping_timeout=0.5) as emu:
        from websockets.asyncio.client import connect

        ws = await connect(emu.trading_stream_url, ping_interval=None)
        await ws.send('{"action": "authenticate", "data": {"key_id": "PK", "secret_key": "s"}}')
        await asyncio.wait_for(ws.recv(), 5)
        ws.transport.pause_reading()
        await emu.until(lambda: emu.counters("PK", "/stream").keepalive_drops == 1, 10)
        ws.transport.abort()
