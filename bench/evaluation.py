"""Benchmark of batched evaluation (``evaluate.generate_batch``) against one answer at a time, in one run.

Same prompts and settings on both sides: the first N examples of the support_triage test split (default 24)
with the plain prompt (``evaluate.task_spec(task, example, [])``), greedy, no repetition penalty,
``max_new_tokens = evaluate.max_new_tokens(task, [])`` (12), as ``evaluate.run_arm`` answers them, on the app's
default weights for the device (q4 on a CPU for the embedded model). One at a time: ``generation.generate``
per prompt (the app's chat path). Batched:
``evaluate.generate_batch(..., batch_size=16)`` (the app's ``evaluate.BATCH_SIZE``: 16 prompts in flight in the engine).
Each side may stop at the end token, so both produce the same
answers (or nearly: see "identical"), and answers per second is the figure that matters for scoring a task.
Informative rows (no target): batch 16 without the shared-prefix reuse, and batch 8.

Each round runs every row in turn, so a change in machine load hits all rows alike; figures are medians of
the rounds after one warm-up. All torch work runs on the app's compute thread (``models.compute``).

This script measures and prints; it changes nothing in ``ftvpe_core``.

    python bench/evaluation.py [--json] [--n 32] [--batch-size 16] [--rounds 2] [--model embedded]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402

TARGET_RATIO = 4.0
DATASET = "support_triage"


@contextlib.contextmanager
def no_shared_prefix(engine):
    """Turn off the reuse of the prompts' shared first tokens (every prompt is computed whole)."""
    original = engine.MIN_SHARED_PREFIX
    engine.MIN_SHARED_PREFIX = 10**9
    try:
        yield
    finally:
        engine.MIN_SHARED_PREFIX = original


def run(args: argparse.Namespace) -> dict:
    """Every measurement in turn: the same prompts answered one at a time and batched, in interleaved rounds."""
    threads = common.use_all_threads()
    report = start_report(threads)
    loaded, messages, settings = load_prompts(args, report)
    sides = make_sides(args, loaded, messages, settings)
    warm_up(loaded, messages, settings, args.batch_size)
    times, texts = time_rounds(sides, args.rounds)
    add_rows(report, loaded, messages, times, texts)
    note_busy_machine(report, threads)
    add_target(report)
    return report


