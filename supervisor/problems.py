"""User mistakes as values: each names where it is, what was found and what would be right.

Config loading collects every problem before giving up, so an admin fixes a file
in one pass instead of one error per run.
"""
from __future__ import annotations

from dataclasses import dataclass

_MAX_SHOWN = 200  # long enough for a real path; a runaway value is still cut
_MISSING = object()


@dataclass(frozen=True)
class Problem:
    path: str  # key path, e.g. "containers.worker.volumes.extra[1]"
    message: str  # what is wrong and what would be right
    value: object = _MISSING  # the offending value; _MISSING when the key is absent or hidden

    def render(self) -> str:
        where = self.path or "(top level)"
        text = f"{where}: {self.message}" if self.value is _MISSING else f"{where} = {show(self.value)}: {self.message}"
        # A key or path with a line break in it must not split one problem over two lines.
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


class ConfigError(Exception):
    """A site file that cannot be used; carries every problem found in it."""

    def __init__(self, file: str, problems: list[Problem]):
        super().__init__(f"{file}: {len(problems)} problem(s)")
        self.file = file
        self.problems = list(problems)

    def __str__(self) -> str:
        count = len(self.problems)
        head = f"{self.file}: {count} problem{'s' if count != 1 else ''}"
        return "\n".join([head] + ["  " + p.render() for p in self.problems])
