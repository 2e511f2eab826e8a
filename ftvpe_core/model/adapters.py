"""LoRA adapters on disk: the two files that make one, the weights it runs on, saving and loading it with peft,
and which adapters this installation has (complete fine-tuning runs in the store, recordings shipped with the app).

Safetensors only: a pickle file offered as an adapter is refused, because loading pickle can run code. This
module does not train (``finetune``) or measure an adapter's weight changes (``weights``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftvpe_core import FtvpeError
from ftvpe_core.store import recordings, runs
from ftvpe_core.store.runs import RunStore

WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
WEIGHT_FORMAT = "float32"
"""The weights a fine-tuned adapter trains and runs on (on a CPU): merged into the base model, it changes every
adapted weight, which q4 or int8 codes cannot hold; float32 keeps a tuned model comparable with its base."""
QUANTIZED = ("q4", "int8")


def weight_format(requested: str | None, device: str) -> str | None:
    """The weight format to merge an adapter into: the one asked for, float32 on a CPU when none is asked
    ('auto' or None; elsewhere None leaves the device's own float default). q4 and int8 are refused."""
    if requested in QUANTIZED:
        raise FtvpeError(f"A fine-tuned adapter runs on float weights; {requested} cannot hold it.")
    if requested not in (None, "auto"):
        return requested
    return WEIGHT_FORMAT if device == "cpu" else None


def files(folder: str | Path) -> tuple[Path, Path]:
    """(weights, config) of an adapter folder (or of its weights file); FtvpeError when it is missing, not
    safetensors, or a pickle file."""
    folder = Path(folder).expanduser()
    if folder.is_file() and folder.name == WEIGHTS_FILE:
        folder = folder.parent
    pickled = [folder] if folder.is_file() and folder.suffix in PICKLE_SUFFIXES else []
    if folder.is_dir() and not (folder / WEIGHTS_FILE).is_file():
        pickled = [p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
    if pickled:
        raise FtvpeError(
            f"{pickled[0]} is a pickle file: it is refused, because loading pickle can run arbitrary code. "
            f"Save the adapter as {WEIGHTS_FILE} (peft's save_pretrained with safe_serialization=True)."
        )
    if not folder.is_dir():
        raise FtvpeError(f"Adapter folder not found: {folder}.")
    weights, config = folder / WEIGHTS_FILE, folder / CONFIG_FILE
    if not weights.is_file():
        raise FtvpeError(f"{folder} holds no {WEIGHTS_FILE}; only safetensors adapters are loaded, for safety.")
    if not config.is_file():
        raise FtvpeError(f"{folder} holds no {CONFIG_FILE}, so it is not a LoRA adapter folder.")
    return weights, config


def exists(folder: str | Path) -> bool:
    """Whether ``folder`` holds an adapter's weights file."""
    return (Path(folder) / WEIGHTS_FILE).is_file()


def save(peft_model: Any, folder: str | Path) -> Path:
    """Write the adapter (weights and config) into ``folder``, safetensors only."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(folder), safe_serialization=True)
    if not exists(folder):
        raise FtvpeError(f"Saving the adapter to {folder} did not produce {WEIGHTS_FILE}.")
    return folder


def load(base_model: Any, folder: str | Path) -> Any:
    """The base model with the adapter in ``folder`` on it, in eval mode (safetensors only).

    ``base_model`` is wrapped in place: pass a model this call may own, never one shared elsewhere.
    """
    from peft import PeftModel

    files(folder)
    model = PeftModel.from_pretrained(base_model, str(folder))
    model.eval()
    return model


def recorded(dataset: str) -> Path | None:
    """The folder of the recorded run's adapter for a built-in dataset, or None where none is shipped."""
    folder = recordings.ADAPTERS_DIR / dataset
    return folder if exists(folder) else None


@dataclass(frozen=True)
class Available:
    """An adapter one can use: a complete run's, or a recording's."""

    folder: Path
    model: str
    """The base model it was trained on ('embedded' for the recordings)."""
    dataset: str
    run_id: str | None
    """The run that trained it; None for a recording."""
    title: str
    """The dataset's title."""
    preset: str
    """The preset its settings came from, or 'custom'."""


def available(store: RunStore, dataset: str | None = None) -> list[Available]:
    """Adapters on this machine (trained on ``dataset``, when given): complete fine-tuning runs, newest first,
    then the recordings shipped with the app."""
    found = []
    for run in store.list("finetune"):
        folder = store.artifact_dir(run.id)
        if runs.is_challenge_run(run.dataset):
            continue  # a class challenge's fine-tune is its learner's: no classmate chats with or compares it
        if run.status == "complete" and (dataset is None or run.dataset == dataset) and exists(folder):
            found.append(
                Available(
                    folder,
                    run.settings.get("model") or "embedded",
                    run.dataset,
                    run.id,
                    run.settings.get("dataset_title", run.dataset),
                    runs.preset_label(run.settings),
                )
            )
    for name in recordings.available():
        folder = recorded(name)
        if folder is not None and (dataset is None or name == dataset):
            found.append(Available(folder, "embedded", name, None, name.replace("_", " "), "quick"))
    return found
