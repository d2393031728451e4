"""Reading a pull's stream: its progress condensed for the log, its JSON lines, its stall.

Helpers of `engine.Engine.pull`; nothing here holds a client or keeps state across pulls.
"""
from __future__ import annotations

import json
import time
from typing import Callable, Iterator

import requests
import urllib3.exceptions

PROGRESS_EVERY = 2.0  # seconds between pull progress reports


class PullReporter:
    """Condenses a pull's JSON stream into a report every few seconds: layers and bytes."""

    def __init__(self, report: Callable[[dict], None]):
        self.report = report
        self.layers: dict[str, tuple[str, int, int]] = {}
        self.last = 0.0

    def feed(self, line: dict) -> bool:
        """Take one line; whether it says the pull moved (a retry countdown or a wait does not)."""
        layer, status = line.get("id"), line.get("status", "")
        # "Pulling from REPO" carries the tag as its id: it is not a layer.
        if layer and status and not status.startswith("Pulling from"):
            _, current, total = self.layers.get(layer, ("", 0, 0))
            detail = line.get("progressDetail") or {}
            if status == "Downloading":
                current, total = detail.get("current", current), detail.get("total", total)
            elif status in ("Download complete", "Extracting", "Pull complete"):
                current = total  # fully downloaded; later lines carry no (or extraction) counts
            self.layers[layer] = (status, current, total)
        if time.monotonic() - self.last >= PROGRESS_EVERY:
            self._emit()
        return not status.startswith(("Retrying", "Waiting"))

    def finish(self) -> None:
        self._emit()

    def _emit(self) -> None:
        self.last = time.monotonic()
        done = sum(1 for status, _, _ in self.layers.values() if status in ("Pull complete", "Already exists"))
        self.report({"layers_done": done, "layers": len(self.layers),
                     "bytes": sum(c for _, c, _ in self.layers.values()),
                     "bytes_total": sum(t for _, _, t in self.layers.values())})


def json_lines(response: requests.Response) -> Iterator[dict]:
    for line in response.iter_lines(chunk_size=None):  # None: each chunk as it comes, never held for more
        if line.strip():
            yield json.loads(line)


def read_timed_out(error: requests.exceptions.ConnectionError) -> bool:
    # requests wraps a read timeout met while streaming a body as a ConnectionError.
    return any(isinstance(a, urllib3.exceptions.ReadTimeoutError) for a in error.args)


def split_reference(reference: str) -> tuple[str, str | None]:
    if "@" in reference:
        return reference, None
    name, _, tag = reference.rpartition(":")
    if name and "/" not in tag:
        return name, tag
    return reference, "latest"
