"""Benchmark of K quick-demo runs queued at once, trained by the local runner and by the Ray runner, in one run.

For each K (default 1, 2, 4): K learners queue the quick preset on support triage at the same moment; the figure
is the wall time from the queue to the last run's complete mark, through

- **local**: the job process's loop (``worker.serve``), one run at a time on this machine, torch on every CPU;
- **ray**: the Ray dispatcher's loop (``worker.serve`` with ``worker.RAY``), as many runs at once as the cluster
  has slots (``FTVPE_RAY_CPUS`` CPUs a run, default 1), on a Ray head this script starts on this machine with
  every CPU (or on the cluster at ``--address``).

Both write the same store the app reads. On one 2-core machine Ray can only split the same two cores between
runs: expect no gain, and the Ray workers' start (imports) on top. See bench/README.md for how it scales with
nodes.

    python bench/cluster.py [--json] [--k 1,2,4] [--steps N] [--model embedded] [--address HOST:PORT]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402

DATASET = "support_triage"


def queue_and_train(home: Path, k: int, steps: int | None, model: str | None, runner: str) -> dict:
    """Queue K runs from K learners in a fresh store and train them all through ``runner``; the wall time."""
    from ftvpe_core import FtvpeError
    from ftvpe_core.jobs import runners, worker
    from ftvpe_core.store.runs import RunStore
    from ftvpe_core.training import finetune, tuning

    store = RunStore(home)
    overrides = {"max_steps": steps, "epochs": 0} if steps else {}
    settings = finetune.from_preset("quick", **overrides)
    ids = [tuning.submit(DATASET, settings, model, "cpu", store, "quick", learner=f"learner-{i}") for i in range(k)]
    began = time.perf_counter()
    runners.serve(store, worker.RAY if runner == "ray" else "cpu", log=lambda m: common.log(f"{runner}: {m}"))
    wall = time.perf_counter() - began
    done = [store.get(i) for i in ids]
    failed = [f"{r.id}: {r.status} ({r.error})" for r in done if r.status != "complete"]
    if failed:
        raise FtvpeError(f"{runner} runner: not every run completed: {'; '.join(failed)}")
    return {
        "wall_s": wall,
        "runs": k,
        "per_run_s": [r.finished - r.started for r in done],
        "nodes": sorted({r.node for r in done}),
    }


def run(args) -> dict:
    from ftvpe_core import FtvpeError
    from ftvpe_core.jobs import ray_runner

    ks = [int(k) for k in args.k.split(",") if k.strip()]
    if not ks or min(ks) < 1:
        raise FtvpeError(f"--k takes whole numbers of runs, 1 or more, e.g. 1,2,4; got '{args.k}'.")
    threads = common.use_all_threads()
    common.quiet_transformers()
    report = {
        "k": ks,
        "cpus": threads,
        "dataset": DATASET,
        "steps": args.steps,
        "model": args.model or "embedded",
        "local": {},
        "ray": {},
        "ray_vs_local": {},
    }
    with tempfile.TemporaryDirectory(prefix="ftray", dir="/tmp") as temp:
        with _cluster(args.address, threads, temp) as address:
            report["address"] = "local head" if args.address is None else address
            for k in ks:
                for runner in ("local", "ray"):
                    common.log(f"K={k}: {runner} runner")
                    # With a cluster configured, this machine's job processes leave fine-tunes to it.
                    if runner == "ray":
                        os.environ["FTVPE_RAY_ADDRESS"] = address
                    else:
                        os.environ.pop("FTVPE_RAY_ADDRESS", None)
                    report[runner][str(k)] = queue_and_train(
                        Path(temp) / f"{runner}-{k}", k, args.steps, args.model, runner
                    )
                local, ray = report["local"][str(k)]["wall_s"], report["ray"][str(k)]["wall_s"]
                report["ray_vs_local"][str(k)] = local / ray  # above 1: Ray finished the K runs sooner
            ray_runner.connect(address)
            report["ray_slots"] = ray_runner.slots()
    return report


def _cluster(address: str | None, cpus: int, temp: str):
    from contextlib import nullcontext

    from ftvpe_core.jobs import ray_runner

    return nullcontext(address) if address else ray_runner.local_head(cpus, temp)


def render(r: dict) -> str:
    lines = [
        f"K quick-demo runs ({r['dataset']}, {r['steps'] or 'preset'} steps, {r['model']}) queued at once, "
        f"wall time to the last complete mark; {r['cpus']} CPUs here, Ray: {r['address']}, {r['ray_slots']} slots",
        "",
        "| K | local runner | Ray runner | Ray vs local |",
        "|---|---|---|---|",
    ]
    for k in r["k"]:
        key = str(k)
        lines.append(
            f"| {k} | {r['local'][key]['wall_s']:.1f} s | {r['ray'][key]['wall_s']:.1f} s | "
            f"{r['ray_vs_local'][key]:.2f}x |"
        )
    lines += ["", "Above 1x, Ray finished the K runs sooner. On one machine both runners share the same CPUs."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--k", default="1,2,4", help="how many runs are queued at once, comma-separated (default 1,2,4)")
    p.add_argument("--steps", type=int, help="training steps of each run (default: the quick preset's)")
    p.add_argument("--model", help="'embedded' (default), a folder, a .gguf file")
    p.add_argument("--address", help="a running Ray cluster (default: start a head on this machine)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return common.finish(p.parse_args(argv), run, render)


if __name__ == "__main__":
    sys.exit(main())
