"""The Token Lens page's pieces: widget defaults, the adapters on offer, float32 models, the Look action, the
position buttons and the answer drawn as tokens.

All three conditions run on float32 weights (a merged adapter needs them), so they differ only in their prompt
and their weights. Every model text that goes into HTML is escaped here.
"""

from __future__ import annotations

import html

import streamlit as st

from ftvpe_core import FtvpeError, settings
from ftvpe_core.model import adapters, models
from ftvpe_core.store import recordings
from ftvpe_core.studies import compare, lens
from ftvpe_core.tasks import evaluate
from ftvpe_core.tasks.datasets import Example
from ftvpe_core.ui import loaders, markdown
from ftvpe_core.ui import run_views as views

SOURCES = ("A test example", "Your own text")
RECORDED = "recorded"
REFERENCE = "Reference answer"
WEIGHTS = adapters.WEIGHT_FORMAT
MAX_NEW_TOKENS = 24
HOW_TO_GET_ONE = (
    "No fine-tuned adapter for this dataset yet: train the quick preset in the [🛠️ Fine-Tune Lab](/Fine_Tune_Lab) "
    "(about a minute), then come back. Until then the lens compares the two prompts."
)

PAGE = "pages/3_Token_Lens.py"


def init() -> None:
    ss = st.session_state
    ss.setdefault("tl_dataset", "support_triage")
    ss.setdefault("tl_source", SOURCES[0])
    ss.setdefault("tl_example", 0)
    ss.setdefault("tl_text", "")
    ss.setdefault("tl_techniques", list(compare.DEFAULT_TECHNIQUES))
    ss.setdefault("tl_lens", None)
    ss.setdefault("tl_pos", 1)


def apply_url_state(state: dict) -> None:
    """An experiment from a link (``ftvpe_core.teaching.classroom.decode``): the dataset and the prompt's techniques."""
    ss = st.session_state
    if "dataset" in state:
        ss.tl_dataset = state["dataset"]
    if "techniques" in state:
        ss.tl_techniques = list(state["techniques"])


def url_state() -> dict:
    return {"dataset": st.session_state.tl_dataset, "techniques": st.session_state.tl_techniques}


def keep_valid(key: str, options: list, default=None) -> None:
    """Set a menu's value to ``default`` (or its first option) on the first visit and when the current one is no
    longer offered. Call before the menu is drawn."""
    if key not in st.session_state or st.session_state[key] not in options:
        st.session_state[key] = default if default in options else (options[0] if options else None)


def _recorded_model(dataset: str) -> str:
    try:
        return recordings.load(dataset).get("settings", {}).get("model") or settings.EMBEDDED_MODEL
    except FtvpeError:
        return settings.EMBEDDED_MODEL


def adapter_menu(dataset: str) -> dict[str, str]:
    """Adapters trained on ``dataset``: run id -> label for complete store runs (newest first), plus the
    recorded adapter shipped with the app when there is one for the model in use."""
    found, runs = {}, {}
    for a in adapters.available(views.store(), dataset):
        if a.run_id is not None:
            runs[a.run_id] = views.label(views.store().get(a.run_id), status=False)
        elif _same_model(_recorded_model(dataset), loaders.choice()["name"]):
            # First in the menu, so a long list of runs never hides it; the default is still the newest run.
            found[RECORDED] = "recorded adapter (shipped with the app)"
    return {**found, **runs}


def default_adapter(adapters: dict[str, str]) -> str | None:
    """The newest run trained here, else the recorded adapter, else none."""
    return next((a for a in adapters if a != RECORDED), RECORDED if RECORDED in adapters else None)


def _same_model(a: str, b: str) -> bool:
    try:
        return models.resolve(a).location == models.resolve(b).location
    except FtvpeError:
        return False


def base_name(adapter: str | None) -> str:
    """The base model of the lens: the adapter's own base model, else the model chosen in the sidebar."""
    if adapter == RECORDED:
        return _recorded_model(st.session_state.tl_dataset)
    if adapter:
        return views.store().get(adapter).settings.get("model") or settings.default_model()
    return loaders.choice()["name"]


