"""Fine-tuning jobs: one run from dataset to stored adapter, reporting progress through the run store.

``run_finetune`` does the whole job in the calling process (the CLI runs it in the foreground; a job
process started by the pages will call the same function). It writes settings, progress, samples and the
adapter to the store, and marks the run complete last. It knows nothing about pages.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from ftvpe_core import FtvpeError, datasets, finetune, generation, models
from ftvpe_core.runs import RunStore
from ftvpe_core.settings import GenerationSettings

PROBES = 3
"""How many validation prompts are answered at each evaluation ("watch it learn")."""


def load_dataset(name_or_file: str) -> datasets.Dataset:
    """A built-in dataset by name, or a JSONL/CSV file split automatically."""
    if name_or_file in datasets.builtin_names():
        return datasets.load_builtin(name_or_file)
    path = Path(name_or_file)
    if not path.is_file():
        raise FtvpeError(
            f"No dataset '{name_or_file}': use one of {', '.join(datasets.builtin_names())} or a JSONL/CSV file."
        )
    return datasets.parse_upload(path.read_bytes(), path.name)


def label_accuracy(loaded: models.LoadedModel, examples: list[datasets.Example], labels: list[str]) -> float:
    """Share of examples whose greedy answer names the right label (and no other)."""
    settings = GenerationSettings(max_new_tokens=8, repetition_penalty=1.0)
    right = 0
    for example in examples:
        messages = [{"role": "user", "content": example.prompt}]
        answer = generation.generate(loaded, messages, settings).text.lower()
        named = {label for label in labels if label.lower() in answer}
        right += named == {example.response.strip().lower()}
    return right / len(examples) if examples else 0.0


def run_finetune(
    dataset: str,
    settings: finetune.TrainSettings,
    model_name: str | None = None,
    store: RunStore | None = None,
    on_event: Callable[[dict], None] | None = None,
    measure_accuracy: bool = True,
) -> dict:
    """Train a LoRA adapter and store it; returns the run's summary (with ``run_id`` and ``status``).

    For label datasets it also measures test accuracy of the base and the tuned model.
    """
    store = store or RunStore()
    data = load_dataset(dataset)
    run_id = store.create("finetune", data.name, {**settings.to_dict(), "model": model_name or "embedded"})
    try:
        # Training needs float weights; this process owns the model it trains.
        loaded = models.load(model_name, weight_format="float32")
        store.start(run_id, os.getpid(), loaded.device)

        def progress(event: dict) -> None:
            values = {k: event[k] for k in ("train_loss", "val_loss", "lr", "tokens_seen", "eta_s") if k in event}
            store.log_metrics(run_id, event["step"], **{k: v for k, v in values.items() if v is not None})
            for probe, answer in event.get("samples") or []:
                store.log_sample(run_id, event["step"], str(probe), answer)
            if on_event:
                on_event(event)

        probes = [e.prompt for e in data.splits["validation"][:PROBES]]
        result = models.compute(
            finetune.train,
            loaded.model,
            loaded.tokenizer,
            data.splits["train"],
            data.splits["validation"],
            settings,
            progress,
            lambda: store.cancel_requested(run_id),
            probes,
            loaded.device,
        )
        if result.status == "cancelled":
            store.mark_cancelled(run_id)
            return {"run_id": run_id, **result.summary()}
        finetune.save_adapter(result.peft_model, store.artifact_dir(run_id))
        summary = {"run_id": run_id, "dataset": data.name, **result.summary()}
        if measure_accuracy and data.task == "label":
            tuned = dataclasses.replace(loaded, model=result.peft_model)
            test = data.splits["test"]
            summary["test_accuracy_tuned"] = label_accuracy(tuned, test, data.labels)
            with result.peft_model.disable_adapter():
                summary["test_accuracy_base"] = label_accuracy(tuned, test, data.labels)
        store.finish(run_id, summary)
        return {**summary, "status": "complete"}
    except BaseException as e:
        if store.get(run_id).status in ("queued", "running"):
            store.fail(run_id, f"{type(e).__name__}: {e}" if not isinstance(e, FtvpeError) else str(e))
        raise
