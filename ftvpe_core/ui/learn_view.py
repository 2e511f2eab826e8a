"""The Learn page's live widgets: a prompt builder that can ask the model, the words-vs-weights picture, the
measured table, and a three-question check. Keys start with ``ln_``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import streamlit as st

from ftvpe_core import FtvpeError, figures
from ftvpe_core.model import adapters, generation, weights
from ftvpe_core.settings import GenerationSettings
from ftvpe_core.store.runs import RunStore
from ftvpe_core.studies import compare
from ftvpe_core.tasks import presets, prompts
from ftvpe_core.tasks.prompts import BuiltPrompt, PromptSpec
from ftvpe_core.teaching import classroom, lessons, quiz
from ftvpe_core.ui import markdown, prompt_lab

PAGE = "pages/0_Learn.py"
ASK_SETTINGS = GenerationSettings(max_new_tokens=80)
BUILDERS = {
    # The travel request with something for every technique to add (the preset has no few-shot example).
    "ln_travel": replace(
        presets.get("travel").spec,
        examples=[
            (
                "Write something about gardening.",
                "Small balcony, big harvest: five vegetables that grow happily in pots, even for beginners.",
            )
        ],
    ),
    "ln_patient": presets.get("patient").spec,
}
QUIZ_GRADED = "ln_quiz_graded"


def init() -> None:
    ss = st.session_state
    for prefix, spec in BUILDERS.items():
        for technique in prompts.TECHNIQUES:
            ss.setdefault(f"{prefix}_{technique}", spec.uses(technique))
    ss.setdefault(QUIZ_GRADED, False)
    ss.setdefault("ln_replay_dataset", "support_triage")


def _spec(prefix: str) -> PromptSpec:
    enabled = tuple(t for t in prompts.TECHNIQUES if st.session_state.get(f"{prefix}_{t}"))
    return replace(BUILDERS[prefix], enabled=enabled)


def prompt_builder(prefix: str, handle, preset: str) -> dict[str, BuiltPrompt]:
    """Technique switches over a fixed task, the two prompts coloured by technique, their token bars, a link
    to the Prompt Lab with the same experiment, and (model loaded) both answers. Returns the built prompts."""
    cols = st.columns(len(prompts.TECHNIQUES))
    for col, technique in zip(cols, prompts.TECHNIQUES):
        name, explanation = lessons.TECHNIQUES[technique]
        col.toggle(name, key=f"{prefix}_{technique}", help=explanation)
    spec = _spec(prefix)
    built = prompt_lab.show_prompts(spec, handle, key=f"{prefix}_bar")
    techniques = [t for t in spec.enabled if t != "few-shot"]  # the Prompt Lab's preset has no example
    st.markdown(
        f"[Open this experiment in the ✍️ Prompt Lab]"
        f"({classroom.link('pages/1_Prompt_Lab.py', {'preset': preset, 'techniques': techniques})})"
    )
    _ask(prefix, handle, built)
    return built


def tokens_added(built: dict[str, BuiltPrompt]) -> int:
    """How many tokens the engineered prompt adds to the plain one (estimated until the tokenizer loads)."""
    plain, engineered = (sum(built[label].tokens_by_technique().values()) for label in ("Plain", "Engineered"))
    return engineered - plain


def _ask(prefix: str, handle, built: dict) -> None:
    ss = st.session_state
    ready = handle.state == "ready"
    if (
        st.button(
            "▶ Ask the model both",
            key=f"{prefix}_ask",
            disabled=not ready,
            help="Greedy answers of up to 80 tokens from the model in the sidebar.",
        )
        and ready
    ):
        try:
            with st.spinner("The model is answering both prompts…"):
                ss[f"{prefix}_answers"] = {
                    label: generation.generate(handle.result, b.messages, ASK_SETTINGS).text
                    for label, b in built.items()
                }
        except FtvpeError as e:
            st.error(markdown.literal(e))
    elif not ready:
        st.caption("The button waits for the model to load (see the sidebar).")
    answers = ss.get(f"{prefix}_answers")
    if answers:
        cols = st.columns(len(answers))
        for col, (label, text) in zip(cols, answers.items()):
            with col.container(border=True):
                st.markdown(f"**{label} prompt: the model's answer**")
                st.text(text or "(empty answer)")


def adapter_sources(store: RunStore) -> dict[str, tuple[Path, str]]:
    """Adapters to draw, label -> (folder, the model it was trained on): complete fine-tuning runs in the store
    (newest first), then the recorded ones that ship with the app (trained on the embedded model)."""
    sources = {}
    for a in adapters.available(store):
        label = (
            f"Run {a.run_id} · {a.title} · {a.preset}"
            if a.run_id
            else f"Recorded quick run · {a.title} (ships with the app)"
        )
        sources[label] = (a.folder, a.model)
    return sources


@st.cache_data(show_spinner=False, max_entries=8)
def _changes(folder: str, base: str | None, stamp: float) -> dict:  # stamp: a retrained folder is re-read
    return weights.adapter_changes(folder, base)


def words_vs_weights(store: RunStore, prompt_tokens_added: int | None) -> None:
    """The adapter menu and the picture, measured against the base weights the adapter was trained on (when
    they are on disk; otherwise the size of each change alone)."""
    sources = adapter_sources(store)
    if not sources:
        st.info("No adapter yet: train the quick preset in the [🛠️ Fine-Tune Lab](/Fine_Tune_Lab) (about a minute).")
        st.plotly_chart(figures.words_vs_weights(None, prompt_tokens_added), key="ln_weights_empty")
        return
    label = st.selectbox("Adapter", list(sources), key="ln_adapter")
    folder, model_name = sources[label]
    base = weights.base_weights_for(model_name)
    try:
        changes = _changes(
            str(folder), None if base is None else str(base), (folder / adapters.WEIGHTS_FILE).stat().st_mtime
        )
    except FtvpeError as e:
        st.error(markdown.literal(e))
        return
    st.plotly_chart(figures.words_vs_weights(changes, prompt_tokens_added), key="ln_weights")
    st.caption(weights.describe(changes))


def measured_table(store: RunStore) -> None:
    """The six rows from the newest complete comparison on this machine, if there is one."""
    done = [r for r in store.list("compare") if r.status == "complete"]
    if not done:
        st.caption(
            "No comparison has run on this machine yet: [run one on the ⚖️ Compare page]"
            f"({classroom.link('pages/4_Compare.py', {'dataset': 'support_triage'})}) to fill these rows "
            "with measured numbers."
        )
        return
    try:
        result = compare.load_result(store, done[0].id)
    except FtvpeError as e:
        st.caption(f"The newest comparison cannot be read: {markdown.literal(e)}")
        return
    st.markdown(
        f"**Measured on this machine**: {markdown.literal(result['task']['title'])}, {result['task']['n']} held-out examples "
        f"(comparison {done[0].id})."
    )
    st.table(result["table"], hide_index=True)


def mini_quiz() -> None:
    """Three quiz questions, graded on the spot, with a link to the whole quiz."""
    ss = st.session_state
    questions = [q for q in quiz.QUESTIONS if q.key in lessons.LEARN_QUIZ]
    for n, q in enumerate(questions, 1):
        with st.container(border=True):
            st.markdown(f"**{n}.** {q.scenario}")
            st.radio(
                "Your choice",
                quiz.ANSWERS,
                index=None,
                key=f"ln_q_{q.key}",
                horizontal=True,
                format_func=quiz.ANSWER_LABELS.get,
                label_visibility="collapsed",
            )
            if ss[QUIZ_GRADED]:
                chosen = ss.get(f"ln_q_{q.key}")
                verdict = (
                    "✅ Right" if chosen == q.answer else ("⬜ Not answered" if chosen is None else "❌ Not quite")
                )
                st.markdown(f"{verdict}: **{quiz.ANSWER_LABELS[q.answer]}**. {q.explanation}")
    if not ss[QUIZ_GRADED]:
        if st.button("Check", key="ln_quiz_check"):  # not a callback: the choices must land first
            ss[QUIZ_GRADED] = True
            st.rerun()
        return
    graded = quiz.grade({q.key: ss.get(f"ln_q_{q.key}") for q in questions}, lessons.LEARN_QUIZ)
    st.metric("Your score", f"{graded.score} / {graded.total}")
    st.markdown(f"[Take the whole quiz: {len(quiz.QUESTIONS)} situations]({classroom.link('pages/5_Quiz.py')})")