def tuned_model(adapter: str, name: str, device: str) -> models.LoadedModel:
    """The base model with the adapter merged into float32 weights (a store run's, or the recorded one)."""
    if adapter == RECORDED:
        folder = adapters.recorded(st.session_state.tl_dataset)
        if folder is None:
            raise FtvpeError("The recorded adapter is missing from this installation.")
        return loaders.tuned_model(name, device, str(folder))
    return loaders.tuned_model(name, device, str(views.store().artifact_dir(adapter)))


def follow_options(with_adapter: bool, with_reference: bool) -> list[str]:
    options = [lens.PLAIN, lens.ENGINEERED] + ([lens.TUNED] if with_adapter else [])
    return options + ([REFERENCE] if with_reference else [])


def look() -> None:
    """Build the lens from the widgets and keep its dict in ``tl_lens``; raises FtvpeError for bad input."""
    ss = st.session_state
    ss.tl_lens = None
    task = evaluate.load_task(ss.tl_dataset)
    if ss.tl_source == SOURCES[0]:
        example = task.examples[ss.tl_example]
    else:
        if not ss.tl_text.strip():
            raise FtvpeError("Write the text to send to the model first.")
        example = Example(prompt=ss.tl_text.strip(), response="")
    name, device = base_name(ss.tl_adapter), loaders.device()
    with st.spinner(f"Loading the base model ({WEIGHTS})…"):
        base = loaders.float_model(name, device)
    plain, engineered = lens.example_messages(task, example, ss.tl_techniques, base.count_tokens)
    conditions = {lens.PLAIN: (base, plain), lens.ENGINEERED: (base, engineered)}
    if ss.tl_adapter:
        with st.spinner(f"Loading the fine-tuned model (base + adapter merged, {WEIGHTS})…"):
            conditions[lens.TUNED] = (tuned_model(ss.tl_adapter, name, device), plain)
    reference = example.response if ss.tl_follow == REFERENCE else None
    with st.spinner("Reading the next-token distributions…"):
        result = lens.build(conditions, ss.tl_follow, MAX_NEW_TOKENS, answer_text=reference)
    ss.tl_lens, ss.tl_pos = result.to_dict(), 1


def step(delta: int) -> None:
    """Callback of ◀ / ▶: move the position before the slider is drawn."""
    ss = st.session_state
    n = len(ss.tl_lens["answer_ids"]) if ss.tl_lens else 1
    ss.tl_pos = min(max(int(ss.tl_pos) + delta, 1), n)


def jump(position: int) -> None:
    st.session_state.tl_pos = position + 1


def _md(text: str) -> str:
    """Model text made literal for st.markdown, on one line."""
    return markdown.literal(text.replace("\n", "⏎"))


def readings(data: dict, position: int) -> list[str]:
    """Markdown sentences about one position and about where the conditions part ways."""
    found = lens.Lens.from_dict(data)
    lines = [_md(found.reading(position))]
    far = found.most_divergent()
    if far is not None:
        token = _md(found.answer_tokens[far])
        lines.append(
            f"The conditions disagree most at token {far + 1} (“{token}”): their distributions are "
            f"{100 * found.divergence(far):.0f} % apart (total variation; 0 % would be identical)."
        )
    return lines


def answer_html(data: dict, position: int) -> str:
    """The answer as token boxes, the current one highlighted; every token is escaped."""
    boxes = []
    for i, token in enumerate(data["answer_tokens"]):
        shown = html.escape(token.replace("\n", "⏎")) or "&nbsp;"
        style = "background:#f59e0b55;border-color:#f59e0b" if i == position - 1 else "border-color:#cbd5e188"
        boxes.append(
            f'<span title="token {i + 1}" style="white-space:pre;border:1px solid;border-radius:4px;'
            f'padding:1px 3px;margin:1px;display:inline-block;{style}">{shown}</span>'
        )
    return '<div style="line-height:2">' + "".join(boxes) + "</div>"


def prompt_text(messages: list[dict]) -> str:
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)
