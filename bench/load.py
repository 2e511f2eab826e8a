"""Benchmark of the engine under a class's load: N concurrent streams, in one run.

N learners press Run at the same moment: N threads each submit one request through the app's path
(``generation.GenerationStream``, the Prompt Lab's streams) and read it to the end. Prompts: the Prompt Lab's
travel preset under a mix of techniques (plain, role, role + context, role + chain-of-thought + context), each
learner's task a little different, so no two prompts are the same (the engine would otherwise reuse a prompt's
keys and values and skip its prefill). Every answer decodes exactly ``--new-tokens`` tokens (greedy, the end
token ignored).

Figures per N: aggregate tokens/s (all new tokens over the wall time from the first submit to the last token),
per-stream decoding tokens/s (median and slowest), time to first token p50/p95 (queueing and prefill
included), the most requests that decoded together, and the process's peak resident memory so far.
The N=1 row is the single-stream figure that the ratios are taken against.

    python bench/load.py [--json] [--streams 1,4,8,20] [--new-tokens 128] [--model embedded]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402

TECHNIQUE_MIX = ((), ("role",), ("role", "context"), ("role", "cot", "context"))
TARGETS = {"agg_8_vs_1": 3.0, "agg_20_vs_1": 4.0, "ttft_p95_20_s": 2.0}


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def learner_messages(loaded, n: int) -> list[list[dict]]:
    """N chats from the travel preset: techniques in turn, each learner's task worded a little differently."""
    from dataclasses import replace

    from ftvpe_core.tasks import presets, prompts

    base = presets.get("travel").spec
    out = []
    for i in range(n):
        spec = replace(base, task=f"{base.task} (learner {i + 1})", enabled=TECHNIQUE_MIX[i % len(TECHNIQUE_MIX)])
        out.append(prompts.build(spec, loaded.count_tokens).messages)
    return out


def one_load(loaded, n: int, new_tokens: int) -> dict:
    """N streams submitted together; returns the figures of this N."""
    from ftvpe_core.model import engine, generation
    from ftvpe_core.settings import GenerationSettings

    settings = GenerationSettings(max_new_tokens=new_tokens, repetition_penalty=1.0, stop_at_end=False)
    chats = learner_messages(loaded, n)
    scheduler = engine.get(loaded)
    scheduler.forget_prompts()
    scheduler.peak_rows = 0
    results: list = [None] * n
    errors: list[BaseException] = []
    barrier = threading.Barrier(n + 1)

    def learner(i: int) -> None:
        try:
            barrier.wait()
            stream = generation.GenerationStream(loaded, chats[i], settings, owner=f"learner-{i}")
            for _ in stream:
                pass
            results[i] = stream.result
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=learner, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    if errors:
        raise errors[0]
    tokens = sum(r.new_tokens for r in results)
    per_stream = [r.tokens_per_s for r in results]
    ttfts = [r.ttft_s for r in results]
    return {
        "streams": n,
        "wall_s": wall,
        "new_tokens": tokens,
        "agg_tok_s": tokens / wall,
        "stream_tok_s_median": statistics.median(per_stream),
        "stream_tok_s_slowest": min(per_stream),
        "ttft_p50_s": _percentile(ttfts, 0.5),
        "ttft_p95_s": _percentile(ttfts, 0.95),
        "prompt_tokens": [r.prompt_tokens for r in results],
        "peak_batch": scheduler.peak_rows,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run(args) -> dict:
    import torch

    from ftvpe_core.model import engine, generation, models
    from ftvpe_core.settings import GenerationSettings

    threads = os.cpu_count() or 1
    models.compute(torch.set_num_threads, threads)
    loaded = models.load(args.model, args.device)
    engine.configure(loaded, engine.EngineSettings.for_device(loaded.device))
    common.log(f"{loaded.name} on {loaded.device} ({loaded.weight_format}); warming up")
    generation.generate(loaded, learner_messages(loaded, 1)[0], GenerationSettings(max_new_tokens=8))
    rows = []
    for n in args.streams:
        common.log(f"{n} stream{'s' if n != 1 else ''} of {args.new_tokens} tokens")
        rows.append(one_load(loaded, n, args.new_tokens))
    by_n = {str(r["streams"]): r for r in rows}
    single = by_n.get("1", rows[0])["agg_tok_s"]
    report = {
        "model": loaded.name,
        "device": loaded.device,
        "dtype": loaded.weight_format,
        "threads": threads,
        "new_tokens": args.new_tokens,
        "max_batch": engine.get(loaded).settings.max_batch,
        "single_stream_tok_s": by_n["1"]["stream_tok_s_median"] if "1" in by_n else None,
        "agg_tok_s": {k: r["agg_tok_s"] for k, r in by_n.items()},
        "agg_vs_single": {k: r["agg_tok_s"] / single for k, r in by_n.items()},
        "ttft_p50_s": {k: r["ttft_p50_s"] for k, r in by_n.items()},
        "ttft_p95_s": {k: r["ttft_p95_s"] for k, r in by_n.items()},
        "rows": rows,
    }
    if {"1", "8", "20"} <= set(by_n):
        checks = {
            "agg_8_vs_1": report["agg_vs_single"]["8"] >= TARGETS["agg_8_vs_1"],
            "agg_20_vs_1": report["agg_vs_single"]["20"] >= TARGETS["agg_20_vs_1"],
            "ttft_p95_20_s": report["ttft_p95_s"]["20"] <= TARGETS["ttft_p95_20_s"],
        }
        report["targets"] = {"limits": TARGETS, "pass": checks}
    return report


def render(r: dict) -> str:
    lines = [
        f"Engine under load: {r['model']} on {r['device']} ({r['dtype']}), {r['threads']} threads, "
        f"{r['new_tokens']} new tokens a stream, max batch {r['max_batch']}",
        "",
        "| streams | aggregate tok/s | vs 1 stream | per stream tok/s (median / slowest) | first token p50 / p95 "
        "| peak batch | peak RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        k = str(row["streams"])
        lines.append(
            f"| {k} | {row['agg_tok_s']:.1f} | {r['agg_vs_single'][k]:.2f}x | {row['stream_tok_s_median']:.1f} / "
            f"{row['stream_tok_s_slowest']:.1f} | {row['ttft_p50_s']:.2f} s / {row['ttft_p95_s']:.2f} s "
            f"| {row['peak_batch']} | {row['peak_rss_mb']:.0f} MB |"
        )
    if "targets" in r:
        lines += [
            "",
            "Targets: " + ", ".join(f"{k} {'pass' if v else 'FAIL'}" for k, v in r["targets"]["pass"].items()),
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--streams", default="1,4,8,20", help="comma-separated stream counts (default 1,4,8,20)")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens each stream decodes (default 128)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    parser.add_argument("--model", default="embedded", help="model to bench (default: the embedded SmolLM2)")
    args = parser.parse_args(argv)
    try:
        args.streams = [int(n) for n in args.streams.split(",")]
    except ValueError:
        parser.error("--streams takes whole numbers separated by commas, e.g. 1,4,8,20")
    if any(n < 1 or n > 256 for n in args.streams):
        parser.error("each stream count must be between 1 and 256")
    if not 2 <= args.new_tokens <= 2048:
        parser.error("--new-tokens must be between 2 and 2048")
    return common.finish(args, run, render)


if __name__ == "__main__":
    sys.exit(main())
