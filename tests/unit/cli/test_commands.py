"""``alpaca-di emulator`` / ``python -m alpaca_di emulator`` and the subcommand registry."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import msgpack
import pytest
import requests
from websockets.asyncio.client import connect

from alpaca_di.cli import commands as cli


def test_emulator_subcommand_prints_urls_serves_and_exits_0_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "alpaca_di", "emulator", "--port", "0", "--rate", "50",
         "--seed", "7"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline().split()
        trading = proc.stdout.readline().split()
        rest = proc.stdout.readline().split()
        counters = proc.stdout.readline().split()
        assert ready[0] == "ready"
        assert ready[1].startswith("ws://127.0.0.1:")
        assert trading == ["trading", ready[1] + "/stream"]
        assert rest[0] == "rest"
        assert rest[1].startswith("http://127.0.0.1:")

        async def client() -> list[dict[str, object]]:
            async with connect(ready[1] + "/v2/iex",
                               additional_headers={"Content-Type": "application/msgpack"}) as ws:
                await ws.recv()
                await ws.send(msgpack.packb({"action": "auth", "key": "k", "secret": "s"}))
                assert msgpack.unpackb(await ws.recv())[0]["msg"] == "authenticated"
                await ws.send(msgpack.packb({"action": "subscribe", "quotes": ["AAPL"]}))
                await ws.recv()
                frame = await asyncio.wait_for(ws.recv(), 5)
                data: list[dict[str, object]] = msgpack.unpackb(frame)
                return data

        assert asyncio.run(client())[0]["S"] == "AAPL"
        # its counters, from outside the process
        assert counters == ["counters", rest[1] + "/_emulator/counters"]
        body = requests.get(counters[1], timeout=5).json()
        (seen,) = [c for c in body["counters"] if c["key_id"] == "k"]
        assert seen["connections_accepted"] == 1
        assert seen["subscribe_messages"] == 1
        assert seen["messages_sent"] >= 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_no_subcommand_prints_help_and_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "emulator" in capsys.readouterr().err


def test_registry_rejects_duplicates_and_lists_commands() -> None:
    assert "emulator" in cli.commands()
    existing = cli.commands()["emulator"]
    with pytest.raises(ValueError, match="already registered"):
        cli.register(existing)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["emulator", "--port", "not-a-number"])
