"""Who a learner is in a class challenge, and how much one learner may ask of it: rejoin tokens that survive a
reload and a restart, names keyed by NFKC and case folding (the leaderboard too), look-alike and invisible
names refused, the store's schema 4 -> 5 in place; caps on learners, joins per session, the class's queue and
prompt fields, and the prompt budget bounded before tokenizing."""

from __future__ import annotations

import importlib
import json
import sqlite3

import pytest

from ftvpe_core import FtvpeError
from ftvpe_core.store import runs
from ftvpe_core.store.runs import RunStore
from ftvpe_core.teaching import challenges, results

pytestmark = pytest.mark.timeout(180)

PROMPT = {"enabled": ["role", "context"], "role": "a support triage assistant", "output_format": "one word"}
BIG = 5_000_000


def _create(store, tiny_model_dir, **overrides):
    s = challenges.ChallengeSettings(
        **{
            "task": "support_triage",
            "hidden_limit": challenges.MIN_HIDDEN,
            "max_steps": 2,
            "model": str(tiny_model_dir),
            **overrides,
        }
    )
    return challenges.create(store, s)


def _end_runs(store, code):
    """Stand in for the job process: fail every waiting score run of the challenge."""
    for s in results.submissions(store, code):
        with store.reading() as conn:
            run_id = conn.execute("SELECT score_run FROM challenge_submissions WHERE id = ?", (s["id"],)).fetchone()[0]
        if store.get(run_id).active:
            store.fail(run_id, "test")


# Identity


def test_a_learner_comes_back_to_their_name_with_the_token_after_a_restart_and_nobody_else_can(tiny_model_dir):
    store = RunStore()
    code, _ = _create(store, tiny_model_dir)
    joined = challenges.join(store, code, "Ada")
    assert joined == "Ada" and len(joined.token) >= 12
    assert joined.token.encode() not in store.path.read_bytes()  # only a salted hash is kept
    challenges.submit_prompt(store, code, joined, PROMPT, None)

    again = RunStore(store.home)  # a restarted server, a reload or a new tab: only the token is left
    assert challenges.rejoin(again, code.lower(), f" {joined.token} ") == "Ada"
    assert [s["name"] for s in results.submissions(again, code, "Ada")] == ["Ada"]
    with pytest.raises(FtvpeError, match=f"not a rejoin token of challenge {code}"):
        challenges.rejoin(again, code, joined.token.swapcase())
    with pytest.raises(FtvpeError, match=f"not a rejoin token of challenge {code}"):
        challenges.rejoin(again, code, "")
    for taker in ("Ada", "ADA", " ada "):
        with pytest.raises(FtvpeError, match="Someone already joined as .* rejoin with your token"):
            challenges.join(again, code, taker)
    # Submitting with a token: the right one is Ada, a wrong one is refused and records nothing.
    _end_runs(again, code)
    with pytest.raises(FtvpeError, match="Someone already joined as 'ada'"):
        challenges.submit_prompt(again, code, "ada", PROMPT, None, token=challenges.new_token())
    challenges.submit_prompt(again, code, "ada", PROMPT, None, token=joined.token)
    assert [s["name"] for s in results.submissions(again, code)] == ["Ada", "Ada"]
    # A closed challenge takes no new names, but its learners can still come back to read their scores.
    other_code, key = _create(store, tiny_model_dir)
    bob = challenges.join(store, other_code, "Bob")
    challenges.close(store, other_code, key)
    assert challenges.rejoin(store, other_code, bob.token) == "Bob"
    with pytest.raises(FtvpeError, match=f"not a rejoin token of challenge {other_code}"):
        challenges.rejoin(store, other_code, joined.token)  # a token belongs to its own challenge


def test_a_refused_submission_takes_no_name_and_an_accepted_one_takes_it_with_its_token(tiny_model_dir):
    store = RunStore()
    code, _ = _create(store, tiny_model_dir, tracks="prompt")
    token = challenges.new_token()
    for bad in (
        lambda: challenges.submit_prompt(store, code, "Zed", {"enabled": ["role"]}, None, token=token),
        lambda: challenges.submit_finetune(store, code, "Zed", steps=1, examples=2, token=token),
    ):
        with pytest.raises(FtvpeError):
            bad()
        assert challenges.learners(store, code) == []
    challenges.submit_prompt(store, code, "Zed", PROMPT, None, token=token)
    assert challenges.learners(store, code) == ["Zed"] and challenges.rejoin(store, code, token) == "Zed"
    with pytest.raises(FtvpeError, match="Join challenge"):  # without a token a page must have joined first
        challenges.submit_prompt(store, code, "Yan", PROMPT, None)


