"""Renewal timing as pure functions: when to renew, how long to back off, the call budget."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vaultd._renewal import Budget, RenewalPolicy

POLICY = RenewalPolicy()


def test_a_three_second_token_renews_at_about_two_seconds() -> None:
    assert POLICY.renew_at(0, 3, rand=0.0) == pytest.approx(2.0)
    assert 1.6 <= POLICY.renew_at(0, 3, rand=0.999) <= 2.0


def test_long_tokens_renew_a_margin_before_expiry_when_that_is_earlier() -> None:
    # 2/3 of an hour is 40 min; expires_at - 60 s is 59 min: the earlier wins.
    assert POLICY.renew_at(0, 3600, rand=0.0) == pytest.approx(2400)
    # a 2-minute token: 2/3 is 80 s, but the margin is capped at a third (40 s): 80 s.
    assert POLICY.renew_at(0, 120, rand=0.0) == pytest.approx(80)


@given(lifetime=st.floats(0.001, 1e7), rand=st.floats(0, 0.999999))
def test_never_renews_at_once_nor_after_expiry(lifetime: float, rand: float) -> None:
    at = POLICY.renew_at(1000.0, 1000.0 + lifetime, rand)
    assert 1000.0 + lifetime * 0.5 <= at < 1000.0 + lifetime


def test_backoff_is_full_jitter_from_one_second_up_to_five_minutes() -> None:
    assert POLICY.backoff(1, rand=0.0) == 1.0
    assert POLICY.backoff(1, rand=0.99) == 1.0
    assert POLICY.backoff(3, rand=0.99) == pytest.approx(1 + 3 * 0.99)
    assert POLICY.backoff(50, rand=0.999) <= 300.0
    assert POLICY.backoff(50, rand=0.0) == 1.0


def test_budget_caps_calls_and_refills() -> None:
    budget = Budget(capacity=3, per_minute=6)
    assert [budget.try_spend(0.0) for _ in range(4)] == [True, True, True, False]
    assert budget.next_available(0.0) == pytest.approx(10.0)
    assert not budget.try_spend(9.0)
    assert budget.try_spend(10.0)


@given(start=st.floats(0, 1e6), spent=st.integers(1, 40), per_minute=st.floats(0.5, 600))
def test_waiting_for_the_budget_always_moves_time_and_then_succeeds(
    start: float, spent: int, per_minute: float
) -> None:
    """A regression: a float error made next_available() equal now, and the renewer spun."""
    budget = Budget(capacity=10, per_minute=per_minute)
    now = start
    for _ in range(spent):
        if not budget.try_spend(now):
            later = budget.next_available(now)
            assert later > now
            now = later
            assert budget.try_spend(now)
