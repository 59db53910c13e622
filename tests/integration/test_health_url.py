"""``alpaca-di health --url``: a running application's endpoint, no socket of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dependency_injector import containers, providers

from alpaca_di import AlpacaContainer, ConnectionRegistry, HealthServer, serve_health
from alpaca_di.cli import commands as cli
from alpaca_di.cli.health import endpoint_url
from alpaca_di.testing import AlpacaEmulator, find_leaks, register_secret

KEY = "PKHEALTHURL00001"
SECRET = "health-url-secret-do-not-leak-42"
register_secret(SECRET)
IEX = "/v2/iex"
PATHS = ("/v2/iex", "/v1beta3/crypto/us", "/v1beta1/indicative", "/v1beta1/news", "/stream")
DEADLINE = 10.0


class App(containers.DeclarativeContainer):
    config = providers.Configuration()
    alpaca = providers.Container(AlpacaContainer, config=config.alpaca)


@pytest.fixture
def emulator() -> Iterator[AlpacaEmulator]:
    with AlpacaEmulator(connection_limit=1) as emu:  # Alpaca's limit: one socket per endpoint
        yield emu


@pytest.fixture
def app(emulator: AlpacaEmulator) -> Iterator[App]:
    app = App()
    app.config.alpaca.from_dict(
        {
            "api_key": KEY,
            "secret_key": SECRET,
            "data_stream_url": emulator.ws_url,
            "trading_stream_url": emulator.trading_stream_url,
            "api_url": emulator.api_url,
            "backoff_initial": 0.01,
            "backoff_max": 0.05,
        }
    )
    registry = ConnectionRegistry()
    app.alpaca.registry.override(registry)
    app.init_resources()
    yield app
    app.shutdown_resources()
    registry.close_all()


@pytest.fixture
def server(app: App) -> Iterator[HealthServer]:
    with serve_health(app.alpaca) as server:
        yield server


def run(*argv: str) -> int:
    """The command in-process (main() would configure logging for the whole test run)."""
    args = cli.build_parser().parse_args(["health", *argv])
    code: int = args._run(args)
    return code


def report_in(out: str) -> Any:
    """The indented JSON report in captured stdout (structlog's defaults print there too)."""
    return json.JSONDecoder().raw_decode(out, out.index("{\n"))[0]


def _env() -> dict[str, str]:
    """No Alpaca setting at all: --url must not need any."""
    return {k: v for k, v in os.environ.items() if not k.upper().startswith(("APCA_", "ALPACA_"))}


def test_url_against_a_running_app_at_connection_limit_1_is_healthy_with_no_second_socket(
    app: App, server: HealthServer, emulator: AlpacaEmulator, tmp_path: Path
) -> None:
    sub = app.alpaca.stock_stream().subscribe(quotes=["AAPL"])
    sub.wait_confirmed(DEADLINE)
    emulator.wait_until(lambda: app.alpaca.health().ready, DEADLINE)
    before = {path: emulator.counters(KEY, path) for path in PATHS}
    handshakes = emulator.stats().handshakes

    result = subprocess.run(
        [sys.executable, "-m", "alpaca_di", "health", "--url", server.url],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["healthy"] is True
    assert report["ready"] is True
    (stock,) = [c for c in report["connections"] if c["in_use"]]
    assert stock["kind"] == "stock"
    assert stock["state"] == "connected"
    assert stock["last_error"] is None
    assert "ConnectionLimitError" not in result.stdout + result.stderr
    assert "connection limit" not in result.stdout + result.stderr
    assert not find_leaks(result.stdout + result.stderr)
    assert emulator.stats().handshakes == handshakes  # not one WebSocket upgrade more
    after = {path: emulator.counters(KEY, path) for path in PATHS}
    for path in PATHS:  # no auth, no session, no 406 more on any endpoint
        seen = (before[path], after[path])
        assert seen[1].connections_accepted == seen[0].connections_accepted, path
        assert seen[1].auth_attempts == seen[0].auth_attempts, path
        assert seen[1].rejections == seen[0].rejections, path
    assert after[IEX].connections_accepted == 1
    assert after[IEX].max_concurrent == 1
    assert after[IEX].rejections.get(406, 0) == 0
    sub.close()


def test_ready_and_live_follow_the_stream_in_use(
    app: App, server: HealthServer, emulator: AlpacaEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("--url", server.url, "--ready") == 0  # nothing in use yet: ready
    emulator.pause_reading(IEX)
    hub = app.alpaca.stock_stream()
    sub = hub.subscribe(quotes=["AAPL"])
    emulator.wait_until(lambda: hub.health().state == "authenticating", DEADLINE)
    capsys.readouterr()

    assert run("--url", server.url, "--ready") == 1
    out, err = capsys.readouterr()
    assert report_in(out)["ready"] is False
    assert "not ready: stock authenticating" in err
    assert run("--url", server.url + "/healthz", "--live") == 1  # in use, never connected
    assert run("--url", server.url) == 1

    emulator.pause_reading(IEX, paused=False)
    sub.wait_confirmed(DEADLINE)
    emulator.wait_until(lambda: app.alpaca.health().ready, DEADLINE)
    assert run("--url", server.url, "--ready") == 0
    assert run("--url", server.url, "--live") == 0
    assert run("--url", server.url + "/") == 0
    sub.close()


def test_unreachable_urls_and_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--url", "http://127.0.0.1:1") == 2  # nothing listens on port 1
    assert "cannot reach http://127.0.0.1:1/readyz" in capsys.readouterr().err
    assert run("--url", "ftp://127.0.0.1:8080") == 2
    assert "http://" in capsys.readouterr().err
    assert run("--ready") == 2
    assert "--ready needs --url" in capsys.readouterr().err
    assert run("--url", "http://127.0.0.1:1", "--emulator") == 2
    assert run("--url", "http://127.0.0.1:1", "--streams", "stock") == 2
    with pytest.raises(SystemExit) as exited:
        run("--url", "http://127.0.0.1:1", "--ready", "--live")
    assert exited.value.code == 2


def test_an_answer_that_is_no_health_report_exits_2(
    server: HealthServer, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve_health(lambda: _not_a_report()) as broken:
        assert run("--url", broken.url) == 1  # the endpoint's own 503 with an error body
        assert "could not build its report" in capsys.readouterr().err
    assert endpoint_url("http://h:1/base/readyz", "live") == "http://h:1/base/healthz"
    assert endpoint_url("https://h/x/", None) == "https://h/x/readyz"


def _not_a_report() -> Any:
    raise RuntimeError("registry gone")


def test_without_url_a_running_app_holds_the_slot_and_the_hint_points_at_url(
    app: App,
    emulator: AlpacaEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sub = app.alpaca.stock_stream().subscribe(quotes=["AAPL"])
    sub.wait_confirmed(DEADLINE)
    for name in list(os.environ):
        if name.upper().startswith(("APCA_", "ALPACA_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    monkeypatch.setenv("ALPACA_DATA_STREAM_URL", emulator.ws_url)
    monkeypatch.setenv("ALPACA_BACKOFF_INITIAL", "0.01")
    monkeypatch.setenv("ALPACA_BACKOFF_MAX", "0.05")

    assert run("--timeout", "1") == 1  # the old way: a second socket, refused
    err = capsys.readouterr().err
    assert "ConnectionLimitError" in err
    assert "use --url" in err
    assert emulator.counters(KEY, IEX).rejections.get(406, 0) >= 1
    assert emulator.counters(KEY, IEX).open == 1  # the app kept its connection
    assert sub.stats.errors == 0
    sub.close()
