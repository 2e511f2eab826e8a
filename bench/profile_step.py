"""Where a decoding step's time goes: the torch profiler over the engine's step, top ops and their share.

The step is the engine's own (``fastpath.decode_step``, the only decoding step there is): ``--rows`` rows of one
token each, every row holding ``--positions`` earlier positions in a slot cache of the engine's layout (per layer
a (rows, kv_heads, length, head_dim) tensor), warmed up, then timed over ``--steps`` steps (median step wall
time, and the thread's CPU time, which moves less than wall time on a busy machine) and profiled over as many.
Ops are the profiler's self CPU time per op name; the share is of the profiled total.

    python bench/profile_step.py [--json] [--rows 1] [--steps 20] [--top 12] [--weights auto|q4|int8|float32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402


def _slot_cache(config, rows: int, length: int) -> tuple[list, list]:
    import torch

    shape = (rows, config.num_key_value_heads, length, config.head_dim)
    keys = [torch.zeros(shape) for _ in range(config.num_hidden_layers)]
    return keys, [torch.zeros(shape) for _ in range(config.num_hidden_layers)]


def _timed_steps(model, rows: int, positions: int, steps: int) -> dict:
    """Median wall and thread-CPU milliseconds of a step, then the profiler's op table over as many steps."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from ftvpe_core.model import fastpath

    keys, values = _slot_cache(model.config, rows, positions + 3 * steps + 8)
    tokens = [5 + i for i in range(rows)]
    with torch.inference_mode():
        for i in range(3):
            fastpath.decode_step(model, tokens, [positions + i] * rows, keys, values)
        wall, cpu = [], []
        for i in range(steps):
            w, c = time.perf_counter(), time.thread_time()
            fastpath.decode_step(model, tokens, [positions + 3 + i] * rows, keys, values)
            wall.append(time.perf_counter() - w)
            cpu.append(time.thread_time() - c)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(steps):
                fastpath.decode_step(model, tokens, [positions + 3 + steps + i] * rows, keys, values)
    ops = [(e.key, e.self_cpu_time_total, e.count) for e in prof.key_averages()]
    return {"step_ms": statistics.median(wall) * 1e3, "step_cpu_ms": statistics.median(cpu) * 1e3, "ops": ops}


def run(args) -> dict:
    from ftvpe_core.model import models

    threads = common.use_all_threads()
    common.quiet_transformers()
    loaded = models.load(args.model, "cpu", args.weights)
    common.log(f"profiling {args.steps} steps of {args.rows} row(s), {loaded.weight_format} weights")
    measured = models.compute(_timed_steps, loaded.model, args.rows, args.positions, args.steps)
    total = sum(us for _, us, _ in measured["ops"]) or 1.0
    ranked = sorted(measured["ops"], key=lambda op: -op[1])[: args.top]
    top = [
        {
            "op": name,
            "share": us / total,
            "ms_per_step": us / 1e3 / args.steps,
            "calls_per_step": count / args.steps,
        }
        for name, us, count in ranked
    ]
    return {
        "model": loaded.name,
        "weights": loaded.weight_format,
        "threads": threads,
        "rows": args.rows,
        "positions": args.positions,
        "steps": args.steps,
        "step_ms": measured["step_ms"],
        "step_cpu_ms": measured["step_cpu_ms"],
        "tok_s": args.rows * 1e3 / measured["step_ms"],
        "ops_per_step": sum(count for _, _, count in measured["ops"]) / args.steps,
        "top_ops": top,
    }


def render(r: dict) -> str:
    lines = [
        f"Decoding step: {r['model']} ({r['weights']}), {r['rows']} row(s) at {r['positions']} positions, "
        f"{r['threads']} threads: {r['step_ms']:.2f} ms a step ({r['step_cpu_ms']:.2f} ms thread CPU), "
        f"{r['tok_s']:.1f} tokens/s, {r['ops_per_step']:.0f} profiled ops a step",
        "",
        "| op | share | ms a step | calls a step |",
        "|---|---|---|---|",
    ]
    for op in r["top_ops"]:
        lines.append(f"| {op['op']} | {op['share']:.1%} | {op['ms_per_step']:.2f} | {op['calls_per_step']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--rows", type=int, default=1, help="rows decoded together (default 1)")
    parser.add_argument("--positions", type=int, default=64, help="positions each row holds already (default 64)")
    parser.add_argument("--steps", type=int, default=20, help="steps timed, then as many profiled (default 20)")
    parser.add_argument("--top", type=int, default=12, help="ops listed (default 12)")
    parser.add_argument("--weights", default="auto", help="auto (default: q4 for the embedded model), q4, int8, ...")
    parser.add_argument("--model", default="embedded", help="model to profile (default: the embedded SmolLM2)")
    args = parser.parse_args(argv)
    for name, low, high in (("rows", 1, 64), ("positions", 1, 4096), ("steps", 1, 1000), ("top", 1, 100)):
        if not low <= getattr(args, name) <= high:
            parser.error(f"--{name} must be between {low} and {high}")
    return common.finish(args, run, render)


if __name__ == "__main__":
    sys.exit(main())
