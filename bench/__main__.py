"""`python -m bench [--quick] [--only NAME...]`: run the benchmarks, print tables, update RESULTS.md."""
from __future__ import annotations

import argparse
import shlex
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import docker

from bench import exec_tty, failover, footprint, health, lease, recovery, reload, site, startup
from bench.lab import Lab, say
from bench.report import Result, git_revision, load_average, machine, write_results
from harness.images import busybox_image

ROOT = Path(__file__).resolve().parent.parent
# name -> (run(lab, quick) -> Result); in the order they run
BENCHMARKS = {
    "recovery": recovery.run,
    "health": health.run,
    "reload": reload.run,
    "startup": startup.run,
    "lease": lease.run,
    "exec_tty": exec_tty.run,
    "failover": failover.run,
    "idle": footprint.run_idle,
    "soak": footprint.run_soak,
    "site": site.run,
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run: few iterations, no soak")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME",
                        help=f"run only these: {', '.join(BENCHMARKS)}")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md",
                        help="the file to update (default: bench/RESULTS.md)")
    args = parser.parse_args(argv)
    chosen = args.only or [n for n in BENCHMARKS if not (args.quick and n == "soak")]

    client = docker.from_env(timeout=120)
    image = busybox_image(client)
    facts = machine(client)
    command = shlex.join(["bench/run", *argv])
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    kind = "QUICK smoke run (few iterations; indicative only)" if args.quick else "full run"
    stamp = f"Run {when}, `{command}`, {kind}; supervisor at {git_revision(ROOT)}."

    results: list[Result] = []
    failed = []
    for name in chosen:
        say(f"{name}: starting")
        began = time.monotonic()
        load = load_average()
        lab = Lab(client, image)
        try:
            result = BENCHMARKS[name](lab, args.quick)
        except Exception:
            failed.append(name)
            say(f"{name}: FAILED\n{traceback.format_exc()}")
            for daemon in lab.daemons:
                say(f"{name}: daemon log tail ({daemon.log_path}):\n{daemon.log_text()[-3000:]}")
            continue
        finally:
            lab.close()
        result.notes.append(f"took {time.monotonic() - began:.0f} s; load average (1/5/15 min) at its start: {load}, "
                            f"at its end: {load_average()}")
        results.append(result)
        print(result.text(), flush=True)
    if results:
        write_results(args.results, results, stamp, facts)
        say(f"wrote {args.results}")
    if failed:
        say(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
