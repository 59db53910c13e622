"""The leader cut off from Redis (or frozen) past the lock TTL while orders fill: no fill lost.

Three worker processes (``_outage_worker.run_outage_worker``, spawn) share one
emulator account through a redis-server this module starts on a spare port
(never the shared one on 6379). Worker 0 starts first, so it leads both groups,
and it alone reaches Redis through a real TCP proxy (:class:`TcpProxy`); the
other workers talk to Redis directly: a partition of the leader alone. Orders
fill at about 20 trade updates a second through REST.

The test stops the proxy. The partitioned leader, still running, cannot renew
its lock: it fences itself (closes its upstream sockets before the lock can
expire, so the new leader finds the slot free) but keeps the trade updates it
read and could not append, under its old epoch. Once the lock expired a worker
that still reaches Redis takes over and reads the gap back through REST. Then
the proxy listens again: the old leader appends what it kept (followers
de-duplicate by ``(epoch, seq)``, the ``TradingService`` by final state), and
every worker's ``TradingService`` has received the ``fill`` of every order
exactly once; no worker was ever ``failed``; quotes reach every worker again.
406s while an old socket holds the slot are counted and printed.

Run at a connection limit of 1 and of 10: at 10 the server would accept a second
session, yet the emulator never sees two authenticated at once
(``max_concurrent``): the partitioned leader closed its socket before its lock
could expire.

The same with the leader frozen instead (``SIGSTOP`` until the new leader's
health counts 406s: the frozen socket still holds the slot at a limit of 1, so
no socket listens and the new leader reads the gap back through REST once it
gets in), then ``SIGCONT``: the old leader fences itself at once, appends what
it had read, and every fill reaches every worker exactly once.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from _outage_worker import run_outage_worker
from _proxy import TcpProxy
from _redis_servers import PrivateRedis
from _scaleout_support import KEY, SECRET, OrderFlow, OrderReports, quotes_reach, stop_workers

from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.scaleout.wire import decode_update_entry

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not on PATH"),
]

IEX = "/v2/iex"
TRADING = "/stream"
WORKERS = 3
PARTITIONED = 0  # the worker behind the proxy: started first, so the first leader
SHARING = {
    "lock_ttl": 2.0,
    "renew_interval": 0.25,
    "heartbeat_interval": 0.25,
    "heartbeat_ttl": 1.0,
    "command_timeout": 1.0,
}


class Deployment:
    def __init__(
        self, emulator: AlpacaEmulator, results: OrderReports, commands: list[Any]
    ) -> None:
        self.emulator = emulator
        self.results = results
        self.commands = commands
        self.marks = itertools.count(1001)  # quote marks: bid_size of each fresh quote

    def ask(self, what: str, indexes: list[int]) -> None:
        """Send ``what`` (health, groups) to ``indexes`` and wait for every answer."""
        store = self.results.health if what == "health" else self.results.groups
        with self.results.cond:
            for i in indexes:
                store.pop(i, None)
        for i in indexes:
            self.commands[i].put(what)
        self.results.require(lambda: all(i in store for i in indexes), 15, f"{what} of {indexes}")

    def trading_group(self, index: int, until: Any, timeout: float, what: str) -> dict[str, Any]:
        """Ask worker ``index`` for its trading group until ``until(group)`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            self.ask("groups", [index])
            group = self.results.groups[index]["trading"]
            if until(group):
                return group
            if time.monotonic() > deadline:
                raise TimeoutError(f"within {timeout} s: {what} ({group})")
            self.results.wait(lambda: False, 0.1)  # the polling period, bounded above

    def trading_rows(self, indexes: list[int]) -> dict[int, dict[str, Any]]:
        self.ask("health", indexes)
        with self.results.cond:
            return {
                i: next(r for r in self.results.health[i] if r["kind"] == "trading")
                for i in indexes
            }

    def quotes_reach(self, indexes: list[int], timeout: float, what: str) -> None:
        """A fresh quote per attempt until every worker in ``indexes`` got one."""
        quotes_reach(self.emulator, self.results, self.marks, indexes, timeout, what)


def _stream_entries(client: redis.Redis) -> list[tuple[int, int]]:
    """(epoch, seq) of every entry of the deployment's trade-update stream."""
    (key,) = list(client.scan_iter(match="partition:*:updates"))
    return [decode_update_entry(fields)[:2] for _id, fields in client.xrange(key)]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[tuple[PrivateRedis, int]]:
    """A private redis-server on a spare port: (server, port)."""
    server = PrivateRedis(tmp_path)
    try:
        server.start()
        yield server, server.port
    finally:
        server.kill()


@pytest.mark.parametrize(
    ("fault", "limit"),
    [("cut", 1), ("cut", 10), ("freeze", 1)],
    ids=["cut-1", "cut-10", "freeze-1"],
)
def test_a_leader_cut_off_past_the_lock_ttl_loses_no_fill(
    fault: str, limit: int, redis_server: tuple[PrivateRedis, int]
) -> None:
    started = time.monotonic()
    server, port = redis_server
    client = server.client()
    ctx = multiprocessing.get_context("spawn")
    results_queue = ctx.Queue()
    commands = [ctx.Queue() for _ in range(WORKERS)]
    results = OrderReports(results_queue)
    procs: list[Any] = []
    with AlpacaEmulator(connection_limit=limit) as emulator, TcpProxy(port) as proxy:
        emulator.set_price("AAPL", 10.0)
        deploy = Deployment(emulator, results, commands)
        flow = OrderFlow(emulator.api_url)

        def config(index: int) -> dict[str, Any]:
            via = proxy.port if index == PARTITIONED else port
            return {
                "key": KEY,
                "secret": SECRET,
                "data_url": emulator.ws_url,
                "trading_url": emulator.trading_stream_url,
                "api_url": emulator.api_url,
                "redis_url": f"redis://127.0.0.1:{via}/0",
                "sharing": {"prefix": "partition", **SHARING},
            }

        def spawn(index: int) -> None:
            proc = ctx.Process(
                target=run_outage_worker,
                args=(index, config(index), commands[index], results_queue),
                daemon=True,
            )
            procs.append(proc)
            proc.start()

        try:
            spawn(PARTITIONED)
            results.require(lambda: PARTITIONED in results.ready, 60, "the first worker ready")
            for i in range(1, WORKERS):
                spawn(i)
            results.require(lambda: len(results.ready) == WORKERS, 60, "all workers ready")
            deploy.ask("groups", [PARTITIONED])
            roles = {kind: g["role"] for kind, g in results.groups[PARTITIONED].items()}
            assert roles == {"stock": "leader", "trading": "leader"}, roles

            flow.start()
            results.require(
                lambda: all(len(results.fills(i)) >= 10 for i in range(WORKERS)),
                30,
                "fills flow to every worker before the partition",
            )
            (old_epoch,) = {epoch for epoch, _seq in _stream_entries(client)}

            cut_mark = len(flow.submitted)
            if fault == "cut":
                # The partition: only the leader's link to Redis goes.
                proxy.cut()
                emulator.wait_until(
                    lambda: (
                        emulator.counters(KEY, TRADING).open == 0
                        or emulator.counters(KEY, TRADING).connections_accepted > 1
                    ),
                    30,
                    message="the partitioned leader closed its trading socket",
                )
                appended_at_cut = len({s for e, s in _stream_entries(client) if e == old_epoch})
                deploy.ask("groups", [PARTITIONED])
                cut_off = results.groups[PARTITIONED]["trading"]
                # A follower that still reaches Redis takes over; the fills of orders
                # submitted after the cut reach the other workers through it.
                results.require(
                    lambda: all(
                        {oid for _at, oid in flow.submitted[cut_mark:]} & results.fills(i)
                        for i in range(1, WORKERS)
                    ),
                    40,
                    "fills of orders submitted during the partition reach the connected workers",
                )
                during = deploy.trading_rows(list(range(WORKERS)))
                assert during[PARTITIONED]["redis"] == "down", during[PARTITIONED]
                assert {kind: g["role"] for kind, g in results.groups[PARTITIONED].items()} == {
                    "stock": "candidate",
                    "trading": "candidate",
                }
            else:
                # The freeze: the frozen socket holds the slot, the new leader counts 406s
                # (no socket listens meanwhile: the new leader reads the gap back later).
                pid = procs[PARTITIONED].pid
                os.kill(pid, signal.SIGSTOP)
                deadline = time.monotonic() + 40
                while True:
                    during = deploy.trading_rows(list(range(1, WORKERS)))
                    if all((row["limit_rejections"] or 0) >= 3 for row in during.values()):
                        break
                    assert time.monotonic() < deadline, f"406s not counted in health: {during}"
                    results.wait(lambda: False, 0.1)  # the polling period, bounded above
                appended_at_cut, cut_off = 0, {"held": None}
            new_leaders = [i for i, row in during.items() if row["role"] == "leader"]
            assert len(new_leaders) == 1, during
            assert new_leaders[0] != PARTITIONED, during

            # The link returns (the process resumes): the old leader appends what it
            # kept, under its old epoch, and follows the new leader.
            if fault == "cut":
                proxy.restore()
            else:
                os.kill(pid, signal.SIGCONT)
            restored_mark = len(flow.submitted)
            results.require(
                lambda: (
                    {oid for _at, oid in flow.submitted[restored_mark:]}
                    & results.fills(PARTITIONED)
                ),
                40,
                "fills reach the formerly partitioned worker again",
            )
            flow.stop()
            expected = {oid for _at, oid in flow.submitted}
            old = deploy.trading_group(
                PARTITIONED, lambda g: g["held"] == 0, 20, "the old leader appended what it kept"
            )
            reconciled = results.check_fills_once(expected, WORKERS, 40)
            deploy.trading_rows(list(range(WORKERS)))
            with results.cond:
                states = dict(results.states)
            for i in range(WORKERS):
                assert "failed" not in states[i], (i, states[i])

            # What the old leader read reached the stream, under its old epoch, in full.
            assert old["abandoned"] == 0, old
            # (A retried XADD whose reply the cut lost appends an entry twice: a set.)
            old_seqs = {s for e, s in _stream_entries(client) if e == old_epoch}
            assert old_seqs == set(range(1, old["published"] + 1)), (len(old_seqs), old)
            if fault == "cut":
                assert old["carried"] > 0, "the partitioned leader read nothing after the cut"
                assert len(old_seqs) > appended_at_cut, (len(old_seqs), appended_at_cut)

            deploy.quotes_reach(list(range(WORKERS)), 30, "quotes reach every worker again")
            for path in (IEX, TRADING):
                assert emulator.counters(KEY, path).max_concurrent == 1, path
            rejected = {p: emulator.counters(KEY, p).rejections.get(406, 0) for p in (IEX, TRADING)}
            print(
                f"\n{fault} of the leader (limit {limit}): {len(expected)} orders; the old "
                f"leader held {cut_off['held']} trade updates when its socket closed (cut), "
                f"carried {old['carried']} past its term and appended them later "
                f"({appended_at_cut} appended before the cut); old term's entries "
                f"{len(old_seqs)}; reconciled fills per worker {reconciled}; "
                f"406s from the emulator {rejected}, limit_rejections in health "
                f"{ {i: r['limit_rejections'] for i, r in during.items()} }; new leader "
                f"worker {new_leaders[0]}; test took {time.monotonic() - started:.1f} s"
            )
        finally:
            flow.stop()
            stop_workers(procs, commands)
            results.close()
            client.close()
