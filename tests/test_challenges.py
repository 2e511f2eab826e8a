"""Class challenges on the tiny model: keys, joining, budgets, rate limits, scoring in the job queue, the
leaderboard's tie-break, hidden-test isolation, exports and a restart."""

from __future__ import annotations

import csv
import io
import json
import sqlite3

import pytest

from ftvpe_core import FtvpeError, figures
from ftvpe_core.jobs import worker
from ftvpe_core.store import runs
from ftvpe_core.store.runs import RunStore
from ftvpe_core.studies import compare, report
from ftvpe_core.tasks import datasets
from ftvpe_core.teaching import challenges, results, scoring

pytestmark = pytest.mark.timeout(180)

HIDDEN = challenges.MIN_HIDDEN
PROMPT = {"enabled": ["role", "context"], "role": "a support triage assistant", "output_format": "one word"}


def _create(store, tiny_model_dir, **overrides):
    s = challenges.ChallengeSettings(
        **{
            "task": "support_triage",
            "hidden_limit": HIDDEN,
            "max_steps": 2,
            "max_train_examples": 8,
            "model": str(tiny_model_dir),
            **overrides,
        }
    )
    return challenges.create(store, s)


def _hidden_prompts():
    return [e.prompt for e in datasets.load_held_back("support_triage")]


def _fail_pending(store, code, name):
    """Stand in for the job process: end the learner's waiting runs so the next submission is allowed."""
    for s in results.submissions(store, code, name):
        for run_id in (s["train_run"], store_score_run(store, s["id"])):
            if run_id and store.get(run_id).active:
                store.fail(run_id, "test")


def store_score_run(store, sid):
    with store.reading() as conn:
        return conn.execute("SELECT score_run FROM challenge_submissions WHERE id = ?", (sid,)).fetchone()[0]


def test_the_teacher_key_is_stored_only_as_a_salted_hash_and_a_wrong_key_changes_nothing(tiny_model_dir):
    store = RunStore()
    code, key = _create(store, tiny_model_dir)
    other_code, other_key = _create(store, tiny_model_dir)
    assert len(code) == challenges.CODE_LENGTH and set(code) <= set(challenges.CODE_ALPHABET)
    assert key.encode() not in store.path.read_bytes() and other_key.encode() not in store.path.read_bytes()
    with store.reading() as conn:
        salts = [r["key_salt"] for r in conn.execute("SELECT key_salt FROM challenges")]
    assert len(set(salts)) == 2
    for action in (
        lambda k: challenges.close(store, code, k),
        lambda k: challenges.reopen(store, code, k),
        lambda k: results.export_csv(store, code, k),
        lambda k: challenges.reveal(store, code, k),
        lambda k: challenges.remove_submission(store, code, k, 1),
    ):
        with pytest.raises(FtvpeError, match=f"Wrong teacher key for challenge {code}; nothing was changed"):
            action(other_key)
    assert challenges.get(store, code).open
    challenges.close(store, code.lower(), key)  # codes are read without regard to case
    assert not challenges.get(store, code).open
    challenges.reopen(store, code, key)
    assert challenges.get(store, code).open


def test_joining_checks_the_code_the_name_and_whether_the_challenge_is_open(tiny_model_dir):
    store = RunStore()
    code, key = _create(store, tiny_model_dir)
    with pytest.raises(FtvpeError, match="No challenge has the code 'NOPE99'"):
        challenges.join(store, "NOPE99", "Ada")
    assert challenges.join(store, code, "  Ada   Lovelace ") == "Ada Lovelace"
    with pytest.raises(FtvpeError, match="Someone already joined as 'ada lovelace'"):
        challenges.join(store, code, "ada lovelace")
    with pytest.raises(FtvpeError, match=f"limit is {challenges.MAX_NAME_CHARS}"):
        challenges.join(store, code, "x" * 40)
    with pytest.raises(FtvpeError, match="control characters"):
        challenges.join(store, code, "Bob\u202e")
    challenges.close(store, code, key)
    with pytest.raises(FtvpeError, match=f"Challenge {code} is closed"):
        challenges.join(store, code, "Carol")
    with pytest.raises(FtvpeError, match=f"Challenge {code} is closed"):
        challenges.submit_prompt(store, code, "Ada Lovelace", PROMPT, None)


