"""Comparisons: prompt engineering, fine-tuning and both, scored on the same held-out task, with their costs.

``run_comparison`` scores four arms on a task (``evaluate``): the base model with the plain prompt, the base
model with an engineered prompt, a fine-tuned run from the store, and that run with the engineered prompt.
Optional parts: a forgetting probe (general questions, base vs tuned), a data-efficiency study (k-shot
prompting against LoRA on N examples) and the technique ablation. It returns one JSON-ready dict (the
contract of ``figures`` and ``report``) and writes the seed article's six-row table and a recommendation
from the measured numbers. As the 'compare' kind of run (``jobs.kinds``), ``submit`` queues a comparison and
``execute`` runs it in a job process, like fine-tuning; ``pack``, ``on_node`` and ``store_result`` run it on a Ray
node.

All four arms use float32 weights, because a merged adapter needs them: the arms then differ only in their
prompt and their weights, and their latencies compare fairly.

Over 600 lines because the comparison's parts (the four arms, the forgetting probe, the data-efficiency study, the
ablation) build one result dict that the table, the recommendation and the figures read; the kind's functions sit
beside the result they store.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ftvpe_core import FtvpeError, figures
from ftvpe_core.model import adapters, models
from ftvpe_core.settings import GenerationSettings
from ftvpe_core.store.runs import Run, RunStore
from ftvpe_core.tasks import evaluate, prompts
from ftvpe_core.training import finetune

ARM_LABELS = {
    "base": "Base, plain prompt",
    "prompt": "Base + engineered prompt",
    "tuned": "Fine-tuned",
    "tuned+prompt": "Fine-tuned + prompt",
}
DEFAULT_TECHNIQUES = ("role", "few-shot", "context")
KSHOTS = (0, 1, 2, 4, 8)
LORA_SIZES = (10, 50, 0)
"""Training-set sizes of the data-efficiency study; 0 means all the training examples."""
KIND = "compare"
"""The runs this module queues and executes (``jobs.kinds``)."""
RESULT_FILE = "compare.json"
ABLATION_EXAMPLES = 20
"""The ablation scores 16 prompts on at most this many examples of the task (a sample, to stay quick)."""

# General questions with short, checkable answers: does the tuned model still answer them?
FORGETTING_QUESTIONS = [
    "What is the capital of France?",
    "How many days are there in a week?",
    "What do bees make?",
    "What is 12 plus 7?",
    "Name a planet in our solar system.",
    "What colour do you get by mixing blue and yellow?",
    "Which animal is known as the king of the jungle?",
    "What is the opposite of hot?",
    "Write one sentence about the sea.",
    "What do plants need from the sun to grow?",
]


@dataclass
class CompareSettings:
    """What to compare. Every field maps onto one widget of the Compare page and one CLI flag."""

    task: str
    """A built-in dataset (its test split) or a JSONL/CSV file scored whole."""
    run_id: str | None = None
    """A complete fine-tuning run from the store for the tuned arms; None compares the prompt arms only."""
    techniques: tuple[str, ...] = DEFAULT_TECHNIQUES
    """The engineered prompt's techniques (a subset of prompts.TECHNIQUES)."""
    metric: str | None = None
    """Score with this metric instead of the task's own (evaluate.METRICS)."""
    limit: int = 0
    """Score only the first this many examples; 0 scores them all."""
    model: str | None = None
    """The base model when no run is given (a run brings its own base model)."""
    forgetting: bool = True
    """Ask ten general questions of the base and the tuned model."""
    efficiency: bool = False
    """Also measure k-shot prompting against LoRA on 10, 50 and all examples (trains three adapters)."""
    ablation: bool = False
    """Also score all 16 combinations of the techniques."""
    best_techniques: bool = False
    """Engineer the prompt arms with the ablation's best combination instead of ``techniques`` (runs the
    ablation first)."""
    batch_size: int = evaluate.BATCH_SIZE
    """Prompts generated together."""
    efficiency_steps: int = 40
    """Training steps of each LoRA in the data-efficiency study."""
    prompt: dict | None = None
    """A written prompt's fields (``prompts.PromptSpec`` without the task, e.g. a class challenge's best prompt):
    the engineered arms use it, each example as its task, instead of building one from ``techniques``."""

    def __post_init__(self) -> None:
        if isinstance(self.techniques, str):
            self.techniques = tuple(t.strip() for t in self.techniques.split(",") if t.strip())
        self.techniques = tuple(self.techniques)
        unknown = [t for t in self.techniques if t not in prompts.TECHNIQUES]
        if unknown:
            raise FtvpeError(
                f"Unknown technique {', '.join(map(repr, unknown))}: choose from {', '.join(prompts.TECHNIQUES)}."
            )
        if not str(self.task).strip():
            raise FtvpeError("Name a task: a built-in dataset or a JSONL/CSV file.")
        if not isinstance(self.limit, int) or isinstance(self.limit, bool) or self.limit < 0:
            raise FtvpeError(f"The example limit must be 0 (all) or more, got {self.limit!r}.")
        if not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= 64:
            raise FtvpeError(f"The batch size must be between 1 and 64, got {self.batch_size!r}.")
        if not isinstance(self.efficiency_steps, int) or not 1 <= self.efficiency_steps <= 2000:
            raise FtvpeError(f"Efficiency training steps must be between 1 and 2000, got {self.efficiency_steps!r}.")
        if self.metric is not None and self.metric not in evaluate.METRICS:
            raise FtvpeError(f"Unknown metric '{self.metric}': choose from {', '.join(evaluate.METRICS)}.")
        if self.prompt is not None:
            self.techniques = self.template().enabled

    def template(self) -> prompts.PromptSpec | None:
        """The written prompt as a spec whose task each example replaces (None without one)."""
        if self.prompt is None:
            return None
        return prompts.PromptSpec(**{**self.prompt, "task": "(each example goes here)"})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["techniques"] = list(self.techniques)
        return d


