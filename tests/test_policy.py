"""Restart backoff and crash-loop arithmetic for one container.

The tracker is pure: time comes in as plain numbers, so every test drives it with
an explicit clock and checks the exact delays, boundaries and resets the README
promises (first restart immediate, backoff doubling up to a cap, a long run
resets, more than max_restarts within the window gives up until a reload).
"""
from __future__ import annotations

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.model import RestartPolicy
from supervisor.policy import RestartTracker, backoff_delay

POLICY = RestartPolicy(backoff=1.0, max_backoff=30.0, reset_after=60.0, max_restarts=5, window=600.0)
SHORT = 2.0  # an uptime well below reset_after


def fail_times(tracker: RestartTracker, count: int, start: float = 1000.0, step: float = 1.0,
               uptime: float | None = SHORT, counted: bool = True) -> list[float | None]:
    """Fail `count` times, `step` seconds apart; the delays returned."""
    return [tracker.delay_after_failure(start + i * step, uptime, counted=counted) for i in range(count)]


# Backoff.

def test_first_restart_is_immediate():
    tracker = RestartTracker(POLICY)
    assert tracker.delay_after_failure(1000.0, SHORT) == 0.0
    assert tracker.next_start_at == 1000.0
    assert tracker.due(1000.0)


def test_second_restart_waits_backoff_then_doubles_up_to_max():
    policy = RestartPolicy(backoff=1.0, max_backoff=30.0, reset_after=60.0, max_restarts=100, window=600.0)
    tracker = RestartTracker(policy)
    assert fail_times(tracker, 9) == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_backoff_is_capped_even_when_max_backoff_is_not_a_power_of_two_of_backoff():
    policy = RestartPolicy(backoff=3.0, max_backoff=10.0)
    assert [backoff_delay(policy, n) for n in range(5)] == [0.0, 3.0, 6.0, 10.0, 10.0]


def test_backoff_delay_is_zero_for_no_or_negative_consecutive_failures():
    assert backoff_delay(POLICY, 0) == 0.0
    assert backoff_delay(POLICY, -3) == 0.0


@pytest.mark.parametrize("consecutive", [65, 1_000, 10**6, sys.maxsize, 10**100])
def test_huge_consecutive_counts_do_not_overflow_and_give_max_backoff(consecutive):
    assert backoff_delay(POLICY, consecutive) == POLICY.max_backoff


def test_huge_backoff_times_a_huge_power_still_caps_at_max_backoff():
    policy = RestartPolicy(backoff=1e300, max_backoff=300.0)
    assert backoff_delay(policy, 10**9) == 300.0


def test_a_tracker_with_a_huge_consecutive_count_keeps_returning_max_backoff():
    policy = RestartPolicy(backoff=1.0, max_backoff=30.0, max_restarts=5)
    tracker = RestartTracker(policy, consecutive=10**12)
    assert tracker.delay_after_failure(1000.0, SHORT, counted=False) == 30.0
    assert tracker.consecutive == 10**12 + 1


def test_next_start_at_is_the_failure_time_plus_the_delay():
    tracker = RestartTracker(POLICY)
    fail_times(tracker, 3, start=1000.0, step=10.0)  # delays 0, 1, 2
    assert tracker.next_start_at == 1020.0 + 2.0


# Due.

def test_due_only_once_the_delay_has_passed():
    tracker = RestartTracker(POLICY)
    fail_times(tracker, 4, start=1000.0, step=0.0)  # delays 0, 1, 2, 4
    assert tracker.next_start_at == 1004.0
    assert not tracker.due(1003.999)
    assert tracker.due(1004.0)
    assert tracker.due(5000.0)


def test_a_fresh_tracker_is_due_at_once():
    assert RestartTracker(POLICY).due(0.0)


def test_started_clears_the_pending_start_so_the_role_is_due():
    tracker = RestartTracker(POLICY)
    fail_times(tracker, 3, start=1000.0, step=0.0)
    assert not tracker.due(1000.0)
    tracker.started()
    assert tracker.next_start_at is None
    assert tracker.due(1000.0)


def test_started_does_not_reset_the_backoff():
    tracker = RestartTracker(POLICY)
    fail_times(tracker, 3)  # 0, 1, 2
    tracker.started()
    assert tracker.delay_after_failure(1010.0, SHORT) == 4.0


# Resets.

def test_a_run_that_lasted_reset_after_resets_the_delay_to_immediate():
    tracker = RestartTracker(POLICY)
    fail_times(tracker, 4)  # 0, 1, 2, 4
    assert tracker.delay_after_failure(2000.0, POLICY.reset_after) == 0.0
    assert tracker.delay_after_failure(2001.0, SHORT) == 1.0


def test_a_run_just_shorter_than_reset_after_does_not_reset():
    tracker = RestartTracker(POLICY)
    fail_times(tracker, 3)  # 0, 1, 2
    assert tracker.delay_after_failure(2000.0, POLICY.reset_after - 0.001) == 4.0


