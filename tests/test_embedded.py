"""The embedded SmolLM2-135M-Instruct end to end: GGUF cache fidelity, and prompts that change answers.

Slower than the rest (real 135M model on the CPU); the model is loaded once for the module, and the
GGUF-to-safetensors cache lives in the shared test data folder (see conftest), so it is built once.
"""

from __future__ import annotations

import json

import pytest
import torch

from ftvpe_core import cli, settings
from ftvpe_core.model import generation, models
from ftvpe_core.settings import GenerationSettings
from ftvpe_core.tasks import presets, prompts
from tests.conftest import embedded_home, reference_greedy

pytestmark = pytest.mark.embedded

TRAVEL_PLAIN = ["generate", "Write something about travel."]
TRAVEL_FLAGS = [
    "--role",
    "a travel blogger",
    "--audience",
    "families in the USA",
    "--tone",
    "friendly",
    "--words",
    "100",
]


@pytest.fixture(scope="module")
def embedded():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTVPE_HOME", str(embedded_home()))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield models.load(settings.EMBEDDED_MODEL, device="cpu", weight_format="float32")


def run_cli_json(capsys, *argv: str) -> dict:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_embedded_model_loads_from_the_complete_safetensors_cache(embedded):
    assert embedded.source.kind == "embedded"
    assert embedded.name == models.EMBEDDED_LABEL
    assert models.is_cached(models.gguf_cache_dir(models.embedded_gguf_path()))
    assert embedded.context_length == 8192
    assert embedded.tokenizer.chat_template


def test_cached_weights_give_the_same_logits_as_the_gguf_file(embedded):
    from transformers import AutoModelForCausalLM

    gguf = models.embedded_gguf_path()
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    direct.hf_quantizer = None
    direct.eval()
    messages = prompts.build(presets.get("travel").spec).messages
    ids = torch.tensor([generation.encode_chat(embedded, messages)])
    with torch.inference_mode():
        cached_logits = embedded.model(input_ids=ids).logits
        gguf_logits = direct(input_ids=ids).logits
    assert torch.equal(cached_logits, gguf_logits)


def test_travel_preset_plain_and_engineered_prompts_give_different_answers(embedded):
    spec = presets.get("travel").spec
    s = GenerationSettings(max_new_tokens=60)
    plain = generation.generate(embedded, prompts.build(spec.plain()).messages, s)
    engineered = generation.generate(embedded, prompts.build(spec).messages, s)
    assert plain.text.strip() and engineered.text.strip()
    assert plain.text != engineered.text
    assert engineered.prompt_tokens > plain.prompt_tokens
    assert plain.tokens_per_s > 0 and engineered.tokens_per_s > 0


def test_cli_plain_and_engineered_travel_prompts_give_different_outputs(capsys):
    common = ["--max-new-tokens", "40", "--json", "--device", "cpu", "--dtype", "float32"]
    plain = run_cli_json(capsys, *TRAVEL_PLAIN, *common)
    engineered = run_cli_json(capsys, *TRAVEL_PLAIN, *TRAVEL_FLAGS, *common)
    for out in (plain, engineered):
        assert out["model"] == models.EMBEDDED_LABEL
        assert out["output"].strip()
        assert 1 <= out["new_tokens"] <= 40
        assert out["ttft_s"] > 0 and out["tokens_per_s"] > 0
    assert plain["output"] != engineered["output"]
    assert engineered["prompt_tokens"] > plain["prompt_tokens"]
    assert {s["technique"] for s in plain["segments"]} == {"task"}
    assert {s["technique"] for s in engineered["segments"]} == {"task", "role", "context"}
    assert engineered["messages"][0]["content"] == "Act as a travel blogger. Answer the way a travel blogger would."


def test_cli_next_token_gives_sorted_probabilities(capsys):
    out = run_cli_json(capsys, "next-token", "Write something about travel.", "--top", "8", "--json", "--device", "cpu")
    probs = [t["prob"] for t in out["top"]]
    assert len(probs) == 8
    assert probs == sorted(probs, reverse=True)
    assert 0 < sum(probs) <= 1 + 1e-6
    assert all(t["token"] for t in out["top"])


@pytest.fixture(scope="module")
def embedded_q4():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTVPE_HOME", str(embedded_home()))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield models.load(settings.EMBEDDED_MODEL, device="cpu")  # q4, the default on a CPU


@pytest.mark.parametrize("weights", ["q4", "float32"])
def test_engine_greedy_answers_equal_the_plain_loop_alone_and_batched(weights, embedded, embedded_q4):
    from ftvpe_core.model import engine

    loaded = embedded_q4 if weights == "q4" else embedded
    assert loaded.weight_format == weights
    settings = GenerationSettings(max_new_tokens=40, repetition_penalty=1.0)
    chats = [prompts.build(p.spec, loaded.count_tokens).messages for p in presets.PRESETS[:4]]
    ids = [generation.encode_chat(loaded, c) for c in chats]
    expected = [reference_greedy(loaded, i, settings.max_new_tokens) for i in ids]
    scheduler = engine.configure(loaded, engine.EngineSettings())
    alone = [scheduler.generate(i, settings).tokens for i in ids]
    scheduler.forget_prompts()
    together = [scheduler.submit(i, settings) for i in ids]
    together = [r.wait(120).tokens for r in together]
    assert scheduler.peak_rows >= 2
    assert alone == expected
    assert together == expected


def test_a_class_running_one_preset_together_gets_the_answer_each_gets_alone(embedded_q4):
    """Eight learners press Run on the same preset at once: one batch of rows of one length. When such rows shared
    one attention call, four of the eight got another answer than alone on these two presets (rows on the
    kernel's second thread differed in the last bits, and the 4-bit model's near ties went the other way)."""
    from ftvpe_core.model import engine

    settings = GenerationSettings(max_new_tokens=80, repetition_penalty=1.0, stop_at_end=False)
    scheduler = engine.configure(embedded_q4, engine.EngineSettings())
    for key in ("skincare", "json"):
        ids = generation.encode_chat(
            embedded_q4, prompts.build(presets.get(key).spec, embedded_q4.count_tokens).messages
        )
        alone = scheduler.generate(ids, settings).tokens
        expected = reference_greedy(embedded_q4, ids, settings.max_new_tokens)  # ends at an end token
        assert alone[: len(expected)] == expected, key
        together = [scheduler.submit(ids, settings) for _ in range(8)]
        assert [r.wait(120).tokens for r in together] == [alone] * 8, key
    assert scheduler.peak_rows == 8
