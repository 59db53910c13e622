"""A frozen, a dropped and a stopped leader: the deployment heals by itself.

Three worker processes (``_freeze_worker.run_freeze_worker``, spawn) share one
emulator account that allows one socket per key and path
(``connection_limit=1``), through a redis-server this module starts on a spare
port (never the shared one on 6379). Real signals:

* SIGSTOP the leader past the lock TTL, with a short 406 grace: the new
  leader's socket gets 406s while the frozen socket still holds the slot. No
  worker ever ends ``failed``; the 406s are counted in health
  (``limit_rejections``, ``last_error``); after SIGCONT the old leader fences
  itself, the slot frees and quotes reach every worker again.
* SIGSTOP the leader, then the emulator's keepalive pings drop the frozen
  socket: the deployment recovers while the old leader stays frozen.
* SIGTERM the leader: it releases the lock right after its close frame (a
  ``gone`` farewell status, not an expiry), and a follower takes over.
* At a connection limit of 10 (the server would accept a second session):
  SIGTERM one leader, SIGKILL the next: never two authenticated sessions at
  once (the emulator's ``max_concurrent``). A leader frozen past the lock TTL
  is the one fault where that cannot hold: its socket stays open at the server
  while the new leader connects (only the server can tell it is gone); the test
  shows two sessions, the frozen one fenced out, and one again after SIGCONT.

Every wait is a condition with a deadline; the freeze lasts until a condition
(enough 406s counted) holds. Timings are printed, never asserted.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import shutil
import signal
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _freeze_worker import run_freeze_worker
from _redis_servers import PrivateRedis
from _scaleout_support import KEY, SECRET, WorkerReports, quotes_reach, stop_workers

from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.scaleout.wire import LeaderStatus

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not on PATH"),
]

IEX = "/v2/iex"
WORKERS = 3
SHARING = {
    "lock_ttl": 1.5,
    "renew_interval": 0.25,
    "heartbeat_interval": 0.25,
    "heartbeat_ttl": 1.0,
    "command_timeout": 1.0,
}
GRACE = 0.2  # a short 406 grace window: the scale-out leader must not honour it


class Results(WorkerReports):
    """What the workers report: quotes (by mark) and the stock stream's health."""

    def __init__(self, source: Any) -> None:
        self.quotes: dict[int, set[int]] = defaultdict(set)
        self.health: dict[int, dict[str, Any]] = {}
        super().__init__(source)

    def record(self, kind: str, index: int, item: tuple[Any, ...]) -> None:
        if kind == "quote":
            self.quotes[index].add(item[3])
        elif kind == "health":
            self.health[index] = next(r for r in item[2] if r["kind"] == "stock")


@dataclass
class Deployment:
    emulator: AlpacaEmulator
    server: PrivateRedis
    procs: list[Any]
    commands: list[Any]
    results: Results
    prefix: str
    leader: int = -1
    marks: Iterator[int] = field(default_factory=lambda: itertools.count(1001))
    seen_states: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))

    def health(self, indexes: list[int], timeout: float = 10) -> dict[int, dict[str, Any]]:
        with self.results.cond:
            for i in indexes:
                self.results.health.pop(i, None)
        for i in indexes:
            self.commands[i].put("health")
        self.results.require(
            lambda: all(i in self.results.health for i in indexes), timeout, f"health of {indexes}"
        )
        rows = {i: self.results.health[i] for i in indexes}
        for i, row in rows.items():
            self.seen_states[i].add(row["state"])
            self.seen_states[i].update(t["state"] for t in row["transitions"])
        return rows

    def quotes_reach(self, indexes: list[int], timeout: float, what: str) -> None:
        """A fresh quote per attempt until every worker in ``indexes`` got one."""
        quotes_reach(self.emulator, self.results, self.marks, indexes, timeout, what)

    def find_leader(self) -> int:
        rows = self.health(list(range(WORKERS)))
        leaders = [i for i, row in rows.items() if row["role"] == "leader"]
        assert len(leaders) == 1, rows
        self.leader = leaders[0]
        return self.leader

    def followers(self) -> list[int]:
        return [i for i in range(WORKERS) if i != self.leader]

    def rejections_406(self) -> int:
        return self.emulator.counters(KEY, IEX).rejections.get(406, 0)


