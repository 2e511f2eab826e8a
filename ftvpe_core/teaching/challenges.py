"""Class challenges: a teacher poses a task, learners answer it with a prompt or a fine-tune, and a hidden
set of examples scores every submission.

A challenge lives in the run store's SQLite file (tables ``challenges``, ``challenge_learners`` and
``challenge_submissions``), so a restart keeps it. ``create`` returns a short join code and a teacher key;
the key is stored only as a salted PBKDF2 hash, checked in constant time, and every teacher action needs it.
Learners ``join`` with the code and a display name and submit a prompt (``prompts.PromptSpec`` fields; each
hidden input becomes its task) or a fine-tune (``finetune.TrainSettings`` within the budget, on training
examples they pick or drawn at random). A submission is scored by a run of kind 'challenge' that the job
process (``worker``) executes with ``evaluate.run_arm``, the batched evaluation Compare uses; a fine-tune
is first an ordinary 'finetune' run (``tuning.submit``) on the chosen training examples, queued just before.

The hidden set never goes to a learner. On a built-in task it is the dataset's held-back set
(``datasets.load_held_back``), written for challenges and in none of the splits that pages, the CLI and Compare
show; on an upload it is the split the teacher names. As on Kaggle it is shuffled once per challenge (a seed
stored with it) into a public part, whose scores the live leaderboard shows, and a private part that only the
teacher's final ranking (``final``, ``export``) uses, so probing the live board learns nothing that counts.
``public`` shows the task and the training split, scores are numbers only, nothing learners see is measured on
the hidden inputs' lengths, scoring errors are reworded without the inputs (the cause goes to the job log), and
only ``execute`` (to score) and ``reveal`` (with the teacher key) read the hidden examples. Neither streamlit nor
torch is imported here.
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
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ftvpe_core import FtvpeError
from ftvpe_core import settings as settings_module
from ftvpe_core.model import adapters, models
from ftvpe_core.store import names
from ftvpe_core.store import runs as runs_module
from ftvpe_core.store.runs import RunStore
from ftvpe_core.tasks import datasets, evaluate, prompts
from ftvpe_core.training import finetune, tuning

KIND = "challenge"
"""The runs this module queues and executes: a submission's scoring (``jobs.kinds``)."""
TRACKS = ("prompt", "finetune")
TRACK_CHOICES = {"both": TRACKS, "prompt": ("prompt",), "finetune": ("finetune",)}
TRACK_LABELS = {"prompt": "Prompt", "finetune": "Fine-tune"}
HIDDEN_SPLITS = ("test", "validation")
"""The splits of an upload that may be its hidden set (a built-in task always uses its held-back set)."""
PARTS = ("public", "private")
"""The two parts of a hidden set: the live leaderboard scores the public one, the final ranking the private one."""
PUBLIC_SHARE = 0.4
"""Share of the hidden examples in the public part (Kaggle's competitions use 20-50%)."""
MIN_HIDDEN = 20
"""Fewest hidden examples a challenge scores: enough for a public part and a private part of 8 and 12."""
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""No 0/O or 1/I: a code read off a projector is typed right."""
CODE_LENGTH = 6
MAX_NAME_CHARS = names.MAX_NAME_CHARS
PER_MINUTE = 3
"""Submissions a learner may make in any 60 seconds."""
SHOWN_EXAMPLES = 5
"""Training examples shown on the challenge's card."""
KDF_ITERATIONS = 100_000
VALIDATION_EXAMPLES = 8
"""Examples a fine-tune measures its validation loss on (from the split that is neither train nor hidden)."""
PLACEHOLDER = "(each hidden input goes here)"
"""The task of a stored prompt template; scoring replaces it with each hidden input."""
FIELD_CHARS = {"role": 300, "examples": 6000, "facts": 6000, "audience": 200, "tone": 100, "output_format": 200}
"""Most characters in each prompt field (the examples: inputs and outputs together); the form's limits too."""
FIELD_LABELS = {
    "role": "role is",
    "examples": "few-shot examples are",
    "facts": "background is",
    "audience": "audience is",
    "tone": "tone is",
    "output_format": "answer format is",
}
TECHNIQUE_FIELDS = {
    "role": ("role",),
    "few-shot": ("examples",),
    "context": ("facts", "tone", "audience", "words", "output_format"),
}
"""The fields each technique sends; a switched-off technique's fields are dropped before a prompt is stored."""
PROMPT_WEIGHT_FORMAT = None
"""The weights prompt submissions are scored on: the device's default (None; a GGUF model's own 4-bit weights on
a CPU), the ones the Prompt Lab tried the prompt on. Scoring is prefill-bound, and q4 prefills with a bfloat16
copy: 20 hidden inputs x 6 prompts on one core, 22.8 s against 37.7 s in float32. A fine-tune is scored on
float32 with its adapter merged (``adapters.WEIGHT_FORMAT``): 4-bit codes cannot hold a merged update."""
CHARS_PER_TOKEN = 8
"""A prompt longer than this many characters per token of the budget is refused before it is tokenized (a
token of ordinary text is about 4 characters), so a huge text costs no tokenizer time."""
TOKEN_BYTES = 9
"""A rejoin token's randomness: 72 bits, 12 characters to type."""


