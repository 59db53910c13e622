"""Bar backfill behind the Redis scale-out: the leader fetches a gap once, every follower gets it.

An ``alpaca-di gateway`` process leads the stock stream of one emulated account;
two follower-only processes (``_backfill_worker``: an AlpacaContainer with
``sharing="redis"``, ``redis_role="follower"``) subscribe ``bars`` of
overlapping symbol sets with ``backfill=True``. The emulator's clock paces the
bars. The test cuts the leader's socket for a window of several bars (the
emulator refuses its reconnects meanwhile), then lets it back in: every
follower gets a gap notice, then exactly the bars the emulator published in the
window, in order, marked, then live bars, none twice; and the emulator's
market-data REST API was asked once, whatever the number of followers.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from _backfill_worker import run_backfill_follower
from _scaleout_support import KEY, REDIS_URL, SECRET, WorkerReports, stop_workers

from alpaca_di.emulator import AlpacaEmulator

pytestmark = pytest.mark.redis

IEX = "/v2/iex"
CLOCK_START = datetime.fromisoformat("2024-03-04T14:30:00+00:00")
SYMBOLS = [["AAPL", "MSFT"], ["MSFT", "TSLA"]]
UNION = sorted({symbol for symbols in SYMBOLS for symbol in symbols})
DEADLINE = 30.0


class Items(WorkerReports):
    """What each follower received, in order: ("bar", symbol, time, backfilled, close) or
    ("notice", backfill, backfill_error, not_backfilled)."""

    def __init__(self, source: Any) -> None:
        self.items: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
        super().__init__(source)

    def record(self, kind: str, index: int, item: tuple[Any, ...]) -> None:
        self.items[index].append((kind, *item[2:]))

    def count(self, index: int, kind: str) -> int:
        return sum(1 for item in self.items[index] if item[0] == kind)


class GatewayProcess:
    """``python -m alpaca_di gateway --kinds stock`` configured through the environment."""

    def __init__(self, emu: AlpacaEmulator, prefix: str) -> None:
        env = {
            **os.environ,
            "ALPACA_API_KEY": KEY,
            "ALPACA_SECRET_KEY": SECRET,
            "ALPACA_DATA_STREAM_URL": emu.ws_url,
            "ALPACA_DATA_URL": emu.api_url,
            "ALPACA_SHARING": "redis",
            "ALPACA_REDIS_URL": REDIS_URL,
            "ALPACA_REDIS_PREFIX": prefix,
            "ALPACA_REDIS_LOCK_TTL": "1.5",
            "ALPACA_BACKOFF_INITIAL": "0.05",
            "ALPACA_BACKOFF_MAX": "0.25",
            "ALPACA_CLOSE_TIMEOUT": "0.5",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "alpaca_di", "gateway", "--kinds", "stock"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.ready = threading.Event()
        self.stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("ready "):
                self.ready.set()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class Deployment:
    """The gateway and the follower processes, started in that order; stopped at the end."""

    def __init__(self, emu: AlpacaEmulator, prefix: str) -> None:
        self.emu = emu
        self.gateway = GatewayProcess(emu, prefix)
        ctx = multiprocessing.get_context("spawn")
        self._queue = ctx.Queue()
        self.commands = [ctx.Queue() for _ in SYMBOLS]
        self.reports = Items(self._queue)
        config = {
            "key": KEY,
            "secret": SECRET,
            "data_url": emu.ws_url,
            "rest_url": emu.api_url,
            "redis_url": REDIS_URL,
            "prefix": prefix,
            "symbols": SYMBOLS,
        }
        self.procs = [
            ctx.Process(
                target=run_backfill_follower,
                args=(i, config, self.commands[i], self._queue),
                daemon=True,
            )
            for i in range(len(SYMBOLS))
        ]

    def start(self) -> None:
        assert self.gateway.ready.wait(DEADLINE), "".join(self.gateway.stderr[-20:])
        for proc in self.procs:
            proc.start()
        self.reports.require(lambda: len(self.reports.ready) == len(SYMBOLS), 60, "followers")
        self.emu.wait_until(
            lambda: self.emu.subscriptions(KEY, IEX).get("bars") == set(UNION),
            DEADLINE,
            message="the union of the followers' bars subscribed upstream",
        )

    def bars_reach_everyone(self, minutes: int) -> list[dict[str, Any]]:
        """Advance the clock; wait until every follower got every bar of its symbols."""
        counts = [self.reports.count(i, "bar") for i in range(len(SYMBOLS))]
        published = self.emu.advance(minutes=minutes, symbols=UNION)
        self.wait_for(
            {i: counts[i] + minutes * len(SYMBOLS[i]) for i in range(len(SYMBOLS))}, "bar"
        )
        return published

    def wait_for(self, expected: dict[int, int], kind: str) -> None:
        self.reports.require(
            lambda: all(self.reports.count(i, kind) >= n for i, n in expected.items()),
            DEADLINE,
            f"every follower's {kind}s: {expected}",
        )

    def outage(self, *, close_frame: bool, minutes: int, rest_down: bool = False) -> list[Any]:
        """Cut the leader's socket, publish ``minutes`` of bars nobody receives, let it back."""
        emu = self.emu
        refused = emu.stats().refused_handshakes
        emu.refuse_handshake(503, times=1_000_000, path=IEX)
        assert emu.drop_connections(IEX, close_frame=close_frame) == 1  # the leader's alone
        emu.wait_until(
            lambda: emu.stats().refused_handshakes > refused,
            DEADLINE,
            message="a refused reconnect",
        )
        missed = emu.advance(minutes=minutes, symbols=UNION)
        if rest_down:
            emu.fail_history(503, times=None)
        emu.accept_handshakes(IEX)
        return missed

    def stop(self) -> None:
        stop_workers(self.procs, self.commands)
        self.reports.close()
        self.gateway.stop()


