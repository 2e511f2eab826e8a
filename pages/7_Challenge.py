"""Challenge (learner): join a class challenge with its code, submit a prompt or a fine-tune within the budget,
and watch each submission's status and score, what went wrong in aggregate, and the leaderboard. Made for a
phone: examples stacked, no tables, large tap targets, Submit right under what it submits."""

import streamlit as st

from ftvpe_core import FtvpeError, figures
from ftvpe_core.teaching import challenges, content, results
from ftvpe_core.ui import challenge_view as view
from ftvpe_core.ui import classroom, loaders, markdown, navigation
from ftvpe_core.ui import run_views as views

navigation.through_app()

st.set_page_config(page_title="Challenge · FT vs PE Studio", page_icon="🏁", layout="wide")
view.init_learner()
loaders.sidebar()
store = views.store()
ss = st.session_state

st.title("🏁 Challenge")
view.phone_style()
classroom.page(view.LEARNER)

if ss.ch_joined is None:
    st.caption(content.CHALLENGE_INTRO)
    view.join_form(store)
    st.stop()

code, name = ss.ch_joined_code, ss.ch_joined
info = view.safely(challenges.public, store, code)
if info is None:
    st.stop()
st.subheader(markdown.literal(info["title"]))
with st.expander("About the task"):  # folded: on a phone the form is what should be near the top
    st.markdown(markdown.literal(info["description"]))
st.markdown(
    f"You are **{markdown.literal(name)}** in challenge **{code}**. Scored by "
    f"**{figures.metric_words(info['metric'])}** on hidden examples · {view.closes_text(info['closes'])}."
)
view.token_note()
view.switch_name()
if not info["open"]:
    st.warning("This challenge is closed: it takes no more submissions. The leaderboard below is final.")
view.training_examples(info)

tabs = st.tabs([f"Submit a {challenges.TRACK_LABELS[t].lower()}" for t in info["tracks"]])
for tab, track in zip(tabs, info["tracks"]):
    with tab:
        if track == "prompt":
            st.caption(
                f"Budget: at most {info['max_prompt_tokens']} tokens added to each input. Each hidden input "
                "becomes the task of your prompt."
            )
            try:
                fields = view.prompt_form()
            except FtvpeError as e:
                fields = None
                st.error(markdown.literal(e))
            if st.button("Submit the prompt", type="primary", key="ch_submit_prompt", disabled=fields is None):
                sid = view.safely(view.submit_prompt, store, code, name, fields, info["model"], loaders.device())
                if sid is not None:
                    views.launch(store, loaders.device())
                    view.submitted(sid, "it is scored on the hidden test in the background")
        else:
            st.caption(
                f"Budget: at most {info['max_train_examples']} training examples and {info['max_steps']} "
                "steps of the quick preset."
            )
            train = challenges.training_examples(store, code)
            steps, examples, lr, rank = view.finetune_form(info, train)
            if st.button("Train and submit", type="primary", key="ch_submit_finetune"):
                sid = view.safely(
                    challenges.submit_finetune, store, code, name, steps, examples, lr, rank, loaders.device()
                )
                if sid is not None:
                    views.launch(store, loaders.device())
                    view.submitted(sid, "it trains, then is scored on the hidden test")


@st.fragment(run_every=2.0)
def live() -> None:
    views.tick(store)
    st.subheader("Your submissions")
    view.history(store, code, results.submissions(store, code, name), info["metric"])
    st.subheader("Leaderboard")
    view.leaderboard(results.leaderboard(store, code), info["metric"])


live()