def test_budget_overruns_are_refused_with_the_limit_and_nothing_is_recorded(tiny_model_dir, tiny_loaded):
    store = RunStore()
    code, _ = _create(store, tiny_model_dir, max_prompt_tokens=5)
    challenges.join(store, code, "Ada")
    with pytest.raises(
        FtvpeError, match=r"Your prompt adds \d+ tokens to each input; this challenge allows at most 5\."
    ):
        challenges.submit_prompt(store, code, "Ada", PROMPT, tiny_loaded.count_tokens)
    with pytest.raises(FtvpeError, match="this challenge allows at most 2"):
        challenges.submit_finetune(store, code, "Ada", steps=3, examples=4)
    with pytest.raises(FtvpeError, match="You picked 9 training examples; this challenge allows at most 8"):
        challenges.submit_finetune(store, code, "Ada", steps=2, examples=list(range(9)))
    with pytest.raises(FtvpeError, match="Example 1000 is not in the training split"):
        challenges.submit_finetune(store, code, "Ada", steps=2, examples=[999])
    assert results.submissions(store, code) == [] and store.list() == []


def test_one_pending_submission_per_learner_and_a_few_a_minute(tiny_model_dir, tiny_loaded):
    store = RunStore()
    code, _ = _create(store, tiny_model_dir, tracks="prompt")
    challenges.join(store, code, "Ada")
    with pytest.raises(FtvpeError, match="takes Prompt submissions only"):
        challenges.submit_finetune(store, code, "Ada", steps=2, examples=2)
    challenges.submit_prompt(store, code, "Ada", PROMPT, tiny_loaded.count_tokens)
    with pytest.raises(FtvpeError, match="already have a submission being scored"):
        challenges.submit_prompt(store, code, "Ada", PROMPT, tiny_loaded.count_tokens)
    for _ in range(challenges.PER_MINUTE - 1):
        _fail_pending(store, code, "Ada")
        challenges.submit_prompt(store, code, "Ada", PROMPT, tiny_loaded.count_tokens)
    _fail_pending(store, code, "Ada")
    with pytest.raises(FtvpeError, match=f"At most {challenges.PER_MINUTE} submissions a minute; try again in"):
        challenges.submit_prompt(store, code, "Ada", PROMPT, tiny_loaded.count_tokens)
    with pytest.raises(FtvpeError, match="Join challenge"):
        challenges.submit_prompt(store, code, "Nobody", PROMPT, tiny_loaded.count_tokens)


