"""``alpaca-di demo`` and ``alpaca-di health``, run as the user runs them (subprocesses).

Every run is bounded by a subprocess timeout; nothing sleeps. The demo's final
report is the snapshot taken at the end of the run, before shutdown, so every
connection in it is ``connected``; the shutdown itself is confirmed on the
view's stream ("closed 4 connections ... 0 sockets open").
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import IO, Any

import pytest

from alpaca_di import HealthReport
from alpaca_di.cli.demo.run import DEMO_SECRET
from alpaca_di.cli.health import _EMULATOR_SECRET
from alpaca_di.testing import AlpacaEmulator, find_leaks, register_secret

LIVE_SECRET = "demo-live-secret-must-not-print-7"
register_secret(DEMO_SECRET, _EMULATOR_SECRET, LIVE_SECRET)

DEADLINE = 90.0  # seconds a whole subprocess may take (it normally takes a few)


def _env(**extra: str) -> dict[str, str]:
    """The environment without any Alpaca setting, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith(("APCA_", "ALPACA_"))
    }
    env.pop("COLUMNS", None)
    env.update(extra)
    return env


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # cwd=tmp_path: no .env file of the developer's is read.
    result = subprocess.run(
        [sys.executable, "-m", "alpaca_di", *args],
        cwd=tmp_path,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    leaks = find_leaks(result.stdout + result.stderr)
    assert not leaks, f"secret printed by {args}: {leaks}"
    return result


def _explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def _check_report(data: dict[str, Any]) -> HealthReport:
    report = HealthReport.model_validate(data)
    pairs = Counter((c.kind, c.endpoint) for c in report.connections)
    assert all(count == 1 for count in pairs.values()), pairs
    kinds = Counter(c.kind for c in report.connections)
    assert kinds == Counter({"stock": 1, "crypto": 1, "news": 1, "trading": 1})
    assert all(c.state == "connected" for c in report.connections)
    assert report.healthy
    stock = next(c for c in report.connections if c.kind == "stock")
    assert stock.consumers > 1
    assert stock.messages_received > 0
    assert stock.subscriptions.get("quotes") == 5
    trading = next(c for c in report.connections if c.kind == "trading")
    assert trading.messages_received > 0  # the executor's orders produced trade updates
    return report


def test_demo_json_prints_only_the_final_health_report(tmp_path: Path) -> None:
    result = _run(tmp_path, "demo", "--duration", "3", "--json")
    assert result.returncode == 0, _explain(result)
    data = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert set(data) >= {"connections", "healthy", "generated_at"}
    _check_report(data)
    # progress and the shutdown confirmation go to stderr
    assert "waiting for first prices" in result.stderr or "running:" in result.stderr
    assert "closed 4 connections" in result.stderr
    assert "the emulator sees 0 sockets open and received 4 close frames" in result.stderr
    assert "One socket per endpoint (server side, at most 1 at once): yes" in result.stderr


def test_demo_plain_mode_prints_progress_and_the_health_table(tmp_path: Path) -> None:
    result = _run(tmp_path, "demo", "--duration", "2")
    assert result.returncode == 0, _explain(result)
    out = result.stdout
    assert "\x1b[" not in out  # not a terminal: no redraws, no colours
    assert "starting the embedded Alpaca emulator" in out
    assert "running: first prices after" in out
    assert "connected |" in out  # a periodic progress line
    assert "Final health report" in out
    for path in ("/v2/iex", "/v1beta3/crypto/us", "/v1beta1/news", "/stream"):
        assert path in out
    assert "1 open / max 1" in out
    assert "One socket per endpoint (server side, at most 1 at once): yes" in out
    assert "closed 4 connections" in out


def test_demo_drops_the_stock_stream_and_shows_the_gap_and_the_backfilled_bars(
    tmp_path: Path,
) -> None:
    result = _run(tmp_path, "demo", "--duration", "6")
    assert result.returncode == 0, _explain(result)
    assert "running: first prices after" in result.stdout
    shown = re.search(r"bars: ([\d,]+) live, ([\d,]+) backfilled after (\d+) gap", result.stdout)
    assert shown, _explain(result)
    assert shown[3] == "1"
    assert int(shown[2].replace(",", "")) > 0  # bars the emulator published while it was down
    quiet = _run(tmp_path, "demo", "--duration", "2", "--json", "--no-drop")
    assert quiet.returncode == 0, _explain(quiet)
    stock = next(c for c in _check_report(json.loads(quiet.stdout)).connections
                 if c.kind == "stock")
    assert (stock.gaps, stock.backfilled, stock.reconnects) == (0, 0, 0)


def _pump(stream: IO[str], into: queue.Queue[str | None]) -> threading.Thread:
    """Copy ``stream``'s lines into ``into`` (then ``None``) on a daemon thread."""

    def pump() -> None:
        for line in stream:
            into.put(line)
        into.put(None)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def _drain(lines: queue.Queue[str | None]) -> str:
    text = []
    while (line := lines.get(timeout=DEADLINE)) is not None:
        text.append(line)
    return "".join(text)


def test_demo_ends_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "alpaca_di", "demo", "--duration", "60"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    out_lines: queue.Queue[str | None] = queue.Queue()
    err_lines: queue.Queue[str | None] = queue.Queue()
    readers = [_pump(proc.stdout, out_lines), _pump(proc.stderr, err_lines)]
    seen: list[str] = []
    try:
        while True:
            line = out_lines.get(timeout=DEADLINE)
            assert line is not None, "the demo ended before it was running:\n" + "".join(seen)
            seen.append(line)
            if "running: first prices" in line:
                break
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=DEADLINE)
    out = "".join(seen) + _drain(out_lines)
    stderr = _drain(err_lines)
    for reader in readers:
        reader.join(timeout=DEADLINE)
    assert code == 0, f"exit {code}\n--- stdout\n{out}\n--- stderr\n{stderr}"
    assert not find_leaks(out + stderr)
    assert "Ctrl-C: ending the run" in out
    assert "closed 4 connections" in out
    assert "Final health report" in out


