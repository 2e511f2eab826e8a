"""Session state of the Prompt Lab: widget keys <-> PromptSpec, presets, attempts, rendering helpers."""

from __future__ import annotations

import html
import time

import streamlit as st

from ftvpe_core import FtvpeError
from ftvpe_core.figures import TECHNIQUE_COLORS
from ftvpe_core.settings import GenerationSettings
from ftvpe_core.tasks import presets, prompts
from ftvpe_core.tasks.prompts import TECHNIQUE_LABELS, BuiltPrompt, PromptSpec
from ftvpe_core.ui import markdown

ATTEMPTS = "pe_attempts"
LAST = "pe_last"
DEFAULT_PRESET = "travel"
TOGGLES = {"role": "pe_role_on", "few-shot": "pe_fewshot_on", "cot": "pe_cot_on", "context": "pe_ctx_on"}
GENERATION_DEFAULTS = {
    "pe_max_new": 160,
    "pe_temperature": 0.0,
    "pe_top_p": 1.0,
    "pe_seed": 0,
    "pe_rep": GenerationSettings.repetition_penalty,
}
PAGE = "pages/1_Prompt_Lab.py"


def examples_to_text(examples: list[tuple[str, str]]) -> str:
    return "\n".join(f"{i} => {o}" for i, o in examples)


def text_to_examples(text: str) -> list[tuple[str, str]]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if "=>" not in line:
            raise FtvpeError(f"Few-shot line {n} needs the form 'input => output'.")
        out.append(prompts.parse_example(line))
    return out


def _write_spec(spec: PromptSpec) -> None:
    ss = st.session_state
    ss.pe_task = spec.task
    for technique, key in TOGGLES.items():
        ss[key] = spec.uses(technique)
    ss.pe_role = spec.role
    ss.pe_examples = examples_to_text(spec.examples)
    ss.pe_facts = spec.facts
    ss.pe_tone = spec.tone
    ss.pe_audience = spec.audience
    ss.pe_words = int(spec.words or 0)
    ss.pe_format = spec.output_format


def init() -> None:
    """Widget defaults on first visit: the travel preset."""
    if "pe_task" not in st.session_state:
        _write_spec(presets.get(DEFAULT_PRESET).spec)
        st.session_state.pe_preset = DEFAULT_PRESET
    st.session_state.setdefault(ATTEMPTS, [])
    st.session_state.setdefault(LAST, None)
    for key, value in GENERATION_DEFAULTS.items():
        st.session_state.setdefault(key, value)


def apply_url_state(state: dict) -> None:
    """An experiment from a link (``ftvpe_core.teaching.classroom.decode``): the preset, then its techniques and task."""
    ss = st.session_state
    if "preset" in state:
        ss.pe_preset = state["preset"]
        apply_preset()
    if "techniques" in state:
        for technique, key in TOGGLES.items():
            ss[key] = technique in state["techniques"]
    if "task" in state:
        ss.pe_task = state["task"]
        ss[LAST] = None


def url_state() -> dict:
    """The experiment to keep in the URL: preset and techniques, and the task when it is not the preset's."""
    ss = st.session_state
    state = {"preset": ss.pe_preset, "techniques": [t for t, key in TOGGLES.items() if ss.get(key)]}
    if ss.get("pe_task", "") != presets.get(ss.pe_preset).spec.task:
        state["task"] = ss.get("pe_task", "")
    return state


def generation_settings() -> GenerationSettings:
    ss = st.session_state
    return GenerationSettings(ss.pe_max_new, ss.pe_temperature, ss.pe_top_p, ss.pe_seed, ss.pe_rep)


def apply_preset() -> None:
    """Callback of the preset menu."""
    _write_spec(presets.get(st.session_state.pe_preset).spec)
    st.session_state[LAST] = None


def restore_attempt(index: int) -> None:
    """Callback of an attempt's Restore button."""
    attempt = st.session_state[ATTEMPTS][index]
    _write_spec(PromptSpec.from_dict(attempt["spec"]))
    st.session_state[LAST] = attempt


def spec_from_widgets() -> PromptSpec:
    """The spec the widgets describe; raises FtvpeError with a message for the user."""
    ss = st.session_state
    enabled = tuple(t for t, key in TOGGLES.items() if ss.get(key))
    return PromptSpec(
        task=ss.get("pe_task", ""),
        enabled=enabled,
        role=ss.get("pe_role", ""),
        examples=text_to_examples(ss.get("pe_examples", "")) if "few-shot" in enabled else [],
        facts=ss.get("pe_facts", ""),
        tone=ss.get("pe_tone", ""),
        audience=ss.get("pe_audience", ""),
        words=int(ss.get("pe_words") or 0) or None,
        output_format=ss.get("pe_format", ""),
    )


def token_counter(handle):
    """Exact token counts once the tokenizer is in (it loads before the weights); estimates before."""
    tokenizer = handle.tokenizer
    if tokenizer is None:
        return None
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def record_attempt(spec: PromptSpec, gen_settings: dict, outputs: dict) -> dict:
    attempt = {"time": time.strftime("%H:%M:%S"), "spec": spec.to_dict(), "settings": gen_settings, **outputs}
    st.session_state[ATTEMPTS].insert(0, attempt)
    st.session_state[LAST] = attempt
    return attempt