Progress = Callable[[float, str], None]


def _no_progress(fraction: float, message: str) -> None:
    pass


def _finetune_run(store: RunStore, run_id: str):
    run = store.get(run_id)
    if run.kind != "finetune":
        raise FtvpeError(f"Run '{run_id}' is a {run.kind} run, not a fine-tuning run.")
    if run.status != "complete":
        raise FtvpeError(f"Run '{run_id}' is {run.status}; only a complete run has an adapter to compare.")
    return run


def _kshot_arm(loaded, task: evaluate.Task, k: int, batch_size: int) -> dict:
    """Score few-shot prompts with exactly k examples (k = 0: the plain prompt)."""
    techniques = ["few-shot"] if k else []
    messages, examples = [], task.examples
    for example in examples:
        spec = evaluate.task_spec(task, example, techniques, k=k)
        messages.append(prompts.build(spec, loaded.count_tokens).messages)
    settings = GenerationSettings(max_new_tokens=evaluate.max_new_tokens(task, techniques), repetition_penalty=1.0)
    answers = evaluate.generate_batch(loaded, messages, settings, batch_size)
    scores = [evaluate.score(task, e, a.text)[0] for e, a in zip(examples, answers)]
    return {
        "k": k,
        "score": sum(scores) / len(scores) if scores else 0.0,
        "mean_prompt_tokens": sum(a.prompt_tokens for a in answers) / len(answers) if answers else 0.0,
    }


def _lora_arm(base, task: evaluate.Task, n: int, train_examples, val_examples, steps: int, batch_size: int) -> dict:
    """Train a quick LoRA on the first n training examples (0: all) and score the plain prompt with it."""
    settings = finetune.from_preset("quick", max_steps=steps, max_train_examples=n, max_val_examples=8)
    model = copy.deepcopy(base.model)  # peft wraps in place: never the shared one
    result = models.compute(
        finetune.train, model, base.tokenizer, train_examples, val_examples, settings, None, None, None, base.device
    )
    loaded = dataclasses.replace(base, model=models.compute(result.peft_model.merge_and_unload))
    arm = evaluate.run_arm(loaded, task, "tuned", ARM_LABELS["tuned"], (), result.train_seconds, batch_size)
    used = min(n, len(train_examples)) if n else len(train_examples)
    return {"n": used, "score": arm.score, "train_seconds": result.train_seconds}


