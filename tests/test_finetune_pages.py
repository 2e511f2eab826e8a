"""Fine-Tune Lab and Runs pages with AppTest on the tiny model: data, settings, a real job, chat, runs.

Launching runs a real job process (``python -m ftvpe_core worker``) on the tiny model: a few seconds.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
from streamlit.testing.v1 import AppTest

from ftvpe_core import FtvpeError
from ftvpe_core.jobs import foreground
from ftvpe_core.store.runs import RunStore
from ftvpe_core.tasks import datasets
from ftvpe_core.training import finetune, tuning
from ftvpe_core.ui import finetune_lab as lab
from ftvpe_core.ui import markdown

if TYPE_CHECKING:
    from tests.conftest import TinyApp

LAB = "pages/2_Fine_Tune_Lab.py"
RUNS = "pages/6_Runs.py"

pytestmark = pytest.mark.timeout(300)


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _until(at: AppTest, predicate, what: str, timeout: float = 90.0) -> AppTest:
    deadline = time.monotonic() + timeout
    while True:
        at.run()
        _ok(at)
        if predicate(at):
            return at
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def open_lab(app: TinyApp) -> AppTest:
    """The Fine-Tune Lab once the tiny model is loaded (the parameter-share chart needs it)."""
    at = app.page(LAB)
    return _until(at, lambda a: len(a.get("plotly_chart")) >= 2, "the model to load")


def test_lab_previews_a_builtin_dataset_with_its_lengths_and_lora_share(tiny_app):
    at = open_lab(tiny_app)
    assert at.session_state["ft_dataset"] == "support_triage"
    assert "167 train · 35 validation · 45 test" in at.markdown[0].value
    preview = at.dataframe[0].value
    assert list(preview.columns) == ["prompt", "response"] and len(preview) == 20
    assert set(preview["response"]) <= {"billing", "shipping", "technical", "account"}
    assert not at.error
    at.selectbox(key="ft_dataset").set_value("brand_voice")
    at.run()
    _ok(at)
    assert at.markdown[0].value.startswith(f"**{markdown.literal(datasets.load_builtin('brand_voice').title)}**")


def test_presets_set_every_knob_and_bad_settings_disable_launch(tiny_app):
    at = open_lab(tiny_app)
    assert at.session_state["ft_steps"] == 40 and at.session_state["ft_lr"] == 2e-3
    at.radio(key="ft_preset").set_value("overfit")
    at.run()
    _ok(at)
    assert at.session_state["ft_max_train"] == 8 and at.session_state["ft_restore_best"] is False
    assert at.session_state["ft_targets"] == list(finetune.TARGET_MODULES)
    assert "memorises" in " ".join(c.value for c in at.caption)
    at.number_input(key="ft_max_len").set_value(4)
    at.run()
    _ok(at)
    assert any("maximum length must be between 16" in e.value for e in at.error)
    assert at.button(key="ft_launch").disabled
    at.multiselect(key="ft_targets").set_value([])
    at.number_input(key="ft_max_len").set_value(128)
    at.run()
    assert any("Pick at least one layer" in e.value for e in at.error)


@pytest.mark.parametrize(
    "key, value, limit",
    [
        ("ft_lr", 1e9, "The learning rate must be between 0.000001 and 0.1, got 1000000000.0"),
        ("ft_lr", -0.001, "The learning rate must be between 0.000001 and 0.1, got -0.001"),
        ("ft_rank", 4096, "The LoRA rank must be between 1 and 256, got 4096"),
        ("ft_batch", 0, "The batch size must be between 1 and 256, got 0"),
        ("ft_dropout", 1.5, "LoRA dropout must be between 0 and 0.9, got 1.5"),
        ("ft_steps", 50_000, "Steps must be between 1 and 20,000, got 50000"),
    ],
)
def test_a_knob_beyond_its_limit_is_kept_as_typed_and_named_with_the_limit(tiny_app, key, value, limit):
    """No box clamps a value back silently: the page says which limit it breaks, and Launch waits."""
    at = open_lab(tiny_app)
    at.number_input(key=key).set_value(value)
    at.run()
    _ok(at)
    assert at.session_state[key] == value
    assert [e.value for e in at.error] == [f"Fix this setting before launching: {markdown.literal(limit + '.')}"]
    assert at.button(key="ft_launch").disabled


def test_every_knob_states_its_limits_and_they_are_train_settings_own():
    for name in lab.LIMITS:
        low, high = lab.LIMITS[name]
        text = lab.limit_text(name)
        assert _number_words(low) in text and (high is None or _number_words(high) in text), text
        base = {"epochs": 0.0} if name == "max_steps" else {}
        step = 1 if isinstance(low, int) else 1e-9
        if name not in lab.ABOVE_LOWEST:
            finetune.TrainSettings(**base, **{name: low})
        with pytest.raises(FtvpeError):
            finetune.TrainSettings(**base, **{name: low if name in lab.ABOVE_LOWEST else low - step})
        if high is not None:
            finetune.TrainSettings(**base, **{name: high})
            with pytest.raises(FtvpeError):
                finetune.TrainSettings(**base, **{name: high + step})
        else:
            finetune.TrainSettings(**base, **{name: 10**9})


def _number_words(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:.10f}".rstrip("0").rstrip(".")


def test_the_advanced_boxes_show_their_limits_beside_them(tiny_app):
    at = open_lab(tiny_app)
    helps = {n.key: n.help for n in at.number_input}
    for key, name in lab.KEYS.items():
        if name in lab.LIMITS:
            assert helps[key].endswith(lab.limit_text(name)), (key, helps[key])
    assert helps["ft_lr"].endswith("Between 0.000001 and 0.1.") and helps["ft_rank"].endswith("Between 1 and 256.")
    assert helps["ft_alpha"].endswith("Above 0, at most 4096.") and helps["ft_seed"].endswith("0 or more.")


def test_an_upload_error_lists_its_problems_and_keeps_the_previous_upload(tiny_app):
    at = tiny_app.page(LAB)
    good = datasets.load_builtin("support_triage")
    good.name, good.title = "mine", "My tickets"
    at.session_state[lab.UPLOADED] = good
    at.session_state[lab.UPLOAD_ERROR] = {
        "summary": "bad.jsonl was not loaded: line 3: not JSON.",
        "problems": ["line 3: not JSON"],
    }
    at.session_state["ft_source"] = lab.SOURCES[1]
    at.run()
    _ok(at)
    assert [e.value for e in at.error] == [markdown.literal("bad.jsonl was not loaded: line 3: not JSON.")]
    assert "Still using your previous upload, My tickets." in [c.value for c in at.caption]
    assert f"- {markdown.literal('line 3: not JSON')}" in [m.value for m in at.markdown]
    assert "My tickets" in at.markdown[1].value  # the preview is still the previous upload


def test_an_upload_whose_name_is_markdown_is_named_literally(tiny_app):
    name = "[Sign in again](http://example.invalid) ![x](http://example.invalid/p.png) <b>x</b>"
    rows = "".join(f'{{"prompt": "Question {i}?", "response": "answer {i}"}}\n' for i in range(12))
    with pytest.raises(datasets.UploadError) as bad:
        datasets.parse_upload(b'{"prompt": "broken"\n', f"{name}.jsonl")
    at = tiny_app.page(LAB)
    at.session_state[lab.UPLOADED] = datasets.parse_upload(rows.encode(), f"{name}.csv.jsonl")
    at.session_state[lab.UPLOAD_ERROR] = {"summary": str(bad.value), "problems": bad.value.shown()}
    at.session_state["ft_source"] = lab.SOURCES[1]
    at.run()
    _ok(at)
    shown = [e.value for e in at.error] + [c.value for c in at.caption] + [m.value for m in at.markdown]
    assert markdown.literal(f"{name}.jsonl was not loaded") in shown[0]
    assert any(markdown.literal(f"{name}.csv") in s for s in shown[1:])  # the previous upload's title
    for s in shown:
        assert "](" not in s and "<b>" not in s, s


def launch_small_run(app: TinyApp) -> tuple[AppTest, str]:
    """The Fine-Tune Lab with a 4-step run launched (evaluations at steps 2 and 4); the page and the run's id."""
    at = open_lab(app)
    at.number_input(key="ft_steps").set_value(4)
    at.number_input(key="ft_eval_every").set_value(2)
    at.number_input(key="ft_max_val").set_value(4)
    at.run()
    at.button(key="ft_launch").click()
    at.run()
    _ok(at)
    return at, at.session_state["ft_run"]


