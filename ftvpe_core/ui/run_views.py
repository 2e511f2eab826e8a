"""Views of fine-tuning runs shared by the Fine-Tune Lab and Runs pages: the store, live progress, summaries.

Every session reads the same run store, so a reload, a second tab or a second user sees the same jobs.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import streamlit as st

from ftvpe_core import FtvpeError, figures
from ftvpe_core.jobs import runners
from ftvpe_core.store import runs
from ftvpe_core.store.runs import Run, RunStore
from ftvpe_core.training import finetune, tuning
from ftvpe_core.ui import markdown

STATUS_ICONS = {"queued": "⏳", "running": "🏃", "complete": "✅", "failed": "❌", "cancelled": "⏹️", "interrupted": "⚠️"}


@st.cache_resource(show_spinner=False)
def _store(home: str) -> RunStore:
    # Runs once per server process and data folder: runs left 'running' by a job process that is gone
    # were cut off by the app stopping (a server restart), so they show as interrupted.
    store = RunStore(Path(home))
    store.recover_interrupted()
    return store


def store() -> RunStore:
    """The run store of the data folder (``FTVPE_HOME``), recovered once per server start."""
    from ftvpe_core import settings

    return _store(str(settings.data_home()))


def listed(store: RunStore) -> list[Run]:
    """The fine-tuning runs any browser may open, cancel, resume or delete: every one but a class challenge's.
    A challenge's fine-tune belongs to its learner: the Challenge page follows it and only the teacher (key)
    removes it, so no classmate can stop or delete it from here."""
    return [r for r in store.list("finetune") if not runs.is_challenge_run(r.dataset)]


def tick(store: RunStore) -> None:
    """Mark runs whose job process died as failed, and make sure queued runs have a job process (or the Ray
    dispatcher)."""
    try:
        runners.current().tick(store)
    except FtvpeError as e:
        st.error(markdown.literal(e))


def learner() -> str:
    """This browser session's learner id: queued runs take turns by learner (``schedule``)."""
    return st.session_state.setdefault("ftvpe_learner", "session-" + secrets.token_hex(4))


def launch(store: RunStore, device: str) -> None:
    """Make sure the runner starts what was just queued (a job process here, or the Ray dispatcher)."""
    runners.current().ensure(store, device)


def queue_summary(store: RunStore) -> None:
    """One line for the whole class: where runs train, how many are queued and running, and the free slots."""
    try:
        slots = runners.current().slots(store)
    except FtvpeError as e:
        st.error(markdown.literal(e))
        return
    if slots.error:
        st.error(f"Runs cannot start: {markdown.literal(slots.error)}")
    nodes = f" · nodes: {markdown.literal(', '.join(slots.nodes))}" if slots.nodes else ""
    free = f"{slots.free} free slot(s) of {slots.slots}" if slots.slots else "slots known once a run is sent"
    st.caption(
        f"🖥️ Runs train on {markdown.literal(slots.where)}: {slots.queued} queued · {slots.running} running · "
        f"{free}{nodes}. Queued runs take turns by learner."
    )


def where(run: Run) -> str:
    """'on NODE · DEVICE' once a run has started, else ''."""
    if run.started is None or not run.node:
        return ""
    return f"on {run.node} · {run.device}"


def label(run: Run, status: bool = True) -> str:
    """'<icon> <id> · <dataset> · <preset>'; menus drawn once per page run leave the (changing) status out."""
    preset = finetune.preset_label(run.settings)
    text = f"{run.id} · {run.settings.get('dataset_title', run.dataset)} · {preset}"
    return f"{STATUS_ICONS.get(run.status, '')} {text}" if status else text


def duration(run: Run) -> float | None:
    if run.started is None:
        return None
    return (run.finished or time.time()) - run.started


