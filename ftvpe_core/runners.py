"""Job runners: what starts queued fine-tuning and comparison runs, and where they train. One interface, two runners,
chosen by configuration (``settings.ray_address``):

- ``local`` (the default): job processes on this machine (``worker``), one run at a time per device.
- ``ray`` (``FTVPE_RAY_ADDRESS`` set): one dispatcher job process on this machine submits queued runs to a Ray
  cluster, as many at once as it has free slots, and writes what they send back to the store (``ray_runner``).

Both take queued runs in the store's fair order (``schedule``) and write the store from this machine only. The
pages and the CLI call ``current()`` and never a runner's module. This module imports neither ray nor torch.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

from ftvpe_core import schedule, settings, worker
from ftvpe_core.runs import Run, RunStore

PENDING_NODE = "Ray: waiting for a node"
"""The node of a run sent to a Ray cluster until the task says where it landed."""
CLUSTER_FILE = "cluster.json"
"""The Ray dispatcher's last word on the cluster (nodes, slots, or why it cannot be reached), in the data folder."""


@dataclass
class Slots:
    """What the runner has: runs queued and running, slots (runs that can train at once) and free ones."""

    runner: str
    """'local' or 'ray'."""
    queued: int
    running: int
    slots: int
    """Runs that train at once: one per device on this machine; the cluster's (last known) on Ray."""
    where: str
    """Where runs train, in words."""
    nodes: list[str] = field(default_factory=list)
    error: str | None = None
    """Why runs cannot start now (an unreachable cluster), or None."""

    @property
    def free(self) -> int:
        return max(0, self.slots - self.running)


RAY_KINDS = ("finetune", "compare")
"""The kinds of run a Ray cluster trains; the others (a class challenge's scoring) stay with this machine's job
processes, which then take only those (``local_kinds``)."""


def local_kinds() -> tuple[str, ...] | None:
    """The kinds of run this machine's job processes take: all (None), or with a Ray cluster configured, the
    kinds the cluster does not train."""
    from ftvpe_core import runs

    return tuple(k for k in runs.KINDS if k not in RAY_KINDS) if settings.ray_address() else None


class LocalRunner:
    """Job processes on this machine, one run at a time per device (``worker``)."""

    name = "local"

    def ensure(self, store: RunStore, device: str) -> None:
        """Start what serves runs queued for ``device``, unless it runs already."""
        worker.ensure_worker(store, device)

    def tick(self, store: RunStore) -> None:
        """Mark runs whose process died as failed, and make sure queued runs have a job process."""
        worker.reap(store)
        for device in {r.device for r in store.queue() if r.device}:
            self.ensure(store, device)

    def slots(self, store: RunStore) -> Slots:
        active = [r for r in store.list() if r.active]
        devices = {r.device for r in active if r.device} or {"cpu"}
        running = sum(r.status == "running" for r in active)
        return Slots(
            self.name,
            len(active) - running,
            running,
            len(devices),
            f"this machine ({settings.node_name()}), one run at a time per device",
        )

    def foreground(self, store: RunStore, run_id: str, on_event=None, on_progress=None, measure_accuracy=True) -> dict:
        """Train a queued run here and now (the CLI); returns its summary."""
        from ftvpe_core import compare, jobs

        run = store.get(run_id)
        store.start(run_id, os.getpid(), run.device)
        if run.kind == "compare":
            return compare.execute(store, run_id, on_progress=on_progress or (lambda f, m: None))
        return jobs.execute(store, run_id, on_event, measure_accuracy)


class RayRunner:
    """Queued runs trained on the Ray cluster at ``address`` by a dispatcher job process here (``ray_runner``)."""

    name = "ray"

    def __init__(self, address: str) -> None:
        self.address = address

    def ensure(self, store: RunStore, device: str | None = None) -> None:
        """Start the dispatcher when runs wait and none serves them (one for the whole cluster)."""
        worker.ensure_worker(store, worker.RAY)

    def tick(self, store: RunStore) -> None:
        worker.reap(store)
        self.ensure(store)
        for run in store.queue():  # a challenge's scoring runs here, in a job process of its device
            if run.kind not in RAY_KINDS and run.device:
                worker.ensure_worker(store, run.device)

    def slots(self, store: RunStore) -> Slots:
        active = [r for r in store.list() if r.active]
        running = sum(r.status == "running" for r in active)
        status = read_cluster(store)
        if status.get("address") != self.address:  # written for another cluster: nothing known about this one
            status = {}
        where = f"the Ray cluster at {self.address}"
        return Slots(
            self.name,
            len(active) - running,
            running,
            int(status.get("slots", 0)),
            where,
            list(status.get("nodes", [])),
            status.get("error"),
        )

    def foreground(self, store: RunStore, run_id: str, on_event=None, on_progress=None, measure_accuracy=True) -> dict:
        """Train a queued run on the cluster, dispatched from here (the CLI), and wait for it; returns its summary."""
        from ftvpe_core import ray_runner

        return ray_runner.foreground(store, self.address, run_id, on_event, on_progress, measure_accuracy)


def current() -> LocalRunner | RayRunner:
    """The runner configured now: Ray when ``FTVPE_RAY_ADDRESS`` is set, else job processes on this machine."""
    address = settings.ray_address()
    return RayRunner(address) if address else LocalRunner()


def read_cluster(store: RunStore) -> dict:
    """What the Ray dispatcher last wrote about the cluster ({} before it has)."""
    try:
        return json.loads((store.home / CLUSTER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_cluster(store: RunStore, status: dict) -> None:
    """Replace the cluster record at once (the pages read it while the dispatcher writes)."""
    path = store.home / CLUSTER_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status), encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class QueuePlace:
    """A queued run's place: its position (1 = next), of how many, and about when it starts."""

    position: int
    of: int
    starts_in_s: float


def queue_place(store: RunStore, run: Run, slots: Slots) -> QueuePlace | None:
    """Where a queued run stands in its queue and about when it starts; None when it is not queued."""
    if run.status != "queued":
        return None
    queue = store.queue(None if slots.runner == "ray" else run.device)
    ids = [r.id for r in queue]
    if run.id not in ids:
        return None
    finished = [r for r in store.list(run.kind) if r.status == "complete" and r.started and r.finished][:10]
    typical = schedule.typical_run_s([r.finished - r.started for r in finished])
    running = [r for r in store.list() if r.status == "running" and (slots.runner == "ray" or r.device == run.device)]
    left = [_left_s(store, r, typical) for r in running]
    return QueuePlace(
        ids.index(run.id) + 1,
        len(ids),
        schedule.start_estimate(
            ids.index(run.id) + 1, max(1, slots.slots if slots.runner == "ray" else 1), left, typical
        ),
    )


def _left_s(store: RunStore, run: Run, typical: float) -> float:
    eta = store.metrics(run.id).get("eta_s") if run.kind == "finetune" else None
    if eta:
        return eta[-1][1]
    return typical - (time.time() - (run.started or time.time()))
