"""Class challenges: a teacher poses a task, learners answer it with a prompt or a fine-tune, and a hidden
split of the data scores every submission.

A challenge lives in the run store's SQLite file (tables ``challenges``, ``challenge_learners`` and
``challenge_submissions``), so a restart keeps it. ``create`` returns a short join code and a teacher key;
the key is stored only as a salted PBKDF2 hash, checked in constant time, and every teacher action needs it.
Learners ``join`` with the code and a display name and submit a prompt (``prompts.PromptSpec`` fields; each
hidden input becomes its task) or a fine-tune (``finetune.TrainSettings`` within the budget, on training
examples they pick or drawn at random). A submission is scored by a run of kind 'challenge' that the job
process (``worker``) executes with ``evaluate.run_arm``, the batched evaluation Compare uses; a fine-tune
is first an ordinary 'finetune' run (``jobs.submit``) on the chosen training examples, queued just before.

The hidden split never goes to a learner: ``public`` shows the task and the training split, scores are
numbers only, scoring errors are reworded without the inputs, and only ``execute`` (to score) and ``reveal``
(with the teacher key) read the hidden examples. This module does not import streamlit or torch.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import hmac
import io
import json
import random
import secrets
import sqlite3
import time
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ftvpe_core import FtvpeError, adapters, datasets, evaluate, finetune, jobs, models, prompts
from ftvpe_core import settings as settings_module
from ftvpe_core.runs import RunStore

TRACKS = ("prompt", "finetune")
TRACK_CHOICES = {"both": TRACKS, "prompt": ("prompt",), "finetune": ("finetune",)}
TRACK_LABELS = {"prompt": "Prompt", "finetune": "Fine-tune"}
HIDDEN_SPLITS = ("test", "validation")
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""No 0/O or 1/I: a code read off a projector is typed right."""
CODE_LENGTH = 6
MAX_NAME_CHARS = 30
PER_MINUTE = 3
"""Submissions a learner may make in any 60 seconds."""
SHOWN_EXAMPLES = 5
"""Training examples shown on the challenge's card."""
KDF_ITERATIONS = 100_000
VALIDATION_EXAMPLES = 8
"""Examples a fine-tune measures its validation loss on (from the split that is neither train nor hidden)."""
PLACEHOLDER = "(each hidden input goes here)"
"""The task of a stored prompt template; scoring replaces it with each hidden input."""


