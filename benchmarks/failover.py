"""Figure 10: how long the Redis scale-out goes without market data after a fault.

Real processes and a private ``redis-server`` on a spare port (never the shared one
on 6379): worker processes (``multiprocessing`` spawn), each a ``sharing="redis"``
registry with the default settings (lock TTL 3 s, renewals every 0.5 s), each a
leader candidate with one quote consumer of ``AAPL``; the emulator sends
synthetic quotes at 200 a second per session, and every worker reports the
arrival time of each quote. Three faults, one row each:

* **clean handover**: the leader gets ``SIGTERM`` (it closes its socket, then
  releases the lock with a farewell, and a candidate takes over at once);
* **crash failover**: the leader gets ``SIGKILL`` (the lock must expire first);
* **Redis restart**: ``redis-server`` is killed and started again, empty, on the
  same port (every worker reconnects; a leader is elected again).

Each run is measured from the signal (for the restart: from the new server's
start) until *every* worker that is left has quotes again: for each worker, the
end of its longest gap between two quotes in the window of the fault, which ends
once the group's leader status (read from Redis) names a connected leader and the
worker has received quotes after that. Four workers to start with; the two
leaders killed in a run are replaced by fresh workers before the next (not
timed). alpaca-py has no counterpart (it shares nothing across processes).
Quick mode: one run of each.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from benchmarks._common import SECRET, Context, Row, new_key, quiet_logging

__all__ = ["run"]

_RATE = 200.0  # synthetic quotes per second per session: 5 ms apart
_SETTLE = 0.2  # seconds of quotes kept after the new leader is seen connected
_WAIT = 60.0
_POLL = threading.Event()


def _worker(index: int, config: dict[str, Any], reports: Any) -> None:
    """One deployment process: a leader candidate with one quote consumer."""
    # SIGTERM blocked before any thread starts (they inherit the mask), then awaited.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    quiet_logging()
    from alpaca_di.scaleout.registry import registry_for
    from alpaca_di.settings import AlpacaSettings, endpoint_for

    settings = AlpacaSettings(
        api_key=config["key"],
        secret_key=SECRET,
        data_stream_url=config["ws_url"],
        sharing="redis",
        redis_url=config["redis_url"],
        redis_prefix=config["prefix"],
    )
    registry = registry_for(settings)
    lease = registry.acquire(
        settings.credentials(), "stock", endpoint_for(settings, "stock"), settings.to_options()
    )
    sub = lease.hub.subscribe(
        lambda _quote: reports.put(("quote", index, time.time())), quotes=["AAPL"]
    )
    sub.wait_confirmed(_WAIT)
    reports.put(("ready", index, registry.identity))
    signal.sigwait({signal.SIGTERM})  # a normal shutdown, as a process manager asks for one
    sub.close()
    lease.release()
    registry.close_all()


class _RedisServer:
    def __init__(self, directory: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start it; returns the wall time of the start."""
        started = time.time()
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            cwd=self._directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        return started

    def wait_ready(self) -> None:
        import redis

        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + _WAIT
        try:
            while True:
                try:
                    if client.ping():
                        return
                except (redis.RedisError, OSError):
                    if time.monotonic() > deadline:
                        raise
                _POLL.wait(0.01)  # the polling period, bounded by the deadline above
        finally:
            client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class _Deployment:
    """The worker processes, what they report, and the group's leader as Redis says."""

    def __init__(self, ctx: Context, server: _RedisServer, key: str) -> None:
        self._ctx = ctx
        self._server = server
        self._mp = multiprocessing.get_context("spawn")
        self.reports = self._mp.Queue()
        self.config = {
            "key": key,
            "ws_url": ctx.emu.ws_url,
            "redis_url": server.url,
            "prefix": f"bench-failover-{uuid.uuid4().hex[:8]}",
        }
        self.procs: dict[int, Any] = {}
        self.gone: set[int] = set()  # signalled: left to exit on their own (joined at close)
        self.identity: dict[int, str] = {}
        self.arrivals: dict[int, list[float]] = defaultdict(list)
        self._cond = threading.Condition()
        self._done = threading.Event()
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()
        self._next = 0

    def _read(self) -> None:
        while not self._done.is_set():
            try:
                kind, index, value = self.reports.get(timeout=0.1)
            except queue.Empty:
                continue
            with self._cond:
                if kind == "quote":
                    self.arrivals[index].append(value)
                else:
                    self.identity[index] = value
                self._cond.notify_all()

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = _WAIT) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise TimeoutError(f"within {timeout} s: {what}")

    def spawn(self, count: int = 1) -> None:
        """Start ``count`` workers and wait until each has quotes."""
        fresh = []
        for _ in range(count):
            index, self._next = self._next, self._next + 1
            proc = self._mp.Process(
                target=_worker, args=(index, self.config, self.reports), daemon=True
            )
            proc.start()
            self.procs[index] = proc
            fresh.append(index)
        self.wait(
            lambda: all(i in self.identity and self.arrivals[i] for i in fresh),
            f"workers {fresh} ready with quotes",
        )

    def live(self) -> list[int]:
        return [i for i, proc in self.procs.items() if i not in self.gone and proc.is_alive()]

    def _client(self) -> Any:
        import redis

        return redis.Redis.from_url(self._server.url, socket_timeout=1, socket_connect_timeout=1)

    def status(self) -> Any:
        """The group's LeaderStatus in Redis, or ``None``."""
        import redis

        from alpaca_di.scaleout.wire import LeaderStatus

        client = self._client()
        try:
            keys = list(client.scan_iter(match=f"{self.config['prefix']}:*:status"))
            raw = client.get(keys[0]) if keys else None
        except (redis.RedisError, OSError):
            return None
        finally:
            client.close()
        return LeaderStatus.decode(raw) if raw else None

    def leader(self) -> int:
        deadline = time.monotonic() + _WAIT
        while True:
            status = self.status()
            if status is not None and status.state == "connected":
                for index, identity in self.identity.items():
                    if identity == status.leader and index in self.live():
                        return index
            if time.monotonic() > deadline:
                raise TimeoutError(f"no connected leader among the workers: {status}")
            _POLL.wait(0.01)  # the polling period, bounded by the deadline above

    def recovered(self, since: float, survivors: list[int], old: str | None) -> float:
        """Seconds from ``since`` until every survivor has quotes again (see the module doc)."""
        deadline = time.monotonic() + _WAIT
        while True:  # the new leader: connected, and not the one that was hit
            status = self.status()
            if status is not None and status.state == "connected" and status.leader != old:
                seen = time.time()
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"no new connected leader: {status}")
            _POLL.wait(0.005)  # the polling period, bounded by the deadline above
        settle = seen + _SETTLE
        self.wait(
            lambda: all(self.arrivals[i] and self.arrivals[i][-1] > settle for i in survivors),
            "quotes at every survivor after the new leader",
        )
        ends = []
        with self._cond:
            for i in survivors:
                window = [t for t in self.arrivals[i] if since - 0.05 <= t <= settle]
                before = [t for t in self.arrivals[i] if t < since - 0.05][-1:]
                window = before + window
                gaps = [(b - a, b) for a, b in itertools.pairwise(window)]
                ends.append(max(gaps)[1] if gaps else window[-1])
        return max(ends) - since

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs.values():
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        self._done.set()
        self._pump.join(2)


