"""Ending an exec probe's processes that outlived their timeout, through /proc, never touching another's.

Helpers of `engine.Engine.exec_exit_code`: the engine has no call to kill an exec.
"""
from __future__ import annotations

import os
import signal


def kill_exec(pid: int, container_id: str) -> None:
    """SIGKILL a timed-out exec's process and its descendants, from the host.

    The engine gives the exec's host PID; another exec running `kill` would need
    that tool in the image. Only processes still in the container's cgroup are
    killed, so a PID the host has reused since is never touched. Where the daemon
    cannot see them (another PID namespace) the process is left: it ends when the
    container does, and no thread of ours waits on it.
    """
    victims, queue = [], [pid] if pid > 0 else []
    while queue:
        current = queue.pop()
        if not in_container(current, container_id):
            continue
        victims.append(current)
        queue.extend(children(current))
    for victim in victims:
        try:
            os.kill(victim, signal.SIGKILL)
        except OSError:
            pass


def in_container(pid: int, container_id: str) -> bool:
    try:
        with open(f"/proc/{pid}/cgroup") as stream:
            return container_id in stream.read()
    except OSError:
        return False


def children(pid: int) -> list[int]:
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as stream:
                found += [int(child) for child in stream.read().split()]
        except (OSError, ValueError):
            pass
    return found
