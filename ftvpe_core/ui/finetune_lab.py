"""Session state of the Fine-Tune Lab: widget keys <-> TrainSettings, the dataset choice and upload, the chat."""

from __future__ import annotations

import dataclasses
import time

import streamlit as st

from ftvpe_core import FtvpeError
from ftvpe_core.model import adapters, generation, models
from ftvpe_core.settings import GenerationSettings
from ftvpe_core.store.runs import RunStore
from ftvpe_core.tasks import datasets
from ftvpe_core.teaching import content
from ftvpe_core.training import finetune
from ftvpe_core.ui import loaders, markdown
from ftvpe_core.ui import run_views as views

DEFAULT_PRESET = "quick"
PAGE = "pages/2_Fine_Tune_Lab.py"
SOURCES = ("Built-in", "Upload your own")
KEYS = {
    "ft_rank": "rank",
    "ft_alpha": "alpha",
    "ft_dropout": "dropout",
    "ft_lr": "learning_rate",
    "ft_steps": "max_steps",
    "ft_epochs": "epochs",
    "ft_batch": "batch_size",
    "ft_max_len": "max_length",
    "ft_warmup": "warmup_fraction",
    "ft_wd": "weight_decay",
    "ft_eval_every": "eval_every",
    "ft_patience": "early_stopping_patience",
    "ft_targets": "target_modules",
    "ft_max_train": "max_train_examples",
    "ft_max_val": "max_val_examples",
    "ft_restore_best": "restore_best",
    "ft_bf16": "bf16",
    "ft_seed": "seed",
}
"""Widget key -> TrainSettings field: one widget per field."""
UPLOADED = "ft_uploaded"
UPLOAD_ERROR = "ft_upload_error"
CHATS = "ft_chats"
LENGTHS = "ft_lengths"
CHAT_SETTINGS = GenerationSettings(max_new_tokens=80)
LIMITS: dict[str, tuple[float, float | None]] = {
    "rank": (1, 256),
    "alpha": (0.0, 4096.0),
    "dropout": (0.0, 0.9),
    "learning_rate": (1e-6, 0.1),
    "max_steps": (1, finetune.MAX_STEPS),
    "epochs": (0.0, float(finetune.MAX_EPOCHS)),
    "batch_size": (1, 256),
    "max_length": (16, 4096),
    "warmup_fraction": (0.0, 0.5),
    "weight_decay": (0.0, 1.0),
    "eval_every": (1, None),
    "early_stopping_patience": (0, None),
    "max_train_examples": (0, None),
    "max_val_examples": (0, None),
    "seed": (0, None),
}
"""TrainSettings' limits per field, (lowest, highest or None), stated beside each box. The boxes themselves
have no min/max: a widget would silently put back its default, while TrainSettings names the limit and
Launch waits (tests/test_finetune_pages.py holds these to TrainSettings' checks)."""
ABOVE_LOWEST = ("alpha",)
"""Fields whose lowest value is itself refused (alpha must be above 0)."""


def init() -> None:
    """Widget defaults on first visit: the quick preset on support triage."""
    ss = st.session_state
    if "ft_rank" not in ss:
        ss.ft_preset = DEFAULT_PRESET
        apply_preset()
    ss.setdefault("ft_source", SOURCES[0])
    ss.setdefault("ft_dataset", datasets.BUILTINS[0])
    if "ft_run" not in ss:  # also the "Showing run" menu's key: set before the menu is drawn
        ss.ft_run = None
    for key in (UPLOADED, UPLOAD_ERROR):
        ss.setdefault(key, None)
    ss.setdefault(CHATS, {})
    ss.setdefault(LENGTHS, {})


def apply_url_state(state: dict) -> None:
    """An experiment from a link (``ftvpe_core.teaching.classroom.decode``): a built-in dataset and a training preset."""
    ss = st.session_state
    if "dataset" in state:
        ss.ft_source, ss.ft_dataset = SOURCES[0], state["dataset"]
    if "train" in state:
        ss.ft_preset = state["train"]
        apply_preset()


def url_state() -> dict:
    """The experiment to keep in the URL: the built-in dataset (not an upload) and the training preset."""
    ss = st.session_state
    return {"dataset": ss.ft_dataset if ss.ft_source == SOURCES[0] else None, "train": ss.ft_preset}


def apply_preset() -> None:
    """Callback of the preset choice: every knob to the preset's value."""
    values = {**dataclasses.asdict(finetune.TrainSettings()), **finetune.PRESETS[st.session_state.ft_preset].values}
    for key, name in KEYS.items():
        value = values[name]
        st.session_state[key] = list(value) if isinstance(value, (tuple, list)) else value