def test_submissions_are_scored_on_the_hidden_test_in_the_job_queue(tiny_model_dir, tiny_loaded):
    store = RunStore()
    code, key = _create(store, tiny_model_dir)
    for name in ("Ada", "Bob"):
        challenges.join(store, code, name)
    challenges.submit_prompt(store, code, "Ada", PROMPT, tiny_loaded.count_tokens, device="cpu")
    challenges.submit_finetune(store, code, "Bob", steps=2, examples=[0, 1, 2, 3], device="cpu")
    assert [s["status"] for s in results.submissions(store, code)] == ["waiting", "training"]
    assert worker.serve(store, "cpu", log=lambda m: None) == 3  # a prompt score, a training run, a fine-tune score
    subs = results.submissions(store, code)
    assert [s["status"] for s in subs] == ["scored", "scored"], subs
    prompt, tuned = subs
    for s in subs:
        assert 0.0 <= s["score"] <= 1.0 and s["n"] == round(HIDDEN * challenges.PUBLIC_SHARE)  # the public part
    assert prompt["prompt_tokens"] > 0 and "mean_prompt_tokens" not in prompt
    assert tuned["train_examples"] == 4 and tuned["train_seconds"] > 0
    train_run = store.get(tuned["train_run"])
    assert train_run.kind == "finetune" and train_run.status == "complete"
    assert train_run.summary["steps"] == 2
    board = results.leaderboard(store, code)
    assert [e["name"] for e in board["prompt"]] == ["Ada"] and [e["name"] for e in board["finetune"]] == ["Bob"]
    # The hidden examples went to no learner-side file: the fine-tune's data holds only its training picks.
    saved = (store.artifact_dir(train_run.id) / "dataset.json").read_text()
    assert not any(p in saved for p in _hidden_prompts())
    revealed = challenges.reveal(store, code, key)
    assert len(revealed) == HIDDEN and {e["prompt"] for e in revealed} <= set(_hidden_prompts())
    assert [e["part"] for e in revealed] == ["public"] * subs[0]["n"] + ["private"] * (HIDDEN - subs[0]["n"])

    # Compare (teacher key) scores the best prompt and the best run as its engineered and tuned arms.
    with pytest.raises(FtvpeError, match="Wrong teacher key"):
        results.compare_arms(store, code, "nope")
    arms = results.compare_arms(store, code, key)
    assert arms["run_id"] == tuned["train_run"] and arms["names"] == {"prompt": "Ada", "finetune": "Bob"}
    settings = compare.CompareSettings(
        task=arms["task"], run_id=arms["run_id"], prompt=arms["prompt"], limit=2, forgetting=False
    )
    result = compare.run_comparison(settings, store)
    by_name = {a["name"]: a for a in result["arms"]}
    assert by_name["prompt"]["techniques"] == ["role", "context"] and by_name["tuned"]["techniques"] == []
    assert by_name["prompt"]["mean_prompt_tokens"] > by_name["base"]["mean_prompt_tokens"]

    # A server restart: a new store on the same folder keeps the challenge, its key and every submission.
    again = RunStore(store.home)
    assert challenges.check_key(again, code, key).code == code
    assert results.submissions(again, code) == subs
    html = report.challenge_html(results.export(again, code, key))
    assert "Prompt leaderboard" in html and "Fine-tune leaderboard" in html and "chart-challenge" in html


def test_the_leaderboard_keeps_each_learners_best_and_breaks_ties_on_cost():
    def entry(name, track, score, created, tokens=None, examples=None):
        return {
            "id": created,
            "name": name,
            "track": track,
            "score": score,
            "created": created,
            "prompt_tokens": tokens,
            "train_examples": examples,
        }

    entries = [
        entry("Ada", "prompt", 0.5, 1, tokens=80),
        entry("Ada", "prompt", 0.75, 2, tokens=90),
        entry("Bob", "prompt", 0.75, 3, tokens=40),
        entry("Cy", "prompt", 0.75, 0, tokens=40),
        entry("Dee", "prompt", None, 4, tokens=10),
        entry("Eve", "finetune", 0.9, 5, examples=30),
        entry("Fay", "finetune", 0.9, 6, examples=10),
    ]
    board = results.leaderboard(None, "X", entries)
    assert [(e["name"], e["rank"], e["score"]) for e in board["prompt"]] == [
        ("Cy", 1, 0.75),
        ("Bob", 2, 0.75),
        ("Ada", 3, 0.75),
    ]
    assert [e["name"] for e in board["finetune"]] == ["Fay", "Eve"]
    summary = results.track_summary(entries)
    assert summary["prompt"]["n"] == 4 and summary["prompt"]["best_score"] == 0.75
    assert summary["finetune"]["mean_score"] == pytest.approx(0.9)