@dataclass
class ChallengeSettings:
    """What a teacher poses. Every field maps onto one widget of the teacher's page and one CLI flag."""

    task: str
    """A built-in dataset's name, or the name of an uploaded JSONL/CSV file (its data goes to ``create``)."""
    title: str = ""
    """Shown to learners; empty: the dataset's title."""
    hidden_split: str = "test"
    """The split that scores submissions and that nobody sees: 'test' or 'validation'."""
    metric: str | None = None
    """Score with this metric instead of the dataset's own (evaluate.METRICS)."""
    tracks: str = "both"
    """Which submissions are open: 'prompt', 'finetune' or 'both'."""
    max_prompt_tokens: int = 300
    """Prompt track: most tokens a prompt may add to each input (role, examples, context, instructions)."""
    max_train_examples: int = 40
    """Fine-tune track: most training examples a learner may train on."""
    max_steps: int = 40
    """Fine-tune track: most training steps."""
    minutes: int = 60
    """How long the challenge stays open after it is created."""
    hidden_limit: int = 0
    """Score only the first this many hidden examples (quicker in class); 0 scores them all."""
    model: str | None = None
    """The base model every submission uses (None: the default one)."""

    def __post_init__(self) -> None:
        if not str(self.task).strip():
            raise FtvpeError("Name a task: a built-in dataset or an uploaded file.")
        if self.hidden_split not in HIDDEN_SPLITS:
            raise FtvpeError(f"The hidden split must be one of {', '.join(HIDDEN_SPLITS)}, got '{self.hidden_split}'.")
        if self.metric is not None and self.metric not in evaluate.METRICS:
            raise FtvpeError(f"Unknown metric '{self.metric}': choose from {', '.join(evaluate.METRICS)}.")
        if self.tracks not in TRACK_CHOICES:
            raise FtvpeError(f"Tracks must be one of {', '.join(TRACK_CHOICES)}, got '{self.tracks}'.")
        for name, low, high in (
            ("max_prompt_tokens", 1, 8192),
            ("max_train_examples", 1, datasets.MAX_ROWS),
            ("max_steps", 1, finetune.MAX_STEPS),
            ("minutes", 1, 7 * 24 * 60),
            ("hidden_limit", 0, datasets.MAX_ROWS),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise FtvpeError(
                    f"{name.replace('_', ' ').capitalize()} must be between {low} and {high}, got {value!r}."
                )
        if len(self.title) > 120:
            raise FtvpeError(f"The title is {len(self.title)} characters long; the limit is 120.")

    @property
    def open_tracks(self) -> tuple[str, ...]:
        return TRACK_CHOICES[self.tracks]


@dataclass
class Challenge:
    """A challenge as stored (without its key hash)."""

    code: str
    title: str
    settings: ChallengeSettings
    created: float
    closes: float
    closed: bool
    data: datasets.Dataset

    @property
    def open(self) -> bool:
        return not self.closed and time.time() < self.closes


# Keys and codes


def _hash_key(key: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", key.encode("utf-8"), salt, KDF_ITERATIONS)


def normal_code(code: str) -> str:
    """A join code as typed (spaces, lower case) in its stored form."""
    return "".join(str(code).split()).upper()


def _row(conn: sqlite3.Connection, code: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM challenges WHERE code = ?", (normal_code(code),)).fetchone()
    if row is None:
        raise FtvpeError(f"No challenge has the code '{str(code).strip()[:20]}'. Check the code your teacher showed.")
    return row


def _check_key(row: sqlite3.Row, key: str) -> None:
    if not hmac.compare_digest(_hash_key(str(key), row["key_salt"]), row["key_hash"]):
        raise FtvpeError(f"Wrong teacher key for challenge {row['code']}; nothing was changed.")


def _challenge(row: sqlite3.Row) -> Challenge:
    s = ChallengeSettings(**json.loads(row["settings_json"]))
    data = jobs.dataset_from_dict(json.loads(row["data_json"])) if row["data_json"] else datasets.load_builtin(s.task)
    return Challenge(row["code"], row["title"], s, row["created"], row["closes"], bool(row["closed"]), data)


# Teacher


def create(store: RunStore, settings: ChallengeSettings, data: datasets.Dataset | None = None) -> tuple[str, str]:
    """Pose a challenge; returns (join code, teacher key). The key is shown once: only its hash is kept.

    Args:
        data: an uploaded dataset (``datasets.parse_upload``); None loads ``settings.task`` as a built-in
            dataset or a JSONL/CSV file.
    """
    builtin = data is None and datasets.is_builtin(settings.task)
    data = data if data is not None else datasets.load(settings.task)
    hidden = data.splits.get(settings.hidden_split) or []
    if not hidden:
        raise FtvpeError(f"{data.title} has no '{settings.hidden_split}' examples to use as the hidden test.")
    if not data.splits.get("train"):
        raise FtvpeError(f"{data.title} has no training examples for learners to read and train on.")
    evaluate.task_from(data, hidden, data.splits["train"], settings.metric)  # the metric fits the data
    if builtin:
        settings = dataclasses.replace(settings, task=data.name)
    title = settings.title.strip() or data.title
    key = secrets.token_urlsafe(12)
    salt = secrets.token_bytes(16)
    now = time.time()
    with store.writing() as conn:
        while True:
            code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
            if conn.execute("SELECT 1 FROM challenges WHERE code = ?", (code,)).fetchone() is None:
                break
        conn.execute(
            "INSERT INTO challenges (code, title, settings_json, data_json, key_salt, key_hash, created, closes) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                code,
                title,
                json.dumps(asdict(settings)),
                None if builtin else json.dumps(jobs.dataset_dict(data)),
                salt,
                _hash_key(key, salt),
                now,
                now + 60 * settings.minutes,
            ),
        )
    return code, key


def get(store: RunStore, code: str) -> Challenge:
    """The challenge with this code (FtvpeError when there is none)."""
    with store.reading() as conn:
        return _challenge(_row(conn, code))


def check_key(store: RunStore, code: str, key: str) -> Challenge:
    """The challenge, when ``key`` is its teacher key; FtvpeError otherwise."""
    with store.reading() as conn:
        row = _row(conn, code)
        _check_key(row, key)
        return _challenge(row)


def _teacher_update(store: RunStore, code: str, key: str, sql: str, params: tuple) -> None:
    with store.writing() as conn:
        row = _row(conn, code)
        _check_key(row, key)
        conn.execute(sql, (*params, row["code"]))


def close(store: RunStore, code: str, key: str) -> None:
    """Stop taking submissions (scores already queued still come in)."""
    _teacher_update(store, code, key, "UPDATE challenges SET closed = 1 WHERE code = ?", ())


def reopen(store: RunStore, code: str, key: str, minutes: int = 30) -> None:
    """Take submissions again, for at least ``minutes`` more."""
    until = time.time() + 60 * max(1, int(minutes))
    _teacher_update(
        store, code, key, "UPDATE challenges SET closed = 0, closes = MAX(closes, ?) WHERE code = ?", (until,)
    )


def remove_submission(store: RunStore, code: str, key: str, submission_id: int) -> None:
    """Take a submission off the leaderboard (its runs stop if they still wait or run)."""
    with store.writing() as conn:
        row = _row(conn, code)
        _check_key(row, key)
        sub = conn.execute(
            "SELECT * FROM challenge_submissions WHERE id = ? AND code = ?", (int(submission_id), row["code"])
        ).fetchone()
        if sub is None:
            raise FtvpeError(f"Challenge {row['code']} has no submission {submission_id}.")
        conn.execute("UPDATE challenge_submissions SET removed = 1 WHERE id = ?", (sub["id"],))
    for run_id in (sub["train_run"], sub["score_run"]):
        if run_id:
            store.request_cancel(run_id)


def reveal(store: RunStore, code: str, key: str) -> list[dict]:
    """The hidden examples (teacher only), as {'prompt', 'response'} in scoring order."""
    challenge = check_key(store, code, key)
    return [e.to_dict() for e in hidden_task(challenge).examples]


def list_challenges(store: RunStore) -> list[dict]:
    """Every challenge, newest first, with its number of learners and submissions (the CLI's list)."""
    with store.reading() as conn:
        rows = conn.execute(
            "SELECT c.code, c.title, c.created, c.closes, c.closed, "
            "(SELECT COUNT(*) FROM challenge_learners l WHERE l.code = c.code) AS learners, "
            "(SELECT COUNT(*) FROM challenge_submissions s WHERE s.code = c.code AND s.removed = 0) AS submissions "
            "FROM challenges c ORDER BY c.created DESC"
        ).fetchall()
    now = time.time()
    return [{**dict(r), "closed": bool(r["closed"]), "open": not r["closed"] and now < r["closes"]} for r in rows]


# What learners see


def hidden_task(challenge: Challenge) -> evaluate.Task:
    """The hidden test as an evaluation task (few-shot pool: the training split). Never for a learner's eyes."""
    s = challenge.settings
    hidden = challenge.data.splits[s.hidden_split]
    return evaluate.task_from(challenge.data, hidden, challenge.data.splits["train"], s.metric, s.hidden_limit or None)


def _eval_split(challenge: Challenge) -> list[datasets.Example]:
    """Validation examples for a fine-tune: the split that is neither train nor hidden (else the training
    split's last few)."""
    other = "validation" if challenge.settings.hidden_split == "test" else "test"
    return (challenge.data.splits.get(other) or challenge.data.splits["train"][-VALIDATION_EXAMPLES:])[
        :VALIDATION_EXAMPLES
    ]


def public(store: RunStore, code: str) -> dict:
    """What a learner may read: the task, its budgets and a few training examples; nothing hidden."""
    c = get(store, code)
    s = c.settings
    train = c.data.splits["train"]
    return {
        "code": c.code,
        "title": c.title,
        "description": c.data.description,
        "metric": s.metric or c.data.metric,
        "labels": list(c.data.labels),
        "tracks": list(s.open_tracks),
        "max_prompt_tokens": s.max_prompt_tokens,
        "max_train_examples": min(s.max_train_examples, len(train)),
        "max_steps": s.max_steps,
        "closes": c.closes,
        "open": c.open,
        "model": s.model,
        "train_size": len(train),
        "examples": [{"prompt": e.prompt, "response": e.response} for e in train[:SHOWN_EXAMPLES]],
    }


def training_examples(store: RunStore, code: str) -> list[dict]:
    """The whole training split (public: learners pick from it), as {'prompt', 'response'}."""
    return [{"prompt": e.prompt, "response": e.response} for e in get(store, code).data.splits["train"]]


def clean_name(name: str) -> str:
    """A display name checked: 1 to MAX_NAME_CHARS characters, no control characters."""
    name = " ".join(str(name).split())
    if not name:
        raise FtvpeError("Type a display name.")
    if len(name) > MAX_NAME_CHARS:
        raise FtvpeError(f"Your name is {len(name)} characters long; the limit is {MAX_NAME_CHARS}.")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise FtvpeError("Your name has invisible control characters; type it again.")
    return name


def _check_open(row: sqlite3.Row) -> None:
    if row["closed"] or time.time() >= row["closes"]:
        raise FtvpeError(f"Challenge {row['code']} is closed; it takes no more names or submissions.")


def join(store: RunStore, code: str, name: str) -> str:
    """Join a challenge under a display name (unique within it, ignoring case); returns the cleaned name."""
    name = clean_name(name)
    with store.writing() as conn:
        row = _row(conn, code)
        _check_open(row)
        try:
            conn.execute(
                "INSERT INTO challenge_learners (code, name, joined) VALUES (?, ?, ?)", (row["code"], name, time.time())
            )
        except sqlite3.IntegrityError:
            raise FtvpeError(f"Someone already joined as '{name}'; pick another name.") from None
    return name


# Submitting


def prompt_tokens(template: prompts.PromptSpec, count_tokens: prompts.CountTokens | None) -> int:
    """Tokens a prompt adds to each input: every segment but the task (role, examples, context, instructions)."""
    built = prompts.build(template, count_tokens)
    return sum(s.tokens for s in built.segments if s.technique != "task")


def token_counter(model: str | None = None) -> prompts.CountTokens:
    """Counts tokens as the model does (``LoadedModel.count_tokens``), from its tokenizer alone (quick)."""
    tokenizer = models.load_tokenizer(models.resolve(model))
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def learners(store: RunStore, code: str) -> list[str]:
    """The names that joined a challenge, in the order they joined."""
    with store.reading() as conn:
        rows = conn.execute(
            "SELECT name FROM challenge_learners WHERE code = ? ORDER BY joined", (normal_code(code),)
        ).fetchall()
    return [r["name"] for r in rows]


def template_from(fields: dict) -> prompts.PromptSpec:
    """A prompt template from the Prompt Lab's fields (``enabled``, ``role``, ``examples``, ...); its task is a
    placeholder that scoring replaces with each hidden input."""
    known = {f.name for f in dataclasses.fields(prompts.PromptSpec)} - {"task"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise FtvpeError(f"Unknown prompt field {', '.join(unknown)}.")
    spec = prompts.PromptSpec(task=PLACEHOLDER, **fields)
    if not spec.enabled:
        raise FtvpeError("Switch on at least one technique: the plain prompt is everybody's starting point.")
    return spec


def _reserve(
    store: RunStore, code: str, name: str, track: str, spec: dict, tokens: int | None, examples: int | None
) -> tuple[int, Challenge]:
    """Check the rules and record a submission without runs yet, in one transaction; returns its id."""
    now = time.time()
    with store.writing() as conn:
        row = _row(conn, code)
        _check_open(row)
        challenge = _challenge(row)
        if track not in challenge.settings.open_tracks:
            raise FtvpeError(
                f"Challenge {row['code']} takes {TRACK_LABELS[challenge.settings.open_tracks[0]]} submissions only."
            )
        if (
            conn.execute("SELECT 1 FROM challenge_learners WHERE code = ? AND name = ?", (row["code"], name)).fetchone()
            is None
        ):
            raise FtvpeError(f"Join challenge {row['code']} first.")
        pending = conn.execute(
            "SELECT COUNT(*) FROM challenge_submissions s LEFT JOIN runs r ON r.id = s.score_run "
            "WHERE s.code = ? AND s.name = ? AND s.removed = 0 AND "
            "((s.score_run IS NULL AND s.created > ?) OR r.status IN ('queued', 'running'))",
            (row["code"], name, now - 60),
        ).fetchone()[0]
        if pending:
            raise FtvpeError("You already have a submission being scored; wait for its score, then submit again.")
        recent = conn.execute(
            "SELECT created FROM challenge_submissions WHERE code = ? AND name = ? AND created > ? ORDER BY created",
            (row["code"], name, now - 60),
        ).fetchall()
        if len(recent) >= PER_MINUTE:
            wait = 60 - (now - recent[0]["created"])
            raise FtvpeError(f"At most {PER_MINUTE} submissions a minute; try again in {wait:.0f} s.")
        cur = conn.execute(
            "INSERT INTO challenge_submissions (code, name, track, created, spec_json, prompt_tokens, train_examples) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (row["code"], name, track, now, json.dumps(spec), tokens, examples),
        )
        return int(cur.lastrowid), challenge


def _queue_score(
    store: RunStore, sid: int, challenge: Challenge, track: str, device: str, train_run: str | None = None
) -> str:
    record = {
        "code": challenge.code,
        "submission": sid,
        "track": track,
        "train_run": train_run,
        "model": challenge.settings.model or settings_module.default_model(),
        "dataset_title": challenge.title,
        "preset": "challenge",
    }
    try:
        score_run = store.create("challenge", challenge.data.name, record, device)
    except BaseException:
        with store.writing() as conn:
            conn.execute("UPDATE challenge_submissions SET removed = 1 WHERE id = ?", (sid,))
        raise
    with store.writing() as conn:
        conn.execute(
            "UPDATE challenge_submissions SET train_run = ?, score_run = ? WHERE id = ?", (train_run, score_run, sid)
        )
    return score_run


def submit_prompt(
    store: RunStore,
    code: str,
    name: str,
    fields: dict,
    count_tokens: prompts.CountTokens | None,
    device: str | None = None,
) -> int:
    """Submit a prompt (the Prompt Lab's technique fields, without a task); returns the submission's id.

    Args:
        count_tokens: the model's token counter (``LoadedModel.count_tokens``), for the prompt budget.

    Raises:
        FtvpeError: a closed or unknown challenge, a bad field, a prompt over the token budget, a pending
            submission or too many in a minute.
    """
    template = template_from(fields)
    tokens = prompt_tokens(template, count_tokens)
    limit = get(store, code).settings.max_prompt_tokens
    if tokens > limit:
        raise FtvpeError(f"Your prompt adds {tokens:,} tokens to each input; this challenge allows at most {limit:,}.")
    spec = {"prompt": {k: v for k, v in template.to_dict().items() if k != "task"}}
    sid, challenge = _reserve(store, code, clean_name(name), "prompt", spec, tokens, None)
    _queue_score(store, sid, challenge, "prompt", device or settings_module.pick_device())
    return sid


def submit_finetune(
    store: RunStore,
    code: str,
    name: str,
    steps: int,
    examples: int | list[int],
    learning_rate: float | None = None,
    rank: int | None = None,
    device: str | None = None,
    seed: int = 0,
) -> int:
    """Submit a fine-tune: the quick preset with ``steps`` steps on training examples; returns its id.

    Args:
        examples: how many training examples to draw at random, or the indices (0-based, in the training split)
            of the ones the learner picked.
        learning_rate, rank: override the quick preset's.
    """
    c = get(store, code)
    s, train = c.settings, c.data.splits["train"]
    picked = "learner" if isinstance(examples, list) else "random"
    if isinstance(examples, list):
        indices = sorted({int(i) for i in examples})
        bad = [i for i in indices if not 0 <= i < len(train)]
        if bad:
            raise FtvpeError(f"Example {bad[0] + 1} is not in the training split (1 to {len(train)}).")
    else:
        if isinstance(examples, bool) or not isinstance(examples, int) or examples < 1:
            raise FtvpeError(f"Train on at least 1 example, got {examples!r}.")
        indices = sorted(random.Random(seed).sample(range(len(train)), min(examples, len(train))))
    if not indices:
        raise FtvpeError("Pick at least one training example.")
    if len(indices) > s.max_train_examples:
        raise FtvpeError(
            f"You picked {len(indices)} training examples; this challenge allows at most {s.max_train_examples}."
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps > s.max_steps:
        raise FtvpeError(f"You asked for {steps} training steps; this challenge allows at most {s.max_steps}.")
    overrides = {k: v for k, v in {"learning_rate": learning_rate, "rank": rank}.items() if v is not None}
    quick = finetune.PRESETS["quick"].values
    train_settings = finetune.from_preset(
        "quick",
        max_steps=steps,
        epochs=0,
        max_train_examples=0,
        max_val_examples=VALIDATION_EXAMPLES,
        eval_every=max(1, min(quick.get("eval_every", 10), steps)),
        seed=seed,
        **overrides,
    )
    spec = {"settings": train_settings.to_dict(), "examples": indices, "picked": picked}
    name = clean_name(name)
    sid, challenge = _reserve(store, code, name, "finetune", spec, None, len(indices))
    device = device or settings_module.pick_device()
    data = datasets.Dataset(
        name=f"challenge_{challenge.code.lower()}",
        title=f"{challenge.title} ({name})",
        task=c.data.task,
        metric=c.data.metric,
        description=f"Challenge {challenge.code}: {len(indices)} training examples.",
        labels=list(c.data.labels),
        rules=dict(c.data.rules),
        splits={"train": [train[i] for i in indices], "validation": _eval_split(challenge), "test": []},
    )
    try:
        train_run = jobs.submit(data, train_settings, s.model, device, store, preset="quick")
    except BaseException:
        with store.writing() as conn:
            conn.execute("UPDATE challenge_submissions SET removed = 1 WHERE id = ?", (sid,))
        raise
    _queue_score(store, sid, challenge, "finetune", device, train_run)
    return sid


# Scoring, in the job process


def _learner_error(e: BaseException) -> str:
    """A scoring failure in words that quote nothing of the hidden inputs."""
    text = str(e)
    if isinstance(e, FtvpeError) and ("context" in text or "tokens" in text):
        return "Scoring failed: a prompt built from a hidden input did not fit the model's context; shorten yours."
    return f"Scoring on the hidden test failed ({type(e).__name__}); your teacher can read the job's log."


def execute(store: RunStore, run_id: str, interrupted: Callable[[], bool] | None = None) -> dict:
    """Score a claimed 'challenge' run on the hidden test; the summary (numbers only) goes to the store."""
    run = store.get(run_id)
    try:
        challenge = get(store, run.settings["code"])
        track = run.settings["track"]
        with store.reading() as conn:
            sub = conn.execute(
                "SELECT * FROM challenge_submissions WHERE id = ?", (run.settings["submission"],)
            ).fetchone()
        if sub is None or sub["removed"]:
            raise FtvpeError("This submission was removed by the teacher.")
        adapter, train_s, template = None, 0.0, None
        if track == "finetune":
            train = store.get(run.settings["train_run"])
            if train.status != "complete":
                raise FtvpeError(f"The fine-tune did not finish ({train.status}): {train.error or 'no reason given'}")
            adapter = store.artifact_dir(train.id)
            train_s = float((train.summary or {}).get("train_seconds", 0.0))
        else:
            template = prompts.PromptSpec.from_dict({**json.loads(sub["spec_json"])["prompt"], "task": PLACEHOLDER})
        store.set_progress(run_id, 0.05, "Loading the model")
        loaded = models.load(
            run.settings.get("model"), device=run.device, weight_format=adapters.WEIGHT_FORMAT, adapter=adapter
        )
        if template is not None and prompt_tokens(template, loaded.count_tokens) > challenge.settings.max_prompt_tokens:
            raise FtvpeError(f"The prompt is over this challenge's {challenge.settings.max_prompt_tokens} tokens.")
        task = hidden_task(challenge)
        store.set_progress(run_id, 0.1, f"Scoring on {len(task.examples)} hidden examples")

        def progress(done: int, total: int) -> None:
            store.set_progress(run_id, 0.1 + 0.9 * done / max(total, 1), f"Scored {done} of {total} hidden examples")

        try:
            arm = evaluate.run_arm(
                loaded, task, track, TRACK_LABELS[track], (), train_s, on_progress=progress, template=template
            )
        except Exception as e:  # noqa: BLE001 - reworded: the original may quote a hidden input
            raise FtvpeError(_learner_error(e)) from e
        summary = {
            "score": arm.score,
            "n": arm.n,
            "metric": task.metric,
            "mean_prompt_tokens": arm.mean_prompt_tokens,
            "mean_latency_s": arm.mean_latency_s,
            "train_seconds": train_s,
            # Counts only, over the answers scored (room's evaluate.answer_feedback): what the learner is told.
            "feedback": evaluate.answer_feedback(task, [r.answer for r in arm.examples]),
        }
        store.artifact_dir(run_id)
        store.finish(run_id, summary)
        return {"run_id": run_id, "status": "complete", **summary}
    except BaseException as e:
        if store.get(run_id).status in ("queued", "running"):
            store.fail(run_id, str(e) if isinstance(e, FtvpeError) else _learner_error(e))
        raise


def run_foreground(store: RunStore, submission_id: int) -> dict:
    """Train (for a fine-tune) and score a submission here, in this process (the CLI's ``challenge submit``)."""
    import os

    with store.reading() as conn:
        sub = conn.execute("SELECT * FROM challenge_submissions WHERE id = ?", (submission_id,)).fetchone()
    if sub["train_run"]:
        store.start(sub["train_run"], os.getpid(), store.get(sub["train_run"]).device)
        try:
            jobs.execute(store, sub["train_run"], measure_accuracy=False)
        except Exception:  # noqa: BLE001 - the run is marked failed; scoring then says so
            pass
    store.start(sub["score_run"], os.getpid(), store.get(sub["score_run"]).device)
    return execute(store, sub["score_run"])


# Reading the results


_STATUS_WORDS = {
    "queued": "waiting",
    "running": "scoring",
    "complete": "scored",
    "failed": "failed",
    "cancelled": "removed",
    "interrupted": "interrupted",
}


def submissions(store: RunStore, code: str, name: str | None = None) -> list[dict]:
    """Every submission kept (of one learner, when ``name`` is given), oldest first, with its status, score and
    costs: ``prompt_tokens`` (added to each input), ``mean_prompt_tokens`` (a call, as scored),
    ``train_examples`` and ``train_seconds``."""
    query = (
        "SELECT s.*, r.status AS status, r.summary_json AS summary, r.error AS error, r.progress_json AS progress, "
        "t.status AS train_status, (SELECT MAX(step) FROM metrics m WHERE m.run_id = s.train_run) AS train_step "
        "FROM challenge_submissions s LEFT JOIN runs r ON r.id = s.score_run LEFT JOIN runs t ON t.id = s.train_run "
        "WHERE s.code = ? AND s.removed = 0"
    )
    params: tuple = (normal_code(code),)
    if name is not None:
        query, params = query + " AND s.name = ?", (*params, name)
    with store.reading() as conn:
        rows = conn.execute(query + " ORDER BY s.created, s.id", params).fetchall()
    out = []
    for r in rows:
        summary = json.loads(r["summary"]) if r["summary"] else {}
        status = r["status"] or "queued"
        spec = json.loads(r["spec_json"])
        training = r["train_status"] in ("queued", "running")
        if training:
            done = "" if r["train_step"] is None else f": step {r['train_step']} of {spec['settings']['max_steps']}"
            now = "waiting for the job process" if r["train_status"] == "queued" else f"training{done}"
        else:
            now = (json.loads(r["progress"] or "null") or {}).get("message", "")
        out.append(
            {
                "id": r["id"],
                "name": r["name"],
                "track": r["track"],
                "created": r["created"],
                "status": "training" if training else _STATUS_WORDS.get(status, status),
                "progress": now,
                "error": r["error"] if status == "failed" else None,
                "score": summary.get("score"),
                "n": summary.get("n"),
                "prompt_tokens": r["prompt_tokens"],
                "mean_prompt_tokens": summary.get("mean_prompt_tokens"),
                "train_examples": r["train_examples"],
                "train_seconds": summary.get("train_seconds"),
                "mean_latency_s": summary.get("mean_latency_s"),
                "feedback": summary.get("feedback"),
                "train_run": r["train_run"],
                "spec": spec,
            }
        )
    return out


def cost(entry: dict) -> int:
    """What a tie is broken on: the prompt's added tokens, or the number of training examples."""
    return int(entry["prompt_tokens"] if entry["track"] == "prompt" else entry["train_examples"]) or 0


def leaderboard(store: RunStore, code: str, entries: list[dict] | None = None) -> dict[str, list[dict]]:
    """Per track, each learner's best scored submission, best first: higher score, then fewer prompt tokens
    or training examples, then earlier. Each entry gains its ``rank``."""
    entries = submissions(store, code) if entries is None else entries
    best: dict[tuple[str, str], dict] = {}
    order = lambda e: (-e["score"], cost(e), e["created"])  # noqa: E731
    for e in entries:
        if e["score"] is None:
            continue
        key = (e["track"], e["name"].lower())
        if key not in best or order(e) < order(best[key]):
            best[key] = e
    board: dict[str, list[dict]] = {t: [] for t in TRACKS}
    for e in sorted(best.values(), key=order):
        board[e["track"]].append({**e, "rank": len(board[e["track"]]) + 1})
    return board


def _mean(entries: list[dict], key: str) -> float | None:
    return sum(e.get(key) or 0 for e in entries) / len(entries) if entries else None


def track_summary(entries: list[dict]) -> dict[str, dict]:
    """Per track: scored submissions, mean and best score, and mean cost (prompt tokens a call, training s)."""
    out = {}
    for track in TRACKS:
        scored = [e for e in entries if e["track"] == track and e["score"] is not None]
        out[track] = {
            "n": len(scored),
            "mean_score": _mean(scored, "score"),
            "best_score": max((e["score"] for e in scored), default=None),
            "mean_prompt_tokens": _mean(scored, "mean_prompt_tokens"),
            "mean_train_seconds": _mean(scored, "train_seconds"),
        }
    return out


def describe(entry: dict) -> str:
    """A submission in one line of plain text: its prompt's techniques and fields, or its training recipe."""
    spec = entry["spec"]
    if entry["track"] == "prompt":
        p = spec["prompt"]
        parts = [f"techniques: {', '.join(p.get('enabled') or []) or 'none'}"]
        if "role" in p.get("enabled", []):
            parts.append(f"role: {p.get('role', '')}")
        if "few-shot" in p.get("enabled", []):
            parts.append(f"{len(p.get('examples') or [])} examples")
        if "context" in p.get("enabled", []):
            parts += [f"{k}: {p[k]}" for k in ("facts", "tone", "audience", "words", "output_format") if p.get(k)]
        return "; ".join(parts)
    t = spec["settings"]
    return (
        f"{entry['train_examples']} examples ({spec.get('picked', 'random')}), {t['max_steps']} steps, "
        f"learning rate {t['learning_rate']:g}, rank {t['rank']}"
    )


def best_pair(store: RunStore, code: str) -> dict[str, dict | None]:
    """The top entry of each track (None where nobody scored yet)."""
    board = leaderboard(store, code)
    return {t: (board[t][0] if board[t] else None) for t in TRACKS}


# Export (teacher)


def _csv_cell(value: object) -> object:
    # A spreadsheet runs a cell that starts with = + - @ as a formula: names and prompts are text.
    text = "" if value is None else value
    if isinstance(text, str) and text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def export_csv(store: RunStore, code: str, key: str) -> str:
    """Every submission kept, one row each (teacher key needed)."""
    check_key(store, code, key)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "id",
            "name",
            "track",
            "time",
            "status",
            "score",
            "hidden_examples",
            "prompt_tokens_added",
            "prompt_tokens_per_call",
            "train_examples",
            "train_seconds",
            "submission",
        ]
    )
    for e in submissions(store, code):
        writer.writerow(
            [
                _csv_cell(v)
                for v in (
                    e["id"],
                    e["name"],
                    e["track"],
                    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["created"])),
                    e["status"],
                    None if e["score"] is None else round(e["score"], 4),
                    e["n"],
                    e["prompt_tokens"],
                    None if e["mean_prompt_tokens"] is None else round(e["mean_prompt_tokens"], 1),
                    e["train_examples"],
                    None if e["train_seconds"] is None else round(e["train_seconds"], 1),
                    describe(e),
                )
            ]
        )
    return out.getvalue()


