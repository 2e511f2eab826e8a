"""Queue fairness for a class: the order queued runs start in, and when a queued run should start.

Each learner (a browser session, or 'cli') gets a turn: a queued run's turn is the number of runs its learner
already has running plus the number of its learner's runs queued before it; runs start by turn, then oldest
first. Thirty learners pressing Launch therefore start one run each before anybody's second run, and a learner
whose run is training waits behind those who have none. Both runners (local job processes, Ray) claim runs in
this order through ``RunStore.claim``.

This module is pure: runs' facts in, an order or a number of seconds out. It reads no store and starts nothing.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

DEFAULT_RUN_S = 60.0
"""What a run is assumed to take before any run has finished here (the quick demo takes about a minute)."""


@dataclass(frozen=True)
class Waiting:
    """A queued run as the order needs it."""

    id: str
    learner: str | None
    created: float


def fair_order(queued: Iterable[Waiting], running_by_learner: dict[str | None, int]) -> list[str]:
    """The ids of ``queued`` in the order they start: by turn (see the module docstring), then oldest.

    Runs without a learner share one learner (None)."""
    seen: dict[str | None, int] = {}
    keyed = []
    for run in sorted(queued, key=lambda r: (r.created, r.id)):
        turn = running_by_learner.get(run.learner, 0) + seen.get(run.learner, 0)
        seen[run.learner] = seen.get(run.learner, 0) + 1
        keyed.append((turn, run.created, run.id))
    return [run_id for _, _, run_id in sorted(keyed)]


def start_estimate(position: int, slots: int, running_left_s: Sequence[float], run_s: float) -> float:
    """Seconds until the queued run at ``position`` (1 = next) starts.

    Args:
        slots: how many runs train at once (1 per device locally; the cluster's free and busy slots on Ray).
        running_left_s: seconds left of each run training now (its ETA).
        run_s: how long a run typically takes (``typical_run_s``).
    """
    if position < 1 or slots < 1:
        raise ValueError(f"position and slots must be 1 or more, got {position} and {slots}")
    # Each slot frees when its run ends; the runs ahead of us take the earliest free slots in turn.
    free_at = sorted(max(0.0, s) for s in running_left_s)[:slots]
    free_at += [0.0] * (slots - len(free_at))
    heapq.heapify(free_at)
    for _ in range(position - 1):
        heapq.heappush(free_at, heapq.heappop(free_at) + run_s)
    return free_at[0]


def typical_run_s(durations: Sequence[float]) -> float:
    """The median of recent runs' durations in seconds, or DEFAULT_RUN_S when none finished yet."""
    values = sorted(d for d in durations if d > 0)
    if not values:
        return DEFAULT_RUN_S
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
