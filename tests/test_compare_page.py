"""The Compare page with AppTest on the tiny model: a comparison runs as a job and its results are drawn."""

from __future__ import annotations

import time

import pytest

from ftvpe_core.jobs import foreground
from ftvpe_core.store.runs import RunStore
from ftvpe_core.training import finetune

PAGE = "pages/4_Compare.py"
pytestmark = pytest.mark.timeout(300)


def _ok(at):
    assert not at.exception, [e.value for e in at.exception]


def test_without_runs_the_page_offers_the_prompt_arms_and_points_to_the_lab(tiny_app):
    at = tiny_app.page(PAGE).run()
    _ok(at)
    assert at.session_state["cp_run"] is None
    assert any("Fine-Tune Lab" in c.value for c in at.caption)
    assert "Run a comparison" in at.info[0].value


def test_a_comparison_runs_as_a_job_and_shows_arms_table_examples_and_report(tiny_app):
    settings = finetune.TrainSettings(max_steps=2, eval_every=2, batch_size=4, max_length=48, max_val_examples=4)
    store = RunStore(tiny_app.home)
    run_id = foreground.finetune("support_triage", settings, str(tiny_app.model), store, measure_accuracy=False)[
        "run_id"
    ]
    at = tiny_app.page(PAGE).run()
    _ok(at)
    assert at.session_state["cp_run"] == run_id  # the newest complete run on the task
    at.number_input(key="cp_limit").set_value(4)
    at.multiselect(key="cp_techniques").set_value(["role", "context"])
    at.run()
    at.button(key="cp_launch").click()
    at.run()
    _ok(at)
    deadline = time.monotonic() + 120
    while not at.get("download_button"):
        assert time.monotonic() < deadline, [w.value for w in at.warning]
        time.sleep(0.5)
        at.run()
        _ok(at)
    assert [m.label for m in at.metric] == [
        "Base, plain prompt",
        "Base + engineered prompt",
        "Fine-tuned",
        "Fine-tuned + prompt",
    ]
    table = at.table[0].value
    assert list(table["Feature"]) == ["Purpose", "Method", "Difficulty", "Cost", "Speed", "Use case"]
    examples = at.dataframe[0].value
    assert len(examples) == 4 and "Fine-tuned + prompt" in examples.columns
    assert all(v[0] in "✅❌" for v in examples["Fine-tuned"])
    assert len(at.dataframe[1].value) == 10  # the forgetting probe
    assert any("Prompt or fine-tune?" in h.value for h in at.subheader)
