"""A benchmark's result as tables and target lines, the statistics they use, and RESULTS.md.

RESULTS.md keeps one section per benchmark, each stamped with its own run (date,
command, quick or full), so `--only NAME` replaces that section and keeps the rest.
"""
from __future__ import annotations

import math
import platform
import re
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import docker


@dataclass
class Result:
    name: str
    title: str
    header: tuple[str, ...]
    rows: list[tuple] = field(default_factory=list)
    targets: list[tuple[str, bool]] = field(default_factory=list)  # (what, met)
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        cells = [tuple(str(c) for c in self.header)] + [tuple(_cell(c) for c in row) for row in self.rows]
        widths = [max(len(line[i]) for line in cells) for i in range(len(self.header))]
        lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |" for line in cells]
        lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)

    def body(self) -> str:
        parts = [self.table(), ""]
        parts += [f"- target: {what}: **{'met' if met else 'NOT MET'}**" for what, met in self.targets]
        parts += [f"- {note}" for note in self.notes]
        return "\n".join(parts).rstrip() + "\n"

    def text(self) -> str:
        return f"## {self.title}\n\n{self.body()}"


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def p95(values: list[float]) -> float | None:
    """Nearest rank: with 20 samples, the 19th smallest."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def ratio(ours: float | None, theirs: float | None) -> float | None:
    return None if not ours or not theirs else ours / theirs


def machine(client: docker.DockerClient) -> dict[str, str]:
    info = client.info()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    return {
        "cpu": cpu,
        "cores": str(info.get("NCPU") or ""),
        "memory": f"{int(info.get('MemTotal', 0)) / 2**30:.1f} GiB",
        "kernel": platform.release(),
        "docker engine": client.version().get("Version", "?"),
        "storage driver": info.get("Driver", "?"),
        "cgroup": f"v{info.get('CgroupVersion', '?')} ({info.get('CgroupDriver', '?')})",
        "python": platform.python_version(),
    }


def load_average() -> str:
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])


def git_revision(root: Path) -> str:
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "supervisor"],
                               capture_output=True, text=True).stdout.strip()
        return head + (" + uncommitted changes in supervisor/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


PREAMBLE = """# Benchmark results

Written by `bench/run` (see bench/README.md for what each benchmark measures and how
to read it). Each section is stamped with the run that produced it; `--only NAME`
replaces just that section. A run marked QUICK is a smoke run with few iterations:
its figures are indicative only.
"""


def write_results(path: Path, results: list[Result], stamp: str, facts: dict[str, str]) -> None:
    old = path.read_text() if path.exists() else ""
    sections = dict(re.findall(r"<!-- bench:(\w+) -->\n(.*?)<!-- /bench:\1 -->\n", old, re.S))
    order = re.findall(r"<!-- bench:(\w+) -->", old)
    machine_block = "Machine: " + "; ".join(f"{key} {value}" for key, value in facts.items()) + "."
    for result in results:
        sections[result.name] = f"## {result.title}\n\n{stamp}\n\n{machine_block}\n\n{result.body()}"
        if result.name not in order:
            order.append(result.name)
    body = [PREAMBLE]
    for name in order:
        body.append(f"<!-- bench:{name} -->\n{sections[name]}<!-- /bench:{name} -->\n")
    path.write_text("\n".join(body))
