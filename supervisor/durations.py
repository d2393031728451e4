"""Durations as admins write them in the site file: 250ms, 10s, 5m, 1h, or bare seconds."""
from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")

HINT = "a duration such as 250ms, 10s, 5m or 1h (a bare number is seconds)"


def parse_duration(value: object) -> float:
    """Seconds as a float; ValueError for anything that is not a non-negative duration."""
    if isinstance(value, bool):  # bool is an int to Python, never a duration to an admin
        raise ValueError(HINT)
    seconds = None
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise ValueError(HINT) from None
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match:
            number, unit = match.groups()
            seconds = float(number) * _UNITS[unit or "s"]  # hundreds of digits give inf
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(HINT)
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling, so printed configs read like the file."""
    if seconds == 0:
        return "0s"
    for unit in ("h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and float(seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if float(seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"