@pytest.fixture
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    """Three workers, quotes flowing, the leader known; ``param``: the connection limit (1)."""
    started = time.monotonic()
    emulator = AlpacaEmulator(connection_limit=getattr(request, "param", 1))
    emulator.start()
    server = PrivateRedis(tmp_path)
    server.start()
    ctx = multiprocessing.get_context("spawn")
    results_queue = ctx.Queue()
    commands = [ctx.Queue() for _ in range(WORKERS)]
    prefix = f"faults-{request.node.name[-20:]}"
    config = {
        "key": KEY,
        "secret": SECRET,
        "data_url": emulator.ws_url,
        "redis_url": server.url,
        "sharing": {"prefix": prefix, **SHARING},
        "settings": {"connection_limit_grace": GRACE},
    }
    procs = [
        ctx.Process(
            target=run_freeze_worker, args=(i, config, commands[i], results_queue), daemon=True
        )
        for i in range(WORKERS)
    ]
    results = Results(results_queue)
    deploy = Deployment(emulator, server, procs, commands, results, prefix)
    try:
        for proc in procs:
            proc.start()
        results.require(lambda: len(results.ready) == WORKERS, 45, "all workers ready")
        deploy.quotes_reach(list(range(WORKERS)), 15, "quotes reach every worker at start")
        deploy.find_leader()
        yield deploy
    finally:
        try:
            stop_workers(procs, commands)
            results.close()
            emulator.stop()
        finally:
            server.kill()  # whatever failed above: never leave a redis-server behind
        print(f"(test took {time.monotonic() - started:.1f} s)")


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


def _freeze_until_406s(deploy: Deployment, count: int) -> tuple[dict[int, dict[str, Any]], int]:
    """SIGSTOP the leader; return the followers' health once each counts ``count`` 406s."""
    pid = deploy.procs[deploy.leader].pid
    assert pid is not None
    before = deploy.rejections_406()
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 30
    while True:  # the freeze lasts until the new leader has counted enough 406s
        rows = deploy.health(deploy.followers())
        for i, row in rows.items():
            assert row["state"] != "failed", (i, row)
        if all((row["limit_rejections"] or 0) >= count for row in rows.values()):
            assert _stopped(pid)
            return rows, deploy.rejections_406() - before
        assert time.monotonic() < deadline, f"406s not counted in health: {rows}"
        with deploy.results.cond:
            deploy.results.cond.wait(0.1)  # the polling period, bounded by the deadline


def test_a_frozen_leader_past_the_lock_ttl_heals_after_sigcont(deployment: Deployment) -> None:
    deploy = deployment
    old = deploy.leader
    rows, emulated = _freeze_until_406s(deploy, 11)
    for i, row in rows.items():
        assert row["state"] in ("connecting", "reconnecting"), (i, row)
        error = row["last_error"] or ""
        assert "ConnectionLimitError" in error, (i, error)
        assert "(406)" in error, (i, error)
        assert "previous leader's socket may still hold the slot" in error, (i, error)
    assert emulated >= 11
    during = {i: row["limit_rejections"] for i, row in rows.items()}
    new_leader = next(i for i, row in rows.items() if row["role"] == "leader")

    os.kill(deploy.procs[old].pid, signal.SIGCONT)  # type: ignore[arg-type]
    deploy.quotes_reach(list(range(WORKERS)), 30, "quotes reach every worker after SIGCONT")
    after = deploy.health(list(range(WORKERS)))
    for i, row in after.items():
        assert row["state"] == "connected", (i, row)
    for i in range(WORKERS):
        assert "failed" not in deploy.seen_states[i], (i, deploy.seen_states[i])
    assert deploy.emulator.counters(KEY, IEX).max_concurrent == 1
    leaders_after = [i for i, r in after.items() if r["role"] == "leader"]
    print(
        f"\nfrozen leader: worker {old} stopped until the followers counted >= 11 406s; "
        f"406s sent by the emulator {emulated}; limit_rejections in follower health {during} "
        f"(leader worker {new_leader}); states seen {dict(deploy.seen_states)}; after SIGCONT "
        f"every worker connected, leader now {leaders_after}"
    )