def run_comparison(
    settings: CompareSettings,
    store: RunStore | None = None,
    on_progress: Progress = _no_progress,
    should_stop: Callable[[], bool] | None = None,
    device: str | None = None,
    tuned_run: tuple[Run, Path] | None = None,
    task: evaluate.Task | None = None,
) -> dict:
    """Score the arms and the optional studies; returns the comparison dict (see the module docstring).

    Args:
        device: where to run (the job's device, resolved when it was queued); None: the best one here.
        tuned_run: the fine-tuning run of ``settings.run_id`` and its adapter folder, given where there is no
            store to read them from (a Ray node); None reads them from ``store``.
        task: the task, loaded already (a Ray node may not have the file); None loads ``settings.task``.
    """
    task = task or evaluate.load_task(settings.task, settings.metric, settings.limit or None)
    if not task.examples:
        raise FtvpeError(f"The task '{task.name}' has no examples to score.")
    if settings.run_id and tuned_run is None:
        store = store or RunStore()
        run = _finetune_run(store, settings.run_id)
        tuned_run = (run, store.artifact_dir(run.id))
    run = tuned_run[0] if settings.run_id and tuned_run else None
    model_name = run.settings.get("model") if run else settings.model
    with_ablation = settings.ablation or settings.best_techniques
    steps = 2 + (2 if run else 0) + bool(run and settings.forgetting) + with_ablation
    steps += (len(KSHOTS) + len(LORA_SIZES)) if settings.efficiency else 0
    step = _Steps(steps, on_progress, should_stop or (lambda: False))

    on_progress(0.0, "Loading the base model")
    base = models.load(model_name, device=device, weight_format=adapters.WEIGHT_FORMAT)
    _warm_up(base, task, settings.batch_size)
    techniques, ablation, gains = list(settings.techniques), None, None
    if with_ablation:
        step("Scoring all 16 combinations of the techniques")
        ablation = evaluate.ablate(base, task, min(len(task.examples), ABLATION_EXAMPLES), settings.batch_size)
        gains = evaluate.technique_gains(ablation)
        if settings.best_techniques:
            techniques = best_combination(ablation)
    template = settings.template()
    arms = _score_arms(base, task, ("base", "prompt"), techniques, 0.0, settings.batch_size, step, template)
    forgetting = None
    if run:
        on_progress(step.fraction(), f"Loading the fine-tuned model of run {run.id}")
        tuned = models.load(model_name, device=base.device, weight_format=adapters.WEIGHT_FORMAT, adapter=tuned_run[1])
        _warm_up(tuned, task, settings.batch_size)
        train_s = float((run.summary or {}).get("train_seconds", 0.0))
        arms += _score_arms(
            tuned, task, ("tuned", "tuned+prompt"), techniques, train_s, settings.batch_size, step, template
        )
        if settings.forgetting:
            step("Asking both models ten general questions (forgetting probe)")
            forgetting = forgetting_probe(base, tuned, settings.batch_size)
    efficiency = _data_efficiency(base, task, settings, step) if settings.efficiency else None
    on_progress(1.0, "Writing the summary")
    result = {
        "task": {"name": task.name, "title": task.title, "metric": task.metric, "n": len(task.examples)},
        "model": base.describe()["model"],
        "device": base.device,
        "run_id": run.id if run else None,
        "run": _run_facts(run),
        "techniques": techniques,
        "created": time.time(),
        "settings": settings.to_dict(),
        "arms": [a.to_dict() for a in arms],
        "efficiency": efficiency,
        "forgetting": forgetting,
        "ablation": ablation,
        "gains": gains,
    }
    result["table"] = measured_table(result)
    result["recommendation"] = recommend(result)
    return result


