"""The Token Lens page with AppTest on the tiny model: it explains how to get an adapter, reads three conditions
with one, steps through the answer, and shows bad input as an error."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
from streamlit.testing.v1 import AppTest

from ftvpe_core.model import adapters
from ftvpe_core.store.runs import RunStore
from ftvpe_core.studies import lens

if TYPE_CHECKING:
    from tests.conftest import TinyApp

PAGE = "pages/3_Token_Lens.py"
pytestmark = pytest.mark.timeout(300)


def _complete_run(app: TinyApp) -> str:
    """A complete support-triage run in the store whose adapter (random, non-zero) lies in its artifact folder."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    store = RunStore(app.home)
    run_id = store.create(
        "finetune", "support_triage", {"model": str(app.model), "preset": "quick", "dataset_title": "Support triage"}
    )
    store.start(run_id, os.getpid(), "cpu")
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(app.model), config)
    adapters.save(model, store.artifact_dir(run_id))
    store.finish(run_id, {})
    return run_id


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _look(at: AppTest) -> AppTest:
    at.multiselect(key="tl_techniques").set_value(["role", "context"])  # few-shot overflows the tiny context
    at.run()
    at.button(key="tl_look").click()
    at.run()
    _ok(at)
    return at


def test_without_an_adapter_the_page_explains_how_to_get_one_and_reads_the_two_prompts(tiny_app):
    at = tiny_app.page(PAGE).run()
    _ok(at)
    assert at.title[0].value == "🔍 Token Lens"
    assert at.session_state["tl_dataset"] == "support_triage" and at.session_state["tl_adapter"] is None
    assert any("Fine-Tune Lab" in i.value and "about a minute" in i.value for i in at.info)
    assert at.selectbox(key="tl_follow").options == [lens.PLAIN, lens.ENGINEERED, "Reference answer"]
    _look(at)
    data = at.session_state["tl_lens"]
    assert data["labels"] == [lens.PLAIN, lens.ENGINEERED] and data["follow"] == lens.ENGINEERED
    assert len(at.get("plotly_chart")) == 2


def test_with_a_run_the_lens_reads_three_conditions_and_steps_through_the_answer(tiny_app):
    run_id = _complete_run(tiny_app)
    at = tiny_app.page(PAGE).run()
    _ok(at)
    assert at.session_state["tl_adapter"] == run_id  # the newest complete run on the dataset
    assert at.session_state["tl_follow"] == lens.TUNED
    at.selectbox(key="tl_follow").set_value("Reference answer")
    _look(at)
    data = at.session_state["tl_lens"]
    assert data["labels"] == [lens.PLAIN, lens.ENGINEERED, lens.TUNED]
    # The first test example's reference is "technical": one (unknown) word to the tiny tokenizer.
    assert data["follow"] == "Reference answer" and data["answer_tokens"] == ["<unk>"]
    charts = at.get("plotly_chart")
    assert len(charts) == 2 and all(label in charts[0].proto.spec for label in data["labels"])
    assert any(m.value.startswith("At this token the ") for m in at.markdown)
    assert at.session_state["tl_pos"] == 1 and at.button(key="tl_prev").disabled and at.button(key="tl_next").disabled


def test_the_arrows_move_the_position_through_a_greedy_answer(tiny_app):
    _complete_run(tiny_app)
    at = _look(tiny_app.page(PAGE).run())
    n = len(at.session_state["tl_lens"]["answer_ids"])
    assert n > 2 and at.session_state["tl_lens"]["follow"] == lens.TUNED
    at.button(key="tl_next").click()
    at.run()
    _ok(at)
    assert at.session_state["tl_pos"] == 2 and at.slider(key="tl_pos").value == 2
    at.button(key="tl_next").click().run()
    at.button(key="tl_prev").click().run()
    assert at.session_state["tl_pos"] == 2
    at.slider(key="tl_pos").set_value(n).run()
    _ok(at)
    assert at.button(key="tl_next").disabled
    assert f"Token {n} of {n}" in at.get("plotly_chart")[0].proto.spec


def test_model_text_is_escaped_in_the_answer_html():
    from ftvpe_core.ui import lens_view

    html = lens_view.answer_html({"answer_tokens": ["<script>x</script>", " &", "\n"]}, 2)
    assert "<script>" not in html and "&lt;script&gt;" in html and " &amp;" in html and "⏎" in html


def test_empty_own_text_is_an_error_not_an_exception(tiny_app):
    at = tiny_app.page(PAGE).run()
    at.radio(key="tl_source").set_value("Your own text").run()
    assert at.selectbox(key="tl_follow").options == [lens.PLAIN, lens.ENGINEERED]
    at.button(key="tl_look").click().run()
    _ok(at)
    assert any("Write the text" in e.value for e in at.error)
    assert at.session_state["tl_lens"] is None
