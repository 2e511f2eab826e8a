"""The Quiz page with AppTest: answer, check, read the explanations, start again."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from ftvpe_core.teaching import quiz

PAGE = Path(__file__).resolve().parent.parent / "pages" / "5_Quiz.py"


def test_checking_grades_each_answer_explains_it_and_links_its_page():
    at = AppTest.from_file(str(PAGE), default_timeout=30).run()
    assert not at.exception
    assert len(at.radio) == len(quiz.QUESTIONS)
    first, second = quiz.QUESTIONS[0], quiz.QUESTIONS[1]
    at.radio(key=f"qz_{first.key}").set_value(first.answer)
    wrong = next(a for a in quiz.ANSWERS if a != second.answer)
    at.radio(key=f"qz_{second.key}").set_value(wrong)
    at.run()
    at.button(key="qz_check").click().run()
    assert not at.exception
    assert at.metric[0].value == f"1 / {len(quiz.QUESTIONS)}"
    texts = [m.value for m in at.markdown]
    assert any(t.startswith("✅ Right") and first.explanation in t for t in texts)
    assert any(t.startswith("❌ Not quite") and second.explanation in t for t in texts)
    assert sum(t.startswith("⬜ Not answered") for t in texts) == len(quiz.QUESTIONS) - 2
    assert at.success[0].value == quiz.grade({first.key: first.answer, second.key: wrong}).summary()
    links = [c.value for c in at.caption if c.value.startswith("Try it:")]
    assert len(links) == len(quiz.QUESTIONS) and "(/Prompt_Lab)" in links[0]
    assert all(r.disabled for r in at.radio)

    at.button(key="qz_again").click().run()
    assert not at.exception
    assert not at.metric and at.radio(key=f"qz_{first.key}").value is None and not at.radio[0].disabled
