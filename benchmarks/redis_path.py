"""What the Redis scale-out path costs: added latency and throughput vs in-process sharing.

Run from the repository root, with a Redis on 127.0.0.1:6379 (or ``--redis-url``)::

    python -m benchmarks.redis_path            # full run
    python -m benchmarks.redis_path --quick    # a few seconds
    python -m benchmarks.redis_path --json     # machine-readable

Both paths read the same emulator feed (served from this process). *in-process*
is ``sharing="local"``: the hub sits on the WebSocket. *redis* is
``sharing="redis"`` as deployed: a separate ``alpaca-di gateway`` process holds
the socket and republishes every batch on Redis pub/sub, and this process's hub,
follower-only, reads it back through Redis.
Latency is the time from the emulator stamping a quote (``t``) to the consumer's
handler receiving the parsed model; throughput is a burst of quotes until the
last one is delivered. Figures go to stdout; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from alpaca_di.credentials import Credentials
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.hub.registry import ConnectionRegistry
from alpaca_di.testing.messages import quote
from alpaca_di.transport import ConnectionOptions

KEY, SECRET = "PKBENCHREDIS01", "bench-secret"
IEX = "/v2/iex"


class _Sink:
    """Records receive latency (ms) and counts, with a deadline-bound wait."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.count = 0
        self._cond = threading.Condition()

    def __call__(self, message: Any) -> None:
        now = datetime.now(timezone.utc)
        with self._cond:
            self.latencies.append((now - message.timestamp).total_seconds() * 1000.0)
            self.count += 1
            self._cond.notify_all()

    def reset(self) -> None:
        with self._cond:
            self.latencies.clear()
            self.count = 0

    def wait(self, count: int, timeout: float) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self.count >= count, timeout):
                raise TimeoutError(f"{self.count} of {count} messages within {timeout} s")


def _measure(
    name: str,
    registry: ConnectionRegistry,
    emulator: AlpacaEmulator,
    *,
    latency_messages: int,
    burst_messages: int,
) -> dict[str, Any]:
    options = ConnectionOptions(backoff_initial=0.05, backoff_max=0.5, queue_maxsize=None)
    lease = registry.acquire(Credentials(KEY, SECRET), "stock", emulator.data_url(IEX), options)
    sink = _Sink()
    try:
        sub = lease.hub.subscribe(sink, quotes=["AAPL"], maxsize=None)
        sub.wait_confirmed(15)
        # Warm-up (connections, caches, JIT-less Python still likes warm dicts).
        for _ in range(50):
            emulator.publish(IEX, [quote("AAPL")])
        sink.wait(50, 15)
        sink.reset()
        # Latency: one quote at a time, paced so that nothing queues.
        for _ in range(latency_messages):
            emulator.publish(IEX, [quote("AAPL")])
            time.sleep(0.001)
        sink.wait(latency_messages, 30)
        latencies = sorted(sink.latencies)
        sink.reset()
        # Throughput: a burst in frames of 100, until the last one is delivered.
        frames = [[quote("AAPL", bid_size=i) for i in range(100)]] * (burst_messages // 100)
        started = time.perf_counter()
        for frame in frames:
            emulator.publish(IEX, frame)
        sink.wait(len(frames) * 100, 120)
        elapsed = time.perf_counter() - started
        sub.close()
    finally:
        lease.release()
    return {
        "path": name,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "throughput_msgs_per_s": len(frames) * 100 / elapsed,
    }


def _start_gateway(redis_url: str, prefix: str, emulator: AlpacaEmulator) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "APCA_API_KEY_ID": KEY,
        "APCA_API_SECRET_KEY": SECRET,
        "ALPACA_DATA_STREAM_URL": emulator.ws_url,
        "ALPACA_REDIS_URL": redis_url,
        "ALPACA_REDIS_PREFIX": prefix,
    }
    gateway = subprocess.Popen(
        [sys.executable, "-m", "alpaca_di", "gateway", "--kinds", "stock"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert gateway.stdout is not None
    line = gateway.stdout.readline()
    if not line.startswith("ready "):
        gateway.kill()
        raise RuntimeError(f"alpaca-di gateway did not start: {line!r}")
    return gateway


def _redis_registry(redis_url: str, prefix: str) -> ConnectionRegistry:
    from alpaca_di.scaleout.options import SharingOptions
    from alpaca_di.scaleout.registry import RedisConnectionRegistry, check_redis

    check_redis(redis_url)
    return RedisConnectionRegistry(
        redis_url, sharing=SharingOptions(prefix=prefix), candidate=False
    )


def _cleanup(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def run(redis_url: str, *, quick: bool) -> list[dict[str, Any]]:
    """Measure both paths; returns one row per path plus the difference."""
    latency_messages = 300 if quick else 2000
    burst_messages = 5_000 if quick else 50_000
    prefix = f"alpaca-di-bench-{uuid.uuid4().hex[:8]}"
    rows: list[dict[str, Any]] = []
    gateway: subprocess.Popen[str] | None = None
    with AlpacaEmulator() as emulator:
        paths: list[tuple[str, Callable[[], ConnectionRegistry]]] = [
            ("in-process", ConnectionRegistry),
            ("redis", lambda: _redis_registry(redis_url, prefix)),
        ]
        try:
            gateway = _start_gateway(redis_url, prefix, emulator)
            for name, make in paths:
                registry = make()
                try:
                    rows.append(
                        _measure(
                            name,
                            registry,
                            emulator,
                            latency_messages=latency_messages,
                            burst_messages=burst_messages,
                        )
                    )
                finally:
                    registry.close_all()
        finally:
            if gateway is not None:
                gateway.terminate()
                gateway.wait(10)
            _cleanup(redis_url, prefix)
    local, shared = rows
    rows.append(
        {
            "path": "added by redis",
            "p50_ms": shared["p50_ms"] - local["p50_ms"],
            "p99_ms": shared["p99_ms"] - local["p99_ms"],
            "throughput_msgs_per_s": shared["throughput_msgs_per_s"]
            / local["throughput_msgs_per_s"],
        }
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.redis_path", description=__doc__)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--quick", action="store_true", help="fewer messages, a few seconds")
    parser.add_argument("--json", action="store_true", help="print JSON rows")
    args = parser.parse_args()
    rows = run(args.redis_url, quick=args.quick)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'path':<16}{'p50 ms':>10}{'p99 ms':>10}{'msgs/s':>14}")
    for row in rows[:2]:
        print(
            f"{row['path']:<16}{row['p50_ms']:>10.3f}{row['p99_ms']:>10.3f}"
            f"{row['throughput_msgs_per_s']:>14,.0f}"
        )
    added = rows[2]
    print(
        f"{added['path']:<16}{added['p50_ms']:>+10.3f}{added['p99_ms']:>+10.3f}"
        f"{added['throughput_msgs_per_s']:>13.2f}x"
    )


if __name__ == "__main__":
    main()
