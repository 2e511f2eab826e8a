"""Every bench script runs end to end on the tiny random model with its smallest sizes, so a rename in the core
cannot break one unseen (bench/finetune.py has its own tests in test_bench_finetune.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

BENCHES = {
    "generation.py": (
        ["--new-tokens", "2", "--runs", "1", "--skip-cold"],
        ("baseline", "formats", "decode_tok_s_app", "decode_tok_s_baseline", "decode_ratio", "ttft_s_app"),
    ),
    "load.py": (
        ["--streams", "1,3", "--new-tokens", "4"],
        ("agg_tok_s", "ttft_p95_s", "single_stream_tok_s", "rows"),
    ),
    "evaluation.py": (["--n", "3", "--rounds", "1", "--skip-extra"], ()),
    "profile_step.py": (
        ["--rows", "2", "--steps", "2", "--top", "3", "--positions", "5"],
        ("step_ms", "step_cpu_ms", "tok_s", "ops_per_step", "top_ops"),
    ),
}


@pytest.mark.parametrize("script", sorted(BENCHES))
def test_bench_script_runs_on_the_tiny_model_and_prints_its_json(script, tiny_model_dir):
    flags, fields = BENCHES[script]
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--model", str(tiny_model_dir), "--json", *flags],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    for field in fields:
        assert field in report, field
    if script == "load.py":
        assert set(report["agg_tok_s"]) == {"1", "3"} and all(v > 0 for v in report["agg_tok_s"].values())
        assert report["single_stream_tok_s"] > 0
        assert [row["new_tokens"] for row in report["rows"]] == [4, 12]  # every stream decoded all its tokens
        assert report["rows"][1]["peak_batch"] >= 2
    if script == "profile_step.py":
        assert report["rows"] == 2 and report["step_ms"] > 0 and len(report["top_ops"]) == 3
        shares = [op["share"] for op in report["top_ops"]]
        assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1
        assert all(op["calls_per_step"] > 0 for op in report["top_ops"])
