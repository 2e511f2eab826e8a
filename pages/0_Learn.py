"""Learn: the lesson in six short sections, each with something to try on the real model."""

import streamlit as st

from ftvpe_core.store import recordings
from ftvpe_core.teaching import classroom as guided
from ftvpe_core.teaching import content, lessons
from ftvpe_core.ui import classroom, loaders, navigation, replay
from ftvpe_core.ui import learn_view as view
from ftvpe_core.ui import run_views as views

navigation.through_app()

st.set_page_config(page_title="Learn · FT vs PE Studio", page_icon="📖", layout="wide")
view.init()
handle = loaders.sidebar()
store = views.store()
S = lessons.SECTIONS_BY_KEY

st.title("📖 Learn: words or weights?")
st.caption(
    "Two ways to make a language model do what you want, in six short sections. Everything you can "
    "switch or press here runs on the model in the sidebar, on this machine."
)
classroom.page(view.PAGE)
classroom.publish(view.PAGE, {})

st.header(S["prompting"].title)
st.markdown(S["prompting"].body)
st.markdown("\n".join(f"- **{name}**: {text}" for name, text in lessons.TECHNIQUES.values()))
st.caption(S["prompting"].try_it)
travel = view.prompt_builder("ln_travel", handle, preset="travel")

st.header(S["finetuning"].title)
st.markdown(S["finetuning"].body)
st.caption(S["finetuning"].try_it)
names = recordings.available()
st.selectbox("Recorded run", names, key="ln_replay_dataset", format_func=lambda n: n.replace("_", " ").capitalize())
replay.show(st.session_state.ln_replay_dataset, key=f"ln_replay_{st.session_state.ln_replay_dataset}")
st.markdown(
    "Train one yourself in the [🛠️ Fine-Tune Lab]"
    f"({guided.link('pages/2_Fine_Tune_Lab.py', {'dataset': st.session_state.ln_replay_dataset})})."
)

st.header(S["weights"].title)
st.markdown(S["weights"].body)
st.caption(S["weights"].try_it)
view.words_vs_weights(store, view.tokens_added(travel))

st.header(S["difference"].title)
st.markdown(S["difference"].body)
st.table(content.COMPARISON, hide_index=True)
st.caption(S["difference"].try_it)
view.measured_table(store)

st.header(S["together"].title)
st.markdown(S["together"].body)
st.caption(S["together"].try_it)
view.prompt_builder("ln_patient", handle, preset="patient")

st.header(S["quiz"].title)
st.markdown(S["quiz"].body)
view.mini_quiz()
