"""A class's prompt submissions scored together in one batched pass (``scoring.execute_many``): each
learner's answers and score are exactly those the prompt gets scored alone; a submission removed mid-pass stops
alone; the short lane's job process takes every waiting submission in one pass."""

from __future__ import annotations

import json

import pytest

from ftvpe_core.jobs import worker
from ftvpe_core.model import engine, models
from ftvpe_core.store.runs import RunStore
from ftvpe_core.tasks import evaluate
from ftvpe_core.teaching import challenges, results, scoring

pytestmark = pytest.mark.timeout(300)

PROMPTS = {
    "Ada": {"enabled": ["role"], "role": "a support triage assistant"},
    "Bob": {"enabled": ["role", "context"], "role": "a help desk router", "output_format": "one word"},
    "Cy": {"enabled": ["context"], "tone": "friendly", "audience": "families", "output_format": "a list"},
    "Dee": {"enabled": ["role", "cot"], "role": "a careful triage assistant"},
    "Eve": {"enabled": ["few-shot"], "examples": [["my card was charged twice", "billing"]]},
}


@pytest.fixture(scope="module")
def tiny_model_dir(lively, tmp_path_factory):
    """The lively tiny model saved as a model folder (here it stands in for the tiny model): its greedy answers
    differ from prompt to prompt, so rows mixed up in a batch would show."""
    path = tmp_path_factory.mktemp("lively-dir")
    lively.model.save_pretrained(path)
    lively.tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_loaded(tiny_model_dir):
    return models.load(str(tiny_model_dir), device="cpu", weight_format="float32")


def _class(home, tiny_model_dir, tiny_loaded) -> tuple[RunStore, str, str, dict[str, str]]:
    """A challenge on the tiny model with every learner's prompt submitted: (store, code, key, name -> score run)."""
    store = RunStore(home)
    settings = challenges.ChallengeSettings(
        task="support_triage", hidden_limit=challenges.MIN_HIDDEN, model=str(tiny_model_dir), seed=7
    )
    code, key = challenges.create(store, settings)
    runs = {}
    for name, fields in PROMPTS.items():
        challenges.join(store, code, name)
        sid = challenges.submit_prompt(store, code, name, fields, tiny_loaded.count_tokens, device="cpu")
        with store.reading() as conn:
            runs[name] = conn.execute("SELECT score_run FROM challenge_submissions WHERE id = ?", (sid,)).fetchone()[0]
    return store, code, key, runs


@pytest.fixture
def answers(monkeypatch):
    """Every arm's answers as scored, by the run's prompt role (recorded around ``evaluate.run_arms``), and each
    pass's number of arms."""
    seen: dict[str, list[str]] = {}
    passes: list[int] = []
    real = evaluate.run_arms

    def recording(loaded, arms, *args, **kwargs):
        passes.append(len(arms))
        results = real(loaded, arms, *args, **kwargs)
        for arm, result in zip(arms, results):
            if result is not None:
                seen[json.dumps(arm.template.to_dict(), sort_keys=True)] = [r.answer for r in result.examples]
        return results

    monkeypatch.setattr(evaluate, "run_arms", recording)
    return seen, passes


def _entries(store, code) -> dict[str, dict]:
    return {s["name"]: s for s in results.submissions(store, code)}


def _fresh_engine(tiny_model_dir) -> None:
    """Nothing remembered between scorings: each alone is scored by an engine that saw nothing else."""
    from ftvpe_core.model import adapters

    loaded = models.load(str(tiny_model_dir), device="cpu", weight_format=adapters.WEIGHT_FORMAT)
    engine.configure(loaded, engine.EngineSettings())