def settings_from_widgets() -> finetune.TrainSettings:
    """TrainSettings from the widgets; raises FtvpeError with the knob's problem."""
    ss = st.session_state
    values = {name: ss[key] for key, name in KEYS.items()}
    for name in (
        "rank",
        "max_steps",
        "batch_size",
        "max_length",
        "eval_every",
        "early_stopping_patience",
        "max_train_examples",
        "max_val_examples",
        "seed",
    ):
        if isinstance(values[name], float) and values[name].is_integer():
            values[name] = int(values[name])
    return finetune.TrainSettings(**values)


def on_upload() -> None:
    """Callback of the file uploader: accept a valid file; a bad one leaves the previous upload in place."""
    ss = st.session_state
    uploaded = ss.get("ft_upload")
    if uploaded is None:
        return
    try:
        ss[UPLOADED] = datasets.parse_upload(uploaded.getvalue(), uploaded.name)
        ss[UPLOAD_ERROR] = None
    except datasets.UploadError as e:
        ss[UPLOAD_ERROR] = {"summary": str(e), "problems": e.shown()}
    except FtvpeError as e:
        ss[UPLOAD_ERROR] = {"summary": str(e), "problems": []}


def chosen_dataset() -> datasets.Dataset | None:
    """The built-in dataset picked, or the accepted upload (None before one is accepted)."""
    ss = st.session_state
    if ss.ft_source == SOURCES[1]:
        return ss[UPLOADED]
    return loaders.dataset(ss.ft_dataset)


def launch_target() -> str | datasets.Dataset:
    """What to queue: a built-in's name (the job loads it), or the accepted upload itself (saved with the run)."""
    ss = st.session_state
    return ss.ft_dataset if ss.ft_source == SOURCES[0] else ss[UPLOADED]


def lengths(tokenizer, data: datasets.Dataset) -> dict[str, list[int]]:
    """Tokens per example and split as training sees them (chat template included), cached per session."""
    key = (id(tokenizer), data.name, tuple(data.sizes().values()))
    cache = st.session_state[LENGTHS]
    if key not in cache:
        cache[key] = {
            split: [len(finetune.encode_example(tokenizer, e, 1 << 20)["input_ids"]) for e in examples]
            for split, examples in data.splits.items()
        }
    return cache[key]


def preview_rows(data: datasets.Dataset, n: int = 20) -> list[dict]:
    return [{"prompt": e.prompt, "response": e.response} for e in data.splits.get("train", [])[:n]]


def ask_both(base: models.LoadedModel, tuned: models.LoadedModel, run_id: str, prompt: str) -> None:
    """Answer one message with the base and the tuned model and keep it in this session's chat."""
    messages = [{"role": "user", "content": prompt}]
    turn = {"prompt": prompt, "time": time.strftime("%H:%M:%S")}
    for label, loaded in (("base", base), ("tuned", tuned)):
        result = generation.generate(loaded, messages, CHAT_SETTINGS)
        turn[label] = result.text
        speed = f" · {result.tokens_per_s:.0f} tokens/s" if result.new_tokens > 1 else ""
        turn[f"{label}_stats"] = f"{result.new_tokens} token{'s' if result.new_tokens != 1 else ''}{speed}"
    st.session_state[CHATS].setdefault(run_id, []).append(turn)


def _number(value: float) -> str:
    """1e-06 -> '0.000001', 20000 -> '20,000', 0.5 -> '0.5'."""
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.10f}".rstrip("0").rstrip(".")


def limit_text(name: str) -> str:
    """The allowed values of a TrainSettings field, as a sentence: 'Between 1 and 256.'"""
    low, high = LIMITS[name]
    if name in ABOVE_LOWEST:
        return f"Above {_number(low)}, at most {_number(high)}."
    return f"Between {_number(low)} and {_number(high)}." if high is not None else f"{_number(low)} or more."


def _help(name: str) -> str:
    """A knob's explanation and its limits: the tooltip beside its box."""
    return f"{content.TRAIN_KNOBS[name]} {limit_text(name)}"


