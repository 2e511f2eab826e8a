"""bench/profile_step.py (where a decoding step's time goes) runs end to end on the tiny random model."""

from tests.conftest import bench_json


def test_profile_step_bench_ranks_the_ops_of_a_step(tiny_model_dir):
    flags = ("--rows", "2", "--steps", "2", "--top", "3", "--positions", "5")
    report = bench_json("profile_step.py", "--model", str(tiny_model_dir), *flags)
    for field in ("step_ms", "step_cpu_ms", "tok_s", "ops_per_step", "top_ops"):
        assert field in report, field
    assert report["rows"] == 2 and report["step_ms"] > 0 and len(report["top_ops"]) == 3
    shares = [op["share"] for op in report["top_ops"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1
    assert all(op["calls_per_step"] > 0 for op in report["top_ops"])
