"""The Challenge (learner) and Teacher pages with AppTest on the tiny model: create, join by link, submit,
score through the job queue, the leaderboard on both pages; wrong keys, unknown codes, budgets and HTML
names; no element of a learner's page shows a hidden example."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ftvpe_core.jobs import worker
from ftvpe_core.store.runs import RunStore
from ftvpe_core.tasks import datasets
from ftvpe_core.teaching import challenges, results
from ftvpe_core.ui import challenge_view as view
from ftvpe_core.ui import markdown

REPO = Path(__file__).resolve().parent.parent
LEARNER = str(REPO / "pages" / "7_Challenge.py")
TEACHER = str(REPO / "pages" / "8_Teacher.py")
COMPARE = str(REPO / "pages" / "4_Compare.py")
NAME = "<img src=x onerror=alert(1)>"
pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def home(monkeypatch, tmp_path, tiny_model_dir) -> Path:
    monkeypatch.setenv("FTVPE_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("FTVPE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(worker, "ensure_worker", lambda *a, **k: False)  # the test serves the queue itself
    monkeypatch.setenv("FTVPE_PUBLIC_URL", "https://class.example.org")
    return tmp_path / "home"


def _ok(at):
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at) -> str:
    """Every piece of text the page shows: markdown, captions, headings, messages, code, tables, widgets."""
    parts = []
    for kind in (
        "markdown",
        "caption",
        "title",
        "header",
        "subheader",
        "error",
        "warning",
        "success",
        "info",
        "code",
        "text",
    ):
        parts += [str(e.value) for e in at.get(kind)]
    parts += [e.value.to_string() for e in at.dataframe]
    for kind in ("selectbox", "multiselect"):
        for w in at.get(kind):
            parts += [str(o) for o in w.options]
    return "\n".join(parts)


def _form_button(at, form_key):
    return next(b for b in at.button if b.form_id == form_key)


def _create(at, **values):
    at.number_input(key="th_limit").set_value(values.get("limit", challenges.MIN_HIDDEN))
    at.number_input(key="th_steps").set_value(2)
    at.number_input(key="th_examples").set_value(5)
    at.number_input(key="th_tokens").set_value(values.get("tokens", 300))
    _form_button(at, "th_create").click()
    return _ok(at.run())


def test_a_teacher_creates_a_challenge_and_a_learner_submits_through_the_link(home):
    teacher = _ok(AppTest.from_file(TEACHER, default_timeout=60).run())
    teacher = _create(teacher)
    code, key = teacher.session_state["th_code"], teacher.session_state["th_key"]
    # The key comes alone, a step before the presenter view: no join code, link or board on its render.
    assert teacher.code[0].value == key and key.encode() not in (home / "runs.sqlite3").read_bytes()
    assert code not in "".join(m.value for m in teacher.markdown) and not teacher.get("imgs")
    assert not teacher.get("plotly_chart")
    teacher.button(key="th_saved").click()
    _ok(teacher.run())
    assert teacher.sidebar.radio(key="th_view").value == view.PRESENTER
    assert code in [m.value for m in teacher.markdown] and key not in _texts(teacher)
    link = markdown.literal(f"https://class.example.org/Challenge?challenge={code}")  # FTVPE_PUBLIC_URL
    assert any(link in m.value for m in teacher.markdown)
    assert "Via FTVPE\\_PUBLIC\\_URL" in [c.value for c in teacher.caption]

    learner = AppTest.from_file(LEARNER, default_timeout=60)
    learner.query_params["challenge"] = code
    _ok(learner.run())
    assert learner.text_input(key="ch_code").value == code  # the link filled the code in
    learner.text_input(key="ch_name").input(NAME)
    _form_button(learner, "ch_join").click()
    _ok(learner.run())
    assert learner.session_state["ch_joined"] == NAME
    assert any(markdown.literal(NAME) in m.value for m in learner.markdown)  # shown as text
    learner.text_input(key="ch_role").input("a triage assistant")
    learner.text_input(key="ch_format").input("one word")
    _ok(learner.run())  # a context field filled while context is off: said, not silently dropped
    assert [w.value for w in learner.warning if "not sent" in w.value] == [
        "Filled in but switched off, so not sent: Context addition. Add it under Techniques to use it."
    ]
    learner.multiselect(key="ch_techniques").set_value(["role", "context"])
    _ok(learner.run())
    assert not [w for w in learner.warning if "not sent" in w.value]
    learner.button(key="ch_submit_prompt").click()
    _ok(learner.run())
    assert any("is in" in t.value for t in learner.toast) and not learner.success
    assert any(m.value.startswith("⏳ **queued** · Queued to score\\: 1st of 1 in the queue") for m in learner.markdown)
    assert worker.serve(RunStore(home), "cpu", log=lambda m: None) == 1
    _ok(learner.run())
    statuses = [m.value for m in learner.markdown if "**queued**" in m.value or "**scored**" in m.value]
    assert len(statuses) == 1 and statuses[0].startswith("✅ **scored** · Scored\\: ")  # the queued box is gone
    assert any(m.value.startswith("- ") and "of 8" in m.value for m in learner.markdown)  # feedback in counts
    assert not learner.dataframe  # a phone's page: no tables
    assert any(markdown.literal(NAME) in m.value and m.value.startswith("**1.**") for m in learner.markdown)
    hidden = [e.prompt for e in datasets.load_held_back("support_triage")]
    shown = _texts(learner)
    assert not any(p in shown for p in hidden)

    _ok(teacher.run())
    assert any(m.value.startswith("**1.** ") and "alert" in m.value for m in teacher.markdown)
    assert not re.search(r"(?<!\\)<img", "".join(m.value for m in teacher.markdown))  # every '<' escaped
    assert teacher.get("plotly_chart")
    assert not [b for b in teacher.button if b.key in ("th_close", "th_reopen")]  # controls: not projected
    teacher.sidebar.radio(key="th_view").set_value(view.CONTROLS)
    _ok(teacher.run())
    assert not teacher.get("plotly_chart") and key not in _texts(teacher)
    teacher.button(key="th_close").click()
    _ok(teacher.run())
    assert not challenges.get(RunStore(home), code).open

    # Compare loads the challenge's best prompt as its engineered arm, with the teacher key only.
    compare = AppTest.from_file(COMPARE, default_timeout=60)
    compare.query_params["challenge"] = code
    _ok(compare.run())
    assert compare.text_input(key="cp_ch_code").value == code
    compare.text_input(key="cp_ch_key").input("wrong")
    compare.button(key="cp_ch_load").click()
    _ok(compare.run())
    assert compare.session_state["cp_prompt"] is None and "Wrong teacher key" in compare.error[0].value
    compare.text_input(key="cp_ch_key").input(key)
    compare.button(key="cp_ch_load").click()
    _ok(compare.run())
    assert compare.session_state["cp_prompt"]["role"] == "a triage assistant"
    assert compare.multiselect(key="cp_techniques").disabled


def test_wrong_keys_unknown_codes_and_budget_overruns_are_clear_and_keep_what_was_typed(home, tiny_model_dir):
    store = RunStore(home)
    code, _ = challenges.create(
        store, challenges.ChallengeSettings(task="support_triage", max_prompt_tokens=3, model=str(tiny_model_dir))
    )
    teacher = _ok(AppTest.from_file(TEACHER, default_timeout=60).run())
    teacher.text_input(key="th_open_code").input(code)
    teacher.text_input(key="th_open_key").input("guess")
    _form_button(teacher, "th_open").click()
    _ok(teacher.run())
    assert teacher.session_state["th_code"] is None
    wrong = markdown.literal(f"Wrong teacher key for challenge {code}; nothing was changed.")
    assert wrong in [e.value for e in teacher.error]

    learner = _ok(AppTest.from_file(LEARNER, default_timeout=60).run())
    learner.text_input(key="ch_code").input("NOPE22")
    learner.text_input(key="ch_name").input("Ada")
    _form_button(learner, "ch_join").click()
    _ok(learner.run())
    assert markdown.literal("No challenge has the code 'NOPE22'") in learner.error[0].value
    assert learner.text_input(key="ch_name").value == "Ada"  # nothing the learner typed is lost
    learner.text_input(key="ch_code").input(code.lower())
    _form_button(learner, "ch_join").click()
    _ok(learner.run())
    learner.text_input(key="ch_role").input("a very thorough and careful support triage assistant")
    learner.button(key="ch_submit_prompt").click()
    _ok(learner.run())
    assert any(markdown.literal("this challenge allows at most 3.") in e.value for e in learner.error)
    assert results.submissions(store, code) == []
    assert learner.text_input(key="ch_role").value.startswith("a very thorough")


def _join(at, name):
    at.text_input(key="ch_name").input(name)
    _form_button(at, "ch_join").click()
    return _ok(at.run())


def test_a_learner_comes_back_to_their_name_after_a_reload_or_in_a_new_tab_and_nobody_else_can(home, tiny_model_dir):
    store = RunStore(home)
    code, _ = challenges.create(store, challenges.ChallengeSettings(task="support_triage", model=str(tiny_model_dir)))
    first = AppTest.from_file(LEARNER, default_timeout=60)
    first.query_params["challenge"] = code
    _join(_ok(first.run()), "Ada")
    token = first.session_state["ch_token"]
    assert first.session_state["ch_joined"] == "Ada" and challenges.rejoin(store, code, token) == "Ada"
    shown = [c.value for c in first.code]
    link = f"https://class.example.org/Challenge?challenge={code}&rejoin={token}"
    assert token in shown and link in shown and any("Keep this rejoin token" in m.value for m in first.markdown)
    assert first.query_params["rejoin"] in (token, [token])  # a reload of this address rejoins
    first.button(key="ch_kept").click()
    _ok(first.run())
    assert token not in [c.value for c in first.code]  # shown once

    reload = AppTest.from_file(LEARNER, default_timeout=60)  # a new session with the same address
    reload.query_params["challenge"] = code
    reload.query_params["rejoin"] = token
    _ok(reload.run())
    assert reload.session_state["ch_joined"] == "Ada" and reload.session_state["ch_token"] is None
    assert any("You are **Ada** in challenge" in m.value for m in reload.markdown)

    tab = AppTest.from_file(LEARNER, default_timeout=60)  # a new tab without the link: the name is taken
    tab.query_params["challenge"] = code
    _join(_ok(tab.run()), "ada")
    assert tab.session_state["ch_joined"] is None
    assert any("Someone already joined as" in e.value for e in tab.error)
    tab.text_input(key="ch_rejoin_token").input("not-my-token")
    _form_button(tab, "ch_rejoin").click()
    _ok(tab.run())
    assert tab.session_state["ch_joined"] is None and any("not a rejoin token" in e.value for e in tab.error)
    tab.text_input(key="ch_rejoin_token").input(token)
    _form_button(tab, "ch_rejoin").click()
    _ok(tab.run())
    assert tab.session_state["ch_joined"] == "Ada" and tab.session_state["ch_joins"] == 0
    assert challenges.learners(store, code) == ["Ada"]

    # A bad token in a link is said, and the join form stays.
    stale = AppTest.from_file(LEARNER, default_timeout=60)
    stale.query_params["challenge"] = code
    stale.query_params["rejoin"] = "stale"
    _ok(stale.run())
    assert stale.session_state["ch_joined"] is None and any("not a rejoin token" in e.value for e in stale.error)


def test_the_teacher_sets_the_caps_a_browser_joins_a_few_names_and_every_prompt_field_is_limited(home):
    teacher = _ok(AppTest.from_file(TEACHER, default_timeout=60).run())
    teacher.number_input(key="th_learners").set_value(5)
    teacher.number_input(key="th_joins").set_value(2)
    teacher.number_input(key="th_queued").set_value(3)
    teacher = _create(teacher)
    code = teacher.session_state["th_code"]
    s = challenges.get(RunStore(home), code).settings
    assert (s.max_learners, s.max_joins, s.max_queued) == (5, 2, 3)

    learner = AppTest.from_file(LEARNER, default_timeout=60)
    learner.query_params["challenge"] = code
    _join(_ok(learner.run()), "Ada")
    limits = challenges.FIELD_CHARS
    for key, field in (
        ("ch_role", "role"),
        ("ch_examples", "examples"),
        ("ch_facts", "facts"),
        ("ch_format", "output_format"),
        ("ch_tone", "tone"),
    ):
        widget = next(w for w in [*learner.text_input, *learner.text_area] if w.key == key)
        assert widget.max_chars == limits[field], key
    learner.button(key="ch_switch").click()
    _join(_ok(learner.run()), "Bob")
    assert learner.session_state["ch_joined"] == "Bob"
    learner.button(key="ch_switch").click()
    _join(_ok(learner.run()), "Cy")
    assert learner.session_state["ch_joined"] is None
    assert any("has already joined challenge" in e.value and "under 2 names" in e.value for e in learner.error)
    assert challenges.learners(RunStore(home), code) == ["Ada", "Bob"]
