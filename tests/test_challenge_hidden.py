"""A challenge's hidden set is one no learner could have seen, and the live board is no oracle for it.

Built-in tasks score on their held-back sets (assets/datasets/*/challenge.jsonl): new examples, in no split, on
no page, in no CLI listing, in no recording and never in Compare. The hidden set splits, by a stored seed, into
a public part (the live board) and a private part (the teacher's final ranking). Challenge fine-tunes cannot be
stopped or deleted from the Runs or Fine-Tune Lab pages, and their downloads name no join code. A scoring run
stops on Remove and on app stop, and the job log holds the real cause of a failure.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import pytest

from ftvpe_core import FtvpeError, cli
from ftvpe_core.jobs import worker
from ftvpe_core.store import runs
from ftvpe_core.store.runs import RunStore
from ftvpe_core.studies import compare
from ftvpe_core.tasks import datasets, evaluate
from ftvpe_core.teaching import challenges, results, scoring
from ftvpe_core.training import finetune, tuning

REPO = Path(__file__).resolve().parent.parent
PROMPT = {"enabled": ["role", "context"], "role": "a support triage assistant", "output_format": "one word"}
pytestmark = pytest.mark.timeout(300)


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.casefold()))


def _create(store, model, task="support_triage", **overrides):
    s = challenges.ChallengeSettings(task=task, max_steps=2, max_train_examples=8, model=str(model), **overrides)
    return challenges.create(store, s)


def _hidden(store, code, key) -> list[str]:
    return [e["prompt"] for e in challenges.reveal(store, code, key)]


def _shows_any(text: str, prompts: list[str]) -> list[str]:
    """The hidden prompts that ``text`` shows, whole or as the 40-character start a menu cuts them to."""
    return [p for p in prompts if p[:40] in text or json.dumps(p)[1:41] in text]


# The held-back sets


@pytest.mark.parametrize("name", datasets.BUILTINS)
def test_each_builtin_dataset_holds_back_new_examples_in_none_of_its_splits(name):
    data = datasets.load_builtin(name)
    held = datasets.load_held_back(name)
    assert len(held) >= 2 * challenges.MIN_HIDDEN
    public = [e.prompt for n in datasets.BUILTINS for e in datasets.load_builtin(n).all_examples()]
    assert not {_norm(e.prompt) for e in held} & {_norm(p) for p in public}
    assert len({_norm(e.prompt) for e in held}) == len(held)
    # Not even a near copy: at most 60% of the words shared with any public prompt.
    for e in held:
        a = _words(e.prompt)
        assert all(len(a & b) / len(a | b) <= 0.6 for b in map(_words, public)), e.prompt
        assert not any(p.startswith(e.prompt[:40]) for p in public), e.prompt  # nor a menu's cut-off start
    # Each reference answer fits the task: a label from the card, the brand's rules kept, its facts present.
    task = evaluate.task_from(data, held, data.splits["train"])
    for e in held:
        assert evaluate.score(task, e, e.response)[0] == 1.0, e
    if data.task == "label":
        assert {e.response for e in held} == set(data.labels)


def test_a_builtin_challenge_hides_its_held_back_set_in_public_and_private_parts(tiny_model_dir):
    store = RunStore()
    code, key = _create(store, tiny_model_dir)
    revealed = challenges.reveal(store, code, key)
    held = [e.prompt for e in datasets.load_held_back("support_triage")]
    public_splits = [e.prompt for e in datasets.load_builtin("support_triage").all_examples()]
    assert sorted(e["prompt"] for e in revealed) == sorted(held)
    assert not set(_hidden(store, code, key)) & set(public_splits)
    parts = [e["part"] for e in revealed]
    n_public = round(len(held) * challenges.PUBLIC_SHARE)
    assert parts == ["public"] * n_public + ["private"] * (len(held) - n_public)
    # The split is fixed per challenge: stored with it, the same after a restart, another for another one.
    assert challenges.reveal(RunStore(store.home), code, key) == revealed
    other, other_key = _create(store, tiny_model_dir)
    assert challenges.reveal(store, other, other_key) != revealed
    same_seed = [_create(store, tiny_model_dir, seed=7) for _ in range(2)]
    assert challenges.reveal(store, *same_seed[0]) == challenges.reveal(store, *same_seed[1])
    assert "held-back set" in challenges.hidden_source(challenges.get(store, code))


def test_a_hidden_set_under_the_minimum_is_refused_at_create(tiny_model_dir):
    store = RunStore()
    with pytest.raises(FtvpeError, match=f"has 1 hidden examples.*at least {challenges.MIN_HIDDEN}.*set it to 0"):
        _create(store, tiny_model_dir, hidden_limit=1)
    rows = "".join(json.dumps({"prompt": f"question {i}?", "response": f"answer {i}"}) + "\n" for i in range(40))
    upload = datasets.parse_upload(rows.encode(), "small.jsonl")
    with pytest.raises(FtvpeError, match=r"has 8 hidden examples.*upload a file of at least 100 rows"):
        challenges.create(store, challenges.ChallengeSettings(task=upload.name, model=str(tiny_model_dir)), upload)
    assert challenges.list_challenges(store) == []


def test_none_of_a_challenges_hidden_inputs_is_in_the_cli_datasets_output_or_the_recordings(tiny_model_dir, capsys):
    store = RunStore()
    hidden = []
    for name in datasets.BUILTINS:
        code, key = _create(store, tiny_model_dir, task=name)
        hidden += _hidden(store, code, key)
    for argv in (["datasets", "list"], ["datasets", "list", "--json"]):
        assert cli.main(argv) == 0
        out = capsys.readouterr()
        assert not _shows_any(out.out + out.err, hidden)
    recorded = "".join(p.read_text(encoding="utf-8") for p in (REPO / "assets" / "recordings").rglob("*.json"))
    assert not _shows_any(recorded, hidden)


# Pages: nothing hidden on any page a learner opens


def _texts(at) -> str:
    parts = []
    for kind in ("markdown", "caption", "title", "header", "subheader", "error", "warning", "success", "info"):
        parts += [str(e.value) for e in at.get(kind)]
    for kind in ("code", "text", "json"):
        parts += [str(getattr(e, "value", "")) for e in at.get(kind)]
    parts += [e.value.to_string() for e in at.dataframe]
    for kind in ("selectbox", "multiselect", "radio"):
        for w in at.get(kind):
            parts += [str(o) for o in w.options]
    for kind in ("text_area", "text_input"):
        parts += [str(w.value) for w in at.get(kind)]
    return "\n".join(parts)


def _page(tiny_app, path: str, state: dict | None = None, query: dict | None = None):
    at = tiny_app.page(path, timeout=90)
    for k, v in (state or {}).items():
        at.session_state[k] = v
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_with_challenges_open_no_page_shows_a_hidden_input(tiny_app, monkeypatch):
    monkeypatch.setattr(worker, "ensure_worker", lambda *a, **k: False)
    store = RunStore(tiny_app.home)
    codes, hidden = {}, []
    for name in datasets.BUILTINS:
        code, key = _create(store, tiny_app.model, task=name)
        codes[name] = (code, key)
        hidden += _hidden(store, code, key)
    seen = []
    for name in datasets.BUILTINS:
        seen.append(_page(tiny_app, "pages/3_Token_Lens.py", {"tl_dataset": name}))
        seen.append(_page(tiny_app, "pages/4_Compare.py", {"cp_task": name}))
        seen.append(_page(tiny_app, "pages/2_Fine_Tune_Lab.py", {"ft_dataset": name}))
        seen.append(_page(tiny_app, "pages/0_Learn.py", {"ln_replay_dataset": name}))
        learner = _page(tiny_app, "pages/7_Challenge.py", query={"challenge": codes[name][0]})
        learner.text_input(key="ch_name").input(f"Ada {name[:4]}")
        next(b for b in learner.button if b.form_id == "ch_join").click()
        learner.run()
        seen.append(learner)
    seen.append(_page(tiny_app, "pages/1_Prompt_Lab.py"))
    tl = seen[0]
    assert tl.selectbox(key="tl_example").options  # the Token Lens does list its (public) examples
    shown = "\n".join(_texts(at) for at in seen)
    assert not _shows_any(shown, hidden)


def test_compare_of_a_challenges_best_never_shows_a_hidden_example(tiny_model_dir, tiny_loaded):
    store = RunStore()
    code, key = _create(store, tiny_model_dir, tracks="prompt", hidden_limit=challenges.MIN_HIDDEN)
    challenges.join(store, code, "Ada")
    challenges.submit_prompt(store, code, "Ada", PROMPT, tiny_loaded.count_tokens, device="cpu")
    assert worker.serve(store, "cpu", log=lambda m: None) == 1
    arms = results.compare_arms(store, code, key)
    hidden = _hidden(store, code, key)
    # Compare scores (and shows) the task's examples: none of them is hidden, however many it is asked for.
    assert not _shows_any(json.dumps([e.to_dict() for e in evaluate.load_task(arms["task"]).examples]), hidden)
    settings = compare.CompareSettings(
        task=arms["task"], prompt=arms["prompt"], limit=3, model=str(tiny_model_dir), forgetting=False
    )
    result = compare.run_comparison(settings, store)
    assert result["arms"][0]["examples"] and not _shows_any(json.dumps(result), hidden)


# No leaderboard oracle


def test_the_live_board_scores_the_public_part_and_the_final_ranking_the_private_part(tiny_model_dir, tiny_loaded):
    store = RunStore()
    code, key = _create(store, tiny_model_dir, tracks="prompt", hidden_limit=challenges.MIN_HIDDEN)
    challenges.join(store, code, "Ada")
    challenges.submit_prompt(store, code, "Ada", PROMPT, tiny_loaded.count_tokens, device="cpu")
    assert worker.serve(store, "cpu", log=lambda m: None) == 1
    n_public = round(challenges.MIN_HIDDEN * challenges.PUBLIC_SHARE)
    [live] = results.submissions(store, code)
    [final] = results.submissions(store, code, part="private")
    assert live["n"] == n_public and final["n"] == challenges.MIN_HIDDEN - n_public
    assert final["public_score"] == live["score"] and "public_score" not in live
    # The summary's scores are the parts' own: recompute them from the reveal.
    revealed = challenges.reveal(store, code, key)
    assert [e["part"] for e in revealed].count("public") == n_public
    assert results.leaderboard(store, code)["prompt"][0]["score"] == live["score"]
    assert results.final(store, code, key)["prompt"][0]["score"] == final["score"]
    with pytest.raises(FtvpeError, match="Wrong teacher key"):
        results.final(store, code, "guess")
    with pytest.raises(FtvpeError, match="part must be one of public, private"):
        results.leaderboard(store, code, part="all")
    exported = results.export(store, code, key)
    assert exported["leaderboard"]["prompt"][0]["score"] == final["score"]
    assert exported["public_leaderboard"]["prompt"][0]["score"] == live["score"]
    # Nothing a learner reads is measured on the hidden inputs: no tokens a call, no latency.
    learner_side = json.dumps([results.submissions(store, code), results.leaderboard(store, code)])
    assert "mean_prompt_tokens" not in learner_side and "latency" not in learner_side
    assert live["prompt_tokens"] > 0  # what the learner's own prompt adds is still shown
    assert results.track_summary([live])["prompt"]["mean_prompt_tokens"] == live["prompt_tokens"]


# Challenge fine-tunes: only the learner and the teacher


def test_challenge_fine_tunes_are_not_on_the_runs_pages_and_their_download_names_no_code(tiny_app, monkeypatch):
    monkeypatch.setattr(worker, "ensure_worker", lambda *a, **k: False)
    store = RunStore(tiny_app.home)
    code, _ = _create(store, tiny_app.model)
    challenges.join(store, code, "Bob")
    sid = challenges.submit_finetune(store, code, "Bob", steps=2, examples=[0, 1, 2, 3], device="cpu")
    train_run = next(s["train_run"] for s in results.submissions(store, code) if s["id"] == sid)
    assert store.get(train_run).active
    mine = tuning.submit(
        "support_triage", finetune.from_preset("quick", max_steps=2), str(tiny_app.model), "cpu", store
    )

    runs_page = _page(tiny_app, "pages/6_Runs.py")
    listed = " ".join(runs_page.selectbox(key="rn_open").options)
    assert mine in listed and train_run not in listed
    assert train_run not in _texts(runs_page) and "(Bob)" not in _texts(runs_page)
    lab = _page(tiny_app, "pages/2_Fine_Tune_Lab.py")
    assert not [b for b in lab.button if b.key == f"ft_cancel_{train_run}"]
    assert [b for b in lab.button if b.key == f"ft_cancel_{mine}"]
    assert "(Bob)" not in _texts(lab)
    assert store.get(train_run).active and not store.get(train_run).cancel_requested

    # The record of the run, as a download would carry it, names no join code.
    assert worker.serve(store, "cpu", log=lambda m: None) >= 2
    assert store.get(train_run).status == "complete"
    with zipfile.ZipFile(io.BytesIO(tuning.adapter_zip(store, train_run))) as z:
        packed = "".join(z.read(n).decode("utf-8", "replace") for n in z.namelist() if n.endswith(".json"))
    assert code not in packed.upper()


def test_only_the_owner_or_the_teacher_takes_a_submission_back(tiny_model_dir):
    store = RunStore()
    code, key = _create(store, tiny_model_dir)
    for name in ("Bob", "Eve"):
        challenges.join(store, code, name)
    sid = challenges.submit_finetune(store, code, "Bob", steps=2, examples=[0, 1], device="cpu")
    [entry] = results.submissions(store, code)
    with pytest.raises(FtvpeError, match=f"You have no submission {sid} in challenge {code}; nothing was changed"):
        challenges.withdraw(store, code, "Eve", sid)
    assert store.get(entry["train_run"]).status == "queued"
    challenges.withdraw(store, code, "Bob", sid)
    assert store.get(entry["train_run"]).status == "cancelled" and results.submissions(store, code) == []


# Scoring runs stop on Remove and app stop; the job log holds the cause


def _claimed_score_run(store, tiny_model_dir, tiny_loaded):
    code, key = _create(store, tiny_model_dir, tracks="prompt", hidden_limit=challenges.MIN_HIDDEN)
    challenges.join(store, code, "Ada")
    sid = challenges.submit_prompt(store, code, "Ada", PROMPT, tiny_loaded.count_tokens, device="cpu")
    with store.reading() as conn:
        run_id = conn.execute("SELECT score_run FROM challenge_submissions WHERE id = ?", (sid,)).fetchone()[0]
    store.start(run_id, 1, "cpu")
    return code, key, sid, run_id


def _answers_counted(monkeypatch, on_first=None):
    """Count the answers scoring reports; call ``on_first`` at the first one."""
    seen = []
    run_arms = evaluate.run_arms

    def counting(loaded, arms, batch_size=None, on_progress=None):
        def progress(arm, done, total):
            seen.append(done)
            if len(seen) == 1 and on_first:
                on_first()
            return on_progress(arm, done, total)

        return run_arms(loaded, arms, 1, progress)  # one answer in flight: a stop lands before the next

    monkeypatch.setattr(evaluate, "run_arms", counting)
    return seen


def test_a_scoring_run_stops_when_the_teacher_removes_the_submission(tiny_model_dir, tiny_loaded, monkeypatch):
    store = RunStore()
    code, key, sid, run_id = _claimed_score_run(store, tiny_model_dir, tiny_loaded)
    seen = _answers_counted(monkeypatch, lambda: challenges.remove_submission(store, code, key, sid))
    scoring.execute(store, run_id)
    assert store.get(run_id).status == "cancelled" and store.get(run_id).summary is None
    assert len(seen) < challenges.MIN_HIDDEN  # it stopped between answers, not after all of them
    assert results.submissions(store, code) == []


def test_a_scoring_run_stops_when_the_app_stops(tiny_model_dir, tiny_loaded, monkeypatch):
    store = RunStore()
    stopping = []
    _, _, _, run_id = _claimed_score_run(store, tiny_model_dir, tiny_loaded)
    seen = _answers_counted(monkeypatch, lambda: stopping.append(True))
    scoring.execute(store, run_id, interrupted=lambda: bool(stopping))
    assert store.get(run_id).status == "interrupted"
    assert len(seen) < challenges.MIN_HIDDEN


def test_the_job_log_holds_the_real_cause_and_the_learner_the_reworded_one(
    tiny_model_dir, tiny_loaded, monkeypatch, capfd
):
    store = RunStore()
    _, _, _, run_id = _claimed_score_run(store, tiny_model_dir, tiny_loaded)

    def broken(*args, **kwargs):
        raise RuntimeError("the real cause: a tensor of shape (2, 7) where (2, 8) was expected")

    monkeypatch.setattr(evaluate, "run_arms", broken)
    with pytest.raises(FtvpeError):
        scoring.execute(store, run_id)
    log = capfd.readouterr().err
    assert "the real cause: a tensor of shape (2, 7)" in log and "Traceback" in log and run_id in log
    error = store.get(run_id).error
    assert "RuntimeError" in error and "real cause" not in error


def test_the_readme_names_the_stores_schema_once_and_rightly():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    found = re.findall(r"schema (\d+)", readme)
    assert found == [str(runs.SCHEMA_VERSION)], found
