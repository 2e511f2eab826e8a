"""Benchmark of the app's generation path against a plain float32 ``model.generate``, measured in one run.

App side: ``models.load(...)`` then ``generation.generate(...)`` with the app's default GenerationSettings
(greedy, repetition penalty), once per weight format the app offers on the device. Baseline:
``AutoModelForCausalLM`` in float32 from the same safetensors folder, greedy ``model.generate`` with
``min_new_tokens = max_new_tokens = N``. Both sides decode the same number of tokens from the same chat
prompt (the app's end-of-answer check is switched off during the bench so it cannot stop early), use the
same thread count, and are timed in this process. All torch work here (loads included) runs on the app's
compute thread (``models.compute``), as in the app: torch work on a second thread of the same process
slowed decoding on the compute thread by up to 2.4x when we measured (int8 loaded on the main thread:
21 tok/s; on the compute thread: 51 tok/s). Model loads are timed in fresh subprocesses: cold from
the GGUF file into an empty data folder, warm from the cache it built, each after its imports.

This script measures and prints; it changes nothing in ``ftvpe_core``.

    python bench/generation.py [--json] [--new-tokens 64] [--runs 3] [--skip-cold] [--device auto]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402

TARGET_DECODE_RATIO = 2.0
TARGET_TTFT_S = 0.3
TARGET_WARM_LOAD_S = 3.0
TTFT_PROMPT_TOKENS = 200
EXTRA_FORMATS = ("q4", "float32", "int8", "bfloat16")

DECODE_MESSAGES = common.DECODE_MESSAGES


def ttft_messages(tokenizer, target: int = TTFT_PROMPT_TOKENS) -> tuple[list[dict], int]:
    """A chat prompt of about ``target`` tokens (chat template included): background facts, repeated.

    Returns:
        The messages and their exact token count through the chat template.
    """

    messages = common.facts_messages(lambda m: count_chat_tokens(tokenizer, m), target)
    return messages, count_chat_tokens(tokenizer, messages)


def count_chat_tokens(tokenizer, messages: list[dict]) -> int:
    return len(_chat_inputs(tokenizer, messages, "cpu")["input_ids"][0])


def _chat_inputs(tokenizer, messages: list[dict], device: str):
    return tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    ).to(device)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---------------------------------------------------------------- load times (subprocesses)


def _child_load(model: str, device: str) -> None:
    """Runs in a fresh interpreter: time the imports, then ``models.load`` until ready; print JSON."""
    started = time.perf_counter()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401 - what models.load imports

    from ftvpe_core.model import models

    torch.set_num_threads(os.cpu_count() or 1)
    models.compute(torch.set_num_threads, os.cpu_count() or 1)
    imported = time.perf_counter()
    loaded = models.compute(models.load, model, device)  # as BackgroundLoad does in the app
    _sync(loaded.device)
    ready = time.perf_counter()
    print(
        json.dumps(
            {
                "import_s": imported - started,
                "load_s": ready - imported,
                "from_cache": loaded.from_cache,
                "weight_format": loaded.weight_format,
            }
        )
    )


def timed_load_subprocess(model: str, device: str, home: str) -> dict:
    """Load the model in a fresh Python with ``FTVPE_HOME=home``; the child's timings plus process wall time."""
    env = dict(os.environ, FTVPE_HOME=home)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child-load", "--model", model, "--device", device],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"load subprocess failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    return result


# ---------------------------------------------------------------- decode and TTFT


