"""The lease's pure side: its timing arithmetic and the holder/standby state machine, without Redis."""
from __future__ import annotations

import pytest

from supervisor.leasing import (ACQUIRE, HELD, RELEASED, RENEW, STANDBY, UNKNOWN, LeaseState, Timing, lease_key,
                                lease_value, parse_value, token_key)

L = 15.0


def state() -> LeaseState:
    return LeaseState("celery", "host-a", Timing(L))


def test_timing_follows_the_protocol_for_a_15s_lease():
    t = Timing(L)
    assert (t.renew_every, t.fence_after, t.poll_every, t.data_lost_wait, t.socket_timeout) == (3.0, 10.0, 1.0, 15.0, 1.5)


@pytest.mark.parametrize("lease", [3.0, 4.0, 15.0, 60.0, 600.0])
def test_a_blocked_call_and_a_missed_renew_still_end_before_the_fence_and_the_lease(lease):
    t = Timing(lease)
    assert t.poll_every == min(1.0, lease / 5)
    # Two renews may go unanswered, each blocking a socket timeout, before the fence deadline.
    assert 2 * t.renew_every + t.socket_timeout < t.fence_after < lease
    assert t.data_lost_wait >= t.fence_after


def test_keys_and_value_are_the_protocols():
    assert lease_key("indico", "celery") == "indico-supervisor:indico:celery:lease"
    assert token_key("indico", "celery") == "indico-supervisor:indico:celery:token"
    value = lease_value("host-a", 7, 1764478000.25)
    assert value == '{"host":"host-a","token":7,"since":1764478000.25}'
    holder = parse_value(value)
    assert (holder.host, holder.token, holder.since) == ("host-a", 7, 1764478000.25)
    assert parse_value("not json") is None and parse_value('{"host": "x"}') is None


def test_a_fresh_state_acquires_at_once_and_polls_while_standing_by():
    s = state()
    assert s.next_request(100.0) == (ACQUIRE, 99.0 + 1.0)
    s.acquired(100.0, False, lease_value("host-b", 4, 1.0))
    assert s.view.kind == STANDBY and (s.view.holder, s.view.token) == ("host-b", 4)
    assert s.floor == 4
    assert s.next_request(100.5) == (None, 101.0)
    assert s.next_request(101.0)[0] == ACQUIRE


def test_a_holder_renews_every_fifth_and_each_success_moves_the_fence_from_its_send_time():
    s = state()
    view = s.acquired(100.0, True, lease_value("host-a", 5, 1.0))
    assert view.kind == HELD and view.fence_at == 100.0 + 10.0 and view.start_at == 100.0
    assert s.next_request(102.9) == (None, 103.0)
    s.unanswered(103.0, "TimeoutError")
    assert s.next_request(103.3) == (None, 106.0)
    s.unanswered(109.5, "TimeoutError")
    assert s.next_request(109.6) == (None, 110.0)  # the fence deadline comes before the next try
    s = state()
    view = s.acquired(100.0, True, lease_value("host-a", 5, 1.0))
    assert s.next_request(103.0) == (RENEW, 103.0)
    view = s.renewed(103.0, True, view.value)
    assert view.fence_at == 113.0 and view.ready(112.9) and not view.ready(113.0)


def test_a_renew_answered_zero_fences_at_once():
    s = state()
    view = s.acquired(100.0, True, lease_value("host-a", 5, 1.0))
    lost = s.renewed(103.0, False, view.value)
    assert lost.kind == UNKNOWN and lost.fenced and "lost" in lost.reason
    assert s.next_request(103.5)[0] is None and s.next_request(104.0)[0] == ACQUIRE


