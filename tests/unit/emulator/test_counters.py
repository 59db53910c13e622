"""The emulator's counters from outside: plain dataclasses, and JSON at ``/_emulator/counters``."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
from collections.abc import Iterator

import msgpack
import pytest
import requests
from websockets.sync.client import connect

from alpaca_di.emulator import AlpacaEmulator, EndpointCounters

KEY, SECRET = "PKCOUNTERS01", "counters-secret-1"
IEX = "/v2/iex"


@pytest.fixture
def emu() -> Iterator[AlpacaEmulator]:
    with AlpacaEmulator() as emulator:
        emulator.add_account(KEY, SECRET)
        yield emulator


def _authenticate(emu: AlpacaEmulator, secret: str = SECRET) -> None:
    headers = {"Content-Type": "application/msgpack"}
    with connect(emu.data_url(IEX), additional_headers=headers) as ws:
        ws.recv(5)
        ws.send(msgpack.packb({"action": "auth", "key": KEY, "secret": secret}))
        ws.recv(5)


def test_counter_snapshots_are_plain_dataclasses(emu: AlpacaEmulator) -> None:
    _authenticate(emu, "wrong-secret")
    counters = emu.counters(KEY, IEX)
    as_dict = dataclasses.asdict(counters)
    assert as_dict["rejections"] == {402: 1}
    assert as_dict["auth_attempts"] == 1
    assert json.loads(json.dumps(as_dict))["rejections"] == {"402": 1}
    assert copy.deepcopy(counters) == counters
    assert pickle.loads(pickle.dumps(counters)) == counters
    assert EndpointCounters(**as_dict) == counters
    with pytest.raises(TypeError, match="read-only"):
        counters.rejections[402] = 5  # type: ignore[index]
    assert dataclasses.asdict(emu.stats())["handshakes"] == 1


def test_the_rest_port_serves_every_counter_as_json(emu: AlpacaEmulator) -> None:
    _authenticate(emu)
    with connect(emu.data_url(IEX)) as ws:  # one connection left open, not authenticated
        ws.recv(5)
        emu.wait_until(lambda: emu.stats().open_connections == 1)
        emu.fail_rest(500, "not for the counters", times=5)
        reply = requests.get(emu.counters_url, timeout=5)
        assert reply.status_code == 200
        body = reply.json()
    assert set(body) == {"clock", "stats", "counters", "connections"}
    assert body["stats"]["handshakes"] == 2
    assert body["stats"]["rest_requests"] == 0  # reading the counters is not counted
    mine = next(c for c in body["counters"] if c["key_id"] == KEY)
    assert (mine["path"], mine["connections_accepted"], mine["close_frames_received"]) == (
        IEX, 1, 1)
    # every (key, path) seen, sessions that never authenticated under ""
    assert [(c["key_id"], c["path"]) for c in body["counters"]] == [("", IEX), (KEY, IEX)]
    assert set(mine) == {f.name for f in dataclasses.fields(EndpointCounters)}
    (conn,) = body["connections"]
    assert (conn["path"], conn["key_id"], conn["authenticated"]) == (IEX, None, False)
    assert SECRET not in reply.text
    assert requests.post(emu.counters_url, timeout=5).status_code == 404
    assert requests.get(emu.counters_url + "/more", timeout=5).status_code == 404
    assert requests.get(emu.api_url + "/v2/clock", timeout=5).status_code == 500  # still armed
