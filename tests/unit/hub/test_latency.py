"""Delivery latency sampling: the server's timestamp in every message form, off by default."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from alpaca_di.hub import latency
from alpaca_di.hub.latency import sample, set_latency_observer

AT = datetime(2026, 1, 5, 14, 30, 0, 123456, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def _no_observer() -> Iterator[None]:
    previous = latency.latency_observer()
    yield
    set_latency_observer(previous)


def test_a_sample_reports_now_minus_the_server_time() -> None:
    seen: list[tuple[str, str, float]] = []
    set_latency_observer(lambda kind, endpoint, seconds: seen.append((kind, endpoint, seconds)))
    sample("stock", "ws://h/v2/iex", {"t": datetime.now(timezone.utc) - timedelta(seconds=2)})
    [(kind, endpoint, seconds)] = seen
    assert (kind, endpoint) == ("stock", "ws://h/v2/iex")
    assert 2.0 <= seconds < 60.0


def test_a_time_from_the_future_counts_as_zero() -> None:
    seen: list[float] = []
    set_latency_observer(lambda _k, _e, seconds: seen.append(seconds))
    sample("stock", "e", {"t": datetime.now(timezone.utc) + timedelta(hours=1)})
    assert seen == [0.0]


def test_without_an_observer_nothing_is_read() -> None:
    set_latency_observer(None)

    class Exploding:
        @property
        def timestamp(self) -> datetime:
            raise AssertionError("read without an observer")

    sample("stock", "e", Exploding())


def test_a_failing_observer_never_raises_into_the_delivery() -> None:
    def broken(_kind: str, _endpoint: str, _seconds: float) -> None:
        raise RuntimeError("observer bug")

    set_latency_observer(broken)
    sample("stock", "e", {"t": AT})


def test_an_observer_must_be_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        set_latency_observer(42)  # type: ignore[arg-type]