def test_unanswered_renews_keep_the_lease_until_the_fence_deadline_then_fence():
    s = state()
    view = s.acquired(100.0, True, lease_value("host-a", 5, 1.0))
    failing = s.unanswered(103.0, "TimeoutError: Timeout reading from socket")
    assert failing.kind == HELD and failing.renew_failing.startswith("TimeoutError")
    assert s.fence_if_due(109.9).kind == HELD
    fenced = s.fence_if_due(110.0)
    assert fenced.kind == UNKNOWN and fenced.fenced and "fenced" in fenced.reason
    # Redis still unreachable afterwards: it stays fenced (the container must stay gone).
    assert s.unanswered(111.0, "ConnectionError").fenced


def test_redis_that_lost_its_data_makes_the_new_holder_wait_one_full_lease():
    s = state()
    view = s.acquired(100.0, True, lease_value("host-a", 1, 1.0), data_lost=True)
    assert view.data_lost and view.start_at == 115.0
    assert not view.ready(114.9)
    view = s.renewed(112.0, True, view.value)
    view = s.renewed(115.0, True, view.value)
    assert view.ready(115.0)


def test_no_renew_while_the_engine_is_unreachable_so_only_the_guard_keeps_the_lease():
    s = state()
    s.acquired(100.0, True, lease_value("host-a", 5, 1.0))
    s.renew_allowed = False
    assert s.next_request(105.0) == (None, 110.0)
    lapsed = s.fence_if_due(110.0)
    # The guard fenced or kept it: the container is left alone until Redis answers again.
    assert lapsed.kind == UNKNOWN and not lapsed.fenced
    assert s.next_request(111.0) == (None, 112.0)  # nor does it take the lease again meanwhile
    s.renew_allowed = True
    assert s.next_request(111.0)[0] == ACQUIRE


def test_a_restarted_daemon_adopts_its_value_by_renewing_it_never_by_overwriting():
    s = state()
    ours = lease_value("host-a", 9, 1.0)
    s.acquired(100.0, False, ours)  # the key names this host: a daemon before us held it
    assert s.view.kind == STANDBY
    s.adopt(ours)
    assert s.next_request(100.2) == (RENEW, 100.2)
    view = s.renewed(100.2, True, ours)
    assert view.kind == HELD and view.token == 9 and view.start_at == 100.2 and view.fence_at == 110.2


def test_an_adoption_the_key_refuses_leaves_the_host_standing_by():
    s = state()
    ours = lease_value("host-a", 9, 1.0)
    s.acquired(100.0, False, ours)
    s.adopt(ours)
    assert s.renewed(100.2, False, ours).kind == STANDBY
    assert s.next_request(101.2)[0] == ACQUIRE


def test_a_late_answer_about_an_old_value_changes_nothing():
    s = state()
    s.acquired(100.0, True, lease_value("host-a", 5, 1.0))
    newer = s.view
    assert s.renewed(103.0, False, lease_value("host-a", 4, 1.0)) == newer


def test_a_released_lease_asks_nothing_more():
    s = state()
    s.acquired(100.0, True, lease_value("host-a", 5, 1.0))
    assert s.released(True).kind == RELEASED
    assert s.next_request(200.0) == (None, float("inf"))


def test_a_crash_looping_holder_hands_the_lease_over_and_then_only_watches_the_key():
    from supervisor.leasing import PEEK, YIELD
    s = state()
    view = s.acquired(100.0, True, lease_value("host-a", 5, 1.0))
    s.yielding = True
    assert s.next_request(100.1) == (YIELD, 100.1)
    given = s.yielded(100.1, True)
    assert given.kind == STANDBY and given.reason.startswith("released")
    assert s.next_request(101.1)[0] == PEEK  # never ACQUIRE while yielding
    seen = s.peeked(101.1, lease_value("host-b", 6, 2.0))
    assert (seen.kind, seen.holder, seen.token, s.floor) == (STANDBY, "host-b", 6, 6)
    s.yielding = False  # a reload forgave it, or its cooldown passed
    assert s.next_request(102.1)[0] == ACQUIRE
    assert view.value != seen.value
