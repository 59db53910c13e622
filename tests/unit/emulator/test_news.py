"""Synthetic news at its own pace: headlines per minute of emulator time, one story for all."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

from alpaca_di.emulator import AlpacaEmulator

from ._emulator_support import KEY, SECRET, Raw

NEWS = "/v1beta1/news"
T0 = dt.datetime(2024, 1, 2, 14, 30, tzinfo=dt.timezone.utc)
MARKER_ID = 999_999


@pytest.fixture
async def emu() -> AsyncIterator[AlpacaEmulator]:
    # a high market-data rate must not speed the news up
    async with AlpacaEmulator(seed=5, clock=T0, rate=1000) as emulator:
        yield emulator


async def news_client(emu: AlpacaEmulator, *symbols: str, key: str = KEY) -> Raw:
    raw = await Raw.open(emu, NEWS)
    await raw.auth(key, SECRET)
    await raw.subscribe(news=list(symbols))
    return raw


async def headlines_until_marker(emu: AlpacaEmulator, raw: Raw) -> list[dict[str, Any]]:
    """Every story the client gets before a marker published now: nothing can hide after it."""
    emu.publish(NEWS, [{"T": "n", "id": MARKER_ID, "headline": "marker", "symbols": ["AAPL", "IBM"],
                        "created_at": T0, "updated_at": T0}])
    got: list[dict[str, Any]] = []
    while True:
        for story in await raw.recv():
            if story["id"] == MARKER_ID:
                return got
            got.append(story)


async def test_news_follows_the_emulator_clock_not_the_data_rate(emu: AlpacaEmulator) -> None:
    assert emu.news_per_minute == 3  # the default while synthetic data is on (rate > 0)
    raw = await news_client(emu, "*")
    assert await headlines_until_marker(emu, raw) == []  # the clock stands still: no news
    emu.clock.advance(minutes=1)
    stories = []
    while len(stories) < 3:
        stories.extend(await raw.recv())
    assert [s["T"] for s in stories] == ["n", "n", "n"]  # the default: 3 a minute
    assert all(s["created_at"].seconds == int(T0.timestamp()) + 60 for s in stories)
    assert await headlines_until_marker(emu, raw) == []
    await raw.close()


async def test_a_jump_brings_at_most_one_minute_of_news(emu: AlpacaEmulator) -> None:
    raw = await news_client(emu, "*")
    emu.advance(minutes=10)  # ten minutes pass at once (bars are published too)
    stories: list[dict[str, Any]] = []
    while len(stories) < 3:
        stories.extend(await raw.recv())
    assert await headlines_until_marker(emu, raw) == []
    assert len(stories) == 3
    await raw.close()


async def test_every_subscriber_gets_the_same_story(emu: AlpacaEmulator) -> None:
    everything = await news_client(emu, "*")
    ibm_only = await news_client(emu, "IBM", key="PKTEST0002")
    emu.news_per_minute = 600
    emu.clock.advance(minutes=1)  # 600 headlines about the universe and IBM
    stories: list[dict[str, Any]] = []
    while len(stories) < 600:
        stories.extend(await everything.recv())
    about_ibm = [s for s in stories if s["symbols"] == ["IBM"]]
    assert about_ibm
    assert len({s["id"] for s in stories}) == 600
    mine = await headlines_until_marker(emu, ibm_only)
    assert mine == about_ibm  # the same stories, ids included, and only IBM's
    for raw in (everything, ibm_only):
        await raw.close()


async def test_news_runs_with_a_running_clock_and_stops_at_zero() -> None:
    async with AlpacaEmulator(news_per_minute=600) as emu:  # the wall clock: 10 a second
        raw = await news_client(emu, "*")
        story = (await raw.recv())[0]
        assert story["T"] == "n"
        assert story["headline"]
        emu.news_per_minute = 0
        emu.clock.freeze()
        await headlines_until_marker(emu, raw)  # what was already on its way
        emu.clock.advance(minutes=5)
        assert await headlines_until_marker(emu, raw) == []
        assert emu.news_per_minute == 0
        await raw.close()


async def test_a_quiet_emulator_sends_no_news_unless_asked() -> None:
    async with AlpacaEmulator(clock=T0) as emu:  # rate 0: no synthetic data at all
        raw = await news_client(emu, "*")
        emu.clock.advance(minutes=5)
        assert emu.news_per_minute == 0
        assert await headlines_until_marker(emu, raw) == []
        emu.news_per_minute = 60  # an explicit pace holds whatever the rate
        emu.clock.advance(seconds=2)
        stories = []
        while len(stories) < 2:
            stories.extend(await raw.recv())
        emu.news_per_minute = None
        assert emu.news_per_minute == 0
        await raw.close()


def test_news_per_minute_is_checked_at_the_call() -> None:
    for bad in (-1, float("nan"), float("inf"), "3", True):
        with pytest.raises(ValueError, match="news_per_minute must be"):
            AlpacaEmulator(news_per_minute=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="news_per_minute must be"):
            AlpacaEmulator().news_per_minute = bad  # type: ignore[assignment]
