"""bench/cluster.py (K runs queued at once: local runner vs Ray runner) runs end to end on the tiny random model, on
the session's local Ray head."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import bench_json, run_bench

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
if importlib.util.find_spec("ray") is None:
    pytest.skip(
        "Ray is not installed: pip install -r requirements-cluster.txt (make test does)", allow_module_level=True
    )


def test_cluster_bench_json_times_both_runners_for_each_k(ray_head, tiny_model_dir):
    flags = ("--model", str(tiny_model_dir), "--k", "1", "--steps", "2", "--address", ray_head)
    report = bench_json("cluster.py", *flags)  # its stores in this test's own data folder (conftest)
    assert report["k"] == [1] and report["ray_slots"] == 2 and report["address"] == ray_head
    for runner in ("local", "ray"):
        one = report[runner]["1"]
        assert one["runs"] == 1 and one["wall_s"] > 0 and len(one["per_run_s"]) == 1, runner
    assert report["local"]["1"]["nodes"] != report["ray"]["1"]["nodes"]  # this machine's name vs the Ray node
    assert report["ray_vs_local"]["1"] == pytest.approx(
        report["local"]["1"]["wall_s"] / report["ray"]["1"]["wall_s"], rel=1e-2
    )


def test_cluster_bench_refuses_a_bad_k_in_one_line(tiny_model_dir):
    done = run_bench("cluster.py", "--k", "0", "--address", "x:1", timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and lines[-1].startswith("error:") and "--k takes whole numbers" in lines[-1]
