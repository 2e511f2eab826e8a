"""Which weights a LoRA adapter changes, and by how much ("words vs weights").

Prompt engineering changes no weight at all: it only adds tokens to the input. A LoRA adapter adds to each
adapted matrix W an update ΔW = (alpha / r) · B @ A, of shape (out, in) like W and dense, so it touches every
entry of W although it has only r · (out + in) trainable numbers. This module reads an adapter from disk
(``adapter_model.safetensors`` + ``adapter_config.json``, safetensors only: never pickle) and measures ΔW per
decoder layer and projection, against the base weights where they are on disk.

It reads tensors from files; it does not load a model, merge an adapter or train (see ``finetune``), and it
never downloads anything.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftvpe_core import FtvpeError
from ftvpe_core.model import adapters, models

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The linear layers of a Llama-style decoder layer, in the order the figure draws them."""

# base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight (peft drops the adapter name on save;
# a ".default" before ".weight" is accepted too).
_LORA_KEY = re.compile(
    r"^(?P<module>(?:.*\.)?layers\.(?P<layer>\d+)\.(?:\w+\.)*?(?P<proj>\w+))\.lora_(?P<ab>[AB])(?:\.[\w-]+)?\.weight$"
)
_PEFT_PREFIX = "base_model.model."

BaseWeights = Callable[[str], Any] | str | Path | None


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise FtvpeError(f"The adapter config {path} cannot be read: {e}") from None
    if not isinstance(config, dict) or not config.get("r") or not config.get("lora_alpha"):
        raise FtvpeError(f"{path} is not a LoRA adapter config: it has no rank 'r' or 'lora_alpha'.")
    if config.get("use_dora"):
        raise FtvpeError("This adapter uses DoRA, whose weight change is not B @ A; only plain LoRA is measured.")
    return config


def _read_lora(path: Path) -> tuple[dict[str, dict[str, Any]], int]:
    """{module path: {'layer', 'proj', 'A': tensor (r, in), 'B': tensor (out, r)}} and the adapter's parameter
    count."""
    from safetensors import SafetensorError, safe_open

    pairs: dict[str, dict[str, Any]] = {}
    n_params = 0
    try:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                n_params += t.numel()
                m = _LORA_KEY.match(name)
                if m:
                    entry = pairs.setdefault(m["module"], {"layer": int(m["layer"]), "proj": m["proj"]})
                    entry[m["ab"]] = t
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise FtvpeError(f"The adapter weights {path} cannot be read (corrupt or not safetensors): {e}") from None
    if not pairs:
        raise FtvpeError(f"{path} holds no LoRA matrices (lora_A / lora_B) of decoder layers.")
    for module, ab in pairs.items():
        if "A" not in ab or "B" not in ab:
            raise FtvpeError(f"{path} is incomplete: {module} has lora_{'A' if 'A' not in ab else 'B'} missing.")
        if ab["A"].dim() != 2 or ab["B"].dim() != 2 or ab["A"].shape[0] != ab["B"].shape[1]:
            raise FtvpeError(f"{path} is inconsistent: the LoRA matrices of {module} do not multiply.")
    return pairs, n_params


def _scaling(config: dict, module: str, rank: int) -> float:
    alpha = float(config["lora_alpha"])
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.search(rf"(^|\.){re.escape(pattern)}$", module) or re.fullmatch(pattern, module):
            alpha = float(value)
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def _safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError) as e:
            raise FtvpeError(f"The weight index {index} cannot be read: {e}") from None
        return [folder / n for n in names]
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    return sorted(folder.glob("*.safetensors"))


