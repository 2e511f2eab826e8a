"""Job runners: what starts queued runs (of every kind in ``kinds``), and where they run. One interface, two runners,
chosen by configuration (``settings.ray_address``):

- ``local`` (the default): job processes on this machine (``worker``), one per device and lane: the train lane
  takes long runs one at a time, the short lane (a class challenge's scoring) runs beside it.
- ``ray`` (``FTVPE_RAY_ADDRESS`` set): one dispatcher job process on this machine submits the train lane's queued
  runs to a Ray cluster, as many at once as it has free slots, and writes what they send back to the store
  (``ray_runner``); the short lane stays on this machine, so a prompt's score never waits for the cluster.

Both take queued runs in the store's fair order (``schedule``) and write the store from this machine only. While a
class challenge is open the lanes' job processes stay up, warm (``start`` at the app's start, then ``tick``). The
pages, the CLI and the benches call ``current()`` (and ``serve``, ``wait``, ``place_words``) and never a runner's
module; ``foreground`` runs one queued run to its end from the CLI. This module imports neither ray nor torch.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from ftvpe_core import FtvpeError, settings
from ftvpe_core.jobs import kinds, ray_runner, worker
from ftvpe_core.store import schedule
from ftvpe_core.store.runs import Run, RunStore

PENDING_NODE = ray_runner.PENDING_NODE
"""The node of a run sent to a Ray cluster until the task says where it landed."""


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


_started_stores: set[str] = set()


def _start_once(runner, store: RunStore) -> None:
    if str(store.home) not in _started_stores:
        runner.start(store)


def _recover(store: RunStore) -> list[str]:
    """After a restart: runs cut off by the last stop are marked interrupted, and a class challenge's are queued
    again (its scoring, and the fine-tunes a score waits for), to go on from their checkpoints."""
    _started_stores.add(str(store.home))
    store.recover_interrupted()
    return store.requeue_interrupted(kinds.lane_kinds("short"))


def _ensure_lanes(store: RunStore, device: str, warm: bool) -> None:
    for lane, spec in kinds.LANES.items():
        lane_kinds = kinds.local_kinds(lane)
        if lane_kinds:
            worker.ensure_worker(store, device, lane, lane_kinds, warm=warm and spec.warm)


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

    def foreground(self, store: RunStore, run_id: str, on_event=None, **options) -> dict:
        """Do a queued run here and now (the CLI), with its kind's ``options``; returns its summary."""
        return _here(store, run_id, on_event, options)


def _here(store: RunStore, run_id: str, on_event, options: dict) -> dict:
    run = store.get(run_id)
    store.start(run_id, os.getpid(), run.device)
    return kinds.get(run.kind).execute(store, run_id, **({"on_event": on_event} if on_event else {}), **options)


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
        worker.ensure_worker(store, worker.RAY, kinds=kinds.RAY_KINDS)
        if device:
            _ensure_lanes(store, device, warm=False)

    def tick(self, store: RunStore) -> None:
        _start_once(self, store)
        worker.reap(store)
        self.ensure(store)
        for device in {r.device for r in store.queue(kinds=kinds.local_kinds()) if r.device}:  # the short lane, here
            _ensure_lanes(store, device, warm=False)
        if store.warm_models(worker.warm_idle_s()):
            _ensure_lanes(store, settings.pick_device(), warm=True)

    def slots(self, store: RunStore) -> Slots:
        active = [r for r in store.list() if r.active]
        running = sum(r.status == "running" for r in active)
        status = ray_runner.read_cluster(store)
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

    def foreground(self, store: RunStore, run_id: str, on_event=None, **options) -> dict:
        """Do a queued run on the cluster, dispatched from here (the CLI), and wait for it; a kind the cluster does
        not run is done here. Returns its summary."""
        if kinds.get(store.get(run_id).kind).cluster is None:
            return _here(store, run_id, on_event, options)
        return ray_runner.foreground(store, self.address, run_id, on_event, options)


def current() -> LocalRunner | RayRunner:
    """The runner configured now: Ray when ``FTVPE_RAY_ADDRESS`` is set, else job processes on this machine."""
    address = settings.ray_address()
    return RayRunner(address) if address else LocalRunner()


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
    job process takes a batch of the lane's runs at once (``kinds.Lane.batch``)."""
    if run.status != "queued":
        return None
    lane = kinds.get(run.kind).lane
    on_cluster = slots.runner == "ray" and run.kind in kinds.RAY_KINDS
    queue_kinds = kinds.RAY_KINDS if on_cluster else kinds.lane_kinds(lane)
    ids = [r.id for r in store.queue(None if on_cluster else run.device, queue_kinds)]
    if run.id not in ids:
        return None
    finished = [r for r in store.list(run.kind) if r.status == "complete" and r.started and r.finished][:10]
    typical = schedule.typical_run_s([r.finished - r.started for r in finished])
    running = [
        r
        for r in store.list()
        if r.status == "running" and r.kind in queue_kinds and (on_cluster or r.device == run.device)
    ]
    position = ids.index(run.id) + 1
    if on_cluster:
        turn, width = position, max(1, slots.slots)
    else:  # a batch of the lane at a time: the runs ahead in this batch start with this one
        batch = kinds.LANES[lane].batch
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
    eta = store.metrics(run.id).get("eta_s")  # a training run's own estimate
    if eta:
        return eta[-1][1]
    return typical - (time.time() - (run.started or time.time()))


def serve(store: RunStore, device: str, parent_pid: int | None = None, log=print, lane: str | None = None) -> int:
    """A job process's loop (the CLI's ``worker``): ``worker.serve`` for ``device``'s ``lane``, or the Ray
    dispatcher's for ``worker.RAY``; returns how many runs it took."""
    dispatch = ray_runner.serve if device == worker.RAY else None
    return worker.serve(store, device, parent_pid, log=log, lane=None if dispatch else lane, dispatch=dispatch)
