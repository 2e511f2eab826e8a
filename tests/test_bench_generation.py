"""bench/generation.py runs end to end on the tiny random model at its smallest sizes, so a rename in the core
cannot break it unseen."""

from tests.conftest import bench_json


def test_generation_bench_prints_the_app_against_its_baseline(tiny_model_dir):
    report = bench_json(
        "generation.py", "--model", str(tiny_model_dir), "--new-tokens", "2", "--runs", "1", "--skip-cold"
    )
    for field in ("baseline", "formats", "decode_tok_s_app", "decode_tok_s_baseline", "decode_ratio", "ttft_s_app"):
        assert field in report, field
