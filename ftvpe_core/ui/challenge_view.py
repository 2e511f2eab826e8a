"""Views of class challenges shared by the Challenge (learner) and Teacher pages: the submission forms, each
submission's status and feedback, the leaderboards, the join code with its link and QR code, the teacher's
key step, the presenter view (one projector screen) and the teacher's controls (never projected). Names,
prompts and descriptions go through ``markdown.literal`` or into data frames, so they show as text.

The learner's page is made for a phone (390 px): examples stacked, no tables, tap targets of 24 px or more.
"""

from __future__ import annotations

import io
import time

import streamlit as st

from ftvpe_core import FtvpeError, figures, settings
from ftvpe_core.jobs import runners
from ftvpe_core.tasks import datasets, evaluate, prompts
from ftvpe_core.teaching import challenges, results
from ftvpe_core.ui import loaders, markdown, room, run_views
from ftvpe_core.ui.prompt_lab import text_to_examples

LEARNER = "pages/7_Challenge.py"
TEACHER = "pages/8_Teacher.py"
PRESENTER_ROWS = 5
PRESENTER = "Presenter (projector)"
CONTROLS = "Teacher controls"
CHART_HEIGHT = 300
"""The presenter chart's height: join box, both boards and the chart fit 1280x720 without scrolling."""
STATUS_ICONS = {"queued": "⏳", "training": "🛠️", "scoring": "🧮", "scored": "✅", "failed": "❌"}

PHONE_CSS = """<style>
/* Tap targets of at least 24x24 CSS px (WCAG 2.2, 2.5.8) on a phone. */
[data-testid="stMultiSelect"] button, [data-testid="stSelectbox"] button { min-width: 24px; min-height: 24px;
  display: inline-flex; align-items: center; justify-content: center; }
[data-testid="stCheckbox"] label, [data-testid="stToggle"] label, .stCheckbox label { min-height: 28px; }
[data-testid="stExpander"] summary { min-height: 36px; }
[data-testid="stNumberInputStepDown"], [data-testid="stNumberInputStepUp"] { min-width: 32px; min-height: 32px; }
[data-testid="stMarkdownContainer"] p { overflow-wrap: anywhere; }
</style>"""
"""Our own style sheet for the learner's page (no user or model text in it)."""

PRESENTER_CSS = """<style>
[data-testid="stMainBlockContainer"], .block-container { padding-top: 3.2rem !important; padding-bottom: 1rem; }
[data-testid="stMainBlockContainer"] [data-testid="stVerticalBlock"] { gap: 0.5rem; }
.st-key-th_join_code p { font-size: 48px !important; font-weight: 700; letter-spacing: 0.08em; margin: 0;
  font-family: monospace; line-height: 1.1; }
.st-key-th_join_link p { font-size: 18px !important; overflow-wrap: anywhere; margin: 0; line-height: 1.3; }
.st-key-th_board_prompt p, .st-key-th_board_finetune p { font-size: 24px !important; margin: 0 0 0.2rem 0;
  line-height: 1.3; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.st-key-th_board_prompt h3, .st-key-th_board_finetune h3 { font-size: 28px !important; padding: 0 0 0.3rem 0; }
.st-key-th_head p { font-size: 20px !important; margin: 0; }
</style>"""
"""Our own style sheet for the projector (no user or model text in it): fixed sizes, so classroom mode's larger
type does not push the board off the screen."""
LEARNING_RATES = (5e-4, 1e-3, 2e-3, 4e-3)
RANKS = (4, 8, 16)


def init_learner() -> None:
    ss = st.session_state
    ss.setdefault("ch_code", str(st.query_params.get("challenge", ""))[:12])
    for key, value in {
        "ch_name": "",
        "ch_joined": None,
        "ch_joined_code": None,
        "ch_joins": 0,
        "ch_token": None,
        "ch_token_link": None,
        "ch_link_tried": False,
        "ch_techniques": ["role"],
        "ch_role": "",
        "ch_examples": "",
        "ch_facts": "",
        "ch_format": "",
        "ch_tone": "",
        "ch_random": True,
        "ch_picks": [],
        "ch_lr": 2e-3,
        "ch_rank": 8,
    }.items():
        ss.setdefault(key, value)


