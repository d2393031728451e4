"""The singleton lease's pure side: its keys and value, its timing, and the holder/standby state machine.

One `LeaseState` per singleton role, driven by the keeper thread (`lease.py`) with
the answers Redis gave and the monotonic time each request was SENT. It says what
to do next (`next_request`) and what the daemon may believe (`view`).
Timing follows the protocol: renew every L/5; the fence deadline is the send time of
the last renew answered 1, plus 2L/3; a standby polls every min(1 s, L/5); a holder
whose acquire said the data was lost waits one full L before its container starts.
Must not: talk to Redis, read a clock or log: times come in, views go out.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace

HELD, STANDBY, UNKNOWN, RELEASED = "held", "standby", "unknown", "released"
ACQUIRE, RENEW, YIELD, PEEK = "acquire", "renew", "yield", "peek"
YIELD_REASON = "released: this host's container gave up (crash loop); another host may run it"


def lease_key(site: str, role: str) -> str:
    return f"indico-supervisor:{site}:{role}:lease"


def token_key(site: str, role: str) -> str:
    return f"indico-supervisor:{site}:{role}:token"


def lease_value(host: str, token: int, since: float) -> str:
    """The key's value: compact JSON, compared as an exact string by renew and release."""
    return json.dumps({"host": host, "token": token, "since": since}, separators=(",", ":"))


@dataclass(frozen=True)
class Holder:
    host: str
    token: int
    since: float | None  # the holder's wall clock: for display only


def parse_value(text: str | None) -> Holder | None:
    """Who a lease value names; None for a value no daemon of ours wrote."""
    try:
        found = json.loads(text) if text else None
        return Holder(str(found["host"]), int(found["token"]), found.get("since"))
    except (ValueError, TypeError, KeyError):
        return None


@dataclass(frozen=True)
class Timing:
    lease: float  # seconds

    @property
    def renew_every(self) -> float:
        return self.lease / 5

    @property
    def fence_after(self) -> float:
        """From the send time of the last renew answered 1 to the moment the process must be dead."""
        return 2 * self.lease / 3

    @property
    def poll_every(self) -> float:
        return min(1.0, self.lease / 5)

    @property
    def data_lost_wait(self) -> float:
        """Any old holder's guard has fenced within 2L/3 of its last renew: one full L is past that."""
        return self.lease

    @property
    def socket_timeout(self) -> float:
        """No blocked call may carry the holder past its fence deadline."""
        return self.lease / 10


@dataclass(frozen=True)
class LeaseView:
    """What the daemon may believe about one role's lease; posted to its inbox at each change."""
    role: str
    kind: str  # held, standby, unknown (Redis unreachable, nothing held), released
    token: int | None = None
    value: str | None = None  # the exact value string: the container's env, and what renew compares
    holder: str | None = None  # the holder's host
    since: float | None = None  # the holder's wall clock at acquire
    fence_at: float | None = None  # monotonic: held, the container must be gone by then
    start_at: float | None = None  # monotonic: held, the container may start from then (data-lost wait)
    data_lost: bool = False
    renew_failing: str = ""  # held, but the last renew got no answer: why
    reason: str = ""  # why it is not held (any more): lost, fenced, Redis unreachable
    fenced: bool = False  # it was held and is not: its container must go (sticky until Redis answers again)

    def ready(self, mono: float) -> bool:
        """Held, past the data-lost wait and before the fence deadline: the container may run."""
        return (self.kind == HELD and self.start_at is not None and self.fence_at is not None
                and self.start_at <= mono < self.fence_at)


