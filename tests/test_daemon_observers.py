"""A monitoring observer that raises is dropped with one error line; the loop and the other observers go on.

No engine: the daemon is built around an engine object it never calls here.
"""
from __future__ import annotations

from supervisor.daemon import Daemon
from supervisor.ledger import Event
from supervisor.model import Container, Network, Site


class Recording:
    def __init__(self):
        self.seen = []

    def event(self, event, now):
        self.seen.append(event.name)

    def deadline(self):
        return None


class Broken(Recording):
    def event(self, event, now):
        raise ZeroDivisionError("a bug in a metric")


def test_a_broken_observer_is_dropped_and_the_others_keep_hearing(capsys):
    worker = Container(role="worker", name="indico-worker", image="indico-worker:latest", pull="never",
                       command=("run",), uid=1000, gid=1000, binds=(), network=Network(), env=())
    daemon = Daemon("site.yaml", Site(path="site.yaml", name="t", containers=(worker,)), engine=object())
    healthy, broken = Recording(), Broken()
    daemon.observers = [broken, healthy]
    daemon._log([Event("info", "container_started", None, {"role": "worker"})])
    daemon._log([Event("info", "container_exited", None, {"role": "worker"})])
    assert daemon.observers == [healthy]
    assert healthy.seen == ["container_started", "container_exited"]
    out = capsys.readouterr().out
    assert out.count("observer_failed") == 1 and "ZeroDivisionError" in out
    daemon.executor.shutdown(wait=False)