def init_teacher() -> None:
    for key, value in {"th_code": None, "th_key": None, "th_fresh": False, "th_html": None}.items():
        st.session_state.setdefault(key, value)


@st.cache_resource(show_spinner=False, max_entries=2)
def counter(model: str | None) -> prompts.CountTokens:
    """The challenge model's token counter (its tokenizer only), shared by every session."""
    return challenges.token_counter(model)


def submit_prompt(store, code: str, name: str, fields: dict, model: str | None, device: str) -> int:
    """Submit a prompt, its tokens counted by the challenge model's tokenizer."""
    return challenges.submit_prompt(store, code, name, fields, counter(model), device)


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def closes_text(closes: float) -> str:
    left = closes - time.time()
    if left <= 0:
        return "closed"
    return f"closes at {time.strftime('%H:%M', time.localtime(closes))} ({left / 60:.0f} min left)"


# Learner


def _enter(code: str, name: str, token: str | None = None) -> None:
    ss = st.session_state
    ss.ch_joined, ss.ch_joined_code = name, challenges.normal_code(code)
    if token is not None:  # a new name: its token is shown once, and kept in the address for a reload
        ss.ch_joins += 1
        ss.ch_token, ss.ch_token_link = token, rejoin_link(ss.ch_joined_code, token)
        st.query_params.update({"challenge": ss.ch_joined_code, "rejoin": token})


def join_form(store) -> None:
    """Join under a name, or come back to yours with its rejoin token (typed, or in the link: ``?rejoin=``)."""
    ss = st.session_state
    linked = str(st.query_params.get("rejoin", ""))[:40]
    if linked and not ss.ch_link_tried:
        ss.ch_link_tried = True
        name = safely(challenges.rejoin, store, ss.ch_code, linked)
        if name is not None:
            _enter(ss.ch_code, name)
            st.rerun()
    with st.form("ch_join"):
        st.text_input("Join code (from your teacher's screen)", key="ch_code", max_chars=12)
        st.text_input("Your display name", key="ch_name", max_chars=challenges.MAX_NAME_CHARS)
        pressed = st.form_submit_button("Join", type="primary")
    if pressed:
        joined = safely(challenges.join, store, ss.ch_code, ss.ch_name, ss.ch_joins)
        if joined is not None:
            _enter(ss.ch_code, str(joined), joined.token)
            st.rerun()
    with st.expander("Rejoin with my token (after a reload, in a new tab or on another device)"):
        with st.form("ch_rejoin"):
            st.text_input("Your rejoin token", key="ch_rejoin_token", max_chars=40, type="password")
            if st.form_submit_button("Rejoin"):
                name = safely(challenges.rejoin, store, ss.ch_code, ss.ch_rejoin_token)
                if name is not None:
                    _enter(ss.ch_code, name)
                    st.rerun()


def token_note() -> None:
    """A new name's rejoin token and link, once, until the learner says they kept them."""
    ss = st.session_state
    if not ss.ch_token:
        return
    with st.container(border=True):
        st.markdown(
            "**Keep this rejoin token: it is shown only this once.** It brings you back to your name and your "
            "submissions after a reload, in a new tab or on another device; nobody else can take your name. "
            "Bookmark the link, or note the token (capitals count)."
        )
        st.code(ss.ch_token, language=None)
        st.code(ss.ch_token_link, language=None, wrap_lines=True)
        st.button("I have kept it", key="ch_kept", on_click=lambda: ss.update(ch_token=None, ch_token_link=None))


def switch_name() -> None:
    """Leave this name (its token brings it back) to join under another; the session's joins still count."""
    ss = st.session_state

    def leave() -> None:
        ss.update(ch_joined=None, ch_joined_code=None, ch_token=None, ch_token_link=None, ch_name="")
        st.query_params.pop("rejoin", None)

    st.button("Not you? Join under another name", key="ch_switch", on_click=leave)


