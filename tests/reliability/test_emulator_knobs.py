"""The emulator knobs this suite added: sequence numbers, restart, pause_reading, keepalive.

Driven by alpaca-py's wire format directly (a bare ``websockets`` client), so a
defect in alpaca-di cannot hide a defect of the knobs the suite relies on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager

import msgpack
from _reliability_support import IEX
from websockets.sync.client import ClientConnection, connect

from alpaca_di.emulator import AlpacaEmulator

KEY, SECRET = "PKKNOBS000000001", "knobs-secret"
WAIT = 10.0


@contextmanager
def _session(emulator: AlpacaEmulator) -> Iterator[ClientConnection]:
    headers = {"Content-Type": "application/msgpack"}
    with connect(emulator.data_url(IEX), additional_headers=headers) as ws:
        assert msgpack.unpackb(ws.recv(WAIT))[0]["msg"] == "connected"
        ws.send(msgpack.packb({"action": "auth", "key": KEY, "secret": SECRET}))
        assert msgpack.unpackb(ws.recv(WAIT))[0]["msg"] == "authenticated"
        yield ws


def test_sequence_numbers_count_per_type_and_symbol() -> None:
    with AlpacaEmulator(rate=2000, sequence=True, seed=1) as emulator, _session(emulator) as ws:
        ws.send(
            msgpack.packb({"action": "subscribe", "trades": ["AAPL", "MSFT"], "quotes": ["AAPL"]})
        )
        seen: dict[tuple[str, str], list[int]] = {}
        while sum(len(v) for v in seen.values()) < 600:
            for message in msgpack.unpackb(ws.recv(WAIT)):
                if message["T"] in ("t", "q"):
                    seen.setdefault((message["T"], message["S"]), []).append(message["seq"])
                    if message["T"] == "t":
                        assert message["i"] == message["seq"]
                    else:
                        assert message["bs"] == message["seq"]
        assert set(seen) == {("t", "AAPL"), ("t", "MSFT"), ("q", "AAPL")}
        for numbers in seen.values():
            assert numbers == list(range(1, len(numbers) + 1))
        latest = emulator.sequences(KEY, IEX)
        assert latest[("trades", "AAPL")] >= seen[("t", "AAPL")][-1]
        assert latest[("quotes", "AAPL")] >= seen[("q", "AAPL")][-1]


def test_restart_keeps_the_port_and_forgets_held_slots() -> None:
    with AlpacaEmulator(slot_hold_seconds=60.0) as emulator:
        port = emulator.port
        with _session(emulator):
            emulator.drop_connections(IEX, close_frame=False)  # the slot stays held for 60 s
            emulator.wait_until(lambda: emulator.counters(KEY, IEX).open == 0, WAIT)
        assert emulator.counters(KEY, IEX).slots_held == 1
        emulator.restart()
        assert emulator.port == port
        assert emulator.counters(KEY, IEX).slots_held == 0
        with _session(emulator):  # accepted at once: a restarted server holds no slot
            assert emulator.counters(KEY, IEX).open == 1


def test_pause_reading_holds_client_messages_in_order() -> None:
    with AlpacaEmulator() as emulator, _session(emulator) as ws:
        emulator.pause_reading(IEX)
        ws.send(msgpack.packb({"action": "subscribe", "quotes": ["AAPL"]}))
        ws.send(msgpack.packb({"action": "subscribe", "quotes": ["MSFT"]}))
        assert emulator.subscriptions(KEY, IEX)["quotes"] == frozenset()
        emulator.pause_reading(IEX, paused=False)
        first = msgpack.unpackb(ws.recv(WAIT))[0]
        second = msgpack.unpackb(ws.recv(WAIT))[0]
        assert first["quotes"] == ["AAPL"]
        assert second["quotes"] == ["AAPL", "MSFT"]


_FROZEN_CLIENT = textwrap.dedent(
    """
    import sys
    import msgpack
    from websockets.sync.client import connect

    url, key, secret = sys.argv[1:]
    with connect(url, additional_headers={"Content-Type": "application/msgpack"}) as ws:
        ws.recv(10)
        ws.send(msgpack.packb({"action": "auth", "key": key, "secret": secret}))
        ws.recv(10)
        print("authenticated", flush=True)
        while True:
            ws.recv()
    """
)


def test_keepalive_drops_a_sigstopped_client_and_frees_its_slot() -> None:
    """A frozen process keeps its socket open but answers no ping: the server reaps it."""
    with AlpacaEmulator(slot_hold_seconds=60.0, ping_interval=0.1, ping_timeout=1.0) as emulator:
        client = subprocess.Popen(
            [sys.executable, "-c", _FROZEN_CLIENT, emulator.data_url(IEX), KEY, SECRET],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            assert client.stdout is not None
            assert client.stdout.readline().strip() == "authenticated"
            (conn,) = emulator.connections(IEX, key_id=KEY)
            os.kill(client.pid, signal.SIGSTOP)
            emulator.wait_until(lambda: emulator.counters(KEY, IEX).keepalive_drops == 1, WAIT)
            emulator.wait_until(lambda: emulator.counters(KEY, IEX).open == 0, WAIT)
            assert emulator.counters(KEY, IEX).slots_held == 0  # not held for 60 s
            assert emulator.connections(IEX) == []
            with _session(emulator):  # the key connects again at once (connection_limit=1)
                (again,) = emulator.connections(IEX, key_id=KEY)
                assert again.id > conn.id
        finally:
            client.kill()
            client.wait(WAIT)
