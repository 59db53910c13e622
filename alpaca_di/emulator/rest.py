"""A tiny asyncio HTTP/1.1 server for the emulator's REST APIs.

Enough of ``https://paper-api.alpaca.markets/v2`` for alpaca-py's ``TradingClient``
(``url_override=emu.api_url``): account, clock, assets, orders and positions; and,
through a :class:`DataRoutes` object (:class:`~alpaca_di.emulator.market_data.MarketDataApi`),
the market-data API on the same port. Keep-alive is supported (``requests`` pools
connections). Routing, auth and injected failures live in :class:`RestApi`; the
socket side in :class:`RestServer`::

    api = RestApi(broker, authorize=lambda key, secret: True)
    server = RestServer(api.handle)
    port = await server.start("127.0.0.1", 0)
    ...
    await server.close()
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

import structlog

from alpaca_di.emulator.broker import Broker, RestError

__all__ = ["COUNTERS_PATH", "DataRoutes", "HttpRequest", "Reply", "RestApi", "RestServer"]

_log = structlog.get_logger(__name__)
_MAX_BODY = 1 << 22

COUNTERS_PATH = "/_emulator/counters"
"""Where the REST port serves the emulator's counters as JSON (no key needed)."""


@dataclass(frozen=True)
class HttpRequest:
    """One parsed HTTP request (header names lower-cased, path percent-decoded)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: ``status``, a JSON ``body`` (or ``None``) and extra ``headers``.

    ``refuse=True`` answers nothing: the server drops the TCP connection instead.
    """

    status: int
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()
    refuse: bool = False


Handler = Callable[[HttpRequest], Reply]


class DataRoutes(Protocol):
    """The market-data side of the REST API (see :mod:`alpaca_di.emulator.market_data`)."""

    def serves(self, path: str) -> bool:
        """True for a path this API answers."""

    def needs_key(self, path: str) -> bool:
        """True when the path needs a key pair (crypto data does not)."""

    def handle(self, key_id: str | None, request: HttpRequest) -> tuple[int, Any]:
        """Serve one request; raise :class:`RestError` for an Alpaca-shaped error."""


class _Failure:
    __slots__ = ("api", "error", "refuse", "remaining", "retry_after")

    def __init__(
        self,
        error: RestError,
        remaining: int | None,
        api: str | None,
        retry_after: float | None,
        refuse: bool,
    ) -> None:
        self.error = error
        self.remaining = remaining
        self.api = api
        self.retry_after = retry_after
        self.refuse = refuse

    def reply(self) -> Reply:
        headers = () if self.retry_after is None else (("Retry-After", f"{self.retry_after:g}"),)
        return Reply(self.error.status, self.error.body(), headers, self.refuse)


