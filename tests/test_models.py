"""Finding, caching and loading models, on the tiny random model (the embedded GGUF only by path)."""

from __future__ import annotations

import importlib
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

from ftvpe_core import FtvpeError, settings
from ftvpe_core.model import models
from tests.tiny import CONTEXT_LENGTH


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def logits_of(loaded: models.LoadedModel, text: str = "hello world travel") -> torch.Tensor:
    ids = loaded.tokenizer.encode(text, return_tensors="pt")
    with torch.inference_mode():
        return loaded.model(input_ids=ids).logits


# --- resolve ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["embedded", "smollm2", "SmolLM2-135M-Instruct", "", None])
def test_embedded_names_resolve_to_the_packaged_gguf_file(name):
    source = models.resolve(name)
    assert source.kind == "embedded"
    assert source.name == "embedded"
    assert source.label == models.EMBEDDED_LABEL
    assert Path(source.location).name == models.EMBEDDED_FILE
    assert Path(source.location).is_file()


def test_default_name_follows_ftvpe_model(monkeypatch, tiny_model_dir):
    monkeypatch.setenv("FTVPE_MODEL", str(tiny_model_dir))
    assert models.resolve().kind == "folder"
    assert models.resolve().location == str(tiny_model_dir)


def test_a_model_folder_resolves_to_a_folder_source(tiny_model_dir):
    source = models.resolve(str(tiny_model_dir))
    assert (source.kind, source.location, source.label) == ("folder", str(tiny_model_dir), tiny_model_dir.name)


def test_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(FtvpeError, match="Model folder not found"):
        models.resolve(str(tmp_path / "nowhere"))