def test_demo_live_without_keys_exits_2_with_a_message(tmp_path: Path) -> None:
    result = _run(tmp_path, "demo", "--live", "--duration", "1")
    assert result.returncode == 2, _explain(result)
    assert result.stdout == ""
    assert "APCA_API_KEY_ID" in result.stderr
    assert "APCA_API_SECRET_KEY" in result.stderr


def test_demo_live_with_bad_settings_never_prints_the_secret(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        "demo",
        "--live",
        APCA_API_KEY_ID="PKLIVEDEMO000001",
        APCA_API_SECRET_KEY=LIVE_SECRET,
        ALPACA_FEED="not-a-feed",
    )
    assert result.returncode == 2, _explain(result)
    assert "ALPACA_FEED" in result.stderr  # _run checked that the secret is absent


def test_demo_live_reads_the_environment(tmp_path: Path) -> None:
    """``--live`` against ``alpaca-di emulator`` through the URL settings: a dry run."""
    server = subprocess.Popen(
        [sys.executable, "-m", "alpaca_di", "emulator", "--rate", "100"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert server.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    reader = _pump(server.stdout, lines)
    try:
        urls: dict[str, str] = {}
        while len(urls) < 3:
            line = lines.get(timeout=DEADLINE)
            assert line is not None, f"the emulator ended early: {urls}"
            word, _, url = line.strip().partition(" ")
            urls[word] = url
        result = _run(
            tmp_path,
            "demo",
            "--live",
            "--duration",
            "2",
            "--json",
            APCA_API_KEY_ID="PKLIVEDEMO000001",
            APCA_API_SECRET_KEY=LIVE_SECRET,
            ALPACA_DATA_STREAM_URL=urls["ready"],
            ALPACA_TRADING_STREAM_URL=urls["trading"],
            ALPACA_API_URL=urls["rest"],
        )
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=DEADLINE)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait(timeout=DEADLINE)
    reader.join(timeout=DEADLINE)
    assert result.returncode == 0, _explain(result)
    report = HealthReport.model_validate(json.loads(result.stdout))
    assert sorted(c.kind for c in report.connections) == ["crypto", "news", "stock", "trading"]
    endpoints = {c.kind: c.endpoint for c in report.connections}
    assert endpoints["stock"] == urls["ready"] + "/v2/iex"
    assert endpoints["trading"] == urls["trading"]
    assert "dry run" in result.stderr  # no order is placed on a real account without asking


def test_demo_ends_early_when_a_connection_fails(tmp_path: Path) -> None:
    """Refused keys (402) are not retried: the run ends at once, exit 1, the reason shown."""
    with AlpacaEmulator() as emulator:
        emulator.add_account("PKSOMEONEELSE001", "another-account-secret")  # ours gets 402
        result = _run(
            tmp_path,
            "demo",
            "--live",
            "--duration",
            "60",
            APCA_API_KEY_ID="PKLIVEDEMO000001",
            APCA_API_SECRET_KEY=LIVE_SECRET,
            ALPACA_DATA_STREAM_URL=emulator.ws_url,
            ALPACA_TRADING_STREAM_URL=emulator.trading_stream_url,
            ALPACA_API_URL=emulator.api_url,
        )
    assert result.returncode == 1, _explain(result)
    assert re.search(r"the \w+ connection failed: .*AuthenticationError", result.stdout)
    assert "a connection was not healthy at the end of the run" in result.stdout
    assert "Final health report" in result.stdout


def test_health_against_the_emulator_reports_connected_streams(tmp_path: Path) -> None:
    result = _run(tmp_path, "health", "--emulator", "--streams", "stock,trading")
    assert result.returncode == 0, _explain(result)
    report = HealthReport.model_validate(json.loads(result.stdout))
    assert sorted(c.kind for c in report.connections) == ["stock", "trading"]
    assert all(c.state == "connected" for c in report.connections)
    assert report.healthy


def test_health_without_settings_exits_2(tmp_path: Path) -> None:
    result = _run(tmp_path, "health")
    assert result.returncode == 2, _explain(result)
    assert result.stdout == ""
    assert "APCA_API_KEY_ID" in result.stderr


def test_health_exits_1_when_a_stream_cannot_connect(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        "health",
        "--timeout",
        "1",
        APCA_API_KEY_ID="PKLIVEDEMO000001",
        APCA_API_SECRET_KEY=LIVE_SECRET,
        ALPACA_DATA_STREAM_URL="ws://127.0.0.1:1",  # nothing listens on port 1
    )
    assert result.returncode == 1, _explain(result)
    report = HealthReport.model_validate(json.loads(result.stdout))
    [stock] = report.connections
    assert stock.kind == "stock"
    assert stock.state != "connected"
    assert not report.healthy
    assert "stock stream: TimeoutError" in result.stderr


@pytest.mark.parametrize("command", ["demo", "health"])
def test_subcommands_are_registered(command: str) -> None:
    from alpaca_di.cli.commands import commands

    assert command in commands()
