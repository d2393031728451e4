#!/usr/bin/env python3
"""indico-lease-guard: run a program only while this container holds the site's lease.

    indico-lease-guard PROGRAM [ARG...]

The daemon that created the container holds a lease in the site's Redis (see the
supervisor's lease protocol) and gives it to the container in the environment:

    INDICO_SUPERVISOR_LEASE_REDIS   the Redis URL (its password is a secret: never printed)
    INDICO_SUPERVISOR_LEASE_KEY     the lease key
    INDICO_SUPERVISOR_LEASE_VALUE   the exact value the key holds while the lease is ours
    INDICO_SUPERVISOR_LEASE_MS      the lease period L, in milliseconds

The guard stays PID 1. Its first renew must succeed before PROGRAM starts (else exit
75, PROGRAM never started). Then it renews every L/5; when a renew answers 0 (the key
is gone or holds another value), or when 2L/3 have passed since it sent the last renew
that succeeded, it SIGKILLs PROGRAM's whole process group, says why on stderr and exits
75 (EX_TEMPFAIL). So a host cut off from Redis has stopped its PROGRAM before its lease
can expire and another host's can start. SIGTERM, SIGINT and SIGQUIT go to PROGRAM; the
guard exits with PROGRAM's status (128+N when a signal N ended it).

Only Python 3 and redis-py are needed (both are in Indico's venv).

Why a thread for renewing: a renew can block on a dead connection for up to its socket
timeout, and the fence deadline must not wait for it. The main thread owns all state
and decisions; the renewer only reports (sent-at, answer) and wakes it through the same
pipe that carries signals (signal.set_wakeup_fd), so nothing real runs in a handler.
"""
from __future__ import annotations

import os
import queue
import select
import signal
import sys
import threading
import time

EX_FENCED = 75  # EX_TEMPFAIL: the lease is not ours (any more); the daemon decides what next
EX_USAGE = 2
PREFIX = "indico-lease-guard:"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
RENEWED = b"\0"  # a byte no signal number uses: "a renew answer is queued"

