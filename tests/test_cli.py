"""The command-line front, run in-process on the tiny model (and once as a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata

import pytest

from ftvpe_core import cli, settings
from ftvpe_core.model import generation
from tests.conftest import REPO


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv: str) -> dict:
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1, "--json prints one JSON object on one line"
    return json.loads(lines[0])


@pytest.fixture
def model_args(tiny_model_dir) -> list[str]:
    return ["--model", str(tiny_model_dir), "--device", "cpu", "--dtype", "float32"]


def test_generate_json_has_the_prompt_output_and_figures(capsys, model_args, tiny_loaded):
    out = run_json(capsys, "generate", "write something about travel .", "--max-new-tokens", "8", "--json", *model_args)
    assert {"messages", "segments", "output", "prompt_tokens", "new_tokens", "ttft_s", "tokens_per_s"} <= set(out)
    assert out["messages"] == [{"role": "user", "content": "write something about travel ."}]
    assert out["segments"] == [
        {"technique": "task", "text": "write something about travel .", "tokens": 5, "message": 0, "detail": ""}
    ]
    assert out["prompt_tokens"] == len(generation.encode_chat(tiny_loaded, out["messages"]))
    assert 0 <= out["new_tokens"] <= 8
    assert isinstance(out["output"], str)
    assert out["ttft_s"] > 0 and out["total_s"] >= out["ttft_s"] and out["tokens_per_s"] >= 0
    assert out["stop_reason"] in {"end", "length"}
    assert (out["device"], out["dtype"]) == ("cpu", "float32")


def test_generate_json_output_matches_the_library(capsys, model_args, tiny_loaded):
    out = run_json(capsys, "generate", "hello world", "--max-new-tokens", "6", "--json", *model_args)
    expected = generation.generate(tiny_loaded, out["messages"], settings.GenerationSettings(max_new_tokens=6))
    assert out["output"] == expected.text


def test_technique_flags_switch_techniques_on(capsys, model_args):
    out = run_json(
        capsys,
        "generate",
        "write about travel",
        "--role",
        "a travel blogger",
        "--example",
        "hello=>world",
        "--example",
        "good day => good night",
        "--cot",
        "--tone",
        "friendly",
        "--audience",
        "families",
        "--words",
        "50",
        "--format",
        "a list",
        "--context",
        "trains are good",
        "--max-new-tokens",
        "4",
        "--json",
        *model_args,
    )
    techniques = [s["technique"] for s in out["segments"]]
    assert set(techniques) == {"task", "role", "few-shot", "cot", "context"}
    assert techniques.count("few-shot") == 4
    assert [m["role"] for m in out["messages"]] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert out["messages"][2]["content"] == "world"
    assert out["messages"][-1]["content"].endswith('starting with "Answer:".')
    assert all(s["tokens"] >= 1 for s in out["segments"])


@pytest.mark.parametrize(
    "flags, technique",
    [
        (["--role", "a blogger"], "role"),
        (["--example", "a=>b"], "few-shot"),
        (["--cot"], "cot"),
        (["--tone", "friendly"], "context"),
        (["--words", "20"], "context"),
    ],
)
def test_each_flag_switches_on_only_its_technique(capsys, model_args, flags, technique):
    out = run_json(capsys, "generate", "hello", *flags, "--max-new-tokens", "1", "--json", *model_args)
    assert {s["technique"] for s in out["segments"]} == {"task", technique}


def test_generate_without_json_streams_text_and_reports_figures_on_stderr(capsys, model_args):
    code, out, err = run_cli(capsys, "generate", "hello world", "--max-new-tokens", "5", *model_args)
    assert code == 0
    assert out.endswith("\n")
    assert "prompt tokens" in err.splitlines()[-1] and "tokens/s" in err.splitlines()[-1]


def test_next_token_json_lists_sorted_probabilities(capsys, model_args):
    out = run_json(capsys, "next-token", "when does the train arrive ?", "--top", "5", "--json", *model_args)
    probs = [t["prob"] for t in out["top"]]
    assert len(probs) == 5
    assert probs == sorted(probs, reverse=True)
    assert sum(probs) <= 1 + 1e-6
    assert {"token", "token_id", "prob"} == set(out["top"][0])


def test_info_json_describes_model_device_and_versions(capsys, model_args, tiny_model_dir):
    out = run_json(capsys, "info", "--json", *model_args)
    assert {"model", "device", "dtype", "data_folder", "versions"} <= set(out)
    assert out["model"] == tiny_model_dir.name
    assert (out["device"], out["dtype"]) == ("cpu", "float32")
    assert out["data_folder"] == os.environ["FTVPE_HOME"] == str(settings.data_home())
    assert out["versions"]["transformers"] == metadata.version("transformers")
    assert out["versions"]["torch"] == metadata.version("torch")


@pytest.mark.parametrize(
    "argv, words",
    [
        (["generate", ""], "The task is empty"),
        (["generate", "hi", "--max-new-tokens", "-5"], "Max new tokens must be between 1 and 2048, got -5"),
        (["generate", "hi", "--max-new-tokens", "abc"], "argument --max-new-tokens: invalid int value: 'abc'"),
        (["generate", "hi", "--example", "no arrow"], 'must look like "INPUT=>OUTPUT"'),
        (["generate", "hi", "--model", "no such model"], "Unknown model 'no such model'"),
        (["generate", "hi", "--words", "0"], "The word count must be between 1 and 2000, got 0"),
        (["generate", "hi", "--dtype", "int4"], "Unknown weight format 'int4'"),
        (["generate", "hi", "--temperature", "3"], "Temperature must be between 0 and 2"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: command"),
    ],
    ids=[
        "empty-task",
        "negative-tokens",
        "non-int-tokens",
        "example-without-arrow",
        "unknown-model",
        "zero-words",
        "unknown-dtype",
        "temperature",
        "unknown-command",
        "no-command",
    ],
)
def test_bad_input_exits_2_with_one_error_line(capsys, tiny_model_dir, argv, words):
    if "--model" not in argv and argv and argv[0] in ("generate", "next-token"):
        argv = [*argv, "--model", str(tiny_model_dir), "--device", "cpu"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert words in lines[0]


def test_next_token_with_top_out_of_range_exits_2(capsys, model_args):
    # Checked before the model loads; the error is the only line on stderr.
    code, out, err = run_cli(capsys, "next-token", "hi", "--top", "0", *model_args)
    assert (code, out) == (2, "")
    assert err.splitlines()[-1] == "error: Top-k must be between 1 and 100, got 0."
    assert sum(line.startswith("error:") for line in err.splitlines()) == 1


def test_module_entry_point_exits_2_without_a_traceback(tmp_path):
    env = {**os.environ, "FTVPE_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "ftvpe_core", "generate", ""],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr == "error: The task is empty: type what you want the model to do.\n"
    assert proc.stdout == ""


def _gguf_cut_short(path) -> None:
    from ftvpe_core.model import models

    try:
        real = models.embedded_gguf_path()
    except Exception:  # noqa: BLE001 - no embedded package: a made-up header cut short does as well
        path.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(16) + b"\x05")
        return
    with open(real, "rb") as f:
        path.write_bytes(f.read(2_000))


@pytest.mark.parametrize(
    "make, why",
    [
        (lambda p: p.write_bytes(os.urandom(4096)), "it is not a GGUF model file (it does not start with the GGUF"),
        (lambda p: p.write_bytes(b""), "it is not a GGUF model file (the file is empty)"),
        (_gguf_cut_short, ""),
    ],
    ids=["garbage", "empty", "cut-short"],
)
@pytest.mark.parametrize("via", ["--model", "FTVPE_MODEL"])
def test_a_file_that_is_not_a_gguf_model_exits_2_with_one_line(tmp_path, make, why, via):
    fake = tmp_path / "fake.gguf"
    make(fake)
    env = {**os.environ, "FTVPE_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "ftvpe_core", "generate", "hi", "--max-new-tokens", "2", "--device", "cpu"]
    if via == "--model":
        argv += ["--model", str(fake)]
    else:
        env["FTVPE_MODEL"] = str(fake)
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [proc.stderr.strip().splitlines()[-1]] and errors[0].startswith(
        "error: Could not load fake.gguf: "
    )
    assert why in errors[0]
