"""Every script in ``examples/`` runs, exits 0 and prints what its docstring claims.

The scripts run as users run them (``python examples/<name>.py``, subprocesses
with a deadline), with arguments that keep them short. ``examples/test_with_fakes.py``
is a pytest file: it runs in a pytest subprocess of its own (the suite's
``testpaths`` is ``tests``, so it is never collected twice). The FastAPI example
is also exercised in-process with Starlette's ``TestClient``.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from starlette.websockets import WebSocketDisconnect

from alpaca_di.credentials import mask_key
from alpaca_di.testing import AlpacaEmulator, find_leaks, register_secret
from alpaca_di.testing.messages import quote

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FAKES_TEST = EXAMPLES / "test_with_fakes.py"
DEADLINE = 90.0  # seconds a whole subprocess may take (it normally takes a few)

register_secret(
    "example-secret-for-the-emulator",
    "paper-example-secret",
    "live-example-secret",
    "example-secret-for-the-order-app",
)


def _env() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith(("APCA_", "ALPACA_"))
    }


def run_example(name: str, *args: str) -> str:
    """Run ``examples/<name>`` to completion; return its stdout (asserting exit code 0)."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    explain = f"{name} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, explain
    assert not find_leaks(result.stdout + result.stderr)
    return result.stdout


def test_threaded_app() -> None:
    out = run_example("threaded_app.py", "--seconds", "1")
    for name in ("momentum", "pairs", "hedger"):
        assert re.search(rf"^{name} +\d+ polls on its own thread: [A-Z]+ \d", out, re.M)
    assert re.search(r"^tape +read [1-9]\d* trades by iterating its subscription", out, re.M)
    assert re.search(r"^stock connection \S+/v2/iex: connected, 2 consumers", out, re.M)
    assert (
        "the emulator saw 1 stock socket at most (1 accepted) serving 4 threads; "
        "0 open after shutdown_resources()" in out
    )


def test_asyncio_app() -> None:
    out = run_example("asyncio_app.py", "--trades", "20")
    assert "async for   read 20 AAPL trades" in out
    assert re.search(r"^async order fill MSFT at \d", out, re.M)
    assert re.search(r"async handler saw [1-9]\d* quotes of AAPL, MSFT, SPY;", out)
    assert "calls off the application's loop: 0" in out
    assert re.search(r"^stock +connected, \d+ consumers", out, re.M)
    assert re.search(r"^trading +connected, 1 consumers", out, re.M)
    assert "after shutdown_resources(): 0 sockets open, 2 close frames received" in out


def test_two_accounts() -> None:
    out = run_example("two_accounts.py")
    assert re.search(r"^paper: AAPL mid \d+\.\d\d; order fill at", out, re.M)
    assert re.search(r"^live: AAPL mid \d+\.\d\d; order fill at", out, re.M)
    assert out.count("1 accepted, at most 1 open at once, 0 refused with 406") == 4
    assert out.count("order book: 1 order(s)") == 2
    assert re.search(r"^paper PK\*+LE01 stock +connected, 2 consumers", out, re.M)
    assert re.search(r"^live +AK\*+E001 stock +connected, 2 consumers", out, re.M)


def test_migrating_from_singletons() -> None:
    out = run_example("migrating_from_singletons.py")
    assert "20 threads resolved pricing_service: 1 distinct instance" in out
    assert re.search(r"^executor: fill 2 AAPL at \d", out, re.M)
    assert "legacy StockDataStream code got 10 quotes through the shared socket" in out
    assert out.count("1 socket accepted, 1 closed with a close frame, 0 open") == 2


def test_order_app() -> None:
    out = run_example("order_app.py")
    assert re.search(r"bought \d+ AAPL at [\d.]+ \(fill\)", out), out


def test_with_fakes_passes_under_pytest() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(FAKES_TEST)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b6 passed\b", result.stdout), result.stdout
    assert not find_leaks(result.stdout + result.stderr)