def prompt_form() -> dict:
    """The Prompt Lab's techniques and fields (no task: each hidden input is the task); returns the fields."""
    ss = st.session_state
    st.multiselect(
        "Techniques", prompts.TECHNIQUES, key="ch_techniques", format_func=lambda t: prompts.TECHNIQUE_LABELS[t]
    )
    c1, c2 = st.columns(2)
    limit = challenges.FIELD_CHARS
    c1.text_input(
        "Role: who answers",
        key="ch_role",
        placeholder="a customer-support triage assistant",
        max_chars=limit["role"],
    )
    c1.text_area(
        "Few-shot examples, one a line: input => output", key="ch_examples", height=120, max_chars=limit["examples"]
    )
    c2.text_area("Context: background and instructions", key="ch_facts", height=80, max_chars=limit["facts"])
    c2.text_input(
        "Context: answer format", key="ch_format", placeholder="a single word", max_chars=limit["output_format"]
    )
    c2.text_input("Context: tone", key="ch_tone", max_chars=limit["tone"])
    filled = {"role": ss.ch_role, "few-shot": ss.ch_examples, "context": ss.ch_facts or ss.ch_format or ss.ch_tone}
    unused = [t for t, text in filled.items() if text.strip() and t not in ss.ch_techniques]
    if unused:
        names = ", ".join(prompts.TECHNIQUE_LABELS[t] for t in unused)
        st.warning(f"Filled in but switched off, so not sent: {names}. Add it under Techniques to use it.")
    return {
        "enabled": tuple(ss.ch_techniques),
        "role": ss.ch_role,
        "examples": text_to_examples(ss.ch_examples),
        "facts": ss.ch_facts,
        "output_format": ss.ch_format,
        "tone": ss.ch_tone,
    }


def finetune_form(info: dict, train: list[dict]) -> tuple[int, int | list[int], float, int]:
    """Steps, examples (a count drawn at random or the picked indices), learning rate and rank."""
    ss = st.session_state
    ss.setdefault("ch_steps", info["max_steps"])
    ss.setdefault("ch_count", info["max_train_examples"])
    c1, c2 = st.columns(2)
    c1.number_input(f"Training steps (at most {info['max_steps']})", 1, info["max_steps"], key="ch_steps")
    c1.select_slider("Learning rate", LEARNING_RATES, key="ch_lr", format_func=lambda v: f"{v:g}")
    c1.select_slider("LoRA rank", RANKS, key="ch_rank")
    c2.toggle("Draw the training examples at random", key="ch_random")
    if ss.ch_random:
        c2.number_input(
            f"How many (at most {info['max_train_examples']})", 1, info["max_train_examples"], key="ch_count"
        )
        examples: int | list[int] = int(ss.ch_count)
    else:
        c2.multiselect(
            f"Pick up to {info['max_train_examples']} training examples",
            list(range(len(train))),
            key="ch_picks",
            format_func=lambda i: f"{i + 1}. {train[i]['response']}: {train[i]['prompt'][:70]}",
        )
        examples = list(ss.ch_picks)
    return int(ss.ch_steps), examples, float(ss.ch_lr), int(ss.ch_rank)


def phone_style() -> None:
    """The learner page's style sheet: tap targets of at least 24 px, long words wrapped."""
    st.markdown(PHONE_CSS, unsafe_allow_html=True)  # our own CSS; no user or model text in it


def training_examples(info: dict) -> None:
    """The training split's first examples, each its input then its answer, stacked (no table: it would cut the
    label off on a phone), with the allowed answers above them."""
    with st.expander(f"Examples from the training split ({info['train_size']} in all)", expanded=True):
        if info["labels"]:
            st.markdown("**Allowed answers:** " + markdown.literal(", ".join(info["labels"])))
        for e in info["examples"]:
            with st.container(border=True):
                st.markdown(markdown.literal(e["prompt"]))
                st.markdown("**→** " + markdown.literal(e["response"]))


def submitted(sid: int, what: str) -> None:
    """A short notice after Submit; the submission's card below then tells its status as it changes."""
    st.toast(f"Submission {sid} is in: {what}. Its status is under “Your submissions”.", icon="📨")


