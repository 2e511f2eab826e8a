"""The class challenges' tables in the run store (``challenges``, ``challenge_learners``, ``challenge_submissions``;
their schema and migrations are ``runs``'): every SQL statement on them, as methods of one transaction
(``RunStore.challenge_tables``). The feature (``teaching.challenges``, ``scoring``, ``results``) decides; this
module only reads and writes rows, and checks nothing but what SQL says.
"""

from __future__ import annotations

import sqlite3

from ftvpe_core.store import names

PENDING_GRACE_S = 60.0
"""A submission written this recently without its score run yet counts as pending (its run is being queued)."""


class ChallengeTables:
    """The challenge tables, read and written inside one transaction of the store (its connection)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    # -- challenges ---------------------------------------------------------------------------------

    def challenge(self, code: str) -> sqlite3.Row | None:
        """The challenge with this (normalised) code, or None."""
        return self.conn.execute("SELECT * FROM challenges WHERE code = ?", (code,)).fetchone()

    def add_challenge(self, row: dict) -> None:
        """A new challenge: ``row`` has code, title, settings_json, data_json, key_salt, key_hash, created, closes."""
        columns = ("code", "title", "settings_json", "data_json", "key_salt", "key_hash", "created", "closes")
        self.conn.execute(
            f"INSERT INTO challenges ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
            tuple(row[c] for c in columns),
        )

    def set_open(self, code: str, until: float | None) -> None:
        """Close the challenge (``until`` None), or open it again until at least ``until``."""
        if until is None:
            self.conn.execute("UPDATE challenges SET closed = 1 WHERE code = ?", (code,))
        else:
            self.conn.execute("UPDATE challenges SET closed = 0, closes = MAX(closes, ?) WHERE code = ?", (until, code))

    def challenges_with_counts(self) -> list[sqlite3.Row]:
        """Every challenge, newest first, with its numbers of learners and of kept submissions."""
        return self.conn.execute(
            "SELECT c.code, c.title, c.created, c.closes, c.closed, "
            "(SELECT COUNT(*) FROM challenge_learners l WHERE l.code = c.code) AS learners, "
            "(SELECT COUNT(*) FROM challenge_submissions s WHERE s.code = c.code AND s.removed = 0) AS submissions "
            "FROM challenges c ORDER BY c.created DESC"
        ).fetchall()

    # -- learners -----------------------------------------------------------------------------------

    def learner(self, code: str, name: str) -> sqlite3.Row | None:
        """The learner of this name: by its key (``names.key``), or by the exact name first (two names a schema 4
        store kept apart may share a key, the later one stored with its key set apart)."""
        return self.conn.execute(
            "SELECT * FROM challenge_learners WHERE code = ? AND (name_key = ? OR name = ? COLLATE BINARY) "
            "ORDER BY name = ? COLLATE BINARY DESC LIMIT 1",
            (code, names.key(name), name, name),
        ).fetchone()

    def learner_names(self, code: str) -> list[str]:
        """The names that joined, in the order they joined."""
        rows = self.conn.execute("SELECT name FROM challenge_learners WHERE code = ? ORDER BY joined", (code,))
        return [r["name"] for r in rows]

    def add_learner(self, code: str, name: str, joined: float, token_salt: bytes, token_hash: bytes) -> None:
        self.conn.execute(
            "INSERT INTO challenge_learners (code, name, joined, name_key, token_salt, token_hash) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (code, name, joined, names.key(name), token_salt, token_hash),
        )

    def learner_tokens(self, code: str) -> list[sqlite3.Row]:
        """(name, token_salt, token_hash) of every learner with a rejoin token."""
        return self.conn.execute(
            "SELECT name, token_salt, token_hash FROM challenge_learners WHERE code = ? AND token_hash IS NOT NULL",
            (code,),
        ).fetchall()

    # -- submissions --------------------------------------------------------------------------------

    def submission(self, submission_id: int, code: str | None = None, kept: bool = False) -> sqlite3.Row | None:
        """A submission by id (of challenge ``code`` only, when given; not removed, when ``kept``), or None."""
        query, params = "SELECT * FROM challenge_submissions WHERE id = ?", (int(submission_id),)
        if code is not None:
            query, params = query + " AND code = ?", (*params, code)
        if kept:
            query += " AND removed = 0"
        return self.conn.execute(query, params).fetchone()

    def remove_submission(self, submission_id: int) -> None:
        """Take a submission off the boards (withdrawn, removed by the teacher, or half-recorded)."""
        self.conn.execute("UPDATE challenge_submissions SET removed = 1 WHERE id = ?", (int(submission_id),))

    def pending(self, code: str, now: float, name_key: str | None = None) -> int:
        """Submissions waiting or being scored (of one learner when ``name_key`` is given); one written in the
        last PENDING_GRACE_S without its score run yet counts too."""
        query = (
            "SELECT COUNT(*) FROM challenge_submissions s LEFT JOIN runs r ON r.id = s.score_run "
            "WHERE s.code = ? AND s.removed = 0 AND "
            "((s.score_run IS NULL AND s.created > ?) OR r.status IN ('queued', 'running'))"
        )
        params: tuple = (code, now - PENDING_GRACE_S)
        if name_key is not None:
            query, params = query + " AND s.name_key = ?", (*params, name_key)
        return self.conn.execute(query, params).fetchone()[0]

    def submitted_since(self, code: str, name_key: str, since: float) -> list[float]:
        """When a learner's submissions after ``since`` were made, oldest first (removed ones count)."""
        rows = self.conn.execute(
            "SELECT created FROM challenge_submissions WHERE code = ? AND name_key = ? AND created > ? "
            "ORDER BY created",
            (code, name_key, since),
        )
        return [r["created"] for r in rows]

    def add_submission(
        self,
        code: str,
        name: str,
        name_key: str,
        track: str,
        created: float,
        spec_json: str,
        prompt_tokens: int | None,
        train_examples: int | None,
    ) -> int:
        """A new submission, without runs yet; returns its id."""
        cur = self.conn.execute(
            "INSERT INTO challenge_submissions "
            "(code, name, name_key, track, created, spec_json, prompt_tokens, train_examples) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (code, name, name_key, track, created, spec_json, prompt_tokens, train_examples),
        )
        return int(cur.lastrowid)

    def set_runs(self, submission_id: int, train_run: str | None, score_run: str) -> None:
        """The runs that train (a fine-tune) and score a submission."""
        self.conn.execute(
            "UPDATE challenge_submissions SET train_run = ?, score_run = ? WHERE id = ?",
            (train_run, score_run, int(submission_id)),
        )

    def submissions_with_runs(self, code: str, name_key: str | None = None) -> list[sqlite3.Row]:
        """Every kept submission (of one learner, when ``name_key`` is given), oldest first, with its score run's
        status, summary, error and progress and its fine-tune's status and last step."""
        query = (
            "SELECT s.*, r.status AS status, r.summary_json AS summary, r.error AS error, "
            "r.progress_json AS progress, t.status AS train_status, "
            "(SELECT MAX(step) FROM metrics m WHERE m.run_id = s.train_run) AS train_step "
            "FROM challenge_submissions s LEFT JOIN runs r ON r.id = s.score_run "
            "LEFT JOIN runs t ON t.id = s.train_run WHERE s.code = ? AND s.removed = 0"
        )
        params: tuple = (code,)
        if name_key is not None:
            query, params = query + " AND s.name_key = ?", (*params, name_key)
        return self.conn.execute(query + " ORDER BY s.created, s.id", params).fetchall()