class _Steps:
    """Counts a comparison's steps for its progress bar; calling it starts the next step, or stops the run
    (``Stopped``) when asked to."""

    def __init__(self, total: int, on_progress: Progress, should_stop: Callable[[], bool]) -> None:
        self.total, self.done, self.on_progress, self.should_stop = total, 0, on_progress, should_stop

    def fraction(self) -> float:
        return self.done / self.total

    def __call__(self, message: str) -> None:
        if self.should_stop():
            raise Stopped()
        self.on_progress(self.fraction(), message)
        self.done += 1


_ARM_STEPS = {
    "base": "Scoring the base model with the plain prompt",
    "prompt": "Scoring the base model with the engineered prompt ({techniques})",
    "tuned": "Scoring the fine-tuned model",
    "tuned+prompt": "Scoring the fine-tuned model with the engineered prompt",
}


def _score_arms(
    loaded,
    task,
    names,
    techniques,
    train_s: float,
    batch_size: int,
    step: _Steps,
    template: prompts.PromptSpec | None = None,
) -> list:
    """Score one model without and with the engineered prompt (arms base/prompt or tuned/tuned+prompt); a
    written ``template`` is the engineered prompt when given."""
    arms = []
    for name in names:
        step(_ARM_STEPS[name].format(techniques=", ".join(techniques) or "no techniques"))
        engineered = name.endswith("prompt")
        used = techniques if engineered else ()
        arms.append(
            evaluate.run_arm(
                loaded,
                task,
                name,
                ARM_LABELS[name],
                used,
                train_s,
                batch_size,
                template=template if engineered else None,
            )
        )
    return arms


def _data_efficiency(base, task, settings: CompareSettings, step: _Steps) -> dict:
    """k-shot prompting against LoRA on growing slices of the training data."""
    efficiency: dict[str, list] = {"kshot": [], "lora": []}
    for k in KSHOTS:
        step(f"Data efficiency: {k}-shot prompting")
        efficiency["kshot"].append(_kshot_arm(base, task, k, settings.batch_size))
    train_split, val_split = _training_data(task)
    for n in LORA_SIZES:
        step(f"Data efficiency: LoRA on {n or 'all'} examples")
        efficiency["lora"].append(
            _lora_arm(base, task, n, train_split, val_split, settings.efficiency_steps, settings.batch_size)
        )
    return efficiency


def best_combination(ablation: list[dict]) -> list[str]:
    """The techniques of the best-scoring combination; among equal scores, the one with fewer prompt tokens."""
    return list(max(ablation, key=lambda c: (c["score"], -c["mean_prompt_tokens"]))["techniques"])


def _warm_up(loaded, task: evaluate.Task, batch_size: int) -> None:
    """A short untimed batch like the real ones, so one-off start-up costs (first kernels for batched shapes,
    buffers) land on no arm's latency: without it the first arm measured 1.4-2 s an answer on 8 examples,
    against about 0.1-0.2 s for the others."""
    examples = task.examples[:batch_size]
    messages = [prompts.build(evaluate.task_spec(task, e, []), loaded.count_tokens).messages for e in examples]
    evaluate.generate_batch(loaded, messages, GenerationSettings(max_new_tokens=2), batch_size)


class Stopped(Exception):
    """The user cancelled the comparison (or the app stopped)."""


def _training_data(task: evaluate.Task) -> tuple[list, list]:
    """Training and validation examples for the data-efficiency LoRAs: the task's shots pool (the built-in
    training split), with a few held back for validation."""
    pool = list(task.shots)
    if len(pool) < 12:
        raise FtvpeError("The data-efficiency study needs a training split of at least 12 examples (a built-in task).")
    return pool[8:], pool[:8]


def _run_facts(run) -> dict | None:
    if run is None:
        return None
    s = run.summary or {}
    return {
        "id": run.id,
        "dataset": run.dataset,
        "preset": finetune.preset_label(run.settings),
        "steps": s.get("steps"),
        "train_seconds": s.get("train_seconds"),
        "tokens_seen": s.get("tokens_seen"),
        "trainable_parameters": s.get("trainable_parameters"),
        "total_parameters": s.get("total_parameters"),
        "train_examples": run.settings.get("max_train_examples") or None,
    }