def history(store, code: str, entries: list[dict], metric: str) -> None:
    """A learner's own submissions, newest first, each a card: its status told truthfully (queued with its
    place and start, training step k of n, scoring k of n, scored), then its score, cost and feedback."""
    if not entries:
        st.caption("No submissions yet.")
        return
    waiting = any(e["score"] is None and e["status"] not in ("failed", "removed", "interrupted") for e in entries)
    # the queue is read only while something waits: thirty phones poll this every two seconds
    runs = room.score_runs(store, code) if waiting else {}
    slots = runners.current().slots(store) if waiting else None
    words = figures.metric_words(metric)
    for e in reversed(entries):
        status = room.status(store, e, runs.get(e["id"]), slots)
        with st.container(border=True, key=f"ch_card_{e['id']}"):
            when = time.strftime("%H:%M", time.localtime(e["created"]))
            st.markdown(
                f"**#{e['id']} · {challenges.TRACK_LABELS[e['track']]}** · {when} · {markdown.literal(_cost(e))}"
            )
            icon = STATUS_ICONS.get(status.phase, "⚠️")
            with st.container(key=f"ch_status_{e['id']}"):
                st.markdown(f"{icon} **{status.phase}** · {markdown.literal(status.text)}")
                if status.phase in ("training", "scoring") and status.fraction is not None:
                    st.progress(min(max(float(status.fraction), 0.0), 1.0))
            if e["score"] is not None:
                st.markdown(f"### {pct(e['score'])} {markdown.literal(words)}")
                for line in room.feedback_lines(e.get("feedback")):
                    st.markdown("- " + markdown.literal(line))
            if e["error"]:
                st.warning(f"Submission {e['id']} failed: {markdown.literal(e['error'])}")


def _cost(e: dict) -> str:
    if e["track"] == "prompt":
        return f"+{e['prompt_tokens']} prompt tokens"  # what the prompt adds, never a hidden input's length
    trained = f", {e['train_seconds']:.0f} s training" if e["train_seconds"] is not None else ""
    return f"{e['train_examples']} examples{trained}"


def leaderboard(board: dict, metric: str, presenter: bool = False, columns=None) -> None:
    """Both tracks side by side (stacked on a phone), each learner's best as a line of text; on the projector
    the top rows in large type and a count of the rest.

    Args:
        columns: two columns to draw the tracks in (two new ones when None).
    """
    for col, track in zip(columns or st.columns(2), challenges.TRACKS):
        entries = board.get(track) or []
        with col.container(key=f"th_board_{track}" if presenter else f"ch_board_{track}"):
            st.markdown(f"### {'✍️' if track == 'prompt' else '🛠️'} {challenges.TRACK_LABELS[track]}")
            if not entries:
                st.caption("No scores yet.")
                continue
            shown = entries[:PRESENTER_ROWS] if presenter else entries
            for e in shown:
                if presenter:  # score first: a long name is what the row's ellipsis cuts
                    st.markdown(f"**{e['rank']}.** **{pct(e['score'])}** {markdown.literal(e['name'])}")
                else:
                    st.markdown(
                        f"**{e['rank']}.** {markdown.literal(e['name'])} · **{pct(e['score'])}** · "
                        f"{markdown.literal(_cost(e))}"
                    )
            if presenter and len(entries) > PRESENTER_ROWS:
                st.caption(f"and {len(entries) - PRESENTER_ROWS} more")
    if not presenter:
        st.caption(f"Each learner's best {figures.metric_words(metric)}; ties go to the cheaper, then the earlier.")


# Teacher


