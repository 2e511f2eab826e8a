"""The job kinds: the one table that names each kind of run, says which lane of job processes takes it and whether a
Ray cluster may run it, and holds its functions. The worker, the runners and the Ray dispatcher read this table and
never name a kind; adding a kind is its module (a ``submit`` that queues a run of its name, an ``execute``) and one
line in ``KINDS``.

A kind's module has, by these names (looked up when called, so a test can patch them):

- ``execute(store, run_id, interrupted=None, on_event=None, **options)``: do a claimed run here and store its result
  with the 'complete' mark last; ``interrupted`` is polled where the run can stop, ``on_event`` sees each progress
  event the run writes (``RunStore.record``), ``options`` are the kind's own (a foreground caller's).
- ``execute_many(store, run_ids, interrupted=None)``, where the kind does several claimed runs in one pass
  (``together``).
- where a Ray cluster may run it (``on_ray``): ``pack(store, run, options)`` reads what the task needs from the
  store on this machine; ``on_node(job, folder, device, send, should_stop)`` does the run on the node (no store
  there), sending events, and returns ``{'status': 'complete' | 'stopped', ...}``; ``store_result(store, run_id,
  out, interrupted)`` writes what came back (the dispatcher itself marks failures).

This module imports no torch and no ray; the kinds' modules import torch inside their functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from ftvpe_core import FtvpeError, settings
from ftvpe_core.studies import compare
from ftvpe_core.teaching import challenges, scoring
from ftvpe_core.training import tuning


@dataclass(frozen=True)
class Lane:
    """A lane of job processes: each device has one job process per lane, so short work never waits behind long."""

    name: str
    batch: int
    """How many queued runs its job process claims at once (and executes together where the kind can)."""
    threads: int | None
    """Torch threads of its job process (None: torch's default, every core); a short lane beside a training one
    takes one core, so training keeps most of the machine."""
    warm: bool
    """Whether its job process stays up (torch imported, model read) while a class challenge is open, waiting."""
    keeps_model: bool
    """Whether it keeps its loaded models between runs (inference only: training changes the model it loads)."""


LANES = {
    "train": Lane("train", batch=1, threads=None, warm=True, keeps_model=False),
    "short": Lane("short", batch=32, threads=1, warm=True, keeps_model=True),
}
"""The lanes of job processes on a device: 'train' for long runs, 'short' for inference-only work of seconds."""


@dataclass(frozen=True)
class Kind:
    """One kind of run, its module and where it may run."""

    name: str
    lane: str
    """Which lane of job processes takes it (``LANES``)."""
    module: ModuleType
    """Where its functions are (see the module's docstring)."""
    together: bool = False
    """Whether ``module.execute_many`` does several claimed runs in one pass."""
    on_ray: bool = False
    """Whether a Ray cluster may run it (``module.pack``, ``on_node``, ``store_result``); else only this machine."""

    def execute(self, store, run_id: str, **kwargs) -> dict:
        return self.module.execute(store, run_id, **kwargs)

    def execute_many(self, store, run_ids: list[str], **kwargs) -> list[dict]:
        return self.module.execute_many(store, run_ids, **kwargs)

    @property
    def cluster(self) -> ModuleType | None:
        """The module with the kind's Ray parts, or None where it runs only here."""
        return self.module if self.on_ray else None


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(tuning.KIND, "train", tuning, on_ray=True),
        Kind(compare.KIND, "train", compare, on_ray=True),
        Kind(challenges.KIND, "short", scoring, together=True),
    )
}
"""Every kind of run, by name: train an adapter, compare four arms, score a class challenge's submission."""
RAY_KINDS = tuple(name for name, kind in KINDS.items() if kind.on_ray)
"""The kinds a Ray cluster runs when one is configured; the others stay with this machine's job processes."""


def get(name: str) -> Kind:
    """The kind of run called ``name``."""
    try:
        return KINDS[name]
    except KeyError:
        raise FtvpeError(f"Unknown kind of run '{name}': this version knows {', '.join(KINDS)}.") from None


def lane_of(name: str) -> Lane:
    """The lane that takes runs of kind ``name``."""
    return LANES[get(name).lane]


def lane_kinds(lane: str) -> tuple[str, ...]:
    """The kinds of run a lane takes, in KINDS order."""
    if lane not in LANES:
        raise FtvpeError(f"Unknown lane '{lane}': choose from {', '.join(LANES)}.")
    return tuple(name for name, kind in KINDS.items() if kind.lane == lane)


def local_kinds(lane: str | None = None) -> tuple[str, ...] | None:
    """The kinds of run this machine's job processes of ``lane`` take (None: of every lane; all kinds is None),
    without the kinds a configured Ray cluster runs."""
    kinds = lane_kinds(lane) if lane else tuple(KINDS)
    if settings.ray_address():
        return tuple(k for k in kinds if k not in RAY_KINDS)
    return None if lane is None else kinds
