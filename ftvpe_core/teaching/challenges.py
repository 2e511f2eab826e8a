"""Class challenges: a teacher poses a task, learners answer it with a prompt or a fine-tune, and a hidden
set of examples scores every submission.

A challenge lives in the run store's SQLite file (tables ``challenges``, ``challenge_learners`` and
``challenge_submissions``, read and written through ``RunStore.challenge_tables``), so a restart keeps it.
``create`` returns a short join code and a teacher key; the key is stored only as a salted PBKDF2 hash, checked in constant time, and every teacher action needs it.
Learners ``join`` with the code and a display name and submit a prompt (``prompts.PromptSpec`` fields; each
hidden input becomes its task) or a fine-tune (``finetune.TrainSettings`` within the budget, on training
examples they pick or drawn at random). A submission is scored by a run of kind 'challenge' (``KIND``) that the
short lane's job process executes (``scoring``) with the batched evaluation Compare uses; a fine-tune is first an
ordinary 'finetune' run (``tuning.submit``) on the chosen training examples, queued just before. The results,
the boards and the exports are ``results``'.

The hidden set never goes to a learner. On a built-in task it is the dataset's held-back set
(``datasets.load_held_back``), written for challenges and in none of the splits that pages, the CLI and Compare
show; on an upload it is the split the teacher names. As on Kaggle it is shuffled once per challenge (a seed
stored with it) into a public part, whose scores the live leaderboard shows, and a private part that only the
teacher's final ranking (``final``, ``export``) uses, so probing the live board learns nothing that counts.
``public`` shows the task and the training split, scores are numbers only, nothing learners see is measured on
the hidden inputs' lengths, scoring errors are reworded without the inputs (the cause goes to the job log), and
only ``scoring`` and ``reveal`` (with the teacher key) read the hidden examples. Neither streamlit nor
torch is imported here.

Over 600 lines because a challenge's keys, joining and submitting read and write the same three tables, each action
in one transaction with its checks (budgets, rate limits, the learner's claim); scoring (``scoring``) and the
results (``results``) are apart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import random
import secrets
import sqlite3
import time
from dataclasses import asdict, dataclass

from ftvpe_core import FtvpeError
from ftvpe_core import settings as settings_module
from ftvpe_core.model import models
from ftvpe_core.store import names
from ftvpe_core.store import runs as runs_module
from ftvpe_core.store.challenge_tables import ChallengeTables
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


def _row(tables: ChallengeTables, code: str) -> sqlite3.Row:
    row = tables.challenge(normal_code(code))
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
    key = new_teacher_key()
    salt = secrets.token_bytes(16)
    now = time.time()
    with store.challenge_tables(write=True) as tables:
        while True:
            code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
            if tables.challenge(code) is None:
                break
        tables.add_challenge(
            {
                "code": code,
                "title": title,
                "settings_json": json.dumps(asdict(settings)),
                "data_json": None if builtin else json.dumps(datasets.to_dict(data)),
                "key_salt": salt,
                "key_hash": _hash_key(key, salt),
                "created": now,
                "closes": now + 60 * settings.minutes,
            }
        )
    return code, key


def get(store: RunStore, code: str) -> Challenge:
    """The challenge with this code (FtvpeError when there is none)."""
    with store.challenge_tables() as tables:
        return _challenge(_row(tables, code))


def check_key(store: RunStore, code: str, key: str) -> Challenge:
    """The challenge, when ``key`` is its teacher key; FtvpeError otherwise."""
    with store.challenge_tables() as tables:
        row = _row(tables, code)
        _check_key(row, key)
        return _challenge(row)


def _set_open(store: RunStore, code: str, key: str, until: float | None) -> None:
    with store.challenge_tables(write=True) as tables:
        row = _row(tables, code)
        _check_key(row, key)
        tables.set_open(row["code"], until)


def close(store: RunStore, code: str, key: str) -> None:
    """Stop taking submissions (scores already queued still come in)."""
    _set_open(store, code, key, None)


def reopen(store: RunStore, code: str, key: str, minutes: int = 30) -> None:
    """Take submissions again, for at least ``minutes`` more."""
    _set_open(store, code, key, time.time() + 60 * max(1, int(minutes)))


def _remove(store: RunStore, sub: sqlite3.Row) -> None:
    """Stop a removed submission's runs if they still wait or run."""
    for run_id in (sub["train_run"], sub["score_run"]):
        if run_id:
            store.request_cancel(run_id)


