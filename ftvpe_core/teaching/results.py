"""A class challenge's results: every submission with its status and score (``submissions``), the live board of
the public part (``leaderboard``), the teacher's final ranking on the private part (``final``), each track's summary
and best pair, and the teacher's exports (CSV, JSON, the comparison of the two tracks). Scores are numbers only;
nothing here shows a hidden input.
"""

from __future__ import annotations

import csv
import io
import json
import time

from ftvpe_core import FtvpeError
from ftvpe_core.store import names
from ftvpe_core.store.runs import RunStore
from ftvpe_core.teaching import challenges

# Reading the results


HALF_WRITTEN_S = 60.0
"""A submission still without its score run this long after it was made was cut off half-written."""


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
    if part not in challenges.PARTS:
        raise FtvpeError(f"The part must be one of {', '.join(challenges.PARTS)}, got {part!r}.")


def submissions(store: RunStore, code: str, name: str | None = None, part: str = "public") -> list[dict]:
    """Every submission kept (of one learner, when ``name`` is given: compared by ``names.key``), oldest first,
    with its name ``key``, status, score and costs: ``prompt_tokens`` (added to each input), ``train_examples``
    and ``train_seconds``.

    Args:
        part: whose score ``score`` and ``n`` hold: 'public' (the live board: what learners see) or
            'private' (the final ranking, teacher only; the entries then also hold ``public_score``).
    """
    _check_part(part)
    code = challenges.normal_code(code)
    with store.challenge_tables() as tables:
        key = None
        if name is not None:
            learner = tables.learner(code, name)
            key = learner["name_key"] if learner is not None else names.key(name)
        rows = tables.submissions_with_runs(code, key)
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
    board: dict[str, list[dict]] = {t: [] for t in challenges.TRACKS}
    for e in sorted(best.values(), key=order):
        board[e["track"]].append({**e, "rank": len(board[e["track"]]) + 1})
    return board


def final(store: RunStore, code: str, key: str) -> dict[str, list[dict]]:
    """The final ranking (teacher key needed): each learner's best on the private part of the hidden set,
    which no learner's board ever showed, so probing the live board could not tune a submission to it."""
    challenges.check_key(store, code, key)
    return leaderboard(store, code, part="private")


def _mean(entries: list[dict], key: str) -> float | None:
    return sum(e.get(key) or 0 for e in entries) / len(entries) if entries else None


def track_summary(entries: list[dict]) -> dict[str, dict]:
    """Per track: scored submissions, mean and best score, and mean cost (``mean_prompt_tokens``: the tokens a
    prompt adds to each input, never a count of the hidden inputs; training s)."""
    out = {}
    for track in challenges.TRACKS:
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
    return {t: (board[t][0] if board[t] else None) for t in challenges.TRACKS}


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
    c = challenges.check_key(store, code, key)
    public_n = len(challenges.hidden_task(c, "public").examples)
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
    c = challenges.check_key(store, code, key)
    entries = submissions(store, code, part="private")
    return {
        "code": c.code,
        "title": c.title,
        "metric": c.settings.metric or c.data.metric,
        "hidden_split": "held-back" if c.builtin else c.settings.hidden_split,
        "hidden_source": challenges.hidden_source(c),
        "hidden_n": len(challenges.hidden_task(c).examples),
        "public_n": len(challenges.hidden_task(c, "public").examples),
        "private_n": len(challenges.hidden_task(c, "private").examples),
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
    c = challenges.check_key(store, code, key)
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
