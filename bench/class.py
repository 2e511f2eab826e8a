"""Benchmark of a class challenge on one machine: P prompt learners and F fine-tune learners, played through the
public core as the app's pages play it, against each kind of submission scored alone, in one run.

A teacher creates a challenge (``challenges.create``); the runner starts warm, as when a challenge opens
(``runners.current().start``); one prompt learner and one fine-tune learner submit alone first (the baseline:
Submit to score, each with the queue empty); then the class joins and submits, fine-tunes first with
``--finetunes-first`` (the hard case: the training lane is busy when the prompts arrive) or interleaved, and
the bench drives the runner (``runners.wait``) until every score is in. Each wait is from a learner's Submit to
the moment the score was written (the score run's end, on the store's clock).

Figures: ``prompt_wait_p50_s`` / ``prompt_wait_p95_s`` (the prompt learners' waits), ``finetune_wait_max_s``,
``all_scored_s`` (first Submit to last score), ``alone_prompt_s``, ``alone_finetune_s``,
``serial_estimate_s`` (P x alone prompt + F x alone fine-tune: the class one after another),
``class_vs_serial`` (all_scored_s / serial_estimate_s), ``training_slowdown`` (the slowest class fine-tune's
seconds a training step over the alone fine-tune's: prompt scoring running beside training),
``finetune_mean_score`` (the class fine-tunes' public scores; learner i trains with seed i),
``prompt_batch_max`` (the most prompt scores one pass took), and ``finetune_breakdown`` (the alone fine-tune:
job start, model load, training steps, validation, scoring).

Usage: ``python bench/class.py --prompts 15 --finetunes 15 --steps 20 --examples 40 --hidden-limit 20
--finetunes-first --json`` (``make bench-class``). Measure with nothing else running.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common  # noqa: E402

TASK = "support_triage"
ROLES = [
    "a customer-support triage assistant",
    "a help desk router for an online shop",
    "a careful support agent who sorts messages by team",
    "the first-line support triage of a web shop",
]
FORMAT = "One word: billing, shipping, technical or account."


def prompt_fields(i: int, shots: list[tuple[str, str]]) -> dict:
    """Learner i's prompt: a role and an answer format for all, few-shot examples for every other learner."""
    fields = {"enabled": ["role", "context"], "role": ROLES[i % len(ROLES)], "output_format": FORMAT}
    if i % 2:
        fields["enabled"].append("few-shot")
        fields["examples"] = [list(pair) for pair in shots[: 1 + i % 4]]
    return fields


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by the nearest rank, as an SLO reads it: p95 of 15 waits is the 15th."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * q // 1)))
    return ordered[int(rank) - 1]


def score_run(store, sid: int) -> str:
    from ftvpe_core.teaching import challenges

    return challenges.runs_of(store, sid)[1]


