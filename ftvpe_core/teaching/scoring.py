"""A class challenge's scoring: the 'challenge' kind of run (``jobs.kinds``), executed by the short lane's job
process. ``execute_many`` scores every claimed submission in one batched pass through the engine
(``evaluate.run_arms``): prompts on the device's default weights, fine-tunes on float32 with their adapter, each
score exactly the one it gets alone (batch invariance). The hidden examples are read here and nowhere else but
``challenges.reveal``; a score's feedback says what went wrong in aggregate, never a hidden input, and an error is
reworded without the inputs (the cause goes to the job log).
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ftvpe_core import FtvpeError
from ftvpe_core.model import adapters, models
from ftvpe_core.store.runs import RunStore
from ftvpe_core.tasks import evaluate, prompts
from ftvpe_core.teaching import challenges


def _learner_error(e: BaseException) -> str:
    """A scoring failure in words that quote nothing of the hidden inputs."""
    text = str(e)
    if isinstance(e, FtvpeError) and ("context" in text or "tokens" in text):
        return "Scoring failed: a prompt built from a hidden input did not fit the model's context; shorten yours."
    return f"Scoring on the hidden test failed ({type(e).__name__}); your teacher can read the job's log."


class _Stopped(Exception):
    """A scoring run stops between answers: removed by the teacher (cancelled) or the app stopping."""

    def __init__(self, interrupted: bool):
        super().__init__("interrupted" if interrupted else "cancelled")
        self.interrupted = interrupted


def _check_stop(store: RunStore, run_id: str, interrupted: Callable[[], bool] | None) -> None:
    """Raise _Stopped when the teacher removed the submission (its run's cancel flag) or the app stops."""
    if interrupted is not None and interrupted():
        raise _Stopped(True)
    if store.cancel_requested(run_id):
        raise _Stopped(False)


def _summary(task: evaluate.Task, arm: evaluate.ArmResult, n_public: int, train_seconds: float) -> dict:
    """A score run's summary: the public part's score (the live board) and the private part's (the final
    ranking), from the arm's examples in scoring order (public first). Nothing in it is measured on the hidden
    inputs' lengths (no prompt tokens a call, no latency): what a prompt costs is the tokens it adds itself."""
    scores = [r.score for r in arm.examples]
    public_scores, private_scores = scores[:n_public], scores[n_public:]
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {
        "score": mean(public_scores),
        "n": len(public_scores),
        "private_score": mean(private_scores),
        "private_n": len(private_scores),
        "metric": task.metric,
        "train_seconds": train_seconds,
    }


def _log_cause(run_id: str, e: BaseException) -> None:
    """The real cause of a failed score, traceback and all, on the job process's log (its stderr) for the
    teacher; the learner reads only the reworded error."""
    print(f"Run {run_id}: scoring failed; the cause (the learner sees a reworded message):", file=sys.stderr)
    traceback.print_exception(e, file=sys.stderr)
    sys.stderr.flush()


@dataclass
class _Scoring:
    """A claimed score run, read and checked, ready to answer the hidden set."""

    run_id: str
    challenge: challenges.Challenge
    track: str
    template: prompts.PromptSpec | None
    adapter: Path | None
    train_s: float
    model: str | None
    device: str


def _prepare(store: RunStore, run_id: str, interrupted: Callable[[], bool] | None) -> _Scoring:
    run = store.get(run_id)
    challenge = challenges.get(store, run.settings["code"])
    track = run.settings["track"]
    with store.challenge_tables() as tables:
        sub = tables.submission(run.settings["submission"])
    if sub is None or sub["removed"]:
        raise FtvpeError("This submission was removed by the teacher.")
    _check_stop(store, run_id, interrupted)
    adapter, train_s, template = None, 0.0, None
    if track == "finetune":
        train = store.get(run.settings["train_run"])
        if train.status != "complete":
            raise FtvpeError(f"The fine-tune did not finish ({train.status}): {train.error or 'no reason given'}")
        adapter = store.artifact_dir(train.id)
        train_s = float((train.summary or {}).get("train_seconds", 0.0))
    else:
        template = prompts.PromptSpec.from_dict(
            {**json.loads(sub["spec_json"])["prompt"], "task": challenges.PLACEHOLDER}
        )
    return _Scoring(run_id, challenge, track, template, adapter, train_s, run.settings.get("model"), run.device)


def _end(store: RunStore, run_id: str, e: BaseException) -> dict:
    """A score run that could not finish: stopped (cancelled or interrupted), or failed with words for the
    learner (the cause on the job's log)."""
    if isinstance(e, _Stopped):
        if e.interrupted:
            store.interrupt(run_id)
        else:
            store.mark_cancelled(run_id)
        return {"run_id": run_id, "status": str(e)}
    error = str(e) if isinstance(e, FtvpeError) else _learner_error(e)
    if store.get(run_id).status in ("queued", "running"):
        _log_cause(run_id, e)
        store.fail(run_id, error)
    return {"run_id": run_id, "status": "failed", "error": error}


def _score_group(
    store: RunStore, group: list[_Scoring], interrupted: Callable[[], bool] | None
) -> dict[str, dict | BaseException]:
    """Score runs of one model (one adapter, or none) in one batched pass: each run's answers are the ones it
    gets alone (``evaluate.run_arms``). A run removed or failing on its own ends alone; the others go on."""
    out: dict[str, dict | BaseException] = {}
    first = group[0]
    for item in group:
        store.set_progress(item.run_id, 0.05, "Loading the model")
    weights = adapters.WEIGHT_FORMAT if first.adapter else challenges.PROMPT_WEIGHT_FORMAT
    loaded = models.load(first.model, device=first.device, weight_format=weights, adapter=first.adapter)
    ready: list[_Scoring] = []
    for item in group:
        try:
            if item.template is not None:  # the budget again, counted by the scoring model's own tokenizer
                challenges.check_prompt_budget(item.challenge.settings, item.template, loaded.count_tokens)
            ready.append(item)
        except FtvpeError as e:
            out[item.run_id] = e
    tasks = {item.run_id: challenges.hidden_task(item.challenge) for item in ready}
    for item in ready:
        total = len(tasks[item.run_id].examples)
        store.set_progress(item.run_id, 0.1, f"Scoring on {total} hidden examples")

    def progress(index: int, done: int, total: int) -> bool:
        item = ready[index]
        try:
            _check_stop(store, item.run_id, interrupted)  # between answers: Remove and app stop are honoured
        except _Stopped as stop:
            out[item.run_id] = stop
            return False
        store.set_progress(item.run_id, 0.1 + 0.9 * done / max(total, 1), f"Scored {done} of {total} hidden examples")
        return True

    arms = [
        evaluate.ArmSpec(tasks[i.run_id], i.track, challenges.TRACK_LABELS[i.track], (), i.train_s, i.template)
        for i in ready
    ]
    try:
        results = evaluate.run_arms(loaded, arms, None, progress) if arms else []
    except Exception as e:  # noqa: BLE001 - reworded: the original may quote a hidden input
        if len(ready) == 1:
            reworded = FtvpeError(_learner_error(e))
            reworded.__cause__ = e  # the job's log shows the real cause (``_log_cause``); the learner, these words
            return {**out, ready[0].run_id: reworded}
        # One prompt broke the pass (it does not fit the context, say): each run again on its own.
        for item in ready:
            out.update(_score_group(store, [item], interrupted))
        return out
    for item, arm in zip(ready, results):
        if arm is None:
            continue  # stopped: out holds why
        task = tasks[item.run_id]
        n_public = len(challenges.hidden_task(item.challenge, "public").examples)
        summary = _summary(task, arm, n_public, item.train_s)
        # Counts only, over the public part's answers (what the learner's board scored): what the learner is told.
        summary["feedback"] = evaluate.answer_feedback(task, [r.answer for r in arm.examples[:n_public]])
        out[item.run_id] = summary
    return out


def execute_many(store: RunStore, run_ids: list[str], interrupted: Callable[[], bool] | None = None) -> list[dict]:
    """Score claimed 'challenge' runs on their hidden sets; each summary (numbers only) goes to the store.

    Prompt submissions on one model are scored together in one batched pass through the engine (every waiting
    learner's prompt on every hidden input), each getting exactly the score it gets alone; a fine-tune
    submission is scored on its own adapter. Between answers a run stops when the teacher removes its
    submission (marked cancelled) or the app stops (``interrupted`` says True: marked interrupted); one run's
    failure or stop leaves the others going."""
    ended: dict[str, dict | BaseException] = {}
    groups: dict[tuple, list[_Scoring]] = {}
    for run_id in run_ids:
        try:
            item = _prepare(store, run_id, interrupted)
        except Exception as e:  # noqa: BLE001 - this run ends; the others go on
            ended[run_id] = e
            continue
        key = (item.model, item.device, str(item.adapter)) if item.adapter else (item.model, item.device, None)
        groups.setdefault(key, []).append(item)
    for group in groups.values():
        try:
            ended.update(_score_group(store, group, interrupted))
        except Exception as e:  # noqa: BLE001 - the model did not load, say: each run of the group fails
            ended.update({item.run_id: e for item in group})
    out = []
    for run_id in run_ids:
        result = ended.get(run_id)
        if isinstance(result, dict):
            store.artifact_dir(run_id)
            store.finish(run_id, result)
            out.append({"run_id": run_id, "status": "complete", **result})
        else:
            out.append(_end(store, run_id, result or FtvpeError("The run was not scored.")))
    return out


def execute(store: RunStore, run_id: str, interrupted: Callable[[], bool] | None = None) -> dict:
    """Score a claimed 'challenge' run on the hidden set (``execute_many`` with one run: the same pass, so a
    score alone and a score in a class's batch are one and the same). Raises what failed it, marked failed."""
    result = execute_many(store, [run_id], interrupted)[0]
    if result["status"] == "failed":
        raise FtvpeError(result["error"])
    return result