def start_report(threads: int) -> dict:
    """The report's header: the machine and the versions."""
    import torch
    import transformers

    return {
        "notes": [],
        "load_average_start": os.getloadavg(),
        "cpu_count": threads,
        "threads": threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def load_prompts(args: argparse.Namespace, report: dict) -> tuple:
    """The model on the app's default weights and the first ``args.n`` test prompts, as ``evaluate.run_arm``
    builds them (plain prompt, greedy, no repetition penalty).

    Returns:
        The loaded model, the chat messages of each prompt and the generation settings.
    """
    from ftvpe_core.model import models
    from ftvpe_core.settings import GenerationSettings
    from ftvpe_core.tasks import evaluate, prompts

    common.log(f"loading {args.model}")
    loaded = models.load(args.model, args.device)
    task = evaluate.load_task(DATASET, limit=args.n)
    messages = [prompts.build(evaluate.task_spec(task, e, []), loaded.count_tokens).messages for e in task.examples]
    settings = GenerationSettings(max_new_tokens=evaluate.max_new_tokens(task, []), repetition_penalty=1.0)
    report.update(
        model=loaded.name,
        device=loaded.device,
        weight_format=loaded.weight_format,
        dataset=DATASET,
        n=len(messages),
        batch_size=args.batch_size,
        max_new_tokens=settings.max_new_tokens,
        rounds=args.rounds,
    )
    return loaded, messages, settings


def make_sides(args: argparse.Namespace, loaded, messages: list, settings) -> dict[str, Callable[[], list[str]]]:
    """The rows to time, each a function that answers every prompt: one at a time, batched, and (unless
    ``--skip-extra``) batched without the shared-prefix reuse and at half the batch size."""
    from ftvpe_core.model import engine, generation
    from ftvpe_core.tasks import evaluate

    # Every round answers the same prompts: the engine would skip the prefill of a prompt it has just seen, so
    # each side starts with an engine that has forgotten them.
    def sequential() -> list[str]:
        engine.get(loaded).forget_prompts()
        return [generation.generate(loaded, m, settings).text for m in messages]

    def batched(size: int, prefix: bool = True):
        def side() -> list[str]:
            engine.get(loaded).forget_prompts()
            with contextlib.nullcontext() if prefix else no_shared_prefix(engine):
                return [a.text for a in evaluate.generate_batch(loaded, messages, settings, size)]

        return side

    sides = {"sequential": sequential, "batched": batched(args.batch_size)}
    if not args.skip_extra:
        sides[f"batched, batch {args.batch_size}, no shared prefix"] = batched(args.batch_size, prefix=False)
        sides[f"batched, batch {args.batch_size // 2}"] = batched(args.batch_size // 2)
    return sides


def warm_up(loaded, messages: list, settings, batch_size: int) -> None:
    """One answer alone and one batch, untimed."""
    from ftvpe_core.model import generation
    from ftvpe_core.tasks import evaluate

    common.log("warm-up")
    generation.generate(loaded, messages[0], settings)
    evaluate.generate_batch(loaded, messages[:batch_size], settings, batch_size)


def time_rounds(sides: dict, rounds: int) -> tuple[dict[str, list[float]], dict[str, list[str]]]:
    """``rounds`` rounds, each running every side in turn.

    Returns:
        Each side's seconds per round, and its answers from the last round.
    """
    times: dict[str, list[float]] = {name: [] for name in sides}
    texts: dict[str, list[str]] = {}
    for round_ in range(rounds):
        common.log(f"round {round_ + 1} of {rounds}: {', '.join(sides)}")
        for name, side in sides.items():
            started = time.perf_counter()
            texts[name] = side()
            times[name].append(time.perf_counter() - started)
    return times, texts


def add_rows(report: dict, loaded, messages: list, times: dict, texts: dict) -> None:
    """Prompt and answer lengths, and a row per side: answers/s, ratio to one at a time, identical answers."""
    from ftvpe_core.model import generation

    n = len(messages)
    encoded = [generation.encode_chat(loaded, m) for m in messages]
    report["prompt_tokens_mean"] = sum(map(len, encoded)) / n
    report["new_tokens_mean"] = (
        sum(len(loaded.tokenizer.encode(t, add_special_tokens=False)) for t in texts["sequential"]) / n
    )
    seq_s = statistics.median(times["sequential"])
    rows = {}
    for name in times:
        seconds = statistics.median(times[name])
        rows[name] = {
            "answers_per_s": n / seconds,
            "seconds": seconds,
            "seconds_per_answer": seconds / n,
            "ratio": seq_s / seconds,
            "identical": sum(a == b for a, b in zip(texts[name], texts["sequential"])),
            "all_seconds": times[name],
        }
    report["rows"] = rows


def note_busy_machine(report: dict, threads: int) -> None:
    """Record the closing load average; note when other processes shared the CPU."""
    report["load_average_end"] = os.getloadavg()
    busiest = max(report["load_average_start"][0], report["load_average_end"][0])
    if busiest > threads:
        report["notes"].append(
            f"the machine was busy (1-min load average up to {busiest:.1f} on {threads} CPUs, this bench included): "
            "other processes shared the CPU; the figures are noisy (ratios less so, as rounds interleave the rows)"
        )


def add_target(report: dict) -> None:
    """The headline figures (batched against one at a time) and the target's verdict."""
    rows = report["rows"]
    main_row = rows["batched"]
    report.update(
        batched_answers_per_s=main_row["answers_per_s"],
        sequential_answers_per_s=rows["sequential"]["answers_per_s"],
        ratio=main_row["ratio"],
        identical=main_row["identical"],
        target={"ratio": f">= {TARGET_RATIO:g}", "value": main_row["ratio"], "pass": main_row["ratio"] >= TARGET_RATIO},
    )


def render(r: dict) -> str:
    lines = [
        f"Evaluation bench: {r['model']} ({r['weight_format']}) on {r['device']} ({r['threads']} threads of "
        f"{r['cpu_count']} CPUs), torch {r['torch']}, transformers {r['transformers']}, Python {r['python']}",
        f"{r['n']} prompts from the {r['dataset']} test split, plain prompt ({r['prompt_tokens_mean']:.1f} tokens "
        f"on average), greedy, no repetition penalty, at most {r['max_new_tokens']} new tokens "
        f"({r['new_tokens_mean']:.1f} on average), stopping at the end token.",
        f"Median of {r['rounds']} round(s) after 1 warm-up; each round runs every row in turn. "
        f"1-min load average: {r['load_average_start'][0]:.2f} at start, {r['load_average_end'][0]:.2f} at end.",
        "",
    ]
    head = f"{'':<46}{'answers/s':>10}{'s/answer':>10}{'x one-at-a-time':>17}{'identical':>11}"
    lines += [head, "-" * len(head)]
    labels = {"sequential": "one at a time (generation.generate)", "batched": f"batched, batch {r['batch_size']}"}
    for name, row in r["rows"].items():
        lines.append(
            f"{labels.get(name, name + ' (info)'):<46}{row['answers_per_s']:>10.2f}{row['seconds_per_answer']:>10.3f}"
            f"{row['ratio']:>17.2f}{'-' if name == 'sequential' else str(row['identical']) + '/' + str(r['n']):>11}"
        )
    for note in r["notes"]:
        lines.append(f"  note: {note}")
    t = r["target"]
    verdict = "PASS" if t["pass"] else "FAIL"
    lines += [
        "",
        f"Target: batched (batch {r['batch_size']}) >= {TARGET_RATIO:g}x one-at-a-time answers/s: "
        f"{t['value']:.2f}x   {verdict}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--n", type=int, default=32, help="prompts from the test split (default 32: two batches of 16)")
    parser.add_argument(
        "--batch-size", type=int, default=16, help="batch size of the target row (default 16, the app's)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds after one warm-up (default 2)")
    parser.add_argument("--skip-extra", action="store_true", help="only the two rows the target compares")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    parser.add_argument("--model", default="embedded", help="model to bench (default: the embedded SmolLM2)")
    args = parser.parse_args(argv)
    if not 1 <= args.n <= 45:
        parser.error("--n must be between 1 and 45 (the test split)")
    if args.batch_size < 2:
        parser.error("--batch-size must be at least 2")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return common.finish(args, run, render)


if __name__ == "__main__":
    sys.exit(main())
