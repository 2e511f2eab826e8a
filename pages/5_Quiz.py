"""Quiz: scenarios where prompt engineering, fine-tuning or both is the right call, graded with explanations."""

import streamlit as st

from ftvpe_core import FtvpeError
from ftvpe_core.teaching import quiz
from ftvpe_core.ui import classroom, markdown, navigation

navigation.through_app()

PAGE = "pages/5_Quiz.py"

st.set_page_config(page_title="Quiz · FT vs PE Studio", page_icon="🎓", layout="wide")
ss = st.session_state
ss.setdefault("qz_graded", False)

st.title("🎓 Prompt or fine-tune?")
st.caption(
    f"{len(quiz.QUESTIONS)} situations. For each, pick what you would reach for first; then see why, and "
    "where in the app to try it yourself."
)
classroom.sidebar_toggle()
classroom.page(PAGE)
classroom.publish(PAGE, {})

for n, q in enumerate(quiz.QUESTIONS, 1):
    with st.container(border=True):
        st.markdown(f"**{n}.** {q.scenario}")
        st.radio(
            "Your choice",
            quiz.ANSWERS,
            index=None,
            key=f"qz_{q.key}",
            horizontal=True,
            format_func=quiz.ANSWER_LABELS.get,
            disabled=ss.qz_graded,
            label_visibility="collapsed",
        )
        if ss.qz_graded:
            chosen = ss.get(f"qz_{q.key}")
            verdict = "✅ Right" if chosen == q.answer else ("⬜ Not answered" if chosen is None else "❌ Not quite")
            st.markdown(f"{verdict}: **{quiz.ANSWER_LABELS[q.answer]}**. {q.explanation}")
            page_name = q.page.split("/")[-1].removesuffix(".py").split("_", 1)[1]
            st.caption(f"Try it: [{page_name.replace('_', ' ')}](/{page_name}): {q.page_hint}")

c1, c2 = st.columns([1, 4])
if not ss.qz_graded:
    if c1.button("Check my answers", type="primary", key="qz_check"):
        ss.qz_graded = True
        st.rerun()
else:
    try:
        graded = quiz.grade({q.key: ss.get(f"qz_{q.key}") for q in quiz.QUESTIONS})
    except FtvpeError as e:
        st.error(markdown.literal(e))
        st.stop()
    st.metric("Score", f"{graded.score} / {graded.total}", f"{graded.percent:.0f} %", delta_color="off")
    st.success(graded.summary())

    def restart() -> None:
        ss.qz_graded = False
        for q in quiz.QUESTIONS:
            ss.pop(f"qz_{q.key}", None)

    c1.button("Start again", key="qz_again", on_click=restart)