# -- the FastAPI example -----------------------------------------------------------------------


@pytest.fixture
def fastapi_example() -> Iterator[ModuleType]:
    """``examples/fastapi_app.py`` imported as a module (wiring needs it in sys.modules)."""
    name = "alpaca_di_fastapi_example"
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / "fastapi_app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[name]


def test_fastapi_health_and_quote_relay(fastapi_example: ModuleType) -> None:
    with AlpacaEmulator(rate=100, seed=3) as emulator:
        app = fastapi_example.create_app(fastapi_example.emulator_config(emulator))
        key = fastapi_example.KEY_ID
        with TestClient(app) as client:
            health = client.get("/health")
            assert health.status_code == 200
            assert health.json()["healthy"] is True
            assert "connections" in health.json()

            with client.websocket_connect("/ws/quotes?symbols=AAPL") as websocket:
                first = websocket.receive_json()
                assert first["symbol"] == "AAPL"
                assert 0 < first["bid"] <= first["ask"]
                report = client.get("/health").json()
                [stock] = [c for c in report["connections"] if c["kind"] == "stock"]
                assert stock["state"] == "connected"
                assert stock["consumers"] == 1
            # the client left: its subscription is released and the server unsubscribed
            emulator.wait_until(
                lambda: "AAPL" not in emulator.subscriptions(key, "/v2/iex")["quotes"], 10.0
            )

            bad = "/ws/quotes?symbols=AAPL,NOT$A$SYMBOL"
            with client.websocket_connect(bad) as websocket, pytest.raises(
                WebSocketDisconnect
            ) as closed:
                websocket.receive_json()
            assert closed.value.code == 1008

            page = client.get("/")
            assert page.status_code == 200
            assert "/ws/quotes" in page.text
        # lifespan shutdown closed the stock socket with a close frame
        emulator.wait_until(lambda: emulator.counters(key, "/v2/iex").open == 0, 10.0)
        assert emulator.counters(key, "/v2/iex").close_frames_received == 1


def test_fastapi_serves_the_metrics_of_its_named_consumers(fastapi_example: ModuleType) -> None:
    with AlpacaEmulator() as emulator:  # no synthetic data: only what the test publishes
        app = fastapi_example.create_app(fastapi_example.emulator_config(emulator))
        key = fastapi_example.KEY_ID
        with TestClient(app) as client, client.websocket_connect(
            "/ws/quotes?symbols=AAPL"
        ) as websocket:
            emulator.wait_until(
                lambda: "AAPL" in emulator.subscriptions(key, "/v2/iex")["quotes"], 10.0
            )
            emulator.publish("/v2/iex", [quote("AAPL", bid=101.0)])
            assert websocket.receive_json()["bid"] == 101.0
            response = client.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain")
            wanted = {"consumer": "ws-quotes", "fingerprint": mask_key(key), "kind": "stock"}
            delivered = [
                sample.value
                for family in text_string_to_metric_families(response.text)
                for sample in family.samples
                if sample.name == "alpaca_di_consumer_delivered_total"
                and wanted.items() <= sample.labels.items()
            ]
            assert delivered == [1.0]
            assert key not in response.text


def test_fastapi_script_serves_and_stops_on_ctrl_c() -> None:
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "fastapi_app.py"), "--port", "0"],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        url = None
        while url is None:
            line = lines.get(timeout=DEADLINE)
            assert line is not None, "the server ended before serving:\n" + "".join(seen)
            seen.append(line)
            found = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line)
            url = found.group(1) if found else None
        response = httpx.get(f"{url}/health", timeout=DEADLINE)
        assert response.status_code == 200
        assert response.json()["healthy"] is True
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=DEADLINE) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=DEADLINE)
        if proc.stdout is not None:
            proc.stdout.close()
    reader.join(timeout=DEADLINE)
    while (line := lines.get_nowait()) is not None:
        seen.append(line)
    assert "Application shutdown complete" in "".join(seen)