@dataclass
class ChallengeSettings:
    """What a teacher poses. Every field maps onto one widget of the teacher's page and one CLI flag."""

    task: str
    """A built-in dataset's name, or the name of an uploaded JSONL/CSV file (its data goes to ``create``)."""
    title: str = ""
    """Shown to learners; empty: the dataset's title."""
    hidden_split: str = "test"
    """An upload's split that scores submissions and that nobody sees: 'test' or 'validation'. A built-in task
    always scores on its held-back set, which no page shows."""
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
    seed: int | None = None
    """Shuffles the hidden set into its public and private parts (None: drawn at create); stored, so the parts
    never change."""
    max_learners: int = 60
    """Most names that may join (a class and its visitors)."""
    max_joins: int = 3
    """Names one browser session may join under (a rejoin with a token does not count)."""
    max_queued: int = 40
    """Most submissions waiting or being scored at once, the whole class together; more wait their turn."""

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
            ("max_learners", 1, 1000),
            ("max_joins", 1, 100),
            ("max_queued", 1, 1000),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise FtvpeError(
                    f"{name.replace('_', ' ').capitalize()} must be between {low} and {high}, got {value!r}."
                )
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise FtvpeError(f"The seed must be a whole number, got {self.seed!r}.")
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
    builtin: bool = False
    """A built-in task: its hidden set is the dataset's held-back set, not one of ``data``'s splits."""

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


def _challenge_settings(row: sqlite3.Row) -> ChallengeSettings:
    return ChallengeSettings(**json.loads(row["settings_json"]))


def _challenge(row: sqlite3.Row) -> Challenge:
    s = _challenge_settings(row)
    builtin = not row["data_json"]
    data = datasets.load_builtin(s.task) if builtin else datasets.from_dict(json.loads(row["data_json"]))
    if s.seed is None:  # a challenge created before the seed was stored: one fixed by its code
        s = dataclasses.replace(s, seed=int.from_bytes(hashlib.sha256(row["code"].encode()).digest()[:4], "big"))
    return Challenge(row["code"], row["title"], s, row["created"], row["closes"], bool(row["closed"]), data, builtin)


def _hidden_pool(data: datasets.Dataset, settings: ChallengeSettings, builtin: bool) -> list[datasets.Example]:
    """Every hidden example, in file order: a built-in task's held-back set, or an upload's hidden split."""
    return datasets.load_held_back(data.name) if builtin else list(data.splits.get(settings.hidden_split) or [])


def _parts(
    pool: list[datasets.Example], settings: ChallengeSettings
) -> tuple[list[datasets.Example], list[datasets.Example]]:
    """(public, private): the pool shuffled by the challenge's seed, cut to ``hidden_limit``, then split."""
    order = list(pool)
    random.Random(settings.seed).shuffle(order)
    if settings.hidden_limit:
        order = order[: settings.hidden_limit]
    n_public = max(1, round(len(order) * PUBLIC_SHARE)) if order else 0
    return order[:n_public], order[n_public:]


def hidden_source(challenge: Challenge) -> str:
    """Where a challenge's hidden examples come from, in one sentence for the teacher."""
    public, private = _parts(_hidden_pool(challenge.data, challenge.settings, challenge.builtin), challenge.settings)
    where = (
        f"the held-back set of {challenge.data.title}, written for challenges and shown on no page, in no split "
        "and by no command a learner uses"
        if challenge.builtin
        else f"the {challenge.settings.hidden_split} split of the uploaded {challenge.data.title}"
    )
    return (
        f"Hidden examples: {len(public) + len(private)} from {where}; the live leaderboard scores {len(public)} "
        f"of them (public part) and the final ranking the other {len(private)} (private part)."
    )


# Teacher


