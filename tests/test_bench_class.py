"""bench/class.py (a class challenge played through the core) runs end to end on the tiny random model."""

import pytest

from tests.conftest import bench_json

pytestmark = pytest.mark.timeout(420)


def test_class_bench_plays_a_small_class_and_reports_every_wait(tiny_model_dir):
    args = ["--model", str(tiny_model_dir), "--prompts", "3", "--finetunes", "1", "--steps", "2", "--examples", "4"]
    report = bench_json("class.py", *args, "--hidden-limit", "20", "--finetunes-first", "--timeout", "300")
    assert report["prompts"] == 3 and report["finetunes"] == 1 and report["runner"] == "local"
    assert len(report["waits_s"]["prompt"]) == 3 and len(report["waits_s"]["finetune"]) == 1
    assert 0 < report["prompt_wait_p50_s"] <= report["prompt_wait_p95_s"] <= report["all_scored_s"]
    assert report["alone_prompt_s"] > 0 and report["alone_finetune_s"] > 0
    assert report["serial_estimate_s"] == pytest.approx(3 * report["alone_prompt_s"] + report["alone_finetune_s"], 1e-3)
    assert report["class_vs_serial"] > 0 and report["training_slowdown"] > 0
    assert 0 <= report["finetune_mean_score"] <= 1
    assert 1 <= report["prompt_batch_max"] <= 3
    parts = report["finetune_breakdown"]
    assert parts["steps"] == 2 and parts["train_s"] > 0 and parts["scoring_s"] > 0 and parts["validation_s"] >= 0
    assert parts["total_s"] >= parts["train_s"] + parts["scoring_s"]
    assert set(report["targets"]) >= {"all_scored_s<=240", "prompt_wait_p95_s<=30", "training_slowdown<=1.25"}
