"""`indico-supervisor` commands. User mistakes end here as messages and exit status 2."""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import sys
import time

from . import config, logs
from .config import DEFAULT_PATH
from .problems import ConfigError

EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    streams = sys.stdout, sys.stderr
    if args.command != "run":  # the daemon's log scrubs itself, field by field
        sys.stdout, sys.stderr = logs.ScrubbingStream(sys.stdout), logs.ScrubbingStream(sys.stderr)
    try:
        return args.handler(args)
    except ConfigError as error:
        from .logs import Redactor, secrets_in_file
        redactor = Redactor()  # problems echo values, and the file's secrets may be among them
        redactor.add_secrets(secrets_in_file(error.file))
        print(redactor.scrub(str(error)), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    finally:
        sys.stdout, sys.stderr = streams


def load_site(path: str, check_paths: bool = True):
    """The site, its secrets learnt: whatever a command prints next (the file's settings, engine
    errors, a status detail from the state file) goes through the one redactor that knows them."""
    site = config.load_site(path, check_paths)
    logs.learn_site(site)
    return site


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="indico-supervisor",
                                     description="Runs an Indico site's containers under one supervising daemon.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("--config", default=DEFAULT_PATH, metavar="PATH",
                         help=f"the site file (default {DEFAULT_PATH})")
        sub.set_defaults(handler=handler)
        return sub

    command("check-config", _check_config, "check the site file and print the containers it resolves to")
    run = command("run", _run, "run the supervising daemon in the foreground (systemd's ExecStart)")
    run.add_argument("--log-format", choices=["kv", "json"], default="kv",
                     help="kv: key=value lines with a syslog priority prefix (default); json: one object per line")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    status = command("status", _status, "show the site's containers as the daemon and the engine see them")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument("--check", action="store_true",
                        help="monitoring check: one line; exit 0 all running and healthy, 1 something on its way, "
                             "2 something failed, a refused reload, or the daemon down (Nagios plugin convention)")
    exec_ = command("exec", _exec, "run a one-shot command (e.g. make-config, indico db prepare) in a container "
                                   "with a role's image, user, volumes, network and env; its output and exit "
                                   "status are ours, and it is removed afterwards. -i passes stdin, -t a terminal "
                                   "(`exec -it -- indico shell`); --running uses the role's running container")
    exec_.add_argument("--role", default="worker", help="whose settings to use (default worker; a disabled role works too)")
    exec_.add_argument("-i", "--interactive", action="store_true",
                       help="pass stdin to the command, ending it at EOF (`exec -i --role db -- psql … < dump.sql`)")
    exec_.add_argument("--running", action="store_true",
                       help="run it in the role's running container (as docker exec), not in a new one: "
                            "`exec -it --running --role db -- psql -U postgres`")
    exec_.add_argument("-t", "--tty", action="store_true",
                       help="give the command a terminal sized like ours; with -i, keys (Ctrl-C too) go to it")
    exec_.add_argument("args", nargs=argparse.REMAINDER, metavar="-- ARGS", help="the command, after --")
    build = command("build-image", _build_image, "build the worker image through the Docker engine")
    build.add_argument("--context", metavar="DIR", help="the directory with the Dockerfile (default "
                       "/usr/share/indico-supervisor/image if present, else the checkout's image/)")
    build.add_argument("--tag", help="default: the worker's image in the site file, else indico-worker:latest")
    build.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE", dest="build_args")
    build.add_argument("--pull", action="store_true", help="pull a newer base image first")
    return parser


def _check_config(args: argparse.Namespace) -> int:
    from .describe import describe_site
    from .monitoring import warnings
    site = load_site(args.config)
    print(describe_site(site))
    for warning in warnings(site.monitoring):
        print(f"WARNING  {warning}")
    print(f"\n{args.config}: OK")
    return 0


def _run(args: argparse.Namespace) -> int:
    from . import logs
    from .daemon import Daemon
    from .status import runtime_dir

    logs.configure(args.log_format, args.log_level)
    log = logs.get_logger()
    try:
        site = load_site(args.config)
    except ConfigError as error:
        logs.add_secrets(logs.secrets_in_file(error.file))  # problems echo values, maybe the file's secrets
        for problem in error.problems:
            log.error("config_problem", file=error.file, key=problem.path, problem=problem.render())
        log.error("daemon_not_started", file=error.file, problems=len(error.problems),
                  hint=f"fix the file, check it with `indico-supervisor check-config --config {args.config}`")
        return EXIT_USAGE
    if _another_daemon_runs(os.path.join(runtime_dir(), f"{site.name}.lock")):
        log.error("daemon_not_started", site=site.name,
                  hint=f"another indico-supervisor already runs site {site.name} on this host")
        return EXIT_USAGE
    daemon = Daemon(args.config, site)
    exit_code = daemon.run()
    if daemon.reexec:
        _exec_fresh_daemon(log)
    return exit_code


