"""LoRA fine-tuning: settings, encoding chat examples for training, the training loop, and adapters on disk.

Training reports its progress through a callback (``on_progress``) and polls ``should_stop`` for
cancellation; it knows nothing about the UI, the job process or the run store. It trains a float model:
layers packed to q4 or int8 are not trainable, so load the model with ``weight_format="float32"``
(the embedded model's CPU default is q4). It is a plain loop, not transformers' ``Trainer``: measured with
``bench/finetune.py`` on 2 CPU cores it trains 1.6-1.7x as many tokens a second as ``Trainer`` with default
arguments (425-470 against 265-275), because it stores the frozen weights in bf16 while it trains, runs the
output head only on the response tokens, and groups examples by length; ``Trainer`` with ``bf16=True``
gains almost nothing here (autocast re-casts every frozen weight at every step). ``Trainer`` also refuses a
model loaded straight from a GGUF file, and the loop keeps every step visible to the progress callback.

``peft.get_peft_model`` and ``PeftModel.from_pretrained`` change the model they are given, in place:
callers pass a model they own (a fresh load or a ``copy.deepcopy``), never one shared with other sessions.

A run can continue where it stopped: with ``checkpoint`` set, ``train`` writes one safetensors file at each
evaluation and when it is stopped (the adapter, AdamW's moments, the best weights so far, the random states;
the loop's counters in the file's metadata), and ``train(resume_from=...)`` carries on from it as if it had
never stopped. Nothing in a checkpoint is pickled.

Over 600 lines because it is one training loop with its settings, presets, evaluations and checkpoints, which a
resumed run must read exactly as the loop wrote them.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ftvpe_core import FtvpeError
from ftvpe_core.store import runs
from ftvpe_core.tasks.datasets import Example

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The linear layers of a Llama-style block that LoRA can adapt."""
STATUSES = ("completed", "early_stopped", "cancelled")
IGNORE = -100
"""Label of a token that the loss skips (prompt and template tokens, padding)."""
MAX_PROBES = 3
PROBE_NEW_TOKENS = 30
MAX_STEPS = 20_000
MAX_EPOCHS = 100


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class TrainSettings:
    """How to fine-tune with LoRA. Every field maps onto one widget of the Fine-Tune Lab and one CLI flag."""

    rank: int = 8
    """LoRA rank r: the width of the small matrices added to each adapted layer (1-256)."""
    alpha: float = 16.0
    """LoRA alpha: the adapter's output is scaled by alpha / rank."""
    dropout: float = 0.05
    """Dropout on the adapter's input during training (0-0.9)."""
    learning_rate: float = 2e-3
    """Peak learning rate of AdamW (1e-6 to 0.1), reached after warmup, then decayed linearly to 0."""
    max_steps: int = 60
    """Optimizer steps to train for (1-20,000); ignored when epochs is above 0."""
    epochs: float = 0.0
    """When above 0, train this many passes over the training set instead of max_steps (at most 100)."""
    batch_size: int = 8
    """Examples per optimizer step (1-256)."""
    max_length: int = 256
    """Most tokens per example (16-4096); longer prompts are cut from the start, keeping the response."""
    warmup_fraction: float = 0.1
    """Share of the steps over which the learning rate rises linearly from 0 (0-0.5)."""
    weight_decay: float = 0.0
    """AdamW weight decay on the adapter weights (0-1)."""
    eval_every: int = 10
    """Measure the validation loss (and answer the probes) every this many steps, and after the last."""
    early_stopping_patience: int = 0
    """Stop after this many evaluations in a row without a better validation loss; 0 turns it off."""
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """Which linear layers get an adapter: a non-empty subset of TARGET_MODULES."""
    max_train_examples: int = 0
    """Train on only the first this many training examples (to show overfitting); 0 uses them all."""
    max_val_examples: int = 0
    """Measure the validation loss on only the first this many examples (faster); 0 uses them all."""
    restore_best: bool = True
    """At the end, put back the adapter weights of the evaluation with the lowest validation loss."""
    bf16: bool = True
    """Compute in bfloat16 autocast where the hardware supports it (weights and updates stay float32)."""
    seed: int = 0
    """Seed for the adapter's initial weights, the batch order and dropout, so a run can be repeated."""

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, str):
            self.target_modules = tuple(m.strip() for m in self.target_modules.split(",") if m.strip())
        else:
            self.target_modules = tuple(self.target_modules)
        for name in ("rank", "max_steps", "batch_size", "max_length", "eval_every", "early_stopping_patience"):
            if not _whole(getattr(self, name)):
                raise FtvpeError(f"{_label(name)} must be a whole number, got {getattr(self, name)!r}.")
        for name in ("max_train_examples", "max_val_examples", "seed"):
            if not _whole(getattr(self, name)):
                raise FtvpeError(f"{_label(name)} must be a whole number, got {getattr(self, name)!r}.")
        for name in ("alpha", "dropout", "learning_rate", "epochs", "warmup_fraction", "weight_decay"):
            if not _number(getattr(self, name)):
                raise FtvpeError(f"{_label(name)} must be a number, got {getattr(self, name)!r}.")
        if not 1 <= self.rank <= 256:
            raise FtvpeError(f"The LoRA rank must be between 1 and 256, got {self.rank}.")
        if not 0 < self.alpha <= 4096:
            raise FtvpeError(f"LoRA alpha must be above 0 (and at most 4096), got {self.alpha}.")
        if not 0.0 <= self.dropout <= 0.9:
            raise FtvpeError(f"LoRA dropout must be between 0 and 0.9, got {self.dropout}.")
        if not 1e-6 <= self.learning_rate <= 0.1:
            raise FtvpeError(f"The learning rate must be between 0.000001 and 0.1, got {self.learning_rate}.")
        if not 0 <= self.epochs <= MAX_EPOCHS:
            raise FtvpeError(f"Epochs must be between 0 (use max steps) and {MAX_EPOCHS}, got {self.epochs}.")
        if self.epochs == 0 and not 1 <= self.max_steps <= MAX_STEPS:
            raise FtvpeError(f"Steps must be between 1 and {MAX_STEPS:,}, got {self.max_steps}.")
        if not 1 <= self.batch_size <= 256:
            raise FtvpeError(f"The batch size must be between 1 and 256, got {self.batch_size}.")
        if not 16 <= self.max_length <= 4096:
            raise FtvpeError(f"The maximum length must be between 16 and 4096 tokens, got {self.max_length}.")
        if not 0.0 <= self.warmup_fraction <= 0.5:
            raise FtvpeError(f"The warmup share must be between 0 and 0.5, got {self.warmup_fraction}.")
        if not 0.0 <= self.weight_decay <= 1.0:
            raise FtvpeError(f"Weight decay must be between 0 and 1, got {self.weight_decay}.")
        if self.eval_every < 1:
            raise FtvpeError(f"Evaluate every must be at least 1 step, got {self.eval_every}.")
        if self.early_stopping_patience < 0:
            raise FtvpeError(f"Early stopping patience must be 0 (off) or more, got {self.early_stopping_patience}.")
        if not self.target_modules:
            raise FtvpeError(f"Pick at least one layer to adapt: {', '.join(TARGET_MODULES)}.")
        unknown = [m for m in self.target_modules if m not in TARGET_MODULES]
        if unknown:
            raise FtvpeError(
                f"Unknown layer{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
                f"choose from {', '.join(TARGET_MODULES)}."
            )
        if self.max_train_examples < 0 or self.max_val_examples < 0:
            raise FtvpeError("Example limits must be 0 (use all) or more.")
        if self.seed < 0:
            raise FtvpeError(f"The seed must be 0 or more, got {self.seed}.")

    def total_steps(self, n_train: int) -> int:
        """Optimizer steps for a training set of ``n_train`` examples (after max_train_examples)."""
        if self.epochs > 0:
            per_epoch = math.ceil(max(n_train, 1) / self.batch_size)
            return max(1, min(MAX_STEPS, math.ceil(self.epochs * per_epoch)))
        return self.max_steps

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d