def progress(store: RunStore, run: Run, metrics: dict) -> None:
    """Status line and progress bar (step, ETA) of one run."""
    total = int(metrics["total_steps"][-1][1]) if metrics.get("total_steps") else None
    step = metrics["train_loss"][-1][0] if metrics.get("train_loss") else 0
    if run.status == "queued":
        queued(store, run)
    elif run.status == "running" and (not step or (total and step >= total)):
        p = run.progress or {"fraction": 0.0, "message": "Starting"}
        st.progress(1.0 if step else 0.0, text=p["message"] + "…")
    elif run.status == "running":
        eta = metrics["eta_s"][-1][1] if metrics.get("eta_s") else None
        eta_text = f" · about {eta:.0f} s left" if eta is not None else ""
        if run.cancel_requested:
            eta_text = " · stopping…"
        st.progress(min(step / total, 1.0) if total else 0.0, text=f"Step {step} of {total or '?'}{eta_text}")
    elif run.status == "complete":
        st.success(
            f"✅ Complete: {run.summary.get('steps', step)} steps in {run.summary.get('train_seconds', 0):.0f} s"
            f" ({run.summary.get('status', 'completed').replace('_', ' ')})."
        )
    elif run.status == "failed":
        st.error(f"❌ Failed: {markdown.literal(run.error)}")
    elif run.status == "cancelled":
        st.warning(f"⏹️ Cancelled at step {step}.")
    else:
        st.warning(f"⚠️ Interrupted at step {step}: {markdown.literal(run.error)}.")
    if run.node == runners.PENDING_NODE and run.status == "running":
        st.caption("📍 Sent to the Ray cluster; waiting for a node")
    elif where(run):
        st.caption(f"📍 {'Training' if run.status == 'running' else 'Trained'} {markdown.literal(where(run))}")


def queued(store: RunStore, run: Run) -> None:
    """A queued run's position in its queue and about when it starts."""
    slots = runners.current().slots(store)
    place = runners.queue_place(store, run, slots)
    if place is None:
        st.info("⏳ Queued.")
        return
    eta = "any moment now" if place.starts_in_s < 1 else f"in about {place.starts_in_s:.0f} s"
    st.info(
        f"⏳ Queued: position {place.position} of {place.of}; it should start {eta} ({slots.slots} run(s) "
        f"train at once on {markdown.literal(slots.where)}; learners take turns)."
    )


def resume(store: RunStore, run: Run, key: str) -> None:
    """A Resume button under an interrupted, failed or cancelled run that has a checkpoint; pressed, the
    run queues again and goes on from the checkpoint's step (the page reruns to follow it)."""
    step = tuning.resume_step(store, run)
    if step is None:
        if run.status in ("interrupted", "failed") and run.kind == "finetune":
            st.caption("It stopped before its first checkpoint (written at each evaluation): launch it again.")
        return
    help_text = (
        "Continue from the checkpoint written at the last evaluation (or where it was stopped): the "
        "adapter, the optimizer and the batch order carry on, so it ends as if it had never stopped."
    )
    if st.button(f"▶️ Resume from step {step}", key=key, type="primary", help=help_text):
        try:
            tuning.resume(store, run.id)
            launch(store, store.get(run.id).device)
        except FtvpeError as e:
            st.error(markdown.literal(e))
            return
        st.rerun(scope="app")


def curves(run: Run, metrics: dict, key: str) -> None:
    total = int(metrics["total_steps"][-1][1]) if metrics.get("total_steps") else None
    marker = finetune.overfit_step(metrics.get("val_loss") or [])
    st.plotly_chart(figures.loss_curves(metrics, total, marker), key=key)
    if marker is not None:
        st.caption(
            f"🔴 The validation loss was lowest at step {marker} and rose after it: the model started to "
            "memorise its training examples instead of learning the task (overfitting)."
        )


def samples(store: RunStore, run: Run) -> None:
    """The probe answers at each evaluation, latest first ("watch it learn")."""
    probe_answers([(s.step, s.probe, s.answer) for s in store.samples(run.id)])


