"""Multiprocess mode: two worker processes, one scrape aggregating both (MultiProcessCollector)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from _integration_support import wait_until
from _metrics_support import Scrape
from prometheus_client import multiprocess

from alpaca_di import Credentials
from alpaca_di.providers.metrics import endpoint_label
from alpaca_di.testing import AlpacaEmulator, register_secret
from alpaca_di.testing.messages import quote

KEY = "PKMULTIPROCESS000001"
SECRET = "multiprocess-secret-do-not-leak"
IEX = "/v2/iex"
WORKER = Path(__file__).with_name("_metrics_worker.py")
DEADLINE = 30.0
register_secret(SECRET)


class Worker:
    """One worker process and the lines it printed."""

    def __init__(self, ws_url: str, directory: Path, *, serve: bool) -> None:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
        args = [sys.executable, str(WORKER), ws_url, KEY, SECRET, *(["serve"] if serve else [])]
        self.process = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.url: str | None = None
        assert self.process.stdout is not None
        for line in self.process.stdout:  # the worker exits (and this ends) if it fails
            if line.startswith("url "):
                self.url = line.split()[1]
            if line.strip() == "ready":
                return
        raise AssertionError(f"worker exited with {self.process.wait()} before it was ready")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> int:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.write("exit\n")
            self.process.stdin.close()
        return self.process.wait(DEADLINE)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(DEADLINE)


@pytest.fixture
def emulator() -> Iterator[AlpacaEmulator]:
    with AlpacaEmulator(connection_limit=2) as emu:  # both workers hold the key's socket
        yield emu


def test_two_workers_are_aggregated_in_one_scrape(emulator: AlpacaEmulator, tmp_path: Path) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    serving = Worker(emulator.ws_url, directory, serve=True)
    other: Worker | None = None
    try:
        other = Worker(emulator.ws_url, directory, serve=False)
        assert serving.url is not None
        labels = {
            "fingerprint": Credentials(KEY, SECRET).fingerprint,
            "endpoint": endpoint_label(emulator.ws_url + IEX),
            "kind": "stock",
        }

        def scrape() -> Scrape:
            response = requests.get(f"{serving.url}/metrics", timeout=DEADLINE)
            assert response.status_code == 200
            return Scrape(response.text)

        emulator.publish(IEX, [quote("AAPL", bid=100.0 + i) for i in range(12)])
        # both sessions (one per worker, same key) get every quote: 24 deliveries
        delivered = "alpaca_di_consumer_delivered_total"
        wait_until(
            lambda: scrape().select(delivered, consumer="worker", **labels)
            == [({**labels, "consumer": "worker"}, 24.0)],
            DEADLINE,
            "both workers' deliveries in one series",
        )
        s = scrape()
        sent = emulator.counters(KEY, IEX).messages_sent
        assert sent == 24
        assert s.value("alpaca_di_messages_received_total", **labels) == sent
        assert s.value("alpaca_di_consumer_subscriptions", consumer="worker", **labels) == 2
        assert s.value("alpaca_di_connection_state", state="connected", **labels) == 2
        assert s.value("alpaca_di_consumers", **labels) == 2
        latency = s.value(
            "alpaca_di_delivery_latency_seconds_count",
            kind="stock",
            endpoint=labels["endpoint"],
        )
        assert latency >= 2  # each worker's consumer sampled its first batch
        assert SECRET not in s.text
        assert KEY not in s.text

        # A worker that exits keeps its counts; once marked dead, its gauges stop counting.
        assert other.stop() == 0
        multiprocess.mark_process_dead(other.pid, str(directory))
        s = scrape()
        assert s.value("alpaca_di_consumer_delivered_total", consumer="worker", **labels) == 24
        assert s.value("alpaca_di_messages_received_total", **labels) == 24
        assert s.value("alpaca_di_consumer_subscriptions", consumer="worker", **labels) == 1
        assert s.value("alpaca_di_connection_state", state="connected", **labels) == 1
    finally:
        if other is not None:
            other.kill()
        serving.stop()
        serving.kill()
