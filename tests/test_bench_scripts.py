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
