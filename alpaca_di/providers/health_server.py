"""A health endpoint served from the application's own process (stdlib only).

Kubernetes-style probes ask the running application, which already holds the one
connection per endpoint that Alpaca allows, instead of opening sockets of their
own (a second socket would be refused with ``406 connection limit exceeded``)::

    from alpaca_di import serve_health

    with serve_health(app.alpaca, host="0.0.0.0", port=8080) as server:
        print(server.url)            # http://0.0.0.0:8080
        ...                          # GET /healthz and GET /readyz answer meanwhile

``GET /healthz`` (liveness) answers 200 when the report is ``healthy``, else 503;
``GET /readyz`` (readiness) answers 200 when it is ``ready``, else 503. Both bodies
are the :class:`~alpaca_di.hub.health.HealthReport` as JSON (no secrets). ``GET
/metrics`` answers the Prometheus metrics (:func:`~alpaca_di.providers.metrics.metrics_exposition`:
prometheus_client's default registry, or every worker's values in its multiprocess
mode), or 501 naming the extra when ``prometheus_client`` is not installed. ``HEAD``
works too; any other path is a 404.

Declared in a container, the server starts with ``init_resources()`` and stops
with ``shutdown_resources()``::

    from dependency_injector import containers, providers
    from alpaca_di import AlpacaContainer, init_health_server

    class App(containers.DeclarativeContainer):
        config = providers.Configuration()
        alpaca = providers.Container(AlpacaContainer, config=config.alpaca)
        health_server = providers.Resource(init_health_server, alpaca, port=8080)
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Generator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import structlog

from alpaca_di.hub.health import HealthReport

__all__ = ["METRICS_PATH", "PROBES", "HealthServer", "init_health_server", "serve_health"]

PROBES: dict[str, str] = {"/healthz": "healthy", "/livez": "healthy", "/readyz": "ready"}
"""Path -> the :class:`~alpaca_di.hub.health.HealthReport` verdict that makes it answer 200."""
METRICS_PATH = "/metrics"
"""Where the Prometheus metrics are served (needs the ``alpaca-di[metrics]`` extra)."""

_POLL_INTERVAL = 0.05  # seconds: how long close() may wait for the accept loop to notice
_log = structlog.get_logger("alpaca_di.health_server")


class HealthServer:
    """An HTTP server answering health probes from ``report()``, on a daemon thread.

    Usually made by :func:`serve_health` or :func:`init_health_server`. It listens
    as soon as it is built (``port=0`` picks a free port: read :attr:`port` or
    :attr:`url`); :meth:`close` stops it (idempotent). A context manager::

        with HealthServer(container.health, port=0) as server:
            requests.get(server.url + "/readyz").status_code    # 200 or 503

    Each request calls ``report()`` on a handler thread: ``container.health()``
    is safe there (it never initialises or connects anything).
    """

    def __init__(
        self, report: Callable[[], HealthReport], host: str = "127.0.0.1", port: int = 0
    ) -> None:
        if not callable(report):
            raise TypeError(f"report must be callable, got {type(report).__name__}")
        self._report = report
        server_class = _IPv6Server if ":" in host else _Server
        self._server = server_class((host, port), _Handler)
        self._server.report = self._call_report
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"alpaca-di-health:{self.port}",
            daemon=True,
        )
        self._thread.start()
        _log.debug("health_server.listening", url=self.url)

    @property
    def host(self) -> str:
        """The address listened on."""
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The port listened on (the one picked when built with ``port=0``)."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL, ``http://host:port`` (append ``/healthz`` or ``/readyz``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Stop listening and free the port; returns once the accept loop ended."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)
        _log.debug("health_server.closed", url=self.url)

    def __enter__(self) -> HealthServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HealthServer({self.url}{', closed' if self._closed else ''})"

    def _call_report(self) -> HealthReport:
        report = self._report()
        if not isinstance(report, HealthReport):
            raise TypeError(f"report() returned {type(report).__name__}, not a HealthReport")
        return report


def serve_health(source: Any, host: str = "127.0.0.1", port: int = 0) -> HealthServer:
    """Serve ``GET /healthz`` and ``GET /readyz`` for ``source`` from this process.

    ``source`` is an :class:`~alpaca_di.AlpacaContainer` (or the
    ``providers.Container`` embedding one, or anything with a ``health()``
    returning a :class:`~alpaca_di.hub.health.HealthReport`, such as a
    :class:`~alpaca_di.hub.registry.ConnectionRegistry`), or a callable returning
    the report. Binds ``127.0.0.1`` by default; use ``host="0.0.0.0"`` for probes
    from outside the machine (a Kubernetes kubelet)::

        server = serve_health(app.alpaca, port=8080)
        ...
        server.close()
    """
    return HealthServer(_report_of(source), host, port)


def init_health_server(
    source: Any, host: str = "127.0.0.1", port: int = 8080
) -> Generator[HealthServer, None, None]:
    """Resource function: a :class:`HealthServer` for the container's lifetime.

    The server listens from ``init_resources()`` until ``shutdown_resources()``.
    Inject the embedded container itself (``alpaca``), or its health provider as a
    callable (``alpaca.health.provider``), not ``alpaca.health``, which would be
    one report computed at start::

        class App(containers.DeclarativeContainer):
            config = providers.Configuration()
            alpaca = providers.Container(AlpacaContainer, config=config.alpaca)
            health_server = providers.Resource(
                init_health_server, alpaca, host=config.health.host, port=config.health.port
            )
    """
    server = serve_health(source, host, port)
    try:
        yield server
    finally:
        server.close()


def _report_of(source: Any) -> Callable[[], HealthReport]:
    if isinstance(source, HealthReport):
        raise TypeError(
            "got one HealthReport, not a source of reports: pass the container "
            "(alpaca) or its provider (alpaca.health.provider)"
        )
    health = getattr(source, "health", None)
    if callable(health):
        return health  # type: ignore[no-any-return]
    if callable(source):
        return source  # type: ignore[no-any-return]
    raise TypeError(
        f"cannot serve the health of {type(source).__name__}: pass an AlpacaContainer (for "
        "an application container, its embedded one: app.alpaca), a registry, or a callable "
        "returning a HealthReport"
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    report: Callable[[], HealthReport]


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "alpaca-di-health"

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def _answer(self, *, with_body: bool) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        if path == METRICS_PATH:
            self._metrics(with_body)
            return
        verdict = PROBES.get(path)
        if verdict is None:
            body = json.dumps(
                {"error": f"no such probe {path!r}", "probes": sorted([*PROBES, METRICS_PATH])}
            )
            self._send(404, body.encode(), with_body)
            return
        try:
            report = self.server.report()
        except Exception as exc:  # the probe fails; the server goes on
            _log.warning("health_server.report_failed", error=f"{type(exc).__name__}: {exc}")
            failure = {
                "healthy": False,
                "ready": False,
                "connections": [],
                "error": f"{type(exc).__name__}: {exc}",
            }
            self._send(503, json.dumps(failure).encode(), with_body)
            return
        status = 200 if getattr(report, verdict) else 503
        self._send(status, report.model_dump_json().encode(), with_body)

    def _metrics(self, with_body: bool) -> None:
        try:
            from alpaca_di.providers.metrics import metrics_exposition
        except ImportError as exc:  # the optional extra is not installed
            self._send(501, json.dumps({"error": str(exc)}).encode(), with_body)
            return
        try:
            body, content_type = metrics_exposition()
        except Exception as exc:  # the scrape fails; the server goes on
            _log.exception("health_server.metrics_failed")
            error = {"error": f"{type(exc).__name__}: {exc}"}
            self._send(500, json.dumps(error).encode(), with_body)
            return
        self._send(200, body, with_body, content_type)

    def _send(
        self, status: int, body: bytes, with_body: bool, content_type: str = "application/json"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("health_server.request", line=format % args)