def test_b_the_server_drops_a_frozen_leader_and_the_deployment_recovers(
    deployment: Deployment,
) -> None:
    deploy = deployment
    old = deploy.leader
    pid = deploy.procs[old].pid
    assert pid is not None
    rows, emulated = _freeze_until_406s(deploy, 3)
    drops_before = deploy.emulator.counters(KEY, IEX).keepalive_drops
    deploy.emulator.set_keepalive(0.2, ping_timeout=0.5)  # the frozen client never pongs
    deploy.quotes_reach(deploy.followers(), 30, "quotes reach the live workers")
    counters = deploy.emulator.counters(KEY, IEX)
    assert counters.keepalive_drops > drops_before
    assert _stopped(pid), "the old leader is still frozen"
    after = deploy.health(deploy.followers())
    for i, row in after.items():
        assert row["state"] == "connected", (i, row)
        assert "failed" not in deploy.seen_states[i]
    assert counters.max_concurrent == 1
    print(
        f"\nfrozen leader dropped by keepalive: worker {old} stays stopped; 406s before the "
        f"drop {emulated} (health {[r['limit_rejections'] for r in rows.values()]}); "
        f"keepalive drops {counters.keepalive_drops - drops_before}; quotes flow to "
        f"{deploy.followers()}"
    )


def test_c_sigterm_hands_over_with_a_release_not_a_ttl(deployment: Deployment) -> None:
    deploy = deployment
    old = deploy.leader
    old_identity = deploy.results.ready[old][1]
    client = deploy.server.client()
    (lock_key,) = list(client.scan_iter(match=f"{deploy.prefix}:*:leader"))
    channel = lock_key.decode().removesuffix(":leader") + ":ch:status"
    pubsub = client.pubsub()
    pubsub.subscribe(channel)
    statuses: list[LeaderStatus] = []
    try:
        while pubsub.get_message(timeout=0.5) is None:  # the subscribe confirmation
            pass
        assert client.get(lock_key) is not None
        closes_before = deploy.emulator.counters(KEY, IEX).close_frames_received
        os.kill(deploy.procs[old].pid, signal.SIGTERM)  # type: ignore[arg-type]

        deadline = time.monotonic() + 20
        while not any(s.leader != old_identity and s.state == "connected" for s in statuses):
            assert time.monotonic() < deadline, [(s.leader, s.state) for s in statuses]
            message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message and message["type"] == "message":
                statuses.append(LeaderStatus.decode(message["data"]))
        deploy.results.require(lambda: old in deploy.results.stopped, 10, "the old leader stops")
        deploy.procs[old].join(10)
        assert deploy.procs[old].exitcode == 0

        # The old leader's farewell ("gone": it released the lock) came before any
        # status of the new leader, whose term is newer.
        gone = next(
            n for n, s in enumerate(statuses) if s.leader == old_identity and s.state == "gone"
        )
        first_new = next(n for n, s in enumerate(statuses) if s.leader != old_identity)
        assert gone < first_new
        assert statuses[first_new].epoch > statuses[gone].epoch
        assert deploy.emulator.counters(KEY, IEX).close_frames_received > closes_before
        deploy.leader = -1
        live = [i for i in range(WORKERS) if i != old]
        deploy.quotes_reach(live, 15, "quotes resume at the followers")
        rows = deploy.health(live)
        leaders = [i for i, row in rows.items() if row["role"] == "leader"]
        assert len(leaders) == 1
        for i, row in rows.items():
            assert row["state"] == "connected"
            assert "failed" not in deploy.seen_states[i]
        print(
            f"\nSIGTERM handover: statuses {[(s.leader[-6:], s.epoch, s.state) for s in statuses]};"
            f" new leader worker {leaders[0]}; 406s "
            f"{deploy.emulator.counters(KEY, IEX).rejections.get(406, 0)}"
        )
    finally:
        pubsub.close()
        client.close()