@pytest.fixture
def clocked_emu() -> Iterator[AlpacaEmulator]:
    with AlpacaEmulator(seed=11, clock=CLOCK_START) as emu:
        yield emu


@pytest.fixture
def deployment(clocked_emu: AlpacaEmulator, redis_prefix: str) -> Iterator[Deployment]:
    deployment = Deployment(clocked_emu, redis_prefix)
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()


def _bar_key(bar: dict[str, Any]) -> tuple[str, str]:
    return bar["S"], bar["t"].to_datetime().isoformat()


def _mine(index: int, bars: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [bar for bar in bars if bar["S"] in SYMBOLS[index]]


@pytest.mark.parametrize("close_frame", [False, True], ids=["abrupt", "clean"])
def test_every_follower_gets_the_gap_backfilled_from_one_fetch_by_the_leader(
    clocked_emu: AlpacaEmulator, deployment: Deployment, close_frame: bool
) -> None:
    before = deployment.bars_reach_everyone(minutes=2)
    requests = clocked_emu.stats().market_data_requests
    missed = deployment.outage(close_frame=close_frame, minutes=3)
    deployment.wait_for({i: 1 for i in range(len(SYMBOLS))}, "notice")
    deployment.wait_for(
        {i: len(_mine(i, before + missed)) for i in range(len(SYMBOLS))}, "bar"
    )
    after = deployment.bars_reach_everyone(minutes=1)

    _check_sequence(deployment, before, missed, after)
    # One fetch of the window for the whole group (three symbols, one window start).
    assert clocked_emu.stats().market_data_requests - requests == 1


def _check_sequence(
    deployment: Deployment,
    before: list[dict[str, Any]],
    missed: list[dict[str, Any]],
    after: list[dict[str, Any]],
) -> None:
    """Each follower: live bars, one notice, the missed bars marked and in order, live bars."""
    for i in range(len(SYMBOLS)):
        items = deployment.reports.items[i]
        kinds = [item[0] for item in items]
        n_before, n_missed = len(_mine(i, before)), len(_mine(i, missed))
        n_after = len(_mine(i, after))
        assert kinds == ["bar"] * n_before + ["notice"] + ["bar"] * (n_missed + n_after), i
        notice = items[n_before]
        assert notice[1:] == (True, None, {}), f"follower {i}: {notice}"
        bars = [item for item in items if item[0] == "bar"]
        live_before, filled = bars[:n_before], bars[n_before : n_before + n_missed]
        live_after = bars[n_before + n_missed :]
        assert not any(bar[3] for bar in live_before + live_after), f"follower {i}"
        assert all(bar[3] for bar in filled), f"follower {i}: backfilled bars are marked"
        wanted = {_bar_key(bar): bar["c"] for bar in _mine(i, missed)}
        assert {(bar[1], bar[2]): bar[4] for bar in filled} == wanted, f"follower {i}"
        stamps = [bar[2] for bar in filled]
        assert stamps == sorted(stamps), f"follower {i}: in time order"
        assert sorted((bar[1], bar[2]) for bar in live_after) == sorted(
            map(_bar_key, _mine(i, after))
        )
        keys = [(bar[1], bar[2]) for bar in bars]
        assert len(keys) == len(set(keys)), f"follower {i}: a bar twice"


def test_a_bar_published_right_after_the_restore_follows_the_backfill_everywhere(
    clocked_emu: AlpacaEmulator, deployment: Deployment
) -> None:
    before = deployment.bars_reach_everyone(minutes=1)
    requests = clocked_emu.stats().market_data_requests
    subscribes = clocked_emu.counters(KEY, IEX).subscribe_messages
    missed = deployment.outage(close_frame=False, minutes=2)
    # The leader's new session sent its subscribe: the emulator answers it on its loop
    # before it runs advance(), so the next bar goes out right behind the ack.
    clocked_emu.wait_until(
        lambda: clocked_emu.counters(KEY, IEX).subscribe_messages > subscribes,
        DEADLINE,
        message="the leader subscribed again",
    )
    after = clocked_emu.advance(minutes=1, symbols=UNION)
    deployment.wait_for(
        {i: len(_mine(i, before + missed + after)) for i in range(len(SYMBOLS))}, "bar"
    )
    for i in range(len(SYMBOLS)):
        items = deployment.reports.items[i]
        n_before = len(_mine(i, before))
        assert [item[0] for item in items[: n_before + 1]] == ["bar"] * n_before + ["notice"]
        assert items[n_before][1:] == (True, None, {}), f"follower {i}"
        rest = items[n_before + 1 :]
        assert all(item[0] == "bar" for item in rest), f"follower {i}: one notice"
        # The missed bars, marked; then the new bars (fetched too when the leader's REST
        # answer came before the socket brought them: marked then, never twice).
        assert sorted((bar[1], bar[2]) for bar in rest) == sorted(
            map(_bar_key, _mine(i, missed + after))
        ), f"follower {i}"
        missed_keys = set(map(_bar_key, _mine(i, missed)))
        assert all(bar[3] for bar in rest if (bar[1], bar[2]) in missed_keys), f"follower {i}"
        stamps = [bar[2] for bar in rest]
        assert stamps == sorted(stamps), f"follower {i}: in time order"
        marks = [bar[3] for bar in rest]
        assert marks == sorted(marks, reverse=True), f"follower {i}: backfilled ones first"
    assert clocked_emu.stats().market_data_requests - requests == 1


def test_rest_down_at_the_leader_tells_every_follower_and_releases_the_live_bars(
    clocked_emu: AlpacaEmulator, deployment: Deployment
) -> None:
    deployment.bars_reach_everyone(minutes=1)
    requests = clocked_emu.stats().market_data_requests
    deployment.outage(close_frame=False, minutes=2, rest_down=True)
    deployment.wait_for({i: 2 for i in range(len(SYMBOLS))}, "notice")
    after = deployment.bars_reach_everyone(minutes=1)

    for i in range(len(SYMBOLS)):
        items = deployment.reports.items[i]
        n_before = len(SYMBOLS[i])
        first, failed = items[n_before], items[n_before + 1]
        assert first[:3] == ("notice", True, None), f"follower {i}: {first}"
        assert failed[:2] == ("notice", False), f"follower {i}: {failed}"
        assert "503" in failed[2], failed[2]
        assert "leader" in failed[2], failed[2]
        assert failed[3] == {"bars": sorted(SYMBOLS[i])}
        live = items[n_before + 2 :]
        assert sorted((bar[1], bar[2]) for bar in live) == sorted(map(_bar_key, _mine(i, after)))
        assert not any(bar[3] for bar in live)
    # The leader asked once (and got the 503); no follower asked for itself.
    assert clocked_emu.stats().market_data_requests - requests == 1

