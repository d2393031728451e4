"""The upgrade gate: a new Indico image's upgrade jobs run once, before its containers are recreated.

A part of the `Ledger` (which inherits it), like `waiting.py`. The roles that run the
Indico image (`upgrade_settings.upgraded_roles`) are held on their old image while an
owned container of theirs runs an image other than the one their reference resolves
to now, and that image's jobs have not passed: `RunUpgrade` runs them (one after the
other, through `upgrade_jobs.py`); once they pass, the rollout recreates the roles as
ever. Level-triggered: a first start (no container yet) runs none; a daemon restart that
finds containers on an older image does. A failed job holds the roles on the old image,
and is not tried again until the image changes again or a reload re-arms it.
Same rules as the ledger: pure, no engine, no clock, no logging; events are returned.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from .lifecycle import Event, Now
from .plan import RunUpgrade
from .status import State
from .upgrade_settings import JOB_ROLE, settings_of, upgraded_roles

TAIL_LINES = 20  # of a failed job's output, kept for `status`
FAILED_HINT = ("the old containers keep running on the old image; fix the cause, then "
               "`systemctl reload indico-supervisor` to run the upgrade again")


@dataclass(frozen=True)
class UpgradeResult:
    """What the jobs did: all passed (`failed_command` None), or the one that failed and how."""
    jobs_passed: int
    failed_command: str | None = None
    exit_code: int | None = None
    timed_out: bool = False
    output: tuple[str, ...] = ()  # the failed job's last lines
    done_by: str = ""  # a cluster: the host that had already run them for this image (`upgrade_lock.py`)


# Messages an upgrade's thread puts on the loop's inbox.
@dataclass(frozen=True)
class UpgradeJobStarted:
    image_id: str
    index: int
    command: tuple[str, ...]


@dataclass(frozen=True)
class UpgradeJobLeftOver:
    name: str  # a job container an earlier daemon left behind, removed before the jobs run
    image_id: str


@dataclass(frozen=True)
class UpgradeOutput:
    command: str
    stream: str  # stdout or stderr
    line: str


@dataclass
class UpgradeGate:
    passed: set[str] = field(default_factory=set)  # image IDs whose jobs passed
    failed: dict[str, dict] = field(default_factory=dict)  # image ID -> what failed, shown in status
    running: str | None = None  # the image ID whose jobs run now
    command: str = ""  # the job running now


class Upgrades:
    # Set by the ledger's __init__: `self.upgrade = UpgradeGate()`.

    def _upgrade_target(self) -> str | None:
        """The image ID whose upgrade holds the Indico roles now, or None when nothing is held."""
        roles = upgraded_roles(self.site)
        if not roles:
            return None
        image = self.images.get(self.site.container(JOB_ROLE).image)
        target = image.image_id if image is not None else None
        if target is None or target in self.upgrade.passed:
            return None
        names = {self.site.container(role).name: role for role in roles}
        behind = any(c.site and names.get(c.name) == c.role and c.image_id and c.image_id != target
                     for c in self.observed.values())
        return target if behind else None

    def _held_roles(self) -> frozenset[str]:
        return frozenset(upgraded_roles(self.site)) if self._upgrade_target() else frozenset()

    def _upgrade_actions(self, gaps: dict[str, str]) -> list:
        target = self._upgrade_target()
        if target is None or ("upgrade",) in self.in_flight or target in self.upgrade.failed:
            return []
        if JOB_ROLE in gaps:
            return []  # a migration needs what the worker needs (the database): it waits with the worker
        settings = settings_of(self.site)
        return [RunUpgrade(target, JOB_ROLE, settings.commands, settings.timeout)]

    def upgrade_view(self, role: str) -> tuple[State, str, dict] | None:
        """A held role's state, its detail for people, and the facts for `status --json`; None when not held."""
        target = self._upgrade_target()
        if target is None or role not in upgraded_roles(self.site):
            return None
        facts = {"image_id": target}
        failure = self.upgrade.failed.get(target)
        if failure is not None:
            last = " | ".join(failure["output"][-3:])
            return (State.UPGRADE_FAILED, f"upgrade failed: {failure['summary']}" + (f"; last lines: {last}" if last else ""),
                    {**facts, "state": "failed", **failure, "hint": FAILED_HINT})
        if self.upgrade.running == target:
            return State.UPGRADING, f"upgrading: {self.upgrade.command}", {**facts, "state": "running",
                                                                          "command": self.upgrade.command}
        gap = self.roles[JOB_ROLE].gap if JOB_ROLE in self.roles else None
        detail = f"upgrade due; waiting for {gap}" if gap else "upgrade due"
        return State.UPGRADING, detail, {**facts, "state": "due"}

    def _rearm_upgrades(self) -> None:
        """A reload: a failed upgrade is tried again."""
        self.upgrade.failed.clear()

    # Outcomes: the `begun`, `done` and `failed` of `actions.ACTIONS[RunUpgrade]`, and the jobs' progress.

    def upgrade_begun(self, action: RunUpgrade, now: Now) -> list[Event]:
        self.upgrade.running, self.upgrade.command = action.image_id, shlex.join(action.commands[0])
        self._emit("info", "upgrade_started", image_id=action.image_id[:19], roles=list(upgraded_roles(self.site)),
                   jobs=[shlex.join(c) for c in action.commands], timeout=action.timeout)
        return self._take()

    def upgrade_job_started(self, message: UpgradeJobStarted) -> list[Event]:
        if self.upgrade.running == message.image_id:
            self.upgrade.command = shlex.join(message.command)
            self._emit("info", "upgrade_job_started", image_id=message.image_id[:19], command=self.upgrade.command,
                       job=message.index + 1)
        return self._take()

    def upgrade_waiting(self, image_id: str, reason: str) -> list[Event]:
        """A cluster: the jobs wait their turn (`upgrade_lock.py`); STATUS says for what."""
        if self.upgrade.running == image_id:
            self.upgrade.command = reason
            self._emit("info", "upgrade_waiting", image_id=image_id[:19], reason=reason)
        return self._take()

    def upgrade_done(self, action: RunUpgrade, result: UpgradeResult, now: Now) -> list[Event]:
        self.upgrade.running, self.upgrade.command = None, ""
        if result.failed_command is None:
            self.upgrade.passed.add(action.image_id)
            self._emit("info", "upgrade_finished", image_id=action.image_id[:19], jobs=result.jobs_passed,
                       **({"done_by": result.done_by} if result.done_by else {}))
            return self._take()
        how = (f"timed out after {action.timeout:g}s (killed)" if result.timed_out
               else f"exited {result.exit_code}")
        self._record_upgrade_failure(action, f"`{result.failed_command}` {how}", list(result.output),
                                     command=result.failed_command, exit_code=result.exit_code,
                                     timed_out=result.timed_out)
        return self._take()

    def upgrade_action_failed(self, action: RunUpgrade, error: str, unreachable: bool, now: Now) -> list[Event]:
        self.upgrade.running, self.upgrade.command = None, ""
        if not unreachable:  # the engine's return brings a resync, and the upgrade again
            self._record_upgrade_failure(action, f"the job could not run: {error}", [], reason=error)
        return self._take()

    def _record_upgrade_failure(self, action: RunUpgrade, summary: str, output: list[str], **facts) -> None:
        tail = output[-TAIL_LINES:]
        self.upgrade.failed[action.image_id] = {"summary": summary, "output": tail, **facts}
        self._emit("error", "upgrade_failed", image_id=action.image_id[:19], reason=summary, output=tail,
                   roles=list(upgraded_roles(self.site)), hint=FAILED_HINT)