def _exec_fresh_daemon(log) -> None:
    """Replace this process with the (possibly upgraded) daemon: same PID, same arguments.

    Our descriptors, the site lock's among them, are close-on-exec, so the new daemon
    takes the lock afresh; the containers were left running and it adopts them.
    Isolated mode (-I): `-m` would otherwise put the working directory first on
    sys.path, and a `supervisor/` there (a checkout, anything) would run as root.
    """
    argv = [sys.executable, "-I", "-m", "supervisor", *sys.argv[1:]]
    log.info("daemon_reexec", argv=" ".join(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, argv)
    except OSError as error:  # returning non-zero lets systemd's Restart= start it instead
        log.error("daemon_reexec_failed", reason=str(error))
        sys.exit(1)


_held_locks: list = []  # open for the life of the process: closing a handle releases its lock


def _another_daemon_runs(path: str) -> bool:
    """One daemon per site and host: two would fight over the same containers."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        handle = open(path, "a")
    except OSError:
        return False  # no runtime directory to lock in (an unprivileged trial run): nothing to enforce
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return True
    _held_locks.append(handle)
    return False


def _status(args: argparse.Namespace) -> int:
    from .engine import Engine, is_unreachable, reason
    from .status import daemon_alive, read_state, render_table, state_path

    if args.check:
        from .check import run_check
        code, line = run_check(args.config)
        print(line)
        return code
    site = load_site(args.config, check_paths=False)  # a missing bound directory is a thing to show, not a refusal
    state = read_state(state_path(site.name))
    alive = daemon_alive(state)
    try:
        seen = {c.name: c for c in Engine(site.name, timeout=10).list([c.name for c in site.enabled()])}
        engine_note = "reachable"
    except Exception as error:
        if not is_unreachable(error):
            raise
        seen, engine_note = {}, f"unreachable ({reason(error)})"
    daemon_rows = {row["role"]: row for row in state["containers"]} if alive else {}
    rows = []
    for container in site.enabled():
        row = dict(daemon_rows.get(container.role) or {"role": container.role, "name": container.name,
                                                       "image": container.image, "restarts": 0})
        on_engine = seen.get(container.name)
        row["engine"] = _engine_view(on_engine, site.name)
        if not alive:
            row["state"] = on_engine.status if on_engine and on_engine.site else "absent"
            row["health"] = on_engine.health if on_engine else None
            row["started_at"] = on_engine.started_at if on_engine else None
        rows.append(row)
    daemon_note = _daemon_note(state, alive)
    if args.json:
        print(json.dumps({"site": site.name, "daemon": "running" if alive else "not running",
                          "engine": engine_note, "containers": rows}, indent=1, default=str))
    else:
        print(f"site {site.name}; daemon {daemon_note}; engine {engine_note}")
        print(render_table(rows, time.time()))
    return 0


def _daemon_note(state: dict | None, alive: bool) -> str:
    # Any key may be missing: a file from an older daemon, or one cut short by a full disk.
    updated = (state or {}).get("updated_at")
    if not isinstance(updated, (int, float)):
        updated = None
    if alive:
        return f"running (pid {state['pid']}" + (f", updated {time.time() - updated:.0f}s ago)" if updated else ")")
    return "not running: states below are the engine's own" + (
        f" (last daemon state from {time.ctime(updated)})" if updated else "")


def _exec(args: argparse.Namespace) -> int:
    from .inside import run_in_running
    from .oneshot import ExecRefused, run_oneshot

    command = args.args[1:] if args.args[:1] == ["--"] else args.args
    if not command:
        print("indico-supervisor exec: no command; give it after --, e.g. "
              "`indico-supervisor exec -- indico db prepare`", file=sys.stderr)
        return EXIT_USAGE
    stdin = 0  # the descriptor, not sys.stdin: that may be None, and its buffer is not ours to read
    if args.tty and not os.isatty(stdin):
        print("indico-supervisor exec: -t needs a terminal, and stdin is not one; drop -t "
              "(keep -i to feed the command from a pipe or file) or run from a terminal", file=sys.stderr)
        return EXIT_USAGE
    site = load_site(args.config)
    logs.add_secrets(logs.secrets_of_command(command))  # the job's own `PGPASSWORD=…`, echoed in our notes
    with _engine_errors_end_here("exec"):
        from .engine import connect_patient
        try:
            run = run_in_running if args.running else run_oneshot
            return run(site, args.role, command, connect_patient(),
                       stdin_fd=stdin if args.interactive else None, terminal_fd=stdin if args.tty else None)
        except ExecRefused as refused:
            print(f"indico-supervisor exec: {refused}", file=sys.stderr)
            return EXIT_USAGE
    return 1  # reached only when the engine failed


def _build_image(args: argparse.Namespace) -> int:
    from .build import BuildRefused, build_image, check_context, default_context, default_tag, parse_build_args

    try:
        context = check_context(args.context or default_context())
        buildargs = parse_build_args(args.build_args)
    except BuildRefused as refused:
        print(f"indico-supervisor build-image: {refused}", file=sys.stderr)
        return EXIT_USAGE
    tag = args.tag
    if not tag:
        tag, origin = default_tag(args.config)
        print(f"tag {tag} ({origin})", flush=True)
    with _engine_errors_end_here("build-image"):
        from .engine import connect_patient
        return build_image(connect_patient(), context, tag, buildargs, args.pull,
                           lambda text: (sys.stdout.write(text), sys.stdout.flush()))
    return 1  # reached only when the engine failed


@contextlib.contextmanager
def _engine_errors_end_here(command: str):
    """An engine that is away or refuses: one line on stderr (the caller then exits 1), not a traceback."""
    import docker.errors
    import requests.exceptions
    from .engine import is_unreachable, reason

    try:
        yield
    except (docker.errors.DockerException, requests.exceptions.RequestException, ConnectionError) as error:
        what = "cannot reach the Docker engine" if is_unreachable(error) else "the Docker engine refused"
        print(f"indico-supervisor {command}: {what}: {' '.join(reason(error).split())}", file=sys.stderr)


def _engine_view(container, site: str) -> str:
    if container is None:
        return "absent"
    if container.site != site:
        return f"held by a container we do not own ({container.id[:12]})"
    if container.status == "exited":
        return f"exited ({container.exit_code})"
    return container.status


if __name__ == "__main__":
    sys.exit(main())
