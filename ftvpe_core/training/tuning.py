"""Fine-tuning jobs: one run from dataset to stored adapter, reporting progress through the run store.

The 'finetune' kind of run (``jobs.kinds``). ``submit`` queues a run in the store; ``execute`` trains a run that a
process has claimed (a job process from ``worker``, or the CLI's foreground ``jobs.foreground.finetune``). Both write settings, progress, samples and
the adapter to the store and mark the run complete last. A run keeps a checkpoint in its folder while it
trains; ``resume`` queues an interrupted, failed or cancelled run again and ``execute`` continues it from
there. Nothing here knows about pages. ``execute`` runs inside the process that claimed the run (a job
process, or the CLI in the foreground, which records its own process id), on the model's compute thread.

A run splits in two for the Ray runner (``ray_runner``): ``pack`` reads what a node needs from the store here,
``on_node`` trains there (``train_run`` needs the model and no store), and ``store_result`` writes what came back
(``complete``, ``stopped``) on the app's machine; ``execute`` is all of it in one process.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

from ftvpe_core import FtvpeError
from ftvpe_core import settings as settings_module
from ftvpe_core.model import adapters, models
from ftvpe_core.store.runs import Run, RunStore
from ftvpe_core.tasks import datasets, evaluate
from ftvpe_core.training import finetune

KIND = "finetune"
"""The runs this module queues and executes (``jobs.kinds``)."""
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
    learner: str | None = None,
    probes: int = PROBES,
) -> str:
    """Queue a fine-tuning run and return its id; the runner (``runners``) starts it when its turn comes.

    Args:
        data: a built-in dataset's name, a JSONL/CSV file, or a parsed upload (saved with the run, so
            the job trains on exactly what the user saw).
        settings: how to train.
        model_name: the base model (None: the default one).
        device: where to train ('cpu', 'cuda', ...; None: the best one here).
        preset: the preset the settings were chosen from; recorded only when they still equal it (a preset
            whose knobs were changed is recorded as 'custom').
        learner: who queued it (a browser session; 'cli'): queued runs take turns by learner (``schedule``).
        probes: validation prompts answered at each evaluation, for the page's sample answers (0: none, where
            nobody reads them: a class challenge's fine-tune, whose answers would cost seconds of its turn).
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
        "probes": max(0, min(int(probes), PROBES)),
    }
    files = {} if builtin else {DATASET_FILE: json.dumps(datasets.to_dict(dataset)).encode("utf-8")}
    try:
        return store.create(KIND, dataset.name, record, device, learner, files=files)
    except OSError as e:
        raise FtvpeError(f"The dataset could not be saved with the run: {e}") from e


def run_dataset(store: RunStore, run: Run) -> datasets.Dataset:
    """The dataset a stored run trains on (built-in by name, an upload from the run's folder)."""
    if run.settings.get("dataset_source") != "upload":
        return datasets.load_builtin(run.dataset)
    path = store.artifact_dir(run.id) / DATASET_FILE
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FtvpeError(f"Run '{run.id}' lost its uploaded dataset ({path}): {e}") from e
    return datasets.from_dict(d)


def train_settings(run: Run | dict) -> finetune.TrainSettings:
    """The TrainSettings a stored run (or its settings record) was queued with."""
    record = run.settings if isinstance(run, Run) else run
    names = {f.name for f in dataclasses.fields(finetune.TrainSettings)}
    return finetune.TrainSettings(**{k: v for k, v in record.items() if k in names})


def resume_point(store: RunStore, run_id: str) -> Path | None:
    """The checkpoint a claimed run goes on from (None: it starts afresh); its curves are trimmed to that step,
    because the steps after it come again."""
    checkpoint = store.artifact_dir(run_id) / finetune.CHECKPOINT_FILE
    if not checkpoint.is_file():
        store.trim(run_id, 0)  # queued again before its first checkpoint (a restart): it logs its steps afresh
        return None
    step = finetune.checkpoint_step(checkpoint)
    if step is None:
        raise FtvpeError(f"Run '{run_id}' cannot resume: its checkpoint {checkpoint} is unreadable.")
    store.trim(run_id, step)
    store.set_progress(run_id, 0.0, f"Resuming from step {step}")
    return checkpoint


