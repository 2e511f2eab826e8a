"""Benchmark of the app's LoRA training path against a plain ``transformers.Trainer``, measured in one run.

App side: ``finetune.train(...)`` as the app calls it (bf16 where the hardware supports it: frozen weights
stored in bf16 for the run, autocast; the output head only on response tokens; length-grouped batches
padded to their longest row), no validation set. Baseline: ``transformers.Trainer``
with default ``TrainingArguments`` apart from ``per_device_train_batch_size=8`` and ``max_steps`` (no
evaluation, no saving, no reporting), float32, random batches padded to their longest row. Both train the
same LoRA adapter (r=8, alpha=16, dropout 0.05 on q_proj, k_proj, v_proj and o_proj) on the same rows (the
support_triage training split through ``finetune.encode_example`` with max_length 64) for the same number
of steps, each on its own copy of the model, with the same thread count, on the app's compute thread
(``models.compute``). Throughput counts non-padding tokens only, over the steps after the first few
(warm-up), for both sides. An extra row shows Trainer with ``bf16=True``, for information.

It also times the 'quick' preset end to end (``foreground.finetune``: load, train, save) on support_triage,
with the run store in a temporary folder; the model cache stays in the usual data folder.

This script measures and prints; it changes nothing in ``ftvpe_core``.

    python bench/finetune.py [--json] [--steps 20] [--warmup 2] [--rounds 1] [--skip-quick] [--model NAME]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402

TARGET_RATIO = 1.5
DATASET = "support_triage"
BATCH_SIZE = 8
MAX_LENGTH = 64
LORA = dict(rank=8, alpha=16.0, dropout=0.05, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))
SEED = 0


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _window(points: list[tuple[float, int]], warmup: int) -> dict:
    """Tokens/s over the steps after ``warmup``, from (elapsed seconds, tokens so far) after each step.

    With ``warmup`` 0 the window starts where the clock started (elapsed 0, no tokens).
    """
    t0, n0 = (0.0, 0) if warmup == 0 else points[warmup - 1]
    t1, n1 = points[-1]
    return {
        "tokens_per_s": (n1 - n0) / (t1 - t0),
        "timed_seconds": t1 - t0,
        "timed_tokens": n1 - n0,
        "s_per_step": (t1 - t0) / (len(points) - warmup),
        "step_seconds": [b[0] - a[0] for a, b in zip([(0.0, 0), *points], points)],
    }


# ---------------------------------------------------------------- the app's training path


def app_padding_share(rows: list[dict], steps: int) -> float:
    """Share of padding in the first ``steps`` batches that ``finetune.train`` builds (same rng, same order)."""
    import random

    from ftvpe_core.training import finetune

    lengths = [len(r["input_ids"]) for r in rows]
    rng = random.Random(SEED)
    pending: list[list[int]] = []
    cells = tokens = 0
    for _ in range(steps):
        if not pending:
            pending = finetune.length_grouped_batches(lengths, BATCH_SIZE, rng)
        batch = [lengths[i] for i in pending.pop()]
        cells += max(batch) * len(batch)
        tokens += sum(batch)
    return 1 - tokens / cells


def run_app(loaded, examples, steps: int, warmup: int) -> dict:
    """``finetune.train`` on a copy of the model: bf16 autocast as in the app, no validation set."""
    from ftvpe_core.training import finetune

    settings = finetune.TrainSettings(**LORA, max_steps=steps, batch_size=BATCH_SIZE, max_length=MAX_LENGTH, seed=SEED)
    model = copy.deepcopy(loaded.model)
    result = finetune.train(model, loaded.tokenizer, examples, [], settings, device=loaded.device)
    points = [(e["elapsed_s"], e["tokens_seen"]) for e in result.history]
    out = {**_window(points, warmup), "steps": result.steps, "train_seconds": result.train_seconds}
    del model, result
    _free()
    return out


# ---------------------------------------------------------------- the Trainer baseline


def _trainer_ready(model) -> list[str]:
    """Clear what makes Trainer treat a dequantized GGUF model as quantized (as ``models.cache_gguf`` does).

    Returns:
        What was cleared (empty for a model loaded from safetensors).
    """
    cleared = []
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
        cleared.append("hf_quantizer")
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
        cleared.append("config.quantization_config")
    if getattr(model, "is_quantized", False):
        model.is_quantized = False
        cleared.append("is_quantized")
    return cleared


def run_trainer(loaded, rows: list[dict], steps: int, warmup: int, bf16: bool = False) -> dict:
    """Plain ``transformers.Trainer`` with a LoRA adapter on a copy of the model; default arguments except the
    batch size, the step count and no evaluation/saving/reporting (plus ``bf16=True`` for the extra row).

    Tokens are counted in the collator: with one batch per step and no workers, the k-th batch collated is
    the one of step k (accelerate may collate one batch ahead; those extra batches are not counted).
    """
    peft_model, cleared = _trainer_lora_model(loaded)
    collator, collated = _counting_collator(loaded.tokenizer.pad_token_id)
    clock = _step_clock(loaded.device)
    _train_with_trainer(peft_model, rows, steps, bf16, collator, clock)
    if len(clock.ends) != steps or len(collated) < steps:
        raise RuntimeError(f"Trainer ran {len(clock.ends)} steps and collated {len(collated)} batches, not {steps}")
    out = _trainer_figures(clock.started, clock.ends, collated[:steps], warmup)
    out["cleared"] = cleared
    del peft_model
    _free()
    return out


def _trainer_lora_model(loaded) -> tuple:
    """A copy of the model, made fit for Trainer, with the bench's LoRA adapter (seeded as the app seeds).

    Returns:
        The ``peft`` model and what ``_trainer_ready`` cleared.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    model = copy.deepcopy(loaded.model)
    cleared = _trainer_ready(model)
    torch.manual_seed(SEED)
    config = LoraConfig(
        r=LORA["rank"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules=list(LORA["target_modules"]),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config), cleared


def _counting_collator(pad_id: int) -> tuple[Callable, list[tuple[int, int]]]:
    """``finetune.collate`` that also records (non-padding tokens, batch cells) of every batch it builds.

    Returns:
        The collator and the list it appends to.
    """
    from ftvpe_core.training import finetune

    collated: list[tuple[int, int]] = []

    def collator(batch_rows):
        batch = finetune.collate(batch_rows, pad_id)
        collated.append((int(batch["attention_mask"].sum()), batch["attention_mask"].numel()))
        return batch

    return collator, collated


def _step_clock(device: str):
    """A Trainer callback that records when training starts and when each step ends (after a CUDA sync)."""
    import torch
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.started: float | None = None
            self.ends: list[float] = []

        def on_epoch_begin(self, args, state, control, **kwargs):
            if self.started is None:
                self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

    return StepClock()


def _train_with_trainer(peft_model, rows: list[dict], steps: int, bf16: bool, collator: Callable, clock) -> None:
    """``steps`` steps of ``Trainer.train`` with default arguments but for the batch size, no evaluation,
    saving or reporting, and ``bf16``."""
    import torch
    from transformers import Trainer, TrainingArguments

    with tempfile.TemporaryDirectory(prefix="ftvpe-bench-trainer-") as out_dir:
        args = TrainingArguments(
            output_dir=out_dir,
            per_device_train_batch_size=BATCH_SIZE,
            max_steps=steps,
            eval_strategy="no",
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            use_cpu=not torch.cuda.is_available(),
            bf16=bf16,
        )
        trainer = Trainer(model=peft_model, args=args, train_dataset=rows, data_collator=collator, callbacks=[clock])
        with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its closing metrics; stdout is the report
            trainer.train()


def _trainer_figures(started: float, ends: list[float], used: list[tuple[int, int]], warmup: int) -> dict:
    """Throughput and padding share from the step end times and the counts of the batches those steps used."""
    tokens = 0
    points = []
    for end, (n, _) in zip(ends, used):
        tokens += n
        points.append((end - started, tokens))
    out = {**_window(points, warmup), "steps": len(ends), "train_seconds": points[-1][0]}
    out["padding_share"] = 1 - sum(n for n, _ in used) / sum(c for _, c in used)
    return out


# ---------------------------------------------------------------- the quick preset, end to end


def run_quick(model: str) -> dict:
    """``foreground.finetune`` with the 'quick' preset on support_triage, run store in a temporary folder."""
    from ftvpe_core.jobs import foreground
    from ftvpe_core.store.runs import RunStore
    from ftvpe_core.training import finetune

    settings = finetune.from_preset("quick")
    with tempfile.TemporaryDirectory(prefix="ftvpe-bench-runs-") as home:
        started = time.perf_counter()
        summary = foreground.finetune(
            DATASET, settings, model_name=model, store=RunStore(Path(home)), measure_accuracy=False
        )
        wall = time.perf_counter() - started
    return {
        "seconds": wall,
        "train_seconds": summary["train_seconds"],
        "steps": summary["steps"],
        "status": summary["status"],
        "tokens_seen": summary["tokens_seen"],
        "max_length": settings.max_length,
        "batch_size": settings.batch_size,
    }


# ---------------------------------------------------------------- the run


def run(args: argparse.Namespace) -> dict:
    """Every measurement in turn: the app and Trainer arms on the same rows, then the quick preset."""
    common.quiet_transformers()
    threads = common.use_all_threads()  # all torch work below runs on the compute thread, as in the app
    warmup = min(args.warmup, args.steps - 1)
    report = start_report(args, threads, warmup)
    loaded, examples, rows = load_training_rows(args.model, report)
    results = run_arms(args, report, loaded, examples, rows, warmup)
    add_arm_rows(report, results, rows, args.steps)
    del loaded  # free the model before the quick preset loads its own
    _free()
    add_ratios(report)
    time_quick_preset(args, report)
    note_busy_machine(report, threads)
    return report


def start_report(args: argparse.Namespace, threads: int, warmup: int) -> dict:
    """The report's header: versions, sizes and the LoRA settings both sides train with."""
    import peft
    import torch
    import transformers

    report: dict = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "steps": args.steps,
        "warmup_steps": warmup,
        "rounds": args.rounds,
        "batch_size": BATCH_SIZE,
        "max_length": MAX_LENGTH,
        "dataset": DATASET,
        "lora": {**LORA, "target_modules": list(LORA["target_modules"])},
        "load_average_start": os.getloadavg(),
        "notes": [],
    }
    if warmup != args.warmup:
        report["notes"].append(f"--warmup {args.warmup} lowered to {warmup} so at least one step is timed")
    return report


