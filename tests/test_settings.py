"""Settings: validation messages, device and weight-format choice, and environment variables."""

from __future__ import annotations

import pytest
import torch

from ftvpe_core import FtvpeError, settings
from ftvpe_core.settings import GenerationSettings

no_gpu = pytest.mark.skipif(
    torch.cuda.is_available() or torch.backends.mps.is_available(), reason="checks the CPU-only behaviour"
)


def test_default_generation_settings_are_valid_and_greedy():
    s = GenerationSettings()
    assert s.greedy
    assert s.max_new_tokens == 160 and s.repetition_penalty == 1.15


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_new_tokens=-5), "Max new tokens must be between 1 and 2048, got -5."),
        (dict(max_new_tokens=0), "Max new tokens must be between 1 and 2048, got 0."),
        (dict(max_new_tokens=100000), "Max new tokens must be between 1 and 2048, got 100000."),
        (dict(max_new_tokens=1.5), "Max new tokens must be a whole number, got 1.5."),
        (dict(max_new_tokens="10"), "Max new tokens must be a whole number, got '10'."),
        (dict(max_new_tokens=True), "Max new tokens must be a whole number, got True."),
        (dict(temperature=-0.1), "Temperature must be between 0 and 2, got -0.1."),
        (dict(temperature=2.5), "Temperature must be between 0 and 2, got 2.5."),
        (dict(temperature=float("nan")), "Temperature must be between 0 and 2, got nan."),
        (dict(top_p=0.0), "Top-p must be above 0 and at most 1, got 0.0."),
        (dict(top_p=1.01), "Top-p must be above 0 and at most 1, got 1.01."),
        (dict(seed=-1), "The seed must be 0 or more, got -1."),
        (dict(repetition_penalty=0.9), "Repetition penalty must be between 1 and 2, got 0.9."),
        (dict(repetition_penalty=2.5), "Repetition penalty must be between 1 and 2, got 2.5."),
    ],
)
def test_invalid_generation_settings_are_refused_with_the_value(kwargs, message):
    with pytest.raises(FtvpeError) as e:
        GenerationSettings(**kwargs)
    assert str(e.value) == message


def test_limits_of_generation_settings_are_accepted():
    GenerationSettings(max_new_tokens=1, temperature=2.0, top_p=1.0, repetition_penalty=1.0, seed=0)
    GenerationSettings(max_new_tokens=settings.MAX_NEW_TOKENS_LIMIT, repetition_penalty=2.0, top_p=1e-6)


def test_ftvpe_error_is_a_value_error():
    # Callers that only know ValueError (argparse, dataclass users) still catch it.
    assert issubclass(FtvpeError, ValueError)


@no_gpu
def test_auto_device_is_cpu_on_this_machine():
    assert settings.pick_device() == "cpu"
    assert settings.pick_device("auto") == "cpu"


@no_gpu
@pytest.mark.parametrize("device, words", [("cuda", "no CUDA GPU"), ("cuda:1", "no CUDA GPU"), ("mps", "MPS")])
def test_unavailable_devices_are_refused(device, words):
    with pytest.raises(FtvpeError, match=words):
        settings.pick_device(device)


def test_unknown_device_is_refused():
    with pytest.raises(FtvpeError, match="Unknown device 'tpu': use auto, cpu, cuda or mps."):
        settings.pick_device("tpu")


@no_gpu
def test_device_env_var_is_respected(monkeypatch):
    monkeypatch.setenv("FTVPE_DEVICE", "cpu")
    assert settings.pick_device() == "cpu"
    monkeypatch.setenv("FTVPE_DEVICE", "cuda")
    with pytest.raises(FtvpeError, match="Device 'cuda' was asked for"):
        settings.pick_device()
    assert settings.pick_device("cpu") == "cpu"  # an explicit request wins over the variable


def test_cpu_weight_format_defaults_to_float32_for_float_models():
    assert settings.pick_weight_format("cpu") == "float32"
    assert settings.pick_weight_format("cpu", "auto") == "float32"


def test_cpu_weight_format_keeps_4_bit_weights_for_gguf_models():
    assert settings.pick_weight_format("cpu", "auto", gguf_source=True) == "q4"
    assert settings.pick_weight_format("cpu", "float32", gguf_source=True) == "float32"


def test_q4_is_refused_for_float_models_and_on_a_gpu():
    with pytest.raises(FtvpeError, match="q4 keeps a GGUF file's own 4-bit weights"):
        settings.pick_weight_format("cpu", "q4")
    with pytest.raises(FtvpeError, match="q4 weights run on the CPU only"):
        settings.pick_weight_format("cuda", "q4", gguf_source=True)


@pytest.mark.parametrize("fmt", ["float32", "bfloat16", "float16", "int8"])
def test_named_weight_formats_are_kept_on_cpu(fmt):
    assert settings.pick_weight_format("cpu", fmt) == fmt


def test_int8_is_refused_on_a_gpu():
    with pytest.raises(FtvpeError, match="int8 weights run on the CPU only"):
        settings.pick_weight_format("cuda", "int8")


def test_unknown_weight_format_is_refused_with_the_choices():
    with pytest.raises(FtvpeError) as e:
        settings.pick_weight_format("cpu", "int4")
    assert str(e.value) == "Unknown weight format 'int4': use one of auto, q4, float32, bfloat16, float16, int8."


def test_dtype_env_var_is_respected(monkeypatch):
    monkeypatch.setenv("FTVPE_DTYPE", "bfloat16")
    assert settings.pick_weight_format("cpu") == "bfloat16"
    assert settings.pick_weight_format("cpu", "float16") == "float16"  # explicit wins
    monkeypatch.setenv("FTVPE_DTYPE", "fp8")
    with pytest.raises(FtvpeError, match="Unknown weight format 'fp8'"):
        settings.pick_weight_format("cpu")


def test_data_home_honours_ftvpe_home_and_creates_it(monkeypatch, tmp_path):
    home = tmp_path / "deep" / "home"
    monkeypatch.setenv("FTVPE_HOME", str(home))
    assert settings.data_home() == home
    assert home.is_dir()


def test_data_home_defaults_to_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("FTVPE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert settings.data_home() == tmp_path / ".cache" / "ftvpe"
    assert (tmp_path / ".cache" / "ftvpe").is_dir()


def test_default_model_honours_ftvpe_model(monkeypatch):
    assert settings.default_model() == "embedded"
    monkeypatch.setenv("FTVPE_MODEL", "  /models/mine  ")
    assert settings.default_model() == "/models/mine"
    monkeypatch.setenv("FTVPE_MODEL", "   ")
    assert settings.default_model() == "embedded"


@pytest.mark.parametrize("value, allowed", [("", False), ("0", False), ("1", True), ("true", True), ("yes", True)])
def test_downloads_are_off_unless_asked_for(monkeypatch, value, allowed):
    monkeypatch.setenv("FTVPE_ALLOW_DOWNLOAD", value)
    assert settings.downloads_allowed() is allowed