def export(store: RunStore, code: str, key: str) -> dict:
    """The challenge's results as one JSON-ready dict (``report.challenge_html`` writes it as a page)."""
    c = check_key(store, code, key)
    entries = submissions(store, code)
    return {
        "code": c.code,
        "title": c.title,
        "metric": c.settings.metric or c.data.metric,
        "hidden_split": c.settings.hidden_split,
        "hidden_n": len(hidden_task(c).examples),
        "created": c.created,
        "submissions": entries,
        "leaderboard": leaderboard(store, code, entries),
        "tracks": track_summary(entries),
        "descriptions": {e["id"]: describe(e) for e in entries},
    }


def compare_arms(store: RunStore, code: str, key: str) -> dict:
    """What Compare needs to score a challenge's best prompt and best run (teacher key needed: Compare shows
    every example it scores): {'task', 'run_id', 'prompt', 'names'}.

    Raises:
        FtvpeError: a challenge Compare cannot score (an upload, or a hidden validation split), or no scores yet.
    """
    c = check_key(store, code, key)
    if not datasets.is_builtin(c.settings.task) or c.settings.hidden_split != "test":
        raise FtvpeError(
            f"Compare scores a built-in task's test split; challenge {c.code} hides the "
            f"{c.settings.hidden_split} split of {c.data.title}, so Compare cannot score it."
        )
    best = best_pair(store, code)
    if best["prompt"] is None and best["finetune"] is None:
        raise FtvpeError(f"Nobody has a score in challenge {c.code} yet.")
    return {
        "task": c.data.name,
        "run_id": best["finetune"]["train_run"] if best["finetune"] else None,
        "prompt": best["prompt"]["spec"]["prompt"] if best["prompt"] else None,
        "names": {t: e["name"] for t, e in best.items() if e},
    }