def train_run(
    run_settings: dict,
    data: datasets.Dataset,
    device: str,
    report: Callable[[dict], None],
    should_stop: Callable[[], bool],
    checkpoint: Path,
    resume_from: Path | None = None,
    measure_accuracy: bool = True,
) -> tuple[finetune.TrainResult, dict | None]:
    """Load the base model, train, and measure: the part of a run that needs the model and no store, so it runs
    in a job process or on a Ray node alike. Events go to ``report`` (see ``record``).

    Returns:
        the training result and the run's summary (None when it was stopped before the end).
    """
    report({"fraction": 0.0, "message": "Loading the model and the data"})
    # Training needs float weights; this process owns the model it trains.
    loaded = models.load(run_settings.get("model"), device=device, weight_format=adapters.WEIGHT_FORMAT)
    settings = train_settings(run_settings)
    probes = [e.prompt for e in data.splits["validation"][: run_settings.get("probes", PROBES)]]
    result = models.compute(
        finetune.train,
        loaded.model,
        loaded.tokenizer,
        data.splits["train"],
        data.splits["validation"],
        settings,
        report,
        should_stop,
        probes,
        loaded.device,
        checkpoint,
        resume_from,
    )
    if result.status == "cancelled":
        return result, None
    trainable, total = finetune.trainable_parameters(result.peft_model)
    summary = {
        "dataset": data.name,
        **result.summary(),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "load_seconds": loaded.load_seconds,  # the breakdown a bench reads: load, then train_seconds
    }
    if measure_accuracy and data.task == "label" and data.splits.get("test"):
        report(
            {
                "phase": "accuracy",
                "fraction": 1.0,
                "message": "Training done; measuring the base and tuned models on the test split",
            }
        )
        tuned = dataclasses.replace(loaded, model=result.peft_model)
        summary["test_accuracy_tuned"] = label_accuracy(tuned, data)
        with result.peft_model.disable_adapter():
            summary["test_accuracy_base"] = label_accuracy(tuned, data)
    return result, summary


def stopped(store: RunStore, run_id: str, interrupted: bool, summary: dict) -> dict:
    """Mark a run that stopped before its end: interrupted (its app stopped) or cancelled (its user asked)."""
    if interrupted:
        store.interrupt(run_id)
        return {"run_id": run_id, **summary, "status": "interrupted"}
    store.mark_cancelled(run_id)
    return {"run_id": run_id, **summary}


def complete(store: RunStore, run_id: str, summary: dict) -> dict:
    """Finish a run whose adapter is in its folder: its record beside the adapter, then the 'complete' mark last."""
    run = store.get(run_id)
    summary = {"run_id": run_id, **summary}
    # Beside the adapter, what it came from: settings, summary and curves (the store keeps them too).
    record_ = {"settings": run.settings, "summary": summary, "metrics": store.metrics(run_id)}
    (store.artifact_dir(run_id) / METRICS_FILE).write_text(json.dumps(record_, indent=1), encoding="utf-8")
    store.set_progress(run_id, 1.0, "Complete")
    store.finish(run_id, summary)
    # The adapter is stored; the optimizer's state is no longer needed.
    (store.artifact_dir(run_id) / finetune.CHECKPOINT_FILE).unlink(missing_ok=True)
    return {**summary, "status": "complete"}


def execute(
    store: RunStore,
    run_id: str,
    interrupted: Callable[[], bool] | None = None,
    on_event: Callable[[dict], None] | None = None,
    measure_accuracy: bool = True,
) -> dict:
    """Train a run already marked running (``RunStore.claim`` or ``start``) here, and store its adapter.

    Progress, samples and the summary go to the store; the 'complete' mark is written last. For label
    datasets it also measures test accuracy of the base and the tuned model. ``interrupted`` is polled
    with the user's cancel request: when it says True the run stops and is marked interrupted.

    Returns:
        the summary, with ``run_id`` and ``status``.
    """
    run = store.get(run_id)
    try:
        data = run_dataset(store, run)

        def report(event: dict) -> None:
            store.record(run_id, event)
            if on_event:
                on_event(event)

        def should_stop() -> bool:
            return store.cancel_requested(run_id) or (interrupted is not None and interrupted())

        resume_from = resume_point(store, run_id)
        checkpoint = store.artifact_dir(run_id) / finetune.CHECKPOINT_FILE
        result, summary = train_run(
            run.settings, data, run.device, report, should_stop, checkpoint, resume_from, measure_accuracy
        )
        if summary is None:
            return stopped(store, run_id, interrupted is not None and interrupted(), result.summary())
        adapters.save(result.peft_model, store.artifact_dir(run_id))
        return complete(store, run_id, summary)
    except BaseException as e:
        store.fail_unless_ended(run_id, e)
        raise