def test_learner_side_outputs_never_hold_the_hidden_inputs(tiny_model_dir, tiny_loaded):
    store = RunStore()
    code, _ = _create(store, tiny_model_dir, hidden_limit=0)
    challenges.join(store, code, "Ada")
    challenges.submit_prompt(store, code, "Ada", PROMPT, tiny_loaded.count_tokens, device="cpu")
    seen = json.dumps(
        [
            challenges.public(store, code),
            challenges.training_examples(store, code),
            results.submissions(store, code),
            results.leaderboard(store, code),
        ]
    )
    hidden = _hidden_prompts()
    assert len(hidden) == 48 and not any(json.dumps(p)[1:-1] in seen for p in hidden)
    assert json.dumps(challenges.public(store, code)["examples"][0]["prompt"])[1:-1] in seen  # training is shown
    # A scoring error is reworded so it cannot quote a hidden input.
    error = FtvpeError(f"Prompt 3 of 45: {hidden[2]} is 900 tokens; the model's context is 256.")
    assert hidden[2] not in scoring._learner_error(error)


def test_csv_and_html_exports_keep_names_and_prompts_as_text(tiny_model_dir, tiny_loaded):
    store = RunStore()
    code, key = _create(store, tiny_model_dir)
    name = "<script>alert(1)</script>"
    challenges.join(store, code, name)
    challenges.join(store, code, "=HYPERLINK()")
    challenges.submit_prompt(store, code, name, {**PROMPT, "role": "<b>boss</b>"}, tiny_loaded.count_tokens)
    challenges.submit_prompt(store, code, "=HYPERLINK()", PROMPT, tiny_loaded.count_tokens)
    rows = list(csv.DictReader(io.StringIO(results.export_csv(store, code, key))))
    assert [r["name"] for r in rows] == [name, "'=HYPERLINK()"]
    html = report.challenge_html(results.export(store, code, key))
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>boss" not in html and "&lt;b&gt;boss&lt;/b&gt;" in html
    challenges.remove_submission(store, code, key, rows[0]["id"])
    assert [s["name"] for s in results.submissions(store, code)] == ["=HYPERLINK()"]


def test_settings_refuse_bad_values_and_tasks_without_a_hidden_split(tiny_model_dir):
    with pytest.raises(FtvpeError, match="hidden split must be one of test, validation"):
        challenges.ChallengeSettings(task="support_triage", hidden_split="train")
    with pytest.raises(FtvpeError, match="Max steps must be between 1"):
        challenges.ChallengeSettings(task="support_triage", max_steps=0)
    with pytest.raises(FtvpeError, match="Tracks must be one of"):
        challenges.ChallengeSettings(task="support_triage", tracks="all")
    with pytest.raises(FtvpeError, match="constraints metric"):
        _create(RunStore(), tiny_model_dir, metric="constraints")


def test_a_schema_2_store_gains_the_challenge_tables_and_keeps_its_runs(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create("finetune", "support_triage", {"rank": 8})
    with sqlite3.connect(store.path) as conn:
        for table in ("challenges", "challenge_learners", "challenge_submissions"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("UPDATE schema_version SET version = 2")
    again = RunStore(tmp_path)
    assert again.get(run_id).settings == {"rank": 8} and challenges.list_challenges(again) == []
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(runs.SCHEMA_VERSION,)]


def test_the_track_chart_has_one_box_per_track_and_an_empty_titled_figure_without_scores():
    empty = figures.challenge_scores([], "accuracy")
    assert "Accuracy on the hidden test" in empty.layout.title.text and not empty.data
    fig = figures.challenge_scores(
        [
            {"track": "prompt", "score": 0.5, "name": "Ada"},
            {"track": "finetune", "score": 0.9, "name": "Bob"},
            {"track": "finetune", "score": None, "name": "Cy"},
        ],
        "accuracy",
    )
    assert [t.name for t in fig.data] == ["Prompt", "Fine-tune"] and list(fig.data[1].y) == [0.9]
