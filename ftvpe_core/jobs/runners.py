"""Job runners: what starts queued fine-tuning and comparison runs, and where they train. One interface, two runners,
chosen by configuration (``settings.ray_address``):

- ``local`` (the default): job processes on this machine (``worker``), one per device and lane: the train lane
  takes long runs one at a time, the short lane (a class challenge's scoring) runs beside it.
- ``ray`` (``FTVPE_RAY_ADDRESS`` set): one dispatcher job process on this machine submits the train lane's queued
  runs to a Ray cluster, as many at once as it has free slots, and writes what they send back to the store
  (``ray_runner``); the short lane stays on this machine, so a prompt's score never waits for the cluster.

Both take queued runs in the store's fair order (``schedule``) and write the store from this machine only. While a
class challenge is open the lanes' job processes stay up, warm (``start`` at the app's start, then ``tick``). The
pages, the CLI and the benches call ``current()`` and never a runner's module. This module imports neither ray nor
torch.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from ftvpe_core import FtvpeError, settings
from ftvpe_core.jobs import worker
from ftvpe_core.store import runs, schedule
from ftvpe_core.store.runs import Run, RunStore

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


RAY_KINDS = runs.lane_kinds("train")
"""The kinds of run a Ray cluster trains: the train lane's; the short lane's (a class challenge's scoring) stay
with this machine's job processes, which then take only those (``local_kinds``)."""


def local_kinds(lane: str | None = None) -> tuple[str, ...] | None:
    """The kinds of run this machine's job processes of ``lane`` take (None: of every lane; all kinds is None),
    without the kinds a configured Ray cluster trains."""
    kinds = runs.lane_kinds(lane) if lane else runs.KINDS
    if settings.ray_address():
        return tuple(k for k in kinds if k not in RAY_KINDS)
    return None if lane is None else kinds


_started_stores: set[str] = set()


def _start_once(runner, store: RunStore) -> None:
    if str(store.home) not in _started_stores:
        runner.start(store)


def _recover(store: RunStore) -> list[str]:
    """After a restart: runs cut off by the last stop are marked interrupted, and a class challenge's are queued
    again (its scoring, and the fine-tunes a score waits for), to go on from their checkpoints."""
    _started_stores.add(str(store.home))
    store.recover_interrupted()
    return store.requeue_interrupted(runs.lane_kinds("short"))


def _ensure_lanes(store: RunStore, device: str, warm: bool) -> None:
    for lane in runs.LANES:
        kinds = local_kinds(lane)
        if kinds:
            worker.ensure_worker(store, device, lane, kinds, warm=warm and runs.LANES[lane].warm)


class LocalRunner:
    """Job processes on this machine, one per device and lane (``worker``)."""

    name = "local"

    def start(self, store: RunStore) -> list[str]:
        """What the app does once when it starts (and ``tick`` on its first call): re-queue a class challenge's runs
        that the last stop interrupted, and start the lanes warm while a challenge is open. Returns the ids
        queued again."""
        again = _recover(store)
        self.tick(store)
        return again

    def ensure(self, store: RunStore, device: str) -> None:
        """Start what serves runs queued for ``device`` (each lane's job process), unless it runs already."""
        _ensure_lanes(store, device, warm=False)

    def tick(self, store: RunStore) -> None:
        """Mark runs whose process died as failed, and make sure queued runs have a job process (warm ones while a
        challenge is open)."""
        _start_once(self, store)
        worker.reap(store)
        for device in {r.device for r in store.queue() if r.device}:
            self.ensure(store, device)
        if store.warm_models(worker.warm_idle_s()):
            _ensure_lanes(store, settings.pick_device(), warm=True)

    def slots(self, store: RunStore) -> Slots:
        active = [r for r in store.list() if r.active]
        devices = {r.device for r in active if r.device} or {"cpu"}
        running = sum(r.status == "running" for r in active)
        return Slots(
            self.name,
            len(active) - running,
            running,
            len(devices),
            f"this machine ({settings.node_name()}), one training run at a time per device, a challenge's scoring beside it",
        )

    def foreground(self, store: RunStore, run_id: str, on_event=None, on_progress=None, measure_accuracy=True) -> dict:
        """Train a queued run here and now (the CLI); returns its summary."""
        from ftvpe_core.studies import compare
        from ftvpe_core.training import tuning

        run = store.get(run_id)
        store.start(run_id, os.getpid(), run.device)
        if run.kind == "compare":
            return compare.execute(store, run_id, on_progress=on_progress or (lambda f, m: None))
        return tuning.execute(store, run_id, on_event, measure_accuracy)


class RayRunner:
    """Queued runs trained on the Ray cluster at ``address`` by a dispatcher job process here (``ray_runner``)."""

    name = "ray"

    def __init__(self, address: str) -> None:
        self.address = address

    def start(self, store: RunStore) -> list[str]:
        """As ``LocalRunner.start``: re-queue what the last stop interrupted of a challenge, warm the short lane."""
        again = _recover(store)
        self.tick(store)
        return again

    def ensure(self, store: RunStore, device: str | None = None) -> None:
        """Start the dispatcher when runs wait and none serves them (one for the whole cluster), and this
        machine's short lane for ``device`` when its runs wait."""
        worker.ensure_worker(store, worker.RAY, kinds=RAY_KINDS)
        if device:
            _ensure_lanes(store, device, warm=False)

    def tick(self, store: RunStore) -> None:
        _start_once(self, store)
        worker.reap(store)
        self.ensure(store)
        for device in {r.device for r in store.queue(kinds=local_kinds()) if r.device}:  # the short lane, here
            _ensure_lanes(store, device, warm=False)
        if store.warm_models(worker.warm_idle_s()):
            _ensure_lanes(store, settings.pick_device(), warm=True)

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
        from ftvpe_core.jobs import ray_runner

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
    """Where a queued run stands in its lane's queue and about when it starts; None when it is not queued (or
    waits for another run to end first: a fine-tune's score while it trains).

    A run the Ray cluster trains queues for the cluster's slots; the others for their device's lane here, whose
    job process takes a batch of the lane's runs at once (``runs.Lane.batch``)."""
    if run.status != "queued":
        return None
    lane = runs.KIND_LANES.get(run.kind, "train")
    on_cluster = slots.runner == "ray" and run.kind in RAY_KINDS
    kinds = RAY_KINDS if on_cluster else runs.lane_kinds(lane)
    ids = [r.id for r in store.queue(None if on_cluster else run.device, kinds)]
    if run.id not in ids:
        return None
    finished = [r for r in store.list(run.kind) if r.status == "complete" and r.started and r.finished][:10]
    typical = schedule.typical_run_s([r.finished - r.started for r in finished])
    running = [
        r for r in store.list() if r.status == "running" and r.kind in kinds and (on_cluster or r.device == run.device)
    ]
    position = ids.index(run.id) + 1
    if on_cluster:
        turn, width = position, max(1, slots.slots)
    else:  # a batch of the lane at a time: the runs ahead in this batch start with this one
        batch = runs.LANES[lane].batch
        turn, width = math.ceil(position / batch), 1
        running = running[:1] if running else []
    left = [_left_s(store, r, typical) for r in running]
    return QueuePlace(position, len(ids), schedule.start_estimate(turn, width, left, typical))


def place_words(store: RunStore, run_id: str) -> str:
    """Where a run is, in a few words for a learner: 'queued: 2nd of 5, starts in about 10 s', 'running', ..."""
    run = store.get(run_id)
    if run.status != "queued":
        return run.status
    place = queue_place(store, run, current().slots(store))
    if place is None:
        status = store.get(run_id).status  # taken by its job process meanwhile, or waiting for another run
        return status if status != "queued" else "waiting for the run before it"
    when = "any moment now" if place.starts_in_s < 1 else f"in about {place.starts_in_s:.0f} s"
    return f"queued: {_ordinal(place.position)} of {place.of}, starts {when}"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def wait(store: RunStore, run_ids: Iterable[str], timeout_s: float = 600.0, poll_s: float = 0.25) -> list[Run]:
    """Drive the runner as the app's pages do (``tick`` every ``poll_s``) until none of ``run_ids`` is queued or
    running; returns the runs as they ended. For a bench or a script that plays a class through the core: start
    with ``current().start(store)`` when the challenge opens, submit, then wait for the score runs.

    Raises:
        FtvpeError: some are still unfinished after ``timeout_s``.
    """
    ids, runner = list(run_ids), current()
    deadline = time.monotonic() + timeout_s
    while True:
        runner.tick(store)
        ended = [store.get(run_id) for run_id in ids]
        if not any(r.active for r in ended):
            return ended
        if time.monotonic() > deadline:
            waiting = [r.id for r in ended if r.active]
            raise FtvpeError(f"{len(waiting)} run(s) still unfinished after {timeout_s:.0f} s: {', '.join(waiting)}")
        time.sleep(poll_s)


def _left_s(store: RunStore, run: Run, typical: float) -> float:
    eta = store.metrics(run.id).get("eta_s") if run.kind == "finetune" else None
    if eta:
        return eta[-1][1]
    return typical - (time.time() - (run.started or time.time()))
