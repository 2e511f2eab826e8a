"""Teacher: pose a class challenge, then project the presenter view (join code, link and QR code, the live
leaderboard and the class's answer to "prompt or fine-tune?") while the controls stay on another view.
Everything past creating one needs the teacher key, which is shown once, alone, before the presenter view."""

import streamlit as st

from ftvpe_core.teaching import challenges, content
from ftvpe_core.ui import challenge_view as view
from ftvpe_core.ui import classroom, loaders, navigation
from ftvpe_core.ui import run_views as views

navigation.through_app()

st.set_page_config(page_title="Teacher · FT vs PE Studio", page_icon="🧑‍🏫", layout="wide")
view.init_teacher()
ss = st.session_state
presenting = ss.th_code is not None and not ss.th_fresh and view.view_switch() == view.PRESENTER
loaders.sidebar()
store = views.store()

if presenting or (ss.th_code is not None and ss.th_fresh):
    # No title, intro or step box: the projector's one screen is the board's, and the key step's box is the
    # page's first element, so the presenter view's first element replaces it at once (Streamlit keeps an
    # element of the last run on the screen until this run draws one in its place).
    teaching = classroom.on()
else:
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
if ss.th_fresh:  # the key alone on the screen: no join code or board beside it, before anything is projected
    if view.key_step(key, code):
        ss.th_fresh, ss.th_view = False, view.PRESENTER
        st.rerun()
    st.stop()

if presenting:
    view.presenter(store, challenge)
else:
    views.tick(store)
    view.controls(store, challenge, key)