def test_launch_trains_in_a_job_process_then_the_chat_answers_with_both_models(tiny_app):
    at, run_id = launch_small_run(tiny_app)
    assert run_id
    at = _until(at, lambda a: any("Complete" in s.value for s in a.success), "the run to complete")
    store = RunStore(tiny_app.home)
    run = store.get(run_id)
    assert run.status == "complete" and run.settings["max_steps"] == 4
    assert run.settings["preset"] == "custom"  # the quick preset with its steps changed is no longer 'quick'
    assert run.settings["dataset_source"] == "builtin"  # a built-in is queued by name, not saved as an upload
    assert [s for s, _ in store.metrics(run_id)["val_loss"]] == [2, 4]
    assert len({s.probe for s in store.samples(run_id)}) == 3
    assert any(m.label == "Steps" and m.value == "4" for m in at.metric)
    assert at.get("download_button")

    at.button(key="ft_ask").click()
    at.run()
    _ok(at)
    chat = at.session_state[lab.CHATS][run_id]
    assert len(chat) == 1 and chat[0]["prompt"] == datasets.load_builtin("support_triage").splits["test"][0].prompt
    shown = [t.value for t in at.text]
    assert chat[0]["base"] in shown and chat[0]["tuned"] in shown


def test_a_second_session_sees_the_running_job_and_can_cancel_it(tiny_app):
    store = RunStore(tiny_app.home)
    run_id = tuning.submit(
        "support_triage",
        finetune.TrainSettings(max_steps=5000, eval_every=1000, batch_size=2, max_length=32),
        str(tiny_app.model),
        "cpu",
        store,
    )
    from ftvpe_core.jobs import worker

    worker.ensure_worker(store, "cpu")
    at = _until(
        tiny_app.page(LAB),
        lambda a: (
            any("Step" in getattr(p, "text", "") for p in a.get("progress"))
            or any(b.key == f"ft_cancel_{run_id}" for b in a.button)
            and store.metrics(run_id).get("train_loss")
        ),
        "the running job to show",
    )
    at.button(key=f"ft_cancel_{run_id}").click()
    at.run()
    _ok(at)
    deadline = time.monotonic() + 60
    while store.get(run_id).status == "running":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert store.get(run_id).status == "cancelled"
    at = _until(at, lambda a: any("Cancelled" in w.value for w in a.warning), "the cancelled status")