def forgetting_probe(base, tuned, batch_size: int = evaluate.BATCH_SIZE) -> list[dict]:
    """The ten general questions answered by the base and the tuned model (greedy, up to 40 tokens)."""
    settings = GenerationSettings(max_new_tokens=40, repetition_penalty=1.15)
    messages = [[{"role": "user", "content": q}] for q in FORGETTING_QUESTIONS]
    base_answers = evaluate.generate_batch(base, messages, settings, batch_size)
    tuned_answers = evaluate.generate_batch(tuned, messages, settings, batch_size)
    return [
        {"question": q, "base": b.text, "tuned": t.text}
        for q, b, t in zip(FORGETTING_QUESTIONS, base_answers, tuned_answers)
    ]


# What the numbers say


def _arms(result: dict) -> dict[str, dict]:
    return {a["name"]: a for a in result.get("arms") or []}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f} %"


def measured_table(result: dict) -> list[dict]:
    """The seed article's six-row table with this comparison's numbers filled in."""
    arms = _arms(result)
    base, prompt, tuned = arms.get("base"), arms.get("prompt"), arms.get("tuned")
    task = result["task"]
    metric = figures.metric_words(task["metric"])
    run = result.get("run") or {}
    techniques = ", ".join(result.get("techniques") or []) or "none"
    rows = []
    if tuned:
        ft_purpose = (
            f"Specialise the model: {_pct(tuned['score'])} {metric} on {task['title']} (base {_pct(base['score'])})"
        )
        trainable, total = run.get("trainable_parameters"), run.get("total_parameters")
        share = f", {trainable:,} of {total:,} weights ({trainable / total:.2%})" if trainable and total else ""
        ft_method = f"Trained a LoRA adapter for {run.get('steps')} steps on {run.get('dataset')}{share}"
        ft_difficulty = "Needs labelled examples and a training job (here a built-in training split)"
        ft_cost = (
            f"{tuned['train_seconds']:.0f} s of training, then {tuned['mean_prompt_tokens']:.0f} prompt tokens a call"
        )
        ft_speed = f"{tuned['mean_latency_s']:.2f} s per answer, after {tuned['train_seconds']:.0f} s of training"
    else:
        ft_purpose = ft_method = ft_difficulty = ft_cost = ft_speed = "Pick a fine-tuning run to measure it"
    pe_purpose = f"Steer the model as it is: {_pct(prompt['score'])} {metric} (plain prompt {_pct(base['score'])})"
    pe_method = f"Rewrote the prompt with {techniques}"
    extra_tokens = prompt["mean_prompt_tokens"] - base["mean_prompt_tokens"]
    pe_difficulty = f"Needs careful wording: {extra_tokens:+.0f} tokens of instructions and examples per call"
    pe_cost = f"0 s of training, then {prompt['mean_prompt_tokens']:.0f} prompt tokens a call"
    pe_speed = f"{prompt['mean_latency_s']:.2f} s per answer, from the first try"
    calls = figures.break_even_calls(tuned, prompt) if tuned else None
    if tuned is None:
        ft_use = pe_use = "Pick a fine-tuning run to compare"
    elif calls is None:
        ft_use = "Here its answers are no faster, so it pays only through quality"
        pe_use = "Cheaper at any volume here; fine-tune only for quality"
    else:
        ft_use = f"High volume: its compute pays back after about {calls:,.0f} calls"
        pe_use = f"Fewer than about {calls:,.0f} calls, or while the task still changes"
    for feature, ft, pe in (
        ("Purpose", ft_purpose, pe_purpose),
        ("Method", ft_method, pe_method),
        ("Difficulty", ft_difficulty, pe_difficulty),
        ("Cost", ft_cost, pe_cost),
        ("Speed", ft_speed, pe_speed),
        ("Use case", ft_use, pe_use),
    ):
        rows.append({"Feature": feature, "Fine-tuning": ft, "Prompt engineering": pe})
    return rows


