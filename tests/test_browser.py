"""The main journeys in a real browser: ``streamlit run`` on the embedded model, driven by headless Chromium.

Debian's ``chromium`` is used (``make test`` installs it); Playwright cannot download its own browsers offline.
Screenshots go to ``test-artifacts/``; with FTVPE_UPDATE_SCREENSHOT=1 the four the README shows (Prompt Lab,
Fine-Tune Lab, Compare, Token Lens) are also copied to ``assets/`` (off by default, so a test run never changes
tracked files).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
README_SCREENSHOT = REPO / "assets" / "screenshot-prompt-lab.png"
README_FT_SCREENSHOT = REPO / "assets" / "screenshot-fine-tune-lab.png"
README_COMPARE_SCREENSHOT = REPO / "assets" / "screenshot-compare.png"
README_LENS_SCREENSHOT = REPO / "assets" / "screenshot-token-lens.png"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MODEL_READY_MS = 150_000  # the first start converts the GGUF file (about 20-60 s on 2 cores)
ANSWERS_MS = 120_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.embedded,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (make browser)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


def browser_home(tmp_path_factory, name: str) -> Path:
    """A data folder of its own for one module's app server, with the embedded model's converted cache linked in.
    Of its own: the embedded tests on another xdist worker queue runs in their shared folder, and a server there
    would take them into its queue (a fine-tune here then waits behind runs nobody in this browser made)."""
    from tests.conftest import embedded_home

    home = tmp_path_factory.mktemp(name)
    (home / "models").symlink_to(embedded_home() / "models", target_is_directory=True)
    return home


@contextlib.contextmanager
def serve_app(home: Path, log: Path, env: dict | None = None, wait_s: float = 60) -> Iterator[str]:
    """``streamlit run app.py`` on ``home`` (and ``env``'s settings), its address once it answers; stopped after."""
    ARTIFACTS.mkdir(exist_ok=True)
    port = _free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("FTVPE_")}
    full.update(FTVPE_HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **(env or {}))
    command = [str(REPO / ".venv" / "bin" / "streamlit"), "run", "app.py", "--server.port", str(port)]
    command += ["--server.headless", "true", "--browser.gatherUsageStats", "false"]
    command += ["--server.fileWatcherType", "none"]  # the tests do not edit the app; watching only costs time
    with log.open("w") as out:
        server = subprocess.Popen(command, cwd=REPO, env=full, stdout=out, stderr=subprocess.STDOUT)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + wait_s
        while True:
            assert server.poll() is None, f"streamlit exited with {server.returncode}:\n{_log_tail(log)}"
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"streamlit did not answer within {wait_s:.0f} s:\n{_log_tail(log)}"
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)


@pytest.fixture(scope="module")
def app_home(tmp_path_factory) -> Path:
    """The data folder of this module's app server (``browser_home``)."""
    return browser_home(tmp_path_factory, "browser-home")