def _finished_run(app: TinyApp, **overrides) -> str:
    settings = finetune.TrainSettings(
        **{"max_steps": 3, "eval_every": 1, "batch_size": 4, "max_length": 48, "max_val_examples": 4, **overrides}
    )
    return foreground.finetune("support_triage", settings, str(app.model), RunStore(app.home), measure_accuracy=False)[
        "run_id"
    ]


def test_runs_page_lists_overlays_opens_and_deletes_runs(tiny_app):
    first = _finished_run(tiny_app)
    second = _finished_run(tiny_app, learning_rate=0.05)
    at = tiny_app.page(RUNS).run()
    _ok(at)
    table = at.dataframe[0].value
    assert list(table["run"]) == [second, first] and set(table["status"]) == {"✅ complete"}
    assert at.session_state["rn_overlay"] == [second, first]
    overlay = at.get("plotly_chart")[0]
    assert overlay.proto.spec.count(second) >= 2 and overlay.proto.spec.count(first) >= 2
    assert at.session_state["rn_open"] == second
    assert at.button(key="rn_delete").disabled
    at.checkbox(key="rn_sure").check()
    at.run()
    at.button(key="rn_delete").click()
    at.run()
    _ok(at)
    assert [r.id for r in RunStore(tiny_app.home).list()] == [first]
    assert list(at.dataframe[0].value["run"]) == [first]