@pytest.mark.parametrize("deployment", [10], indirect=True)
def test_d_at_a_limit_of_10_handover_and_crash_never_overlap_two_sessions(
    deployment: Deployment,
) -> None:
    deploy = deployment
    counters = deploy.emulator.counters
    first = deploy.leader
    os.kill(deploy.procs[first].pid, signal.SIGTERM)  # type: ignore[arg-type]
    deploy.results.require(lambda: first in deploy.results.stopped, 15, "the first leader stops")
    live = [i for i in range(WORKERS) if i != first]
    deploy.quotes_reach(live, 20, "quotes after the SIGTERM handover")
    rows = deploy.health(live)
    (second,) = [i for i, row in rows.items() if row["role"] == "leader"]

    deploy.procs[second].kill()  # SIGKILL: the kernel closes its socket, the lock expires
    deploy.procs[second].join(10)
    (last,) = [i for i in live if i != second]
    deploy.quotes_reach([last], 30, "quotes after the SIGKILL failover")
    row = deploy.health([last])[last]
    assert row["role"] == "leader", row
    assert row["state"] == "connected", row
    for i in range(WORKERS):
        assert "failed" not in deploy.seen_states[i], (i, deploy.seen_states[i])
    seen = counters(KEY, IEX)
    assert seen.connections_accepted == 3, seen
    assert seen.max_concurrent == 1, seen
    assert seen.rejections.get(406, 0) == 0, seen
    print(
        f"\nlimit 10: SIGTERM of worker {first}, SIGKILL of worker {second}, worker {last} "
        f"leads; sessions accepted {seen.connections_accepted}, most at once "
        f"{seen.max_concurrent}"
    )


@pytest.mark.parametrize("deployment", [10], indirect=True)
def test_e_at_a_limit_of_10_a_frozen_leader_is_the_one_fault_with_two_sessions(
    deployment: Deployment,
) -> None:
    deploy = deployment
    old = deploy.leader
    pid = deploy.procs[old].pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    # Its lock expires; a follower takes over and connects while the frozen socket is
    # still open at the server, which accepts a second session at this limit.
    deploy.quotes_reach(deploy.followers(), 30, "quotes reach the live workers")
    assert _stopped(pid)
    during = deploy.emulator.counters(KEY, IEX)
    assert during.open == 2, during
    assert during.max_concurrent == 2, during

    os.kill(pid, signal.SIGCONT)  # its fence is overdue: it closes its socket at once
    deploy.emulator.wait_until(
        lambda: deploy.emulator.counters(KEY, IEX).open == 1,
        15,
        message="the woken leader closed its socket",
    )
    deploy.quotes_reach(list(range(WORKERS)), 30, "quotes reach every worker after SIGCONT")
    rows = deploy.health(list(range(WORKERS)))
    assert [i for i, row in rows.items() if row["role"] == "leader"] != [old]
    for i, row in rows.items():
        assert row["state"] == "connected", (i, row)
        assert "failed" not in deploy.seen_states[i], (i, deploy.seen_states[i])
    after = deploy.emulator.counters(KEY, IEX)
    print(
        f"\nlimit 10, frozen leader: sessions open while frozen {during.open} (most at once "
        f"{after.max_concurrent}); after SIGCONT open {after.open}, close frames "
        f"{after.close_frames_received}"
    )
