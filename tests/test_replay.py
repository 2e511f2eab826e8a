"""Replaying a recorded run: the frame logic (what a live run showed after a step) and the labelled replay view."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ftvpe_core.store import recordings
from ftvpe_core.store.runs import Run

REPO = Path(__file__).resolve().parent.parent


def _recording(steps: int = 6) -> dict:
    return {
        "dataset": "toy",
        "id": "20261124-000000-abcd",
        "kind": "finetune",
        "status": "complete",
        "created": 1.0,
        "settings": {"preset": "quick"},
        "metrics": {
            "train_loss": [[s, 3.0 - 0.1 * s] for s in range(1, steps + 1)],
            "val_loss": [[s, 2.0 - 0.1 * s] for s in range(2, steps + 1, 2)],
        },
        "samples": [
            {"step": s, "probe": f"probe {i}", "answer": f"answer {i} at {s}"}
            for s in range(2, steps + 1, 2)
            for i in range(2)
        ],
        "summary": {"steps": steps, "train_seconds": 12.5},
        "recorded_with": "python -m ftvpe_core finetune --dataset toy (tiny model, 1-core CPU, 2026-11-24)",
    }


def test_step_zero_shows_no_metrics_and_no_samples():
    now = recordings.frame(_recording(), 0)
    assert now["step"] == 0 and now["total_steps"] == 6 and now["fraction"] == 0
    assert now["metrics"] == {} and now["samples"] == [] and not now["done"] and now["summary"] is None


def test_the_last_step_shows_every_metric_sample_and_the_summary():
    rec = _recording()
    now = recordings.frame(rec, 6)
    assert now["done"] and now["fraction"] == 1.0 and now["summary"] == rec["summary"]
    assert now["metrics"] == {name: [tuple(p) for p in points] for name, points in rec["metrics"].items()}
    assert now["samples"] == rec["samples"]


def test_metrics_and_samples_appear_only_at_their_step():
    rec = _recording()
    now = recordings.frame(rec, 3)
    assert [s for s, _ in now["metrics"]["train_loss"]] == [1, 2, 3]
    assert [s for s, _ in now["metrics"]["val_loss"]] == [2]
    assert recordings.frame(rec, 1)["samples"] == [] and "val_loss" not in recordings.frame(rec, 1)["metrics"]
    assert {s["step"] for s in recordings.frame(rec, 2)["samples"]} == {2}
    assert len(recordings.frame(rec, 3)["samples"]) == 2 and len(recordings.frame(rec, 4)["samples"]) == 4


@pytest.mark.parametrize(("asked", "shown"), [(-5, 0), (99, 6), (6, 6)])
def test_out_of_range_steps_are_clamped(asked, shown):
    now = recordings.frame(_recording(), asked)
    assert now["step"] == shown and now["done"] == (shown == 6)


def test_total_steps_falls_back_on_the_metrics_without_a_summary():
    rec = _recording()
    rec["summary"] = None
    assert recordings.total_steps(rec) == 6
    assert recordings.total_steps({"metrics": {}}) == 0
    assert recordings.frame({"metrics": {}}, 3)["step"] == 0


def test_the_recorded_with_line_is_read_into_command_machine_and_date():
    made = recordings.describe(recordings.load("support_triage"))
    assert made == {
        "command": "python -m ftvpe_core finetune --dataset support_triage --preset quick --json",
        "made_on": "embedded SmolLM2-135M-Instruct, 2-core CPU",
        "date": "2026-11-24",
    }
    assert recordings.describe({}) == {"command": "", "made_on": "", "date": ""}


def test_a_recording_reads_as_a_complete_run_record():
    run = recordings.as_run(recordings.load("support_triage"))
    assert isinstance(run, Run) and run.status == "complete" and run.summary["steps"] == 40


def test_an_unknown_recording_is_a_readable_error():
    from ftvpe_core import FtvpeError

    with pytest.raises(FtvpeError, match="No recorded run"):
        recordings.load("nope")


@pytest.fixture
def replay_app(tmp_path):
    script = tmp_path / "replay_app.py"
    script.write_text("from ftvpe_core.ui import replay\n\nreplay.show('support_triage', 'rp')\n")
    at = AppTest.from_file(str(script), default_timeout=30)
    at.run()
    assert not at.exception
    return at


def _texts(at) -> str:
    return "\n".join(t.value for t in at.text)


def test_the_replay_is_labelled_a_recording_and_starts_paused_at_step_zero(replay_app):
    at = replay_app
    banner = at.info[0].value
    assert "Recording, not live" in banner and "2026-11-24" in banner and "Nothing is training now" in banner
    assert "python -m ftvpe_core finetune --dataset support_triage" in banner and "2-core CPU" in banner
    assert at.session_state["rp_step"] == 0 and not at.session_state["rp_playing"]
    assert at.button(key="rp_play").label == "▶️ Play"
    assert not at.metric  # no summary before the end


def test_play_advances_the_step_on_every_rerun_and_pause_stops_it(replay_app):
    at = replay_app
    at.button(key="rp_play").click().run()
    assert at.session_state["rp_playing"] and at.session_state["rp_step"] == 2
    assert at.button(key="rp_play").label == "⏸️ Pause"
    at.run()  # what the fragment's timer does in the browser
    assert at.session_state["rp_step"] == 4
    at.button(key="rp_play").click().run()
    assert not at.session_state["rp_playing"]
    step = at.session_state["rp_step"]
    at.run()
    assert at.session_state["rp_step"] == step


def test_probe_answers_appear_at_their_step_as_plain_text(replay_app):
    at = replay_app
    rec = recordings.load("support_triage")
    first = [s for s in rec["samples"] if s["step"] == 10]
    at.slider(key="rp_step").set_value(9).run()
    assert first[0]["probe"] not in _texts(at)
    at.slider(key="rp_step").set_value(10).run()
    assert first[0]["probe"] in _texts(at) and first[0]["answer"] in _texts(at)
    assert any("Step 10 of 40" in p.proto.text for p in at.get("progress"))


def test_the_end_shows_the_summary_and_stops_playing(replay_app):
    at = replay_app
    at.session_state["rp_step"] = 38
    at.button(key="rp_play").click().run()
    assert at.session_state["rp_step"] == 40 and not at.session_state["rp_playing"]
    labels = {m.label for m in at.metric}
    assert "Training time" in labels and "Test accuracy (held-out test split)" in labels
    summary = recordings.load("support_triage")["summary"]
    accuracy = next(m for m in at.metric if m.label.startswith("Test accuracy"))
    assert f"{summary['test_accuracy_tuned']:.0%}" in accuracy.value
    assert f"{summary['test_accuracy_base']:.0%}" in accuracy.proto.delta
    assert any("finished" in s.value for s in at.success)
    # Play at the end starts again from the first step; Restart too.
    at.button(key="rp_play").click().run()
    assert at.session_state["rp_step"] == 2 and at.session_state["rp_playing"]
    at.session_state["rp_step"] = 30
    at.button(key="rp_restart").click().run()
    assert at.session_state["rp_step"] == 2


def test_an_unknown_dataset_shows_an_error_instead_of_a_replay(tmp_path):
    script = tmp_path / "replay_missing.py"
    script.write_text("from ftvpe_core.ui import replay\n\nreplay.show('nope', 'rp')\n")
    at = AppTest.from_file(str(script), default_timeout=30).run()
    assert not at.exception and "No recorded run" in at.error[0].value