def recommend(result: dict) -> str:
    """'Prompt or fine-tune?' written from the measured numbers (markdown)."""
    arms = _arms(result)
    base, prompt, tuned, both = (arms.get(n) for n in ("base", "prompt", "tuned", "tuned+prompt"))
    metric = figures.metric_words(result["task"]["metric"])
    lines = []
    gain_prompt = prompt["score"] - base["score"]
    lines.append(
        f"The engineered prompt moved {metric} from {_pct(base['score'])} to {_pct(prompt['score'])} "
        f"({100 * gain_prompt:+.0f} points) at no training cost, for "
        f"{prompt['mean_prompt_tokens'] - base['mean_prompt_tokens']:+.0f} prompt tokens a call."
    )
    if tuned is None:
        lines.append("Pick a fine-tuning run of this task to see whether training beats the prompt.")
        return "\n\n".join(lines)
    gap = tuned["score"] - prompt["score"]
    calls = figures.break_even_calls(tuned, prompt)
    pays = (
        f"its compute pays back after about {calls:,.0f} calls"
        if calls is not None
        else "its answers are no faster, so it pays back only through quality"
    )
    if gap >= 0.10:
        lines.append(
            f"**Fine-tune.** The tuned model scores {_pct(tuned['score'])}, {100 * gap:.0f} points above the best "
            f"prompt, after {tuned['train_seconds']:.0f} s of training; {pays}."
        )
    elif gap > -0.05:
        lines.append(
            f"**Either works; start with the prompt.** Fine-tuning reaches {_pct(tuned['score'])} against the "
            f"prompt's {_pct(prompt['score'])} ({100 * gap:+.0f} points) but costs {tuned['train_seconds']:.0f} s of "
            f"training and a dataset; {pays}."
        )
    else:
        lines.append(
            f"**Prompt.** The prompt scores {_pct(prompt['score'])}, above the tuned model's {_pct(tuned['score'])}: "
            "this run did not learn the task well enough (more data, steps or a better preset may change that)."
        )
    if both is not None:
        extra = both["score"] - max(tuned["score"], prompt["score"])
        if extra >= 0.03:
            lines.append(
                f"- **Combine them**: the tuned model with the prompt reaches {_pct(both['score'])}, "
                f"{100 * extra:.0f} points above either alone (the article's complementary use)."
            )
        elif extra <= -0.03:
            best = "fine-tuned model" if tuned["score"] >= prompt["score"] else "engineered prompt"
            why = (
                " The model learned the task from its data, and the extra instructions pull it away from it."
                if best == "fine-tuned model"
                else ""
            )
            lines.append(
                f"- **Do not stack them here**: the tuned model with the prompt scores {_pct(both['score'])}, below "
                f"the {best} alone ({_pct(max(tuned['score'], prompt['score']))}).{why}"
            )
        else:
            lines.append(f"- The prompt on top of the tuned model gives {_pct(both['score'])}: little to add here.")
    forgetting = result.get("forgetting")
    if forgetting:
        same = sum(f["base"].strip() == f["tuned"].strip() for f in forgetting)
        lines.append(
            f"- Forgetting probe: on {len(forgetting)} general questions the tuned model answered {same} exactly as "
            "the base did; read the others to see what specialising cost."
        )
    return "\n\n".join(lines)


# As a job


def submit(
    settings: CompareSettings, store: RunStore | None = None, device: str | None = None, learner: str | None = None
) -> str:
    """Queue a comparison for the runner (``runners``); checks the task and run first. Returns its run id."""

    store = store or RunStore()
    task = evaluate.load_task(settings.task, settings.metric, settings.limit or None)
    if settings.run_id:
        _finetune_run(store, settings.run_id)
    record = {**settings.to_dict(), "dataset_title": task.title, "preset": "compare"}
    return store.create(KIND, task.name, record, device, learner)


