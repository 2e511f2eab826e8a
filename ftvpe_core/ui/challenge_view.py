"""Views of class challenges shared by the Challenge (learner) and Teacher pages: the submission forms, the
history and leaderboards (in presenter type on the projector), the join code with its link and QR code, and
the teacher's form. Names, prompts and descriptions go through ``markdown.literal`` or into data frames, so
they show as text.
"""

from __future__ import annotations

import io
import time

import streamlit as st

from ftvpe_core import FtvpeError, challenges, datasets, evaluate, figures, prompts
from ftvpe_core.ui import loaders, markdown
from ftvpe_core.ui.prompt_lab import text_to_examples

LEARNER = "pages/7_Challenge.py"
TEACHER = "pages/8_Teacher.py"
PRESENTER_ROWS = 5
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


def history(entries: list[dict]) -> None:
    """A learner's own submissions: status, score, cost and time; a failure's reason as text."""
    if not entries:
        st.caption("No submissions yet.")
        return
    rows = [
        {
            "#": e["id"],
            "track": challenges.TRACK_LABELS[e["track"]],
            "status": e["status"],
            "score": pct(e["score"]),
            "cost": _cost(e),
            "time": time.strftime("%H:%M:%S", time.localtime(e["created"])),
            "now": e["progress"] if e["status"] in ("waiting", "training", "scoring") else "",
        }
        for e in reversed(entries)
    ]
    st.dataframe(rows, hide_index=True, width="stretch")
    for e in entries:
        if e["error"]:
            st.warning(f"Submission {e['id']} failed: {markdown.literal(e['error'])}")


def _cost(e: dict) -> str:
    if e["track"] == "prompt":
        return f"+{e['prompt_tokens']} prompt tokens"  # what the prompt adds, never a hidden input's length
    trained = f", {e['train_seconds']:.0f} s training" if e["train_seconds"] is not None else ""
    return f"{e['train_examples']} examples{trained}"


def leaderboard(board: dict, metric: str, presenter: bool = False) -> None:
    """Both tracks side by side: the top in large type on the projector, then every learner's best."""
    words = figures.metric_words(metric)
    for col, track in zip(st.columns(2), challenges.TRACKS):
        with col:
            entries = board.get(track) or []
            st.subheader(f"{'✍️' if track == 'prompt' else '🛠️'} {challenges.TRACK_LABELS[track]}")
            if not entries:
                st.caption("No scores yet.")
                continue
            if presenter:
                for e in entries[:PRESENTER_ROWS]:
                    st.markdown(f"### {e['rank']}. {markdown.literal(e['name'])} · {pct(e['score'])}")
            rows = [{"#": e["rank"], "name": e["name"], words: pct(e["score"]), "cost": _cost(e)} for e in entries]
            st.dataframe(rows, hide_index=True, width="stretch")


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


def join_link(code: str) -> str:
    """The address learners open: this server's origin, the Challenge page, the code."""
    try:
        url = st.context.url or ""
    except Exception:  # noqa: BLE001 - no browser context (tests): a local address
        url = ""
    origin = "/".join(url.split("/")[:3]) if url.startswith("http") else "http://localhost:8501"
    return f"{origin}/Challenge?challenge={code}"


def rejoin_link(code: str, token: str) -> str:
    """The join link with a learner's rejoin token: opening it brings them back to their name."""
    return f"{join_link(code)}&rejoin={token}"


def qr_png(text: str) -> bytes:
    import segno

    buffer = io.BytesIO()
    segno.make(text, error="m").save(buffer, kind="png", scale=8, border=2)
    return buffer.getvalue()


def join_box(code: str) -> None:
    """The join code and link in large type, with a QR code of the link."""
    link = join_link(code)
    left, right = st.columns([3, 1])
    with left:
        st.markdown(f"# Join code: `{code}`")  # our own code: letters and digits only
        st.markdown(f"### {markdown.literal(link)}")
    right.image(qr_png(link), caption="Scan to join", width=200)


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
            st.text(challenges.describe(e))
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