def create(store: RunStore, settings: ChallengeSettings, data: datasets.Dataset | None = None) -> tuple[str, str]:
    """Pose a challenge; returns (join code, teacher key). The key is shown once: only its hash is kept.

    Args:
        data: an uploaded dataset (``datasets.parse_upload``); None loads ``settings.task`` as a built-in
            dataset or a JSONL/CSV file.
    """
    builtin = data is None and datasets.is_builtin(settings.task)
    data = data if data is not None else datasets.load(settings.task)
    if settings.seed is None:
        settings = dataclasses.replace(settings, seed=secrets.randbelow(2**31))
    pool = _hidden_pool(data, settings, builtin)
    public_part, private_part = _parts(pool, settings)
    hidden = public_part + private_part
    if len(hidden) < MIN_HIDDEN:
        where = "held-back set" if builtin else f"'{settings.hidden_split}' split"
        if settings.hidden_limit and len(pool) >= MIN_HIDDEN:
            why = f"'Hidden examples scored' is {settings.hidden_limit}; set it to 0 (all) or at least {MIN_HIDDEN}"
        elif builtin:
            why = "this built-in task ships too few held-back examples"
        else:
            rows = -(-MIN_HIDDEN * 100 // (20 if settings.hidden_split == "test" else 15))
            why = f"upload a file of at least {rows} rows (the {settings.hidden_split} split is a share of it)"
        raise FtvpeError(
            f"{data.title} has {len(hidden)} hidden examples in its {where}; a challenge needs at least "
            f"{MIN_HIDDEN}, a public part for the live leaderboard and a private part for the final ranking: {why}."
        )
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
                None if builtin else json.dumps(datasets.to_dict(data)),
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


def withdraw(store: RunStore, code: str, name: str, submission_id: int) -> None:
    """A learner takes back one of their own submissions (its runs stop if they still wait or run). Only its
    owner can: the name must be the one it was submitted under; the teacher uses ``remove_submission``."""
    name = clean_name(name)
    with store.writing() as conn:
        row = _row(conn, code)
        sub = conn.execute(
            "SELECT * FROM challenge_submissions WHERE id = ? AND code = ? AND removed = 0",
            (int(submission_id), row["code"]),
        ).fetchone()
        if sub is None or sub["name"].casefold() != name.casefold():
            raise FtvpeError(f"You have no submission {submission_id} in challenge {row['code']}; nothing was changed.")
        conn.execute("UPDATE challenge_submissions SET removed = 1 WHERE id = ?", (sub["id"],))
    for run_id in (sub["train_run"], sub["score_run"]):
        if run_id:
            store.request_cancel(run_id)


def reveal(store: RunStore, code: str, key: str) -> list[dict]:
    """The hidden examples (teacher only), as {'part', 'prompt', 'response'} in scoring order: the public part
    first, then the private part."""
    challenge = check_key(store, code, key)
    public_part, private_part = _parts(
        _hidden_pool(challenge.data, challenge.settings, challenge.builtin), challenge.settings
    )
    return [{"part": part, **e.to_dict()} for part, es in zip(PARTS, (public_part, private_part)) for e in es]


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


def hidden_task(challenge: Challenge, part: str | None = None) -> evaluate.Task:
    """The hidden set as an evaluation task (few-shot pool: the training split), the public part first; only
    one part when ``part`` names it. Never for a learner's eyes."""
    if part is not None and part not in PARTS:
        raise FtvpeError(f"The part must be one of {', '.join(PARTS)}, got {part!r}.")
    s = challenge.settings
    public_part, private_part = _parts(_hidden_pool(challenge.data, s, challenge.builtin), s)
    hidden = {"public": public_part, "private": private_part}.get(part, public_part + private_part)
    return evaluate.task_from(challenge.data, hidden, challenge.data.splits["train"], s.metric)


def _eval_split(challenge: Challenge) -> list[datasets.Example]:
    """Validation examples for a fine-tune: the split that is neither train nor hidden (else the training
    split's last few). A built-in task hides none of its splits: its validation split."""
    other = "validation" if challenge.builtin or challenge.settings.hidden_split == "test" else "test"
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
    """A display name checked (``names.clean``: NFKC, visible, no look-alike scripts, 1 to MAX_NAME_CHARS)."""
    return names.clean(name)


class Joined(str):
    """A name taken in a challenge, as a str (callers that want only the name use it as one), with its rejoin
    ``token``: shown once, only its hash is kept."""

    token: str

    def __new__(cls, name: str, token: str) -> Joined:
        joined = super().__new__(cls, name)
        joined.token = token
        return joined


def _check_open(row: sqlite3.Row) -> None:
    if row["closed"] or time.time() >= row["closes"]:
        raise FtvpeError(f"Challenge {row['code']} is closed; it takes no more names or submissions.")


def _hash_token(token: str, salt: bytes) -> bytes:
    # The token is random (72 bits), not a password: a salted SHA-256 cannot be reversed, and a slow KDF
    # would make every rejoin scan of a class cost seconds.
    return hashlib.sha256(salt + str(token).strip().encode("utf-8")).digest()


def _learner(conn: sqlite3.Connection, code: str, name: str) -> sqlite3.Row | None:
    """The learner of this name: by its key, or by the exact name first (two names a schema 4 store kept
    apart may share a key, the later one stored with its key set apart)."""
    return conn.execute(
        "SELECT * FROM challenge_learners WHERE code = ? AND (name_key = ? OR name = ? COLLATE BINARY) "
        "ORDER BY name = ? COLLATE BINARY DESC LIMIT 1",
        (code, names.key(name), name, name),
    ).fetchone()


def _taken(name: str) -> FtvpeError:
    return FtvpeError(
        f"Someone already joined as '{name}'. If that is you, rejoin with your token; otherwise pick another name."
    )


def _claim(conn: sqlite3.Connection, row: sqlite3.Row, settings: ChallengeSettings, name: str, token: str) -> str:
    """Take a free name for a learner with this rejoin token (inside the caller's write transaction)."""
    existing = _learner(conn, row["code"], name)
    if existing is not None:
        raise _taken(name)
    taken = [r["name"] for r in conn.execute("SELECT name FROM challenge_learners WHERE code = ?", (row["code"],))]
    if len(taken) >= settings.max_learners:
        raise FtvpeError(
            f"Challenge {row['code']} is full: {settings.max_learners} learners have joined. Ask your teacher."
        )
    other = names.lookalike(name, taken)
    if other is not None:
        raise FtvpeError(f"'{name}' looks too much like '{other}', who already joined; pick another name.")
    salt = secrets.token_bytes(16)
    conn.execute(
        "INSERT INTO challenge_learners (code, name, joined, name_key, token_salt, token_hash) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (row["code"], name, time.time(), names.key(name), salt, _hash_token(token, salt)),
    )
    return name


def new_token() -> str:
    """A fresh rejoin token."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def join(store: RunStore, code: str, name: str, joins: int = 0) -> Joined:
    """Join a challenge under a display name nobody else has (``names.key``) and nothing taken looks like.

    Args:
        joins: names this browser session already joined under (the page counts them); the challenge's
            ``max_joins`` caps it.

    Returns:
        The cleaned name, with its rejoin token as ``.token``: shown once, it lets the learner back in after
        a reload, in a new tab or after a restart (``rejoin``).
    """
    name = clean_name(name)
    token = new_token()
    with store.writing() as conn:
        row = _row(conn, code)
        _check_open(row)
        settings = _challenge_settings(row)
        if joins >= settings.max_joins:
            raise FtvpeError(
                f"This browser has already joined challenge {row['code']} under {joins} "
                f"name{'' if joins == 1 else 's'}, the most it may. Rejoin with your token instead."
            )
        _claim(conn, row, settings, name, token)
    return Joined(name, token)


def rejoin(store: RunStore, code: str, token: str) -> str:
    """The name a rejoin token belongs to in this challenge (open or closed); FtvpeError for any other token."""
    token = str(token).strip()
    with store.reading() as conn:
        row = _row(conn, code)
        rows = conn.execute(
            "SELECT name, token_salt, token_hash FROM challenge_learners WHERE code = ? AND token_hash IS NOT NULL",
            (row["code"],),
        ).fetchall()
    found = None
    for r in rows:  # every row is checked, so the time taken says nothing about which one matched
        if hmac.compare_digest(_hash_token(token, r["token_salt"]), r["token_hash"]):
            found = r["name"]
    if found is None or not token:
        raise FtvpeError(f"That is not a rejoin token of challenge {row['code']}; check it (capitals count).")
    return found


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
    placeholder that scoring replaces with each hidden input. The fields of switched-off techniques are
    dropped; each kept field is at most its FIELD_CHARS."""
    known = {f.name for f in dataclasses.fields(prompts.PromptSpec)} - {"task"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise FtvpeError(f"Unknown prompt field {', '.join(unknown)}.")
    enabled = set(fields.get("enabled") or ())
    dropped = {f for t, fs in TECHNIQUE_FIELDS.items() if t not in enabled for f in fs}
    kept = {k: v for k, v in fields.items() if k not in dropped}
    if not enabled & set(prompts.TECHNIQUES):
        raise FtvpeError("Switch on at least one technique: the plain prompt is everybody's starting point.")
    examples = kept.get("examples") or []
    if not isinstance(examples, list | tuple) or not all(isinstance(e, list | tuple) and len(e) == 2 for e in examples):
        raise FtvpeError("Give the few-shot examples as (input, output) pairs.")
    for field, limit in FIELD_CHARS.items():
        value = kept.get(field)
        length = sum(len(str(part)) for e in examples for part in e) if field == "examples" else len(str(value or ""))
        if length > limit:
            label = FIELD_LABELS[field]
            raise FtvpeError(f"The {label} {length:,} characters long; the limit is {limit:,}. Shorten it.")
    return prompts.PromptSpec(task=PLACEHOLDER, **kept)


def prompt_chars(template: prompts.PromptSpec) -> int:
    """Characters a prompt's fields add (what the token budget is bounded by before tokenizing)."""
    t = template
    return len(t.role) + sum(len(i) + len(o) for i, o in t.examples) + sum(len(v) for v in t.context_parts().values())


def _pending(conn: sqlite3.Connection, code: str, now: float, name_key: str | None = None) -> int:
    """Submissions waiting or being scored (of one learner when ``name_key`` is given); one written in the
    last minute without its score run yet counts too."""
    query = (
        "SELECT COUNT(*) FROM challenge_submissions s LEFT JOIN runs r ON r.id = s.score_run "
        "WHERE s.code = ? AND s.removed = 0 AND "
        "((s.score_run IS NULL AND s.created > ?) OR r.status IN ('queued', 'running'))"
    )
    params: tuple = (code, now - 60)
    if name_key is not None:
        query, params = query + " AND s.name_key = ?", (*params, name_key)
    return conn.execute(query, params).fetchone()[0]


def _reserve(
    store: RunStore,
    code: str,
    name: str,
    track: str,
    spec: dict,
    tokens: int | None,
    examples: int | None,
    token: str | None = None,
) -> tuple[int, Challenge, str]:
    """Check the rules and record a submission without runs yet, in one transaction; returns its id, the
    challenge and the learner's name as joined.

    Args:
        token: None when the caller has the learner joined (a page's session); else the name's rejoin token,
            or for a free name the token it is taken with, in the same transaction as the submission, so a
            refused submission takes no name.
    """
    now = time.time()
    with store.writing() as conn:
        row = _row(conn, code)
        _check_open(row)
        challenge = _challenge(row)
        if track not in challenge.settings.open_tracks:
            raise FtvpeError(
                f"Challenge {row['code']} takes {TRACK_LABELS[challenge.settings.open_tracks[0]]} submissions only."
            )
        learner = _learner(conn, row["code"], name)
        if learner is None and token is None:
            raise FtvpeError(f"Join challenge {row['code']} first.")
        if learner is not None and token is not None:
            if learner["token_hash"] is None or not hmac.compare_digest(
                _hash_token(token, learner["token_salt"]), learner["token_hash"]
            ):
                raise _taken(name)
        key = names.key(clean_name(name)) if learner is None else learner["name_key"]
        if _pending(conn, row["code"], now, key):
            raise FtvpeError("You already have a submission being scored; wait for its score, then submit again.")
        recent = conn.execute(
            "SELECT created FROM challenge_submissions WHERE code = ? AND name_key = ? AND created > ? "
            "ORDER BY created",
            (row["code"], key, now - 60),
        ).fetchall()
        if len(recent) >= PER_MINUTE:
            wait = 60 - (now - recent[0]["created"])
            raise FtvpeError(f"At most {PER_MINUTE} submissions a minute; try again in {wait:.0f} s.")
        waiting = _pending(conn, row["code"], now)
        if waiting >= challenge.settings.max_queued:
            raise FtvpeError(
                f"The class's queue is full: {waiting} submissions are waiting to be scored. Try again in a minute."
            )
        # A new name is checked here, with the submission; a joined one is looked up by its key only, so a name
        # an older version let in (schema 4) still submits.
        shown = (
            learner["name"] if learner is not None else _claim(conn, row, challenge.settings, clean_name(name), token)
        )
        cur = conn.execute(
            "INSERT INTO challenge_submissions "
            "(code, name, name_key, track, created, spec_json, prompt_tokens, train_examples) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (row["code"], shown, key, track, now, json.dumps(spec), tokens, examples),
        )
        return int(cur.lastrowid), challenge, shown


def learner_key(code: str, name: str) -> str:
    """Who a challenge run belongs to in the fair queue (``schedule``): each learner of each challenge takes turns
    with every other learner (and with the Fine-Tune Lab's), however many runs one of them queues."""
    return f"challenge:{normal_code(code)}:{names.key(name)}"


def _queue_score(
    store: RunStore, sid: int, challenge: Challenge, track: str, device: str, train_run: str | None = None
) -> str:
    name = _submission_name(store, sid)
    record = {
        "code": challenge.code,
        "submission": sid,
        "track": track,
        "train_run": train_run,
        runs_module.AFTER_KEY: train_run,  # not scored before its fine-tune has ended (and again if it resumes)
        "model": challenge.settings.model or settings_module.default_model(),
        "dataset_title": challenge.title,
        "preset": "challenge",
    }
    try:
        score_run = store.create(KIND, challenge.data.name, record, device, learner=learner_key(challenge.code, name))
    except BaseException:
        with store.writing() as conn:
            conn.execute("UPDATE challenge_submissions SET removed = 1 WHERE id = ?", (sid,))
        raise
    with store.writing() as conn:
        conn.execute(
            "UPDATE challenge_submissions SET train_run = ?, score_run = ? WHERE id = ?", (train_run, score_run, sid)
        )
    return score_run


def _submission_name(store: RunStore, sid: int) -> str:
    with store.reading() as conn:
        return conn.execute("SELECT name FROM challenge_submissions WHERE id = ?", (sid,)).fetchone()["name"]


def submit_prompt(
    store: RunStore,
    code: str,
    name: str,
    fields: dict,
    count_tokens: prompts.CountTokens | None,
    device: str | None = None,
    token: str | None = None,
) -> int:
    """Submit a prompt (the Prompt Lab's technique fields, without a task); returns the submission's id.

    Args:
        count_tokens: the model's token counter (``LoadedModel.count_tokens``), for the prompt budget.
        token: see ``_reserve``: None for a learner joined in this session, else the name's rejoin token (a
            free name is taken with it only if the submission is accepted).

    Raises:
        FtvpeError: a closed or unknown challenge, a bad or overlong field, a prompt over the token budget, a
            pending submission, too many in a minute or a full queue.
    """
    limit = get(store, code).settings.max_prompt_tokens
    template = template_from(fields)
    chars = prompt_chars(template)
    if chars > CHARS_PER_TOKEN * limit:  # refused before the tokenizer reads a huge text
        raise FtvpeError(
            f"Your prompt adds {chars:,} characters to each input, more than {limit:,} tokens can hold (at most "
            f"{CHARS_PER_TOKEN * limit:,} characters, {CHARS_PER_TOKEN} a token); this challenge allows at most {limit:,}."
        )
    tokens = prompt_tokens(template, count_tokens)
    if tokens > limit:
        raise FtvpeError(f"Your prompt adds {tokens:,} tokens to each input; this challenge allows at most {limit:,}.")
    spec = {"prompt": {k: v for k, v in template.to_dict().items() if k != "task"}}
    sid, challenge, _ = _reserve(store, code, name, "prompt", spec, tokens, None, token)
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
    token: str | None = None,
) -> int:
    """Submit a fine-tune: the quick preset with ``steps`` steps on training examples; returns its id.

    Args:
        examples: how many training examples to draw at random, or the indices (0-based, in the training split)
            of the ones the learner picked.
        learning_rate, rank: override the quick preset's.
        token: as for ``submit_prompt``.
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
    if steps < 1:
        raise FtvpeError(f"Train for at least 1 step, got {steps}.")
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
    sid, challenge, name = _reserve(store, code, name, "finetune", spec, None, len(indices), token)
    device = device or settings_module.pick_device()
    data = datasets.Dataset(
        name=runs_module.CHALLENGE_RUN,  # no join code: the run's record and download name no challenge
        title=f"{challenge.title} ({name})",
        task=c.data.task,
        metric=c.data.metric,
        description=f"A class challenge's fine-tune: {len(indices)} training examples.",
        labels=list(c.data.labels),
        rules=dict(c.data.rules),
        splits={"train": [train[i] for i in indices], "validation": _eval_split(challenge), "test": []},
    )
    try:
        train_run = tuning.submit(
            data,
            train_settings,
            s.model,
            device,
            store,
            preset="quick",
            learner=learner_key(challenge.code, name),
            probes=0,  # nobody reads a challenge fine-tune's sample answers: no seconds spent on them
        )
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
    challenge: Challenge
    track: str
    template: prompts.PromptSpec | None
    adapter: Path | None
    train_s: float
    model: str | None
    device: str


def _prepare(store: RunStore, run_id: str, interrupted: Callable[[], bool] | None) -> _Scoring:
    run = store.get(run_id)
    challenge = get(store, run.settings["code"])
    track = run.settings["track"]
    with store.reading() as conn:
        sub = conn.execute("SELECT * FROM challenge_submissions WHERE id = ?", (run.settings["submission"],)).fetchone()
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
        template = prompts.PromptSpec.from_dict({**json.loads(sub["spec_json"])["prompt"], "task": PLACEHOLDER})
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
    weights = adapters.WEIGHT_FORMAT if first.adapter else PROMPT_WEIGHT_FORMAT
    loaded = models.load(first.model, device=first.device, weight_format=weights, adapter=first.adapter)
    ready: list[_Scoring] = []
    for item in group:
        cap = item.challenge.settings.max_prompt_tokens
        if item.template is not None and prompt_tokens(item.template, loaded.count_tokens) > cap:
            out[item.run_id] = FtvpeError(f"The prompt is over this challenge's {cap} tokens.")
        else:
            ready.append(item)
    tasks = {item.run_id: hidden_task(item.challenge) for item in ready}
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

    arms = [evaluate.ArmSpec(tasks[i.run_id], i.track, TRACK_LABELS[i.track], (), i.train_s, i.template) for i in ready]
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
        n_public = len(hidden_task(item.challenge, "public").examples)
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


def runs_of(store: RunStore, submission_id: int) -> tuple[str | None, str]:
    """A submission's runs: (its fine-tune's, or None for a prompt; its score's)."""
    with store.reading() as conn:
        sub = conn.execute(
            "SELECT train_run, score_run FROM challenge_submissions WHERE id = ?", (submission_id,)
        ).fetchone()
    if sub is None:
        raise FtvpeError(f"There is no submission {submission_id}.")
    return sub["train_run"], sub["score_run"]


# Reading the results


HALF_WRITTEN_S = 60.0
"""A submission still without its score run this long after it was made was cut off half-written."""
HALF_WRITTEN_ERROR = "This submission was cut off while it was being recorded (the server stopped); submit it again."
_STATUS_WORDS = {
    "queued": "waiting",
    "running": "scoring",
    "complete": "scored",
    "failed": "failed",
    "cancelled": "removed",
    "interrupted": "interrupted",
}


def _check_part(part: str) -> None:
    if part not in PARTS:
        raise FtvpeError(f"The part must be one of {', '.join(PARTS)}, got {part!r}.")


def submissions(store: RunStore, code: str, name: str | None = None, part: str = "public") -> list[dict]:
    """Every submission kept (of one learner, when ``name`` is given: compared by ``names.key``), oldest first,
    with its name ``key``, status, score and costs: ``prompt_tokens`` (added to each input), ``train_examples``
    and ``train_seconds``.

    Args:
        part: whose score ``score`` and ``n`` hold: 'public' (the live board: what learners see) or
            'private' (the final ranking, teacher only; the entries then also hold ``public_score``).
    """
    _check_part(part)
    query = (
        "SELECT s.*, r.status AS status, r.summary_json AS summary, r.error AS error, r.progress_json AS progress, "
        "t.status AS train_status, (SELECT MAX(step) FROM metrics m WHERE m.run_id = s.train_run) AS train_step "
        "FROM challenge_submissions s LEFT JOIN runs r ON r.id = s.score_run LEFT JOIN runs t ON t.id = s.train_run "
        "WHERE s.code = ? AND s.removed = 0"
    )
    params: tuple = (normal_code(code),)
    with store.reading() as conn:
        if name is not None:
            learner = _learner(conn, params[0], name)
            key = learner["name_key"] if learner is not None else names.key(name)
            query, params = query + " AND s.name_key = ?", (*params, key)
        rows = conn.execute(query + " ORDER BY s.created, s.id", params).fetchall()
    out = []
    for r in rows:
        summary = json.loads(r["summary"]) if r["summary"] else {}
        status = r["status"] or "queued"
        spec = json.loads(r["spec_json"])
        training = r["train_status"] in ("queued", "running", "interrupted")
        error = r["error"] if status == "failed" else None
        if training:
            done = "" if r["train_step"] is None else f": step {r['train_step']} of {spec['settings']['max_steps']}"
            now = {
                "queued": "waiting for the job process",
                "running": f"training{done}",
                "interrupted": f"interrupted{done}; it goes on when the app's job process starts again",
            }[r["train_status"]]
        elif r["score_run"] is None and time.time() - r["created"] > HALF_WRITTEN_S:
            # Cut off between its two writes (the server stopped): it will never be scored.
            status, now, error = "failed", "", HALF_WRITTEN_ERROR
        elif status == "queued":
            now = ""  # its place in the queue is the runner's to say (``runners.place_words``, ``room.status``)
        else:
            now = (json.loads(r["progress"] or "null") or {}).get("message", "")
        out.append(
            {
                "id": r["id"],
                "name": r["name"],
                "key": r["name_key"] or names.key(r["name"]),
                "track": r["track"],
                "created": r["created"],
                "status": "training" if training else _STATUS_WORDS.get(status, status),
                "progress": now,
                "error": error,
                "score": summary.get("score" if part == "public" else "private_score"),
                "n": summary.get("n" if part == "public" else "private_n"),
                "prompt_tokens": r["prompt_tokens"],
                "train_examples": r["train_examples"],
                "train_seconds": summary.get("train_seconds"),
                "feedback": summary.get("feedback"),
                "train_run": r["train_run"],
                "score_run": r["score_run"],
                "spec": spec,
                **({"public_score": summary.get("score")} if part == "private" else {}),
            }
        )
    return out


def cost(entry: dict) -> int:
    """What a tie is broken on: the prompt's added tokens, or the number of training examples."""
    return int(entry["prompt_tokens"] if entry["track"] == "prompt" else entry["train_examples"]) or 0


def leaderboard(
    store: RunStore, code: str, entries: list[dict] | None = None, part: str = "public"
) -> dict[str, list[dict]]:
    """Per track, each learner's (``key``'s) best scored submission, best first: higher score, then fewer prompt tokens
    or training examples, then earlier. Each entry gains its ``rank``.

    Args:
        entries: ``submissions`` already read (their ``score`` is then the part they were read for).
        part: 'public' (the live board learners see) or 'private' (the final ranking: ``final``).
    """
    _check_part(part)
    entries = submissions(store, code, part=part) if entries is None else entries
    best: dict[tuple[str, str], dict] = {}
    order = lambda e: (-e["score"], cost(e), e["created"])  # noqa: E731
    for e in entries:
        if e["score"] is None:
            continue
        key = (e["track"], e.get("key") or names.key(e["name"]))
        if key not in best or order(e) < order(best[key]):
            best[key] = e
    board: dict[str, list[dict]] = {t: [] for t in TRACKS}
    for e in sorted(best.values(), key=order):
        board[e["track"]].append({**e, "rank": len(board[e["track"]]) + 1})
    return board


def final(store: RunStore, code: str, key: str) -> dict[str, list[dict]]:
    """The final ranking (teacher key needed): each learner's best on the private part of the hidden set,
    which no learner's board ever showed, so probing the live board could not tune a submission to it."""
    check_key(store, code, key)
    return leaderboard(store, code, part="private")


def _mean(entries: list[dict], key: str) -> float | None:
    return sum(e.get(key) or 0 for e in entries) / len(entries) if entries else None


def track_summary(entries: list[dict]) -> dict[str, dict]:
    """Per track: scored submissions, mean and best score, and mean cost (``mean_prompt_tokens``: the tokens a
    prompt adds to each input, never a count of the hidden inputs; training s)."""
    out = {}
    for track in TRACKS:
        scored = [e for e in entries if e["track"] == track and e["score"] is not None]
        out[track] = {
            "n": len(scored),
            "mean_score": _mean(scored, "score"),
            "best_score": max((e["score"] for e in scored), default=None),
            "mean_prompt_tokens": _mean(scored, "prompt_tokens"),
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


def best_pair(store: RunStore, code: str, part: str = "public") -> dict[str, dict | None]:
    """The top entry of each track (None where nobody scored yet) on the live board (or the final ranking)."""
    board = leaderboard(store, code, part=part)
    return {t: (board[t][0] if board[t] else None) for t in TRACKS}


# Export (teacher)


def _csv_cell(value: object) -> object:
    # A spreadsheet runs a cell that starts with = + - @ as a formula: names and prompts are text.
    text = "" if value is None else value
    if isinstance(text, str) and text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def export_csv(store: RunStore, code: str, key: str) -> str:
    """Every submission kept, one row each (teacher key needed): its live score (public part) and its final
    score (private part)."""
    c = check_key(store, code, key)
    public_n = len(hidden_task(c, "public").examples)
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
            "final_score",
            "final_examples",
            "prompt_tokens_added",
            "train_examples",
            "train_seconds",
            "submission",
        ]
    )
    for e in submissions(store, code, part="private"):
        writer.writerow(
            [
                _csv_cell(v)
                for v in (
                    e["id"],
                    e["name"],
                    e["track"],
                    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["created"])),
                    e["status"],
                    None if e["public_score"] is None else round(e["public_score"], 4),
                    public_n,
                    None if e["score"] is None else round(e["score"], 4),
                    e["n"],
                    e["prompt_tokens"],
                    e["train_examples"],
                    None if e["train_seconds"] is None else round(e["train_seconds"], 1),
                    describe(e),
                )
            ]
        )
    return out.getvalue()