def execute(
    store: RunStore,
    run_id: str,
    interrupted: Callable[[], bool] | None = None,
    on_event: Callable[[dict], None] | None = None,
) -> dict:
    """Run a claimed comparison; the result goes to ``runs/<id>/compare.json``, the summary to the store.

    Returns:
        {'run_id', 'status', ...summary}; the full result is ``load_result(store, run_id)``.
    """
    run = store.get(run_id)
    s = {k: v for k, v in run.settings.items() if k in CompareSettings.__dataclass_fields__}
    try:
        settings = CompareSettings(**s)

        def should_stop() -> bool:
            return store.cancel_requested(run_id) or (interrupted is not None and interrupted())

        def progress(fraction: float, message: str) -> None:
            event = {"fraction": fraction, "message": message}
            store.record(run_id, event)
            if on_event:
                on_event(event)

        started = time.perf_counter()
        result = run_comparison(settings, store, progress, should_stop, device=run.device)
        return complete(store, run_id, result, time.perf_counter() - started)
    except Stopped:
        return stopped(store, run_id, interrupted is not None and interrupted())
    except BaseException as e:
        store.fail_unless_ended(run_id, e)
        raise


def complete(store: RunStore, run_id: str, result: dict, seconds: float) -> dict:
    """Store a comparison's result in its folder and its summary, with the 'complete' mark last (the job process
    calls this for its own run, a Ray dispatcher for the result a task sent back)."""
    (store.artifact_dir(run_id) / RESULT_FILE).write_text(json.dumps(result), encoding="utf-8")
    summary = {
        "seconds": seconds,
        "arms": {a["name"]: a["score"] for a in result["arms"]},
        "metric": result["task"]["metric"],
        "n": result["task"]["n"],
    }
    store.finish(run_id, summary)
    return {"run_id": run_id, "status": "complete", **summary}


def stopped(store: RunStore, run_id: str, interrupted: bool) -> dict:
    """Mark a comparison that stopped before its end: interrupted (its app stopped) or cancelled."""
    if interrupted:
        store.interrupt(run_id)
        return {"run_id": run_id, "status": "interrupted"}
    store.mark_cancelled(run_id)
    return {"run_id": run_id, "status": "cancelled"}


def load_result(store: RunStore, run_id: str) -> dict:
    """The stored result of a complete comparison."""
    run = store.get(run_id)
    if run.kind != KIND or run.status != "complete":
        raise FtvpeError(f"Run '{run_id}' is not a complete comparison.")
    path = store.artifact_dir(run_id) / RESULT_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FtvpeError(f"The result of comparison '{run_id}' cannot be read ({path}): {e}") from e


# On a Ray cluster (``jobs.kinds``: a kind ``on_ray``)


def pack(store: RunStore, run: Run, options: dict) -> dict:
    """What a node needs to run the comparison ``run``: its settings and task, and the tuned run's adapter files."""
    s = {k: v for k, v in run.settings.items() if k in CompareSettings.__dataclass_fields__}
    settings = CompareSettings(**s)
    job = {"settings": s, "task": evaluate.load_task(settings.task, settings.metric, settings.limit or None)}
    if settings.run_id:
        tuned = store.get(settings.run_id)
        folder = store.artifact_dir(tuned.id)
        job["tuned"] = (tuned, {p.name: p.read_bytes() for p in adapters.files(folder)})
    return job


def on_node(job: dict, folder: Path, device: str, send: Callable[[dict], None], should_stop) -> dict:
    """Run the packed comparison on this node; its phases go to ``send``.

    Returns:
        {'status': 'complete', 'result', 'seconds'} or {'status': 'stopped'}.
    """
    tuned = None
    if job.get("tuned"):
        run, files = job["tuned"]
        for name, data in files.items():
            (folder / name).write_bytes(data)
        tuned = (run, folder)
    settings = CompareSettings(**job["settings"])
    started = time.perf_counter()
    try:
        result = run_comparison(
            settings, None, lambda f, m: send({"fraction": f, "message": m}), should_stop, device, tuned, job["task"]
        )
    except Stopped:
        return {"status": "stopped"}
    return {"status": "complete", "result": result, "seconds": time.perf_counter() - started}


def store_result(store: RunStore, run_id: str, out: dict, interrupted: bool) -> dict:
    """Write what a node sent back: the result with the 'complete' mark, or the stop."""
    if out["status"] == "stopped":
        return stopped(store, run_id, interrupted)
    return complete(store, run_id, out["result"], out["seconds"])
