"""Runs: every fine-tuning run in the store; open one, overlay several, download or delete."""

import streamlit as st

from ftvpe_core.ui import classroom, loaders, markdown, navigation
from ftvpe_core.ui import run_views as views

navigation.through_app()

st.set_page_config(page_title="Runs · FT vs PE Studio", page_icon="📈", layout="wide")
loaders.sidebar()
store = views.store()
views.tick(store)
views.queue_summary(store)

st.title("📈 Runs")
if st.session_state.get("rn_message"):
    st.toast(markdown.literal(st.session_state.pop("rn_message")))
st.caption(
    "Every fine-tuning run on this machine, from any browser session or the command line. Class challenge "
    "fine-tunes are not listed: each learner follows theirs on the 🏆 Challenge page, and only the teacher removes one."
)
classroom.page("pages/6_Runs.py")
classroom.publish("pages/6_Runs.py", {})
runs = views.listed(store)
if not runs:
    st.info("No runs yet. Launch one in the 🛠️ Fine-Tune Lab (or with `python -m ftvpe_core finetune`).")
    st.stop()

st.dataframe(views.table(runs), hide_index=True, key="rn_table")
by_id = {r.id: r for r in runs}
done = [r.id for r in runs if store.metrics(r.id).get("train_loss")]
st.subheader("Compare curves")
st.multiselect("Runs to overlay", done, default=done[:3], key="rn_overlay", format_func=lambda i: views.label(by_id[i]))
st.plotly_chart(views.overlay(store, [by_id[i] for i in st.session_state.rn_overlay]), key="rn_overlay_chart")

st.subheader("Open a run")
st.selectbox("Run", list(by_id), key="rn_open", format_func=lambda i: views.label(by_id[i], False))
run = by_id[st.session_state.rn_open]


@st.fragment(run_every=1.5 if run.active else None)
def details(run_id):
    run = store.get(run_id)
    metrics = store.metrics(run.id)
    views.progress(store, run, metrics)
    if run.active:
        st.button(
            "Cancel", key="rn_cancel", on_click=store.request_cancel, args=(run.id,), disabled=run.cancel_requested
        )
    views.resume(store, run, key="rn_resume")
    if run.status == "complete":
        views.summary(run)
    views.curves(run, metrics, key="rn_curves")
    views.samples(store, run)
    was, st.session_state.rn_seen = st.session_state.get("rn_seen"), (run.id, "active" if run.active else run.status)
    if not run.active and was == (run.id, "active"):
        st.rerun(scope="app")  # it just ended: draw its summary and download


details(run.id)
with st.expander("Settings"):
    st.json(run.settings)
if run.status == "complete":
    views.download(store, run, key="rn_download")
if not run.active:
    c1, c2 = st.columns([1, 3])
    sure = c2.checkbox("Yes, delete this run, its curves and its adapter", key="rn_sure")
    c1.button("🗑️ Delete", key="rn_delete", disabled=not sure, on_click=views.delete, args=(store, run.id))