def _label(name: str) -> str:
    return {"seed": "The seed", "rank": "The LoRA rank", "alpha": "LoRA alpha"}.get(
        name, name.replace("_", " ").capitalize()
    )


@dataclass(frozen=True)
class Preset:
    """A starting point for the Fine-Tune Lab and the CLI: its name on the page, what it does, its settings."""

    label: str
    about: str
    values: dict[str, Any]


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        "Quick demo",
        "40 steps on the attention layers at a high learning rate: about a minute on a "
        "2-core laptop with the embedded model. Enough to teach support triage its four labels.",
        dict(
            rank=8,
            alpha=16.0,
            dropout=0.05,
            learning_rate=2e-3,
            max_steps=40,
            batch_size=8,
            max_length=128,
            eval_every=10,
            target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
        ),
    ),
    "thorough": Preset(
        "Thorough",
        "Three passes over the data on every layer at a gentler learning rate, with early "
        "stopping when the validation loss stops improving. Several minutes on a CPU.",
        dict(
            rank=16,
            alpha=32.0,
            dropout=0.05,
            learning_rate=1e-3,
            epochs=3.0,
            batch_size=8,
            max_length=256,
            eval_every=20,
            early_stopping_patience=3,
            target_modules=TARGET_MODULES,
        ),
    ),
    "overfit": Preset(
        "Overfit on purpose",
        "Only 8 training examples, a big adapter, a very high learning rate and "
        "no early stopping: the training loss drops to almost zero while the validation loss turns "
        "up. The model memorises instead of learning, one of fine-tuning's classic risks.",
        dict(
            rank=32,
            alpha=64.0,
            dropout=0.0,
            learning_rate=5e-3,
            max_steps=150,
            batch_size=4,
            max_length=128,
            warmup_fraction=0.0,
            eval_every=10,
            early_stopping_patience=0,
            max_train_examples=8,
            restore_best=False,
            target_modules=TARGET_MODULES,
        ),
    ),
}
"""Starting points, the one table of them (labels, descriptions, values)."""
CUSTOM = runs.CUSTOM_PRESET
"""The preset name of a run whose settings match no preset (chosen by hand, or a preset's knobs changed)."""