class _TokenClock:
    """A ``generate`` streamer that only records when each put happens: the prompt first, then each token."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


class Baseline:
    """Plain float32 ``model.generate``: tok/s and TTFT from a token clock; long-prompt TTFT by wall clock.

    It runs on the app's compute thread (``models.compute``), where the app's forward passes run too, so
    both sides use the same OpenMP thread team (see the module docstring).
    """

    def __init__(self, model, tokenizer, device: str, n: int, ttft_msgs: list[dict]):
        self.model, self.tokenizer, self.device, self.n, self.ttft_msgs = model, tokenizer, device, n, ttft_msgs
        pad = tokenizer.pad_token_id
        self.pad = pad if pad is not None else tokenizer.eos_token_id

    def decode_once(self) -> dict:
        from ftvpe_core.model import models

        return models.compute(self._decode)

    def ttft_once(self) -> dict:
        from ftvpe_core.model import models

        return models.compute(self._ttft)

    def _decode(self) -> dict:
        import torch

        clock = _TokenClock()
        started = time.perf_counter()
        inputs = _chat_inputs(self.tokenizer, DECODE_MESSAGES, self.device)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                do_sample=False,
                max_new_tokens=self.n,
                min_new_tokens=self.n,
                pad_token_id=self.pad,
                streamer=clock,
            )
        _sync(self.device)
        new = out.shape[1] - inputs["input_ids"].shape[1]
        first, last = clock.times[1], clock.times[-1]  # times[0] is the prompt being handed over
        return {"tok_s": (new - 1) / (last - first) if new > 1 else 0.0, "ttft_s": first - started, "new_tokens": new}

    def _ttft(self) -> dict:
        import torch

        started = time.perf_counter()
        inputs = _chat_inputs(self.tokenizer, self.ttft_msgs, self.device)
        with torch.inference_mode():
            self.model.generate(**inputs, do_sample=False, max_new_tokens=1, pad_token_id=self.pad)
        _sync(self.device)
        return {"wall_s": time.perf_counter() - started}


class App:
    """The app's path: ``generation.generate`` with the default settings, only max_new_tokens changed."""

    def __init__(self, loaded, n: int, ttft_msgs: list[dict], ignore_eos: bool):
        from ftvpe_core.settings import GenerationSettings

        self.loaded, self.ttft_msgs, self.ignore_eos = loaded, ttft_msgs, ignore_eos
        self.decode_settings = GenerationSettings(max_new_tokens=n, stop_at_end=not ignore_eos)
        self.first_settings = GenerationSettings(max_new_tokens=1)

    def decode_once(self) -> dict:
        from ftvpe_core.model import generation

        r = generation.generate(self.loaded, DECODE_MESSAGES, self.decode_settings)
        return {"tok_s": r.tokens_per_s, "ttft_s": r.ttft_s, "new_tokens": r.new_tokens, "stop": r.stop_reason}

    def ttft_once(self) -> dict:
        from ftvpe_core.model import engine, generation

        # Wall clock around a one-token answer, as for the baseline; the app's own figure is kept too. The
        # engine would reuse the same prompt's keys and values from the last round: forget them, so the
        # prompt is prefilled in full as a new prompt is.
        engine.get(self.loaded).forget_prompts()
        started = time.perf_counter()
        r = generation.generate(self.loaded, self.ttft_msgs, self.first_settings)
        _sync(self.loaded.device)
        return {"wall_s": time.perf_counter() - started, "reported_s": r.ttft_s}


def measure(sides: dict, runs: int) -> dict:
    """One warm-up, then ``runs`` rounds; each round runs every side in turn, so a change in machine load
    during the bench hits all sides alike instead of skewing the ratios. Returns medians per side."""
    decodes: dict = {name: [] for name in sides}
    ttfts: dict = {name: [] for name in sides}
    for round_ in range(runs + 1):
        for name, side in sides.items():
            d, t = side.decode_once(), side.ttft_once()
            if round_:  # round 0 is the warm-up
                decodes[name].append(d)
                ttfts[name].append(t)
    out = {}
    for name in sides:
        ds, ts = decodes[name], ttfts[name]
        out[name] = {
            "decode_tok_s": statistics.median(d["tok_s"] for d in ds),
            "ttft_s_decode_prompt": statistics.median(d["ttft_s"] for d in ds),
            "ttft_s": statistics.median(t["wall_s"] for t in ts),
            "new_tokens": min(d["new_tokens"] for d in ds),
            "runs_tok_s": [round(d["tok_s"], 2) for d in ds],
            "runs_ttft_s": [round(t["wall_s"], 4) for t in ts],
        }
        if "reported_s" in ts[0]:
            out[name]["ttft_s_reported"] = statistics.median(t["reported_s"] for t in ts)
            out[name]["stop_reasons"] = sorted({d["stop"] for d in ds})
    return out


# ---------------------------------------------------------------- the run


def formats_for(device: str, default: str, gguf: bool = True) -> list[str]:
    """The app's default format first, then the other formats the app offers on this device."""
    cpu_only = ("int8", "q4")
    rest = [f for f in EXTRA_FORMATS if f != default and (f not in cpu_only or device == "cpu") and (f != "q4" or gguf)]
    return [default, *rest]