class RestApi:
    """Routes REST requests to the :class:`~alpaca_di.emulator.broker.Broker` or the data API.

    ``authorize(key_id, secret)`` decides whether a key pair may call the API;
    ``on_request(api)`` is told of every request (``api`` is ``"trading"`` or
    ``"data"``); ``counters()`` answers ``GET /_emulator/counters``. :meth:`fail_next`
    queues injected failures
    (``AlpacaEmulator.fail_rest``, ``throttle_history``, ``fail_history``).
    """

    def __init__(
        self,
        broker: Broker,
        authorize: Callable[[str, str], bool],
        on_request: Callable[[str], None] | None = None,
        data: DataRoutes | None = None,
        counters: Callable[[], Any] | None = None,
    ) -> None:
        self._broker = broker
        self._counters = counters
        self._authorize = authorize
        self._on_request = on_request
        self._data = data
        self._failures: list[_Failure] = []

    def fail_next(
        self,
        status: int,
        message: str,
        times: int | None,
        code: int | None,
        *,
        api: str | None = None,
        retry_after: float | None = None,
        refuse: bool = False,
    ) -> None:
        """Make the next ``times`` requests (of ``api``, or any) fail with an Alpaca error body.

        ``times=None`` fails until :meth:`clear_failures`; ``retry_after`` adds a
        ``Retry-After`` header; ``refuse`` drops the connection without an answer.
        """
        self._failures.append(
            _Failure(RestError(status, message, code), times, api, retry_after, refuse)
        )

    def clear_failures(self) -> None:
        """Forget every queued failure."""
        self._failures.clear()

    def _take_failure(self, api: str) -> Reply | None:
        for failure in self._failures:
            if failure.api in (None, api):
                if failure.remaining is not None:
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self._failures.remove(failure)
                return failure.reply()
        return None

    def handle(self, request: HttpRequest) -> Reply:
        """Serve one request."""
        if request.path.startswith(COUNTERS_PATH) and self._counters is not None:
            # the emulator's own window: no key, no injected failure, not counted
            if request.path.rstrip("/") != COUNTERS_PATH or request.method != "GET":
                return Reply(404, {"code": 40410000, "message": f"try GET {COUNTERS_PATH}"})
            return Reply(200, self._counters())
        data = self._data if self._data is not None and self._data.serves(request.path) else None
        api = "trading" if data is None else "data"
        if self._on_request is not None:
            self._on_request(api)
        failure = self._take_failure(api)
        if failure is not None:
            return failure
        key = request.headers.get("apca-api-key-id", "")
        secret = request.headers.get("apca-api-secret-key", "")
        try:
            if data is not None:
                return Reply(*self._serve_data(data, key, secret, request))
            if not key or not secret:
                return Reply(401, {"code": 40110000, "message": "request is not authorized"})
            if not self._authorize(key, secret):
                return Reply(403, {"code": 40310000, "message": "forbidden."})
            return Reply(*self._route(key, request))
        except RestError as exc:
            return Reply(exc.status, exc.body())

    def _serve_data(
        self, data: DataRoutes, key: str, secret: str, request: HttpRequest
    ) -> tuple[int, Any]:
        if key or secret:
            if not (key and secret and self._authorize(key, secret)):
                raise RestError(401, "unauthorized.", 40110000)
            return data.handle(key, request)
        if data.needs_key(request.path):
            raise RestError(401, "unauthorized.", 40110000)
        return data.handle(None, request)

    def _route(self, key: str, request: HttpRequest) -> tuple[int, Any]:
        method, path, broker = request.method, request.path, self._broker
        if not path.startswith("/v2/"):
            raise RestError(404, "endpoint not found", 40410000)
        path = path[3:].rstrip("/")
        if path == "/account" and method == "GET":
            return 200, broker.account(key)
        if path == "/clock" and method == "GET":
            return 200, broker.clock()
        if path.startswith("/assets/") and method == "GET":
            return 200, broker.asset(path[len("/assets/") :])
        if path == "/orders":
            if method == "GET":
                return 200, broker.list_orders(key, request.query)
            if method == "DELETE":
                return 207, broker.cancel_all(key)
            if method == "POST":
                try:
                    body = json.loads(request.body or b"{}")
                except ValueError:
                    raise RestError(400, "request body format is invalid", 40010000) from None
                return 200, broker.submit_order(key, body)
        if path == "/orders:by_client_order_id" and method == "GET":
            return 200, broker.get_order_by_client_id(key, request.query.get("client_order_id", ""))
        if path.startswith("/orders/"):
            order_id = path[len("/orders/") :]
            if method == "GET":
                return 200, broker.get_order(key, order_id)
            if method == "DELETE":
                broker.cancel_order(key, order_id)
                return 204, None
        if path == "/positions" and method == "GET":
            return 200, broker.positions(key)
        if path.startswith("/positions/") and method == "GET":
            return 200, broker.position(key, path[len("/positions/") :])
        raise RestError(404, f"endpoint not found: {request.method} {request.path}", 40410000)


class RestServer:
    """HTTP/1.1 server (keep-alive, Content-Length or chunked bodies) on the running loop."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int) -> int:
        """Start listening; returns the bound port."""
        self._server = await asyncio.start_server(self._serve_client, host, port)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def close(self) -> None:
        """Stop listening and drop every open client connection at once."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()  # the client task then sees EOF and ends by itself
        if self._clients:
            _done, pending = await asyncio.wait(list(self._clients), timeout=1.0)
            for task in pending:  # pragma: no cover - defensive
                task.cancel()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        self._writers.add(writer)
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except Exception:  # never let one client hurt the server
            _log.exception("emulator REST client failed")
        finally:
            self._writers.discard(writer)
            self._clients.discard(task)
            writer.transport.abort()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        line = await reader.readline()
        if not line.strip():
            return bool(line)  # blank line between requests: keep going; EOF: stop
        try:
            method, target, version = line.decode("latin-1").split()
        except ValueError:
            self._write(writer, 400, {"code": 40000000, "message": "bad request line"}, False, ())
            return False
        headers: dict[str, str] = {}
        while True:
            raw = await reader.readline()
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._read_chunked(reader)
        else:
            length = int(headers.get("content-length", "0") or 0)
            if length > _MAX_BODY:
                self._write(writer, 413, {"code": 41300000, "message": "body too large"}, False, ())
                return False
            body = await reader.readexactly(length) if length else b""
        split = urlsplit(target)
        request = HttpRequest(
            method=method.upper(),
            path=unquote(split.path),
            query=dict(parse_qsl(split.query, keep_blank_values=True)),
            headers=headers,
            body=body,
        )
        reply = self._handler(request)
        if reply.refuse:
            writer.transport.abort()
            return False
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        self._write(writer, reply.status, reply.body, keep_alive, reply.headers)
        await writer.drain()
        return keep_alive

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > _MAX_BODY:
                raise ConnectionError("chunked body too large")
            chunks.append(await reader.readexactly(size))
            await reader.readline()

    @staticmethod
    def _write(
        writer: asyncio.StreamWriter,
        status: int,
        payload: Any,
        keep_alive: bool,
        headers: tuple[tuple[str, str], ...],
    ) -> None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Status"
        body = b"" if status == 204 or payload is None else json.dumps(payload).encode()
        head = [f"HTTP/1.1 {status} {reason}"]
        if status != 204:
            head.append("Content-Type: application/json; charset=UTF-8")
            head.append(f"Content-Length: {len(body)}")
        head.extend(f"{name}: {value}" for name, value in headers)
        head.append("Connection: keep-alive" if keep_alive else "Connection: close")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
