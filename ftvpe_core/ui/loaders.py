"""Every cached model loader of the app: one shared model per (name, device, format) for every browser session
(the sidebar's, loaded in the background; the float32 base of the Token Lens; base models with an adapter
merged), and the session's model choice.

``st.cache_resource`` hands the same object to every session: never mutate a model from here.
"""

from __future__ import annotations

import streamlit as st

from ftvpe_core import FtvpeError, settings
from ftvpe_core.model import adapters, models
from ftvpe_core.tasks import datasets
from ftvpe_core.ui import classroom, markdown

CHOICE_KEY = "model_choice"
DEVICES = ("auto", "cpu", "cuda", "mps")


@st.cache_resource(show_spinner=False, max_entries=2)
def _background_load(name: str, device: str, weight_format: str) -> models.BackgroundLoad:
    return models.BackgroundLoad(name, device, weight_format)


@st.cache_resource(show_spinner=False, max_entries=1)
def float_model(name: str, device: str) -> models.LoadedModel:
    """The model in the weights adapters run on (float32), shared by every session: the base a tuned model
    is compared with token for token."""
    return models.load(name, device=device, weight_format=adapters.WEIGHT_FORMAT)


@st.cache_resource(show_spinner=False, max_entries=3)
def tuned_model(name: str, device: str, adapter_folder: str) -> models.LoadedModel:
    """The base model with the adapter in ``adapter_folder`` (a run's, or a recording's) merged into float
    weights, shared by every session."""
    return models.load(name, device=device, weight_format=adapters.WEIGHT_FORMAT, adapter=adapter_folder)


@st.cache_resource(show_spinner=False)
def _jobs_started(home: str) -> bool:
    from pathlib import Path

    from ftvpe_core.jobs import runners
    from ftvpe_core.store.runs import RunStore

    runners.current().start(RunStore(Path(home)))
    return True


def start_jobs() -> None:
    """Once per server and data folder, at the app's start: re-queue a class challenge's runs that the last stop
    interrupted, and bring the job processes up warm while a challenge is open (``runners`` ``start``). A failure
    (an unreachable cluster) is left to the pages, which name it; the next script run tries again."""
    try:
        _jobs_started(str(settings.data_home()))
    except FtvpeError:
        pass


@st.cache_resource(show_spinner=False)
def dataset(name: str) -> datasets.Dataset:
    """A built-in dataset, read once per server (shared by every session: never mutate it)."""
    return datasets.load_builtin(name)


def choice() -> dict:
    """The model this session uses: set in the sidebar, defaulting to FTVPE_MODEL or the embedded one."""
    return st.session_state.setdefault(
        CHOICE_KEY, {"name": settings.default_model(), "device": "auto", "weight_format": "auto"}
    )


def device() -> str:
    """The device this session's choice names, with 'auto' resolved: pages pass it on to jobs and loaders."""
    return settings.pick_device(choice()["device"])


def session_owner() -> str | None:
    """This browser session's id: the engine's queue gives each session a turn."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else None


def handle() -> models.BackgroundLoad:
    c = choice()
    h = _background_load(c["name"], c["device"], c["weight_format"])
    if h.state == "error":
        # Errors are not cached: a later visit (after the user fixes things) tries again.
        _background_load.clear(c["name"], c["device"], c["weight_format"])
    return h


def _apply() -> None:
    name = st.session_state.sb_model_name.strip() or settings.EMBEDDED_MODEL
    try:
        models.resolve(name)
    except FtvpeError as e:
        st.session_state.sb_model_error = str(e)
        return
    st.session_state.sb_model_error = ""
    st.session_state[CHOICE_KEY] = {
        "name": name,
        "device": st.session_state.sb_device,
        "weight_format": st.session_state.sb_weight_format,
    }


def sidebar() -> models.BackgroundLoad:
    """Classroom switch, model picker and status in the sidebar; returns this session's model handle.
    In classroom mode the picker is hidden: the demo runs on the model already chosen."""
    c = choice()
    classroom.sidebar_toggle()
    with st.sidebar:
        st.subheader("Model")
        if classroom.on():
            h = handle()
            status(h, compact=True)
            return h
        with st.form("sb_model_form", border=False):
            st.text_input(
                "Model",
                value=c["name"],
                key="sb_model_name",
                help="'embedded' (SmolLM2-135M-Instruct, ships with the app), a local folder with safetensors "
                "weights, a .gguf file, or a Hugging Face id already downloaded on this machine.",
            )
            st.selectbox("Device", DEVICES, index=DEVICES.index(c["device"]), key="sb_device")
            st.selectbox(
                "Weights",
                settings.WEIGHT_FORMATS,
                index=settings.WEIGHT_FORMATS.index(c["weight_format"]),
                key="sb_weight_format",
                help="auto: q4 on a CPU for GGUF models (their own 4-bit weights, twice as fast as float32), "
                "float32 for others, bfloat16 on a GPU. int8 decodes fast on a CPU "
                "but answers drift.",
            )
            st.form_submit_button("Use this model", on_click=_apply)
        if st.session_state.get("sb_model_error"):
            st.error(markdown.literal(st.session_state.sb_model_error))
        h = handle()
        status(h, compact=True)
    return h


@st.fragment(run_every=1.0)
def _loading_fragment(h: models.BackgroundLoad, compact: bool) -> None:
    if h.state == "loading":
        text = "Loading the model…" if compact else f"Loading the model: {h.message}"
        st.progress(min(max(h.fraction, 0.0), 1.0), text=text)
    else:
        st.rerun(scope="app")


def status(h: models.BackgroundLoad, compact: bool = False) -> None:
    """Loading progress (polled), the error, or what is loaded."""
    if h.state == "loading":
        _loading_fragment(h, compact)
    elif h.state == "error":
        st.error(markdown.literal(h.error or "The model failed to load."))
    else:
        d = h.result.describe()
        if compact:
            st.caption(f"Ready: {markdown.literal(d['model'])} · {d['device']} · {d['dtype']}")
        else:
            st.success(
                f"Ready: **{markdown.literal(d['model'])}** on **{d['device']}** ({d['dtype']}), "
                f"{d['parameters'] / 1e6:.0f}M parameters, context {d['context_length']:,} tokens, "
                f"loaded in {d['load_seconds']:.1f} s."
            )
