import random

import pytest

from alpaca_di.transport import ExponentialBackoff


def test_delays_double_within_equal_jitter_bounds_then_cap():
    backoff = ExponentialBackoff(initial=0.5, maximum=4.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(6)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling


def test_reset_starts_again_from_initial():
    backoff = ExponentialBackoff(initial=1.0, maximum=30.0, rng=random.Random(1))
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.attempt == 0
    assert 0.5 <= backoff.next_delay() <= 1.0


@pytest.mark.parametrize(
    ("initial", "maximum", "factor"), [(0, 1, 2), (-1, 1, 2), (2, 1, 2), (1, 2, 0.5)]
)
def test_invalid_bounds_are_refused(initial, maximum, factor):
    with pytest.raises(ValueError, match="ExponentialBackoff"):
        ExponentialBackoff(initial=initial, maximum=maximum, factor=factor)
