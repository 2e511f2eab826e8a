"""Compare: base vs engineered prompt vs fine-tuned vs both, scored on the same held-out task."""

import streamlit as st

from ftvpe_core import FtvpeError
from ftvpe_core.studies import compare
from ftvpe_core.tasks import datasets, prompts
from ftvpe_core.teaching import content
from ftvpe_core.ui import classroom, loaders, markdown, navigation
from ftvpe_core.ui import compare_view as view
from ftvpe_core.ui import run_views as views

navigation.through_app()

st.set_page_config(page_title="Compare · FT vs PE Studio", page_icon="⚖️", layout="wide")
view.init()
loaders.sidebar()
store = views.store()
ss = st.session_state

st.title("⚖️ Compare")
st.caption(content.COMPARE_INTRO)
teaching = classroom.page(view.PAGE, apply=view.apply_url_state)
view.challenge_loader(store)

c1, c2 = st.columns(2)
c1.selectbox(
    "Task (its held-out test split)", datasets.BUILTINS, key="cp_task", format_func=lambda n: loaders.dataset(n).title
)
from_challenge = (ss.cp_challenge or {}).get("run_id")
tuned = [
    r for r in store.list("finetune") if r.status == "complete" and (r.dataset == ss.cp_task or r.id == from_challenge)
]
options = [None] + [r.id for r in tuned]
if "cp_run" not in ss or ss.cp_run not in options:  # first visit or another task: its newest run
    ss.cp_run = options[1] if len(options) > 1 else None
by_id = {r.id: r for r in tuned}
c2.selectbox(
    "Fine-tuned run",
    options,
    key="cp_run",
    format_func=lambda i: "none: compare the prompt arms only" if i is None else views.label(by_id[i]),
    help="A complete run trained on this task in the Fine-Tune Lab.",
)
if not tuned:
    c2.caption("No complete run on this task yet: train one in the 🛠️ Fine-Tune Lab for the tuned arms.")
c1.multiselect(
    "Engineered prompt: techniques",
    prompts.TECHNIQUES,
    key="cp_techniques",
    disabled=ss.cp_best or ss.cp_prompt is not None,
)
if not teaching:  # classroom mode: the whole test split, forgetting probe on, no long studies
    c1.checkbox(
        "Use the ablation's best combination instead",
        key="cp_best",
        help="Scores all 16 combinations on up to 20 examples first, then engineers the prompt arms with the best.",
    )
    c2.number_input("Examples to score (0 = the whole test split)", 0, 10_000, key="cp_limit")
    o1, o2, o3 = st.columns(3)
    o1.checkbox("Forgetting probe", key="cp_forgetting", help="Ten general questions, base vs tuned.")
    o2.checkbox("Technique ablation (16 prompts)", key="cp_ablation", help="Every combination of the four techniques.")
    o3.checkbox(
        "Data efficiency (trains 3 adapters)",
        key="cp_efficiency",
        help="k-shot prompting (k = 0, 1, 2, 4, 8) against LoRA on 10, 50 and all examples. Several minutes.",
    )
classroom.publish(view.PAGE, view.url_state())

if st.button("⚖️ Run the comparison", type="primary", key="cp_launch"):
    try:
        cs = compare.CompareSettings(
            task=ss.cp_task,
            run_id=ss.cp_run,
            techniques=tuple(ss.cp_techniques),
            limit=int(ss.cp_limit),
            model=loaders.choice()["name"],
            forgetting=ss.cp_forgetting,
            ablation=ss.cp_ablation,
            efficiency=ss.cp_efficiency,
            best_techniques=ss.cp_best and ss.cp_prompt is None,
            prompt=ss.cp_prompt,
        )
        device = loaders.device()
        ss.cp_show = compare.submit(cs, store, device, learner=views.learner())
        views.launch(store, device)
    except FtvpeError as e:
        st.error(markdown.literal(e))

runs = store.list("compare")
if not runs:
    st.info("Run a comparison to see the four arms side by side. It runs as a background job: you can leave the page.")
    st.stop()
shown = {r.id: r for r in runs}
if ss.cp_show not in shown:
    ss.cp_show = runs[0].id
st.selectbox("Showing comparison", list(shown)[:30], key="cp_show", format_func=lambda i: views.label(shown[i], False))


@st.fragment(run_every=1.5 if shown[ss.cp_show].active else None)
def progress(run_id):
    views.tick(store)
    views.queue_summary(store)
    run = store.get(run_id)
    if run.status == "queued":
        views.queued(store, run)
    elif run.active:
        p = run.progress or {"fraction": 0.0, "message": "Waiting for a job process"}
        st.progress(p["fraction"], text=p["message"])
    if run.active:
        st.button(
            "Cancel", key="cp_cancel", on_click=store.request_cancel, args=(run.id,), disabled=run.cancel_requested
        )
    was, ss.cp_seen = ss.get("cp_seen"), (run.id, "active" if run.active else run.status)
    if not run.active and was == (run.id, "active"):
        st.rerun(scope="app")  # it just ended: draw the results
    if run.status in ("failed", "cancelled", "interrupted"):
        st.warning(f"This comparison {run.status}" + (f": {markdown.literal(run.error)}" if run.error else "."))


progress(ss.cp_show)
run = store.get(ss.cp_show)
if run.status == "complete":
    try:
        view.show(compare.load_result(store, run.id), key=run.id)
    except FtvpeError as e:
        st.error(markdown.literal(e))
