"""The run store: one SQLite file that records fine-tuning and comparison runs, their metrics and sample answers.

Records live in ``<data home>/runs.sqlite3``; each run's files (a fine-tune's adapter as safetensors and its
checkpoint, an upload it trains on, a comparison's result) live in ``<data home>/runs/<run_id>/``. Job
processes write progress here and the pages read it, so every operation opens its own connection (WAL
journal, 5 s busy timeout) and several processes can use the store at once.

A run is complete only when its row says so, and ``finish`` writes that mark last, in the same
transaction as the summary: a crash never leaves a half-run looking whole (nanochat's manifest
written last).

This module does not train, load models or import torch or streamlit; it never deletes a store it
cannot read.

Over 600 lines because the store's one SQLite schema, its migrations and every transaction on it stay together:
which write takes the lock, in which order, and what 'complete last' means are read in one place.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftvpe_core import FtvpeError, settings
from ftvpe_core.store import names, schedule
from ftvpe_core.store.challenge_tables import ChallengeTables

SCHEMA_VERSION = 5
STATUSES = ("queued", "running", "complete", "failed", "cancelled", "interrupted")
CHALLENGE_RUN = "challenge-run"
"""The dataset name of a challenge's fine-tuning run: no upload takes it (uploads are named with [a-z0-9_])
and it names no challenge, so a run's record or download never carries another class's join code."""
CUSTOM_PRESET = "custom"
"""What a run's settings record as their preset when they are not exactly one (``finetune.preset_of``)."""


def is_challenge_run(dataset_name: str) -> bool:
    """Whether a fine-tuning run trains for a class challenge (by its dataset's name: ``CHALLENGE_RUN``, or
    'challenge_<code>' as runs queued before 2026-12-07 were named)."""
    return dataset_name == CHALLENGE_RUN or re.fullmatch(r"challenge_[a-z2-9]{6}", dataset_name) is not None


def _default_device() -> str:
    return settings.pick_device()  # ``create``'s parameter ``settings`` hides the module there


def preset_label(run_settings: dict) -> str:
    """The preset a stored run's settings came from, for display: its name, or 'custom'. Here, with the runs,
    so that what lists runs (``adapters.available``) needs no import of the training loop."""
    return run_settings.get("preset") or CUSTOM_PRESET


