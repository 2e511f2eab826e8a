"""bench/adapters.py (base and tuned requests at once: engines in turns vs one peft mixed batch) runs end to end
on the tiny random model with an adapter trained on it."""

from __future__ import annotations

import pytest

from ftvpe_core.model import adapters
from tests.conftest import bench_json, run_bench


@pytest.fixture(scope="module")
def tiny_adapter(tiny_loaded, tmp_path_factory):
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    peft_model = get_peft_model(copy.deepcopy(tiny_loaded.model), config)
    with torch.no_grad():  # lora_B starts at zero: move it, so the tuned rows really differ from the base ones
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return adapters.save(peft_model, tmp_path_factory.mktemp("bench-adapter"))


def test_adapters_bench_serves_both_ways_and_says_which_is_faster(tiny_model_dir, tiny_adapter):
    flags = ("--adapter", str(tiny_adapter), "--pairs", "2", "--new-tokens", "3")
    report = bench_json("adapters.py", "--model", str(tiny_model_dir), *flags)
    for way in ("turns", "mixed_batch", "generate_reference"):
        assert report[way]["new_tokens"] == 2 * 2 * 3 and report[way]["agg_tok_s"] > 0, way  # every row, every token
    assert report["faster"] in ("turns", "mixed_batch") and report["turns_vs_mixed"] > 0


def test_adapters_bench_without_an_adapter_folder_exits_2_in_one_line(tiny_model_dir, tmp_path):
    flags = ("--adapter", str(tmp_path / "none"), "--pairs", "1", "--new-tokens", "2")
    done = run_bench("adapters.py", "--model", str(tiny_model_dir), *flags)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and lines[-1].startswith("error:") and "Adapter folder not found" in lines[-1]
