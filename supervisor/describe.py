"""Human-readable account of a resolved site, for `check-config`."""
from __future__ import annotations

from . import hostaccess
from .durations import format_duration as d
from .logs import Redactor, mask_env
from .model import Container, Site


def describe_site(site: Site) -> str:
    lines = [f"site {site.name}: {len(site.enabled())} of {len(site.containers)} containers enabled "
             f"(on exit: {site.stop_on_exit})",
             f"start order: {' -> '.join(site.start_order())} (stopped in reverse)"]
    if site.cluster is not None:
        c = site.cluster
        lines.append(f"cluster: this host {c.host}, lease {d(c.lease)} in {Redactor().scrub(c.redis)}; "
                     f"singletons: {', '.join(x.role for x in site.containers if x.singleton) or 'none'}")
    for container in site.containers:
        lines.extend(_describe(container))
    return "\n".join(lines)


def _describe(c: Container) -> list[str]:
    state = "" if c.enabled else "  (disabled)"
    lines = ["", f"{c.role}: {c.name}{state}",
             f"  image    {c.image} (pull {c.pull})",
             f"  user     {c.user}",
             f"  command  {' '.join(c.command) if c.command is not None else '(image default)'}"]
    lines += [f"  {'volume' if b.named else 'mount '}   {b.host} -> {b.target}{' (ro)' if b.read_only else ''}"
              for b in c.binds]
    if c.depends_on:
        lines.append(f"  needs    {', '.join(f'{role} {condition}' for role, condition in c.depends_on)}")
    if c.network.name:
        lines.append(f"  network  {c.network.name}")
    else:
        links = ", ".join(n if n == a else f"{n}:{a}" for n, a in c.network.links) or "none"
        lines.append(f"  links    {links}")
    lines += [f"  port     {p.host_ip + ':' if p.host_ip else ''}{p.host_port} -> {p.container_port}/{p.protocol}"
              for p in c.ports]
    lines += [f"  env      {key}={value}" for key, value in mask_env(dict(c.env)).items()]
    if c.probe:
        p = c.probe
        target = {"http": f"GET :{p.port}{p.path}", "tcp": f"connect :{p.port}", "exec": " ".join(p.command)}[p.kind]
        lines.append(f"  health   {p.kind} {target} every {d(p.interval)}, timeout {d(p.timeout)}, "
                     f"{p.retries} retries, start period {d(p.start_period)}")
    if c.healthcheck:
        h = c.healthcheck
        lines.append(f"  healthcheck {' '.join(h.test)} every {d(h.interval)}, {h.retries} retries")
    r = c.restart
    lines.append(f"  restart  backoff {d(r.backoff)} doubling to {d(r.max_backoff)}, reset after {d(r.reset_after)}, "
                 f"failed after {r.max_restarts} restarts in {d(r.window)}, "
                 f"{'tried again after ' + d(r.cooldown) if r.cooldown is not None else 'until a reload'}")
    lines.append(f"  stop     {c.stop_signal or 'image default signal'}, timeout {d(c.stop_timeout)}")
    if c.log_driver:
        lines.append(f"  logs     {c.log_driver} {dict(c.log_options) or ''}".rstrip())
    if c.allow_host_access:
        # Opted in, so allowed; said on every check so the grant is never forgotten in a file.
        lines += [f"  WARNING  host access (allow_host_access): {f.what}: {f.why}"
                  for f in hostaccess.findings(c.binds, c.network)] or \
                 ["  WARNING  allow_host_access is set but nothing here needs it; remove it"]
    return lines
