"""Classroom mode: the guided steps, experiment state <-> URL query parameters, and the pages restoring it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from streamlit.testing.v1 import AppTest

from ftvpe_core.tasks import datasets, presets, prompts
from ftvpe_core.teaching import classroom
from ftvpe_core.training import finetune
from ftvpe_core.ui import markdown

if TYPE_CHECKING:
    from tests.conftest import TinyApp

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(300)


# The core: decode, encode, links, steps


def test_decode_keeps_valid_values_and_names_each_bad_one():
    state, problems = classroom.decode(
        {
            "preset": "skincare",
            "techniques": "context,role",
            "dataset": "brand-voice",
            "train": "overfit",
            "task": "Write a haiku.",
        }
    )
    assert state == {
        "preset": "skincare",
        "techniques": ["role", "context"],
        "dataset": "brand_voice",
        "train": "overfit",
        "task": "Write a haiku.",
    }
    assert problems == []
    state, problems = classroom.decode({"preset": "nope", "techniques": "role,magic", "dataset": "x", "train": "y"})
    assert state == {"techniques": ["role"]}
    assert len(problems) == 4
    assert "'nope'" in problems[0] and "travel" in problems[0]
    assert "magic" in problems[1] and "few-shot" in problems[1]
    assert "'x'" in problems[2] and "support_triage" in problems[2]
    assert "'y'" in problems[3] and "quick" in problems[3]


def test_decode_refuses_an_empty_or_oversized_task_and_reads_the_last_of_repeated_values():
    assert classroom.decode({"task": "  "})[0] == {}
    state, problems = classroom.decode({"task": "x" * (prompts.MAX_TASK_CHARS + 1)})
    assert state == {} and "more than" in problems[0]
    assert classroom.decode({"preset": ["travel", "json"]})[0] == {"preset": "json"}


def test_encode_then_decode_gives_the_state_back_and_empty_techniques_survive():
    state = {
        "preset": "triage",
        "techniques": ["few-shot", "context"],
        "task": "Route this: refund?",
        "dataset": "domain_knowledge",
        "train": "thorough",
    }
    assert classroom.decode(classroom.encode(state)) == (state, [])
    assert classroom.encode({"techniques": []}) == {"techniques": ""}
    assert classroom.decode({"techniques": ""}) == ({"techniques": []}, [])
    assert classroom.encode({"preset": "travel", "task": ""}) == {"preset": "travel"}


def test_links_open_a_page_by_its_url_path_with_the_experiment():
    assert classroom.url_path("pages/1_Prompt_Lab.py") == "Prompt_Lab"
    assert classroom.url_path("pages/2_Fine_Tune_Lab.py") == "Fine_Tune_Lab"
    assert (
        classroom.link(
            "pages/1_Prompt_Lab.py", {"preset": "travel", "techniques": ["context", "role"]}, classroom=True, step=2
        )
        == "/Prompt_Lab?classroom=1&step=2&preset=travel&techniques=role,context"
    )
    assert classroom.link("pages/5_Quiz.py") == "/Quiz"
    assert classroom.link("pages/1_Prompt_Lab.py", {"task": "a & b"}).endswith("task=a+%26+b")


def test_every_guided_step_names_a_page_that_exists_and_a_state_that_decodes():
    pages = [s.page for s in classroom.STEPS]
    assert pages[0] == "pages/0_Learn.py" and pages[-1] == "pages/5_Quiz.py"
    for step in classroom.STEPS:
        assert (REPO / step.page).is_file(), step.page
        assert step.title and step.say
        state, problems = classroom.decode(classroom.encode(step.state))
        assert problems == [] and state.keys() == step.state.keys()
    lab_step = next(s for s in classroom.STEPS if s.page == "pages/1_Prompt_Lab.py")
    assert lab_step.state["preset"] in presets.PRESETS_BY_KEY
    ft_step = next(s for s in classroom.STEPS if s.page == "pages/2_Fine_Tune_Lab.py")
    assert ft_step.state["dataset"] in datasets.BUILTINS and ft_step.state["train"] in finetune.PRESETS


def test_step_index_follows_the_step_parameter_only_on_its_own_page():
    lab = "pages/1_Prompt_Lab.py"
    assert classroom.step_index(lab, None) == 1
    assert classroom.step_index(lab, "2") == 1
    assert classroom.step_index(lab, "5") == 1  # step 5 is another page's: this page's own step
    assert classroom.step_index(lab, "x") == 1
    assert classroom.step_index("pages/6_Runs.py", "1") is None
    assert classroom.is_on("1") and classroom.is_on("True") and not classroom.is_on("0") and not classroom.is_on(None)


# The pages: AppTest runs app.py and switches page, as the browser does (page links resolve from app.py)


def _open(app: TinyApp, page: str, params: dict) -> AppTest:
    at = app.page("app.py").run()
    at.switch_page(page)
    at.query_params = dict(params)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_a_prompt_lab_link_opens_its_experiment_in_classroom_mode(tiny_app):
    at = _open(
        tiny_app,
        "pages/1_Prompt_Lab.py",
        {"classroom": "1", "step": "2", "preset": "skincare", "techniques": "role", "task": "Sell socks."},
    )
    ss = at.session_state
    assert ss.pe_preset == "skincare" and ss.pe_role == presets.get("skincare").spec.role
    assert ss.pe_role_on and not ss.pe_ctx_on and ss.pe_task == "Sell socks."
    texts = _texts(at)
    assert "**Step 2 of 6 · Change the words**" in texts and "font-size: 125%" in texts
    assert not [e for e in at.expander if "Generation settings" in e.label]  # advanced knobs hidden
    assert not [t for t in at.text_input if t.key == "sb_model_name"]  # so is the model picker


def test_a_student_change_shows_in_the_url_and_the_same_link_does_not_undo_it(tiny_app):
    link = {"classroom": "1", "preset": "travel", "techniques": "role,context"}
    at = _open(tiny_app, "pages/1_Prompt_Lab.py", link)
    at.toggle(key="pe_cot_on").set_value(True).run()
    assert at.query_params["techniques"] == "role,cot,context" and at.query_params["preset"] == "travel"
    at.query_params = dict(link)  # Back to this step later, or the same link clicked again
    at.run()
    assert at.session_state.pe_cot_on
    at.query_params = {**link, "preset": "json", "techniques": "context"}  # a different experiment applies
    at.run()
    assert at.session_state.pe_preset == "json" and not at.session_state.pe_cot_on


def test_a_bad_link_warns_and_still_opens_the_page(tiny_app):
    at = _open(tiny_app, "pages/1_Prompt_Lab.py", {"preset": "nope", "techniques": "role,magic"})
    warnings = " ".join(w.value for w in at.warning)
    assert "'nope'" in warnings and "magic" in warnings
    assert at.session_state.pe_preset == "travel" and at.session_state.pe_role_on
    assert [e for e in at.expander if "Generation settings" in e.label]  # not classroom: knobs shown


CRAFTED_LINK = {
    "preset": "[Sign in again](http://example.invalid/login)",
    "techniques": "![x](http://example.invalid/pixel.png)",
    "dataset": "<a href='http://example.invalid'>x</a>",
    "train": "**bold** `code` # heading",
}
"""A link made to phish: every value Markdown that would render as a link, an image, HTML or markup."""


@pytest.mark.parametrize(
    "page", ["pages/1_Prompt_Lab.py", "pages/2_Fine_Tune_Lab.py", "pages/3_Token_Lens.py", "pages/4_Compare.py"]
)
def test_a_crafted_link_is_quoted_literally_in_the_warnings(tiny_app, page):
    at = _open(tiny_app, page, CRAFTED_LINK)
    warnings = [w.value for w in at.warning]
    shown = "\n".join(warnings)
    assert r"\[Sign in again\]\(" in shown and r"\!\[x\]\(" in shown, "the bad values are still named"
    for value in CRAFTED_LINK.values():  # every page checks the whole link
        assert markdown.literal(value) in shown
    # Nothing left that Markdown would read as a link, an image, a tag, code, emphasis or a heading.
    assert not [w for w in warnings if re.search(r"(?<!\\)[\[\]()<>!*`#]", w)], warnings


def test_fine_tune_lab_link_restores_dataset_and_training_preset(tiny_app):
    at = _open(tiny_app, "pages/2_Fine_Tune_Lab.py", {"classroom": "1", "dataset": "brand_voice", "train": "overfit"})
    ss = at.session_state
    assert ss.ft_dataset == "brand_voice" and ss.ft_preset == "overfit"
    assert ss.ft_steps == finetune.PRESETS["overfit"].values["max_steps"]
    assert not [e for e in at.expander if "Advanced settings" in e.label]
    assert not [r for r in at.radio if r.key == "ft_source"]  # uploads are for outside class
    assert at.query_params["dataset"] == "brand_voice" and at.query_params["train"] == "overfit"


def test_compare_link_restores_task_and_techniques(tiny_app):
    at = _open(tiny_app, "pages/4_Compare.py", {"dataset": "domain-knowledge", "techniques": "few-shot,cot"})
    assert at.session_state.cp_task == "domain_knowledge"
    assert at.session_state.cp_techniques == ["few-shot", "cot"]
    assert [c for c in at.checkbox if c.key == "cp_ablation"]  # not classroom: every option shown


def test_the_sidebar_switch_turns_classroom_mode_on_and_off_in_the_url(tiny_app):
    at = _open(tiny_app, "pages/5_Quiz.py", {})
    assert "classroom" not in at.query_params
    at.toggle(key="cl_toggle").set_value(True).run()
    assert at.query_params["classroom"] == "1" and "Step 6 of 6" in _texts(at)
    at.toggle(key="cl_toggle").set_value(False).run()
    assert "classroom" not in at.query_params and "Step 6 of 6" not in _texts(at)


def test_home_in_classroom_mode_offers_the_guided_start(tiny_app):
    at = tiny_app.page("app.py")
    at.query_params = {"classroom": "1"}
    at.run()
    assert not at.exception
    assert "Classroom mode is on" in _texts(at)


def test_token_lens_link_restores_dataset_and_techniques(tiny_app):
    at = _open(tiny_app, "pages/3_Token_Lens.py", {"classroom": "1", "dataset": "brand_voice", "techniques": "role"})
    assert at.session_state.tl_dataset == "brand_voice" and at.session_state.tl_techniques == ["role"]
    assert "Step 4 of 6 · Look at the next token" in _texts(at)
