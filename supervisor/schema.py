"""Typed reads of a parsed YAML tree that record problems instead of raising.

Each reader returns the value, or None after recording a Problem at the key path,
so one pass over the file reports every mistake in it.
"""
from __future__ import annotations

import difflib
import re
from typing import Iterable

from .durations import HINT as DURATION_HINT, parse_duration
from .problems import Problem


def key_path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def type_name(value: object) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "true/false",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


class Reader:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def problem(self, path: str, message: str, *value: object) -> None:
        self.problems.append(Problem(path, message, *value))

    def mapping(self, node: object, path: str, keys: Iterable[str],
                renamed: dict[str, str] | None = None) -> dict | None:
        """A mapping whose keys are all known; an empty or null node is an empty mapping."""
        if node is None:
            return {}
        if not isinstance(node, dict):
            self.problem(path, f"expected a mapping (key: value lines), got {type_name(node)}", node)
            return None
        known = list(keys)
        for key in node:
            if not isinstance(key, str):
                self.problem(key_path(path, str(key)), "keys must be words", key)
            elif key not in known:
                self.problem(key_path(path, key), _unknown_key_message(key, known, renamed or {}))
        return node

    def string(self, node: object, path: str, *, pattern: str | None = None,
               hint: str = "a string") -> str | None:
        if isinstance(node, str) and node.strip() and (pattern is None or re.fullmatch(pattern, node)):
            return node
        self.problem(path, f"expected {hint}", node)
        return None

    def choice(self, node: object, path: str, choices: Iterable[str]) -> str | None:
        options = list(choices)
        if isinstance(node, str) and node in options:
            return node
        self.problem(path, "expected one of " + ", ".join(options), node)
        return None

    def integer(self, node: object, path: str, *, minimum: int | None = None,
                maximum: int | None = None) -> int | None:
        if isinstance(node, int) and not isinstance(node, bool):
            if (minimum is None or node >= minimum) and (maximum is None or node <= maximum):
                return node
        low = "" if minimum is None else f" from {minimum}"
        high = "" if maximum is None else f" to {maximum}"
        self.problem(path, f"expected a whole number{low}{high}", node)
        return None

    def boolean(self, node: object, path: str) -> bool | None:
        if isinstance(node, bool):
            return node
        self.problem(path, "expected true or false", node)
        return None

    def duration(self, node: object, path: str, *, positive: bool = False) -> float | None:
        try:
            seconds = parse_duration(node)
        except ValueError:
            self.problem(path, f"expected {DURATION_HINT}", node)
            return None
        if positive and seconds <= 0:
            self.problem(path, f"must be longer than zero: {DURATION_HINT}", node)
            return None
        return seconds

    def string_list(self, node: object, path: str, *, non_empty: bool = False,
                    hint: str = "a list of strings") -> list[str] | None:
        if not isinstance(node, list) or (non_empty and not node):
            self.problem(path, f"expected {hint}", node)
            return None
        good = True
        for index, item in enumerate(node):
            if not isinstance(item, str):
                self.problem(key_path(path, index), "expected a string (quote it)", item)
                good = False
        return list(node) if good else None


def _unknown_key_message(key: str, known: list[str], renamed: dict[str, str]) -> str:
    guess = renamed.get(key) or next(iter(difflib.get_close_matches(key, known, n=1, cutoff=0.6)), None)
    if guess:
        return f"unknown key; did you mean '{guess}'?"
    return "unknown key; allowed here: " + ", ".join(known)