def export(store: RunStore, code: str, key: str) -> dict:
    """The challenge's results as one JSON-ready dict (``report.challenge_html`` writes it as a page): the
    final ranking on the private part (``leaderboard``; each entry also holds its ``public_score``) and the live
    board as learners saw it (``public_leaderboard``)."""
    c = check_key(store, code, key)
    entries = submissions(store, code, part="private")
    return {
        "code": c.code,
        "title": c.title,
        "metric": c.settings.metric or c.data.metric,
        "hidden_split": "held-back" if c.builtin else c.settings.hidden_split,
        "hidden_source": hidden_source(c),
        "hidden_n": len(hidden_task(c).examples),
        "public_n": len(hidden_task(c, "public").examples),
        "private_n": len(hidden_task(c, "private").examples),
        "created": c.created,
        "submissions": entries,
        "leaderboard": leaderboard(store, code, entries, part="private"),
        "public_leaderboard": leaderboard(store, code, part="public"),
        "tracks": track_summary(entries),
        "descriptions": {e["id"]: describe(e) for e in entries},
    }


def compare_arms(store: RunStore, code: str, key: str) -> dict:
    """What Compare needs to score a challenge's best prompt and best run (by the final ranking) on the task's
    public test split, which holds none of the hidden examples: {'task', 'run_id', 'prompt', 'names'}.

    Raises:
        FtvpeError: a challenge Compare cannot score (an upload: Compare scores built-in tasks), or no scores yet.
    """
    c = check_key(store, code, key)
    if not c.builtin:
        raise FtvpeError(
            f"Compare scores a built-in task's public test split; challenge {c.code} is on the uploaded "
            f"{c.data.title}, so Compare cannot score it."
        )
    best = best_pair(store, code, part="private")
    if best["prompt"] is None and best["finetune"] is None:
        raise FtvpeError(f"Nobody has a score in challenge {c.code} yet.")
    return {
        "task": c.data.name,
        "run_id": best["finetune"]["train_run"] if best["finetune"] else None,
        "prompt": best["prompt"]["spec"]["prompt"] if best["prompt"] else None,
        "names": {t: e["name"] for t, e in best.items() if e},
    }
