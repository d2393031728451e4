"""Sites under test: the label our containers carry, and removing exactly those of one site."""
from __future__ import annotations

# The label the supervisor puts on every container it owns; cleanup keys on it.
SITE_LABEL = "io.indico-supervisor.site"


def remove_site_containers(client, site: str) -> int:
    """Force-remove every container (running or not) labelled as belonging to `site`."""
    import docker.errors  # here: modules that only need the label import without the SDK

    removed = 0
    for c in client.containers.list(all=True, filters={"label": f"{SITE_LABEL}={site}"}):
        try:
            c.remove(force=True, v=True)  # with its anonymous volumes, which nothing else reuses
            removed += 1
        except docker.errors.NotFound:
            pass  # already gone (e.g. auto_remove, or the code under test removed it)
    return removed
