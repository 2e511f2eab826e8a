"""Replay of a recorded quick-demo run (``assets/recordings/``), animated like a live run and always labelled.

The replay advances a step counter kept in session state from a ``st.fragment`` that reruns itself every
``TICK_SECONDS`` while playing: nothing trains, the curves and probe answers come from the recording
(``recordings.frame``). The timer only runs while playing; Play, Pause and Restart rerun the whole script so
the fragment is declared again with or without it.
"""

from __future__ import annotations

import streamlit as st

from ftvpe_core import FtvpeError, figures
from ftvpe_core.store import recordings
from ftvpe_core.training import finetune
from ftvpe_core.ui import markdown, run_views

TICK_SECONDS = 0.5
STEPS_PER_TICK = 2


def banner(recording: dict) -> str:
    """The label every replay carries: a recording, when and how it was made, and that nothing trains now."""
    made = recordings.describe(recording)
    when = f" on {made['date']}" if made["date"] else ""
    command = f" with `{made['command']}`" if made["command"] else ""
    machine = f" ({made['made_on']})" if made["made_on"] else ""
    return f"🎞️ **Recording, not live**: made{when}{command}{machine}. Nothing is training now."


def _toggle(key: str, total: int) -> None:
    playing = not st.session_state[f"{key}_playing"]
    if playing and st.session_state[f"{key}_step"] >= total:
        st.session_state[f"{key}_step"] = 0  # Play at the end starts over
    st.session_state[f"{key}_playing"] = playing


def _restart(key: str) -> None:
    st.session_state[f"{key}_step"] = 0
    st.session_state[f"{key}_playing"] = True


def show(dataset: str, key: str) -> None:
    """Draw the replay of ``dataset``'s recorded run; widget and state keys start with ``key``."""
    try:
        recording = recordings.load(dataset)
    except FtvpeError as e:
        st.error(markdown.literal(e))
        return
    total = recordings.total_steps(recording)
    step_key, playing_key = f"{key}_step", f"{key}_playing"
    st.session_state.setdefault(step_key, 0)
    st.session_state.setdefault(playing_key, False)
    st.info(banner(recording))

    playing = st.session_state[playing_key]
    c1, c2, _ = st.columns([1, 1, 4])
    c1.button(
        "⏸️ Pause" if playing else "▶️ Play",
        key=f"{key}_play",
        on_click=_toggle,
        args=(key, total),
        help="Play the recorded run back, step by step, at about 4 steps a second.",
    )
    c2.button("⏮️ Restart", key=f"{key}_restart", on_click=_restart, args=(key,))

    @st.fragment(run_every=TICK_SECONDS if playing else None)
    def player() -> None:
        if st.session_state[playing_key]:
            st.session_state[step_key] = min(int(st.session_state[step_key]) + STEPS_PER_TICK, total)
        step = st.session_state[step_key]
        st.slider(
            "Recorded step",
            0,
            max(total, 1),
            key=step_key,
            disabled=total == 0,
            help="Drag to any step of the recorded run.",
        )
        now = recordings.frame(recording, step)
        st.progress(now["fraction"], text=f"Step {now['step']} of {now['total_steps']} (recorded)")
        marker = finetune.overfit_step(now["metrics"].get("val_loss") or [])
        st.plotly_chart(
            figures.loss_curves(now["metrics"], total, marker, title="Training and validation loss (recorded run)"),
            key=f"{key}_curves",
        )
        run_views.probe_answers([(x["step"], x["probe"], x.get("answer")) for x in now["samples"]])
        if now["done"]:
            summary = now["summary"] or {}
            st.success(
                f"✅ The recorded run finished: {summary.get('steps', total)} steps in "
                f"{summary.get('train_seconds', 0):.0f} s of training on the machine that recorded it."
            )
            run_views.summary(recordings.as_run(recording))
        if st.session_state[playing_key] and now["done"]:
            # Reached the end: stop, and rerun the whole script so the fragment loses its timer.
            st.session_state[playing_key] = False
            st.rerun()

    player()