def create_form(teaching: bool) -> tuple[challenges.ChallengeSettings, datasets.Dataset | None] | None:
    """The new-challenge form; returns the settings (and an upload) when the teacher presses Create. The upload
    is offered in classroom mode (``teaching``) too: a teacher's own data is the surest hidden set."""
    with st.form("th_create"):
        c1, c2 = st.columns(2)
        task = c1.selectbox("Task", datasets.BUILTINS, key="th_task")
        upload = c1.file_uploader("…or your own JSONL/CSV", type=["jsonl", "csv", "json"], key="th_upload")
        c1.caption(
            "A built-in task is scored on its held-back set: examples written for challenges that no page shows. "
            f"An upload is scored on the split you pick below (at least {challenges.MIN_HIDDEN} examples)."
        )
        title = c1.text_input("Title for the class (optional)", key="th_title", max_chars=120)
        hidden = c1.radio("Hidden split of an upload", challenges.HIDDEN_SPLITS, key="th_hidden", horizontal=True)
        metric = c1.selectbox("Metric", ["(the task's own)", *evaluate.METRICS], key="th_metric")
        tracks = c2.radio("Tracks", tuple(challenges.TRACK_CHOICES), key="th_tracks", horizontal=True)
        tokens = c2.number_input("Prompt budget: tokens added to each input", 1, 8192, 300, key="th_tokens")
        examples = c2.number_input("Fine-tune budget: training examples", 1, 5000, 40, key="th_examples")
        steps = c2.number_input("Fine-tune budget: training steps", 1, 2000, 40, key="th_steps")
        minutes = c2.number_input("Open for (minutes)", 1, 7 * 24 * 60, 45, key="th_minutes")
        limit = c2.number_input("Hidden examples scored (0 = all)", 0, 5000, 20, key="th_limit")
        learners = c1.number_input("Most learners", 1, 1000, 60, key="th_learners")
        joins = c1.number_input("Names one browser may join under", 1, 100, 3, key="th_joins")
        queued = c1.number_input("Most submissions waiting to be scored", 1, 1000, 40, key="th_queued")
        if not st.form_submit_button("Create the challenge", type="primary"):
            return None
    data = datasets.parse_upload(upload.getvalue(), upload.name) if upload is not None else None
    settings = challenges.ChallengeSettings(
        task=data.name if data else task,
        title=title,
        hidden_split=hidden,
        tracks=tracks,
        metric=None if metric.startswith("(") else metric,
        max_prompt_tokens=int(tokens),
        max_train_examples=int(examples),
        max_steps=int(steps),
        minutes=int(minutes),
        hidden_limit=int(limit),
        model=loaders.choice()["name"],
        max_learners=int(learners),
        max_joins=int(joins),
        max_queued=int(queued),
    )
    return settings, data


def network_url() -> str | None:
    """This server's address on the network, as ``streamlit run`` prints it ("Network URL"): the configured
    browser.serverAddress, a server.address bound to one interface, else this machine's own IP; with the
    server's port and base path."""
    from streamlit import config, net_util
    from streamlit.web.server import server_util

    try:
        if config.is_manually_set("browser.serverAddress"):
            return server_util.get_url(config.get_option("browser.serverAddress"))
        bound = config.get_option("server.address")
        if config.is_manually_set("server.address") and bound not in ("0.0.0.0", "::"):
            return server_util.get_url(bound)
        ip = net_util.get_internal_ip()
        return server_util.get_url(ip) if ip else None
    except Exception:  # noqa: BLE001 - no server config (a test): nothing known
        return None


def join_address() -> room.JoinAddress:
    """Where learners' phones reach this app: FTVPE_PUBLIC_URL, the browser's address, or the network's."""
    try:
        browser = st.context.url
    except Exception:  # noqa: BLE001 - no browser context (tests)
        browser = None
    try:
        public = settings.public_url()
    except FtvpeError as e:
        st.error(markdown.literal(e))
        public = None
    return room.join_address(browser, network_url(), public)


def join_link(code: str) -> str:
    """The address learners open: the Challenge page with the code, on an address a phone can reach."""
    return room.join_link(join_address().origin, code)


def rejoin_link(code: str, token: str) -> str:
    """The join link with a learner's rejoin token: opening it brings them back to their name."""
    return f"{join_link(code)}&rejoin={token}"


def qr_png(text: str) -> bytes:
    import segno

    buffer = io.BytesIO()
    segno.make(text, error="m").save(buffer, kind="png", scale=8, border=2)
    return buffer.getvalue()


