"""Prompt Lab: build a prompt with technique toggles and run it next to the plain prompt."""

from types import SimpleNamespace

import streamlit as st

from ftvpe_core import FtvpeError, figures
from ftvpe_core.tasks import presets, prompts
from ftvpe_core.ui import classroom, loaders, markdown, navigation
from ftvpe_core.ui import prompt_lab as lab

navigation.through_app()

st.set_page_config(page_title="Prompt Lab · FT vs PE Studio", page_icon="✍️", layout="wide")
lab.init()
handle = loaders.sidebar()

st.title("✍️ Prompt Lab")
st.caption("Prompt engineering changes the words, not the model. Switch techniques on and compare with the plain task.")
teaching = classroom.page(lab.PAGE, apply=lab.apply_url_state)

names = {p.key: p.title for p in presets.PRESETS}
st.selectbox("Preset", list(names), format_func=names.get, key="pe_preset", on_change=lab.apply_preset)
st.caption(presets.get(st.session_state.pe_preset).lesson)
st.text_area("Task (the plain prompt)", key="pe_task", height=80, max_chars=prompts.MAX_TASK_CHARS)

c1, c2 = st.columns(2)
with c1.container(border=True):
    st.toggle("Role assignment", key="pe_role_on", help="Tell the model who to be; this becomes the system message.")
    st.text_input("Act as…", key="pe_role", disabled=not st.session_state.pe_role_on, placeholder="a marketing expert")
with c1.container(border=True):
    st.toggle("Few-shot examples", key="pe_fewshot_on", help="Worked examples shown as earlier turns of the chat.")
    st.text_area(
        "One example per line: input => output",
        key="pe_examples",
        height=100,
        disabled=not st.session_state.pe_fewshot_on,
    )
with c1.container(border=True):
    st.toggle(
        "Chain-of-thought",
        key="pe_cot_on",
        help="Ask for step-by-step reasoning and a last line starting with 'Answer:', so the result can be checked.",
    )
with c2.container(border=True):
    st.toggle(
        "Context addition", key="pe_ctx_on", help="Background facts and constraints: tone, audience, length, format."
    )
    off = not st.session_state.pe_ctx_on
    st.text_area("Background facts", key="pe_facts", height=68, disabled=off)
    a, b = st.columns(2)
    a.text_input("Tone", key="pe_tone", disabled=off, placeholder="friendly")
    b.text_input("Audience", key="pe_audience", disabled=off, placeholder="families in the USA")
    a.number_input("Word count (0 = none)", 0, prompts.MAX_WORDS, key="pe_words", step=10, disabled=off)
    b.text_input("Output format", key="pe_format", disabled=off, placeholder="a bulleted list, JSON, a table…")

if not teaching:  # classroom mode hides the sampling knobs: greedy answers, the same on every screen
    with st.expander("Generation settings"):
        g = st.columns(5)
        g[0].number_input("Max new tokens", 1, 2048, key="pe_max_new", help="Longest answer, in tokens.")
        g[1].slider("Temperature", 0.0, 2.0, step=0.1, key="pe_temperature", help="0 = greedy: same answer every time.")
        g[2].slider("Top-p", 0.05, 1.0, step=0.05, key="pe_top_p", help="Used when temperature > 0.")
        g[3].number_input("Seed", 0, 2**31 - 1, key="pe_seed")
        g[4].slider(
            "Repetition penalty",
            1.0,
            2.0,
            step=0.05,
            key="pe_rep",
            help="Small models loop; above 1 makes repeated tokens less likely.",
        )

classroom.publish(lab.PAGE, lab.url_state())
try:
    spec = lab.spec_from_widgets()
    gen = lab.generation_settings()
except FtvpeError as e:
    st.error(markdown.literal(e))
    st.stop()

st.subheader("The assembled prompt")
built = lab.show_prompts(spec, handle, key="pe_token_bar")

ready = handle.state == "ready"
if st.button("▶ Run both", type="primary", disabled=not ready, key="pe_run"):
    cols = st.columns(2)
    holders = {label: col.container(border=True).empty() for col, label in zip(cols, built)}
    try:
        out = lab.run_side_by_side(handle.result, spec, gen, holders)
        lab.record_attempt(spec, gen.__dict__, out)
        st.rerun()
    except FtvpeError as e:
        st.error(markdown.literal(e))
elif not ready:
    st.info("The Run button waits for the model; you can build prompts meanwhile.")

last = st.session_state[lab.LAST]
if last:
    st.subheader("Answers")
    cols = st.columns(2)
    for col, (label, o) in zip(cols, last["outputs"].items()):
        r = o["result"]
        with col.container(border=True):
            st.markdown(f"**{label} prompt**")
            st.text(r["text"] or "(empty answer)")
            st.caption(
                f"{r['prompt_tokens']} prompt tokens · {r['new_tokens']} new · first token "
                f"{r['ttft_s']:.2f} s · {r['tokens_per_s']:.1f} tokens/s"
            )
            st.markdown(lab.check_lines([SimpleNamespace(**c) for c in o["checks"]]))
    tops = {label: [SimpleNamespace(**t) for t in o["top"]] for label, o in last["outputs"].items()}
    st.plotly_chart(figures.next_token_chart(tops), key="pe_next_token")

if st.session_state[lab.ATTEMPTS] and not teaching:
    with st.expander(f"This session's attempts ({len(st.session_state[lab.ATTEMPTS])})"):
        for i, att in enumerate(st.session_state[lab.ATTEMPTS]):
            techniques = ", ".join(att["spec"]["enabled"]) or "none"
            a, b = st.columns([5, 1])
            a.markdown(
                f"`{att['time']}` · techniques: {techniques} · task: {markdown.literal(att['spec']['task'][:60])}"
            )
            b.button("Restore", key=f"pe_restore_{i}", on_click=lab.restore_attempt, args=(i,))