def test_runs_page_without_runs_points_to_the_lab(tiny_app):
    at = tiny_app.page(RUNS).run()
    _ok(at)
    assert "No runs yet" in at.info[0].value and "Fine-Tune Lab" in at.info[0].value


def test_after_a_server_restart_a_run_left_running_shows_as_interrupted(tiny_app):
    store = RunStore(tiny_app.home)
    kept = _finished_run(tiny_app)
    cut = tuning.submit("support_triage", finetune.TrainSettings(), str(tiny_app.model), "cpu", store)
    store.claim("cpu", 2**22 + 12345)  # a job process id that no longer exists: the old server's
    queued = tuning.submit("support_triage", finetune.TrainSettings(), str(tiny_app.model), "cuda", store)
    at = tiny_app.page(RUNS).run()  # the first page of the new server
    _ok(at)
    assert store.get(cut).status == "interrupted" and "app stopped" in store.get(cut).error
    assert store.get(kept).status == "complete" and store.get(queued).status == "queued"
    assert "⚠️ interrupted" in list(at.dataframe[0].value["status"])


def _interrupted_run(app: TinyApp, stop_after: int) -> str:
    store = RunStore(app.home)
    settings = finetune.TrainSettings(max_steps=9, eval_every=3, batch_size=4, max_length=48, max_val_examples=4)
    run_id = tuning.submit("support_triage", settings, str(app.model), "cpu", store)
    store.start(run_id, 1, "cpu")
    events = []

    def step(event):  # the run's events: its phases' messages and its steps; count the steps
        if "step" in event:
            events.append(event)

    stopped = tuning.execute(
        store, run_id, interrupted=lambda: len(events) >= stop_after, on_event=step, measure_accuracy=False
    )
    assert stopped["status"] == "interrupted"
    return run_id


@pytest.mark.parametrize("page", ["lab", "runs"])
def test_an_interrupted_run_offers_resume_and_finishes_from_where_it_stopped(tiny_app, page):
    run_id = _interrupted_run(tiny_app, stop_after=4)
    store = RunStore(tiny_app.home)
    key = "ft_resume_" + run_id if page == "lab" else "rn_resume"
    at = open_lab(tiny_app) if page == "lab" else tiny_app.page(RUNS).run()
    _ok(at)
    assert any("Interrupted at step 4" in w.value for w in at.warning)
    button = at.button(key=key)
    assert button.label == "▶️ Resume from step 4"
    button.click()
    at.run()
    _ok(at)
    _until(at, lambda a: store.get(run_id).status == "complete", "the resumed run to finish")
    assert [s for s, _ in store.metrics(run_id)["train_loss"]] == list(range(1, 10))
    assert not any(b.key == key for b in at.button)  # a complete run has nothing to resume


def test_a_run_stopped_before_its_first_checkpoint_says_to_launch_it_again(tiny_app):
    run_id = _interrupted_run(tiny_app, stop_after=0)
    at = tiny_app.page(RUNS).run()
    _ok(at)
    assert not any(b.key == "rn_resume" for b in at.button)
    assert any("before its first checkpoint" in c.value for c in at.caption)
    assert RunStore(tiny_app.home).get(run_id).status == "interrupted"
