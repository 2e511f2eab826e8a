"""Classroom mode: the guided demo's steps, and an experiment's state as URL query parameters.

A teacher sends a link such as ``/Prompt_Lab?classroom=1&preset=travel&techniques=role,context`` and every
student's browser opens the same experiment. This module only decodes, checks and encodes those parameters
and lists the steps; reading ``st.query_params`` and setting widgets happens in ``ftvpe_core/ui/classroom.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

from ftvpe_core.tasks import datasets, presets, prompts
from ftvpe_core.training import finetune

CLASSROOM = "classroom"
STEP = "step"
ON_VALUES = ("1", "true", "yes", "on")
STATE_KEYS = ("preset", "techniques", "task", "dataset", "train")
"""Experiment state the URL can carry: prompt preset, prompt techniques, task text, dataset, training preset."""


@dataclass(frozen=True)
class Step:
    page: str
    """The page file, relative to the app's folder (``pages/1_Prompt_Lab.py``)."""
    title: str
    say: str
    """What to do and what to look at, in a sentence or three."""
    state: dict = field(default_factory=dict)
    """The experiment the step opens with (query parameters)."""


STEPS: tuple[Step, ...] = (
    Step("pages/0_Learn.py", "Two ways to steer a model",
         "Read the first two sections aloud. Toggle the four techniques on the travel request and watch the "
         "prompt grow while the model stays the same."),
    Step("pages/1_Prompt_Lab.py", "Change the words",
         "Press **Run both**. The vague request and the engineered one go to the same model; compare the two "
         "answers and the first-token chart. Switch one technique off and run again.",
         {"preset": "travel", "techniques": "role,context"}),
    Step("pages/2_Fine_Tune_Lab.py", "Change the weights",
         "Launch the quick demo on support triage (about a minute on a laptop) or press **Play** on the "
         "recording below. Watch the training loss fall and the probe answers turn into labels.",
         {"dataset": "support_triage", "train": "quick"}),
    Step("pages/3_Token_Lens.py", "Look at the next token",
         "Press **Look**. The same ticket goes to the plain prompt, the engineered prompt and the fine-tuned "
         "adapter; step through the answer and see which one is sure of each token.",
         {"dataset": "support_triage", "techniques": "role,few-shot,context"}),
    Step("pages/4_Compare.py", "Measure both",
         "Run the comparison (or open the last one): four arms on held-out tickets, with accuracy, prompt "
         "tokens, seconds per answer and training time. Where does fine-tuning pay back?",
         {"dataset": "support_triage", "techniques": "role,few-shot,context"}),
    Step("pages/5_Quiz.py", "Your call",
         "Vote on each situation as a class: prompt, fine-tune or both? Then check the answers and the reasons."),
)  # fmt: skip


def is_on(value: str | None) -> bool:
    """Whether a ``classroom`` parameter value switches classroom mode on."""
    return (value or "").strip().lower() in ON_VALUES


def url_path(page: str) -> str:
    """The URL path Streamlit gives a page file: ``pages/1_Prompt_Lab.py`` -> ``Prompt_Lab``."""
    stem = page.rsplit("/", 1)[-1].removesuffix(".py")
    number, _, name = stem.partition("_")
    return name if number.isdigit() and name else stem


def decode(params: Mapping[str, str | list[str]]) -> tuple[dict, list[str]]:
    """The experiment state in query parameters, checked. Returns (state, problems): a value that is not
    valid is left out and named in ``problems`` (a sentence each), so a mistyped link still opens."""
    state: dict = {}
    problems: list[str] = []

    def value(key: str) -> str | None:
        v = params.get(key)
        if isinstance(v, list):
            v = v[-1] if v else None
        return None if v is None else str(v).strip()

    def choose(key: str, what: str, allowed, normal=lambda v: v) -> None:
        if (v := value(key)) is None:
            return
        if normal(v) in allowed:
            state[key] = normal(v)
        else:
            problems.append(f"The link names a {what} '{v}' that does not exist here; {what}s: {', '.join(allowed)}.")

    choose("preset", "prompt preset", presets.PRESETS_BY_KEY)
    if (v := value("techniques")) is not None:
        names = [t.strip() for t in v.split(",") if t.strip()]
        unknown = [t for t in names if t not in prompts.TECHNIQUES]
        if unknown:
            problems.append(
                f"Unknown technique{'s' if len(unknown) > 1 else ''} in the link: {', '.join(unknown)}; "
                f"techniques: {', '.join(prompts.TECHNIQUES)}."
            )
        state["techniques"] = [t for t in prompts.TECHNIQUES if t in names]
    if (v := value("task")) is not None:
        if not v:
            problems.append("The link's task is empty; the preset's task is used.")
        elif len(v) > prompts.MAX_TASK_CHARS:
            problems.append(
                f"The link's task is {len(v):,} characters, more than {prompts.MAX_TASK_CHARS:,}; "
                "the preset's task is used."
            )
        else:
            state["task"] = v
    choose("dataset", "built-in dataset", datasets.BUILTINS, lambda v: v.replace("-", "_"))
    choose("train", "training preset", finetune.PRESETS)
    return state, problems


def encode(state: Mapping, classroom: bool = False, step: int | None = None) -> dict[str, str]:
    """Query parameters for an experiment state (keys in a fixed order; empty values left out)."""
    out: dict[str, str] = {}
    if classroom:
        out[CLASSROOM] = "1"
    if step is not None:
        out[STEP] = str(step)
    for key in STATE_KEYS:
        v = state.get(key)
        if key == "techniques" and v is not None:
            out[key] = ",".join(t for t in prompts.TECHNIQUES if t in v)
        elif v:
            out[key] = str(v)
    return out


def link(page: str, state: Mapping | None = None, classroom: bool = False, step: int | None = None) -> str:
    """A relative link that opens ``page`` with this experiment, e.g. ``/Prompt_Lab?classroom=1&preset=travel``."""
    query = urlencode(encode(state or {}, classroom, step), safe=",")
    return f"/{url_path(page)}" + (f"?{query}" if query else "")


def step_index(page: str, step: str | None) -> int | None:
    """The guided step to show on ``page``: the ``step`` parameter (1-based) when it belongs to this page,
    else the page's first step; None for a page with no step."""
    if step and step.strip().isdigit():
        n = int(step) - 1
        if 0 <= n < len(STEPS) and STEPS[n].page == page:
            return n
    return next((i for i, s in enumerate(STEPS) if s.page == page), None)