def load_training_rows(model: str, report: dict) -> tuple:
    """The model in float32 and the training split, as examples (for the app) and encoded rows (for Trainer).

    Returns:
        The loaded model, the examples and the rows.
    """
    from ftvpe_core.model import models
    from ftvpe_core.tasks import datasets
    from ftvpe_core.training import finetune

    common.log(f"loading {model} (float32)")
    loaded = models.load(model, weight_format="float32")
    report["model"], report["device"] = loaded.source.label, loaded.device
    examples = datasets.load_builtin(DATASET).splits["train"]
    rows = [finetune.encode_example(loaded.tokenizer, e, MAX_LENGTH) for e in examples]
    report["train_examples"] = len(rows)
    report["app_bf16_autocast"] = finetune.bf16_works(loaded.device, True)
    return loaded, examples, rows


def run_arms(
    args: argparse.Namespace, report: dict, loaded, examples, rows: list[dict], warmup: int
) -> dict[str, list[dict]]:
    """Each arm once per round, in turn, on the compute thread; a failing extra bf16 row is noted and dropped.

    Returns:
        Each arm's figures, one dict per round it completed.
    """
    from ftvpe_core.model import models

    arms = {
        "trainer": functools.partial(run_trainer, loaded, rows, args.steps, warmup),
        "app": functools.partial(run_app, loaded, examples, args.steps, warmup),
    }
    if not args.skip_trainer_bf16:
        arms["trainer_bf16"] = functools.partial(run_trainer, loaded, rows, args.steps, warmup, bf16=True)
    results: dict = {name: [] for name in arms}
    failed: set[str] = set()
    for round_ in range(args.rounds):
        for name, arm in arms.items():
            if name in failed:
                continue
            common.log(f"round {round_ + 1}/{args.rounds}: {name}, {args.steps} steps")
            try:
                results[name].append(models.compute(arm))
            except Exception as e:
                if name != "trainer_bf16":  # the extra row is informative; the others must work
                    raise
                report["notes"].append(f"Trainer bf16=True failed: {type(e).__name__}: {str(e).splitlines()[0]}")
                failed.add(name)
    return results


