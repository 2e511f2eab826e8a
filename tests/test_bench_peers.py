"""bench/peers.py without llama.cpp: it names a missing peer in one line and exits 2, measures the app alone with
--skip-peer on the tiny model, and its peer child speaks its line protocol (run here against a stand-in
``llama_cpp`` module, so the suite never needs the real peer)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

FAKE_LLAMA_CPP = """
__version__ = "0.0-stand-in"


def llama_print_system_info():
    return b"STAND_IN = 1 |"


class Llama:
    def __init__(self, model_path, n_ctx, n_batch, n_threads, n_threads_batch, verbose):
        if model_path.endswith("broken.gguf"):
            raise ValueError("Failed to load model from file")

    def reset(self):
        pass

    def generate(self, tokens, top_k, temp, repeat_penalty):
        assert (top_k, temp, repeat_penalty) == (1, 0.0, 1.0)  # greedy, no penalty
        token = tokens[-1]
        while True:
            token += 1
            yield token
"""


def _bench():
    spec = importlib.util.spec_from_file_location("bench_peers", REPO / "bench" / "peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peers_bench_without_the_peer_exits_2_naming_it_in_one_line(tiny_model_dir, tmp_path):
    missing = tmp_path / "no-peers" / "bin" / "python"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "peers.py"),
            "--model",
            str(tiny_model_dir),
            "--peer-python",
            str(missing),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )

    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "llama.cpp peer is not built" in lines[0] and str(missing) in lines[0] and "make bench-peers" in lines[0]


def test_peers_bench_refuses_a_model_that_is_not_a_gguf_file(tiny_model_dir, capsys):
    code = _bench().main(["--model", str(tiny_model_dir), "--peer-python", sys.executable, "--json"])

    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [
        f"error: llama.cpp reads GGUF files only, and {tiny_model_dir.name} is a folder, not a GGUF file"
    ]


def test_peers_bench_skip_peer_prints_the_app_figures_as_json(tiny_model_dir, capsys):
    flags = ["--runs", "1", "--new-tokens", "3", "--long-tokens", "30", "--skip-peer", "--json"]
    code = _bench().main(["--model", str(tiny_model_dir), *flags])

    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["peer_skipped"] and report["app_format"] == "int8"  # a folder model has no q4 weights
    for key in ("app_decode_tok_s", "app_ttft_200_s", "app_int8_decode_tok_s", "transformers_float32_decode_tok_s"):
        assert report[key] > 0, key
    for key in ("llamacpp_decode_tok_s", "llamacpp_ttft_200_s", "decode_ratio", "ttft_200_ratio"):
        assert report[key] is None, key
    assert set(report["sides"]) == {"app_int8", "transformers_float32"}
    assert all(row["new_tokens"] == 3 for side in report["sides"].values() for row in side.values())
    assert report["prompt_tokens"]["200"] >= 30 > report["prompt_tokens"]["35"]
    assert report["targets"]["decode_ratio"]["pass"] is None


def test_peers_bench_table_without_the_peer_shows_no_ratios(tiny_model_dir, capsys):
    code = _bench().main(
        ["--model", str(tiny_model_dir), "--runs", "1", "--new-tokens", "2", "--long-tokens", "20", "--skip-peer"]
    )

    assert code == 0
    out = capsys.readouterr().out
    assert "app int8" in out and "transformers float32 generate" in out and "llama.cpp (peer)" not in out
    assert "n/a" in out


@pytest.fixture
def stand_in_llama_cpp(tmp_path, monkeypatch):
    """A ``llama_cpp`` module that counts up from the prompt's last id, where the peer child imports it."""
    package = tmp_path / "stand-in" / "llama_cpp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FAKE_LLAMA_CPP)
    monkeypatch.setenv("PYTHONPATH", str(package.parent))


def test_peer_child_answers_each_prompt_with_its_tokens_and_figures(stand_in_llama_cpp):
    peers = _bench()
    peer = peers.Peer(sys.executable, "model.gguf", 1, 512)
    try:
        first = peer.generate([5, 6, 7], 4)
        second = peer.generate([20], 2)
    finally:
        peer.close()

    assert peer.version == "0.0-stand-in" and peer.system_info == "STAND_IN = 1 |"
    assert first["tokens"] == [8, 9, 10, 11] and first["new_tokens"] == 4
    assert second["tokens"] == [21, 22]
    assert first["ttft_s"] >= 0 and first["tok_s"] > 0


def test_peer_child_that_cannot_load_the_file_is_one_error(stand_in_llama_cpp):
    from ftvpe_core import FtvpeError

    with pytest.raises(FtvpeError, match=r"llama.cpp could not load broken.gguf \(ValueError: Failed to load"):
        _bench().Peer(sys.executable, "broken.gguf", 1, 512)