def show_prompts(spec: PromptSpec, handle, key: str) -> dict[str, BuiltPrompt]:
    """The plain and the engineered prompt side by side, coloured by technique, and their token bars.
    Returns the two built prompts, by label."""
    from ftvpe_core import figures

    count = token_counter(handle)
    built = {"Plain": prompts.build(spec.plain(), count), "Engineered": prompts.build(spec, count)}
    st.markdown(legend_html(["task", *spec.enabled]), unsafe_allow_html=True)
    for col, label in zip(st.columns(2), built):
        with col.container(border=True):
            st.markdown(f"**{label}**")
            st.markdown(segments_html(built[label]), unsafe_allow_html=True)
    st.plotly_chart(figures.prompt_token_bar(built), key=key)
    return built


def segments_html(built: BuiltPrompt) -> str:
    """The messages with every segment coloured by technique; all text is escaped."""
    parts = []
    for index, message in enumerate(built.messages):
        chunks = []
        for s in built.segments:
            if s.message != index:
                continue
            color = TECHNIQUE_COLORS[s.technique]
            title = html.escape(
                f"{TECHNIQUE_LABELS[s.technique]}{' · ' + s.detail if s.detail else ''}: {s.tokens} tokens"
            )
            # Line breaks become <br>: a blank line would end the HTML block in st.markdown.
            text = html.escape(s.text).replace("\n", "<br>")
            chunks.append(
                f'<span title="{title}" style="background:{color}22;border-bottom:2px solid {color}">{text}</span>'
            )
        parts.append(
            '<div style="margin:0 0 .5rem 0"><div style="font-size:.75rem;opacity:.7;text-transform:uppercase">'
            f"{html.escape(message['role'])}</div><div>{''.join(chunks)}</div></div>"
        )
    return "".join(parts)


def legend_html(techniques: list[str]) -> str:
    return " ".join(
        f'<span style="background:{TECHNIQUE_COLORS[t]}22;border-bottom:2px solid {TECHNIQUE_COLORS[t]};'
        f'padding:0 .3rem;margin-right:.4rem;font-size:.85rem">{html.escape(TECHNIQUE_LABELS[t])}</span>'
        for t in techniques
    )


def queue_message(position: int) -> str:
    """What a placeholder says while its request waits for a place in the engine's batch."""
    ahead = position - 1
    if ahead <= 0:
        return "⏳ Next in line: the model is busy with other answers; yours starts in a moment."
    return f"⏳ Waiting for the model: {ahead} request{'s' if ahead != 1 else ''} ahead of yours."


def check_lines(checks: list) -> str:
    icon = {True: "✅", False: "❌", None: "➖"}
    return (
        "\n".join(f"- {icon[c.passed]} **{c.name}**: {markdown.literal(c.detail)}" for c in checks)
        or "_No checks: switch on context or chain-of-thought to get some._"
    )


def run_side_by_side(loaded, spec: PromptSpec, gen_settings, placeholders: dict) -> dict:
    """Stream the plain and the engineered answers into their placeholders as the engine makes them (both run
    in one batch, with every other session's requests), then show both next-token distributions (from the
    prompts' own forward passes) and run the checks. Returns what the page shows."""
    from ftvpe_core.model import generation
    from ftvpe_core.tasks import checks
    from ftvpe_core.ui import loaders

    builts = {
        "Plain": prompts.build(spec.plain(), loaded.count_tokens),
        "Engineered": prompts.build(spec, loaded.count_tokens),
    }
    owner = loaders.session_owner()
    streams = {
        label: generation.GenerationStream(loaded, b.messages, gen_settings, owner=owner, first_top=10)
        for label, b in builts.items()
    }
    labels = list(streams)
    texts = dict.fromkeys(labels, "")
    shown = dict.fromkeys(labels, 0.0)

    def show_queue() -> None:
        for label in labels:
            position = streams[label].queue_position
            if position is not None and not texts[label]:
                placeholders[label].text(queue_message(position))

    try:
        for i, piece in generation.interleave([streams[label] for label in labels], on_wait=show_queue):
            label = labels[i]
            texts[label] += piece
            # Redraw at most ten times a second: every redraw costs the browser and the server CPU time
            # that the model, on the same laptop, would rather have.
            if time.perf_counter() - shown[label] > 0.1:
                placeholders[label].text(texts[label] + " ▌")
                shown[label] = time.perf_counter()
    finally:
        for stream in streams.values():
            stream.close()  # a rerun or a closed tab that leaves the loop frees both places at once
    outputs = {}
    for label in labels:
        result = streams[label].result
        placeholders[label].text(result.text)
        top = [generation.TokenProb(i, loaded.tokenizer.decode([i]), p) for p, i in streams[label].request.first_top]
        outputs[label] = {
            "result": result.to_dict(),
            "top": [{"token": t.token, "prob": t.prob} for t in top],
            "checks": [c.__dict__ for c in checks.run_checks(spec, result.text)],
        }
    return {"outputs": outputs, "model": loaded.name}