@pytest.fixture(scope="module")
def app_url(app_home):
    """``streamlit run app.py`` on the embedded model, stopped when the module's tests end."""
    with serve_app(app_home, ARTIFACTS / "streamlit-server.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        pw.stop()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        yield page
    finally:
        context.close()


def _screenshot(page, path: Path) -> None:
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport to the content first."""
    height = page.evaluate(
        """() => Math.max(...['[data-testid="stMain"]', '[data-testid="stAppViewContainer"]', 'body']
            .map(s => document.querySelector(s)).filter(Boolean).map(e => e.scrollHeight))"""
    )
    page.set_viewport_size({"width": page.viewport_size["width"], "height": min(int(height) + 40, 8000)})
    page.wait_for_timeout(800)  # let plotly redraw at the new size
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)


def _no_exception_shown(page) -> None:
    shown = page.locator('[data-testid="stException"]')
    assert shown.count() == 0, shown.all_inner_texts()


def _open_home(page, app_url: str) -> None:
    from playwright.sync_api import expect

    page.goto(app_url)
    expect(page.get_by_role("heading", name="Fine-tuning vs prompt engineering at a glance")).to_be_visible()
    expect(page.locator('[data-testid="stTable"]')).to_be_visible()


def _expect_navigation(page) -> None:
    """The app's navigation (app.py's st.navigation): Home first, not the script's name, then the pages by
    section; not the list Streamlit makes of the pages/ folder ("app", "Prompt Lab", ...)."""
    from playwright.sync_api import expect

    nav = page.locator('[data-testid="stSidebarNav"]')
    expect(nav.get_by_role("link").first).to_have_text(re.compile("Home"))
    names = [t.strip() for t in nav.get_by_role("link").all_inner_texts()]
    assert names[0].endswith("Home") and not any(n.endswith("app") for n in names), names
    for section in ("Learn", "Labs", "Measure"):
        expect(nav).to_contain_text(section)


def test_home_shows_comparison_table(page, app_url):
    from playwright.sync_api import expect

    _open_home(page, app_url)
    table = page.locator('[data-testid="stTable"]')
    for text in ("Purpose", "Method", "Difficulty", "Cost", "Speed", "Use case", "Fine-tuning", "Prompt engineering"):
        expect(table).to_contain_text(text)
    expect(page.get_by_role("link", name="Prompt Lab").first).to_be_visible()
    _expect_navigation(page)
    _no_exception_shown(page)
    _screenshot(page, ARTIFACTS / "home.png")


def test_prompt_lab_runs_plain_and_engineered_prompts_side_by_side(page, app_url):
    from playwright.sync_api import expect

    # Arrive the way a visitor does: the home page, then its link to the lab.
    _open_home(page, app_url)
    page.locator('[data-testid="stMain"]').get_by_role("link", name="Prompt Lab").click()
    # The URL then holds the experiment (preset, techniques).
    expect(page).to_have_url(re.compile(rf"^{re.escape(app_url)}/Prompt_Lab(\?|$)"))
    expect(page.get_by_role("heading", name="Prompt Lab")).to_be_visible()
    expect(page.get_by_role("combobox", name="Preset")).to_have_value("Travel blog introduction")

    run = page.get_by_role("button", name="Run both")
    expect(run).to_be_enabled(timeout=MODEL_READY_MS)
    _no_exception_shown(page)

    page.get_by_text("Generation settings").click()
    max_new = page.get_by_role("spinbutton", name="Max new tokens")
    max_new.fill("40")
    max_new.press("Enter")
    expect(max_new).to_have_value("40")
    page.wait_for_timeout(500)  # the rerun that stores the new value

    run.click()
    expect(page.get_by_role("heading", name="Answers")).to_be_visible(timeout=ANSWERS_MS)
    charts = page.locator('[data-testid="stPlotlyChart"]')
    expect(charts).to_have_count(2, timeout=ANSWERS_MS)
    expect(charts.nth(1)).to_contain_text("Next-token probabilities")
    answers = page.locator('[data-testid="stMain"] [data-testid="stText"]')
    expect(answers).to_have_count(2)
    plain, engineered = (t.strip() for t in answers.all_inner_texts())
    assert plain and engineered
    assert plain != engineered
    expect(page.get_by_text("This session's attempts (1)")).to_be_visible()
    _expect_navigation(page)
    _no_exception_shown(page)

    shot = ARTIFACTS / "prompt_lab.png"
    _screenshot(page, shot)
    if os.environ.get("FTVPE_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, README_SCREENSHOT)


def _set_number(page, label: str, value: int) -> None:
    from playwright.sync_api import expect

    box = page.get_by_role("spinbutton", name=label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    expect(box).to_have_value(str(value))
    page.wait_for_timeout(1000)  # the rerun that stores the new value


LIVE_STEP = re.compile(r"^Step (\d+) of \d+ ·")
"""A live run's progress text ("Step 3 of 16 · about 40 s left"), not a replay's ("Step 3 of 40 (recorded)")."""


def _step(page) -> int:
    """The step the progress bar shows ("Step N of M"), 0 before the first."""
    texts = page.locator('[data-testid="stProgress"]').all_inner_texts()
    found = [int(m.group(1)) for t in texts if (m := LIVE_STEP.search(t))]
    return found[0] if found else 0


def test_fine_tune_lab_trains_live_survives_reload_queues_cancels_and_chats(page, app_url):
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect

    _open_home(page, app_url)  # a fresh server's first visit, so the lab below has the app's navigation
    page.goto(f"{app_url}/Fine_Tune_Lab")
    expect(page.get_by_role("heading", name="Fine-Tune Lab")).to_be_visible()
    expect(page.get_by_text("Support triage").first).to_be_visible()
    page.get_by_text("Advanced settings: every knob, explained").click()
    _set_number(page, "Steps", 16)
    _set_number(page, "Evaluate every (steps)", 4)
    _set_number(page, "Validation examples (0 = all)", 8)
    expect(page.get_by_text("16 steps × 8 examples")).to_be_visible()
    expect(page.get_by_text("validation every 4 steps")).to_be_visible()
    launch = page.get_by_role("button", name="Launch")
    launch.click()

    # The curve and the progress bar move while the job trains.
    expect(page.locator('[data-testid="stProgress"]').get_by_text(LIVE_STEP)).to_be_visible(timeout=MODEL_READY_MS)
    first = _step(page)
    curves = page.locator('[data-testid="stPlotlyChart"]').last  # histogram, LoRA share, then the curves
    deadline = time.monotonic() + 30
    while True:  # the fragment redraws the chart every 1.5 s, so a scroll can catch it between two drawings
        try:
            curves.scroll_into_view_if_needed(timeout=2_000)
            if "train loss" in curves.inner_text(timeout=2_000):
                break
        except PlaywrightError:
            pass
        assert time.monotonic() < deadline, "the loss chart did not show its train loss curve"
        page.wait_for_timeout(300)
    deadline = time.monotonic() + 60
    while _step(page) <= first:
        assert time.monotonic() < deadline, "the progress bar did not move"
        page.wait_for_timeout(500)
    _no_exception_shown(page)
    _screenshot(page, ARTIFACTS / "fine_tune_lab_training.png")

    # A reload (a new browser session) still shows the run training.
    page.reload()
    expect(page.locator('[data-testid="stProgress"]').get_by_text(LIVE_STEP)).to_be_visible(timeout=30_000)

    # A second launch waits in the queue; cancel it.
    page.get_by_role("button", name="Launch").click()
    expect(page.get_by_text("Queued: position 1 of 1")).to_be_visible(timeout=30_000)
    cancels = page.get_by_role("button", name="Cancel")
    expect(cancels).to_have_count(2)
    cancels.nth(1).click()
    expect(page.get_by_text("Cancelled at step 0")).to_be_visible(timeout=30_000)

    # Back to the first run: it completes, then the chat answers with both models.
    page.get_by_role("combobox", name="Showing run").click()
    page.get_by_role("option").nth(1).click()  # newest first: the cancelled run, then the training one
    expect(page.get_by_text("Complete:")).to_be_visible(timeout=240_000)
    expect(page.get_by_text("Test accuracy")).to_be_visible()
    expect(page.get_by_role("button", name="Download the adapter (zip)")).to_be_visible()
    texts = page.locator('[data-testid="stMain"] [data-testid="stText"]')
    before = texts.count()
    page.get_by_role("button", name="Ask both").click()
    expect(page.get_by_text("Fine-tuned model ·")).to_be_visible(timeout=120_000)
    expect(texts).to_have_count(before + 3)  # the message, the base answer and the tuned answer
    assert all(t.strip() for t in texts.all_inner_texts()[-3:])
    _expect_navigation(page)
    _no_exception_shown(page)
    shot = ARTIFACTS / "fine_tune_lab_chat.png"
    _screenshot(page, shot)
    if os.environ.get("FTVPE_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, README_FT_SCREENSHOT)


def test_fine_tune_lab_upload_lists_problems_by_line_then_accepts_a_good_file(page, app_url, tmp_path):
    from playwright.sync_api import expect

    bad = tmp_path / "tickets.jsonl"
    bad.write_text('{"prompt": "Where is my parcel?", "response": "shipping"}\n{"prompt": "broken"\n')
    good = tmp_path / "my_tickets.csv"
    good.write_text("prompt,response\n" + "".join(f"Question number {i} about my order?,shipping\n" for i in range(30)))
    page.goto(f"{app_url}/Fine_Tune_Lab")
    page.get_by_text("Upload your own").click()
    chooser = page.locator('[data-testid="stFileUploaderDropzone"] input[type="file"]')
    chooser.set_input_files(str(bad))
    expect(page.get_by_text("tickets.jsonl was not loaded")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("line 2", exact=False).first).to_be_visible()
    chooser.set_input_files(str(good))
    expect(page.get_by_text("Uploaded from my_tickets.csv: 30 examples.")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("was not loaded")).to_have_count(0)
    _no_exception_shown(page)


def test_compare_runs_four_arms_in_the_background_and_offers_the_report(page, app_url, app_home):
    from playwright.sync_api import expect

    from ftvpe_core.jobs import foreground
    from ftvpe_core.store.runs import RunStore
    from ftvpe_core.training import finetune

    # A short fine-tuning run of our own, so the tuned arms have an adapter (made here, not by another test).
    settings = finetune.TrainSettings(max_steps=4, eval_every=4, batch_size=8, max_length=128, max_val_examples=8)
    run_id = foreground.finetune("support_triage", settings, None, RunStore(app_home), measure_accuracy=False)["run_id"]

    _open_home(page, app_url)  # a fresh server's first visit, so the page below has the app's navigation
    page.goto(f"{app_url}/Compare")
    expect(page.get_by_role("heading", name="Compare")).to_be_visible()
    expect(page.get_by_role("combobox", name="Fine-tuned run")).to_have_value(re.compile(run_id))
    _set_number(page, "Examples to score (0 = the whole test split)", 8)
    page.get_by_role("button", name="Run the comparison").click()
    # The results of this comparison, which scores this test's run: the shared data folder may hold an earlier
    # comparison, whose results the page shows until the new one is launched (and then for a moment still).
    expect(page.get_by_text(re.compile(rf"· run {re.escape(run_id)}$"))).to_be_visible(timeout=300_000)
    expect(page.get_by_role("heading", name="Prompt or fine-tune?")).to_be_visible()
    for label in ("Base, plain prompt", "Base + engineered prompt", "Fine-tuned", "Fine-tuned + prompt"):
        expect(page.locator('[data-testid="stMetric"]').filter(has_text=label).first).to_be_visible()
    expect(page.locator('[data-testid="stTable"]')).to_contain_text("prompt tokens a call")
    expect(page.get_by_role("button", name="HTML report (opens offline)")).to_be_visible()
    # The screenshot shows the finished comparison: both charts drawn (the four scores, the break-even), the
    # examples, no progress bar, and the sidebar's model ready rather than loading.
    charts = page.locator('[data-testid="stMain"] [data-testid="stPlotlyChart"]')
    expect(charts.filter(has_text="by arm")).to_be_visible()
    expect(charts.filter(has_text="Break-even")).to_be_visible()
    expect(page.locator('[data-testid="stMain"] [data-testid="stDataFrame"]').first).to_be_visible()
    expect(page.locator('[data-testid="stMain"] [data-testid="stProgress"]')).to_have_count(0)
    expect(page.locator('[data-testid="stSidebar"]').get_by_text(re.compile("^Ready: "))).to_be_visible(
        timeout=MODEL_READY_MS
    )
    _expect_navigation(page)
    _no_exception_shown(page)
    shot = ARTIFACTS / "compare.png"
    _screenshot(page, shot)
    if os.environ.get("FTVPE_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, README_COMPARE_SCREENSHOT)


def _guide_step(page, n: int, title: str) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_text(f"Step {n} of 6 · {title}")).to_be_visible(timeout=60_000)


def _next(page, title: str) -> None:
    page.get_by_role("link", name=f"Next: {title} ▶").click()


def test_classroom_walk_through_the_guided_steps_from_a_shared_link(page, app_url, browser):
    """The teacher's demo: a classroom link, six guided steps from the lesson to the quiz, large type and no
    advanced controls; then a student opens a shared experiment link in a fresh browser session."""
    from playwright.sync_api import expect

    shots = ARTIFACTS / "classroom"
    page.goto(f"{app_url}/?classroom=1")
    expect(page.get_by_text("Classroom mode is on")).to_be_visible()
    page.wait_for_function("getComputedStyle(document.documentElement).fontSize === '20px'")  # 125 % of 16 px
    page.locator('[data-testid="stMain"]').get_by_role("link", name=re.compile("Start the guided demo")).first.click()

    # 1 · Learn: switch a technique on, the engineered prompt grows; the recording replays, labelled.
    _guide_step(page, 1, "Two ways to steer a model")
    expect(page).to_have_url(re.compile(r"/Learn\?classroom=1&step=1"))
    expect(page.get_by_role("heading", name="1 · Prompt engineering: change the words")).to_be_visible()
    page.locator('[data-testid="stMain"]').get_by_text("Chain-of-thought", exact=True).first.click()
    expect(page.get_by_text("step by step").first).to_be_visible(timeout=30_000)
    expect(page.get_by_text("Recording, not live").first).to_be_visible(timeout=30_000)
    expect(page.get_by_text("LoRA changed 120 matrices").first).to_be_visible(timeout=60_000)
    _no_exception_shown(page)
    _screenshot(page, shots / "1_learn.png")

    # 2 · Prompt Lab, opened with the step's experiment: run both prompts, then switch a technique off and on.
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.wait_for_timeout(2_000)  # let Chromium finish redrawing: it shares the 2 cores with the model
    _next(page, "Change the words")
    _guide_step(page, 2, "Change the words")
    expect(page).to_have_url(re.compile(r"/Prompt_Lab\?classroom=1&step=2&preset=travel&techniques=role(,|%2C)context"))
    expect(page.get_by_text("Generation settings")).to_have_count(0)  # hidden in class
    run = page.get_by_role("button", name="Run both")
    expect(run).to_be_enabled(timeout=MODEL_READY_MS)
    run.click()
    # Two answers of up to 160 tokens; slower than the Prompt Lab test's 40 when the browser is busy too.
    expect(page.get_by_role("heading", name="Answers")).to_be_visible(timeout=2 * ANSWERS_MS)
    answers = page.locator('[data-testid="stMain"] [data-testid="stText"]')
    expect(answers).to_have_count(2, timeout=ANSWERS_MS)  # the heading can show before the two answers do
    plain, engineered = (t.strip() for t in answers.all_inner_texts())
    assert plain and engineered and plain != engineered
    _no_exception_shown(page)
    _screenshot(page, shots / "2_prompt_lab.png")
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.get_by_text("Role assignment", exact=True).first.click()  # its toggle: off
    expect(page).to_have_url(re.compile(r"techniques=context$"))  # the address bar follows the experiment

    # 3 · Fine-Tune Lab: no advanced knobs; the recorded quick run replays (too slow to train live in class).
    page.get_by_text("Role assignment", exact=True).first.click()  # back on: the step's experiment again
    expect(page).to_have_url(re.compile(r"techniques=role(,|%2C)context$"))
    _next(page, "Change the weights")
    _guide_step(page, 3, "Change the weights")
    expect(page).to_have_url(re.compile(r"/Fine_Tune_Lab\?.*dataset=support_triage&train=quick"))
    expect(page.get_by_text("Advanced settings: every knob, explained")).to_have_count(0)
    expect(page.get_by_text("Recording, not live").first).to_be_visible(timeout=30_000)
    page.get_by_role("button", name=re.compile("Play")).first.click()
    expect(page.get_by_text(re.compile(r"Step (\d{2}) of 40")).first).to_be_visible(timeout=30_000)
    _no_exception_shown(page)
    _screenshot(page, shots / "3_fine_tune_lab_replay.png")

    # 4 · Token Lens with the recorded adapter: three conditions, step to the next token.
    page.set_viewport_size({"width": 1400, "height": 1000})
    _next(page, "Look at the next token")
    _guide_step(page, 4, "Look at the next token")
    page.get_by_role("combobox", name="Fine-tuned adapter").click()
    page.get_by_role("option", name="recorded adapter (shipped with the app)").click()
    page.wait_for_timeout(1000)  # the rerun that stores the choice
    page.get_by_role("button", name="Look").click()
    figure = page.locator('[data-testid="stPlotlyChart"]').first
    expect(figure).to_contain_text("Fine-tuned", timeout=ANSWERS_MS)
    expect(figure).to_contain_text("Engineered")
    expect(figure).to_contain_text("Token 1 of")
    _expect_navigation(page)
    _no_exception_shown(page)
    _screenshot(page, shots / "4_token_lens.png")
    if os.environ.get("FTVPE_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shots / "4_token_lens.png", README_LENS_SCREENSHOT)
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.get_by_role("button", name="▶", exact=True).click()
    expect(page.locator('[data-testid="stPlotlyChart"]').first).to_contain_text("Token 2 of", timeout=30_000)

    # 5 · Compare: the form with the step's task; 6 · Quiz: answer, check, score.
    page.set_viewport_size({"width": 1400, "height": 1000})
    _next(page, "Measure both")
    _guide_step(page, 5, "Measure both")
    expect(page.get_by_role("button", name="Run the comparison")).to_be_visible()
    expect(page.get_by_text("Technique ablation")).to_have_count(0)
    _screenshot(page, shots / "5_compare.png")
    page.set_viewport_size({"width": 1400, "height": 1000})
    _next(page, "Your call")
    _guide_step(page, 6, "Your call")
    for group in page.locator('[data-testid="stRadio"]').all()[:5]:
        group.get_by_text("Both", exact=True).click()
        page.wait_for_timeout(300)
    page.get_by_role("button", name="Check my answers").click()
    expect(page.get_by_text(re.compile(r"\d+ / 17")).first).to_be_visible(timeout=30_000)
    expect(page.get_by_text("That is the whole demo.")).to_be_visible()
    _no_exception_shown(page)
    _screenshot(page, shots / "6_quiz.png")

    # A student opens the teacher's shared link in a new browser session: the same experiment.
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        student = context.new_page()
        student.goto(f"{app_url}/Prompt_Lab?classroom=1&step=2&preset=skincare&techniques=role")
        expect(student.get_by_role("combobox", name="Preset")).to_have_value("Skincare campaign (role assignment)")
        _guide_step(student, 2, "Change the words")
        expect(student.get_by_role("textbox", name="Act as…")).to_have_value("a marketing expert")
        expect(student.get_by_role("textbox", name="Tone")).to_be_disabled()  # context is off in the link
        _no_exception_shown(student)
        _screenshot(student, shots / "shared_link_prompt_lab.png")
    finally:
        context.close()


LOAD_PAGES = 10
LOAD_NEW_TOKENS = 48


def test_ten_pages_press_run_both_at_once_and_all_get_both_answers(browser, app_url):
    """A class at once: ten browser sessions on one server press Run both together. The engine batches their
    twenty answers; every page must show both answers and no error. The slowest page's time is printed (a
    figure, not an assertion: a browser on the same two cores slows the model down)."""
    from playwright.sync_api import expect

    contexts = [browser.new_context(viewport={"width": 1200, "height": 900}) for _ in range(LOAD_PAGES)]
    try:
        pages = [c.new_page() for c in contexts]
        for page in pages:
            page.set_default_timeout(60_000)
            page.goto(f"{app_url}/Prompt_Lab?preset=travel&techniques=role,context")
            expect(page.get_by_role("button", name="Run both")).to_be_enabled(timeout=MODEL_READY_MS)
            page.get_by_text("Generation settings").click()
            box = page.get_by_role("spinbutton", name="Max new tokens")
            box.fill(str(LOAD_NEW_TOKENS))
            box.press("Enter")
            expect(box).to_have_value(str(LOAD_NEW_TOKENS))
        pages[-1].wait_for_timeout(1500)  # the reruns that store the new values
        started = time.monotonic()
        for page in pages:
            page.get_by_role("button", name="Run both").click()
        done_after = []
        for page in pages:
            expect(page.get_by_role("heading", name="Answers")).to_be_visible(timeout=6 * 60_000)
            done_after.append(time.monotonic() - started)
            answers = page.locator('[data-testid="stMain"] [data-testid="stText"]')
            expect(answers).to_have_count(2)
            assert all(t.strip() for t in answers.all_inner_texts())
            _no_exception_shown(page)
            assert page.locator('[data-testid="stAlert"]').filter(has_text="rror").count() == 0
        print(
            f"\n[load] {LOAD_PAGES} pages x 2 answers of up to {LOAD_NEW_TOKENS} tokens: slowest page "
            f"{max(done_after):.1f} s, fastest {min(done_after):.1f} s after the clicks"
        )
        _screenshot(pages[-1], ARTIFACTS / "load_prompt_lab_page10.png")
    finally:
        for c in contexts:
            c.close()


CRAFTED_QUERY = (
    "preset=[Sign in again](http://example.invalid/login)"
    "&techniques=![x](http://example.invalid/pixel.png),www.example.invalid,mail@example.invalid"
    "&dataset=<a href='http://example.invalid/a'>here</a>"
)
"""A phishing link: a Markdown link, a remote image, bare URLs and an e-mail address, and HTML."""


@pytest.mark.parametrize(
    "path, heading",
    [
        ("Prompt_Lab", "Prompt Lab"),
        ("Fine_Tune_Lab", "Fine-Tune Lab"),
        ("Compare", "Compare"),
        ("Token_Lens", "Token Lens"),
    ],
)
def test_a_crafted_link_shows_its_values_as_text_with_no_link_or_image(page, app_url, path, heading):
    from playwright.sync_api import expect

    page.goto(f"{app_url}/{path}?{CRAFTED_QUERY}")
    expect(page.get_by_role("heading", name=heading).first).to_be_visible()
    alerts = page.locator('[data-testid="stAlert"]')
    expect(alerts.first).to_be_visible()
    page.wait_for_timeout(1000)  # let the rest of the page draw
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
    srcs = page.eval_on_selector_all("img[src], source[srcset]", "els => els.map(e => e.src || e.srcset)")
    assert not [h for h in hrefs if "example.invalid" in h], hrefs
    assert not [s for s in srcs if "example.invalid" in s], srcs
    # The values are still named, as the text they are.
    expect(alerts.filter(has_text="[Sign in again](").first).to_be_visible()
    expect(alerts.filter(has_text="![x](").first).to_contain_text("example.invalid/pixel.png")
    expect(alerts.filter(has_text="<a href=").first).to_be_visible()
    _no_exception_shown(page)
    _screenshot(page, ARTIFACTS / f"crafted_link_{path}.png")


def test_an_upload_named_in_markdown_is_named_as_text_with_no_link_or_image(page, app_url, tmp_path):
    from playwright.sync_api import expect

    # A file name cannot hold '/', but 'https:host' is still a link to a browser.
    bad = tmp_path / "[Sign in again](https:example.invalid) ![x](https:example.invalid).jsonl"
    bad.write_text('{"prompt": "Where is my parcel?", "response": "shipping"}\n{"prompt": "broken"\n')
    page.goto(f"{app_url}/Fine_Tune_Lab")
    page.get_by_text("Upload your own").click()
    page.locator('[data-testid="stFileUploaderDropzone"] input[type="file"]').set_input_files(str(bad))
    alert = page.locator('[data-testid="stAlert"]').filter(has_text="was not loaded")
    expect(alert).to_be_visible(timeout=30_000)
    page.wait_for_timeout(1000)
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
    srcs = page.eval_on_selector_all("img[src]", "els => els.map(e => e.src)")
    assert not [h for h in hrefs if "example.invalid" in h], hrefs
    assert not [s for s in srcs if "example.invalid" in s], srcs
    shown = alert.inner_text().replace("\u2060", "")  # the word joiner that keeps bare URLs from linking
    assert "[Sign in again](https:example.invalid) ![x](https:example.invalid).jsonl was not loaded" in shown
    _no_exception_shown(page)
