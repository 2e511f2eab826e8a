"""The Compare page's pieces: the form's defaults, and a comparison result drawn as charts and tables."""

from __future__ import annotations

import streamlit as st

from ftvpe_core import FtvpeError, figures
from ftvpe_core.studies import compare, report
from ftvpe_core.tasks import datasets
from ftvpe_core.teaching import results
from ftvpe_core.ui import markdown

PAGE = "pages/4_Compare.py"


def init() -> None:
    ss = st.session_state
    ss.setdefault("cp_task", datasets.BUILTINS[0])
    ss.setdefault("cp_techniques", list(compare.DEFAULT_TECHNIQUES))
    ss.setdefault("cp_limit", 0)
    ss.setdefault("cp_forgetting", True)
    ss.setdefault("cp_ablation", False)
    ss.setdefault("cp_efficiency", False)
    ss.setdefault("cp_best", False)
    ss.setdefault("cp_prompt", None)  # a class challenge's best prompt (PromptSpec fields), when loaded
    ss.setdefault("cp_challenge", None)
    ss.setdefault("cp_ch_code", str(st.query_params.get("challenge", ""))[:12])
    if "cp_show" not in ss:  # also the "Showing comparison" menu's key
        ss.cp_show = None


def challenge_loader(store) -> None:
    """Load a class challenge's best prompt and best run as the arms (the teacher key is asked: Compare shows
    every example it scores, and a challenge's test split is hidden from its learners)."""
    ss = st.session_state
    loaded = ss.cp_challenge
    with st.expander("Load a class challenge's best prompt and best run", expanded=bool(ss.cp_ch_code) and not loaded):
        c1, c2 = st.columns(2)
        c1.text_input("Join code", key="cp_ch_code", max_chars=12)
        c2.text_input("Teacher key", key="cp_ch_key", type="password")
        if st.button("Load the challenge's arms", key="cp_ch_load"):
            try:
                arms = results.compare_arms(store, ss.cp_ch_code, ss.get("cp_ch_key", ""))
            except FtvpeError as e:
                st.error(markdown.literal(e))
                return
            ss.cp_task, ss.cp_run, ss.cp_prompt, ss.cp_challenge = arms["task"], arms["run_id"], arms["prompt"], arms
            st.rerun()
    if loaded:
        names = loaded["names"]
        st.info(
            f"Arms from a class challenge: the best prompt ({markdown.literal(names.get('prompt', 'none'))}) "
            f"and the best run ({markdown.literal(names.get('finetune', 'none'))})."
        )
        if st.button("Forget the challenge's arms", key="cp_ch_forget"):
            ss.cp_prompt = ss.cp_challenge = None
            st.rerun()


def apply_url_state(state: dict) -> None:
    """An experiment from a link (``ftvpe_core.teaching.classroom.decode``): the task and the prompt's techniques."""
    ss = st.session_state
    if "dataset" in state:
        ss.cp_task = state["dataset"]
    if "techniques" in state:
        ss.cp_techniques, ss.cp_best = list(state["techniques"]), False


def url_state() -> dict:
    ss = st.session_state
    return {"dataset": ss.cp_task, "techniques": ss.cp_techniques}


def example_rows(result: dict) -> list[dict]:
    """One row per scored example: the prompt, the reference, and each arm's answer with pass/fail."""
    arms = result["arms"]
    rows = []
    for i, first in enumerate(arms[0]["examples"] if arms else []):
        row = {"#": first["index"], "prompt": first["prompt"], "reference": first["reference"]}
        for arm in arms:
            e = arm["examples"][i]
            row[arm["label"]] = f"{'✅' if e['passed'] else '❌'} {e['answer']}"
        rows.append(row)
    return rows


def show(result: dict, key: str) -> None:
    """Everything a comparison measured, top to bottom: scores, recommendation, table, costs, examples."""
    task, arms = result["task"], result["arms"]
    st.caption(
        f"{markdown.literal(task['title'])} · {task['n']} held-out examples · metric: {task['metric']} · "
        f"{markdown.literal(result['model'])} on {result['device']}"
        + (f" · run {result['run_id']}" if result.get("run_id") else "")
    )
    st.plotly_chart(figures.arm_scores(arms, task["metric"]), key=f"{key}_scores")
    cols = st.columns(len(arms))
    for col, arm in zip(cols, arms):
        col.metric(arm["label"], f"{100 * arm['score']:.0f} %")
        col.caption(
            f"{arm['mean_prompt_tokens']:.0f} prompt tokens · {arm['mean_latency_s']:.2f} s/answer · "
            f"training {arm['train_seconds']:.0f} s"
        )
    st.subheader("Prompt or fine-tune?")
    st.markdown(result["recommendation"])
    st.subheader("The comparison table, measured")
    st.table(result["table"], hide_index=True)
    st.plotly_chart(figures.break_even(arms), key=f"{key}_break_even")
    st.subheader("Every example")
    st.dataframe(example_rows(result), hide_index=True, key=f"{key}_examples")
    if result.get("forgetting"):
        st.subheader("Forgetting probe: general questions")
        st.dataframe(result["forgetting"], hide_index=True, key=f"{key}_forgetting")
    if result.get("efficiency"):
        st.plotly_chart(figures.data_efficiency(result["efficiency"], task["metric"]), key=f"{key}_efficiency")
    if result.get("ablation"):
        st.plotly_chart(figures.ablation_chart(result["ablation"]), key=f"{key}_ablation")
        if result.get("gains"):
            st.plotly_chart(figures.technique_gains_chart(result["gains"]), key=f"{key}_gains")
    # Built only when clicked: the report embeds plotly.js (about 5 MB).
    st.download_button(
        "⬇️ HTML report (opens offline)",
        lambda: report.html(result),
        file_name=f"comparison-{key}.html",
        mime="text/html",
        key=f"{key}_report",
    )