AFTER_KEY = "after"
"""A run whose settings name another run under this key waits for it: it is not claimed while that run is queued,
running or interrupted (a challenge's score waits for its fine-tune), and it is queued again when that run is."""
_WAITS = (
    f"NOT EXISTS (SELECT 1 FROM runs b WHERE b.id = json_extract(runs.settings_json, '$.{AFTER_KEY}') "
    "AND b.status IN ('queued', 'running', 'interrupted'))"
)
"""SQL: the run (table ``runs``) waits for no unfinished run."""
BUSY_TIMEOUT_S = 5.0
KILLED_ERROR = "the training process stopped unexpectedly (killed or out of memory)"
INTERRUPTED_ERROR = "the app stopped while this run was training"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    dataset TEXT NOT NULL,
    settings_json TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'complete', 'failed', 'cancelled', 'interrupted')),
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    pid INTEGER,
    device TEXT,
    error TEXT,
    summary_json TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress_json TEXT,
    learner TEXT,
    node TEXT
);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_run_step ON metrics (run_id, step);
CREATE TABLE IF NOT EXISTS samples (
    run_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    probe TEXT NOT NULL,
    answer TEXT NOT NULL,
    time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_run_step ON samples (run_id, step);
CREATE TABLE IF NOT EXISTS challenges (
    code TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    settings_json TEXT NOT NULL,
    data_json TEXT,
    key_salt BLOB NOT NULL,
    key_hash BLOB NOT NULL,
    created REAL NOT NULL,
    closes REAL,
    closed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS challenge_learners (
    code TEXT NOT NULL,
    name TEXT NOT NULL COLLATE NOCASE,
    joined REAL NOT NULL,
    name_key TEXT,
    token_salt BLOB,
    token_hash BLOB,
    PRIMARY KEY (code, name)
);
CREATE TABLE IF NOT EXISTS challenge_submissions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    code TEXT NOT NULL,
    name TEXT NOT NULL COLLATE NOCASE,
    track TEXT NOT NULL,
    created REAL NOT NULL,
    spec_json TEXT NOT NULL,
    prompt_tokens INTEGER,
    train_examples INTEGER,
    train_run TEXT,
    score_run TEXT,
    removed INTEGER NOT NULL DEFAULT 0,
    name_key TEXT
);
CREATE INDEX IF NOT EXISTS challenge_submissions_code ON challenge_submissions (code, name);
"""


@dataclass
class Run:
    """One run as recorded in the store, with its settings and summary parsed from JSON."""

    id: str
    """Short id that sorts by creation time, e.g. '20261123-224501-ab12'."""
    kind: str
    """What the run does, e.g. 'finetune'."""
    dataset: str
    """Name of the data set it trains on."""
    settings: dict[str, Any]
    """The settings it was started with."""
    status: str
    """One of STATUSES; 'complete' only once ``finish`` has written the summary."""
    created: float
    """When it was queued (seconds since the epoch)."""
    started: float | None = None
    """When a job process picked it up."""
    finished: float | None = None
    """When it completed, failed, was cancelled or was found interrupted."""
    pid: int | None = None
    """Process id of the job process that runs it."""
    device: str | None = None
    """Device it trains on, e.g. 'cpu' or 'cuda'."""
    error: str | None = None
    """Why it failed or stopped, in words a user understands."""
    summary: dict[str, Any] | None = None
    """What the trainer reported at the end (final losses, duration...)."""
    cancel_requested: bool = False
    """Whether the user asked to stop it; the job process checks this between steps."""
    progress: dict[str, Any] | None = None
    """What the job is doing now: {'fraction': 0..1, 'message': '...'} (None before it says)."""
    learner: str | None = None
    """Who queued it (a browser session, 'cli'): queued runs take turns by learner (``schedule``)."""
    node: str | None = None
    """Where it runs or ran: this machine's name for a local job process, a Ray node's address on a cluster."""

    @property
    def active(self) -> bool:
        """Queued or running: not finished one way or another."""
        return self.status in ("queued", "running")


@dataclass
class Sample:
    """An answer the model gave to a probe prompt at a training step."""

    step: int
    probe: str
    answer: str
    time: float = field(default=0.0)


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this id exists (a zombie still counts until its parent waits for it)."""
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, but belongs to another user
        return True
    return True


def _new_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.localtime()) + "-" + secrets.token_hex(2)