def run(args: argparse.Namespace) -> dict:
    if args.home:
        os.environ["FTVPE_HOME"] = args.home
    else:
        os.environ["FTVPE_HOME"] = tempfile.mkdtemp(prefix="ftvpe-bench-class-")
    from ftvpe_core.jobs import runners
    from ftvpe_core.store.runs import RunStore
    from ftvpe_core.tasks import datasets
    from ftvpe_core.teaching import challenges

    report: dict = {
        "bench": "class",
        "prompts": args.prompts,
        "finetunes": args.finetunes,
        "steps": args.steps,
        "examples": args.examples,
        "hidden_limit": args.hidden_limit,
        "finetunes_first": args.finetunes_first,
        "cpus": os.cpu_count(),
        "load_average_start": os.getloadavg(),
        "notes": [],
    }
    store = RunStore()
    learners = args.prompts + args.finetunes + 2
    settings = challenges.ChallengeSettings(
        task=TASK,
        hidden_limit=args.hidden_limit,
        max_steps=args.steps,
        max_train_examples=args.examples,
        model=args.model,
        max_learners=max(learners, 2),
        max_queued=max(2 * learners, 1),
        seed=0,
    )
    code, _ = challenges.create(store, settings)
    count_tokens = challenges.token_counter(args.model)
    train = datasets.load_builtin(TASK).splits["train"]
    shots = [(e.prompt, e.response) for e in train[:4]]
    runner = runners.current()
    began = time.monotonic()
    runner.start(store)  # the challenge is open: the lanes start warm
    report["runner"] = runner.name

    def submit(name: str, kind: str, i: int) -> tuple[str, float]:
        challenges.join(store, code, name)
        at = time.time()
        if kind == "prompt":
            sid = challenges.submit_prompt(store, code, name, prompt_fields(i, shots), count_tokens, device=args.device)
        else:
            sid = challenges.submit_finetune(
                store, code, name, steps=args.steps, examples=args.examples, device=args.device, seed=i
            )
        return score_run(store, sid), at

    def waited(run_id: str, at: float) -> float:
        run = store.get(run_id)
        if run.status != "complete":
            raise SystemExit(f"bench: score run {run_id} ended {run.status}: {run.error}")
        return run.finished - at

    common.log("alone: one prompt submission, then one fine-tune, each with the queue empty")
    alone_prompt, at = submit("Solo prompt", "prompt", 0)
    runners.wait(store, [alone_prompt], timeout_s=args.timeout)
    report["alone_prompt_s"] = waited(alone_prompt, at)
    report["warm_start_s"] = time.monotonic() - began - report["alone_prompt_s"]
    alone_ft, at = submit("Solo fine-tune", "finetune", 0)
    runners.wait(store, [alone_ft], timeout_s=args.timeout)
    report["alone_finetune_s"] = waited(alone_ft, at)
    report["finetune_breakdown"] = breakdown(store, alone_ft, at)

    order = [("finetune", i) for i in range(args.finetunes)]
    prompts = [("prompt", i) for i in range(args.prompts)]
    if args.finetunes_first:
        order += prompts
    else:  # interleaved: a prompt, a fine-tune, ...
        order = [x for pair in zip(prompts, order) for x in pair] + prompts[len(order) :] + order[len(prompts) :]
    common.log(f"the class: {args.prompts} prompts and {args.finetunes} fine-tunes submit")
    submitted: list[tuple[str, str, float]] = []
    for kind, i in order:
        run_id, at = submit(f"{kind.title()} learner {i + 1}", kind, i)
        submitted.append((kind, run_id, at))
    first = min(at for _, _, at in submitted)
    runners.wait(store, [r for _, r, _ in submitted], timeout_s=args.timeout)
    waits = {kind: [waited(r, at) for k, r, at in submitted if k == kind] for kind in ("prompt", "finetune")}
    last = max(store.get(r).finished for _, r, _ in submitted)
    report["all_scored_s"] = last - first
    if waits["prompt"]:
        report["prompt_wait_p50_s"] = statistics.median(waits["prompt"])
        report["prompt_wait_p95_s"] = percentile(waits["prompt"], 0.95)
        batches = [store.metrics(r).get("lane_batch") for k, r, _ in submitted if k == "prompt"]
        report["prompt_batch_max"] = max((b[-1][1] for b in batches if b), default=1)
    if waits["finetune"]:
        report["finetune_wait_max_s"] = max(waits["finetune"])
        scores = [store.get(r).summary["score"] for k, r, _ in submitted if k == "finetune"]
        report["finetune_mean_score"] = statistics.fmean(scores)
        alone_step = step_seconds(store, alone_ft)
        steps = [step_seconds(store, r) for k, r, _ in submitted if k == "finetune"]
        report["training_slowdown"] = max(steps) / alone_step
    report["serial_estimate_s"] = args.prompts * report["alone_prompt_s"] + args.finetunes * report["alone_finetune_s"]
    report["class_vs_serial"] = report["all_scored_s"] / max(report["serial_estimate_s"], 1e-9)
    report["waits_s"] = waits
    common.note_busy_machine(report, os.cpu_count() or 1)
    report["targets"] = targets(report)
    return report


def _train_run(store, score_run_id: str):
    return store.get(store.get(score_run_id).settings["train_run"])


def step_seconds(store, score_run_id: str) -> float:
    """A fine-tune submission's training seconds a step (validation included, job start and load not)."""
    summary = _train_run(store, score_run_id).summary
    return summary["train_seconds"] / max(summary["steps"], 1)


