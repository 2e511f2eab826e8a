"""bench/evaluation.py (batched evaluation against one answer at a time) runs end to end on the tiny random model."""

from tests.conftest import bench_json


def test_evaluation_bench_times_batched_and_one_at_a_time_answers(tiny_model_dir):
    report = bench_json("evaluation.py", "--model", str(tiny_model_dir), "--n", "3", "--rounds", "1", "--skip-extra")
    assert report["n"] == 3
    assert report["batched_answers_per_s"] > 0 and report["sequential_answers_per_s"] > 0 and report["ratio"] > 0
