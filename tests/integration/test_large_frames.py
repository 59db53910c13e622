"""One huge frame on one hub never holds up another hub's messages.

Every connection shares the runtime's loop. A 10 MiB frame (150,000 quotes) is
decoded and dispatched in slices of ``SLICE`` messages, yielding to the loop
between slices, so a quote on another hub is delivered while the big frame is
still being worked through. (alpaca-py refuses frames over 1 MiB.)
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack
from _integration_support import wait_until

from alpaca_di import ConnectionRegistry
from alpaca_di.credentials import Credentials
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.protocol import StreamKind
from alpaca_di.protocol.codec import SLICE
from alpaca_di.testing.messages import quote
from alpaca_di.transport import ConnectionOptions

KEY = "PKINTEGRATION01"
IEX, SIP = "/v2/iex", "/v2/sip"
BIG = 150_000
DEADLINE = 60.0
OPTIONS = ConnectionOptions(backoff_initial=0.01, backoff_max=0.05, open_timeout=5.0)


def big_frame() -> bytes:
    wire = [
        {
            "T": "q",
            "S": f"B{n % 50}",
            "bx": "V",
            "bp": 100.0 + n % 7,
            "bs": 1,
            "ax": "V",
            "ap": 100.01,
            "as": 1,
            "c": ["R"],
            "z": "C",
            "t": "2024-01-02T15:30:00.123456Z",
        }
        for n in range(BIG)
    ]
    data: bytes = msgpack.packb(wire)
    return data


def test_a_quote_on_another_hub_is_delivered_while_a_huge_frame_is_worked_through(
    registry: ConnectionRegistry, emulator: AlpacaEmulator, creds: Credentials
) -> None:
    frame = big_frame()
    assert len(frame) > 10 * 2**20
    big = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX), OPTIONS).hub
    other = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(SIP), OPTIONS).hub
    assert big.loop is other.loop  # one loop serves both: the case that used to stall
    seen_then: list[int] = []
    arrived = threading.Event()
    probed: list[bool] = []

    async def on_flood(message: Any) -> None:
        # Runs on the shared loop once the reader first yields: the probe goes out
        # only after the big frame is being worked through. Holding the loop here
        # until the server has written it takes the emulator's GIL turns out of the
        # race: the probe is then waiting on the other socket, and with the rest of
        # the frame still to decode (hundreds of slices) it is read between two.
        if not probed:
            probed.append(True)
            sent = emulator.counters(KEY, SIP).frames_sent
            emulator.publish(SIP, [quote("PROBE", bid=1.0)], key_id=KEY)
            emulator.wait_until(
                lambda: emulator.counters(KEY, SIP).frames_sent > sent,
                DEADLINE,
                message="the probe written to the other hub's socket",
            )

    flood = big.subscribe(on_flood, quotes=["*"], overflow="conflate")  # every one parsed

    async def on_quote(message: Any) -> None:  # runs on the shared loop itself
        seen_then.append(big.health().messages_received)
        arrived.set()

    probe = other.subscribe(on_quote, quotes=["PROBE"])
    flood.wait_confirmed(DEADLINE)
    probe.wait_confirmed(DEADLINE)
    assert emulator.send_raw(IEX, frame, key_id=KEY) == 1
    assert arrived.wait(DEADLINE)
    wait_until(lambda: big.health().messages_received >= BIG, DEADLINE, "the whole big frame")
    # The probe ran before the big frame was through: it did not wait for it.
    assert seen_then[0] < BIG
    assert seen_then[0] % SLICE == 0  # at a slice boundary, where the reader yields
    assert big.health().malformed == 0
    flood.close()
    probe.close()
