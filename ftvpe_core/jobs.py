"""Fine-tuning jobs: one run from dataset to stored adapter, reporting progress through the run store.

``submit`` queues a run in the store; ``execute`` trains a run that a process has claimed (a job process
from ``worker``, or the CLI's foreground ``run_finetune``). Both write settings, progress, samples and
the adapter to the store and mark the run complete last. A run keeps a checkpoint in its folder while it
trains; ``resume`` queues an interrupted, failed or cancelled run again and ``execute`` continues it from
there. Nothing here knows about pages. ``execute`` runs inside the process that claimed the run (a job
process, or the CLI in the foreground, which records its own process id), on the model's compute thread.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile
from collections.abc import Callable

from ftvpe_core import FtvpeError, adapters, datasets, evaluate, finetune, models
from ftvpe_core import settings as settings_module
from ftvpe_core.runs import Run, RunStore

PROBES = 3
"""How many validation prompts are answered at each evaluation ("watch it learn")."""


def label_accuracy(loaded: models.LoadedModel, data: datasets.Dataset) -> float:
    """Share of the test split whose greedy answer names the right label and no other (batched)."""
    task = evaluate.Task(data.name, data.title, "accuracy", data.splits["test"], labels=data.labels)
    return evaluate.run_arm(loaded, task, "tuned", "Fine-tuned").score


METRICS_FILE = "metrics.json"
"""Settings, summary and curves of a finished run, written beside its adapter."""
DATASET_FILE = "dataset.json"
"""An uploaded dataset's splits, saved in its run's folder when the run is queued."""


def submit(
    data: str | datasets.Dataset,
    settings: finetune.TrainSettings,
    model_name: str | None = None,
    device: str | None = None,
    store: RunStore | None = None,
    preset: str = "",
) -> str:
    """Queue a fine-tuning run and return its id; a job process (``worker``) picks it up.

    Args:
        data: a built-in dataset's name, a JSONL/CSV file, or a parsed upload (saved with the run, so
            the job trains on exactly what the user saw).
        settings: how to train.
        model_name: the base model (None: the default one).
        device: where to train ('cpu', 'cuda', ...; None: the best one here).
        preset: the preset the settings were chosen from; recorded only when they still equal it (a preset
            whose knobs were changed is recorded as 'custom').
    """
    store = store or RunStore()
    dataset = datasets.load(data) if isinstance(data, str) else data
    if not dataset.splits.get("train"):
        raise FtvpeError(f"The dataset '{dataset.name}' has no training examples.")
    builtin = isinstance(data, str) and datasets.is_builtin(data)
    record = {
        **settings.to_dict(),
        "model": model_name or settings_module.default_model(),
        "preset": finetune.preset_of(settings, preset),
        "dataset_title": dataset.title,
        "dataset_source": "builtin" if builtin else "upload",
    }
    run_id = store.create("finetune", dataset.name, record, device or settings_module.pick_device())
    if not builtin:
        try:
            path = store.artifact_dir(run_id) / DATASET_FILE
            path.write_text(json.dumps(dataset_dict(dataset)), encoding="utf-8")
        except OSError as e:
            store.fail(run_id, f"The dataset could not be saved with the run: {e}")
            raise FtvpeError(f"The dataset could not be saved with the run: {e}") from e
    return run_id


def dataset_dict(dataset: datasets.Dataset) -> dict:
    """A dataset as JSON-ready data (``dataset_from_dict`` reads it back)."""
    d = dataclasses.asdict(dataset)
    d["splits"] = {name: [e.to_dict() for e in examples] for name, examples in dataset.splits.items()}
    return d


def dataset_from_dict(d: dict) -> datasets.Dataset:
    """The dataset ``dataset_dict`` wrote."""
    d = dict(d)
    d["splits"] = {name: [datasets.Example(**e) for e in rows] for name, rows in d["splits"].items()}
    return datasets.Dataset(**d)


def run_dataset(store: RunStore, run: Run) -> datasets.Dataset:
    """The dataset a stored run trains on (built-in by name, an upload from the run's folder)."""
    if run.settings.get("dataset_source") != "upload":
        return datasets.load_builtin(run.dataset)
    path = store.artifact_dir(run.id) / DATASET_FILE
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FtvpeError(f"Run '{run.id}' lost its uploaded dataset ({path}): {e}") from e
    return dataset_from_dict(d)


def train_settings(run: Run) -> finetune.TrainSettings:
    """The TrainSettings a stored run was queued with."""
    names = {f.name for f in dataclasses.fields(finetune.TrainSettings)}
    return finetune.TrainSettings(**{k: v for k, v in run.settings.items() if k in names})


def execute(
    store: RunStore,
    run_id: str,
    on_event: Callable[[dict], None] | None = None,
    measure_accuracy: bool = True,
    interrupted: Callable[[], bool] | None = None,
) -> dict:
    """Train a run already marked running (``RunStore.claim`` or ``start``) and store its adapter.

    Progress, samples and the summary go to the store; the 'complete' mark is written last. For label
    datasets it also measures test accuracy of the base and the tuned model. ``interrupted`` is polled
    with the user's cancel request: when it says True the run stops and is marked interrupted.

    Returns:
        the summary, with ``run_id`` and ``status``.
    """
    run = store.get(run_id)
    try:
        data = run_dataset(store, run)
        settings = train_settings(run)
        store.set_progress(run_id, 0.0, "Loading the model and the data")
        # Training needs float weights; this process owns the model it trains.
        loaded = models.load(run.settings.get("model"), device=run.device, weight_format=adapters.WEIGHT_FORMAT)

        def progress(event: dict) -> None:
            values = {k: event[k] for k in ("train_loss", "val_loss", "lr", "tokens_seen", "eta_s") if k in event}
            values["total_steps"] = event["total_steps"]
            store.log_metrics(run_id, event["step"], **{k: v for k, v in values.items() if v is not None})
            for probe, answer in event.get("samples") or []:
                store.log_sample(run_id, event["step"], str(probe), answer)
            if on_event:
                on_event(event)

        def should_stop() -> bool:
            return store.cancel_requested(run_id) or (interrupted is not None and interrupted())

        checkpoint = store.artifact_dir(run_id) / finetune.CHECKPOINT_FILE
        resume_from = checkpoint if checkpoint.is_file() else None
        if resume_from is not None:
            step = finetune.checkpoint_step(resume_from)
            if step is None:
                raise FtvpeError(f"Run '{run_id}' cannot resume: its checkpoint {checkpoint} is unreadable.")
            store.trim(run_id, step)  # the curves go on from the checkpoint; later points come again
            store.set_progress(run_id, 0.0, f"Resuming from step {step}")
        probes = [e.prompt for e in data.splits["validation"][:PROBES]]
        result = models.compute(
            finetune.train,
            loaded.model,
            loaded.tokenizer,
            data.splits["train"],
            data.splits["validation"],
            settings,
            progress,
            should_stop,
            probes,
            loaded.device,
            checkpoint,
            resume_from,
        )
        if result.status == "cancelled":
            if interrupted is not None and interrupted():
                store.interrupt(run_id)
                return {"run_id": run_id, **result.summary(), "status": "interrupted"}
            store.mark_cancelled(run_id)
            return {"run_id": run_id, **result.summary()}
        adapters.save(result.peft_model, store.artifact_dir(run_id))
        trainable, total = finetune.trainable_parameters(result.peft_model)
        summary = {
            "run_id": run_id,
            "dataset": data.name,
            **result.summary(),
            "trainable_parameters": trainable,
            "total_parameters": total,
        }
        if measure_accuracy and data.task == "label" and data.splits.get("test"):
            store.set_progress(run_id, 1.0, "Training done; measuring the base and tuned models on the test split")
            if on_event:
                on_event({"phase": "accuracy"})
            tuned = dataclasses.replace(loaded, model=result.peft_model)
            summary["test_accuracy_tuned"] = label_accuracy(tuned, data)
            with result.peft_model.disable_adapter():
                summary["test_accuracy_base"] = label_accuracy(tuned, data)
        # Beside the adapter, what it came from: settings, summary and curves (the store keeps them too).
        record = {"settings": run.settings, "summary": summary, "metrics": store.metrics(run_id)}
        (store.artifact_dir(run_id) / METRICS_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
        store.set_progress(run_id, 1.0, "Complete")
        store.finish(run_id, summary)
        checkpoint.unlink(missing_ok=True)  # the adapter is stored; the optimizer's state is no longer needed
        return {**summary, "status": "complete"}
    except BaseException as e:
        if store.get(run_id).status in ("queued", "running"):
            store.fail(run_id, f"{type(e).__name__}: {e}" if not isinstance(e, FtvpeError) else str(e))
        raise


def run_finetune(
    dataset: str | datasets.Dataset,
    settings: finetune.TrainSettings,
    model_name: str | None = None,
    store: RunStore | None = None,
    on_event: Callable[[dict], None] | None = None,
    measure_accuracy: bool = True,
    preset: str = "",
) -> dict:
    """Queue a run and train it here, in the foreground (the CLI's ``finetune``); returns its summary."""
    store = store or RunStore()
    run_id = submit(dataset, settings, model_name, store=store, preset=preset)
    store.start(run_id, os.getpid(), store.get(run_id).device)  # submit resolved it
    return execute(store, run_id, on_event, measure_accuracy)


def resume_step(store: RunStore, run: Run) -> int | None:
    """The step an ended fine-tuning run can resume from, or None when it cannot (no checkpoint, active,
    complete)."""
    if run.kind != "finetune" or run.status not in ("interrupted", "failed", "cancelled"):
        return None
    return finetune.checkpoint_step(store.artifact_dir(run.id) / finetune.CHECKPOINT_FILE)


def resume(store: RunStore, run_id: str) -> int:
    """Queue an interrupted, failed or cancelled run to continue from its checkpoint; returns its step.

    A job process (``worker``) picks it up like any queued run; its curves continue where they stopped."""
    run = store.get(run_id)
    if run.kind != "finetune":
        raise FtvpeError(f"Run '{run_id}' is a {run.kind} run; only fine-tuning runs resume.")
    if run.status not in ("interrupted", "failed", "cancelled"):
        raise FtvpeError(f"Run '{run_id}' is {run.status}; only an interrupted, failed or cancelled run resumes.")
    step = resume_step(store, run)
    if step is None:
        every = run.settings.get("eval_every", "?")
        raise FtvpeError(
            f"Run '{run_id}' has no checkpoint to resume from: it stopped before its first evaluation "
            f"(step {every}). Launch it again instead."
        )
    store.requeue(run_id, f"Queued to resume from step {step}")
    return step


def resume_finetune(
    run_id: str,
    store: RunStore | None = None,
    on_event: Callable[[dict], None] | None = None,
    measure_accuracy: bool = True,
) -> dict:
    """Resume a run here, in the foreground (the CLI's ``finetune --resume``); returns its summary."""
    store = store or RunStore()
    resume(store, run_id)
    store.start(run_id, os.getpid(), store.get(run_id).device)
    return execute(store, run_id, on_event, measure_accuracy)


def adapter_zip(store: RunStore, run_id: str) -> bytes:
    """A zip of a complete run's adapter (safetensors + config) and its summary, for download."""
    run = store.get(run_id)
    if run.status != "complete":
        raise FtvpeError(f"Run '{run_id}' is {run.status}; only a complete run has an adapter to download.")
    folder = store.artifact_dir(run_id)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name in (adapters.WEIGHTS_FILE, adapters.CONFIG_FILE):
            if not (folder / name).is_file():
                raise FtvpeError(f"Run '{run_id}' is missing {name} in {folder}.")
            z.write(folder / name, f"{run_id}/{name}")
        z.writestr(f"{run_id}/run.json", json.dumps(dataclasses.asdict(run), indent=2, sort_keys=True))
        if (folder / METRICS_FILE).is_file():
            z.write(folder / METRICS_FILE, f"{run_id}/{METRICS_FILE}")
    return buffer.getvalue()