def test_a_run_that_lasted_reset_after_resets_the_window_count():
    tracker = RestartTracker(POLICY)
    fail_times(tracker, POLICY.max_restarts)  # the window is full: one more short run would give up
    assert len(tracker.recent) == POLICY.max_restarts
    assert tracker.delay_after_failure(1100.0, POLICY.reset_after) == 0.0
    assert not tracker.failed
    assert len(tracker.recent) == 1
    # A full new allowance: max_restarts - 1 more short runs are still fine.
    delays = fail_times(tracker, POLICY.max_restarts - 1, start=1101.0)
    assert None not in delays and not tracker.failed


def test_a_failure_with_unknown_uptime_never_resets():
    tracker = RestartTracker(POLICY)
    fail_times(tracker, 3)  # 0, 1, 2
    assert tracker.delay_after_failure(1010.0, None) == 4.0


# Crash loop.

def test_max_restarts_restarts_within_window_are_allowed_and_the_next_failure_gives_up():
    tracker = RestartTracker(POLICY)
    delays = fail_times(tracker, POLICY.max_restarts)
    assert None not in delays
    assert not tracker.failed
    assert tracker.total == POLICY.max_restarts

    assert tracker.delay_after_failure(1000.0 + POLICY.max_restarts, SHORT) is None
    assert tracker.failed
    assert tracker.next_start_at is None
    assert not tracker.due(10**9)
    assert tracker.total == POLICY.max_restarts  # the refused restart is not a restart


def test_a_failed_tracker_gives_no_delay_for_later_failures_even_after_the_window_passed():
    tracker = RestartTracker(POLICY)
    fail_times(tracker, POLICY.max_restarts + 1)
    assert tracker.failed
    total = tracker.total
    for counted in (True, False):
        assert tracker.delay_after_failure(5000.0, SHORT, counted=counted) is None
        assert tracker.delay_after_failure(9000.0, POLICY.reset_after, counted=counted) is None
    assert tracker.failed and tracker.next_start_at is None
    assert tracker.total == total
    assert not tracker.due(10**12)


def test_a_single_allowed_restart_gives_up_on_the_second_failure():
    tracker = RestartTracker(RestartPolicy(max_restarts=1, window=600.0))
    assert tracker.delay_after_failure(0.0, SHORT) == 0.0
    assert tracker.delay_after_failure(1.0, SHORT) is None
    assert tracker.failed


def test_zero_max_restarts_gives_up_on_the_first_failure():
    tracker = RestartTracker(RestartPolicy(max_restarts=0))
    assert tracker.delay_after_failure(0.0, SHORT) is None
    assert tracker.failed


def test_restarts_older_than_the_window_are_forgotten():
    policy = RestartPolicy(backoff=1.0, max_backoff=30.0, reset_after=1e9, max_restarts=3, window=100.0)
    tracker = RestartTracker(policy)
    fail_times(tracker, 3, start=0.0, step=10.0)  # at 0, 10, 20: the window is full
    # At 100 the restart at 0 is exactly `window` old and no longer counts.
    assert tracker.delay_after_failure(100.0, SHORT) is not None
    assert not tracker.failed
    assert list(tracker.recent) == [10.0, 20.0, 100.0]


def test_a_restart_just_inside_the_window_still_counts():
    policy = RestartPolicy(backoff=1.0, max_backoff=30.0, reset_after=1e9, max_restarts=3, window=100.0)
    tracker = RestartTracker(policy)
    fail_times(tracker, 3, start=0.0, step=10.0)
    assert tracker.delay_after_failure(99.999, SHORT) is None
    assert tracker.failed


def test_slow_steady_failures_spread_wider_than_the_window_never_give_up():
    policy = RestartPolicy(backoff=1.0, max_backoff=30.0, reset_after=1e9, max_restarts=2, window=100.0)
    tracker = RestartTracker(policy)
    delays = fail_times(tracker, 50, start=0.0, step=50.0)  # at most 2 within any 100 s
    assert None not in delays
    assert not tracker.failed
    assert tracker.total == 50


def test_uncounted_failures_back_off_the_same_way_but_never_end_in_failed():
    tracker = RestartTracker(POLICY)
    delays = fail_times(tracker, POLICY.max_restarts * 10, counted=False)
    assert delays[:7] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert set(delays[6:]) == {30.0}
    assert not tracker.failed
    assert tracker.total == 0
    assert len(tracker.recent) == 0


def test_uncounted_failures_raise_the_delay_of_the_next_counted_one():
    tracker = RestartTracker(POLICY)
    fail_times(tracker, 3, counted=False)  # 0, 1, 2
    assert tracker.delay_after_failure(1100.0, SHORT) == 4.0


