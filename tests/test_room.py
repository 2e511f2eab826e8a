"""A challenge in a real room: the join address phones can open, each submission's truthful status, feedback
that counts what went wrong without quoting anything hidden, and the projector's chart."""

from __future__ import annotations

import os

import pytest

from ftvpe_core import FtvpeError, figures, settings
from ftvpe_core.jobs import runners
from ftvpe_core.store.runs import RunStore
from ftvpe_core.tasks import datasets, evaluate
from ftvpe_core.tasks.datasets import Example
from ftvpe_core.teaching import challenges, results, scoring
from ftvpe_core.ui import room

pytestmark = pytest.mark.timeout(180)

PROMPT = {"enabled": ["role"], "role": "a support triage assistant"}


# The join address


@pytest.mark.parametrize(
    "browser, network, public, origin, warned",
    [
        # The teacher's browser on localhost: the server's network address, which a phone can open.
        ("http://localhost:8501", "http://192.168.1.20:8501", None, "http://192.168.1.20:8501", False),
        ("http://127.0.0.1:8611/", "http://10.0.0.7:8611/studio", None, "http://10.0.0.7:8611/studio", False),
        # A browser already on a reachable name keeps it (a proxy, https, a hostname).
        ("https://class.example.org/ftvpe", "http://10.0.0.7:8501", None, "https://class.example.org/ftvpe", False),
        # FTVPE_PUBLIC_URL wins over both.
        ("http://localhost:8501", "http://10.0.0.7:8501", "https://ai.school.edu/studio/",
         "https://ai.school.edu/studio", False),
        # Nothing but loopback known: localhost, with a warning.
        ("http://localhost:8501", "http://127.0.0.1:8501", None, "http://localhost:8501", True),
        (None, None, None, "http://localhost:8501", True),
        ("http://[::1]:8501", None, None, "http://[::1]:8501", True),
    ],
)  # fmt: skip
def test_the_join_address_is_one_a_phone_can_open_and_says_when_only_localhost_is_known(
    browser, network, public, origin, warned
):
    address = room.join_address(browser, network, public)
    assert address.origin == origin
    assert (address.warning is not None) == warned
    if warned:
        assert "FTVPE_PUBLIC_URL" in address.warning and address.source == "localhost"
    assert room.join_link(address.origin, "abc234") == f"{origin}/Challenge?challenge=ABC234"


def test_local_addresses_are_recognised():
    for local in ("http://localhost:1", "http://app.localhost", "http://127.0.0.2:8501", "http://0.0.0.0:8501"):
        assert room.is_local(local), local
    for remote in ("http://192.168.1.20:8501", "https://class.example.org", "http://10.0.0.1"):
        assert not room.is_local(remote), remote


def test_ftvpe_public_url_is_checked(monkeypatch):
    monkeypatch.delenv("FTVPE_PUBLIC_URL", raising=False)
    assert settings.public_url() is None
    monkeypatch.setenv("FTVPE_PUBLIC_URL", " https://class.example.org/ ")
    assert settings.public_url() == "https://class.example.org"
    for bad in ("class.example.org", "ftp://x.org", "https://x.org/?a=1", "javascript:alert(1)"):
        monkeypatch.setenv("FTVPE_PUBLIC_URL", bad)
        with pytest.raises(FtvpeError, match="FTVPE_PUBLIC_URL must be an http or https address"):
            settings.public_url()


# Status


def _create(store, tiny_model_dir, **overrides):
    s = challenges.ChallengeSettings(
        task="support_triage",
        hidden_limit=challenges.MIN_HIDDEN,
        max_steps=3,
        max_train_examples=4,
        model=str(tiny_model_dir),
        **overrides,
    )
    return challenges.create(store, s)


def _status(store, code, name):
    entry = results.submissions(store, code, name)[-1]
    runs = room.score_runs(store, code)
    return room.status(store, entry, runs.get(entry["id"]), runners.current().slots(store))