def test_prompts_scored_together_get_exactly_the_scores_and_answers_they_get_alone(
    tmp_path, tiny_model_dir, tiny_loaded, answers
):
    seen, passes = answers
    alone_store, _, _, alone_runs = _class(tmp_path / "alone", tiny_model_dir, tiny_loaded)
    for run_id in alone_runs.values():
        _fresh_engine(tiny_model_dir)
        assert alone_store.claim_many("cpu", 1, kinds=("challenge",), limit=1) == [run_id]
        scoring.execute(alone_store, run_id)
    alone_answers, seen_alone = dict(seen), list(passes)
    seen.clear()
    passes.clear()

    store, code, _, runs = _class(tmp_path / "together", tiny_model_dir, tiny_loaded)
    _fresh_engine(tiny_model_dir)
    claimed = store.claim_many("cpu", 1, kinds=("challenge",), limit=32)
    assert sorted(claimed) == sorted(runs.values())
    out = scoring.execute_many(store, claimed)
    assert [o["status"] for o in out] == ["complete"] * len(PROMPTS)
    assert seen_alone == [1] * len(PROMPTS) and passes == [len(PROMPTS)]  # one pass for the whole class
    assert seen == alone_answers  # every learner's answers, token for token
    assert len({tuple(a) for a in seen.values()}) >= 3  # the prompts answer differently: no rows mixed up
    for name in PROMPTS:  # the public score, the private one (the final ranking) and the learner's feedback
        alone, together = alone_store.get(alone_runs[name]).summary, store.get(runs[name]).summary
        for field in ("score", "n", "private_score", "private_n", "feedback"):
            assert together[field] == alone[field], (name, field)
    assert {s["status"] for s in results.submissions(store, code)} == {"scored"}


def test_a_submission_removed_mid_pass_stops_alone_and_the_others_are_scored(tmp_path, tiny_model_dir, tiny_loaded):
    store, code, key, runs = _class(tmp_path, tiny_model_dir, tiny_loaded)
    removed = runs["Bob"]
    sid = next(s["id"] for s in results.submissions(store, code) if s["name"] == "Bob")
    real = evaluate.run_arms

    def removing(loaded, arms, batch_size, on_progress):
        def progress(arm, done, total):
            if done == 1 and arm == 0:  # the teacher removes Bob's submission while the class is being scored
                challenges.remove_submission(store, code, key, sid)
            return on_progress(arm, done, total)

        return real(loaded, arms, batch_size, progress)

    claimed = store.claim_many("cpu", 1, kinds=("challenge",), limit=32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluate, "run_arms", removing)
        out = {o["run_id"]: o["status"] for o in scoring.execute_many(store, claimed)}
    assert out.pop(removed) == "cancelled" and store.get(removed).status == "cancelled"
    assert set(out.values()) == {"complete"}
    assert all(store.get(r).summary["n"] == round(challenges.MIN_HIDDEN * challenges.PUBLIC_SHARE) for r in out)


def test_a_submission_removed_before_its_pass_fails_alone(tmp_path, tiny_model_dir, tiny_loaded):
    store, code, key, runs = _class(tmp_path, tiny_model_dir, tiny_loaded)
    sid = next(s["id"] for s in results.submissions(store, code) if s["name"] == "Cy")
    claimed = store.claim_many("cpu", 1, kinds=("challenge",), limit=32)
    with store.writing() as conn:  # removed, but its run's cancel flag not seen yet
        conn.execute("UPDATE challenge_submissions SET removed = 1 WHERE id = ?", (sid,))
    out = {o["run_id"]: o for o in scoring.execute_many(store, claimed)}
    assert out[runs["Cy"]]["status"] == "failed" and "removed by the teacher" in out[runs["Cy"]]["error"]
    assert [o["status"] for r, o in out.items() if r != runs["Cy"]] == ["complete"] * (len(PROMPTS) - 1)


def test_the_short_lane_scores_every_waiting_prompt_in_one_pass(tmp_path, monkeypatch, tiny_model_dir, tiny_loaded):
    monkeypatch.setenv("FTVPE_WARM_IDLE_S", "0")  # leave once the queue is empty
    store, code, _, runs = _class(tmp_path, tiny_model_dir, tiny_loaded)
    assert worker.serve(store, "cpu", log=lambda m: None, lane="short") == len(PROMPTS)
    assert {s["status"] for s in results.submissions(store, code)} == {"scored"}
    assert {store.metrics(r)["lane_batch"][-1][1] for r in runs.values()} == {len(PROMPTS)}