def remove_submission(store: RunStore, code: str, key: str, submission_id: int) -> None:
    """Take a submission off the leaderboard (its runs stop if they still wait or run)."""
    with store.challenge_tables(write=True) as tables:
        row = _row(tables, code)
        _check_key(row, key)
        sub = tables.submission(submission_id, row["code"])
        if sub is None:
            raise FtvpeError(f"Challenge {row['code']} has no submission {submission_id}.")
        tables.remove_submission(sub["id"])
    _remove(store, sub)


def withdraw(store: RunStore, code: str, name: str, submission_id: int) -> None:
    """A learner takes back one of their own submissions (its runs stop if they still wait or run). Only its
    owner can: the name must be the one it was submitted under; the teacher uses ``remove_submission``."""
    name = clean_name(name)
    with store.challenge_tables(write=True) as tables:
        row = _row(tables, code)
        sub = tables.submission(submission_id, row["code"], kept=True)
        if sub is None or sub["name"].casefold() != name.casefold():
            raise FtvpeError(f"You have no submission {submission_id} in challenge {row['code']}; nothing was changed.")
        tables.remove_submission(sub["id"])
    _remove(store, sub)


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
    with store.challenge_tables() as tables:
        rows = tables.challenges_with_counts()
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


def _taken(name: str) -> FtvpeError:
    return FtvpeError(
        f"Someone already joined as '{name}'. If that is you, rejoin with your token; otherwise pick another name."
    )


def _claim(tables: ChallengeTables, row: sqlite3.Row, settings: ChallengeSettings, name: str, token: str) -> str:
    """Take a free name for a learner with this rejoin token (inside the caller's write transaction)."""
    existing = tables.learner(row["code"], name)
    if existing is not None:
        raise _taken(name)
    taken = tables.learner_names(row["code"])
    if len(taken) >= settings.max_learners:
        raise FtvpeError(
            f"Challenge {row['code']} is full: {settings.max_learners} learners have joined. Ask your teacher."
        )
    other = names.lookalike(name, taken)
    if other is not None:
        raise FtvpeError(f"'{name}' looks too much like '{other}', who already joined; pick another name.")
    salt = secrets.token_bytes(16)
    tables.add_learner(row["code"], name, time.time(), salt, _hash_token(token, salt))
    return name


def new_teacher_key() -> str:
    """A fresh teacher key. Never one that starts with '-' (1 in 64 URL-safe keys would): after ``--key`` on the
    command line argparse reads such a key as an option and the command exits 2."""
    while (key := secrets.token_urlsafe(12)).startswith("-"):
        pass
    return key


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
    with store.challenge_tables(write=True) as tables:
        row = _row(tables, code)
        _check_open(row)
        settings = _challenge_settings(row)
        if joins >= settings.max_joins:
            raise FtvpeError(
                f"This browser has already joined challenge {row['code']} under {joins} "
                f"name{'' if joins == 1 else 's'}, the most it may. Rejoin with your token instead."
            )
        _claim(tables, row, settings, name, token)
    return Joined(name, token)


