"""The CLI's runs in the foreground: queue a run, then follow it to its end through the configured runner (here, or
on the Ray cluster when ``FTVPE_RAY_ADDRESS`` is set), printing its progress; the same run a page queues, so the
pages, the CLI and the benches see it in the store alike. Each helper names the kind it queues and passes that
kind's options; the runner does not know them.
"""

from __future__ import annotations

from collections.abc import Callable

from ftvpe_core.jobs import runners
from ftvpe_core.store.runs import RunStore
from ftvpe_core.studies import compare as compare_module
from ftvpe_core.tasks import datasets
from ftvpe_core.teaching import challenges
from ftvpe_core.training import finetune as finetune_module
from ftvpe_core.training import tuning


def _training_events(on_event: Callable[[dict], None] | None) -> Callable[[dict], None] | None:
    """The events a fine-tune's follower is shown: its steps and the accuracy phase (not every message)."""
    if on_event is None:
        return None
    return lambda event: on_event(event) if "step" in event or event.get("phase") == "accuracy" else None


def finetune(
    dataset: str | datasets.Dataset,
    settings: finetune_module.TrainSettings,
    model_name: str | None = None,
    store: RunStore | None = None,
    on_event: Callable[[dict], None] | None = None,
    measure_accuracy: bool = True,
    preset: str = "",
) -> dict:
    """Queue a fine-tuning run and train it in the foreground (the CLI's ``finetune``); returns its summary.

    Args:
        on_event: sees each training step's event (losses, ETA, probe answers) and the accuracy phase.
        measure_accuracy: measure the base and tuned models on a label dataset's test split at the end.
    """
    store = store or RunStore()
    run_id = tuning.submit(dataset, settings, model_name, store=store, preset=preset, learner="cli")
    return runners.current().foreground(store, run_id, _training_events(on_event), measure_accuracy=measure_accuracy)


def resume(
    run_id: str,
    store: RunStore | None = None,
    on_event: Callable[[dict], None] | None = None,
    measure_accuracy: bool = True,
) -> dict:
    """Resume an interrupted, failed or cancelled run from its checkpoint in the foreground (``finetune --resume``);
    returns its summary."""
    store = store or RunStore()
    tuning.resume(store, run_id)
    return runners.current().foreground(store, run_id, _training_events(on_event), measure_accuracy=measure_accuracy)


def compare(
    settings: compare_module.CompareSettings,
    store: RunStore | None = None,
    on_progress: Callable[[float, str], None] | None = None,
) -> dict:
    """Queue a comparison and run it in the foreground (the CLI's ``compare``); returns the result with its
    ``run_id``.

    Args:
        on_progress: (fraction done, what it is doing) at each phase.
    """
    store = store or RunStore()
    run_id = compare_module.submit(settings, store, learner="cli")
    on_event = (lambda e: on_progress(e["fraction"], e["message"]) if "message" in e else None) if on_progress else None
    runners.current().foreground(store, run_id, on_event)
    return {"run_id": run_id, **compare_module.load_result(store, run_id)}


def challenge_submission(store: RunStore, submission_id: int) -> dict:
    """Train (a fine-tune) and score a class challenge's submission in the foreground (the CLI's ``challenge
    submit``); returns the score run's summary. A fine-tune that fails is scored as failed, with its reason."""
    train_run, score_run = challenges.runs_of(store, submission_id)
    if train_run:
        try:
            runners.current().foreground(store, train_run, measure_accuracy=False)
        except Exception:  # noqa: BLE001 - the run is marked failed; scoring then says so
            pass
    return runners.current().foreground(store, score_run)
