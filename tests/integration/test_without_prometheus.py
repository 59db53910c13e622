"""prometheus_client is an extra: the package and its health server run without it."""

from __future__ import annotations

import subprocess
import sys

# None in sys.modules makes ``import prometheus_client`` raise ImportError, as on a
# machine where the extra was never installed.
_SCRIPT = """
import sys
sys.modules["prometheus_client"] = None

import json
import urllib.error
import urllib.request

import alpaca_di
from alpaca_di import AlpacaContainer, ConnectionRegistry, serve_health

assert AlpacaContainer is not None
try:
    alpaca_di.register_metrics
except ImportError as exc:
    print("import error:", exc)
with serve_health(ConnectionRegistry()) as server:
    try:
        urllib.request.urlopen(server.url + "/metrics", timeout=10)
    except urllib.error.HTTPError as exc:
        print("status:", exc.code, json.loads(exc.read())["error"])
    with urllib.request.urlopen(server.url + "/healthz", timeout=10) as response:
        print("healthz:", response.status)
"""


def test_the_core_runs_and_metrics_name_the_extra_without_prometheus_client() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    prefixes = ("import error:", "status:", "healthz:")  # not structlog's default output
    lines = [line for line in result.stdout.splitlines() if line.startswith(prefixes)]
    assert lines[0] == (
        "import error: alpaca-di metrics need prometheus_client: "
        "pip install 'alpaca-di[metrics]'"
    )
    assert lines[1] == (
        "status: 501 alpaca-di metrics need prometheus_client: pip install 'alpaca-di[metrics]'"
    )
    assert lines[2] == "healthz: 200"
