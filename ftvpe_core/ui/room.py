"""A challenge in a real room: the address phones open to join, and each submission's status told as it is.

``join_address`` picks the origin of the join link and its QR code from what is known: ``FTVPE_PUBLIC_URL``,
the address the teacher's browser used, or this server's network address (what ``streamlit run`` prints as
"Network URL"; ``ui/challenge_view.py`` reads it from Streamlit). ``status`` reads a submission's runs in the
store and the job queue's own estimate (``runners.queue_place``): queued (place and start), training (step k
of n), scoring (k of n hidden examples), scored. Nothing here imports Streamlit or starts any work.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from ftvpe_core import FtvpeError
from ftvpe_core.jobs import runners
from ftvpe_core.store.runs import Run, RunStore
from ftvpe_core.teaching import challenges

PHASES = ("queued", "training", "scoring", "scored")
"""The phases a submission passes through, in order (a prompt skips training)."""
FALLBACK_ORIGIN = "http://localhost:8501"


@dataclass(frozen=True)
class JoinAddress:
    """The origin learners' links use, where it came from (in words), and a warning when phones cannot open it."""

    origin: str
    source: str
    warning: str | None = None


def is_local(origin: str) -> bool:
    """Whether an address names only this machine (localhost, 127.x, ::1, 0.0.0.0): no phone can open it."""
    host = (urlsplit(origin).hostname or "").lower()
    if not host or host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


def _origin(url: str | None) -> str | None:
    """``scheme://host:port`` and the app's base path, from the app's address (no query, no trailing slash)."""
    if not url or not url.startswith(("http://", "https://")):
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}" if parts.netloc else None


def join_address(browser_url: str | None, network_url: str | None, public_url: str | None = None) -> JoinAddress:
    """The address to put in the join link, best first: ``public_url`` (FTVPE_PUBLIC_URL: a hostname, a reverse
    proxy, https), the browser's own address unless it is localhost, this server's network address.

    Args:
        browser_url: the app's address in the teacher's browser (``st.context.url``: its page's name left
            out), or None where unknown.
        network_url: this server's origin on the network (``http://192.168.1.20:8501``), or None.
        public_url: FTVPE_PUBLIC_URL, checked (``settings.public_url``).
    """
    if public_url:
        return JoinAddress(public_url.rstrip("/"), "FTVPE_PUBLIC_URL")
    browser = _origin(browser_url)
    if browser and not is_local(browser):
        return JoinAddress(browser, "the address this browser uses")
    network = _origin(network_url)
    if network and not is_local(network):
        via = " (this browser uses localhost)" if browser else ""
        return JoinAddress(network, f"this server's network address{via}")
    return JoinAddress(
        browser or FALLBACK_ORIGIN,
        "localhost",
        "Only localhost is known, so phones cannot open this link. Connect this computer to the room's "
        "network, or set FTVPE_PUBLIC_URL to the address learners can reach.",
    )


def join_link(origin: str, code: str) -> str:
    """The link a learner opens: the Challenge page with the code filled in."""
    return f"{origin.rstrip('/')}/Challenge?challenge={challenges.normal_code(code)}"


# Status


@dataclass(frozen=True)
class Status:
    """Where a submission stands, in one line of plain text."""

    phase: str
    """One of PHASES, or 'failed', 'removed', 'interrupted'."""
    text: str
    fraction: float | None = None
    """How far along (0-1) where that is known: a progress bar's fill."""


def score_runs(store: RunStore, code: str) -> dict[int, Run]:
    """Each submission's scoring run in a challenge, by submission id."""
    code = challenges.normal_code(code)
    return {
        int(r.settings["submission"]): r
        for r in store.list("challenge")
        if r.settings.get("code") == code and r.settings.get("submission") is not None
    }


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _queued(store: RunStore, run: Run, slots: runners.Slots | None, what: str) -> Status:
    place = runners.queue_place(store, run, slots or runners.current().slots(store))
    if place is None:
        return Status("queued", f"Queued {what}")
    starts = "any moment now" if place.starts_in_s < 1 else f"in about {_duration(place.starts_in_s)}"
    return Status("queued", f"Queued {what}: {_ordinal(place.position)} of {place.of} in the queue, starts {starts}")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def status(store: RunStore, entry: dict, score_run: Run | None, slots: runners.Slots | None) -> Status:
    """A submission's status from its runs.

    Args:
        entry: a ``results.submissions`` entry.
        score_run: its scoring run (``score_runs``), None where it is not known.
        slots: the runner's slots (``runners.current().slots(store)``), read once for a page of entries; may be
            None when the entry is scored or has failed.
    """
    pct = _pct(entry.get("score"))
    if entry.get("score") is not None:
        n = entry.get("n")
        return Status("scored", f"Scored: {pct}" + (f" on {n} hidden examples" if n else ""), 1.0)
    if entry["status"] in ("failed", "removed", "interrupted"):
        return Status(entry["status"], entry["status"].capitalize())
    if entry["track"] == "finetune" and entry.get("train_run"):
        try:
            train = store.get(entry["train_run"])
        except FtvpeError:
            train = None
        if train is not None and train.status == "queued":
            return _queued(store, train, slots, "to train")
        if train is not None and train.status == "running":
            total = int(entry["spec"]["settings"]["max_steps"])
            metrics = store.metrics(train.id)
            step = int(metrics["train_loss"][-1][0]) if metrics.get("train_loss") else 0
            eta = metrics["eta_s"][-1][1] if metrics.get("eta_s") else None
            left = f", about {_duration(eta)} left" if eta and step < total else ""
            return Status("training", f"Training: step {step} of {total}{left}", min(step / max(total, 1), 1.0))
        if train is not None and train.status in ("failed", "cancelled", "interrupted"):
            return Status("failed", f"Training {train.status}")
    if score_run is None or score_run.status == "queued":
        return _queued(store, score_run, slots, "to score") if score_run else Status("queued", "Queued to score")
    if score_run.status == "running":
        p = score_run.progress or {}
        return Status("scoring", f"Scoring: {p.get('message') or 'starting'}", p.get("fraction"))
    return Status(entry["status"], entry["status"].capitalize())


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _answers(k: int) -> str:
    return "1 answer" if k == 1 else f"{k} answers"


def feedback_lines(feedback: dict | None) -> list[str]:
    """What a learner is told after a score (``evaluate.answer_feedback``'s counts), as plain sentences: how many
    answers were empty, named no allowed label, ran too long, and a training-split answer of the right kind."""
    if not feedback or not feedback.get("n"):
        return []
    n, lines = feedback["n"], []
    if feedback.get("empty"):
        lines.append(f"{_answers(feedback['empty'])} of {n} {'was' if feedback['empty'] == 1 else 'were'} empty.")
    if feedback.get("not_a_label"):
        labels = ", ".join(feedback.get("labels") or [])
        lines.append(f"{_answers(feedback['not_a_label'])} of {n} did not name exactly one allowed answer ({labels}).")
    if feedback.get("too_long"):
        lines.append(f"{_answers(feedback['too_long'])} of {n} ran past {feedback['word_limit']} words.")
    if not lines:
        lines.append(
            f"None of the {n} answers was empty, off the list or too long: the form is right, the content is next."
        )
    if feedback.get("example_answer"):
        lines.append(f"An answer of the right kind, from the training split: “{feedback['example_answer']}”")
    return lines