class RunStore:
    """Records of fine-tuning runs in ``<home>/runs.sqlite3``, artifacts in ``<home>/runs/<run_id>/``.

    Args:
        home: the data folder; None uses ``settings.data_home()`` (``FTVPE_HOME``).
    """

    def __init__(self, home: Path | None = None) -> None:
        self.home = Path(home) if home is not None else settings.data_home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.path = self.home / "runs.sqlite3"
        self._init_schema()

    # -- connections -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection for one operation, with SQLite errors turned into messages for the user."""
        conn: sqlite3.Connection | None = None
        try:
            # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE in _write).
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            # Safe in WAL mode: a power cut may lose the last commits but never corrupts the file.
            conn.execute("PRAGMA synchronous = NORMAL")
            yield conn
        except sqlite3.OperationalError as exc:
            message = str(exc).lower()
            if "locked" in message or "busy" in message:
                raise FtvpeError(
                    f"The run store {self.path} stayed busy for more than {BUSY_TIMEOUT_S:g} s; try again."
                ) from exc
            if "unable to open" in message:
                raise FtvpeError(f"The run store {self.path} cannot be opened: {exc}.") from exc
            if "malformed" in message or "not a database" in message:
                raise self._corrupt(exc) from exc
            raise
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from exc
        finally:
            if conn is not None:
                conn.close()

    def _corrupt(self, exc: Exception) -> FtvpeError:
        return FtvpeError(
            f"The run store {self.path} is damaged and cannot be read ({exc}). It was left untouched: "
            "move it aside (or set FTVPE_HOME to another folder) to start a new store."
        )

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A connection inside one write transaction: all of it is committed, or none of it."""
        with self._connect() as conn:
            # IMMEDIATE takes the write lock up front (waiting up to busy_timeout), so a transaction
            # that reads then writes never fails half-way on a lock upgrade.
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    @contextlib.contextmanager
    def challenge_tables(self, write: bool = False) -> Iterator[ChallengeTables]:
        """The class challenges' tables (``challenge_tables``) for the block: one write transaction when ``write``,
        else a connection for reading."""
        with self._write() if write else self._connect() as conn:
            yield ChallengeTables(conn)

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A raw connection for reading (the tests look at the tables; the app reads them through its methods)."""
        with self._connect() as conn:
            yield conn

    @contextlib.contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """A raw connection inside one write transaction (the tests stage odd rows with it)."""
        with self._write() as conn:
            yield conn

    def _init_schema(self) -> None:
        with self._connect() as conn:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":  # e.g. a file system without shared memory
                raise FtvpeError(f"The run store {self.path} cannot use SQLite's WAL journal (got '{mode}').")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
                columns = {r["name"] for r in conn.execute("PRAGMA table_info(runs)")}
                if "progress_json" not in columns:  # schema 1 -> 2: a run's current phase and share done
                    conn.execute("ALTER TABLE runs ADD COLUMN progress_json TEXT")
                for column in ("learner", "node"):  # schema 2 -> 3: who queued it, where it ran
                    if column not in columns:
                        conn.execute(f"ALTER TABLE runs ADD COLUMN {column} TEXT")
                # schema 3 -> 4: the challenge tables, made above by CREATE TABLE IF NOT EXISTS
                if row[0] is None or row[0] < 5:  # schema 4 -> 5: names' keys and rejoin tokens
                    _learner_keys(conn)
                if row[0] is None or row[0] < SCHEMA_VERSION:
                    conn.execute("DELETE FROM schema_version")
                    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                elif row[0] > SCHEMA_VERSION:
                    raise FtvpeError(
                        f"The run store {self.path} was made by a newer version of FT vs PE Studio "
                        f"(schema {row[0]}, this one reads {SCHEMA_VERSION}); update the app."
                    )
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    # -- helpers -----------------------------------------------------------------------------------

    @staticmethod
    def _missing(run_id: str) -> FtvpeError:
        return FtvpeError(f"No run '{run_id}' in the store.")

    def _status(self, conn: sqlite3.Connection, run_id: str) -> str:
        row = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise self._missing(run_id)
        return row["status"]

    def _transition(self, run_id: str, allowed: tuple[str, ...], verb: str, sets: str, params: tuple) -> None:
        """Update a run only if its status is one of ``allowed``; otherwise say why not."""
        with self._write() as conn:
            status = self._status(conn, run_id)
            if status not in allowed:
                raise FtvpeError(f"Run '{run_id}' is {status}; it cannot be {verb}.")
            conn.execute(f"UPDATE runs SET {sets} WHERE id = ?", (*params, run_id))

    @staticmethod
    def _row_to_run(row: sqlite3.Row) -> Run:
        return Run(
            id=row["id"],
            kind=row["kind"],
            dataset=row["dataset"],
            settings=json.loads(row["settings_json"]),
            status=row["status"],
            created=row["created"],
            started=row["started"],
            finished=row["finished"],
            pid=row["pid"],
            device=row["device"],
            error=row["error"],
            summary=json.loads(row["summary_json"]) if row["summary_json"] is not None else None,
            cancel_requested=bool(row["cancel_requested"]),
            progress=json.loads(row["progress_json"]) if row["progress_json"] else None,
            learner=row["learner"],
            node=row["node"],
        )

    def _run_dir(self, run_id: str) -> Path:
        return self.home / "runs" / run_id

    # -- writing -----------------------------------------------------------------------------------

    def create(
        self,
        kind: str,
        dataset: str,
        settings: dict[str, Any],
        device: str | None = None,
        learner: str | None = None,
        files: dict[str, bytes] | None = None,
    ) -> str:
        """Queue a new run for ``device`` (queued by ``learner``) and return its id. ``device`` None is this
        machine's default device, decided here for every queued run of every kind (``settings.pick_device``).
        ``files`` (name: contents) are written to the run's folder before the run is queued: a warm job process
        claims a queued run at once, and must find them there. OSError when they cannot be written (no run)."""
        device = device or _default_device()
        settings_json = json.dumps(dict(settings), sort_keys=True)
        with self._write() as conn:
            while True:
                run_id = _new_id()
                if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
                    break
            folder = self._run_dir(run_id)
            try:
                for name, data in (files or {}).items():
                    folder.mkdir(parents=True, exist_ok=True)
                    _write_whole(folder / name, data)
            except OSError:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            conn.execute(
                "INSERT INTO runs (id, kind, dataset, settings_json, status, created, device, learner) "
                "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)",
                (run_id, kind, dataset, settings_json, time.time(), device, learner),
            )
        return run_id

    def start(self, run_id: str, pid: int, device: str, node: str | None = None) -> None:
        """Mark a queued run as running in process ``pid`` on ``device`` (of ``node``: None is this machine)."""
        self._transition(
            run_id,
            ("queued",),
            "started",
            "status = 'running', started = ?, pid = ?, device = ?, node = ?",
            (time.time(), pid, device, node or settings.node_name()),
        )

    def claim(
        self, device: str | None, pid: int, node: str | None = None, kinds: tuple[str, ...] | None = None
    ) -> str | None:
        """Take the run whose turn it is (``schedule.fair_order``) among those queued for ``device`` (or for no
        device in particular; None: for any device) and mark it running in process ``pid``; None when nothing
        waits. Atomic: two job processes never claim the same run.

        Args:
            node: where it runs (None: this machine); a Ray dispatcher sets it once the run has landed.
            kinds: only runs of these kinds (None: any).
        """
        taken = self.claim_many(device, pid, node, kinds, limit=1)
        return taken[0] if taken else None

    def claim_many(
        self,
        device: str | None,
        pid: int,
        node: str | None = None,
        kinds: tuple[str, ...] | None = None,
        limit: int = 1,
    ) -> list[str]:
        """Take up to ``limit`` runs whose turn it is (as ``claim``, in one transaction), in their fair order: a
        short lane's job process scores every waiting submission together."""
        with self._write() as conn:
            order = self._fair_order(conn, device, kinds)[: max(1, int(limit))]
            now = time.time()
            for run_id in order:
                where = device or conn.execute("SELECT device FROM runs WHERE id = ?", (run_id,)).fetchone()["device"]
                conn.execute(
                    "UPDATE runs SET status = 'running', started = ?, pid = ?, device = ?, node = ? WHERE id = ?",
                    (now, pid, where, node or settings.node_name(), run_id),
                )
        return order

    @staticmethod
    def _fair_order(conn: sqlite3.Connection, device: str | None, kinds: tuple[str, ...] | None = None) -> list[str]:
        """Queued runs that can start now (none they wait for is unfinished: AFTER_KEY), in their fair order."""
        query, params = f"SELECT id, learner, created FROM runs WHERE status = 'queued' AND {_WAITS}", ()
        if device is not None:
            query, params = query + " AND (device IS NULL OR device = ?)", (device,)
        if kinds is not None:
            query, params = query + f" AND kind IN ({', '.join('?' * len(kinds))})", (*params, *kinds)
        queued = [schedule.Waiting(r["id"], r["learner"], r["created"]) for r in conn.execute(query, params)]
        running = conn.execute("SELECT learner, COUNT(*) AS n FROM runs WHERE status = 'running' GROUP BY learner")
        return schedule.fair_order(queued, {r["learner"]: r["n"] for r in running})

    def place(self, run_id: str, node: str, device: str) -> None:
        """Record where a running run landed (a Ray node and its device), once the cluster says."""
        self._transition(run_id, ("running",), "placed", "node = ?, device = ?", (node, device))

    def log_metrics(self, run_id: str, step: int, **values: float) -> None:
        """Record named values (train_loss=..., lr=...) at a training step, all in one transaction."""
        now = time.time()
        rows = [(run_id, int(step), name, float(value), now) for name, value in values.items()]
        with self._write() as conn:
            self._status(conn, run_id)
            conn.executemany("INSERT INTO metrics (run_id, step, name, value, time) VALUES (?, ?, ?, ?, ?)", rows)

    def set_progress(self, run_id: str, fraction: float, message: str) -> None:
        """Say what a running job is doing now and how much of it is done (0 to 1)."""
        progress = json.dumps({"fraction": min(max(float(fraction), 0.0), 1.0), "message": message})
        with self._write() as conn:
            self._status(conn, run_id)
            conn.execute("UPDATE runs SET progress_json = ? WHERE id = ?", (progress, run_id))

    def log_sample(self, run_id: str, step: int, probe: str, answer: str) -> None:
        """Record the model's answer to a probe prompt at a training step."""
        with self._write() as conn:
            self._status(conn, run_id)
            conn.execute(
                "INSERT INTO samples (run_id, step, probe, answer, time) VALUES (?, ?, ?, ?, ?)",
                (run_id, int(step), probe, answer, time.time()),
            )

    def finish(self, run_id: str, summary: dict[str, Any]) -> None:
        """Write the summary, then the 'complete' mark, in one transaction.

        Refuses (FtvpeError) when the run's artifact folder does not exist, or when the run already
        completed, failed or was cancelled.
        """
        summary_json = json.dumps(dict(summary), sort_keys=True)
        with self._write() as conn:
            status = self._status(conn, run_id)
            if status not in ("running", "interrupted"):
                raise FtvpeError(f"Run '{run_id}' is {status}; it cannot be finished.")
            if not self._run_dir(run_id).is_dir():
                raise FtvpeError(
                    f"Run '{run_id}' has no artifact folder at {self._run_dir(run_id)}; not marking it complete."
                )
            _write_summary(conn, run_id, summary_json)
            _mark_complete(conn, run_id)

    def fail_unless_ended(self, run_id: str, error: BaseException | str) -> None:
        """Mark a run failed with a message for the user (an exception's: FtvpeError's as is, others with their
        type), unless it already ended."""
        if self.get(run_id).status in ("queued", "running"):
            if isinstance(error, BaseException):
                error = str(error) if isinstance(error, FtvpeError) else f"{type(error).__name__}: {error}"
            self.fail(run_id, error)

    def record(self, run_id: str, event: dict) -> None:
        """Write one progress event of a run: a phase (``{'fraction', 'message'}``) or a training step (the
        training loop's event: losses, learning rate, ETA, probe answers). A job process writes its own run's
        events; a Ray dispatcher writes those its tasks send back."""
        if "message" in event:
            self.set_progress(run_id, event["fraction"], event["message"])
            return
        values = {k: event[k] for k in ("train_loss", "val_loss", "lr", "tokens_seen", "eta_s", "eval_s") if k in event}
        values["total_steps"] = event["total_steps"]
        self.log_metrics(run_id, event["step"], **{k: v for k, v in values.items() if v is not None})
        for probe, answer in event.get("samples") or []:
            self.log_sample(run_id, event["step"], str(probe), answer)

    def fail(self, run_id: str, error: str) -> None:
        """Mark a run as failed with a message for the user."""
        self._transition(
            run_id,
            ("queued", "running", "interrupted"),
            "failed",
            "status = 'failed', error = ?, finished = ?",
            (error, time.time()),
        )

    def request_cancel(self, run_id: str) -> None:
        """Ask a run to stop. A queued run has no process to notice, so it is cancelled at once."""
        with self._write() as conn:
            status = self._status(conn, run_id)
            if status == "queued":
                conn.execute(
                    "UPDATE runs SET status = 'cancelled', cancel_requested = 1, finished = ? WHERE id = ?",
                    (time.time(), run_id),
                )
            elif status == "running":
                conn.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (run_id,))

    def interrupt(self, run_id: str) -> None:
        """Mark a running run as interrupted (its job process stops because the app stopped)."""
        self._transition(
            run_id,
            ("running",),
            "interrupted",
            "status = 'interrupted', error = ?, finished = ?",
            (INTERRUPTED_ERROR, time.time()),
        )

    def mark_cancelled(self, run_id: str) -> None:
        """Mark a run as cancelled (the job process calls this once it has stopped)."""
        self._transition(
            run_id,
            ("queued", "running", "interrupted"),
            "cancelled",
            "status = 'cancelled', finished = ?",
            (time.time(),),
        )

    def requeue(self, run_id: str, message: str = "Queued to resume") -> list[str]:
        """Queue an interrupted, failed or cancelled run again, to continue from its checkpoint; the runs that wait
        for it (AFTER_KEY) and failed or were interrupted meanwhile are queued again too, to run after it (a
        resumed fine-tune is scored). Returns those runs' ids."""
        self._transition(
            run_id,
            ("interrupted", "failed", "cancelled"),
            "resumed",
            _REQUEUE,
            (json.dumps({"fraction": 0.0, "message": message}),),
        )
        with self._write() as conn:
            after = [
                r["id"]
                for r in conn.execute(
                    f"SELECT id FROM runs WHERE json_extract(settings_json, '$.{AFTER_KEY}') = ? "
                    "AND status IN ('failed', 'interrupted') AND cancel_requested = 0",
                    (run_id,),
                )
            ]
            message = json.dumps({"fraction": 0.0, "message": f"Waiting for run {run_id}"})
            for other in after:
                conn.execute(f"UPDATE runs SET {_REQUEUE} WHERE id = ?", (message, other))
        return after

    def requeue_interrupted(self, kinds: tuple[str, ...]) -> list[str]:
        """At a restart: queue again the interrupted runs of ``kinds`` (nobody is there to press Resume for a class
        challenge's scoring) and the interrupted runs that an unfinished run waits for (its fine-tune); returns
        their ids. Each continues from its checkpoint, if it has one."""
        with self._write() as conn:
            marks = ", ".join("?" * len(kinds))
            rows = conn.execute(
                f"SELECT id FROM runs WHERE status = 'interrupted' AND (kind IN ({marks}) OR id IN ("
                f"SELECT json_extract(settings_json, '$.{AFTER_KEY}') FROM runs "
                "WHERE status IN ('queued', 'running', 'interrupted')))",
                tuple(kinds),
            ).fetchall()
            message = json.dumps({"fraction": 0.0, "message": "Queued again after a restart"})
            for row in rows:
                conn.execute(f"UPDATE runs SET {_REQUEUE} WHERE id = ?", (message, row["id"]))
        return [row["id"] for row in rows]

    def trim(self, run_id: str, after_step: int) -> None:
        """Forget the metrics and samples logged after ``after_step`` (a resumed run logs them again)."""
        with self._write() as conn:
            self._status(conn, run_id)
            for table in ("metrics", "samples"):
                conn.execute(f"DELETE FROM {table} WHERE run_id = ? AND step > ?", (run_id, int(after_step)))

    def delete(self, run_id: str) -> None:
        """Remove a run's row, metrics, samples and artifact folder. Refuses a running run."""
        with self._write() as conn:
            status = self._status(conn, run_id)
            if status == "running":
                raise FtvpeError(f"Run '{run_id}' is running; cancel it before deleting it.")
            for table, column in (("metrics", "run_id"), ("samples", "run_id"), ("runs", "id")):
                conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (run_id,))
        path = self._run_dir(run_id)
        try:
            if path.exists():
                shutil.rmtree(path)
        except OSError as exc:
            raise FtvpeError(f"Run '{run_id}' was deleted, but its folder {path} could not be removed: {exc}") from exc

    def recover_interrupted(self, assume_dead: bool = False) -> list[str]:
        """Mark running runs whose process is gone as 'interrupted' and return their ids.

        Args:
            assume_dead: treat every running run as gone (at server start, when no job can still be ours).
        """
        return self._mark_gone("interrupted", INTERRUPTED_ERROR, assume_dead)

    def reap_dead(self) -> list[str]:
        """Mark running runs whose process died (SIGKILL, out of memory) as 'failed' and return their ids."""
        return self._mark_gone("failed", KILLED_ERROR, assume_dead=False)

    def _mark_gone(self, status: str, error: str, assume_dead: bool) -> list[str]:
        with self._write() as conn:
            rows = conn.execute("SELECT id, pid FROM runs WHERE status = 'running' ORDER BY created").fetchall()
            gone = [row["id"] for row in rows if assume_dead or not pid_alive(row["pid"])]
            now = time.time()
            for run_id in gone:
                conn.execute(
                    "UPDATE runs SET status = ?, error = ?, finished = ? WHERE id = ?", (status, error, now, run_id)
                )
        return gone

    # -- reading -----------------------------------------------------------------------------------

    def get(self, run_id: str) -> Run:
        """The run with this id."""
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise self._missing(run_id)
        return self._row_to_run(row)

    def list(self, kind: str | None = None) -> list[Run]:
        """All runs (of one kind, if given), newest first."""
        query, params = "SELECT * FROM runs", ()
        if kind is not None:
            query, params = query + " WHERE kind = ?", (kind,)
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY created DESC, id DESC", params).fetchall()
        return [self._row_to_run(row) for row in rows]

    def queue(self, device: str | None = None, kinds: tuple[str, ...] | None = None) -> list[Run]:
        """Queued runs (for ``device`` when given, counting runs queued for any device; of ``kinds`` when
        given) in the order they start (``schedule.fair_order``): index 0 runs next."""
        with self._connect() as conn:
            order = self._fair_order(conn, device, kinds)
            rows = {r["id"]: r for r in conn.execute("SELECT * FROM runs WHERE status = 'queued'")}
        return [self._row_to_run(rows[run_id]) for run_id in order]

    def warm_models(self, idle_s: float) -> list[str | None]:
        """The base models of the class challenges that are open and were busy (posed, or a submission made) in the
        last ``idle_s`` seconds; None stands for the default model. A warm job process keeps these loaded."""
        with self._connect() as conn:
            now = time.time()
            rows = conn.execute(
                "SELECT c.settings_json FROM challenges c WHERE c.closed = 0 AND c.closes > ? AND MAX(c.created, "
                "COALESCE((SELECT MAX(s.created) FROM challenge_submissions s WHERE s.code = c.code), 0)) > ?",
                (now, now - idle_s),
            ).fetchall()
        return list(dict.fromkeys(json.loads(r["settings_json"]).get("model") for r in rows))

    def cancel_requested(self, run_id: str) -> bool:
        """Whether the user asked this run to stop."""
        return self.get(run_id).cancel_requested

    def metrics(self, run_id: str) -> dict[str, list[tuple[int, float]]]:
        """Each metric's (step, value) pairs in step order, e.g. ``{'train_loss': [(0, 2.3), ...]}``."""
        with self._connect() as conn:
            self._status(conn, run_id)
            rows = conn.execute(
                "SELECT name, step, value FROM metrics WHERE run_id = ? ORDER BY step, rowid", (run_id,)
            ).fetchall()
        result: dict[str, list[tuple[int, float]]] = {}
        for row in rows:
            result.setdefault(row["name"], []).append((row["step"], row["value"]))
        return result

    def samples(self, run_id: str) -> list[Sample]:
        """Probe answers in step order (then in the order they were logged)."""
        with self._connect() as conn:
            self._status(conn, run_id)
            rows = conn.execute(
                "SELECT step, probe, answer, time FROM samples WHERE run_id = ? ORDER BY step, rowid", (run_id,)
            ).fetchall()
        return [Sample(row["step"], row["probe"], row["answer"], row["time"]) for row in rows]

    def artifact_dir(self, run_id: str) -> Path:
        """The run's artifact folder, created if needed."""
        self.get(run_id)  # refuses unknown ids, which also keeps odd ids out of the path
        path = self._run_dir(run_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_artifact(self, run_id: str, name: str, data: bytes) -> Path:
        """Write a file of the run's folder whole or not at all (a reader never sees half of it); returns it."""
        path = self.artifact_dir(run_id) / name
        _write_whole(path, data)
        return path


def _write_whole(path: Path, data: bytes) -> None:
    """``data`` into ``path`` whole or not at all: written beside it, then renamed over it."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _learner_keys(conn: sqlite3.Connection) -> None:
    """Schema 4 -> 5: each learner's name key (``names.key``) and rejoin token hash, each submission's name key.

    A name key is unique within a challenge. Schema 4 compared names ignoring ASCII case only, so it may hold
    names that now share a key (``ÉVA`` and ``éva``): the first to join keeps the key, a later one gets the
    key followed by a NUL and its own name, which no typed name can equal, so both stay on the board.
    """
    for table, columns in (
        ("challenge_learners", ("name_key TEXT", "token_salt BLOB", "token_hash BLOB")),
        ("challenge_submissions", ("name_key TEXT",)),
    ):
        have = {r["name"] for r in conn.execute(f"PRAGMA table_info({table})")}
        for column in columns:
            if column.split()[0] not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
    rows = conn.execute("SELECT rowid, code, name, name_key FROM challenge_learners ORDER BY joined, rowid").fetchall()
    used = {(r["code"], r["name_key"]) for r in rows if r["name_key"] is not None}
    for r in rows:
        if r["name_key"] is not None:
            continue
        k = names.key(r["name"])
        if (r["code"], k) in used:
            k = f"{k}\x00{r['name']}"
        used.add((r["code"], k))
        conn.execute("UPDATE challenge_learners SET name_key = ? WHERE rowid = ?", (k, r["rowid"]))
    conn.execute(
        "UPDATE challenge_submissions SET name_key = (SELECT l.name_key FROM challenge_learners l "
        "WHERE l.code = challenge_submissions.code AND l.name = challenge_submissions.name) WHERE name_key IS NULL"
    )
    conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS challenge_learners_key ON challenge_learners (code, name_key)")
    conn.execute("CREATE INDEX IF NOT EXISTS challenge_submissions_key ON challenge_submissions (code, name_key)")


_REQUEUE = "status = 'queued', error = NULL, finished = NULL, pid = NULL, cancel_requested = 0, progress_json = ?"


# Two steps on purpose: the summary first, the 'complete' mark last (tests fail between them).
def _write_summary(conn: sqlite3.Connection, run_id: str, summary_json: str) -> None:
    conn.execute("UPDATE runs SET summary_json = ?, finished = ? WHERE id = ?", (summary_json, time.time(), run_id))


def _mark_complete(conn: sqlite3.Connection, run_id: str) -> None:
    conn.execute("UPDATE runs SET status = 'complete', error = NULL WHERE id = ?", (run_id,))