def probe_answers(rows: list[tuple[int, str, str | None]]) -> None:
    """(step, probe, answer) rows: the latest evaluation's answers, earlier ones folded away. A live run and
    a replayed recording show them alike."""
    if not rows:
        st.caption("The three probe prompts are answered at each evaluation; the first answers appear soon.")
        return
    by_step: dict[int, list] = {}
    for step, probe, answer in rows:
        by_step.setdefault(int(step), []).append((probe, answer))
    steps = sorted(by_step, reverse=True)
    st.markdown(f"**Probe answers** (validation prompts the model never trains on), step {steps[0]}:")
    for probe, answer in by_step[steps[0]]:
        c1, c2 = st.columns([2, 3])
        c1.text(probe)
        c2.text(answer or "(empty answer)")
    if len(steps) > 1:
        with st.expander("Earlier steps: watch the answers change"):
            for step in steps[1:]:
                st.markdown(f"*Step {step}*")
                for probe, answer in by_step[step]:
                    st.text(f"{probe[:70]} → {answer or '(empty)'}")


def summary(run: Run) -> None:
    """Time, steps, tokens seen, final losses, accuracy: the run's numbers as metrics."""
    s = run.summary or {}
    cols = st.columns(5)
    cols[0].metric("Training time", f"{s.get('train_seconds', 0):.0f} s")
    cols[1].metric("Steps", s.get("steps", "–"))
    cols[2].metric("Tokens seen", f"{s.get('tokens_seen', 0):,}")
    fmt = lambda v: f"{v:.3f}" if isinstance(v, (int, float)) else "–"  # noqa: E731
    cols[3].metric("Final train loss", fmt(s.get("final_train_loss")))
    cols[4].metric("Best validation loss", fmt(s.get("best_val_loss")), help=f"at step {s.get('best_step')}")
    if "test_accuracy_tuned" in s:
        base, tuned = s.get("test_accuracy_base", 0.0), s["test_accuracy_tuned"]
        st.metric(
            "Test accuracy (held-out test split)", f"{tuned:.0%} tuned", f"{tuned - base:+.0%} vs base {base:.0%}"
        )


def download(store: RunStore, run: Run, key: str) -> None:
    """The adapter as a zip, built when clicked (a few MB)."""
    if run.status != "complete":
        return
    st.download_button(
        "⬇️ Download the adapter (zip)",
        lambda: tuning.adapter_zip(store, run.id),
        file_name=f"adapter-{run.id}.zip",
        mime="application/zip",
        key=key,
        help="adapter_model.safetensors + adapter_config.json (load with peft) and the run's record.",
    )


def table(runs: list[Run]) -> list[dict]:
    """One row per run: dataset, settings, status, duration and final metrics."""
    rows = []
    for r in runs:
        s, summ = r.settings, r.summary or {}
        took = duration(r)
        rows.append(
            {
                "run": r.id,
                "status": f"{STATUS_ICONS.get(r.status, '')} {r.status}",
                "dataset": s.get("dataset_title", r.dataset),
                "preset": finetune.preset_label(s),
                "settings": f"r={s.get('rank')} lr={s.get('learning_rate')} steps={s.get('max_steps') if not s.get('epochs') else str(s.get('epochs')) + ' epochs'}",
                "model": s.get("model"),
                "device": r.device,
                "node": r.node,
                "duration (s)": round(took) if took is not None else None,
                "final train loss": summ.get("final_train_loss"),
                "best val loss": summ.get("best_val_loss"),
                "test accuracy": summ.get("test_accuracy_tuned"),
            }
        )
    return rows


def overlay(store: RunStore, runs: list[Run]):
    return figures.loss_overlay({f"{r.id} ({r.settings.get('preset') or 'custom'})": store.metrics(r.id) for r in runs})


def delete(store: RunStore, run_id: str) -> None:
    """Callback of the Runs page's delete button (before its widgets are drawn again)."""
    try:
        store.delete(run_id)
        st.session_state.rn_message = f"Deleted run {run_id}."
        st.session_state.pop("rn_open", None)
        st.session_state.rn_sure = False
    except FtvpeError as e:
        st.session_state.rn_message = str(e)