def from_preset(name: str, **overrides: Any) -> TrainSettings:
    """TrainSettings from a preset, with any fields overridden."""
    if name not in PRESETS:
        raise FtvpeError(f"Unknown preset '{name}': choose one of {', '.join(PRESETS)}.")
    return TrainSettings(**{**PRESETS[name].values, **overrides})


def preset_of(settings: TrainSettings, chosen: str | None) -> str:
    """``chosen`` when ``settings`` are exactly that preset's, else CUSTOM (its knobs were edited)."""
    return chosen if chosen in PRESETS and from_preset(chosen) == settings else CUSTOM


preset_label = runs.preset_label


# Data


def _messages(prompt: str, system: str = "") -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


def _end_id(tokenizer: Any) -> int | None:
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id


def encode_example(tokenizer: Any, example: Example, max_length: int) -> dict[str, list[int]]:
    """Token ids and labels of one example through the chat template, for training.

    The prompt (with its system message, if any) is the user's turn and the response the assistant's.
    Labels are IGNORE (-100) on every prompt and template token, so the loss counts only the response and
    its end-of-turn token; template tokens after the end token are dropped. Longer than ``max_length``:
    the prompt loses tokens from its start (its last tokens open the assistant's turn), and a response
    that alone is too long keeps its beginning.

    Returns:
        {"input_ids": [...], "labels": [...]} of equal length, at most ``max_length``.
    """
    messages = _messages(example.prompt, example.system)
    prompt_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full_text = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": example.response}], tokenize=False
    )
    end = _end_id(tokenizer)
    if full_text.startswith(prompt_text):
        response_ids = tokenizer.encode(full_text[len(prompt_text) :], add_special_tokens=False)
        if end is not None and end in response_ids:
            response_ids = response_ids[: response_ids.index(end) + 1]
    else:  # a template that rewrites earlier turns: fall back to the response and the end token
        response_ids = tokenizer.encode(example.response, add_special_tokens=False)
    if end is not None and (not response_ids or response_ids[-1] != end):
        response_ids = response_ids + [end]
    prompt_ids = tokenizer.encode(prompt_text, add_special_tokens=False)
    if len(prompt_ids) + len(response_ids) > max_length:
        keep_prompt = max(max_length - len(response_ids), min(len(prompt_ids), max_length // 2))
        prompt_ids = prompt_ids[len(prompt_ids) - keep_prompt :] if keep_prompt else []
        response_ids = response_ids[: max_length - len(prompt_ids)]
    return {"input_ids": prompt_ids + response_ids, "labels": [IGNORE] * len(prompt_ids) + response_ids}


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random, chunk_batches: int = 16
) -> list[list[int]]:
    """One epoch of batches (lists of indices): shuffled, then sorted by length within chunks of
    ``chunk_batches`` batches, so rows of a batch have similar lengths and little padding, while the
    order stays random across chunks."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * chunk_batches
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i], reverse=True)
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(rows: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, Any]:
    """Pad rows on the right to the longest one: input_ids, attention_mask, labels, each (B, T) long."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# Training


@dataclass
class TrainResult:
    """What a training run produced."""

    status: str
    """'completed', 'early_stopped' or 'cancelled'."""
    steps: int
    """Optimizer steps taken."""
    train_seconds: float
    final_train_loss: float | None
    final_val_loss: float | None
    """Validation loss at the last evaluation (None without validation examples or evaluations)."""
    best_val_loss: float | None
    best_step: int | None
    tokens_seen: int
    """Non-padding tokens fed to the model in training."""
    history: list[dict] = field(default_factory=list)
    """One progress event per step (see ``train``)."""
    peft_model: Any = None
    """The model with its LoRA adapter (a ``peft.PeftModel``), in eval mode."""

    def summary(self) -> dict:
        """Everything but the model and the history, for storing."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("peft_model", "history")}


def bf16_works(device: str, want_bf16: bool) -> bool:
    """Whether to compute in bfloat16: asked for, and the hardware supports it (CUDA, or a CPU with oneDNN bf16)."""
    import torch

    if not want_bf16:
        return False
    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    if device == "cpu" and torch.backends.mkldnn.is_available():
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def _autocast(device: str, bf16: bool):
    """The autocast context for training and evaluation: bfloat16 when ``bf16`` (see ``bf16_works``)."""
    import contextlib

    import torch

    return torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


# Causal LMs whose logits are exactly lm_head(last hidden state): no soft-capping or logit scale, so the
# head can run on the response positions only (``_loss``).
_PLAIN_HEAD = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Phi3ForCausalLM")


def _loss(peft_model: Any, batch: dict) -> Any:
    """Mean cross-entropy over the response tokens, as ``model(**batch).loss`` computes it.

    For the models in _PLAIN_HEAD the output head (vocabulary x hidden, a fifth of a small model's work)
    runs only where a label is set: with short answers after long prompts, that is a few tokens in fifty.
    """
    import torch

    base = peft_model.get_base_model()
    if type(base).__name__ not in _PLAIN_HEAD:
        return peft_model(**batch).loss
    backbone = getattr(base, base.base_model_prefix)
    hidden = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    labels = batch["labels"][:, 1:]  # position t predicts token t + 1
    keep = labels != IGNORE  # (B, T-1)
    logits = base.get_output_embeddings()(hidden[:, :-1][keep])  # (N, vocab) for the N response tokens
    return torch.nn.functional.cross_entropy(logits.float(), labels[keep])


def _check_trainable(model: Any, target_modules: Sequence[str]) -> None:
    import torch

    found = [
        (name, module)
        for name, module in model.named_modules()
        if name.rsplit(".", 1)[-1] in target_modules and not isinstance(module, torch.nn.ModuleDict)
    ]
    if not found:
        raise FtvpeError(f"This model has none of the layers {', '.join(target_modules)} to adapt.")
    bad = [name for name, module in found if type(module) is not torch.nn.Linear]
    if bad:
        raise FtvpeError(
            "This model's layers are quantized (q4 or int8) and cannot be trained: "
            'load it with weight_format="float32" (or bfloat16 on a GPU) to fine-tune.'
        )


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup to 1 over ``warmup`` steps, then linear decay to 0 at ``total`` (step counts from 0)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def _val_loss(model: Any, batches: list[dict], device: str, bf16: bool) -> float:
    """Mean loss per response token over the validation batches."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), _autocast(device, bf16):
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            n = int((batch["labels"][:, 1:] != IGNORE).sum())
            if n:
                total += float(_loss(model, batch)) * n
                count += n
    model.train()
    return total / count if count else float("nan")


def _answer_probes(run: _Run, tokenizer: Any, probes: Sequence[str | Example]) -> list[tuple]:
    """Greedy answers (up to PROBE_NEW_TOKENS tokens) to the first MAX_PROBES probes, adapter on, through the
    generation engine (the one place that decodes tokens), with no repetition penalty."""
    from ftvpe_core.settings import GenerationSettings

    greedy = GenerationSettings(max_new_tokens=PROBE_NEW_TOKENS, repetition_penalty=1.0)
    run.peft_model.eval()
    samples = []
    try:
        for probe in list(probes)[:MAX_PROBES]:
            prompt, system = (probe.prompt, probe.system) if isinstance(probe, Example) else (str(probe), "")
            text = tokenizer.apply_chat_template(_messages(prompt, system), add_generation_prompt=True, tokenize=False)
            ids = tokenizer.encode(text, add_special_tokens=False)
            answer = run.probe_engine(tokenizer).generate(ids, greedy)
            samples.append((prompt, tokenizer.decode(answer.tokens, skip_special_tokens=True).strip()))
    finally:
        run.peft_model.train()
    return samples


CHECKPOINT_FILE = "checkpoint.safetensors"
"""A run's checkpoint, in its folder: written at each evaluation, read by ``train(resume_from=...)``."""
_CHECKPOINT_KEY = "ftvpe_checkpoint"
_CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, tensors: dict[str, Any], state: dict) -> None:
    """Write ``tensors`` and the JSON-able ``state`` into one safetensors file, atomically: a crash while
    writing leaves the previous checkpoint whole."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    save_file(flat, str(tmp), metadata={_CHECKPOINT_KEY: json.dumps({"version": _CHECKPOINT_VERSION, **state})})
    os.replace(tmp, path)


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict]:
    """(tensors, state) of a checkpoint written by ``save_checkpoint``; FtvpeError when it is not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = json.loads(meta[_CHECKPOINT_KEY])
        tensors = load_file(str(path))
    except (OSError, SafetensorError, KeyError, ValueError) as e:
        raise FtvpeError(f"{path} is not a readable training checkpoint ({type(e).__name__}: {e}).") from e
    if state.get("version") != _CHECKPOINT_VERSION:
        raise FtvpeError(f"{path} is a checkpoint of another version ({state.get('version')}); train the run again.")
    return tensors, state


def checkpoint_step(path: str | Path) -> int | None:
    """The step a checkpoint file was written at, or None when there is none (or it is unreadable)."""
    from safetensors.torch import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return int(json.loads((f.metadata() or {})[_CHECKPOINT_KEY])["counters"]["step"])
    except Exception:  # noqa: BLE001 - no usable checkpoint is an answer, not an error
        return None


def _python_rng_state(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def train(
    model: Any,
    tokenizer: Any,
    train_examples: Sequence[Example],
    val_examples: Sequence[Example],
    settings: TrainSettings,
    on_progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    probes: Sequence[str | Example] | None = None,
    device: str = "cpu",
    checkpoint: str | Path | None = None,
    resume_from: str | Path | None = None,
) -> TrainResult:
    """Fine-tune ``model`` with a LoRA adapter and return the adapted model with the run's history.

    ``model`` is wrapped in place by ``peft.get_peft_model``: pass a model this call may own (a fresh
    load or a ``copy.deepcopy``), never one shared elsewhere. Its weights must be float (not q4/int8).
    Its own weights are frozen; only the adapter learns.

    Args:
        model: a causal language model on ``device``.
        tokenizer: its tokenizer, with a chat template.
        train_examples, val_examples: the training and validation examples (validation may be empty).
        settings: how to train.
        on_progress: called after every step with a dict: step, total_steps, train_loss, lr, tokens_seen,
            elapsed_s, eta_s, and after an evaluation also val_loss and samples ([(probe, answer)]).
        should_stop: polled before every step; returning True cancels (status 'cancelled').
        probes: up to 3 prompts (strings or Examples) answered greedily at each evaluation.
        device: where the model is ('cpu', 'cuda', ...).
        checkpoint: a file to write a checkpoint to at each evaluation and when stopped (None: none).
        resume_from: a checkpoint of this same run (same settings and data) to continue from: the
            adapter, optimizer, schedule, batch order and random states are restored, so the result matches
            a run that never stopped; the history then holds the steps after it only.
    """
    data = _encode(tokenizer, train_examples, val_examples, settings)
    _check_trainable(model, settings.target_modules)
    started = time.perf_counter()
    run = _Run(model, data, settings, device)
    if resume_from is not None:
        run.restore(resume_from)
    history: list[dict] = []
    status = "completed"
    while run.counters.step < run.total:
        if should_stop is not None and should_stop():
            status = "cancelled"
            if checkpoint is not None and run.counters.step:
                run.save(checkpoint, started)
            break
        event = run.train_step(started)
        stop_early = False
        if run.evaluates_now() and data.val_batches:
            stop_early = run.evaluate(event)
            if probes:
                event["samples"] = _answer_probes(run, tokenizer, probes)
            event["elapsed_s"] = run.elapsed(started)
        history.append(event)
        if on_progress is not None:
            on_progress(event)
        if checkpoint is not None and run.evaluates_now():
            run.save(checkpoint, started)  # after on_progress, so the store already holds this step
        if stop_early:
            status = "early_stopped"
            break
    run.finish()
    c = run.counters
    return TrainResult(
        status=status,
        steps=c.step,
        train_seconds=run.elapsed(started),
        final_train_loss=c.train_loss,
        final_val_loss=c.val_loss,
        best_val_loss=c.best_val,
        best_step=c.best_step,
        tokens_seen=c.tokens_seen,
        history=history,
        peft_model=run.peft_model,
    )


@dataclass
class _Encoded:
    """A run's examples as token rows: training rows with their lengths, validation rows in padded batches."""

    train_rows: list[dict[str, list[int]]]
    lengths: list[int]
    val_batches: list[dict]
    pad_id: int


def _encode(tokenizer: Any, train_examples, val_examples, settings: TrainSettings) -> _Encoded:
    train_examples = list(train_examples)
    if settings.max_train_examples:
        train_examples = train_examples[: settings.max_train_examples]
    val_examples = list(val_examples)
    if settings.max_val_examples:
        val_examples = val_examples[: settings.max_val_examples]
    if not train_examples:
        raise FtvpeError("There are no training examples to fine-tune on.")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    pad_id = tokenizer.pad_token_id
    train_rows = [encode_example(tokenizer, e, settings.max_length) for e in train_examples]
    val_rows = [encode_example(tokenizer, e, settings.max_length) for e in val_examples]
    val_order = sorted(range(len(val_rows)), key=lambda i: len(val_rows[i]["input_ids"]))
    val_batches = [
        collate([val_rows[i] for i in val_order[s : s + settings.batch_size]], pad_id)
        for s in range(0, len(val_order), settings.batch_size)
    ]
    return _Encoded(train_rows, [len(r["input_ids"]) for r in train_rows], val_batches, pad_id)


@dataclass
class _Counters:
    """Where the loop stands: everything a checkpoint keeps besides tensors and random states."""

    step: int = 0
    tokens_seen: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    best_val: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    """Evaluations in a row without a better validation loss (for early stopping)."""
    pending: list[list[int]] = field(default_factory=list)
    """The batches of the epoch not trained yet."""
    elapsed_s: float = 0.0
    """Training seconds before this process took the run over (a resumed run counts its earlier time)."""


class _Run:
    """One LoRA training run's moving parts: the wrapped model, optimizer, schedule, batch order, counters."""

    def __init__(self, model: Any, data: _Encoded, settings: TrainSettings, device: str) -> None:
        import torch
        from peft import LoraConfig, get_peft_model

        self.data, self.settings, self.device = data, settings, device
        torch.manual_seed(settings.seed)  # the adapter's initial weights and dropout
        self.rng = random.Random(settings.seed)  # the batch order
        config = LoraConfig(
            r=settings.rank,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=list(settings.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        self.bf16 = bf16_works(device, settings.bf16)
        # With bf16 compute, the frozen weights are stored in bf16 for the run: autocast would otherwise cast
        # every frozen weight again at every step (it caches casts of trainable weights only). The float32
        # originals wait on the CPU and are put back at the end. Buffers (rotary frequencies) stay float32.
        self.originals = []
        if self.bf16:
            self.originals = [
                (p, p.detach().to("cpu", copy=True)) for p in model.parameters() if p.dtype == torch.float32
            ]
            for p, _ in self.originals:
                p.data = p.data.to(torch.bfloat16)
        self.peft_model = get_peft_model(model, config)
        for p in self.peft_model.parameters():
            if p.requires_grad and p.dtype != torch.float32:  # the adapter trains in float32
                p.data = p.data.float()
        self.peft_model.train()
        self.adapter = {k: v for k, v in self.peft_model.named_parameters() if v.requires_grad}
        self.optimizer = torch.optim.AdamW(
            list(self.adapter.values()), lr=settings.learning_rate, weight_decay=settings.weight_decay
        )
        self.total = settings.total_steps(len(data.train_rows))
        warmup = int(settings.warmup_fraction * self.total)
        total = self.total
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: _lr_factor(s, total, warmup))
        self.counters = _Counters()
        self.best_state: dict | None = None
        self._engine = None
        self.fingerprint = {"settings": settings.to_dict(), "n_train": len(data.train_rows), "total_steps": self.total}

    def probe_engine(self, tokenizer: Any) -> Any:
        """An engine of this run's model for the probe answers (one per run: it holds the model weakly)."""
        if self._engine is None:
            import types

            from ftvpe_core.model import engine

            view = types.SimpleNamespace(
                model=self.peft_model, tokenizer=tokenizer, device=self.device, weight_format="float32"
            )
            self._engine = engine.Engine(view)
        return self._engine

    def elapsed(self, started: float) -> float:
        return self.counters.elapsed_s + time.perf_counter() - started

    def train_step(self, started: float) -> dict:
        """One optimizer step on the next batch; returns its progress event."""
        import torch

        c = self.counters
        if not c.pending:
            c.pending = length_grouped_batches(self.data.lengths, self.settings.batch_size, self.rng)
        batch = collate([self.data.train_rows[i] for i in c.pending.pop()], self.data.pad_id)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with _autocast(self.device, self.bf16):
            loss = _loss(self.peft_model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(self.adapter.values()), 1.0)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        c.step += 1
        c.tokens_seen += int(batch["attention_mask"].sum())
        c.train_loss = float(loss.detach())
        elapsed = self.elapsed(started)
        return {
            "step": c.step,
            "total_steps": self.total,
            "train_loss": c.train_loss,
            "lr": lr,
            "tokens_seen": c.tokens_seen,
            "elapsed_s": elapsed,
            "eta_s": elapsed / c.step * (self.total - c.step),
        }

    def evaluates_now(self) -> bool:
        step = self.counters.step
        return step % self.settings.eval_every == 0 or step == self.total

    def evaluate(self, event: dict) -> bool:
        """Measure the validation loss into ``event`` and keep the best adapter; True when patience ran out."""
        c = self.counters
        began = time.perf_counter()
        c.val_loss = event["val_loss"] = _val_loss(self.peft_model, self.data.val_batches, self.device, self.bf16)
        event["eval_s"] = time.perf_counter() - began  # the breakdown a bench reads (bench/class.py)
        if c.best_val is None or c.val_loss < c.best_val:
            c.best_val, c.best_step, c.bad_evals = c.val_loss, c.step, 0
            if self.settings.restore_best:
                self.best_state = {k: v.detach().clone() for k, v in self.adapter.items()}
            return False
        c.bad_evals += 1
        return 0 < self.settings.early_stopping_patience <= c.bad_evals

    def save(self, path: str | Path, started: float) -> None:
        """Write a checkpoint: adapter, best adapter, AdamW state and random states as tensors; counters,
        schedule and the batch order's state as JSON metadata."""
        import torch

        tensors = {f"adapter.{k}": v for k, v in self.adapter.items()}
        tensors.update({f"best.{k}": v for k, v in (self.best_state or {}).items()})
        optim = self.optimizer.state_dict()
        for i, values in optim["state"].items():
            tensors.update({f"optim.{i}.{k}": v for k, v in values.items()})
        tensors["rng.torch"] = torch.get_rng_state()
        if self.device.startswith("cuda"):
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        counters = {**asdict(self.counters), "elapsed_s": self.elapsed(started)}
        save_checkpoint(
            path,
            tensors,
            {
                **self.fingerprint,
                "counters": counters,
                "python_rng": self.rng.getstate(),
                "optimizer_groups": optim["param_groups"],
                "scheduler": self.scheduler.state_dict(),
            },
        )

    def restore(self, path: str | Path) -> None:
        """Continue from a checkpoint of this same run (``save``)."""
        import torch

        tensors, state = read_checkpoint(path)
        if {k: state.get(k) for k in self.fingerprint} != json.loads(json.dumps(self.fingerprint)):
            raise FtvpeError(f"The checkpoint {path} was written by a run with other settings or data.")
        missing = [k for k in self.adapter if f"adapter.{k}" not in tensors]
        if missing:
            raise FtvpeError(f"The checkpoint {path} lacks adapter weights such as {missing[0]}.")
        with torch.no_grad():
            for k, p in self.adapter.items():
                p.copy_(tensors[f"adapter.{k}"])
        optim_state: dict = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, i, name = key.split(".", 2)
                optim_state.setdefault(int(i), {})[name] = value
        groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in state["optimizer_groups"]]
        self.optimizer.load_state_dict({"state": optim_state, "param_groups": groups})
        self.scheduler.load_state_dict(state["scheduler"])
        self.rng.setstate(_python_rng_state(state["python_rng"]))
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and self.device.startswith("cuda"):
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        best = {k[len("best.") :]: v.to(self.device) for k, v in tensors.items() if k.startswith("best.")}
        self.best_state = best or None
        self.counters = _Counters(**state["counters"])

    def finish(self) -> None:
        """Put back the best adapter (if asked) and the float32 frozen weights; eval mode."""
        import torch

        c = self.counters
        with torch.no_grad():
            if self.best_state is not None and c.best_step != c.step:
                for name, p in self.adapter.items():
                    p.copy_(self.best_state[name])
            for p, original in self.originals:
                p.data = original.to(p.device)
        self.peft_model.eval()


# Adapters on disk and their size


def trainable_parameters(peft_model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts: the adapter's share of the weights."""
    if hasattr(peft_model, "get_nb_trainable_parameters"):
        trainable, total = peft_model.get_nb_trainable_parameters()
        return int(trainable), int(total)
    params = list(peft_model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def lora_parameters(config: Any, rank: int, target_modules: Sequence[str]) -> int:
    """Weights a LoRA adapter of ``rank`` adds to a Llama-style model, from its config alone (no model
    needed): each adapted layer of shape (out, in) gets A (rank, in) and B (out, rank)."""
    hidden = config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv = (getattr(config, "num_key_value_heads", None) or heads) * head_dim
    inter = getattr(config, "intermediate_size", None) or 4 * hidden
    shapes = {
        "q_proj": (heads * head_dim, hidden),
        "k_proj": (kv, hidden),
        "v_proj": (kv, hidden),
        "o_proj": (hidden, heads * head_dim),
        "gate_proj": (inter, hidden),
        "up_proj": (inter, hidden),
        "down_proj": (hidden, inter),
    }
    per_layer = sum(rank * (shapes[m][0] + shapes[m][1]) for m in target_modules if m in shapes)
    return per_layer * config.num_hidden_layers


def overfit_step(val_points: Sequence[tuple[int, float]], tolerance: float = 0.02) -> int | None:
    """The step of the lowest validation loss when a later evaluation rose above it by more than
    ``tolerance`` (relative): where overfitting starts. None while the validation loss still falls."""
    if len(val_points) < 2:
        return None
    best_step, best = min(val_points, key=lambda p: (p[1], p[0]))
    later = [v for s, v in val_points if s > best_step]
    return best_step if later and max(later) > best * (1 + tolerance) else None
