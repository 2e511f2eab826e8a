"""Classroom mode in the pages: the switch, larger type, the guided step box, and the experiment kept in the URL.

Each page calls ``page(...)`` at its top (before its widgets) and ``publish(...)`` after them. A link's
experiment is applied once per session (a shared link, or a guided step's Back/Next the first time), so
going back to a step never throws away what a student changed there; the address bar always shows the
current experiment, so copying it shares it.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from ftvpe_core.teaching import classroom
from ftvpe_core.ui import markdown

ON = "cl_on"
TOGGLE = "cl_toggle"
SEEN_PARAM = "cl_seen_param"
APPLIED = "cl_applied"
PROBLEMS = "cl_problems"

CSS = """<style>
html { font-size: 125%; }
[data-testid="stSidebar"] { font-size: 0.9rem; }
h1 { font-size: 2.6rem !important; }
[data-testid="stMarkdownContainer"] p, [data-testid="stMarkdownContainer"] li { font-size: 1.1rem; line-height: 1.55; }
</style>"""


def _sync_mode() -> None:
    """Classroom mode from the URL: a link with ``classroom=1`` switches it on in this session."""
    ss = st.session_state
    param = classroom.is_on(st.query_params.get(classroom.CLASSROOM))
    if ON not in ss:
        ss[ON] = param
    elif param and not ss.get(SEEN_PARAM):
        ss[ON] = True  # a classroom link followed inside a running session
    ss[SEEN_PARAM] = param


def on() -> bool:
    """Whether classroom mode is on in this session (a link with ``classroom=1`` switches it on)."""
    _sync_mode()
    return bool(st.session_state[ON])


def _toggled() -> None:
    st.session_state[ON] = st.session_state[TOGGLE]


def sidebar_toggle() -> None:
    """The switch, at the top of the sidebar."""
    st.session_state[TOGGLE] = on()  # a widget's value survives page changes only through session state
    st.sidebar.toggle(
        "🏫 Classroom mode",
        key=TOGGLE,
        on_change=_toggled,
        help="Larger type, fewer controls, and a guided sequence of steps through the demo. "
        "Add ?classroom=1 to a link to open it this way.",
    )


def page(path: str, apply: Callable[[dict], None] | None = None) -> bool:
    """Top of a page: read the mode and the URL's experiment, style the page, draw the step box.

    Args:
        path: this page's file, relative to the app folder (``pages/1_Prompt_Lab.py``; ``home.py`` for Home).
        apply: sets this page's widgets' session state from a decoded experiment state (called before any
            widget is drawn, only when the URL carries a state not applied before in this session).
    Returns:
        whether classroom mode is on.
    """
    _sync_mode()
    ss = st.session_state
    applied = ss.setdefault(APPLIED, set())
    state, problems = classroom.decode(st.query_params.to_dict())
    signature = _signature(path, state)
    if (state or problems) and signature not in applied:
        applied.add(signature)
        if apply is not None and state:
            apply(state)
        ss[PROBLEMS] = problems
    for problem in ss.pop(PROBLEMS, []):
        st.warning(markdown.literal(problem))  # it quotes the link's values
    if ss[ON]:
        st.markdown(CSS, unsafe_allow_html=True)  # our own style sheet; no user or model text in it
        guide(path)
    return bool(ss[ON])


def publish(path: str, state: dict) -> None:
    """Write this page's experiment into the URL (after the widgets): reloading or sharing the address
    reopens it. A state published here is not re-applied when the same address comes back."""
    params = classroom.encode(state, classroom=on(), step=_step_param(path))
    st.session_state[SEEN_PARAM] = on()  # our own write: not a link that switches the mode on
    st.session_state.setdefault(APPLIED, set()).add(_signature(path, state))
    if st.query_params.to_dict() != params:
        if params:
            st.query_params.from_dict(params)
        else:
            st.query_params.clear()  # from_dict({}) would not tell the browser


def _signature(path: str, state: dict) -> tuple:
    """A page's experiment as a hashable value: what ``APPLIED`` remembers."""
    return path, tuple(sorted(classroom.encode(state).items()))


def _step_param(path: str) -> int | None:
    if not on():
        return None
    n = classroom.step_index(path, st.query_params.get(classroom.STEP))
    return None if n is None else n + 1


def _step_link(n: int, label: str) -> None:
    step = classroom.STEPS[n]
    st.page_link(step.page, label=label, query_params=classroom.encode(step.state, classroom=True, step=n + 1))


def guide(path: str) -> None:
    """The guided sequence's box for this page: step k of N, what to do, Back and Next."""
    n = classroom.step_index(path, st.query_params.get(classroom.STEP))
    steps = classroom.STEPS
    with st.container(border=True, key="cl_guide"):
        if n is None:
            st.markdown(
                f"**Classroom mode is on.** The guided demo has {len(steps)} steps, from the lesson to the quiz."
            )
            _step_link(0, f"Start the guided demo: 1 · {steps[0].title} ▶")
            return
        st.markdown(f"**Step {n + 1} of {len(steps)} · {steps[n].title}**")
        st.progress((n + 1) / len(steps))
        st.markdown(steps[n].say)
        back, _, forward = st.columns([2, 1, 2])
        with back:
            if n > 0:
                _step_link(n - 1, f"◀ Back: {steps[n - 1].title}")
        with forward:
            if n + 1 < len(steps):
                _step_link(n + 1, f"Next: {steps[n + 1].title} ▶")
            else:
                st.markdown("🎉 **That is the whole demo.**")
