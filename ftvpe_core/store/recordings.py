"""Recorded quick-demo runs shipped in ``assets/recordings/``: one per built-in dataset, made with our CLI.

A recording is a finished fine-tuning run as ``python -m ftvpe_core runs show ID --json`` prints it (settings,
metrics, probe answers, summary) plus ``recorded_with``; its LoRA adapter, where kept, lies in
``assets/recordings/adapters/<dataset>/`` (safetensors). Pages replay a recording when the machine is too slow or
busy to train live, and always label it as a recording; ``frame`` gives what a live run showed after a given
step, so a replay can play the run back. This module reads recordings; it trains nothing.
"""

from __future__ import annotations

import dataclasses
import json
import re

from ftvpe_core import ASSETS_DIR, FtvpeError
from ftvpe_core.store.runs import Run

RECORDINGS_DIR = ASSETS_DIR / "recordings"
ADAPTERS_DIR = RECORDINGS_DIR / "adapters"


def available() -> list[str]:
    """Datasets with a recording, sorted."""
    return sorted(p.stem for p in RECORDINGS_DIR.glob("*.json"))


def load(dataset: str) -> dict:
    """The recorded run of a built-in dataset (a plain dict, as the CLI printed it)."""
    path = RECORDINGS_DIR / f"{dataset}.json"
    if not path.is_file():
        raise FtvpeError(f"No recorded run for {dataset!r}; recordings exist for: {', '.join(available()) or 'none'}.")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise FtvpeError(f"The recording {path.name} cannot be read: {e}") from e


def describe(recording: dict) -> dict:
    """How a recording was made, from its ``recorded_with`` line: {'command', 'made_on', 'date'}.

    ``recorded_with`` reads "python -m ftvpe_core finetune … (embedded SmolLM2-135M-Instruct, 2-core CPU,
    2026-11-24)": the command, then in brackets the model and machine, and the date last.
    """
    text = str(recording.get("recorded_with") or "").strip()
    command, _, rest = text.partition(" (")
    parts = [p.strip() for p in rest.rstrip(")").split(",") if p.strip()]
    date = parts.pop() if parts and re.fullmatch(r"\d{4}-\d{2}-\d{2}", parts[-1]) else ""
    return {"command": command.strip(), "made_on": ", ".join(parts), "date": date}


def total_steps(recording: dict) -> int:
    """The number of optimizer steps the recorded run took (its last step)."""
    summary = recording.get("summary") or {}
    if isinstance(summary.get("steps"), int):
        return max(summary["steps"], 0)
    train = (recording.get("metrics") or {}).get("train_loss") or []
    return int(max((s for s, _ in train), default=0))


def frame(recording: dict, step: int) -> dict:
    """What a live run showed after ``step`` steps, for replaying a recording step by step.

    Args:
        recording: a recording (``load``).
        step: the step to show; clamped into 0..total steps.

    Returns:
        {'step', 'total_steps', 'fraction' (0-1), 'done' (the last step is reached), 'metrics' (name ->
        [(step, value)] up to ``step``), 'samples' (probe answers logged up to ``step``, in order), 'summary'
        (the run's summary once done, else None)}.
    """
    total = total_steps(recording)
    step = min(max(int(step), 0), total)
    metrics = {
        name: [(int(s), v) for s, v in points if s <= step] for name, points in (recording.get("metrics") or {}).items()
    }
    samples = [s for s in recording.get("samples") or [] if s.get("step", 0) <= step]
    done = step >= total
    return {
        "step": step,
        "total_steps": total,
        "fraction": step / total if total else 1.0,
        "done": done,
        "metrics": {name: points for name, points in metrics.items() if points},
        "samples": samples,
        "summary": (recording.get("summary") or {}) if done else None,
    }


def as_run(recording: dict) -> Run:
    """The recording as a run record (without metrics and samples), for views that draw runs."""
    names = {f.name for f in dataclasses.fields(Run)}
    return Run(**{k: v for k, v in recording.items() if k in names})
