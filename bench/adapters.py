"""Benchmark of base and fine-tuned requests at once, served two ways, in one run.

A class asks the base model and a fine-tuned one at the same moment (the Fine-Tune Lab's "Ask both", Compare's
arms, a challenge's prompt and fine-tune tracks). Two ways to serve N base and N tuned requests:

- **turns** (what the app does): the adapter merged into its own float32 model, each model with its own engine;
  the two engines take turns on the compute thread, each decoding its N rows as one batch (the lean step);
- **mixed batch** (peft): one float32 model with the adapter unmerged, all 2N rows in one batch, each row
  naming its adapter (``adapter_names``; base rows skip the LoRA product), decoded by transformers' generate,
  the only decoder that knows per-row adapters.

The reference row decodes the same 2N prompts as one batch through generate on the merged model alone, so the
mixed batch's cost splits into generate's own and the per-row LoRA products'. Every answer decodes exactly
``--new-tokens`` tokens (greedy); the figure is aggregate new tokens per second over the wall time.

    python bench/adapters.py [--json] [--pairs 4] [--new-tokens 64] [--model embedded] [--adapter FOLDER]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402

BASE, TUNED = "__base__", "default"
"""peft's name for "no adapter" in ``adapter_names``, and the name of an adapter loaded without one."""


def prompts_for(loaded, n: int) -> list[list[int]]:
    """N support-triage tickets (the test split, in turn) as chat prompts' token ids."""
    from ftvpe_core.model import generation
    from ftvpe_core.tasks import datasets

    tickets = datasets.load_builtin("support_triage").splits["test"]
    return [
        generation.encode_chat(loaded, [{"role": "user", "content": tickets[i % len(tickets)].prompt}])
        for i in range(n)
    ]


def in_turns(base, tuned, prompts: list[list[int]], new_tokens: int) -> dict:
    """N requests to each model's engine, all submitted together; the engines take turns."""
    from ftvpe_core.model import engine
    from ftvpe_core.settings import GenerationSettings

    settings = GenerationSettings(max_new_tokens=new_tokens, repetition_penalty=1.0, stop_at_end=False)
    engines = [engine.get(base), engine.get(tuned)]
    for e in engines:
        e.forget_prompts()
    began = time.perf_counter()
    requests = [e.submit(ids, settings, owner=f"learner-{i}") for e in engines for i, ids in enumerate(prompts)]
    for r in requests:
        r.wait()
    wall = time.perf_counter() - began
    tokens = sum(len(r.tokens) for r in requests)
    return {"wall_s": wall, "new_tokens": tokens, "agg_tok_s": tokens / wall}


def in_one_batch(model, tokenizer, prompts: list[list[int]], new_tokens: int, adapter_names=None) -> dict:
    """All prompts as one left-padded batch through generate (per-row adapters when ``adapter_names``)."""
    import torch

    from ftvpe_core.model import models

    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    extra = {"adapter_names": adapter_names} if adapter_names is not None else {}

    def decode():
        with torch.inference_mode():
            return model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=pad,
                **extra,
            )

    began = time.perf_counter()
    out = models.compute(decode)
    wall = time.perf_counter() - began
    tokens = int(out.shape[0] * (out.shape[1] - width))
    return {"wall_s": wall, "new_tokens": tokens, "agg_tok_s": tokens / wall}


def run(args) -> dict:
    import torch

    from ftvpe_core import FtvpeError
    from ftvpe_core.model import adapters, models

    threads = os.cpu_count() or 1
    models.compute(torch.set_num_threads, threads)
    folder = Path(args.adapter) if args.adapter else adapters.recorded("support_triage")
    if folder is None:
        raise FtvpeError("No adapter to bench: pass --adapter FOLDER (a run's folder under FTVPE_HOME/runs/).")
    base = models.load(args.model, args.device, weight_format=adapters.WEIGHT_FORMAT)
    tuned = models.load(args.model, base.device, weight_format=adapters.WEIGHT_FORMAT, adapter=folder)
    mixed = models.compute(lambda: adapters.load(copy.deepcopy(base.model), folder))
    prompts = prompts_for(base, args.pairs)
    common.log(f"{base.name} on {base.device}: {args.pairs} base + {args.pairs} tuned requests, warming up")
    in_turns(base, tuned, prompts[:1], 4)
    in_one_batch(mixed, base.tokenizer, prompts[:1] * 2, 4, [BASE, TUNED])
    common.log("turns: two engines")
    turns = in_turns(base, tuned, prompts, args.new_tokens)
    common.log("one mixed batch: peft adapter_names through generate")
    mixed_batch = in_one_batch(
        mixed, base.tokenizer, prompts * 2, args.new_tokens, [BASE] * len(prompts) + [TUNED] * len(prompts)
    )
    common.log("reference: one batch through generate on the merged model")
    reference = in_one_batch(tuned.model, base.tokenizer, prompts * 2, args.new_tokens)
    return {
        "model": base.name,
        "device": base.device,
        "threads": threads,
        "pairs": args.pairs,
        "new_tokens": args.new_tokens,
        "adapter": str(folder),
        "turns": turns,
        "mixed_batch": mixed_batch,
        "generate_reference": reference,
        "turns_vs_mixed": turns["agg_tok_s"] / mixed_batch["agg_tok_s"],
        "faster": "turns" if turns["agg_tok_s"] >= mixed_batch["agg_tok_s"] else "mixed_batch",
    }


def render(r: dict) -> str:
    rows = [
        ("turns: merged models, two engines (the app)", r["turns"]),
        ("one mixed batch: peft adapter_names, generate", r["mixed_batch"]),
        ("reference: one batch, generate, merged model", r["generate_reference"]),
    ]
    lines = [
        f"Base and tuned at once: {r['model']} on {r['device']}, {r['threads']} threads, {r['pairs']} base + "
        f"{r['pairs']} tuned requests of {r['new_tokens']} new tokens",
        "",
        "| how | wall | aggregate tok/s |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {row['wall_s']:.2f} s | {row['agg_tok_s']:.1f} |" for name, row in rows]
    lines += ["", f"Turns / mixed batch: {r['turns_vs_mixed']:.2f}x; faster: {r['faster'].replace('_', ' ')}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--pairs", type=int, default=4, help="base requests, and as many tuned ones (default 4)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens each request decodes (default 64)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    parser.add_argument("--model", default="embedded", help="base model (default: the embedded SmolLM2)")
    parser.add_argument("--adapter", help="an adapter folder trained on it (default: the recorded support triage)")
    args = parser.parse_args(argv)
    if not 1 <= args.pairs <= 32:
        parser.error("--pairs must be between 1 and 32")
    if not 2 <= args.new_tokens <= 1024:
        parser.error("--new-tokens must be between 2 and 1024")
    return common.finish(args, run, render)


if __name__ == "__main__":
    sys.exit(main())