def test_a_fine_tune_is_told_queued_with_its_place_then_training_step_k_of_n_then_scoring_then_scored(
    tiny_model_dir, tiny_loaded
):
    store = RunStore()
    code, _ = _create(store, tiny_model_dir)
    challenges.join(store, code, "Ana")
    challenges.join(store, code, "Ben")
    challenges.submit_prompt(store, code, "Ana", PROMPT, tiny_loaded.count_tokens, device="cpu")
    challenges.submit_finetune(store, code, "Ben", 3, 2, device="cpu")

    ana = _status(store, code, "Ana")
    assert ana.phase == "queued" and ana.text.startswith("Queued to score: 1st of 1 in the queue, starts ")
    ben = _status(store, code, "Ben")
    assert (
        ben.phase == "queued" and ben.text.startswith("Queued to train: ") and "1st of 1 in the queue" in ben.text
    )  # its own lane

    entry = results.submissions(store, code, "Ben")[-1]
    train = entry["train_run"]
    store.start(train, os.getpid(), "cpu")
    assert _status(store, code, "Ben").text == "Training: step 0 of 3"
    store.log_metrics(train, 2, train_loss=1.0, eta_s=4.0)
    ben = _status(store, code, "Ben")
    assert ben.phase == "training" and ben.text == "Training: step 2 of 3, about 4 s left"
    assert ben.fraction == pytest.approx(2 / 3)
    store.artifact_dir(train)
    store.finish(train, {"train_seconds": 1.0})
    assert _status(store, code, "Ben").text.startswith("Queued to score: ")

    score_run = room.score_runs(store, code)[entry["id"]]
    store.start(score_run.id, os.getpid(), "cpu")
    store.set_progress(score_run.id, 0.5, "Scored 2 of 4 hidden examples")
    ben = _status(store, code, "Ben")
    assert ben.phase == "scoring" and ben.text == "Scoring: Scored 2 of 4 hidden examples" and ben.fraction == 0.5
    store.artifact_dir(score_run.id)
    store.finish(score_run.id, {"score": 0.25, "n": 4})
    ben = _status(store, code, "Ben")
    assert ben.phase == "scored" and ben.text == "Scored: 25% on 4 hidden examples"
    assert [p for p in room.PHASES] == ["queued", "training", "scoring", "scored"]


def test_a_failed_training_run_is_told_at_once(tiny_model_dir):
    store = RunStore()
    code, _ = _create(store, tiny_model_dir)
    challenges.join(store, code, "Ben")
    challenges.submit_finetune(store, code, "Ben", 3, 2, device="cpu")
    store.fail(results.submissions(store, code, "Ben")[-1]["train_run"], "boom")
    assert _status(store, code, "Ben") == room.Status("failed", "Training failed")


# Feedback


def _label_task(shots=("billing",)):
    return evaluate.Task(
        name="t",
        title="T",
        metric="accuracy",
        examples=[Example("HIDDEN INPUT 1", "billing"), Example("HIDDEN INPUT 2", "bug")],
        labels=["billing", "bug", "account", "feature request"],
        shots=[Example(f"train {i}", s) for i, s in enumerate(shots)],
    )


def test_feedback_counts_empty_non_label_and_long_answers_and_shows_a_training_answer():
    task = _label_task()
    outputs = [
        "",
        "   ",
        "Billing",
        "I think this ticket is about a problem with the bill that the customer got last month",
        "billing or bug",
        "Answer: account",
    ]
    fb = evaluate.answer_feedback(task, outputs)
    assert fb == {
        "n": 6,
        "empty": 2,
        "not_a_label": 2,  # the sentence names no label; "billing or bug" names two
        "too_long": 1,
        "word_limit": 5,
        "labels": ["billing", "bug", "account", "feature request"],
        "example_answer": "billing",
    }


def test_feedback_never_quotes_a_hidden_input_or_its_answer():
    task = _label_task(shots=("account",))
    fb = evaluate.answer_feedback(task, ["HIDDEN INPUT 1", "bug"])
    text = repr(fb)
    assert "HIDDEN INPUT" not in text and fb["example_answer"] == "account"
    brand = evaluate.Task("b", "B", "constraints", [Example("secret", "x")], rules={"max_words": 3})
    fb = evaluate.answer_feedback(brand, ["one two three four", "one two"])
    assert fb["not_a_label"] is None and fb["too_long"] == 1 and fb["word_limit"] == 3
    assert fb["example_answer"] is None
    long = evaluate.Task("f", "F", "token_f1", [Example("q", "a")], shots=[Example("p", "word " * 100)])
    assert evaluate.answer_feedback(long, [])["example_answer"].endswith("…")
    assert len(evaluate.answer_feedback(long, [])["example_answer"]) == evaluate.FEEDBACK_EXAMPLE_CHARS


