"""The Learn page with AppTest on the tiny model: six sections, live prompt builders, the words-vs-weights
picture from a real adapter, the recorded replay, and the three-question check."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from streamlit.testing.v1 import AppTest

from ftvpe_core.teaching import lessons, quiz
from ftvpe_core.ui import learn_view

if TYPE_CHECKING:
    from tests.conftest import TinyApp

pytestmark = pytest.mark.timeout(300)


def _open(app: TinyApp) -> AppTest:
    at = app.page("app.py").run()
    at.switch_page("pages/0_Learn.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _engineered(at: AppTest, prefix: str) -> str:
    """The engineered prompt's coloured HTML (the builder's second box)."""
    boxes = [m.value for m in at.markdown if m.value.startswith('<div style="margin:0 0 .5rem 0">')]
    assert len(boxes) >= 2
    return boxes[1] if prefix == "ln_travel" else boxes[3]


def test_learn_page_has_six_sections_in_order_and_the_comparison_table(tiny_app):
    at = _open(tiny_app)
    headers = [h.value for h in at.header]
    assert headers == [s.title for s in lessons.SECTIONS]
    table = at.table[0].value
    assert list(table["Feature"]) == ["Purpose", "Method", "Difficulty", "Cost", "Speed", "Use case"]
    texts = "\n".join(m.value for m in at.markdown)
    assert "marketing expert" in texts and "Write something about travel." in texts
    assert "[Open this experiment in the ✍️ Prompt Lab](/Prompt_Lab?preset=travel&techniques=role,context)" in texts


def test_switching_a_technique_on_adds_its_text_to_the_engineered_prompt(tiny_app):
    at = _open(tiny_app)
    assert "step by step" not in _engineered(at, "ln_travel")
    at.toggle(key="ln_travel_cot").set_value(True).run()
    assert "step by step" in _engineered(at, "ln_travel")
    assert "techniques=role,cot,context" in "\n".join(m.value for m in at.markdown)
    at.toggle(key="ln_travel_few-shot").set_value(True).run()
    assert "gardening" in _engineered(at, "ln_travel")
    at.toggle(key="ln_patient_context").set_value(False).run()
    assert "130/80" not in _engineered(at, "ln_patient")


def test_words_vs_weights_draws_the_recorded_adapter_with_prompting_all_zero(tiny_app):
    at = _open(tiny_app)
    labels = at.selectbox(key="ln_adapter").options
    assert any("Recorded quick run" in label for label in labels)
    chart = next(c for c in at.get("plotly_chart") if "Prompt engineering" in c.proto.spec)
    assert "Fine-tuning (LoRA)" in chart.proto.spec


def test_the_replay_is_labelled_as_a_recording(tiny_app):
    at = _open(tiny_app)
    texts = "\n".join(m.value for m in at.markdown) + "\n".join(i.value for i in at.info)
    assert "Recording, not live" in texts


def test_the_mini_quiz_scores_three_answers_and_explains_each(tiny_app):
    at = _open(tiny_app)
    keys = lessons.LEARN_QUIZ
    right = {k: quiz.question(k).answer for k in keys}
    at.radio(key=f"ln_q_{keys[0]}").set_value(right[keys[0]])
    wrong = next(a for a in quiz.ANSWERS if a != right[keys[1]])
    at.radio(key=f"ln_q_{keys[1]}").set_value(wrong)
    at.button(key="ln_quiz_check").click().run()
    assert not at.exception
    assert [m for m in at.metric if m.label == "Your score"][0].value == "1 / 3"
    texts = "\n".join(m.value for m in at.markdown)
    assert "✅ Right" in texts and "❌ Not quite" in texts and "⬜ Not answered" in texts
    assert quiz.question(keys[2]).explanation in texts
    assert "(/Quiz)" in texts


def test_adapter_sources_list_complete_runs_before_recordings(tiny_app):
    from ftvpe_core.store.runs import RunStore

    store = RunStore(tiny_app.home)
    done = store.create("finetune", "support_triage", {"dataset_title": "Support triage", "preset": "quick"})
    folder = store.artifact_dir(done)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_model.safetensors").write_bytes(b"")
    store.start(done, 1, "cpu")
    store.finish(done, {"steps": 1})
    store.create("finetune", "support_triage", {})  # queued: no adapter yet
    labels = list(learn_view.adapter_sources(store))
    assert labels[0].startswith(f"Run {done} · Support triage · quick")
    assert learn_view.adapter_sources(store)[labels[0]] == (folder, "embedded")
    assert len([label for label in labels if label.startswith("Run ")]) == 1