@pytest.mark.parametrize(
    "first, second",
    [
        ("Alice", "\u0410lice"),  # Cyrillic capital A
        ("ABC", "\u0410\u0412\u0421"),  # all three Cyrillic: one alphabet, but it looks like a name taken
        ("Alice", "ALICE"),
        ("ÉVA", "éva"),  # folded once, as the store keys it (SQLite's NOCASE folds ASCII only)
        ("Kim", "\u212aim"),  # the Kelvin sign
        ("Bob", "Ｂｏｂ"),  # fullwidth
        ("BOB", "B0B"),
        ("Ian", "lan"),
        ("Tom", "Torn"),
        ("Éva", "E\u0301va"),  # decomposed
        ("Bob", "Bob\u3164"),  # a Hangul filler tacked on
        ("Ada Lovelace", "Ada\u2800Lovelace"),  # a Braille blank for the space
    ],
)
def test_a_name_that_is_or_looks_like_one_taken_is_refused(tiny_model_dir, first, second):
    store = RunStore()
    code, _ = _create(store, tiny_model_dir)
    challenges.join(store, code, first)
    with pytest.raises(FtvpeError, match="already joined|mixes letters of different alphabets"):
        challenges.join(store, code, second)
    assert len(challenges.learners(store, code)) == 1


def test_different_names_stay_different_and_names_in_one_alphabet_each_are_welcome(tiny_model_dir):
    store = RunStore()
    code, _ = _create(store, tiny_model_dir)
    for name in "Eva|Éva|Ian|Lan|Lea|Lia|Ana|Anna|Дмитрий|Dmitri Дмитрий|Anna 李|ẹ́mi|Kıvanç|Zoë".split("|"):
        challenges.join(store, code, name)
    assert len(challenges.learners(store, code)) == 14


@pytest.mark.parametrize(
    "name, words",
    [
        ("\u3164", "blank or invisible"),  # Hangul filler
        ("\u2800\u2800", "blank or invisible"),  # Braille blanks
        ("\u0301\u0308", "blank or invisible"),  # combining marks only
        ("\u200b", "invisible control characters"),  # zero-width space
        ("A\u200dda", "invisible control characters"),  # zero-width joiner
        ("\u0410lice", "mixes letters of different alphabets"),  # nobody has 'Alice' yet: refused on its own
        ("Zal\u0301\u0302\u0303\u0304\u0306go", "marks on one letter"),
    ],
)
def test_blank_invisible_and_mixed_alphabet_names_are_refused(tiny_model_dir, name, words):
    store = RunStore()
    code, _ = _create(store, tiny_model_dir)
    with pytest.raises(FtvpeError, match=words):
        challenges.join(store, code, name)
    assert challenges.learners(store, code) == []