def add_arm_rows(report: dict, results: dict[str, list[dict]], rows: list[dict], steps: int) -> None:
    """A row per arm that ran: medians over the rounds, the last round's step times and padding share."""
    report["arms"] = {}
    for name, runs in results.items():
        if not runs:
            continue
        row = {k: statistics.median(r[k] for r in runs) for k in ("tokens_per_s", "s_per_step", "train_seconds")}
        row["runs_tokens_per_s"] = [r["tokens_per_s"] for r in runs]
        row["timed_tokens"] = runs[-1]["timed_tokens"]
        row["step_seconds"] = runs[-1]["step_seconds"]
        row["padding_share"] = runs[-1].get("padding_share")
        cleared = f"cleared for Trainer: {', '.join(runs[-1].get('cleared') or [])}"
        if runs[-1].get("cleared") and cleared not in report["notes"]:
            report["notes"].append(cleared)
        report["arms"][name] = row
    report["arms"]["app"]["padding_share"] = app_padding_share(rows, steps)


def add_ratios(report: dict) -> None:
    """Each arm's tokens/s against the Trainer baseline's, the headline figures, and the target's verdict."""
    base = report["arms"]["trainer"]["tokens_per_s"]
    for row in report["arms"].values():
        row["ratio"] = row["tokens_per_s"] / base
    report["app_tokens_per_s"] = report["arms"]["app"]["tokens_per_s"]
    report["trainer_tokens_per_s"] = base
    report["trainer_bf16_tokens_per_s"] = report["arms"].get("trainer_bf16", {}).get("tokens_per_s")
    report["ratio"] = report["app_tokens_per_s"] / base
    report["target"] = {
        "ratio": f">= {TARGET_RATIO}",
        "value": report["ratio"],
        "pass": report["ratio"] >= TARGET_RATIO,
    }


