"""bench/load.py (N concurrent streams through the engine) runs end to end on the tiny random model."""

from tests.conftest import bench_json


def test_load_bench_decodes_every_stream_and_batches_them(tiny_model_dir):
    report = bench_json("load.py", "--model", str(tiny_model_dir), "--streams", "1,3", "--new-tokens", "4")
    for field in ("agg_tok_s", "ttft_p95_s", "single_stream_tok_s", "rows"):
        assert field in report, field
    assert set(report["agg_tok_s"]) == {"1", "3"} and all(v > 0 for v in report["agg_tok_s"].values())
    assert report["single_stream_tok_s"] > 0
    assert [row["new_tokens"] for row in report["rows"]] == [4, 12]  # every stream decoded all its tokens
    assert report["rows"][1]["peak_batch"] >= 2