def rejoin(store: RunStore, code: str, token: str) -> str:
    """The name a rejoin token belongs to in this challenge (open or closed); FtvpeError for any other token."""
    token = str(token).strip()
    with store.challenge_tables() as tables:
        row = _row(tables, code)
        rows = tables.learner_tokens(row["code"])
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
    with store.challenge_tables() as tables:
        return tables.learner_names(normal_code(code))


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
    with store.challenge_tables(write=True) as tables:
        row = _row(tables, code)
        _check_open(row)
        challenge = _challenge(row)
        if track not in challenge.settings.open_tracks:
            raise FtvpeError(
                f"Challenge {row['code']} takes {TRACK_LABELS[challenge.settings.open_tracks[0]]} submissions only."
            )
        learner = tables.learner(row["code"], name)
        if learner is None and token is None:
            raise FtvpeError(f"Join challenge {row['code']} first.")
        if learner is not None and token is not None:
            if learner["token_hash"] is None or not hmac.compare_digest(
                _hash_token(token, learner["token_salt"]), learner["token_hash"]
            ):
                raise _taken(name)
        key = names.key(clean_name(name)) if learner is None else learner["name_key"]
        if tables.pending(row["code"], now, key):
            raise FtvpeError("You already have a submission being scored; wait for its score, then submit again.")
        recent = tables.submitted_since(row["code"], key, now - 60)
        if len(recent) >= PER_MINUTE:
            wait = 60 - (now - recent[0])
            raise FtvpeError(f"At most {PER_MINUTE} submissions a minute; try again in {wait:.0f} s.")
        waiting = tables.pending(row["code"], now)
        if waiting >= challenge.settings.max_queued:
            raise FtvpeError(
                f"The class's queue is full: {waiting} submissions are waiting to be scored. Try again in a minute."
            )
        # A new name is checked here, with the submission; a joined one is looked up by its key only, so a name
        # an older version let in (schema 4) still submits.
        shown = (
            learner["name"] if learner is not None else _claim(tables, row, challenge.settings, clean_name(name), token)
        )
        sid = tables.add_submission(row["code"], shown, key, track, now, json.dumps(spec), tokens, examples)
        return sid, challenge, shown


def learner_key(code: str, name: str) -> str:
    """Who a challenge run belongs to in the fair queue (``schedule``): each learner of each challenge takes turns
    with every other learner (and with the Fine-Tune Lab's), however many runs one of them queues."""
    return f"challenge:{normal_code(code)}:{names.key(name)}"


def _queue_score(
    store: RunStore, sid: int, challenge: Challenge, track: str, device: str, train_run: str | None = None
) -> str:
    name = submission(store, sid)["name"]
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
        _half_recorded(store, sid)
        raise
    with store.challenge_tables(write=True) as tables:
        tables.set_runs(sid, train_run, score_run)
    return score_run


def _half_recorded(store: RunStore, sid: int) -> None:
    """A submission whose runs could not be queued leaves the boards."""
    with store.challenge_tables(write=True) as tables:
        tables.remove_submission(sid)


def submission(store: RunStore, submission_id: int) -> sqlite3.Row:
    """A submission's row (its name, track, spec, runs), removed or not; FtvpeError when there is none."""
    with store.challenge_tables() as tables:
        sub = tables.submission(submission_id)
    if sub is None:
        raise FtvpeError(f"There is no submission {submission_id}.")
    return sub


def check_prompt_budget(
    settings: ChallengeSettings, template: prompts.PromptSpec, count_tokens: prompts.CountTokens | None
) -> int:
    """The tokens ``template`` adds to each input, checked against the challenge's prompt budget: at submit (with
    the page's counter) and again when scoring (with the scoring model's own).

    Raises:
        FtvpeError: over the budget, in words for the learner.
    """
    limit = settings.max_prompt_tokens
    chars = prompt_chars(template)
    if chars > CHARS_PER_TOKEN * limit:  # refused before the tokenizer reads a huge text
        raise FtvpeError(
            f"Your prompt adds {chars:,} characters to each input, more than {limit:,} tokens can hold (at most "
            f"{CHARS_PER_TOKEN * limit:,} characters, {CHARS_PER_TOKEN} a token); this challenge allows at most {limit:,}."
        )
    tokens = prompt_tokens(template, count_tokens)
    if tokens > limit:
        raise FtvpeError(f"Your prompt adds {tokens:,} tokens to each input; this challenge allows at most {limit:,}.")
    return tokens


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
    template = template_from(fields)
    tokens = check_prompt_budget(get(store, code).settings, template, count_tokens)
    spec = {"prompt": {k: v for k, v in template.to_dict().items() if k != "task"}}
    sid, challenge, _ = _reserve(store, code, name, "prompt", spec, tokens, None, token)
    _queue_score(store, sid, challenge, "prompt", device)
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
        _half_recorded(store, sid)
        raise
    _queue_score(store, sid, challenge, "finetune", device, train_run)
    return sid


def runs_of(store: RunStore, submission_id: int) -> tuple[str | None, str]:
    """A submission's runs: (its fine-tune's, or None for a prompt; its score's)."""
    sub = submission(store, submission_id)
    return sub["train_run"], sub["score_run"]