def join_box(code: str, left=None, right=None) -> None:
    """The join code in large type, the link (as text) and its QR code, and which address the link uses.

    Args:
        left, right: the columns for the code and link, and for the QR code (two new ones when None).
    """
    address = join_address()
    link = room.join_link(address.origin, code)
    if left is None or right is None:
        left, right = st.columns([3, 2], vertical_alignment="top")
    with left:
        st.caption("Join code")
        with st.container(key="th_join_code"):
            st.markdown(code)  # our own code: letters and digits only
        with st.container(key="th_join_link"):
            st.markdown(markdown.literal(link))
        if address.warning:
            st.warning(markdown.literal(address.warning), icon="⚠️")
        else:
            st.caption(f"Via {markdown.literal(address.source)}")
    right.image(qr_png(link), caption="Scan to join", width=150)


def key_step(key: str, code: str) -> bool:
    """The teacher key, shown once, alone on the screen (no join code, no board): a step before the presenter
    view. Returns whether the teacher has moved on."""
    with st.container(border=True, key="th_key_step"):
        st.markdown(
            "**Your teacher key, shown only this once.** Keep it to reopen this view, close the challenge or "
            "export its results; only a salted hash of it is stored. It is not shown on the presenter view."
        )
        st.code(key, language=None)
        st.download_button(
            "Download the key as a text file",
            f"Teacher key for challenge {code}: {key}\n",
            f"teacher-key-{code}.txt",
            "text/plain",
            key="th_key_download",
        )
        return st.button("I have saved the key: open the presenter view", type="primary", key="th_saved")


def view_switch() -> str:
    """Presenter (what the projector shows) or the teacher's controls (key actions, reveal): one at a time."""
    st.session_state.setdefault("th_view", PRESENTER)
    return st.sidebar.radio(
        "Teacher view",
        (PRESENTER, CONTROLS),
        key="th_view",
        help="Project the presenter view; the controls (close, export, remove, reveal) stay off the projector.",
    )


def presenter(store, challenge: challenges.Challenge) -> None:
    """The projector's screen: join code, link and QR code, both live boards and the chart, in one screen at
    1280x720 and up; the track summary and the best pair below the fold."""
    code = challenge.code
    metric = challenge.settings.metric or challenge.data.metric
    st.markdown(PRESENTER_CSS, unsafe_allow_html=True)  # our own CSS; no user or model text in it

    @st.fragment(run_every=3.0)
    def live() -> None:  # everything it draws is inside it: a fragment's rerun replaces only its own output
        run_views.tick(store)
        entries = results.submissions(store, code)
        with st.container(key="th_head"):
            st.markdown(f"🏁 **{markdown.literal(challenge.title)}** · {closes_text(challenge.closes)}")
        join, qr, *boards = st.columns([1.25, 0.8, 1, 1], vertical_alignment="top")
        join_box(code, join, qr)
        leaderboard(results.leaderboard(store, code, entries), metric, presenter=True, columns=boards)
        fig = figures.challenge_scores(entries, metric, height=CHART_HEIGHT)
        st.plotly_chart(fig, key="th_chart", width="stretch", config={"displayModeBar": False})
        summary(entries)
        best_side_by_side(results.best_pair(store, code))

    live()


def summary(entries: list[dict]) -> None:
    """Each track's count, mean and best score, and its mean cost."""
    st.dataframe(
        [
            {
                "track": challenges.TRACK_LABELS[t],
                "scored": s["n"],
                "mean": pct(s["mean_score"]),
                "best": pct(s["best_score"]),
                "prompt tokens a call": "–" if s["mean_prompt_tokens"] is None else f"{s['mean_prompt_tokens']:.0f}",
                "training s": "–"
                if t == "prompt" or s["mean_train_seconds"] is None
                else f"{s['mean_train_seconds']:.0f}",
            }
            for t, s in results.track_summary(entries).items()
        ],
        hide_index=True,
        width="stretch",
    )


