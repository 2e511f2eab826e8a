"""Page tests with Streamlit's AppTest: every page runs, and the Prompt Lab's journeys work on a tiny model.

The tiny random model (``tests.tiny``) loads in about a second, so these tests exercise the real loader,
prompt building, generation and rendering without the embedded model. ``st.cache_resource`` keeps one
loaded model per name for the whole process, so every test here shares the session's tiny model (``tiny_app``
in ``tests/conftest.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest
from streamlit.testing.v1 import AppTest

from ftvpe_core.model import generation
from ftvpe_core.tasks import presets
from ftvpe_core.ui import markdown
from ftvpe_core.ui import prompt_lab as lab
from tests import tiny

if TYPE_CHECKING:
    from tests.conftest import TinyApp

REPO = Path(__file__).resolve().parent.parent
HOME = "app.py"
PROMPT_LAB = "pages/1_Prompt_Lab.py"
PAGES = [HOME, *sorted(f"pages/{p.name}" for p in (REPO / "pages").glob("*.py"))]
READY_WITHIN_S = 60


def _run_button(at: AppTest):
    return next((b for b in at.button if b.key == "pe_run"), None)


def _no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def open_lab(app: TinyApp, max_new: int = 4) -> AppTest:
    """The Prompt Lab, re-run until the model is loaded and the Run button is enabled."""
    at = app.page(PROMPT_LAB)
    at.session_state["pe_max_new"] = max_new
    at.run()
    deadline = time.monotonic() + READY_WITHIN_S
    while True:
        _no_exception(at)
        button = _run_button(at)
        if button is not None and not button.disabled:
            return at
        assert not [e for e in at.error if "model" in e.value.lower()], [e.value for e in at.error]
        assert time.monotonic() < deadline, "the model did not load within a minute"
        time.sleep(0.3)
        at.run()


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


# --- every page ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=lambda p: Path(p).name)
def test_page_runs_without_exception(tiny_app, page):
    at = tiny_app.page(page).run()
    _no_exception(at)
    assert at.title, f"{Path(page).name} shows no title"


# --- home ------------------------------------------------------------------------------------------------


def test_home_shows_comparison_table_link_and_model_status(tiny_app):
    at = tiny_app.page(HOME).run()
    _no_exception(at)
    assert len(at.table) == 1
    table = at.table[0].value
    assert list(table["Feature"]) == ["Purpose", "Method", "Difficulty", "Cost", "Speed", "Use case"]
    assert {"Fine-tuning", "Prompt engineering"} <= set(table.columns)
    links = at.get("page_link")
    assert [link.value for link in links] == [
        "Learn",
        "Prompt Lab",
        "Fine-Tune Lab",
        "Token Lens",
        "Compare",
        "Quiz",
        "Runs",
        "Challenge",
        "Teacher",
        "Start the guided demo in classroom mode",
    ]

    deadline = time.monotonic() + READY_WITHIN_S
    while not at.success:
        assert time.monotonic() < deadline, "the home page never reported the model as ready"
        time.sleep(0.3)
        at.run()
        _no_exception(at)
    status = at.success[0].value
    assert (
        "Ready" in status
        and markdown.literal(tiny_app.model.name) in status
        and f"context {tiny.CONTEXT_LENGTH} tokens" in status
    )


# --- Prompt Lab: running ----------------------------------------------------------------------------------


def test_run_with_few_shot_shows_both_answers_chart_and_attempt_that_restores(tiny_app):
    at = open_lab(tiny_app)
    at.toggle(key="pe_fewshot_on").set_value(True).run()
    at.text_area(key="pe_examples").input("hello world => good day\ntrain trip => travel").run()
    _no_exception(at)
    assert not errors(at)

    at.button(key="pe_run").click().run()
    _no_exception(at)
    assert not errors(at)
    answers = [t.value for t in at.text]
    assert len(answers) == 2 and all(answers)
    assert len(at.get("plotly_chart")) >= 2, "expected the token bar and the next-token chart"
    assert [m for m in at.subheader if m.value == "Answers"]

    attempts = at.session_state["pe_attempts"]
    assert len(attempts) == 1
    assert "few-shot" in attempts[0]["spec"]["enabled"]
    assert attempts[0]["spec"]["examples"] == [["hello world", "good day"], ["train trip", "travel"]]
    assert set(attempts[0]["outputs"]) == {"Plain", "Engineered"}
    original_task = attempts[0]["spec"]["task"]

    at.text_area(key="pe_task").input("a different task").run()
    at.toggle(key="pe_fewshot_on").set_value(False).run()
    assert at.session_state["pe_task"] == "a different task"
    at.button(key="pe_restore_0").click().run()
    _no_exception(at)
    assert at.session_state["pe_task"] == original_task
    assert at.text_area(key="pe_task").value == original_task
    assert at.toggle(key="pe_fewshot_on").value is True
    assert at.text_area(key="pe_examples").value == "hello world => good day\ntrain trip => travel"
    assert len(at.text) == 2, "the restored attempt's answers are shown again"


def test_each_preset_rewrites_task_and_toggles(tiny_app):
    at = open_lab(tiny_app)
    keys = [p.key for p in presets.PRESETS]
    assert keys[0] == lab.DEFAULT_PRESET == at.selectbox(key="pe_preset").value
    for key in [*keys[1:], keys[0]]:
        at.text_area(key="pe_task").input("something I typed").run()
        at.selectbox(key="pe_preset").select(key).run()
        _no_exception(at)
        assert not errors(at), (key, errors(at))
        spec = presets.get(key).spec
        assert at.text_area(key="pe_task").value == spec.task
        for technique, toggle_key in lab.TOGGLES.items():
            assert at.toggle(key=toggle_key).value == spec.uses(technique), (key, technique)
        assert _run_button(at) is not None, "the preset builds a valid prompt"


# --- Prompt Lab: bad input --------------------------------------------------------------------------------


def test_empty_task_shows_error(tiny_app):
    at = open_lab(tiny_app)
    at.text_area(key="pe_task").input("").run()
    _no_exception(at)
    assert any("The task is empty" in e for e in errors(at))
    assert _run_button(at) is None, "the page stops before the Run button"


def test_few_shot_line_without_arrow_shows_error(tiny_app):
    at = open_lab(tiny_app)
    at.toggle(key="pe_fewshot_on").set_value(True).run()
    at.text_area(key="pe_examples").input("hello world => good day\nno arrow here").run()
    _no_exception(at)
    assert any("line 2" in e and markdown.literal("=>") in e for e in errors(at)), errors(at)


def test_role_on_with_empty_role_shows_error(tiny_app):
    at = open_lab(tiny_app)
    at.toggle(key="pe_role_on").set_value(True).run()
    at.text_input(key="pe_role").input("").run()
    _no_exception(at)
    assert any("role is empty" in e for e in errors(at)), errors(at)


def test_task_longer_than_context_shows_error_after_run(tiny_app):
    at = open_lab(tiny_app)
    at.text_area(key="pe_task").input("travel " * (tiny.CONTEXT_LENGTH + 20)).run()
    _no_exception(at)
    assert not errors(at)
    at.button(key="pe_run").click().run()
    _no_exception(at)
    assert any("context" in e for e in errors(at)), errors(at)
    assert at.session_state["pe_attempts"] == []


def test_unknown_model_in_sidebar_shows_error_and_keeps_previous_model(tiny_app):
    at = open_lab(tiny_app)
    # Inside a form, a browser sends the typed value only with the submit click.
    at.sidebar.text_input(key="sb_model_name").input("no such model")
    submit = next(b for b in at.sidebar.button if b.label == "Use this model")
    submit.click().run()
    _no_exception(at)
    assert any("Unknown model 'no such model'" in e.value for e in at.sidebar.error), [e.value for e in at.error]
    assert at.session_state["model_choice"]["name"] == str(tiny_app.model)
    button = _run_button(at)
    assert button is not None and not button.disabled, "the previous model still runs"
    button.click().run()
    _no_exception(at)
    assert len(at.session_state["pe_attempts"]) == 1


def test_a_file_that_is_not_gguf_is_named_in_one_line_in_the_sidebar(tiny_app, tmp_path, monkeypatch):
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"\x00garbage, not a model")
    expected = (
        "Could not load fake.gguf: it is not a GGUF model file (it does not start with the GGUF signature, GGUF)."
    )
    at = open_lab(tiny_app)
    at.sidebar.text_input(key="sb_model_name").input(str(fake))  # picked in the sidebar: refused at once
    next(b for b in at.sidebar.button if b.label == "Use this model").click().run()
    _no_exception(at)
    assert [e.value for e in at.sidebar.error] == [markdown.literal(expected)]
    assert at.session_state["model_choice"]["name"] == str(tiny_app.model)

    monkeypatch.setenv("FTVPE_MODEL", str(fake))  # or the app's default: the background load fails
    at = tiny_app.page(PROMPT_LAB).run()
    deadline = time.monotonic() + READY_WITHIN_S
    while not at.sidebar.error:
        assert time.monotonic() < deadline, "the load never reported its error"
        time.sleep(0.3)
        at.run()
    _no_exception(at)
    assert [e.value for e in at.sidebar.error] == [markdown.literal(expected)]


# --- Prompt Lab: escaping ---------------------------------------------------------------------------------

EVIL = "<script>alert(1)</script>"


def _html_markdown(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if m.proto.allow_html]


def test_task_html_is_escaped_in_the_assembled_prompt(tiny_app):
    at = open_lab(tiny_app)
    at.text_area(key="pe_task").input(f"Explain {EVIL} please").run()
    _no_exception(at)
    html_blocks = _html_markdown(at)
    assert any("&lt;script&gt;alert(1)&lt;/script&gt;" in block for block in html_blocks)
    assert not any("<script" in block for block in html_blocks)


class _HtmlAnswerStream:
    """Stands in for generation.GenerationStream: answers with HTML, in one piece."""

    queue_position = None

    def __init__(self, loaded, messages, settings=None, owner=None, first_top=0):
        self.result = None
        self._done = False
        self.request = SimpleNamespace(watch=lambda event: event.set(), first_top=[(0.5, 4)])

    def close(self) -> None:
        pass

    def pending(self) -> list[str]:
        if self._done:
            raise StopIteration
        self._done = True
        self.result = generation.GenerationResult(
            text=f"<b>bold</b> {EVIL}",
            prompt_tokens=3,
            new_tokens=2,
            ttft_s=0.01,
            tokens_per_s=100.0,
            total_s=0.02,
            stop_reason="end",
        )
        return [self.result.text]


def test_model_output_is_shown_as_plain_text_not_html(tiny_app, monkeypatch):
    at = open_lab(tiny_app)
    monkeypatch.setattr(generation, "GenerationStream", _HtmlAnswerStream)
    at.button(key="pe_run").click().run()
    _no_exception(at)
    assert [t.value for t in at.text] == [f"<b>bold</b> {EVIL}"] * 2
    assert not any("<script" in block or "<b>bold" in block for block in _html_markdown(at))


# --- a cold server ----------------------------------------------------------------------------------------

# Run in a fresh interpreter: numpy stays half-imported (in sys.modules, not yet executed) for 3 s in another
# thread, as it is on a fresh server while the model loader's thread imports torch and the first visitor's
# script draws its first figure.
_HALF_IMPORTED_NUMPY = """
import importlib.util, json, sys, threading, time
from streamlit.testing.v1 import AppTest

assert "numpy" not in sys.modules


class SlowNumpy:
    def find_spec(self, name, path=None, target=None):
        if name != "numpy":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module
        spec.loader.exec_module = lambda module: (time.sleep(3), run(module))
        return spec


sys.meta_path.insert(0, SlowNumpy())
threading.Thread(target=lambda: __import__("numpy"), daemon=True).start()
while "numpy" not in sys.modules:
    time.sleep(0.01)
at = AppTest.from_file(sys.argv[1], default_timeout=60).run()
print(json.dumps([e.message for e in at.exception]))
"""


def test_prompt_lab_first_run_survives_numpy_still_importing_in_loader_thread(tiny_app):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", _HALF_IMPORTED_NUMPY, str(REPO / PROMPT_LAB)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
