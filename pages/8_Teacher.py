"""Teacher: pose a class challenge, show its join code, and put the live leaderboard and the class's answer to
"prompt or fine-tune?" on the projector. Everything past creating one needs the teacher key."""

import streamlit as st

from ftvpe_core import challenges, content, figures, report
from ftvpe_core.ui import challenge_view as view
from ftvpe_core.ui import classroom, loaders, markdown, navigation
from ftvpe_core.ui import run_views as views

navigation.through_app()

st.set_page_config(page_title="Teacher · FT vs PE Studio", page_icon="🧑‍🏫", layout="wide")
view.init_teacher()
loaders.sidebar()
store = views.store()
ss = st.session_state

st.title("🧑‍🏫 Teacher")
st.caption(content.TEACHER_INTRO)
teaching = classroom.page(view.TEACHER)

if ss.th_code is None:
    new, existing = st.tabs(["New challenge", "Open a challenge"])
    with new:
        posed = view.safely(view.create_form, teaching)
        if posed is not None:
            made = view.safely(challenges.create, store, *posed)
            if made is not None:
                (ss.th_code, ss.th_key), ss.th_fresh = made, True
                st.rerun()
    with existing, st.form("th_open"):
        st.text_input("Join code", key="th_open_code", max_chars=12)
        st.text_input("Teacher key", key="th_open_key", type="password")
        if st.form_submit_button("Open"):
            found = view.safely(challenges.check_key, store, ss.th_open_code, ss.th_open_key)
            if found is not None:
                ss.th_code, ss.th_key = found.code, ss.th_open_key
                st.rerun()
    st.stop()

code, key = ss.th_code, ss.th_key
challenge = view.safely(challenges.check_key, store, code, key)
if challenge is None:
    ss.th_code = ss.th_key = None
    st.stop()
if ss.th_fresh:
    with st.container(border=True):
        st.markdown(
            "**Your teacher key, shown only this once.** Keep it to reopen this view, close the "
            "challenge or export its results; only a salted hash of it is stored."
        )
        st.code(key, language=None)
        st.button("I have saved the key", key="th_saved", on_click=lambda: ss.update(th_fresh=False))
view.join_box(code)
st.markdown(f"**{markdown.literal(challenge.title)}** · {view.closes_text(challenge.closes)}")
st.caption(challenges.hidden_source(challenge))

c1, c2, c3, c4 = st.columns(4)
if challenge.open:
    c1.button("Close the challenge", key="th_close", on_click=view.safely, args=(challenges.close, store, code, key))
else:
    c1.button("Reopen for 30 min", key="th_reopen", on_click=view.safely, args=(challenges.reopen, store, code, key))
c2.download_button(
    "Results as CSV", challenges.export_csv(store, code, key), f"challenge-{code}.csv", "text/csv", key="th_csv"
)
if c3.button("Prepare the HTML report", key="th_prepare"):
    ss.th_html = report.challenge_html(challenges.export(store, code, key))
if ss.th_html:
    c3.download_button("Download the report", ss.th_html, f"challenge-{code}.html", "text/html", key="th_report")
c4.button("Lock this view", key="th_lock", on_click=lambda: ss.update(th_code=None, th_key=None, th_fresh=False))

with st.expander("Remove a submission"):
    entries = challenges.submissions(store, code)
    ids = [e["id"] for e in entries]
    labels = {e["id"]: f"{e['id']} · {e['name']} · {e['track']} · {view.pct(e['score'])}" for e in entries}
    chosen = st.selectbox("Submission", ids, key="th_remove_id", format_func=labels.get)
    if st.button("Remove it", key="th_remove", disabled=chosen is None):
        view.safely(challenges.remove_submission, store, code, key, chosen)
        st.rerun()
with st.expander("Reveal the hidden examples (never shown to learners)"):
    if st.toggle("Show them here", key="th_reveal"):
        st.dataframe(challenges.reveal(store, code, key), hide_index=True, width="stretch")


@st.fragment(run_every=3.0)
def live() -> None:
    views.tick(store)
    entries = challenges.submissions(store, code)
    metric = challenge.settings.metric or challenge.data.metric
    st.header("Leaderboard")
    view.leaderboard(challenges.leaderboard(store, code, entries), metric, presenter=True)
    st.header("Prompt or fine-tune?")
    st.plotly_chart(figures.challenge_scores(entries, metric), key="th_chart", width="stretch")
    summary = challenges.track_summary(entries)
    st.dataframe(
        [
            {
                "track": challenges.TRACK_LABELS[t],
                "scored": s["n"],
                "mean": view.pct(s["mean_score"]),
                "best": view.pct(s["best_score"]),
                "prompt tokens added": "–" if s["mean_prompt_tokens"] is None else f"{s['mean_prompt_tokens']:.0f}",
                "training s": "–"
                if t == "prompt" or s["mean_train_seconds"] is None
                else f"{s['mean_train_seconds']:.0f}",
            }
            for t, s in summary.items()
        ],
        hide_index=True,
        width="stretch",
    )
    view.best_side_by_side(challenges.best_pair(store, code))
    st.markdown(
        f"⚖️ [Score the best prompt and the best run in Compare](/Compare?challenge={code}) (the key is asked there)"
    )


live()