def controls(store, challenge: challenges.Challenge, key: str) -> None:
    """The teacher's actions, off the projector: close or reopen, exports, remove a submission, the final
    ranking and the hidden examples. Each needs the key (kept in this browser session only)."""
    ss, code = st.session_state, challenge.code
    st.info("This view is not for the projector: it can show the hidden examples.", icon="🔒")
    st.markdown(f"**{markdown.literal(challenge.title)}** · code {code} · {closes_text(challenge.closes)}")
    st.caption(challenges.hidden_source(challenge))
    c1, c2, c3, c4 = st.columns(4)
    if challenge.open:
        c1.button("Close the challenge", key="th_close", on_click=safely, args=(challenges.close, store, code, key))
    else:
        c1.button("Reopen for 30 min", key="th_reopen", on_click=safely, args=(challenges.reopen, store, code, key))
    c2.download_button(
        "Results as CSV", results.export_csv(store, code, key), f"challenge-{code}.csv", "text/csv", key="th_csv"
    )
    if c3.button("Prepare the HTML report", key="th_prepare"):
        from ftvpe_core.studies import report

        ss.th_html = report.challenge_html(results.export(store, code, key))
    if ss.th_html:
        c3.download_button("Download the report", ss.th_html, f"challenge-{code}.html", "text/html", key="th_report")
    c4.button("Lock this view", key="th_lock", on_click=lambda: ss.update(th_code=None, th_key=None, th_fresh=False))
    st.markdown(
        f"⚖️ [Score the best prompt and the best run in Compare](/Compare?challenge={code}) (the key is asked there)"
    )
    with st.expander("Final ranking"):
        final_ranking(store, challenge, key)
    with st.expander("Remove a submission"):
        entries = results.submissions(store, code)
        ids = [e["id"] for e in entries]
        labels = {e["id"]: f"{e['id']} · {e['name']} · {e['track']} · {pct(e['score'])}" for e in entries}
        chosen = st.selectbox("Submission", ids, key="th_remove_id", format_func=labels.get)
        if st.button("Remove it", key="th_remove", disabled=chosen is None):
            safely(challenges.remove_submission, store, code, key, chosen)
            st.rerun()
    with st.expander("Reveal the hidden examples (never shown to learners)"):
        if st.toggle("Show them here", key="th_reveal"):
            st.dataframe(challenges.reveal(store, code, key), hide_index=True, width="stretch")


def final_ranking(store, challenge: challenges.Challenge, key: str) -> None:
    """The ranking the teacher announces at the end, for the teacher's eyes: every learner's best per track on
    the private part of the hidden set, which no learner's board ever showed (``results.final``)."""
    board = results.final(store, challenge.code, key)
    metric = challenge.settings.metric or challenge.data.metric
    st.caption("Ranked on the private part of the hidden examples; the live board showed the public part only.")
    for track in challenges.TRACKS:
        rows = [{"#": e["rank"], "name": e["name"], "score": pct(e["score"]), "cost": _cost(e)} for e in board[track]]
        st.markdown(f"**{challenges.TRACK_LABELS[track]}** ({figures.metric_words(metric)})")
        st.dataframe(rows, hide_index=True, width="stretch")


def best_side_by_side(best: dict) -> None:
    """The best prompt and the best fine-tune, each with its score, cost and recipe (as text)."""
    for col, track in zip(st.columns(2), challenges.TRACKS):
        e = best.get(track)
        with col.container(border=True):
            st.markdown(f"**Best {challenges.TRACK_LABELS[track].lower()}**")
            if e is None:
                st.caption("Nobody has a score on this track yet.")
                continue
            st.markdown(f"{markdown.literal(e['name'])} · **{pct(e['score'])}** · {markdown.literal(_cost(e))}")
            st.text(results.describe(e))
            if track == "prompt":
                p = e["spec"]["prompt"]
                built = prompts.build(prompts.PromptSpec.from_dict({**p, "task": challenges.PLACEHOLDER}))
                text = "\n\n".join(f"[{m['role']}] {m['content']}" for m in built.messages)
                st.code(text, language=None, wrap_lines=True)


def safely(action, *args):
    """Run a core action; a user error becomes a message on the page (as text), and None comes back."""
    try:
        return action(*args)
    except FtvpeError as e:
        st.error(markdown.literal(e))
        return None