def test_uncounted_failures_do_not_fill_the_window():
    tracker = RestartTracker(POLICY)
    fail_times(tracker, POLICY.max_restarts - 1)
    fail_times(tracker, 20, start=1010.0, counted=False)
    assert tracker.delay_after_failure(1040.0, SHORT) is not None  # the max_restarts-th counted one
    assert tracker.delay_after_failure(1041.0, SHORT) is None


def test_an_uncounted_failure_with_a_full_window_still_backs_off():
    tracker = RestartTracker(POLICY)
    fail_times(tracker, POLICY.max_restarts)  # delays 0, 1, 2, 4, 8
    assert tracker.delay_after_failure(1010.0, None, counted=False) == 16.0
    assert not tracker.failed


# Reload.

def test_forgive_clears_failed_and_starts_counting_afresh_under_the_new_policy():
    tracker = RestartTracker(POLICY)
    fail_times(tracker, POLICY.max_restarts + 1)
    assert tracker.failed
    total = tracker.total

    new = RestartPolicy(backoff=5.0, max_backoff=50.0, reset_after=60.0, max_restarts=2, window=600.0)
    tracker.forgive(new)
    assert tracker.policy == new
    assert not tracker.failed
    assert tracker.next_start_at is None
    assert tracker.due(1010.0)
    assert tracker.total == total  # status keeps the lifetime count

    assert fail_times(tracker, 3, start=1010.0) == [0.0, 5.0, None]  # new backoff, new max_restarts


def test_forgive_of_a_healthy_tracker_takes_the_new_policy_and_keeps_its_backoff():
    tracker = RestartTracker(POLICY)
    fail_times(tracker, 3, start=1000.0, step=0.0)  # delays 0, 1, 2: next start at 1002
    new = RestartPolicy(backoff=10.0, max_backoff=100.0, reset_after=60.0, max_restarts=5, window=600.0)
    tracker.forgive(new)
    assert tracker.policy == new
    assert tracker.next_start_at == 1002.0  # a pending backoff is not skipped by a reload
    assert tracker.delay_after_failure(1010.0, SHORT) == 40.0  # consecutive 3 under the new backoff


def test_forgive_with_a_lower_max_backoff_caps_the_next_delay():
    tracker = RestartTracker(RestartPolicy(backoff=1.0, max_backoff=30.0, max_restarts=100))
    fail_times(tracker, 8)  # at the 30 s cap
    tracker.forgive(RestartPolicy(backoff=1.0, max_backoff=5.0, max_restarts=100))
    assert tracker.delay_after_failure(1100.0, SHORT) == 5.0


# Properties.

failure = st.tuples(
    st.floats(min_value=0.0, max_value=1000.0, allow_nan=False),  # seconds since the previous failure
    st.one_of(st.none(), st.floats(min_value=0.0, max_value=59.999, allow_nan=False)),  # uptime < reset_after
    st.booleans(),  # counted
)
policies = st.builds(
    RestartPolicy,
    backoff=st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
    max_backoff=st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
    reset_after=st.just(60.0),
    max_restarts=st.integers(min_value=0, max_value=50),
    window=st.floats(min_value=0.0, max_value=1e5, allow_nan=False),
)


@settings(max_examples=300, deadline=None)
@given(policy=policies, failures=st.lists(failure, max_size=80))
def test_delays_never_decrease_between_resets_and_never_exceed_max_backoff(policy, failures):
    tracker = RestartTracker(policy)
    now, previous = 0.0, -1.0
    for gap, uptime, counted in failures:
        now += gap
        delay = tracker.delay_after_failure(now, uptime, counted=counted)
        if delay is None:
            assert counted and tracker.failed and tracker.next_start_at is None
            break
        assert 0.0 <= delay <= policy.max_backoff
        assert delay >= previous
        assert tracker.next_start_at == now + delay
        assert not tracker.failed
        previous = delay


@settings(max_examples=300, deadline=None)
@given(policy=policies, failures=st.lists(failure, max_size=80))
def test_uncounted_failures_alone_never_give_up(policy, failures):
    tracker = RestartTracker(policy)
    now = 0.0
    for gap, uptime, _ in failures:
        now += gap
        assert tracker.delay_after_failure(now, uptime, counted=False) is not None
    assert not tracker.failed


@settings(max_examples=300, deadline=None)
@given(policy=policies, failures=st.lists(failure, max_size=80))
def test_never_more_than_max_restarts_counted_restarts_within_any_window(policy, failures):
    tracker = RestartTracker(policy)
    now, restarts = 0.0, []
    for gap, uptime, counted in failures:
        now += gap
        delay = tracker.delay_after_failure(now, uptime, counted=counted)
        if delay is None:
            break
        if counted:
            restarts.append(now)
            within = [t for t in restarts if t > now - policy.window]
            assert len(within) <= policy.max_restarts