def time_quick_preset(args: argparse.Namespace, report: dict) -> None:
    """The quick preset end to end (``run_quick``), unless ``--skip-quick``."""
    report["quick_preset"] = None
    report["quick_preset_seconds"] = None
    if args.skip_quick:
        report["notes"].append("--skip-quick: the quick preset was not timed")
        return
    common.log("quick preset: foreground.finetune end to end")
    quick = run_quick(args.model)
    report["quick_preset"] = quick
    report["quick_preset_seconds"] = quick["seconds"]


def note_busy_machine(report: dict, threads: int) -> None:
    """Record the closing load average; note when the machine was busy before the run."""
    report["load_average_end"] = os.getloadavg()
    # Only the load before the run tells of other work: during it, the bench itself keeps every thread busy.
    before = report["load_average_start"][0]
    if before > threads - 0.5:
        report["notes"].append(
            f"the machine was busy before the run (1-min load average {before:.1f} on {threads} CPUs): other "
            "processes may have shared the CPU; rerun on a quiet machine to be sure"
        )


def render(r: dict) -> str:
    first, last = r["warmup_steps"] + 1, r["steps"]
    lora = r["lora"]
    rounds = f", median of {r['rounds']} rounds" if r["rounds"] > 1 else ""
    lines = [
        f"Fine-tune bench: {r['model']} on {r['device']} ({r['threads']} threads of {r['cpu_count']} CPUs), "
        f"torch {r['torch']}, transformers {r['transformers']}, peft {r['peft']}, Python {r['python']}",
        f"{r['dataset']} train ({r['train_examples']} examples), batch {r['batch_size']} x at most {r['max_length']} "
        f"tokens, LoRA r={lora['rank']} alpha={lora['alpha']:g} dropout {lora['dropout']} on "
        f"{','.join(lora['target_modules'])}.",
        f"{r['steps']} steps per side; tokens/s = non-padding tokens / time over steps {first}-{last} "
        f"(the first {r['warmup_steps']} not timed){rounds}; padding: share of padding in each side's batches.",
        f"1-min load average: {r['load_average_start'][0]:.2f} at start, {r['load_average_end'][0]:.2f} at end.",
        "",
    ]
    head = f"{'':<52}{'tokens/s':>10}{'x base':>8}{'s/step':>8}{'padding':>9}"
    lines += [head, "-" * len(head)]
    labels = {
        "trainer": "baseline: Trainer fp32, random batches",
        "app": "app: finetune.train, "
        + ("bf16" if r["app_bf16_autocast"] else "fp32 (no bf16 here)")
        + ", head on answers",
        "trainer_bf16": "extra: Trainer bf16=True, random batches",
    }
    for name in ("trainer", "app", "trainer_bf16"):
        row = r["arms"].get(name)
        if row is None:
            continue
        lines.append(
            f"{labels[name]:<52}{row['tokens_per_s']:>10.1f}{row['ratio']:>8.2f}{row['s_per_step']:>8.3f}"
            f"{row['padding_share']:>9.0%}"
        )
    lines.append("")
    q = r["quick_preset"]
    if q:
        lines.append(
            f"Quick preset on {r['dataset']} (foreground.finetune: load + train + save, accuracy off): "
            f"{q['seconds']:.1f} s wall, {q['train_seconds']:.1f} s training ({q['steps']} steps, batch "
            f"{q['batch_size']} x at most {q['max_length']} tokens, evaluations and probes included)"
        )
    for note in r["notes"]:
        lines.append(f"  note: {note}")
    t = r["target"]
    lines += [
        "",
        f"Target: app >= {TARGET_RATIO:g}x the Trainer baseline's tokens/s: {t['value']:.2f}x   "
        f"{'PASS' if t['pass'] else 'FAIL'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per side (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing (default 2)")
    parser.add_argument("--rounds", type=int, default=1, help="times each side runs, in turn; medians (default 1)")
    parser.add_argument("--skip-quick", action="store_true", help="do not time the quick preset end to end")
    parser.add_argument("--skip-trainer-bf16", action="store_true", help="leave out the extra Trainer bf16 row")
    parser.add_argument("--model", default="embedded", help="model to bench (default: the embedded SmolLM2)")
    args = parser.parse_args(argv)
    if not 1 <= args.steps <= 1000:
        parser.error("--steps must be between 1 and 1000")
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return common.finish(args, run, render)


if __name__ == "__main__":
    sys.exit(main())