def resume_step(store: RunStore, run: Run) -> int | None:
    """The step an ended fine-tuning run can resume from, or None when it cannot (no checkpoint, active,
    complete)."""
    if run.kind != KIND or run.status not in ("interrupted", "failed", "cancelled"):
        return None
    return finetune.checkpoint_step(store.artifact_dir(run.id) / finetune.CHECKPOINT_FILE)


def resume(store: RunStore, run_id: str) -> int:
    """Queue an interrupted, failed or cancelled run to continue from its checkpoint; returns its step.

    A job process (``worker``) picks it up like any queued run; its curves continue where they stopped."""
    run = store.get(run_id)
    if run.kind != KIND:
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
        # Who queued it stays out: a class challenge's learner id would name its join code.
        record = {k: v for k, v in dataclasses.asdict(run).items() if k not in ("learner", "pid")}
        z.writestr(f"{run_id}/run.json", json.dumps(record, indent=2, sort_keys=True))
        if (folder / METRICS_FILE).is_file():
            z.write(folder / METRICS_FILE, f"{run_id}/{METRICS_FILE}")
    return buffer.getvalue()


# On a Ray cluster (``jobs.kinds``: a kind ``on_ray``)


def pack(store: RunStore, run: Run, options: dict) -> dict:
    """What a node needs to train ``run``: its settings and dataset, and its checkpoint when it resumes."""
    checkpoint = resume_point(store, run.id)
    return {
        "settings": run.settings,
        "dataset": run_dataset(store, run),
        "checkpoint": checkpoint.read_bytes() if checkpoint else None,
        "measure_accuracy": options.get("measure_accuracy", True),
    }


def on_node(job: dict, folder: Path, device: str, send: Callable[[dict], None], should_stop) -> dict:
    """Train the packed run on this node in ``folder``; events (and each new checkpoint, as a file) go to ``send``.

    Returns:
        {'status': 'complete', 'summary', 'files'} with the adapter's files as bytes, or {'status': 'stopped',
        'summary', 'checkpoint'} with the checkpoint to resume from.
    """
    checkpoint = folder / finetune.CHECKPOINT_FILE
    resume_from = None
    if job.get("checkpoint"):
        checkpoint.write_bytes(job["checkpoint"])
        resume_from = checkpoint
    sent = [checkpoint.stat().st_mtime_ns if resume_from else 0]

    def report(event: dict) -> None:
        send(event)
        # train writes its checkpoint after an evaluation's event: send it with the next one.
        if checkpoint.is_file() and checkpoint.stat().st_mtime_ns != sent[0]:
            sent[0] = checkpoint.stat().st_mtime_ns
            send({"file": finetune.CHECKPOINT_FILE, "data": checkpoint.read_bytes()})

    result, summary = train_run(
        job["settings"], job["dataset"], device, report, should_stop, checkpoint, resume_from, job["measure_accuracy"]
    )
    if summary is None:
        saved = checkpoint.read_bytes() if checkpoint.is_file() else None
        return {"status": "stopped", "summary": result.summary(), "checkpoint": saved}
    adapters.save(result.peft_model, folder / "adapter")
    files = {name: (folder / "adapter" / name).read_bytes() for name in (adapters.WEIGHTS_FILE, adapters.CONFIG_FILE)}
    return {"status": "complete", "summary": summary, "files": files}


def store_result(store: RunStore, run_id: str, out: dict, interrupted: bool) -> dict:
    """Write what a node sent back: the adapter and the 'complete' mark, or a stopped run's checkpoint."""
    if out["status"] == "stopped":
        if out.get("checkpoint"):
            store.write_artifact(run_id, finetune.CHECKPOINT_FILE, out["checkpoint"])
        return stopped(store, run_id, interrupted, out["summary"])
    for name, data in out["files"].items():
        store.write_artifact(run_id, name, data)
    return complete(store, run_id, out["summary"])