def _leader_fault(deploy: _Deployment, sig: signal.Signals) -> float:
    leader = deploy.leader()
    survivors = [i for i in deploy.live() if i != leader]
    old = deploy.identity[leader]
    since = time.time()
    os.kill(deploy.procs[leader].pid, sig)
    deploy.gone.add(leader)
    return deploy.recovered(since, survivors, old)


def _redis_restart(deploy: _Deployment, server: _RedisServer) -> float:
    deploy.leader()
    server.kill()
    since = server.start()
    return deploy.recovered(since, deploy.live(), None)


def run(ctx: Context) -> list[Row]:
    """Figure 10 rows (alpaca-di alone)."""
    common = (
        "alpaca-di alone (alpaca-py shares nothing across processes): worker processes, "
        "a private redis-server, default settings (lock TTL 3 s, renewal 0.5 s); "
    )
    rows = [
        Row(10, "failover_handover", "scale-out: clean handover (leader SIGTERM -> quotes at "
            "every follower)", "ms", "lower", note=common + "aim <= 500 ms"),
        Row(10, "failover_crash", "scale-out: crash failover (leader SIGKILL -> quotes at "
            "every follower)", "ms", "lower", note=common + "aim <= lock TTL + 500 ms"),
        Row(10, "failover_redis_restart", "scale-out: Redis killed and restarted empty -> "
            "quotes at every worker", "ms", "lower", note=common + "timed from the restart"),
    ]  # fmt: skip
    if shutil.which("redis-server") is None:
        ctx.log("  failover: redis-server not on PATH, skipped")
        return rows
    runs = 1 if ctx.quick else max(ctx.runs, 5)  # min/median/max over 5 in a full run
    with tempfile.TemporaryDirectory(prefix="alpaca-di-bench-redis-") as directory:
        server = _RedisServer(directory)
        server.start()
        server.wait_ready()
        deploy = _Deployment(ctx, server, new_key("PKFAIL"))
        ctx.emu.set_rate(_RATE)
        try:
            # Four workers: the handover and the crash each take one, the restart keeps
            # two; the two taken are replaced together (spawned in parallel) between runs.
            deploy.spawn(4)
            for run_index in range(runs):
                for row, fault in (
                    (rows[0], lambda: _leader_fault(deploy, signal.SIGTERM)),
                    (rows[1], lambda: _leader_fault(deploy, signal.SIGKILL)),
                    (rows[2], lambda: _redis_restart(deploy, server)),
                ):
                    seconds = fault()
                    row.di.append(seconds * 1000.0)
                    ctx.log(f"  {row.key} run {run_index + 1}: {seconds * 1000:.0f} ms")
                if run_index + 1 < runs:
                    deploy.spawn(4 - len(deploy.live()))
        finally:
            ctx.emu.set_rate(0.0)
            deploy.close()
            server.kill()
    return rows
