"""A raw Alpaca data-stream client for the emulator's protocol tests (no alpaca-py in between)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from alpaca_di.emulator import AlpacaEmulator

__all__ = ["IEX", "KEY", "SECRET", "Raw"]

KEY, SECRET = "PKTEST0001", "secret-1"
IEX = "/v2/iex"


class Raw:
    """A minimal Alpaca data-stream client over a raw websockets connection."""

    def __init__(self, ws: ClientConnection, use_msgpack: bool) -> None:
        self.ws = ws
        self.msgpack = use_msgpack
        self.frame: bytes | str | None = None

    @classmethod
    async def open(
        cls,
        emu: AlpacaEmulator,
        path: str = IEX,
        *,
        use_msgpack: bool = True,
        headers: dict[str, str] | None = None,
        welcome: bool = True,
    ) -> Raw:
        extra = {"Content-Type": "application/msgpack"} if use_msgpack else {}
        extra.update(headers or {})
        ws = await connect(
            emu.data_url(path), additional_headers=extra, ping_interval=None, close_timeout=1
        )
        raw = cls(ws, use_msgpack)
        if welcome:
            assert await raw.recv() == [{"T": "success", "msg": "connected"}]
        return raw

    async def recv(self) -> Any:
        frame = await asyncio.wait_for(self.ws.recv(), 5)
        self.frame = frame
        if isinstance(frame, bytes):
            return msgpack.unpackb(frame)
        return json.loads(frame)

    async def send(self, obj: Any) -> None:
        await self.ws.send(msgpack.packb(obj) if self.msgpack else json.dumps(obj))

    async def auth(self, key: str = KEY, secret: str = SECRET) -> Any:
        await self.send({"action": "auth", "key": key, "secret": secret})
        return await self.recv()

    async def subscribe(self, action: str = "subscribe", **channels: list[str]) -> Any:
        await self.send({"action": action, **channels})
        return await self.recv()

    async def expect_closed(self) -> ConnectionClosed:
        while True:
            try:
                await asyncio.wait_for(self.ws.recv(), 5)
            except ConnectionClosed as exc:
                return exc

    async def close(self) -> None:
        await self.ws.close()
