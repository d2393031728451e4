"""User mistakes as values: each names where it is, what was found and what would be right.

Config loading collects every problem before giving up, so an admin fixes a file
in one pass instead of one error per run.
"""
from __future__ import annotations

import itertools
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
    text = _bounded_repr(value, _MAX_SHOWN + 1)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _bounded_repr(value: object, budget: int) -> str:
    """repr(value), stopped once `budget` characters are written.

    A value from YAML may share nodes through aliases and expand to millions of items:
    repr() of it in full would take minutes and gigabytes only to be cut to a line.
    """
    parts: list[str] = []
    used = 0
    # Values still to write, last first; a container is opened into its parts.
    stack: list[object] = [value]
    while stack and used < budget:
        item = stack.pop()
        if isinstance(item, _Text):
            text = item
        elif isinstance(item, dict) and item:
            text = "{"
            entries: list[object] = [_Text("}")]
            # Each entry writes at least one character, so no more than `budget` can show.
            shown = list(itertools.islice(item.items(), budget))
            for index, (key, inner) in enumerate(reversed(shown)):
                entries += [inner, _Text(": "), key] + ([_Text(", ")] if index < len(shown) - 1 else [])
            stack.extend(entries)
        elif isinstance(item, (list, tuple)) and item:
            opening, closing = ("[", "]") if isinstance(item, list) else ("(", ",)" if len(item) == 1 else ")")
            text = opening
            entries = [_Text(closing)]
            shown = list(itertools.islice(item, budget))
            for index, inner in enumerate(reversed(shown)):
                entries += [inner] + ([_Text(", ")] if index < len(shown) - 1 else [])
            stack.extend(entries)
        elif isinstance(item, str):
            text = repr(item[:budget])
        else:
            text = repr(item)[:budget]
        parts.append(text)
        used += len(text)
    return "".join(parts)


class _Text(str):
    """Punctuation of a container being written, not a value to repr."""


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