def breakdown(store, score_run_id: str, submitted_at: float) -> dict:
    """Where a fine-tune submission's time went: waiting for the job process, loading, training, scoring."""
    train, score = _train_run(store, score_run_id), store.get(score_run_id)
    summary = train.summary
    evals = store.metrics(train.id).get("eval_s", [])
    return {
        "start_s": train.started - submitted_at,
        "load_s": summary.get("load_seconds"),
        "train_s": summary["train_seconds"],
        "validation_s": sum(v for _, v in evals) if evals else None,
        "save_and_hand_over_s": score.started - train.started - summary["train_seconds"] - summary["load_seconds"],
        "scoring_s": score.finished - score.started,
        "total_s": score.finished - submitted_at,
        "steps": summary["steps"],
    }


def targets(r: dict) -> dict:
    """The class issue's targets, met or not (on 2 CPU cores; 15 + 15, fine-tunes first)."""
    out = {"all_scored_s<=240": r["all_scored_s"] <= 240}
    if "prompt_wait_p95_s" in r:
        out["prompt_wait_p95_s<=30"] = r["prompt_wait_p95_s"] <= 30
        out["prompt_wait_p50_s<=15"] = r["prompt_wait_p50_s"] <= 15
    if "training_slowdown" in r:
        out["training_slowdown<=1.25"] = r["training_slowdown"] <= 1.25
    return out


def render(r: dict) -> str:
    rows = [
        ("alone: a prompt, Submit to score", f"{r['alone_prompt_s']:.1f} s"),
        ("alone: a fine-tune, Submit to score", f"{r['alone_finetune_s']:.1f} s"),
        (f"class of {r['prompts']} + {r['finetunes']}: all scored", f"{r['all_scored_s']:.1f} s"),
        ("the same one after another (estimate)", f"{r['serial_estimate_s']:.1f} s"),
    ]
    if "prompt_wait_p50_s" in r:
        rows += [
            ("prompt waits p50 / p95", f"{r['prompt_wait_p50_s']:.1f} / {r['prompt_wait_p95_s']:.1f} s"),
            ("most prompt scores in one pass", str(r["prompt_batch_max"])),
        ]
    if "finetune_wait_max_s" in r:
        rows += [
            ("longest fine-tune wait", f"{r['finetune_wait_max_s']:.1f} s"),
            ("training slowdown beside scoring", f"{r['training_slowdown']:.2f}x"),
            ("fine-tune mean score", f"{r['finetune_mean_score']:.3f}"),
        ]
    width = max(len(a) for a, _ in rows)
    lines = [f"{a:<{width}}  {b}" for a, b in rows]
    lines += [f"target {k}: {'met' if v else 'NOT met'}" for k, v in r["targets"].items()]
    return "\n".join(lines + [f"note: {n}" for n in r["notes"]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--prompts", type=int, default=15, help="prompt learners (default 15)")
    parser.add_argument("--finetunes", type=int, default=15, help="fine-tune learners (default 15)")
    parser.add_argument("--steps", type=int, default=20, help="training steps of each fine-tune (default 20)")
    parser.add_argument("--examples", type=int, default=40, help="training examples of each fine-tune (default 40)")
    parser.add_argument("--hidden-limit", type=int, default=20, help="hidden examples scored (default 20)")
    parser.add_argument("--finetunes-first", action="store_true", help="every fine-tune submits before the prompts")
    parser.add_argument("--model", default="embedded", help="model of the challenge (default: the embedded SmolLM2)")
    parser.add_argument("--device", default="cpu", help="device of the runs (default cpu)")
    parser.add_argument("--home", default=None, help="data folder (default: a fresh temporary one)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the scores (default 1800)")
    args = parser.parse_args(argv)
    if args.prompts < 0 or args.finetunes < 0 or args.prompts + args.finetunes < 1:
        parser.error("a class needs at least one learner")
    common.quiet_transformers()
    return common.finish(args, run, render)


if __name__ == "__main__":
    sys.exit(main())
