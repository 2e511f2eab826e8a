"""Benchmark of the app's decoding against llama.cpp on the same GGUF file, measured in one run.

Sides, all greedy, the end token ignored, the same thread count, the same prompt token ids:

- **app q4 and int8**: ``models.load(..., weight_format=...)`` then a ``generation.GenerationStream`` read to
  the end (the Prompt Lab's path through the engine), ``GenerationSettings(max_new_tokens=N,
  repetition_penalty=1.0, stop_at_end=False)``; the engine forgets its prompts before every answer, so each
  prompt is prefilled in full.
- **llama.cpp**: ``llama_cpp.Llama`` (llama-cpp-python, built by ``make bench-peers`` into ``.venv-peers/``) on
  the GGUF file itself, ``n_threads`` = cores, ``Llama.generate(ids, temp=0)`` after ``Llama.reset()`` (so it
  cannot reuse the last prompt's keys and values either). It runs in a child process with the peer
  environment's Python, which reads prompts on stdin and answers with JSON lines; this process imports nothing
  of llama.cpp.
- **transformers float32**: ``models.load(weight_format="float32")`` then ``loaded.model.generate`` with
  ``min_new_tokens = max_new_tokens = N`` (the older baseline of bench/generation.py).

Prompts: the chat template applied to a short question (about 35 tokens) and to a background-facts prompt of
about 200 tokens; both become token ids once, through the app (``generation.encode_chat``), and every side
decodes from exactly those ids. Per prompt and side: decode tokens/s = (new tokens - 1) / time after the first
token; TTFT = time from handing over the token ids to the first new token (tokenizing excluded on every side).
One warm-up round, then ``--runs`` rounds, each running every side in turn; figures are medians.

This script measures and prints; it changes nothing in ``ftvpe_core``. Without the peer it says why in one
line and exits 2 (``--skip-peer`` measures the app sides alone).

    python bench/peers.py [--json] [--runs 3] [--new-tokens 128] [--peer-python .venv-peers/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402 - stdlib only at import, so the peer's Python can run this file too

DEFAULT_PEER_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
APP_FORMATS = ("q4", "int8")
TARGET_DECODE_RATIO = 0.8
"""The app's q4 decode tokens/s at least this share of llama.cpp's."""
TARGET_TTFT_RATIO = 0.7
"""The app's q4 time to first token on the ~200-token prompt at most this share of llama.cpp's."""
PEER_START_TIMEOUT_S = 300
PEER_ANSWER_TIMEOUT_S = 600

SHORT = "35"
LONG = "200"
SHORT_MESSAGES = common.DECODE_MESSAGES

SIDES = ("llamacpp", "app_q4", "app_int8", "transformers_float32")
LABELS = {
    "llamacpp": "llama.cpp (peer)",
    "app_q4": "app q4 (default)",
    "app_int8": "app int8",
    "transformers_float32": "transformers float32 generate",
}


# ---------------------------------------------------------------- the peer (runs in the peer environment)


def serve_peer(gguf: str, threads: int, n_ctx: int) -> int:
    """The child process: load the GGUF file with llama.cpp, say ready, then answer one JSON line per request
    line (``{"ids": [...], "n": N}``) until stdin closes. Any failure is one JSON line ``{"error": ...}``."""

    def say(obj: dict) -> None:
        print(json.dumps(obj), flush=True)

    try:
        import llama_cpp
    except Exception as e:  # noqa: BLE001 - any import failure is reported the same way
        say({"error": f"llama_cpp cannot be imported by {sys.executable} ({type(e).__name__}: {e})"})
        return 2
    try:
        llm = llama_cpp.Llama(
            model_path=gguf, n_ctx=n_ctx, n_batch=512, n_threads=threads, n_threads_batch=threads, verbose=False
        )
    except Exception as e:  # noqa: BLE001
        say({"error": f"llama.cpp could not load {Path(gguf).name} ({type(e).__name__}: {e})"})
        return 2
    info = llama_cpp.llama_print_system_info()
    say({"ready": True, "version": llama_cpp.__version__, "system_info": info.decode(errors="replace").strip()})
    for line in sys.stdin:
        request = json.loads(line)
        ids, n = request["ids"], request["n"]
        llm.reset()  # no reuse of the previous prompt's keys and values: the prompt is prefilled in full
        tokens, times = [], []
        started = time.perf_counter()
        for token in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0):
            times.append(time.perf_counter())
            tokens.append(int(token))
            if len(tokens) >= n:
                break
        say(_figures(started, times, tokens))
    return 0


def _figures(started: float, times: list[float], tokens: list[int]) -> dict:
    """TTFT and decode tokens/s from the moments each new token arrived."""
    after_first = times[-1] - times[0] if len(times) > 1 else 0.0
    return {
        "ttft_s": times[0] - started,
        "tok_s": (len(tokens) - 1) / after_first if after_first > 0 else 0.0,
        "new_tokens": len(tokens),
        "tokens": tokens,
    }


class Peer:
    """llama.cpp in a child process of the peer environment's Python, fed prompt token ids one line at a time."""

    def __init__(self, python: str, gguf: str, threads: int, n_ctx: int):
        from ftvpe_core import FtvpeError

        self.errors = tempfile.TemporaryFile(mode="w+")
        try:
            self.proc = subprocess.Popen(
                [python, str(Path(__file__).resolve()), "--serve-peer", gguf, "--threads", str(threads)]
                + ["--n-ctx", str(n_ctx)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.errors,
                text=True,
                cwd=ROOT,
            )
        except OSError as e:
            raise FtvpeError(f"the llama.cpp peer could not start with {python}: {e.strerror or e}") from None
        ready = self._answer()
        self.version, self.system_info = ready["version"], ready["system_info"]

    def generate(self, ids: list[int], n: int) -> dict:
        self.proc.stdin.write(json.dumps({"ids": ids, "n": n}) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def _answer(self) -> dict:
        from ftvpe_core import FtvpeError

        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=30)
            self.errors.seek(0)
            tail = [s for s in self.errors.read().strip().splitlines() if s.strip()][-1:] or ["no message"]
            raise FtvpeError(f"the llama.cpp peer ended with code {self.proc.returncode} ({tail[0][:300]})")
        answer = json.loads(line)
        if "error" in answer:
            self.close()
            raise FtvpeError(answer["error"])
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.errors.close()


def start_peer(args, source, threads: int) -> Peer:
    """Check that the peer can run on this model and start it; FtvpeError (exit 2) with the reason otherwise."""
    from ftvpe_core import FtvpeError

    python = Path(args.peer_python)
    if not python.is_file():
        raise FtvpeError(f"the llama.cpp peer is not built: {python} does not exist (`make bench-peers` builds it)")
    if source.kind not in ("embedded", "gguf"):
        raise FtvpeError(f"llama.cpp reads GGUF files only, and {source.label} is a {source.kind}, not a GGUF file")
    # Room for the longest prompt and its answer, in llama.cpp's steps of 256 positions.
    n_ctx = max(512, -(-(args.long_tokens + args.new_tokens + 64) // 256) * 256)
    peer = Peer(str(python), source.location, threads, n_ctx)
    common.log(f"llama.cpp peer ready: {python} on {Path(source.location).name}, n_threads={threads}, n_ctx={n_ctx}")
    return peer


# ---------------------------------------------------------------- the app and the transformers baseline


class App:
    """The app's path: a ``GenerationStream`` through the model's engine, read to the end."""

    def __init__(self, loaded, n: int):
        from ftvpe_core.settings import GenerationSettings

        self.loaded = loaded
        self.settings = GenerationSettings(max_new_tokens=n, repetition_penalty=1.0, stop_at_end=False)

    def generate(self, messages: list[dict]) -> dict:
        from ftvpe_core.model import engine, generation

        engine.get(self.loaded).forget_prompts()  # prefill in full, as for a prompt never seen before
        stream = generation.GenerationStream(self.loaded, messages, self.settings)
        for _ in stream:
            pass
        r = stream.result
        return {
            "ttft_s": r.ttft_s,
            "tok_s": r.tokens_per_s,
            "new_tokens": r.new_tokens,
            "tokens": stream.request.tokens,
        }


class _TokenClock:
    """A ``generate`` streamer that records when each put happens: the prompt first, then each new token."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.tokens: list[int] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())
        self.tokens.extend(int(t) for t in value.reshape(-1).tolist())

    def end(self) -> None:
        pass


class Transformers:
    """Plain float32 ``model.generate`` on the app's compute thread (one OpenMP team, as the app's sides)."""

    def __init__(self, loaded, n: int):
        self.loaded, self.n = loaded, n
        tokenizer = loaded.tokenizer
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def generate(self, ids: list[int]) -> dict:
        from ftvpe_core.model import models

        return models.compute(self._generate, ids)

    def _generate(self, ids: list[int]) -> dict:
        import torch

        clock = _TokenClock()
        started = time.perf_counter()
        input_ids = torch.tensor([ids])
        with torch.inference_mode():
            self.loaded.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                do_sample=False,
                repetition_penalty=1.0,
                max_new_tokens=self.n,
                min_new_tokens=self.n,
                pad_token_id=self.pad,
                streamer=clock,
            )
        # times[0] and tokens[:len(ids)] are the prompt being handed over.
        return _figures(started, clock.times[1:], clock.tokens[len(ids) :])


# ---------------------------------------------------------------- prompts and rounds


def long_messages(loaded, target: int) -> list[dict]:
    """A chat prompt of about ``target`` tokens (chat template included) through the app's tokenizer."""
    from ftvpe_core.model import generation

    return common.facts_messages(lambda messages: len(generation.encode_chat(loaded, messages)), target)


def measure(sides: dict, prompts: dict, runs: int) -> dict:
    """One warm-up round, then ``runs`` rounds; in each round every side answers every prompt in turn, so a
    change in machine load hits all sides alike.

    Args:
        sides: name -> a function (prompt name) -> figures.
        prompts: prompt names (keys) to run.

    Returns:
        Per side and prompt: the median figures, the runs' figures, and the tokens of the last run.
    """
    seen: dict = {side: {p: [] for p in prompts} for side in sides}
    for round_ in range(runs + 1):
        common.log(f"round {round_}/{runs}" + (" (warm-up)" if round_ == 0 else ""))
        for prompt in prompts:
            for side, answer in sides.items():
                figures = answer(prompt)
                if round_:
                    seen[side][prompt].append(figures)
    out: dict = {}
    for side, per_prompt in seen.items():
        out[side] = {}
        for prompt, results in per_prompt.items():
            out[side][prompt] = {
                "decode_tok_s": statistics.median(r["tok_s"] for r in results),
                "ttft_s": statistics.median(r["ttft_s"] for r in results),
                "new_tokens": min(r["new_tokens"] for r in results),
                "runs_tok_s": [round(r["tok_s"], 2) for r in results],
                "runs_ttft_s": [round(r["ttft_s"], 4) for r in results],
                "tokens": list(results[-1]["tokens"]),
            }
    return out


def _same_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two answers share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


# ---------------------------------------------------------------- the run


def run(args) -> dict:
    """Start the peer (or fail at once), load the app's formats and the baseline, then measure in rounds."""
    from ftvpe_core.model import generation, models

    common.quiet_transformers()
    source = models.resolve(args.model)
    threads = os.cpu_count() or 1
    peer = None if args.skip_peer else start_peer(args, source, threads)
    try:
        common.use_all_threads()
        report = start_report(args, source, threads, peer)
        gguf = source.kind in ("embedded", "gguf")
        formats = [f for f in APP_FORMATS if f != "q4" or gguf]
        if not gguf:
            report["notes"].append(f"{source.label} is not a GGUF file: no q4 row (q4 keeps a GGUF file's weights)")
        loaded = {}
        for fmt in [*formats, "float32"]:
            common.log(f"app: models.load(weight_format={fmt!r})")
            loaded[fmt] = models.load(args.model, "cpu", fmt)
        first = loaded[formats[0]]
        messages = {SHORT: SHORT_MESSAGES, LONG: long_messages(first, args.long_tokens)}
        ids = {p: generation.encode_chat(first, m) for p, m in messages.items()}
        for prompt_ids in ids.values():  # every side decodes these very ids
            generation.check_fits(first, len(prompt_ids), args.new_tokens)
        report["prompt_tokens"] = {p: len(v) for p, v in ids.items()}

        sides: dict = {}
        if peer is not None:
            sides["llamacpp"] = lambda p: peer.generate(ids[p], args.new_tokens)
        for fmt in formats:
            app = App(loaded[fmt], args.new_tokens)
            sides[f"app_{fmt}"] = lambda p, app=app: app.generate(messages[p])
        baseline = Transformers(loaded["float32"], args.new_tokens)
        sides["transformers_float32"] = lambda p: baseline.generate(ids[p])
        common.log(f"decoding: 1 warm-up + {args.runs} rounds over {', '.join(sides)}")
        results = measure(sides, messages, args.runs)
    finally:
        if peer is not None:
            peer.close()
    add_figures(report, results)
    common.note_busy_machine(report, threads)
    return report


def start_report(args, source, threads: int, peer: Peer | None) -> dict:
    import torch
    import transformers

    return {
        "model": source.label,
        "gguf": source.location if source.kind in ("embedded", "gguf") else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "llama_cpp_python": peer.version if peer else None,
        "llamacpp_system_info": peer.system_info if peer else None,
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "new_tokens": args.new_tokens,
        "runs": args.runs,
        "peer_skipped": peer is None,
        "load_average_start": os.getloadavg(),
        "notes": [],
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def add_figures(report: dict, results: dict) -> None:
    """Rows per side, flat headline fields, ratios against llama.cpp, the targets and the greedy agreement."""
    report["sides"] = {
        side: {p: {k: v for k, v in r.items() if k != "tokens"} for p, r in per.items()}
        for side, per in results.items()
    }

    def figure(side: str, prompt: str, key: str) -> float | None:
        return results[side][prompt][key] if side in results else None

    for side in SIDES:
        report[f"{side}_decode_tok_s"] = figure(side, SHORT, "decode_tok_s")
        report[f"{side}_decode_{LONG}_tok_s"] = figure(side, LONG, "decode_tok_s")
        report[f"{side}_ttft_{SHORT}_s"] = figure(side, SHORT, "ttft_s")
        report[f"{side}_ttft_{LONG}_s"] = figure(side, LONG, "ttft_s")
    # The headline: the app's default format on the CPU (q4 for a GGUF file), int8 where there is no q4.
    app = "app_q4" if "app_q4" in results else "app_int8"
    report["app_format"] = app.removeprefix("app_")
    report["app_decode_tok_s"] = report[f"{app}_decode_tok_s"]
    report["app_decode_200_tok_s"] = report[f"{app}_decode_{LONG}_tok_s"]
    report["app_ttft_35_s"] = report[f"{app}_ttft_{SHORT}_s"]
    report["app_ttft_200_s"] = report[f"{app}_ttft_{LONG}_s"]

    # Ratios app (or baseline) / llama.cpp, for each figure: above 1 is faster decoding, yet slower TTFT.
    report["ratios"] = {}
    for side in SIDES[1:]:
        if side not in results:
            continue
        report["ratios"][side] = {
            f"decode_{p}": _ratio(figure(side, p, "decode_tok_s"), figure("llamacpp", p, "decode_tok_s"))
            for p in (SHORT, LONG)
        } | {f"ttft_{p}": _ratio(figure(side, p, "ttft_s"), figure("llamacpp", p, "ttft_s")) for p in (SHORT, LONG)}
        report[f"{side}_decode_ratio"] = report["ratios"][side][f"decode_{SHORT}"]
        report[f"{side}_ttft_{LONG}_ratio"] = report["ratios"][side][f"ttft_{LONG}"]
    report["decode_ratio"] = report["ratios"][app]["decode_35"]
    report["ttft_200_ratio"] = report["ratios"][app]["ttft_200"]
    decode, ttft = report["decode_ratio"], report["ttft_200_ratio"]
    report["targets"] = {
        "decode_ratio": {
            "target": f">= {TARGET_DECODE_RATIO}",
            "value": decode,
            "pass": None if decode is None else decode >= TARGET_DECODE_RATIO,
        },
        "ttft_200_ratio": {
            "target": f"<= {TARGET_TTFT_RATIO}",
            "value": ttft,
            "pass": None if ttft is None else ttft <= TARGET_TTFT_RATIO,
        },
    }
    # Greedy agreement: how many leading tokens each side's last answer shares with llama.cpp's.
    report["same_leading_tokens_as_llamacpp"] = {
        side: {p: _same_prefix(results[side][p]["tokens"], results["llamacpp"][p]["tokens"]) for p in (SHORT, LONG)}
        for side in SIDES[1:]
        if side in results and "llamacpp" in results
    }


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def render(r: dict) -> str:
    short, long_ = r["prompt_tokens"][SHORT], r["prompt_tokens"][LONG]
    peer = f"llama-cpp-python {r['llama_cpp_python']}" if r["llama_cpp_python"] else "no llama.cpp (--skip-peer)"
    lines = [
        f"Peers bench: {r['model']} on the CPU ({r['threads']} threads of {r['cpu_count']} CPUs), torch {r['torch']}, "
        f"transformers {r['transformers']}, {peer}, Python {r['python']}",
        f"{r['new_tokens']} new tokens, greedy, end token ignored, no repetition penalty; median of {r['runs']} runs "
        "after 1 warm-up; rounds interleave all rows.",
        f"Prompts (chat template applied, the same token ids on every side): {short} and {long_} tokens. TTFT: from "
        "the token ids handed over to the first new token. x llama: this row / llama.cpp's.",
        f"1-min load average: {r['load_average_start'][0]:.2f} at start, {r['load_average_end'][0]:.2f} at end.",
        "",
    ]

    def num(v, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    cols = [
        (f"decode@{short} tok/s", "decode_tok_s", SHORT, ".1f"),
        (f"decode@{long_} tok/s", "decode_tok_s", LONG, ".1f"),
        (f"TTFT@{short} s", "ttft_s", SHORT, ".3f"),
        (f"TTFT@{long_} s", "ttft_s", LONG, ".3f"),
    ]
    head = f"{'':<31}" + "".join(f"{name:>18}{'x llama':>9}" for name, *_ in cols)
    lines += [head, "-" * len(head)]
    for side in SIDES:
        if side not in r["sides"]:
            continue
        ratios = r["ratios"].get(side, {})
        cells = ""
        for _, key, prompt, spec in cols:
            value = r["sides"][side][prompt][key]
            ratio = 1.0 if side == "llamacpp" else ratios.get(f"{key.split('_')[0]}_{prompt}")
            cells += f"{num(value, spec):>18}{num(ratio, '.2f'):>9}"
        lines.append(f"{LABELS[side]:<31}{cells}")
    t = r["targets"]
    lines += [
        "",
        f"Targets (app {r['app_format']} against llama.cpp, same run):",
        f"  decode >= {TARGET_DECODE_RATIO:g}x llama.cpp tok/s (the {short}-token prompt): "
        f"{num(t['decode_ratio']['value'], '.2f')}x   {_verdict(t['decode_ratio']['pass'])}",
        f"  TTFT <= {TARGET_TTFT_RATIO:g}x llama.cpp's on the {long_}-token prompt: "
        f"{num(t['ttft_200_ratio']['value'], '.2f')}x   {_verdict(t['ttft_200_ratio']['pass'])}",
    ]
    if r["same_leading_tokens_as_llamacpp"]:
        lines.append(f"Greedy answers: leading tokens equal to llama.cpp's (of {r['new_tokens']}):")
        for side, same in r["same_leading_tokens_as_llamacpp"].items():
            lines.append(
                f"  {LABELS[side]:<31}{short}-token prompt: {same[SHORT]:>4}   {long_}-token prompt: {same[LONG]:>4}"
            )
    if r["llamacpp_system_info"]:
        lines.append(f"llama.cpp system info: {r['llamacpp_system_info']}")
    for note in r["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens each side decodes (default 128)")
    parser.add_argument("--runs", type=int, default=3, help="timed rounds after one warm-up (default 3)")
    parser.add_argument("--long-tokens", type=int, default=200, help="size of the long prompt (default 200)")
    parser.add_argument("--model", default="embedded", help="model to bench (default: the embedded SmolLM2)")
    parser.add_argument(
        "--peer-python", default=str(DEFAULT_PEER_PYTHON), help="Python with llama_cpp (default .venv-peers/bin/python)"
    )
    parser.add_argument("--skip-peer", action="store_true", help="measure the app and transformers only")
    parser.add_argument("--serve-peer", metavar="GGUF", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help=argparse.SUPPRESS)
    parser.add_argument("--n-ctx", type=int, default=1024, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_peer:
        return serve_peer(args.serve_peer, args.threads, args.n_ctx)
    if not 2 <= args.new_tokens <= 2048:
        parser.error("--new-tokens must be between 2 and 2048")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.long_tokens < 2:
        parser.error("--long-tokens must be at least 2")
    return common.finish(args, run, render)


if __name__ == "__main__":
    sys.exit(main())