def test_a_scored_submission_carries_its_feedback_counts(tiny_model_dir, tiny_loaded):
    store = RunStore()
    code, _ = _create(store, tiny_model_dir)
    challenges.join(store, code, "Ana")
    challenges.submit_prompt(store, code, "Ana", PROMPT, tiny_loaded.count_tokens, device="cpu")
    run = room.score_runs(store, code)[results.submissions(store, code, "Ana")[-1]["id"]]
    store.start(run.id, os.getpid(), "cpu")
    scoring.execute(store, run.id)
    entry = results.submissions(store, code, "Ana")[-1]
    fb = entry["feedback"]
    assert fb["n"] == 8 and fb["empty"] + fb["not_a_label"] <= 8 and fb["not_a_label"] is not None
    train = {e.response for e in datasets.load_builtin("support_triage").splits["train"]}
    assert fb["example_answer"] in train
    hidden = [e.prompt for e in datasets.load_held_back("support_triage")]
    assert not [p for p in hidden if p in repr(fb)]


# The projector's chart


def test_the_chart_names_each_learners_best_point_per_track_with_large_ticks():
    fig = figures.challenge_scores(
        [
            {"track": "prompt", "score": 0.5, "name": "Ada"},
            {"track": "prompt", "score": 0.25, "name": "Ada"},  # not her best: left out
            {"track": "prompt", "score": 0.5, "name": "<b>Bo</b>"},
            {"track": "finetune", "score": 0.9, "name": "Cy"},
            {"track": "finetune", "score": None, "name": "Di"},
        ],
        "accuracy",
    )
    points = {t.name: t for t in fig.data}
    assert list(points) == ["Prompt", "Fine-tune"]
    assert list(points["Prompt"].y) == [0.5, 0.5] and list(points["Fine-tune"].y) == [0.9]
    # names as text: the markup is escaped, so plotly draws it as typed
    assert list(points["Prompt"].text) == ["&lt;b&gt;Bo&lt;/b&gt;", "Ada"]
    # equal scores sit side by side, not on top of each other
    assert len(set(points["Prompt"].x)) == 2
    assert fig.layout.yaxis.tickfont.size >= 18 and fig.layout.xaxis.tickfont.size >= 18
    assert list(fig.layout.xaxis.ticktext) == ["Prompt (2)", "Fine-tune (1)"]
    assert [(s.y0, s.y1) for s in fig.layout.shapes] == [(0.5, 0.5), (0.9, 0.9)]  # each track's mean
    assert [a.text for a in fig.layout.annotations] == ["mean 50%", "mean 90%"]


def test_the_chart_with_one_score_or_none_is_still_a_chart():
    empty = figures.challenge_scores([], "accuracy")
    assert "Accuracy on the hidden test" in empty.layout.title.text and not empty.data
    one = figures.challenge_scores([{"track": "finetune", "score": 0.0, "name": "Zoe"}], "accuracy", height=300)
    shown = [t for t in one.data if t.mode == "markers+text"]
    assert [list(t.y) for t in shown] == [[], [0.0]] and list(shown[1].text) == ["Zoe"]
    assert one.layout.yaxis.range[0] < 0 < 1 < one.layout.yaxis.range[1] and one.layout.height == 300


def test_feedback_is_told_in_sentences_of_counts():
    fb = {"n": 10, "empty": 1, "not_a_label": 7, "too_long": 2, "word_limit": 5, "labels": ["billing", "bug"],
          "example_answer": "billing"}  # fmt: skip
    assert room.feedback_lines(fb) == [
        "1 answer of 10 was empty.",
        "7 answers of 10 did not name exactly one allowed answer (billing, bug).",
        "2 answers of 10 ran past 5 words.",
        "An answer of the right kind, from the training split: “billing”",
    ]
    clean = {**fb, "empty": 0, "not_a_label": 0, "too_long": 0}
    assert room.feedback_lines(clean)[0].startswith("None of the 10 answers was empty")
    assert room.feedback_lines(None) == [] and room.feedback_lines({"n": 0}) == []