def advanced_settings() -> None:
    """Every TrainSettings knob with its explanation and limits, in an expander. No box clamps: a value out
    of range reaches TrainSettings, whose message the page shows (and Launch waits)."""
    h = content.TRAIN_KNOBS
    with st.expander("Advanced settings: every knob, explained"):
        a, b, c, d = st.columns(4)
        a.number_input("LoRA rank r", key="ft_rank", step=1, help=_help("rank"))
        b.number_input("LoRA alpha", key="ft_alpha", step=1.0, help=_help("alpha"))
        c.number_input("Dropout", key="ft_dropout", step=0.05, help=_help("dropout"))
        d.number_input("Learning rate", key="ft_lr", step=1e-4, format="%g", help=_help("learning_rate"))
        a.number_input("Steps", key="ft_steps", step=1, help=_help("max_steps"))
        b.number_input("Epochs (0 = use steps)", key="ft_epochs", step=0.5, help=_help("epochs"))
        c.number_input("Batch size", key="ft_batch", step=1, help=_help("batch_size"))
        d.number_input("Max length (tokens)", key="ft_max_len", step=1, help=_help("max_length"))
        a.number_input("Warmup share", key="ft_warmup", step=0.05, help=_help("warmup_fraction"))
        b.number_input("Weight decay", key="ft_wd", step=0.01, help=_help("weight_decay"))
        c.number_input("Evaluate every (steps)", key="ft_eval_every", step=1, help=_help("eval_every"))
        d.number_input("Early stopping patience", key="ft_patience", step=1, help=_help("early_stopping_patience"))
        a.number_input("Train examples (0 = all)", key="ft_max_train", step=1, help=_help("max_train_examples"))
        b.number_input("Validation examples (0 = all)", key="ft_max_val", step=1, help=_help("max_val_examples"))
        c.number_input("Seed", key="ft_seed", step=1, help=_help("seed"))
        d.toggle("Keep the best adapter", key="ft_restore_best", help=h["restore_best"])
        d.toggle("bfloat16 compute", key="ft_bf16", help=h["bf16"])
        st.multiselect("Layers to adapt", finetune.TARGET_MODULES, key="ft_targets", help=h["target_modules"])


def data_source(teaching: bool) -> None:
    """The dataset pickers: a built-in one, or an upload (its problems listed, the previous upload kept)."""
    ss = st.session_state
    if not teaching:
        st.radio("Dataset", SOURCES, key="ft_source", horizontal=True)
    if ss.ft_source == SOURCES[0]:
        st.selectbox(
            "Built-in dataset", datasets.BUILTINS, key="ft_dataset", format_func=lambda n: loaders.dataset(n).title
        )
        return
    st.file_uploader(
        "JSONL or CSV with prompt/response columns, or chat messages (up to 5 MB, 5,000 rows)",
        type=["jsonl", "ndjson", "json", "csv", "tsv"],
        key="ft_upload",
        on_change=on_upload,
    )
    if ss[UPLOAD_ERROR]:
        st.error(markdown.literal(ss[UPLOAD_ERROR]["summary"]))  # it quotes the file
        st.markdown("\n".join(f"- {markdown.literal(p)}" for p in ss[UPLOAD_ERROR]["problems"]))
        if ss[UPLOADED]:
            st.caption(f"Still using your previous upload, {markdown.literal(ss[UPLOADED].title)}.")


def live(store: RunStore, run_id: str | None, active: bool) -> None:
    """The queue and the shown run's progress, curves and sample answers, redrawn every 1.5 s while runs are
    active; when the shown run ends, the whole page reruns (its summary and the chat appear)."""
    st.fragment(run_every=1.5 if active else None)(_live)(store, run_id)


def _live(store: RunStore, run_id: str | None) -> None:
    ss = st.session_state
    views.tick(store)
    views.queue_summary(store)
    now_active = [r for r in reversed(views.listed(store)) if r.active]  # running first, then the queue
    for r in now_active:
        a, b = st.columns([6, 1])
        a.markdown(f"{markdown.literal(views.label(r))} · {r.status}" + (" · stopping…" if r.cancel_requested else ""))
        b.button(
            "Cancel", key=f"ft_cancel_{r.id}", on_click=store.request_cancel, args=(r.id,), disabled=r.cancel_requested
        )
    if run_id is None:
        st.info("Launch a run to see its progress here. Other sessions' jobs appear here too.")
        return
    run = store.get(run_id)
    st.subheader(f"Run {run.id}: {markdown.literal(run.settings.get('dataset_title', run.dataset))}")
    metrics = store.metrics(run.id)
    views.progress(store, run, metrics)
    views.resume(store, run, key=f"ft_resume_{run.id}")
    views.curves(run, metrics, key=f"ft_curves_{run.id}")
    views.samples(store, run)
    if ss.get("ft_shown_status") not in (None, run.status) and not run.active:
        ss.ft_shown_status = run.status
        st.rerun(scope="app")  # the run ended: show its summary and the chat
    ss.ft_shown_status = run.status


def show_chat(run_id: str, base_dtype: str) -> None:
    """This run's chat turns, newest first: the base and the tuned model's answers side by side, as text."""
    for turn in reversed(st.session_state[CHATS].get(run_id, [])):
        with st.container(border=True):
            st.markdown(f"**You** ({turn['time']})")
            st.text(turn["prompt"])
            b, t = st.columns(2)
            b.markdown(f"**Base model** · {base_dtype}")
            b.text(turn["base"] or "(empty answer)")
            b.caption(turn["base_stats"])
            t.markdown(f"**Fine-tuned model** · {adapters.WEIGHT_FORMAT} + LoRA merged")
            t.text(turn["tuned"] or "(empty answer)")
            t.caption(turn["tuned_stats"])