def _weights_folder(source) -> str:
    from ftvpe_core.model import models

    if source.kind in ("embedded", "gguf"):
        return str(models.gguf_cache_dir(Path(source.location)))
    return source.location


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run(args: argparse.Namespace) -> dict:
    """Every measurement in turn: load times, then decode and TTFT of the baseline and each app format."""
    from ftvpe_core import settings
    from ftvpe_core.model import models, quant

    common.quiet_transformers()
    threads = common.use_all_threads()
    device = settings.pick_device(args.device)
    source = models.resolve(args.model)
    default_format = settings.pick_weight_format(device, None, _is_gguf(source), quant.q4_supported())
    report = start_report(args, source.label, device, default_format, threads)
    # The in-process loads in measure_decoding must read the cache that the cold load builds.
    with cold_data_home(_is_gguf(source) and not args.skip_cold) as temp_home:
        measure_cold_load(args, report, source, device, temp_home)
        measure_warm_load(args, report, device)
        results, load_s = measure_decoding(args, report, source, device, default_format)
    add_rows(report, results, load_s, default_format)
    common.note_busy_machine(report, threads)
    add_targets(report, default_format)
    return report


def _is_gguf(source) -> bool:
    return source.kind in ("embedded", "gguf")


def start_report(args: argparse.Namespace, model: str, device: str, default_format: str, threads: int) -> dict:
    """The report's header: what runs where, with the load figures still empty."""
    import torch
    import transformers

    return {
        "model": model,
        "device": device,
        "dtype": default_format,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "new_tokens": args.new_tokens,
        "runs": args.runs,
        "eos_ignored": not args.stop_at_eos,
        "load_cold_s": None,
        "load_cold_process_s": None,
        "load_warm_s": None,
        "load_warm_process_s": None,
        "import_s": None,
        "load_average_start": os.getloadavg(),
        "notes": [],
    }


@contextlib.contextmanager
def cold_data_home(active: bool) -> Iterator[str | None]:
    """With ``active``: an empty data folder as ``FTVPE_HOME`` while the block runs, removed afterwards and the
    former ``FTVPE_HOME`` put back. Yields its path, or None when not active."""
    if not active:
        yield None
        return
    temp_home, home_before = tempfile.mkdtemp(prefix="ftvpe-bench-"), os.environ.get("FTVPE_HOME")
    os.environ["FTVPE_HOME"] = temp_home
    try:
        yield temp_home
    finally:
        shutil.rmtree(temp_home, ignore_errors=True)
        if home_before is None:
            os.environ.pop("FTVPE_HOME", None)
        else:
            os.environ["FTVPE_HOME"] = home_before


def measure_cold_load(args: argparse.Namespace, report: dict, source, device: str, temp_home: str | None) -> None:
    """Time a cold load (GGUF file into the empty ``temp_home``) in a subprocess, or note why there is none;
    without a timed cold load, make sure the cache exists for the warm load."""
    from ftvpe_core.model import models

    gguf = _is_gguf(source)
    if temp_home:
        common.log(f"cold load from the GGUF file into an empty data folder ({temp_home})")
        cold = timed_load_subprocess(args.model, device, temp_home)
        if cold["from_cache"]:
            raise RuntimeError("the cold load found a cache in a fresh data folder")
        report["load_cold_s"], report["load_cold_process_s"] = cold["load_s"], cold["process_s"]
    elif gguf and not models.is_cached(models.gguf_cache_dir(Path(source.location))):
        common.log("--skip-cold but no cache yet: building it first (not timed)")
        models.compute(models.cache_gguf, Path(source.location))
        report["notes"].append("cache built before the warm load (cold load not timed)")
    elif gguf:
        report["notes"].append("--skip-cold: the existing cache was reused, no cold load")
    if not gguf:
        report["notes"].append("not a GGUF source: there is no cache to build, so no cold load")


def measure_warm_load(args: argparse.Namespace, report: dict, device: str) -> None:
    """Time a load from the cache in a fresh subprocess (its imports timed apart)."""
    from ftvpe_core import settings

    common.log("warm load from the cache in a fresh subprocess")
    warm = timed_load_subprocess(args.model, device, str(settings.data_home()))
    report["load_warm_s"], report["load_warm_process_s"] = warm["load_s"], warm["process_s"]
    report["import_s"] = warm["import_s"]


