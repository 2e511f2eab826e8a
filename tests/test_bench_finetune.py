"""Smoke tests of bench/finetune.py on the tiny random model: it runs and reports positive figures."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import REPO


def _bench():
    spec = importlib.util.spec_from_file_location("bench_finetune", REPO / "bench" / "finetune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_finetune_bench_json_reports_both_sides(tiny_model_dir, capsys):
    code = _bench().main(["--model", str(tiny_model_dir), "--steps", "2", "--skip-quick", "--json"])

    assert code == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("app_tokens_per_s", "trainer_tokens_per_s", "trainer_bf16_tokens_per_s", "ratio"):
        assert report[key] > 0, key
    assert report["quick_preset_seconds"] is None
    assert report["steps"] == 2 and report["warmup_steps"] == 1
    assert report["ratio"] == pytest.approx(report["app_tokens_per_s"] / report["trainer_tokens_per_s"], rel=1e-3)
    assert isinstance(report["target"]["pass"], bool)
    for arm in ("app", "trainer", "trainer_bf16"):
        assert len(report["arms"][arm]["step_seconds"]) == 2
        assert 0 <= report["arms"][arm]["padding_share"] < 1


def test_finetune_bench_table_times_the_quick_preset(tiny_model_dir, capsys):
    code = _bench().main(["--model", str(tiny_model_dir), "--steps", "2", "--skip-trainer-bf16"])

    assert code == 0
    out = capsys.readouterr().out
    assert "baseline: Trainer fp32" in out and "app: finetune.train" in out
    assert "Trainer bf16=True" not in out
    assert "Quick preset on support_triage" in out and "(40 steps" in out
    assert "PASS" in out or "FAIL" in out
