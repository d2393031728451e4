"""How each kind of action's outcome changes the ledger: the `begun`, `done` and `failed` of `actions.ACTIONS`.

A part of the `Ledger` kept in a module of its own (the ledger inherits it), so the
ledger's own file stays about what it knows and what comes next. Same rules: pure,
no engine, no clock, no logging; each method returns the events to log.
"""
from __future__ import annotations

from .lifecycle import Event, ImageRecord, Now
from .model import Observed, Run
from .plan import Create, Stop


RESYNC_EVERY = 30.0  # seconds; events do the work, this only catches what they missed


class ActionOutcomes:
    def resync_done(self, action, result, now: Now) -> list[Event]:
        # Compared with what the ledger knew before it takes the listing in.
        self.missed.resynced(self.observed, result.containers, result.started_at, now.mono)
        self.next_resync_at = now.mono + RESYNC_EVERY
        return self.resynced(result.containers, result.started_at)

    def resync_failed(self, action, error: str, unreachable: bool, now: Now) -> list[Event]:
        self.next_resync_at = now.mono + RESYNC_EVERY  # the watcher's reconnect brings one sooner
        self._emit("debug", "resync_failed", reason=error)
        return self._take()

    def events_reopening(self, action, now: Now) -> list[Event]:
        self._emit("warning", "events_reopened", containers=list(action.containers),
                   hint="a resync found changes the engine's event stream never reported; reading it afresh")
        return self._take()

    def image_resolved(self, action, result: tuple[str, str | None], now: Now) -> list[Event]:
        image_id, pull_failure = result
        image = self.images.setdefault(action.image, ImageRecord())
        if pull_failure:
            # The registry is away but the image is here: Indico keeps running on it.
            self._emit("warning", "image_pull_failed", image=action.image, reason=pull_failure,
                       using="the image already on this host")
        if image.image_id != image_id:
            self._emit("info", "image_resolved", image=action.image, image_id=image_id[:19])
        image.image_id, image.stale, image.error = image_id, False, ""
        image.tracker.started()
        return self._take()

    def image_unavailable(self, action, error: str, unreachable: bool, now: Now) -> list[Event]:
        image = self.images.setdefault(action.image, ImageRecord())
        image.error = error
        delay = image.tracker.delay_after_failure(now.mono, None, counted=False)
        self._emit("error", "image_unavailable", image=action.image, reason=error, retry_in=seconds(delay))
        return self._take()

    def role_action_begun(self, action, now: Now) -> list[Event]:
        if isinstance(action, Create):
            if rolls(action):
                self.rolling = action.role  # from now, not once done: its old container may still look ready
            if action.replace is not None:
                self._emit("info", "container_recreating", role=action.role, reason=action.reason)
        return self._take()

    def _forget_if_disabled(self, role: str) -> None:
        # Kept by `adopt` while its action ran; the planner removes its container.
        if role in self.roles and self.site.container(role) not in self.site.enabled():
            del self.roles[role]

    def role_action_done(self, action, container: Observed, now: Now) -> list[Event]:
        if isinstance(action, Create) and action.replace is not None:
            self.observed.pop(action.replace.id, None)
        self._see(container)
        self._forget_if_disabled(action.role)
        record = self.roles.get(action.role)
        if record is None:
            return self._take()  # disabled by a reload while it started: the planner removes it
        record.error, record.refused_container = "", None
        self.written_off = {cid: role for cid, role in self.written_off.items() if role != action.role}
        record.tracker.started()
        record.last_container_id = container.id
        fields = {"container_id": container.id[:12]}
        if record.last_failure:
            self._emit("info", "container_restarted", role=action.role, **fields, **record.last_failure,
                       restarts=record.tracker.total)
            record.last_failure = {}
        elif isinstance(action, Create) and action.replace is not None:
            self._emit("info", "container_recreated", role=action.role, **fields)
        elif isinstance(action, Create):
            self._emit("info", "container_started", role=action.role, **fields)
        return self._take()

    def role_action_failed(self, action, error: str, unreachable: bool, now: Now) -> list[Event]:
        self._forget_if_disabled(action.role)
        record = self.roles.get(action.role)
        if record is None:
            return self._take()
        if isinstance(action, Create) and action.replace is not None:
            # We replaced the old one (removed, or failing that, refused by the engine): its
            # absence, or a late description of it as exited, is no failure of its own.
            record.counted_run = Run(action.replace.id, gone=True)
            self.written_off[action.replace.id] = action.role
        if unreachable:
            return self._take()  # the engine went away; its return brings a resync, not a penalty
        record.error = error
        if not isinstance(action, Create):
            record.refused_container = action.container.id
        delay = record.tracker.delay_after_failure(now.mono, None, counted=False)
        self._emit("error", "container_start_failed", role=action.role, reason=error, retry_in=seconds(delay))
        self.next_resync_at = 0.0  # a create may have left a container behind: look
        return self._take()

    def removal_begun(self, action, now: Now) -> list[Event]:
        if isinstance(action, Stop):
            self._emit("info", "container_stopping", container=action.container.name, role=action.container.role,
                       timeout=action.timeout)
        else:
            self._emit("info", "container_removing", container=action.container.name, role=action.container.role,
                       reason=action.reason)
        return self._take()

    def removal_done(self, action, result, now: Now) -> list[Event]:
        self.observed.pop(action.container.id, None)
        self._emit("info", "container_removed", container=action.container.name, role=action.container.role)
        return self._take()

    def removal_failed(self, action, error: str, unreachable: bool, now: Now) -> list[Event]:
        self._emit("error", "container_remove_failed", container=action.container.name, reason=error)
        return self._take()


def rolls(action) -> bool:
    """A running container recreated for a changed spec: part of the one-at-a-time rollout."""
    return isinstance(action, Create) and action.reason == "changed" and action.replace is not None \
        and action.replace.running


def seconds(delay: float | None) -> float | None:
    return None if delay is None else round(delay, 3)