def load_baseline(source, device: str):
    """The baseline's float32 model (on the compute thread) and tokenizer, from the app's safetensors folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftvpe_core import settings
    from ftvpe_core.model import models

    folder = _weights_folder(source)
    common.log(f"baseline: float32 model.generate from {folder}")
    local_only = not settings.downloads_allowed()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=local_only)
    model = models.compute(
        lambda: (
            AutoModelForCausalLM.from_pretrained(
                folder, dtype=torch.float32, use_safetensors=True, local_files_only=local_only
            )
            .eval()
            .to(device)
        )
    )
    return model, tokenizer


def load_app_formats(
    args: argparse.Namespace, device: str, formats: list[str], ttft_msgs: list[dict]
) -> tuple[dict, dict]:
    """``models.load`` once per weight format, as the app loads.

    Returns:
        An ``App`` side per format, and each load's own ``load_seconds``.
    """
    from ftvpe_core.model import models

    sides, load_s = {}, {}
    for fmt in formats:
        common.log(f"app: models.load(weight_format={fmt!r})")
        loaded = models.compute(models.load, args.model, device, fmt)
        load_s[fmt] = loaded.load_seconds
        sides[fmt] = App(loaded, args.new_tokens, ttft_msgs, not args.stop_at_eos)
    return sides, load_s


def measure_decoding(
    args: argparse.Namespace, report: dict, source, device: str, default_format: str
) -> tuple[dict, dict]:
    """Decode and TTFT of the baseline and of every app format, in interleaved rounds (see ``measure``).

    Returns:
        ``measure``'s medians per side, and each format's in-process load seconds.
    """
    model, tokenizer = load_baseline(source, device)
    ttft_msgs, ttft_tokens = ttft_messages(tokenizer)
    report["prompt_tokens_ttft"] = ttft_tokens
    report["prompt_tokens_decode"] = count_chat_tokens(tokenizer, DECODE_MESSAGES)
    sides: dict = {"baseline": Baseline(model, tokenizer, device, args.new_tokens, ttft_msgs)}
    formats = formats_for(device, default_format, _is_gguf(source))
    app_sides, load_s = load_app_formats(args, device, formats, ttft_msgs)
    sides.update(app_sides)
    common.log(f"decoding: 1 warm-up + {args.runs} rounds over {', '.join(sides)}")
    results = measure(sides, args.runs)
    del sides, app_sides, model  # free every model before the temporary data folder they came from is removed
    _free()
    return results, load_s


def add_rows(report: dict, results: dict, load_s: dict, default_format: str) -> None:
    """The baseline row, and a row per format with its ratios to the baseline."""
    baseline = results.pop("baseline")
    report["baseline"] = {"dtype": "float32", **baseline}
    report["formats"] = {}
    for fmt, row in results.items():
        row["load_s_in_process"] = load_s[fmt]
        row["decode_ratio"] = row["decode_tok_s"] / baseline["decode_tok_s"]
        row["ttft_ratio"] = baseline["ttft_s"] / row["ttft_s"]
        row["default"] = fmt == default_format
        report["formats"][fmt] = row


def add_targets(report: dict, default_format: str) -> None:
    """The headline figures (the app's default format against the baseline) and a verdict per target."""
    app, baseline = report["formats"][default_format], report["baseline"]
    report.update(
        decode_tok_s_app=app["decode_tok_s"],
        decode_tok_s_baseline=baseline["decode_tok_s"],
        decode_ratio=app["decode_ratio"],
        ttft_s_app=app["ttft_s"],
        ttft_s_baseline=baseline["ttft_s"],
    )
    warm_s = report["load_warm_s"]
    report["targets"] = {
        "decode_ratio": {"target": f">= {TARGET_DECODE_RATIO}", "value": app["decode_ratio"]},
        "ttft_s_app": {"target": f"< {TARGET_TTFT_S}", "value": app["ttft_s"]},
        "load_warm_s": {"target": f"< {TARGET_WARM_LOAD_S}", "value": warm_s},
    }
    report["targets"]["decode_ratio"]["pass"] = app["decode_ratio"] >= TARGET_DECODE_RATIO
    report["targets"]["ttft_s_app"]["pass"] = app["ttft_s"] < TARGET_TTFT_S
    report["targets"]["load_warm_s"]["pass"] = warm_s is not None and warm_s < TARGET_WARM_LOAD_S
    for row in report["formats"].values():
        row["decode_pass"] = row["decode_ratio"] >= TARGET_DECODE_RATIO
        row["ttft_pass"] = row["ttft_s"] < TARGET_TTFT_S


def _verdict(ok: bool | None) -> str:
    return "PASS" if ok else "FAIL"


def render(r: dict) -> str:
    n, runs = r["new_tokens"], r["runs"]
    eos = "end token ignored" if r["eos_ignored"] else "may stop at the end token"
    lines = [
        f"Generation bench: {r['model']} on {r['device']} ({r['threads']} threads of {r['cpu_count']} CPUs), "
        f"torch {r['torch']}, transformers {r['transformers']}, Python {r['python']}",
        f"{n} new tokens, median of {runs} runs after 1 warm-up. App: models.load + generation.generate, default "
        f"GenerationSettings (greedy, repetition penalty), {eos}.",
        f"Baseline: AutoModelForCausalLM float32 .generate, greedy, min_new_tokens=max_new_tokens={n}, same "
        "safetensors folder and chat template.",
        f"Decode prompt: {r['prompt_tokens_decode']} tokens. TTFT prompt: {r['prompt_tokens_ttft']} tokens "
        "(wall clock of a 1-token answer, tokenizing included).",
        f"Rounds interleave all rows. 1-min load average: {r['load_average_start'][0]:.2f} at start, "
        f"{r['load_average_end'][0]:.2f} at end.",
        "",
    ]
    head = (
        f"{'':<28}{'decode tok/s':>13}{'x base':>8}  {'>=2x':<5}"
        f"{'TTFT@' + str(r['prompt_tokens_ttft']) + ' s':>13}{'x base':>8}  {'<0.3s':<6}"
        f"{'TTFT@' + str(r['prompt_tokens_decode']) + ' s':>12}{'tokens':>8}"
    )
    lines += [head, "-" * len(head)]
    b = r["baseline"]
    lines.append(
        f"{'baseline float32 generate':<28}{b['decode_tok_s']:>13.1f}{1.0:>8.2f}  {'':<5}"
        f"{b['ttft_s']:>13.3f}{1.0:>8.2f}  {'':<6}{b['ttft_s_decode_prompt']:>12.3f}{b['new_tokens']:>8}"
    )
    for fmt, row in r["formats"].items():
        label = f"app {fmt}" + (" (default)" if row["default"] else "")
        lines.append(
            f"{label:<28}{row['decode_tok_s']:>13.1f}{row['decode_ratio']:>8.2f}  {_verdict(row['decode_pass']):<5}"
            f"{row['ttft_s']:>13.3f}{row['ttft_ratio']:>8.2f}  {_verdict(row['ttft_pass']):<6}"
            f"{row['ttft_s_decode_prompt']:>12.3f}{row['new_tokens']:>8}"
        )
    lines += ["", "Model load, fresh subprocess, timed after its imports (interpreter + imports shown apart):"]

    def secs(v):
        return "n/a" if v is None else f"{v:.2f} s"

    lines.append(f"  imports (torch, transformers, ftvpe_core): {secs(r['import_s'])}")
    lines.append(
        f"  cold (GGUF -> safetensors cache -> ready): {secs(r['load_cold_s'])}"
        f"   (whole process {secs(r['load_cold_process_s'])})"
    )
    lines.append(
        f"  warm (cache -> ready):                     {secs(r['load_warm_s'])}"
        f"   (whole process {secs(r['load_warm_process_s'])})"
    )
    for note in r["notes"]:
        lines.append(f"  note: {note}")
    t = r["targets"]
    lines += [
        "",
        f"Targets (app default, {r['dtype']}):",
        f"  decode >= {TARGET_DECODE_RATIO:g}x baseline tok/s: {t['decode_ratio']['value']:.2f}x   "
        f"{_verdict(t['decode_ratio']['pass'])}",
        f"  TTFT < {TARGET_TTFT_S:g} s on the {r['prompt_tokens_ttft']}-token prompt: {t['ttft_s_app']['value']:.3f} s   "
        f"{_verdict(t['ttft_s_app']['pass'])}",
        f"  warm load < {TARGET_WARM_LOAD_S:g} s: {secs(t['load_warm_s']['value'])}   {_verdict(t['load_warm_s']['pass'])}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens each side decodes (default 64)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per figure, after one warm-up (default 3)")
    parser.add_argument("--skip-cold", action="store_true", help="reuse the existing cache; no cold load")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    parser.add_argument("--model", default="embedded", help="model to bench (default: the embedded SmolLM2)")
    parser.add_argument(
        "--stop-at-eos", action="store_true", help="let the app stop at its end token (tok/s over what it made)"
    )
    parser.add_argument("--child-load", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_load:
        _child_load(args.model, args.device)
        return 0
    if not 2 <= args.new_tokens <= 2048:
        parser.error("--new-tokens must be between 2 and 2048")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return common.finish(args, run, render)


if __name__ == "__main__":
    sys.exit(main())