def test_an_existing_file_is_not_a_model_folder(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(FtvpeError, match="Model folder not found"):
        models.resolve(str(f))


def test_a_folder_without_config_is_refused(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FtvpeError, match="it has no config.json"):
        models.resolve(str(tmp_path))


def test_a_folder_without_safetensors_is_refused(tmp_path, tiny_model_dir):
    shutil.copy(tiny_model_dir / "config.json", tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickles are not loaded")
    with pytest.raises(FtvpeError, match="has no .safetensors weights; only safetensors are loaded"):
        models.resolve(str(tmp_path))


def test_a_missing_gguf_file_is_refused(tmp_path):
    with pytest.raises(FtvpeError, match="Model file not found"):
        models.resolve(str(tmp_path / "model.gguf"))


def test_an_existing_gguf_file_resolves_to_a_gguf_source(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(GGUF_HEADER)
    source = models.resolve(str(f))
    assert (source.kind, source.label) == ("gguf", "m.gguf")


GGUF_HEADER = b"GGUF" + (3).to_bytes(4, "little") + bytes(16)
"""A GGUF header: magic, version 3, no tensors, no metadata (the 24 bytes check_gguf reads)."""


@pytest.mark.parametrize(
    "content, why",
    [
        (bytes(range(256)) * 4, "it does not start with the GGUF signature, GGUF"),
        (b"", "the file is empty"),
        (b"PK\x03\x04 a zip file named .gguf", "it does not start with the GGUF signature, GGUF"),
        (GGUF_HEADER[:10], "it ends after 10 bytes, inside the GGUF header"),
    ],
    ids=["garbage", "empty", "zip", "cut-in-header"],
)
def test_a_file_that_is_not_gguf_is_refused_in_one_line_before_any_parser(tmp_path, content, why):
    f = tmp_path / "fake.gguf"
    f.write_bytes(content)
    with pytest.raises(FtvpeError) as info:
        models.resolve(str(f))
    assert str(info.value) == f"Could not load fake.gguf: it is not a GGUF model file ({why})."
    with pytest.raises(FtvpeError, match="it is not a GGUF model file"):
        models.cache_gguf(f)  # the embedded file is checked there too
    assert not models.gguf_cache_dir(f).exists()


@pytest.mark.parametrize("size", [2_000, 1_500_000])
def test_a_cut_short_real_gguf_gives_one_line_error_from_the_real_readers(tmp_path, size):
    try:
        real = models.embedded_gguf_path()
    except FtvpeError:
        pytest.skip("the embedded model package is not installed")
    f = tmp_path / "cut.gguf"
    with open(real, "rb") as src:
        f.write_bytes(src.read(size))
    with pytest.raises(FtvpeError) as info:
        models.load(str(f), device="cpu", weight_format="float32")
    message = str(info.value)
    assert message.startswith("Could not load cut.gguf: reading it as a GGUF model failed"), message
    assert "\n" not in message and len(message) < 400
    assert not models.is_cached(models.gguf_cache_dir(f))


def test_background_load_of_a_fake_gguf_shows_the_one_line_error(tmp_path, thread_errors):
    f = tmp_path / "fake.gguf"
    f.write_bytes(b"not a model at all")
    handle = models.BackgroundLoad(str(f), device="cpu")
    with pytest.raises(FtvpeError):
        handle.wait(timeout=60)
    assert handle.state == "error"
    assert handle.error == (
        "Could not load fake.gguf: it is not a GGUF model file (it does not start with the GGUF signature, GGUF)."
    )
    assert thread_errors == []


def test_a_hub_id_resolves_without_touching_the_network(no_network):
    source = models.resolve("HuggingFaceTB/SmolLM2-360M-Instruct")
    assert (source.kind, source.location) == ("hub", "HuggingFaceTB/SmolLM2-360M-Instruct")


def test_a_hub_id_not_in_the_cache_says_downloads_are_off(no_network):
    with pytest.raises(FtvpeError) as e:
        models.load("nobody-ftvpe/not-a-real-model-123", device="cpu")
    assert "not available on this machine and downloads are off" in str(e.value)
    assert "FTVPE_ALLOW_DOWNLOAD=1" in str(e.value)


@pytest.mark.parametrize("name", ["hello world", "a/b/c", "justaword", "some org/model"])
def test_nonsense_names_are_refused_with_the_choices(name):
    with pytest.raises(FtvpeError, match=f"Unknown model '{name}': use 'embedded', a local folder"):
        models.resolve(name)


# --- load ------------------------------------------------------------------------------------------


def test_load_of_a_folder_gives_a_ready_model(tiny_loaded, tiny_model_dir):
    assert isinstance(tiny_loaded, models.LoadedModel)
    assert (tiny_loaded.device, tiny_loaded.weight_format) == ("cpu", "float32")
    assert tiny_loaded.context_length == CONTEXT_LENGTH
    assert tiny_loaded.from_cache is True
    assert tiny_loaded.source.kind == "folder"
    assert tiny_loaded.name == tiny_model_dir.name
    assert not tiny_loaded.model.training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in tiny_loaded.model.parameters())
    assert tiny_loaded.tokenizer.chat_template
    assert tiny_loaded.count_tokens("hello world travel") == 3


def test_describe_reports_what_the_pages_show(tiny_loaded):
    d = tiny_loaded.describe()
    assert d["kind"] == "folder" and d["device"] == "cpu" and d["dtype"] == "float32"
    assert d["context_length"] == CONTEXT_LENGTH
    assert d["parameters"] == sum(p.numel() for p in tiny_loaded.model.parameters()) > 0


def test_load_reports_progress_up_to_ready(tiny_model_dir):
    seen = []
    models.load(str(tiny_model_dir), device="cpu", progress=lambda f, m: seen.append((f, m)))
    assert seen[-1] == (1.0, "Ready")
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)


def test_save_and_load_round_trip_gives_identical_logits(tiny_loaded, tmp_path):
    tiny_loaded.model.save_pretrained(tmp_path, safe_serialization=True)
    tiny_loaded.tokenizer.save_pretrained(tmp_path)
    again = models.load(str(tmp_path), device="cpu", weight_format="float32")
    assert again.model is not tiny_loaded.model
    assert torch.equal(logits_of(again), logits_of(tiny_loaded))
    assert (
        again.tokenizer.apply_chat_template(
            [{"role": "user", "content": "hello"}], add_generation_prompt=True, tokenize=False
        )
        == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    )


def test_int8_load_quantizes_linear_layers_and_keeps_the_embedding_float(tiny_model_dir, tiny_loaded):
    q = models.load(str(tiny_model_dir), device="cpu", weight_format="int8")
    assert q.weight_format == "int8"
    embedding = q.model.get_input_embeddings()
    assert isinstance(embedding, torch.nn.Embedding) and embedding.weight.dtype == torch.float32
    dynamic_linear = torch.ao.nn.quantized.dynamic.Linear
    assert isinstance(q.model.get_output_embeddings(), dynamic_linear)
    assert isinstance(q.model.model.layers[0].self_attn.q_proj, dynamic_linear)
    assert not any(isinstance(m, torch.nn.Linear) for m in q.model.modules())
    # The parameter count is the float model's (quantized layers hide theirs from parameters()).
    assert q.describe()["parameters"] == tiny_loaded.describe()["parameters"]
    # Dequantized weights stay close to the float ones: the same model, not a broken one.
    assert torch.allclose(logits_of(q), logits_of(tiny_loaded), atol=0.05)


def test_a_folder_without_chat_template_is_refused(tiny_model_dir, tmp_path):
    folder = tmp_path / "base-model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "chat_template.jinja").unlink()
    with pytest.raises(FtvpeError, match="has no chat template; pick an instruction-tuned"):
        models.load(str(folder), device="cpu")


def test_corrupt_weights_give_a_one_line_error(tiny_model_dir, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(FtvpeError, match="^Could not load broken: ") as e:
        models.load(str(folder), device="cpu")
    assert "\n" not in str(e.value)


def test_load_tokenizer_alone(tiny_model_dir):
    tok = models.load_tokenizer(models.resolve(str(tiny_model_dir)))
    assert tok.eos_token == "<|im_end|>"
    assert len(tok.encode("hello world", add_special_tokens=False)) == 2


# --- BackgroundLoad --------------------------------------------------------------------------------


@pytest.fixture
def thread_errors(monkeypatch):
    """Exceptions that escape any thread during the test."""
    errors = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    return errors


def test_background_load_reaches_ready(tiny_model_dir, thread_errors):
    handle = models.BackgroundLoad(str(tiny_model_dir), device="cpu", weight_format="float32")
    loaded = handle.wait(timeout=120)
    assert handle.state == "ready"
    assert handle.result is loaded and handle.error is None
    assert handle.tokenizer is loaded.tokenizer
    assert (handle.fraction, handle.message) == (1.0, "Ready")
    assert loaded.context_length == CONTEXT_LENGTH
    assert thread_errors == []


def test_background_load_of_a_bad_name_ends_in_error_without_raising(thread_errors):
    handle = models.BackgroundLoad("no such model", device="cpu")
    with pytest.raises(FtvpeError, match="Unknown model 'no such model'"):
        handle.wait(timeout=60)
    handle._thread.join(timeout=60)
    assert handle.state == "error"
    assert handle.error.startswith("Unknown model 'no such model'")
    assert handle.result is None
    assert thread_errors == []


def test_background_load_reports_unexpected_exceptions_as_errors(monkeypatch, tiny_model_dir, thread_errors):
    def explode(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(models, "load", explode)
    handle = models.BackgroundLoad(str(tiny_model_dir), device="cpu")
    with pytest.raises(FtvpeError, match="Loading failed: RuntimeError: out of memory"):
        handle.wait(timeout=60)
    assert handle.state == "error"
    assert thread_errors == []


def test_background_load_wait_times_out_while_loading(monkeypatch, tiny_model_dir):
    release = threading.Event()
    real_load = models.load

    def slow_load(*args, **kwargs):
        release.wait(30)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(models, "load", slow_load)
    handle = models.BackgroundLoad(str(tiny_model_dir), device="cpu")
    try:
        with pytest.raises(FtvpeError, match="still loading"):
            handle.wait(timeout=0.05)
        deadline = time.monotonic() + 30
        while handle.tokenizer is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert handle.tokenizer is not None  # published while the weights are still loading
        assert handle.state == "loading" and handle.result is None
    finally:
        release.set()
    assert handle.wait(timeout=120).context_length == CONTEXT_LENGTH


# --- cache_gguf ------------------------------------------------------------------------------------


class FakeGgufLoaders:
    """Stands in for transformers' GGUF readers: ``from_pretrained(..., gguf_file=...)`` returns the tiny
    model; calls without ``gguf_file`` go to the real loaders. Counts the GGUF reads."""

    def __init__(self, monkeypatch, tiny_model_dir: Path):
        self.gguf_reads = 0
        self.fail_model_save = False
        self.fail_tokenizer_save = False
        self.tokenizer_save_checks: list[tuple[bool, bool]] = []
        fake = self
        # transformers swaps its module object in sys.modules after import: patch the current one.
        hf = importlib.import_module("transformers")
        real_tok, real_model = hf.AutoTokenizer, hf.AutoModelForCausalLM

        class Tok:
            @staticmethod
            def from_pretrained(path, *args, gguf_file=None, **kwargs):
                if gguf_file is None:
                    return real_tok.from_pretrained(path, *args, **kwargs)
                fake.gguf_reads += 1
                tok = real_tok.from_pretrained(tiny_model_dir)
                save = tok.save_pretrained

                def save_pretrained(folder, *a, **kw):
                    folder = Path(folder)
                    # (COMPLETE already in the temp folder?, final folder already visible?)
                    fake.tokenizer_save_checks.append(
                        ((folder / models.COMPLETE_MARK).exists(), fake.target_in(folder).exists())
                    )
                    if fake.fail_tokenizer_save:
                        raise OSError("No space left on device")
                    return save(folder, *a, **kw)

                tok.save_pretrained = save_pretrained
                return tok

        class Model:
            @staticmethod
            def from_pretrained(path, *args, gguf_file=None, **kwargs):
                if gguf_file is None:
                    return real_model.from_pretrained(path, *args, **kwargs)
                fake.gguf_reads += 1
                model = real_model.from_pretrained(tiny_model_dir, dtype=torch.float32)
                model.hf_quantizer = object()  # what the GGUF loader leaves behind
                save = model.save_pretrained

                def save_pretrained(folder, *a, **kw):
                    assert model.hf_quantizer is None
                    save(folder, *a, **kw)
                    if fake.fail_model_save:
                        raise OSError("No space left on device")

                model.save_pretrained = save_pretrained
                return model

        monkeypatch.setattr(hf, "AutoTokenizer", Tok)
        monkeypatch.setattr(hf, "AutoModelForCausalLM", Model)

    @staticmethod
    def target_in(tmp_folder: Path) -> Path:
        return tmp_folder.with_name(tmp_folder.name.split(".tmp-")[0])


@pytest.fixture
def fake_gguf(tmp_path) -> Path:
    f = tmp_path / "files" / "Tiny.Q4.gguf"
    f.parent.mkdir()
    f.write_bytes(GGUF_HEADER + bytes(40))
    return f


@pytest.fixture
def fake_loaders(monkeypatch, tiny_model_dir):
    return FakeGgufLoaders(monkeypatch, tiny_model_dir)


def test_gguf_cache_folder_lives_in_the_data_home_and_is_keyed_by_name_and_size(fake_gguf):
    assert models.gguf_cache_dir(fake_gguf) == settings.data_home() / "models" / "Tiny.Q4-64"


def test_cache_gguf_writes_a_complete_safetensors_folder_once(fake_gguf, fake_loaders):
    steps = []
    folder = models.cache_gguf(fake_gguf, progress=lambda f, m: steps.append(f))
    assert folder == models.gguf_cache_dir(fake_gguf)
    assert models.is_cached(folder)
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert "quantization_config" not in (folder / "config.json").read_text()
    assert fake_loaders.tokenizer_save_checks == [(False, False)]  # COMPLETE and the final name come last
    assert steps == sorted(steps) and steps
    assert fake_loaders.gguf_reads == 2
    assert models.cache_gguf(fake_gguf) == folder
    assert fake_loaders.gguf_reads == 2  # the second call reads the cache, not the GGUF file
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]


def test_load_of_a_gguf_file_goes_through_the_cache(fake_gguf, fake_loaders, tiny_loaded):
    first = models.load(str(fake_gguf), device="cpu", weight_format="float32")
    assert first.source.kind == "gguf" and first.from_cache is False
    second = models.load(str(fake_gguf), device="cpu", weight_format="float32")
    assert second.from_cache is True
    assert fake_loaders.gguf_reads == 2
    assert torch.equal(logits_of(second), logits_of(tiny_loaded))


@pytest.mark.parametrize("failing", ["model", "tokenizer"])
def test_cache_gguf_interrupted_midway_leaves_no_complete_folder(fake_gguf, fake_loaders, failing):
    setattr(fake_loaders, f"fail_{failing}_save", True)
    with pytest.raises(OSError, match="No space left"):
        models.cache_gguf(fake_gguf)
    target = models.gguf_cache_dir(fake_gguf)
    assert not target.exists()
    assert not models.is_cached(target)
    assert list(target.parent.iterdir()) == []  # the temporary folder is gone too
    setattr(fake_loaders, f"fail_{failing}_save", False)
    assert models.is_cached(models.cache_gguf(fake_gguf))  # the next start succeeds


def test_cache_gguf_replaces_a_half_written_folder(fake_gguf, fake_loaders):
    target = models.gguf_cache_dir(fake_gguf)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{half")
    assert not models.is_cached(target)
    assert models.cache_gguf(fake_gguf) == target
    assert models.is_cached(target)
    assert (target / "config.json").read_text() != "{half"