class _FolderWeights:
    """Reads single tensors (and parameter counts) from a model folder's safetensors, never all at once."""

    def __init__(self, folder: str | Path):
        from safetensors import SafetensorError, safe_open

        self.folder = Path(folder).expanduser()
        files = _safetensors_files(self.folder) if self.folder.is_dir() else []
        if not files:
            raise FtvpeError(f"No safetensors weights in {self.folder}; the base weights are read from safetensors.")
        self.where: dict[str, Path] = {}
        self.parameters = 0
        try:
            for path in files:
                with safe_open(str(path), framework="pt") as f:
                    for name in f.keys():
                        self.where[name] = path
                        self.parameters += math.prod(f.get_slice(name).get_shape())
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise FtvpeError(f"The base weights in {self.folder} cannot be read: {e}") from None

    def __call__(self, name: str) -> Any:
        from safetensors import safe_open

        path = self.where.get(name)
        if path is None:
            return None
        with safe_open(str(path), framework="pt") as f:
            return f.get_tensor(name)

    def num_layers(self) -> int | None:
        try:
            return int(json.loads((self.folder / "config.json").read_text())["num_hidden_layers"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


def base_weights_for(model_name: str | None) -> Path | None:
    """The folder of safetensors weights of a model name ('embedded', a folder, a .gguf file, a cached hub id),
    found without loading the model; None when they are not on this machine (nothing is downloaded)."""
    try:
        source = models.resolve(model_name)
    except FtvpeError:
        return None
    if source.kind in ("embedded", "gguf"):
        folder = models.gguf_cache_dir(Path(source.location))
        return folder if models.is_cached(folder) else None
    if source.kind == "folder":
        return Path(source.location) if _safetensors_files(Path(source.location)) else None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for name in ("model.safetensors.index.json", "model.safetensors"):
        found = try_to_load_from_cache(source.location, name)
        if isinstance(found, str):
            return Path(found).parent
    return None


def adapter_changes(
    adapter_folder: str | Path, base_weights: BaseWeights = None, total_parameters: int | None = None
) -> dict:
    """Measure the weight change ΔW = (alpha / r) · B @ A of every adapted matrix of an adapter on disk.

    Args:
        adapter_folder: a folder with ``adapter_model.safetensors`` and ``adapter_config.json``.
        base_weights: the base model's weights, to put each change against ‖W‖: a folder of safetensors
            (``base_weights_for``), or a function from a weight name (``model.layers.0.self_attn.q_proj.weight``)
            to its tensor; None measures only ‖ΔW‖.
        total_parameters: the base model's parameter count, when known otherwise (a run's summary); a
            folder's count is read from its safetensors headers.

    Returns:
        A JSON-safe dict: ``rank``, ``alpha``, ``target_modules``, ``layers`` (decoder layer count),
        ``projections``, ``has_base``, ``matrices`` (one dict per adapted matrix: ``layer``, ``projection``,
        ``shape`` [out, in], ``delta_norm`` ‖ΔW‖_F, ``base_norm`` ‖W‖_F or None, ``relative`` ‖ΔW‖/‖W‖ or
        None, ``entries`` out·in (ΔW is dense: every entry of W changes), ``lora_parameters`` r·(out+in)),
        ``lora_parameters`` (all numbers in the adapter file), ``weights_touched`` (entries of the base
        model the merged adapter changes) and ``total_parameters`` (None when unknown).
    """
    weights_path, config_path = adapters.files(adapter_folder)
    config = _read_config(config_path)
    pairs, n_lora = _read_lora(weights_path)
    reader: Callable[[str], Any] | None
    layers_in_base = None
    if base_weights is None or callable(base_weights):
        reader = base_weights
    else:
        folder_weights = _FolderWeights(base_weights)
        reader, layers_in_base = folder_weights, folder_weights.num_layers()
        total_parameters = total_parameters or folder_weights.parameters
    matrices = [_matrix_change(config, module, ab, reader) for module, ab in pairs.items()]
    matrices.sort(key=lambda r: (r["layer"], _projection_order(r["projection"]), r["projection"]))
    targets = config.get("target_modules") or sorted({r["projection"] for r in matrices})
    if isinstance(targets, str):  # peft also allows a regular expression
        targets = sorted({r["projection"] for r in matrices})
    return {
        "adapter": str(Path(adapter_folder)),
        "base_model": config.get("base_model_name_or_path"),
        "rank": int(config["r"]),
        "alpha": float(config["lora_alpha"]),
        "target_modules": sorted(targets, key=lambda p: (_projection_order(p), p)),
        "projections": list(PROJECTIONS),
        "layers": max(layers_in_base or 0, max(r["layer"] for r in matrices) + 1),
        "has_base": reader is not None,
        "matrices": matrices,
        "lora_parameters": int(n_lora),
        "weights_touched": sum(r["entries"] for r in matrices),
        "total_parameters": int(total_parameters) if total_parameters else None,
    }


def _projection_order(projection: str) -> int:
    return PROJECTIONS.index(projection) if projection in PROJECTIONS else len(PROJECTIONS)


def _matrix_change(config: dict, module: str, ab: dict, reader: Callable[[str], Any] | None) -> dict:
    """One adapted matrix: the size of its change ‖ΔW‖_F and, with the base weights, ‖W‖_F and their ratio."""
    import torch

    a, b = ab["A"].to(torch.float64), ab["B"].to(torch.float64)  # A (r, in), B (out, r)
    rank, (out_f, in_f) = a.shape[0], (b.shape[0], a.shape[1])
    # ‖B A‖_F² = trace(Aᵀ Bᵀ B A) = Σ (BᵀB) ∘ (A Aᵀ): two (r, r) products instead of the (out, in) matrix.
    delta = _scaling(config, module, rank) * math.sqrt(max(float(((b.T @ b) * (a @ a.T)).sum()), 0.0))
    base_norm = None
    if reader is not None:
        name = (module[len(_PEFT_PREFIX) :] if module.startswith(_PEFT_PREFIX) else module) + ".weight"
        w = reader(name)
        if w is None:
            raise FtvpeError(f"The base weights have no {name}: was this adapter trained on another model?")
        if tuple(w.shape) != (out_f, in_f):
            raise FtvpeError(
                f"The base weight {name} has shape {tuple(w.shape)} but the adapter expects {(out_f, in_f)}: "
                "this adapter was trained on another model."
            )
        base_norm = float(torch.linalg.vector_norm(w.to(torch.float64)))
    return {
        "layer": ab["layer"],
        "projection": ab["proj"],
        "shape": [int(out_f), int(in_f)],
        "delta_norm": delta,
        "base_norm": base_norm,
        "relative": delta / base_norm if base_norm else None,
        "entries": int(out_f * in_f),
        "lora_parameters": int(rank * (out_f + in_f)),
    }


def describe(changes: dict) -> str:
    """One or two sentences reading the measured changes: how many matrices, the largest change, the share
    of the model's weights the merged adapter alters, and how many numbers were trained for it."""
    matrices = changes.get("matrices") or []
    if not matrices:
        return "This adapter changes no weight matrix."
    key = "relative" if changes.get("has_base") else "delta_norm"
    top = max(matrices, key=lambda m: m[key] or 0.0)
    size = f"{100 * top['relative']:.2f} % of its norm" if key == "relative" else f"‖ΔW‖ = {top['delta_norm']:.3g}"
    layers = len({m["layer"] for m in matrices})
    text = (
        f"LoRA changed {len(matrices)} matrices ({', '.join(changes['target_modules'])} in {layers} layers); the "
        f"largest change is layer {top['layer']}'s {top['projection']}, by {size}. "
    )
    total = changes.get("total_parameters")
    touched = f"{changes['weights_touched']:,} weights" + (f" of {total:,}" if total else "")
    return text + (
        f"Merged, it alters {touched}, yet only {changes['lora_parameters']:,} numbers were trained. "
        "Prompting changed none."
    )