@dataclass
class LeaseState:
    role: str
    host: str
    timing: Timing
    view: LeaseView = None  # type: ignore[assignment]  # set in __post_init__
    floor: int = 0  # the highest token seen for this key, as holder or standby
    last_request_at: float | None = None  # monotonic send time of the last request
    renew_allowed: bool = True  # False while the engine is unreachable: only the guard renews, nobody acquires
    adopt_value: str | None = None  # a value of ours a container carries: renew it instead of acquiring
    yielding: bool = False  # this host's container is in a crash loop: hand the lease over, only watch the key

    def __post_init__(self) -> None:
        if self.view is None:
            self.view = LeaseView(self.role, UNKNOWN, reason="not asked yet")

    # What to do next.

    def next_request(self, mono: float) -> tuple[str | None, float]:
        """(ACQUIRE, RENEW, YIELD, PEEK or None, the monotonic time of the next request)."""
        if self.view.kind == RELEASED:
            return None, float("inf")
        if self.yielding and self.view.kind == HELD and self.renew_allowed:
            return YIELD, mono
        if self.view.kind == HELD:
            if not self.renew_allowed:
                return None, self.view.fence_at
            due = (self.last_request_at or mono) + self.timing.renew_every
            # Wake at the fence deadline too: a failing holder must say `lost` then, not at its next try.
            return (RENEW, due) if mono >= due else (None, min(due, self.view.fence_at))
        if not self.renew_allowed:
            # Nothing could be started without the engine: taking the lease would only churn tokens.
            return None, mono + self.timing.poll_every
        if self.adopt_value is not None and not self.yielding:
            return RENEW, mono
        due = (self.last_request_at if self.last_request_at is not None else mono - 1) + self.timing.poll_every
        asking = PEEK if self.yielding else ACQUIRE  # a yielding host watches the key, never takes it
        return (asking, due) if mono >= due or self.last_request_at is None else (None, due)

    # Answers, each with the monotonic time its request was sent.

    def acquired(self, sent_at: float, won: bool, value: str, data_lost: bool = False) -> LeaseView:
        self.last_request_at = sent_at
        holder = parse_value(value)
        if holder is not None:
            self.floor = max(self.floor, holder.token)
        if won:
            start = sent_at + (self.timing.data_lost_wait if data_lost else 0.0)
            self.view = LeaseView(self.role, HELD, holder.token, value, holder.host, holder.since,
                                  fence_at=sent_at + self.timing.fence_after, start_at=start, data_lost=data_lost)
        else:
            self.view = LeaseView(self.role, STANDBY, holder.token if holder else None, value,
                                  holder.host if holder else None, holder.since if holder else None,
                                  reason=self.view.reason if self.view.kind == STANDBY else "held elsewhere")
        return self.view

    def renewed(self, sent_at: float, ok: bool, value: str) -> LeaseView:
        self.last_request_at = sent_at
        adopting = self.adopt_value == value and self.view.kind != HELD
        self.adopt_value = None
        if adopting:
            if ok:  # a container of ours runs with this value: hold it again, no data-lost wait
                holder = parse_value(value)
                self.floor = max(self.floor, holder.token)
                self.view = LeaseView(self.role, HELD, holder.token, value, holder.host, holder.since,
                                      fence_at=sent_at + self.timing.fence_after, start_at=sent_at)
            return self.view
        if self.view.kind != HELD or self.view.value != value:
            return self.view  # an answer about a value we no longer hold
        if ok:
            self.view = replace(self.view, fence_at=sent_at + self.timing.fence_after, renew_failing="")
        else:
            self.view = LeaseView(self.role, UNKNOWN, reason="lost: the key is gone or names another holder",
                                  fenced=True)
        return self.view

    def unanswered(self, sent_at: float, error: str) -> LeaseView:
        """Redis did not answer (timeout, refused): a holder stays one until its fence deadline."""
        self.last_request_at = sent_at
        self.adopt_value = None
        if self.view.kind == HELD:
            self.view = replace(self.view, renew_failing=error)
        elif self.view.kind != RELEASED:
            self.view = LeaseView(self.role, UNKNOWN, reason=f"Redis unreachable: {error}", fenced=self.view.fenced)
        return self.view

    def fence_if_due(self, mono: float) -> LeaseView:
        """Past the fence deadline with no newer renew: the lease counts as lost, whatever Redis says later."""
        if self.view.kind == HELD and mono >= self.view.fence_at:
            if not self.renew_allowed:
                # The daemon could neither renew nor remove: the guard inside renewed or fenced by itself.
                # Not `fenced`: its container is left alone until Redis says whether it still holds our value.
                self.view = LeaseView(self.role, UNKNOWN, reason="fence deadline passed while the engine was "
                                                                 "unreachable; the guard decides, asking Redis again")
                return self.view
            why = self.view.renew_failing or "no renew answered in time"
            self.view = LeaseView(self.role, UNKNOWN, reason=f"fenced: {why}", fenced=True)
        return self.view

    def yielded(self, sent_at: float, released: bool) -> LeaseView:
        """Handed over while its container crash-loops: a standby from now on, with no holder known yet."""
        self.last_request_at = sent_at
        self.view = LeaseView(self.role, STANDBY, reason=YIELD_REASON if released else "lost: the key was not ours")
        return self.view

    def peeked(self, sent_at: float, value: str | None) -> LeaseView:
        """What a yielding host saw in the key (a GET: it never acquires)."""
        self.last_request_at = sent_at
        holder = parse_value(value)
        if holder is not None:
            self.floor = max(self.floor, holder.token)
        self.view = LeaseView(self.role, STANDBY, holder.token if holder else None, value,
                              holder.host if holder else None, holder.since if holder else None, reason=YIELD_REASON)
        return self.view

    def released(self, released: bool) -> LeaseView:
        self.view = LeaseView(self.role, RELEASED, reason="released" if released else "released (key was not ours)")
        return self.view

    def adopt(self, value: str) -> None:
        """The daemon found its own container carrying `value`: try to hold that lease again."""
        if self.view.kind in (STANDBY, UNKNOWN) and parse_value(value) is not None:
            self.adopt_value = value
