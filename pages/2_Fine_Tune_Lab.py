"""Fine-Tune Lab: pick data and settings, launch a LoRA job, watch it learn, then talk to the tuned model."""

import streamlit as st

from ftvpe_core import FtvpeError, figures
from ftvpe_core.store import recordings
from ftvpe_core.tasks import datasets
from ftvpe_core.teaching import content
from ftvpe_core.training import finetune, tuning
from ftvpe_core.ui import classroom, loaders, markdown, navigation, replay
from ftvpe_core.ui import finetune_lab as lab
from ftvpe_core.ui import run_views as views

navigation.through_app()

st.set_page_config(page_title="Fine-Tune Lab · FT vs PE Studio", page_icon="🛠️", layout="wide")
lab.init()
handle = loaders.sidebar()
store = views.store()
ss = st.session_state

st.title("🛠️ Fine-Tune Lab")
st.caption(content.FINETUNE_INTRO)
teaching = classroom.page(lab.PAGE, apply=lab.apply_url_state)

st.header("1 · Data")
lab.data_source(teaching)
data = lab.chosen_dataset()
classroom.publish(lab.PAGE, lab.url_state())
if data is None:
    st.info("Upload a file to train on your own examples, or pick a built-in dataset.")
    st.stop()
st.markdown(f"**{markdown.literal(data.title)}** · " + " · ".join(f"{n} {split}" for split, n in data.sizes().items()))
st.caption(markdown.literal(data.description))
c1, c2 = st.columns([3, 2])
c1.dataframe(lab.preview_rows(data), hide_index=True, height=260, key="ft_preview")
if handle.tokenizer is not None:
    c2.plotly_chart(figures.token_length_histogram(lab.lengths(handle.tokenizer, data), ss.ft_max_len), key="ft_hist")
else:
    c2.caption("The token-length histogram appears once the tokenizer has loaded.")

st.header("2 · Settings")
presets = finetune.PRESETS
st.radio(
    "Preset",
    list(presets),
    key="ft_preset",
    format_func=lambda p: presets[p].label,
    horizontal=True,
    on_change=lab.apply_preset,
)
st.caption(presets[ss.ft_preset].about)
if not teaching:  # classroom mode keeps the preset's values
    lab.advanced_settings()
try:
    train_settings = lab.settings_from_widgets()
except FtvpeError as e:
    st.error(f"Fix this setting before launching: {markdown.literal(e)}")
    train_settings = None
if train_settings is not None:
    n_train = min(len(data.splits["train"]), train_settings.max_train_examples or 10**9)
    steps = train_settings.total_steps(n_train)
    st.caption(
        f"{steps} steps × {train_settings.batch_size} examples = {steps * train_settings.batch_size / n_train:.1f} "
        f"passes over {n_train} training examples; validation every {train_settings.eval_every} steps."
    )
    if handle.state == "ready":
        total = handle.result.parameters
        trainable = finetune.lora_parameters(
            handle.result.model.config, train_settings.rank, train_settings.target_modules
        )
        st.plotly_chart(figures.parameter_share(trainable, total + trainable), key="ft_share")

st.header("3 · Train")
if ss.ft_source == lab.SOURCES[0] and ss.ft_dataset in recordings.available():
    with st.expander("🎞️ No time to train? Replay a recorded quick run", expanded=teaching):
        replay.show(ss.ft_dataset, key=f"ft_replay_{ss.ft_dataset}")
choice = loaders.choice()
if st.button("🚀 Launch", type="primary", disabled=train_settings is None, key="ft_launch"):
    try:
        device = loaders.device()
        ss.ft_run = tuning.submit(
            lab.launch_target(),
            train_settings,
            choice["name"],
            device,
            store,
            preset=ss.ft_preset,
            learner=views.learner(),
        )
        views.launch(store, device)
    except FtvpeError as e:
        st.error(markdown.literal(e))
all_runs = views.listed(store)  # a class challenge's fine-tunes are its learners' own
active = [r for r in all_runs if r.active]
by_id = {r.id: r for r in all_runs}
if ss.ft_run not in by_id:  # first visit (or deleted on the Runs page): the running run, else the newest
    ss.ft_run = (active or all_runs)[0].id if all_runs else None
if all_runs:
    st.selectbox("Showing run", list(by_id)[:30], key="ft_run", format_func=lambda i: views.label(by_id[i], False))
run_id = ss.ft_run


try:
    lab.live(store, run_id, bool(active))
except FtvpeError as e:
    st.error(markdown.literal(e))
    st.stop()

if run_id is None or store.get(run_id).status != "complete":
    st.stop()
run = store.get(run_id)
st.header("4 · Talk to it")
views.summary(run)
views.download(store, run, key=f"ft_download_{run.id}")
if handle.state != "ready":
    st.info("The chat waits for the base model to load.")
    st.stop()
if run.settings.get("model") != choice["name"]:
    st.warning(
        f"This run tuned {markdown.literal(run.settings.get('model'))}; the base answers come from the sidebar's "
        f"model, {markdown.literal(choice['name'])}. Pick the same model in the sidebar for a fair comparison."
    )
test = tuning.run_dataset(store, run).splits.get("test") or [datasets.Example("Hello! What can you do?", "")]
st.text_area("Your message (sent to both models)", value=test[0].prompt, key="ft_chat_prompt", max_chars=4000)
if st.button("Ask both", key="ft_ask", type="primary"):
    try:
        with st.spinner("Loading the tuned model and answering…"):
            tuned = loaders.tuned_model(run.settings["model"], run.device, str(store.artifact_dir(run.id)))
            lab.ask_both(handle.result, tuned, run.id, ss.ft_chat_prompt)
    except FtvpeError as e:
        st.error(markdown.literal(e))
lab.show_chat(run.id, handle.result.describe()["dtype"])