# The protocol's renew script: extend the key only while it still holds our exact value.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
return 0
"""


def say(message: str) -> None:
    print(f"{PREFIX} {message}", file=sys.stderr, flush=True)


class Lease:
    """What the environment says about the lease; the timings derived from it."""

    def __init__(self, environ: dict[str, str]):
        names = ("INDICO_SUPERVISOR_LEASE_REDIS", "INDICO_SUPERVISOR_LEASE_KEY",
                 "INDICO_SUPERVISOR_LEASE_VALUE", "INDICO_SUPERVISOR_LEASE_MS")
        missing = [name for name in names if not environ.get(name)]
        if missing:
            raise ValueError(f"{', '.join(missing)} not set: the daemon that holds the lease sets all four")
        self.url, self.key, self.value, ms = (environ[name] for name in names)
        if not ms.isdigit() or int(ms) < 100:
            raise ValueError(f"INDICO_SUPERVISOR_LEASE_MS={ms!r} is not a whole number of milliseconds >= 100")
        self.ms = int(ms)
        seconds = self.ms / 1000
        self.renew_every = seconds / 5
        self.fence_after = seconds * 2 / 3
        # Short enough that a blocked call never outlasts a renew period by much; the
        # deadline is watched by the main thread anyway.
        self.io_timeout = seconds / 10


def redis_renewer(lease: Lease):
    """A function that sends one renew and returns its answer (1 or 0), or raises."""
    import redis

    options = dict(socket_timeout=lease.io_timeout, socket_connect_timeout=lease.io_timeout,
                   retry_on_timeout=False, health_check_interval=0)
    try:  # newer redis-py retries by default; every retry would stretch one renew
        from redis.backoff import NoBackoff
        from redis.retry import Retry
        options["retry"] = Retry(NoBackoff(), 0)
    except ImportError:
        pass
    client = redis.Redis.from_url(lease.url, **options)
    script = client.register_script(RENEW)  # EVALSHA, loaded again after a Redis restart
    return lambda: int(script(keys=[lease.key], args=[lease.value, lease.ms]))


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class Guard:
    def __init__(self, lease: Lease, argv: list[str], renew):
        self.lease, self.argv, self.renew = lease, argv, renew
        self.answers: queue.SimpleQueue = queue.SimpleQueue()
        self.child: int | None = None
        self.t_ok: float | None = None  # when the last renew answered 1 was SENT
        self.failing = False

    # The renewer thread: only sends and reports.
    def _renew_forever(self, wake_fd: int) -> None:
        while True:
            sent = time.monotonic()
            try:
                answer: int | BaseException = self.renew()
            except Exception as error:  # reported, decided on by the main thread
                answer = error
            self.answers.put((sent, answer))
            try:
                os.write(wake_fd, RENEWED)
            except BlockingIOError:
                pass  # the pipe is full of wake-ups already
            time.sleep(max(0.0, sent + self.lease.renew_every - time.monotonic()))

    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for signum in (*FORWARDED, signal.SIGCHLD):
            signal.signal(signum, lambda *_: None)  # the wake-up byte is the message
        started = time.monotonic()
        threading.Thread(target=self._renew_forever, args=(wake_w,), daemon=True,
                         name="renewer").start()
        while True:
            deadline = (self.t_ok if self.t_ok is not None else started) + self.lease.fence_after
            select.select([wake_r], [], [], max(0.0, deadline - time.monotonic()))
            try:
                wakes = os.read(wake_r, 4096)
            except BlockingIOError:
                wakes = b""
            status = self._handle_answers()
            if status is not None:
                return status
            for signum in sorted(set(wakes) - {RENEWED[0]}):
                status = self._handle_signal(signum)
                if status is not None:
                    return status
            if time.monotonic() >= (self.t_ok if self.t_ok is not None else started) + self.lease.fence_after:
                why = (f"no renew succeeded within {self.lease.fence_after:.2f}s (2/3 of the lease)"
                       + (f"; last error: {self.failing}" if self.failing else ""))
                return self._fence(why)

    def _handle_answers(self) -> int | None:
        while True:
            try:
                sent, answer = self.answers.get_nowait()
            except queue.Empty:
                return None
            if isinstance(answer, BaseException):
                if not self.failing:
                    say(f"renew failed ({describe(answer)}); fencing if none succeeds in time")
                self.failing = describe(answer)
                continue
            if answer != 1:
                return self._fence(f"the lease key {self.lease.key} no longer holds this container's value"
                                   " (renew answered 0: lease lost or taken over)")
            if self.failing:
                say("renew succeeded again")
                self.failing = False
            self.t_ok = sent if self.t_ok is None else max(self.t_ok, sent)
            # An answer read past its own fence deadline starts nothing: the caller fences next.
            if self.child is None and time.monotonic() < self.t_ok + self.lease.fence_after:
                status = self._start_child()
                if status is not None:
                    return status

    def _start_child(self) -> int | None:
        try:
            # A session (and process group) of its own, so a fence kills all of it.
            self.child = os.posix_spawnp(self.argv[0], self.argv, os.environ, setsid=True)
        except OSError as error:
            say(f"cannot start {self.argv[0]}: {describe(error)}")
            return 127
        say(f"lease renewed; started {' '.join(self.argv)} (pid {self.child}; guard pid {os.getpid()},"
            f" renewing {self.lease.key} every {self.lease.renew_every:.2f}s)")
        return None

    def _handle_signal(self, signum: int) -> int | None:
        if signum == signal.SIGCHLD:
            return self._reap()
        if self.child is None:  # stopped before it ever started
            say(f"{signal.Signals(signum).name} before the program started; not starting it")
            return 128 + signum
        try:
            os.kill(self.child, signum)
        except ProcessLookupError:
            pass
        return None

    def _reap(self) -> int | None:
        """Reap every exited process (PID 1 inherits orphans); PROGRAM's status once it ended."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid == 0:
                return None
            if pid == self.child:
                return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)

    def _fence(self, why: str) -> int:
        if self.child is not None:
            try:
                os.killpg(self.child, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(self.child, 0)
            except ChildProcessError:
                pass
            say(f"fenced: {why}; killed the process group of {self.argv[0]} (pid {self.child}); exit {EX_FENCED}")
        else:
            say(f"not starting {self.argv[0]}: {why}; exit {EX_FENCED}")
        return EX_FENCED


def main(argv: list[str]) -> int:
    if not argv:
        say("usage: indico-lease-guard PROGRAM [ARG...]")
        return EX_USAGE
    try:
        lease = Lease(dict(os.environ))
    except ValueError as error:
        say(str(error))
        return EX_USAGE
    return Guard(lease, argv, redis_renewer(lease)).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