def test_the_confusables_come_from_the_kept_library_with_unicodes_data_offline(monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("the confusables check tried the network")

    monkeypatch.setattr(socket, "socket", no_network)
    from confusable_homoglyphs import confusables

    from ftvpe_core.store import names

    importlib.reload(confusables)  # reads Unicode's data again, from the package's own files
    names._prototypes.cache_clear()
    assert names.lookalike("\u0440ay\u0440al", ["paypal"]) == "paypal"  # Cyrillic р is Latin p
    assert len(names._prototypes()) > 5000  # Unicode's table, not a hand-written one


SCHEMA_4 = """
DROP TABLE challenge_learners;
DROP TABLE challenge_submissions;
CREATE TABLE challenge_learners (
    code TEXT NOT NULL, name TEXT NOT NULL COLLATE NOCASE, joined REAL NOT NULL, PRIMARY KEY (code, name)
);
CREATE TABLE challenge_submissions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, code TEXT NOT NULL, name TEXT NOT NULL COLLATE NOCASE,
    track TEXT NOT NULL, created REAL NOT NULL, spec_json TEXT NOT NULL, prompt_tokens INTEGER,
    train_examples INTEGER, train_run TEXT, score_run TEXT, removed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX challenge_submissions_code ON challenge_submissions (code, name);
UPDATE schema_version SET version = 4;
"""


def test_a_schema_4_store_gains_name_keys_in_place_and_the_board_keeps_names_the_store_kept_apart(tiny_model_dir):
    store = RunStore()
    code, _ = _create(store, tiny_model_dir)
    scored = []
    for score in (0.5, 0.75):
        run_id = store.create("challenge", "support_triage", {"code": code})
        store.start(run_id, 1, "cpu")
        store.artifact_dir(run_id)
        store.finish(run_id, {"score": score, "n": 4})
        scored.append(run_id)
    with sqlite3.connect(store.path) as conn:  # the two tables as schema 4 wrote them
        conn.executescript(SCHEMA_4)
        for i, (name, run_id) in enumerate(zip(("ÉVA", "éva"), scored)):
            conn.execute("INSERT INTO challenge_learners VALUES (?, ?, ?)", (code, name, i))
            conn.execute(
                "INSERT INTO challenge_submissions (code, name, track, created, spec_json, prompt_tokens, "
                "score_run) VALUES (?, ?, 'prompt', ?, ?, 10, ?)",
                (code, name, i, json.dumps({"prompt": PROMPT}), run_id),
            )

    again = RunStore(store.home)
    board = results.leaderboard(again, code)["prompt"]
    assert sorted((e["name"], e["score"]) for e in board) == [("ÉVA", 0.5), ("éva", 0.75)]
    with again.reading() as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == 5 == runs.SCHEMA_VERSION
        keys = conn.execute("SELECT name, name_key FROM challenge_learners ORDER BY joined").fetchall()
    assert [tuple(k) for k in keys] == [("ÉVA", "éva"), ("éva", "éva\x00éva")]  # the first keeps the key
    assert [s["score"] for s in results.submissions(again, code, "ÉVA")] == [0.5]
    assert [s["score"] for s in results.submissions(again, code, "éva")] == [0.75]  # each keeps their own
    for run_id in scored:
        assert not again.get(run_id).active
    challenges.submit_prompt(again, code, "éva", PROMPT, None)  # the page's session still holds 'éva'
    assert [s["name"] for s in results.submissions(again, code, "éva")] == ["éva", "éva"]
    with pytest.raises(FtvpeError, match="already joined"):
        challenges.join(again, code, "Éva")
    assert challenges.rejoin  # old names have no token: they rejoin in the session they joined in
    with pytest.raises(FtvpeError, match="not a rejoin token"):
        challenges.rejoin(again, code, "")
    RunStore(store.home)  # opening a schema 5 store again changes nothing
    with again.reading() as conn:
        assert conn.execute("SELECT COUNT(*) FROM challenge_learners").fetchone()[0] == 2


# Caps


def test_a_challenge_takes_at_most_its_learners_and_a_browser_session_a_few_names(tiny_model_dir):
    store = RunStore()
    code, _ = _create(store, tiny_model_dir)
    assert challenges.ChallengeSettings(task="support_triage").max_learners == 60
    for i in range(60):
        challenges.join(store, code, f"learner {i}")
    with pytest.raises(FtvpeError, match=f"Challenge {code} is full: 60 learners have joined"):
        challenges.join(store, code, "one too many")
    with pytest.raises(FtvpeError, match="is full"):  # nor through a submission that takes a new name
        challenges.submit_prompt(store, code, "one too many", PROMPT, None, token=challenges.new_token())
    assert len(challenges.learners(store, code)) == 60

    small, _ = _create(store, tiny_model_dir, max_joins=2)
    challenges.join(store, small, "Ada", joins=1)
    with pytest.raises(FtvpeError, match="has already joined challenge .* under 2 names, the most it may"):
        challenges.join(store, small, "Bob", joins=2)
    with pytest.raises(FtvpeError, match="Max joins must be between 1 and 100"):
        challenges.ChallengeSettings(task="support_triage", max_joins=0)


def test_the_class_queue_is_capped_and_takes_submissions_again_as_scores_come_in(tiny_model_dir):
    store = RunStore()
    code, _ = _create(store, tiny_model_dir, max_queued=2)
    for name in ("Ada", "Bob", "Cy"):
        challenges.join(store, code, name)
    challenges.submit_prompt(store, code, "Ada", PROMPT, None)
    challenges.submit_prompt(store, code, "Bob", PROMPT, None)
    with pytest.raises(FtvpeError, match="The class's queue is full: 2 submissions are waiting"):
        challenges.submit_prompt(store, code, "Cy", PROMPT, None)
    with pytest.raises(FtvpeError, match="queue is full"):
        challenges.submit_finetune(store, code, "Cy", steps=1, examples=2)
    assert len(results.submissions(store, code)) == 2 and len(store.list()) == 2
    _end_runs(store, code)
    challenges.submit_prompt(store, code, "Cy", PROMPT, None)


def test_switched_off_fields_are_dropped_before_storing_and_kept_ones_are_length_limited(tiny_model_dir):
    store = RunStore()
    code, _ = _create(store, tiny_model_dir)
    challenges.join(store, code, "Ada")
    size = sum(p.stat().st_size for p in store.home.glob("runs.sqlite3*"))
    fields = {**PROMPT, "enabled": ["role"], "facts": "x" * BIG, "examples": [("in", "out" * BIG)]}
    sid = challenges.submit_prompt(store, code, "Ada", fields, None)
    spec = results.submissions(store, code)[0]["spec"]["prompt"]
    assert sid and spec["facts"] == "" and spec["examples"] == [] and spec["output_format"] == ""
    assert spec["role"] == PROMPT["role"]
    assert sum(p.stat().st_size for p in store.home.glob("runs.sqlite3*")) < size + 100_000
    _end_runs(store, code)
    for field, value in (
        ("role", "r" * 301),
        ("facts", "f" * 6001),
        ("output_format", "o" * 201),
        ("tone", "t" * 101),
        ("examples", [("i" * 3000, "o" * 3001)]),
    ):
        technique = {"role": "role", "examples": "few-shot"}.get(field, "context")
        with pytest.raises(FtvpeError, match=r"characters long; the limit is [\d,]+\. Shorten it\."):
            challenges.submit_prompt(store, code, "Ada", {"enabled": [technique], field: value}, None)
    assert len(results.submissions(store, code)) == 1


def test_the_prompt_budget_is_bounded_in_characters_before_anything_is_tokenized(tiny_model_dir):
    store = RunStore()
    code, _ = _create(store, tiny_model_dir, max_prompt_tokens=100)
    challenges.join(store, code, "Ada")
    counted = []

    def count(text: str) -> int:
        counted.append(len(text))
        return len(text.split())

    for fields in (
        {"enabled": ["context"], "facts": "x" * BIG},
        {"enabled": ["context"], "facts": "word " * 1000},  # within the field's limit, beyond 8 a token
        {"enabled": ["few-shot"], "examples": [("a" * 400, "b" * 401)]},
    ):
        with pytest.raises(FtvpeError, match="characters"):
            challenges.submit_prompt(store, code, "Ada", fields, count)
    assert counted == []  # refused before the tokenizer read any of it
    with pytest.raises(FtvpeError, match="more than 100 tokens can hold .* this challenge allows at most 100"):
        challenges.submit_prompt(store, code, "Ada", {"enabled": ["context"], "facts": "word " * 161}, count)
    challenges.submit_prompt(store, code, "Ada", {"enabled": ["context"], "facts": "word " * 20}, count)
    assert counted and results.submissions(store, code)[0]["prompt_tokens"] > 0


def test_a_fine_tune_of_zero_steps_or_examples_is_refused(tiny_model_dir):
    store = RunStore()
    code, _ = _create(store, tiny_model_dir)
    challenges.join(store, code, "Ada")
    with pytest.raises(FtvpeError, match="Train for at least 1 step, got 0"):
        challenges.submit_finetune(store, code, "Ada", steps=0, examples=2)
    with pytest.raises(FtvpeError, match="Train on at least 1 example, got 0"):
        challenges.submit_finetune(store, code, "Ada", steps=1, examples=0)
    assert store.list() == []
