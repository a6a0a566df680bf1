import random

import pytest

from forebay import Backoff


def test_exponential_ceiling_with_cap() -> None:
    b = Backoff(base_s=1, factor=2, cap_s=10)
    assert [b.ceiling_s(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_full_jitter_stays_within_zero_and_the_ceiling_and_spreads() -> None:
    b = Backoff(base_s=1, factor=2, cap_s=300)
    rng = random.Random(7)
    draws = [b.delay_s(4, rng) for _ in range(2000)]
    assert all(0 <= d <= 8 for d in draws)
    assert min(draws) < 1 and max(draws) > 7  # spread over the whole range, not clumped


def test_fixed_schedule_repeats_its_last_delay() -> None:
    b = Backoff.fixed(5, 25)
    assert [b.delay_s(n) for n in range(1, 5)] == [5, 25, 25, 25]


def test_huge_attempt_counts_do_not_overflow() -> None:
    assert Backoff(cap_s=60).ceiling_s(10_000) == 60


@pytest.mark.parametrize("kwargs", [{"base_s": -1}, {"factor": 0.5}, {"cap_s": -3}])
def test_invalid_backoff_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="Backoff"):
        Backoff(**kwargs)
