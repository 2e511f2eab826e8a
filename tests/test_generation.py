"""Generation and next-token probabilities on the tiny random model."""

from __future__ import annotations

import threading

import pytest
import torch

from ftvpe_core import FtvpeError
from ftvpe_core.model import engine, generation, models
from ftvpe_core.settings import GenerationSettings
from tests.tiny import CONTEXT_LENGTH

TRAVEL = [{"role": "user", "content": "write something about travel ."}]
TRAIN = [
    {"role": "system", "content": "act as a travel blogger ."},
    {"role": "user", "content": "when does the train arrive ?"},
]
SHORT = GenerationSettings(max_new_tokens=12)


@pytest.fixture
def never_stop(monkeypatch):
    """No end token: generation runs to max_new_tokens (a random model rarely picks the end token)."""
    monkeypatch.setattr(engine, "stop_ids", lambda loaded: set())


def test_generate_returns_text_and_timings(tiny_loaded):
    r = generation.generate(tiny_loaded, TRAVEL, SHORT)
    assert isinstance(r.text, str) and r.text
    assert r.prompt_tokens == len(generation.encode_chat(tiny_loaded, TRAVEL))
    assert 1 <= r.new_tokens <= SHORT.max_new_tokens
    assert r.ttft_s > 0
    assert r.total_s >= r.ttft_s
    assert r.tokens_per_s >= 0
    assert r.stop_reason in {"end", "length"}
    assert set(r.to_dict()) == {
        "text",
        "prompt_tokens",
        "new_tokens",
        "ttft_s",
        "tokens_per_s",
        "total_s",
        "stop_reason",
    }


def test_encode_chat_uses_the_chat_template_and_ends_with_the_assistant_turn(tiny_loaded):
    ids = generation.encode_chat(tiny_loaded, TRAVEL)
    assert all(isinstance(i, int) for i in ids)
    assert tiny_loaded.tokenizer.decode(ids) == (
        "<|im_start|> user write something about travel . <|im_end|> <|im_start|> assistant"
    )


def test_greedy_generation_is_deterministic(tiny_loaded):
    first = generation.generate(tiny_loaded, TRAIN, SHORT)
    second = generation.generate(tiny_loaded, TRAIN, SHORT)
    assert first.text == second.text
    assert first.new_tokens == second.new_tokens


def test_sampling_with_the_same_seed_repeats(tiny_loaded):
    s = GenerationSettings(max_new_tokens=16, temperature=1.5, top_p=0.9, seed=7)
    assert generation.generate(tiny_loaded, TRAVEL, s).text == generation.generate(tiny_loaded, TRAVEL, s).text


def test_sampling_with_different_seeds_differs(tiny_loaded):
    texts = {
        generation.generate(tiny_loaded, TRAVEL, GenerationSettings(max_new_tokens=16, temperature=2.0, seed=seed)).text
        for seed in (1, 2)
    }
    assert len(texts) == 2


def test_sampling_differs_from_greedy(tiny_loaded):
    greedy = generation.generate(tiny_loaded, TRAVEL, GenerationSettings(max_new_tokens=16))
    sampled = generation.generate(tiny_loaded, TRAVEL, GenerationSettings(max_new_tokens=16, temperature=2.0, seed=1))
    assert sampled.text != greedy.text


def test_streamed_pieces_join_to_the_result(tiny_loaded):
    stream = generation.GenerationStream(tiny_loaded, TRAIN, GenerationSettings(max_new_tokens=20, temperature=1.0))
    pieces = list(stream)
    assert len(pieces) > 1
    assert stream.result is not None
    assert "".join(pieces) == stream.result.text == stream.text


def test_result_is_set_only_when_the_stream_ends(tiny_loaded):
    stream = generation.GenerationStream(tiny_loaded, TRAVEL, SHORT)
    assert stream.result is None
    next(stream)
    assert stream.result is None
    for _ in stream:
        pass
    assert stream.result is not None


@pytest.mark.parametrize("n", [1, 7])
def test_max_new_tokens_is_respected(tiny_loaded, never_stop, n):
    r = generation.generate(tiny_loaded, TRAVEL, GenerationSettings(max_new_tokens=n))
    assert r.new_tokens == n
    assert r.stop_reason == "length"


def test_the_end_token_stops_generation_without_showing_it(tiny_loaded, monkeypatch):
    top = generation.next_token_top(tiny_loaded, TRAVEL, k=1)[0]
    # Make the greedy first token the end token: the answer is empty and ends normally.
    monkeypatch.setattr(engine, "stop_ids", lambda loaded: {top.token_id})
    r = generation.generate(tiny_loaded, TRAVEL, GenerationSettings(max_new_tokens=10, repetition_penalty=1.0))
    assert (r.text, r.new_tokens, r.stop_reason) == ("", 0, "end")
    assert r.ttft_s > 0 and r.tokens_per_s == 0.0


def test_stop_ids_include_the_tokenizer_end_token(tiny_loaded):
    assert tiny_loaded.tokenizer.convert_tokens_to_ids("<|im_end|>") in generation.stop_ids(tiny_loaded)


def test_a_prompt_longer_than_the_context_is_refused(tiny_loaded):
    long = [{"role": "user", "content": "travel " * 300}]
    with pytest.raises(FtvpeError, match=f"more than the model's context of {CONTEXT_LENGTH} tokens"):
        generation.generate(tiny_loaded, long, SHORT)
    with pytest.raises(FtvpeError, match=f"context of {CONTEXT_LENGTH} tokens"):
        generation.next_token_top(tiny_loaded, long)


def test_prompt_plus_new_tokens_must_fit_the_context(tiny_loaded):
    prompt_tokens = len(generation.encode_chat(tiny_loaded, TRAVEL))
    fits = GenerationSettings(max_new_tokens=CONTEXT_LENGTH - prompt_tokens)
    generation.GenerationStream(tiny_loaded, TRAVEL, fits)  # accepted
    too_many = GenerationSettings(max_new_tokens=CONTEXT_LENGTH - prompt_tokens + 1)
    with pytest.raises(FtvpeError, match=f"The prompt is {prompt_tokens} tokens and {too_many.max_new_tokens} new"):
        generation.GenerationStream(tiny_loaded, TRAVEL, too_many)


def test_next_token_top_is_sorted_and_sums_to_at_most_one(tiny_loaded):
    top = generation.next_token_top(tiny_loaded, TRAIN, k=5)
    assert len(top) == 5
    probs = [t.prob for t in top]
    assert probs == sorted(probs, reverse=True)
    assert all(0 < p <= 1 for p in probs)
    assert sum(probs) <= 1 + 1e-6
    assert len({t.token_id for t in top}) == 5
    assert all(t.token == tiny_loaded.tokenizer.decode([t.token_id]) for t in top)


def test_next_token_top_matches_the_model_distribution(tiny_loaded):
    ids = generation.encode_chat(tiny_loaded, TRAIN)
    with torch.inference_mode():
        probs = torch.softmax(tiny_loaded.model(input_ids=torch.tensor([ids])).logits[0, -1], -1)
    top = generation.next_token_top(tiny_loaded, TRAIN, k=3)
    assert [t.token_id for t in top] == probs.topk(3).indices.tolist()
    assert [t.prob for t in top] == pytest.approx(probs.topk(3).values.tolist())


def test_greedy_first_token_is_the_most_likely_next_token(tiny_loaded, never_stop):
    top = generation.next_token_top(tiny_loaded, TRAIN, k=1)[0]
    r = generation.generate(tiny_loaded, TRAIN, GenerationSettings(max_new_tokens=1, repetition_penalty=1.0))
    assert r.text == top.token


@pytest.mark.parametrize("k", [0, -1, 101])
def test_next_token_top_refuses_k_out_of_range(tiny_loaded, k):
    with pytest.raises(FtvpeError, match=f"Top-k must be between 1 and 100, got {k}"):
        generation.next_token_top(tiny_loaded, TRAIN, k=k)


def test_next_token_top_with_k_above_the_vocabulary_is_refused_clearly(tiny_loaded):
    k = 100
    assert len(tiny_loaded.tokenizer) < k
    with pytest.raises(FtvpeError):
        generation.next_token_top(tiny_loaded, TRAIN, k=k)


def test_interleave_advances_both_streams_and_completes_each(tiny_loaded, never_stop):
    settings = GenerationSettings(max_new_tokens=10)
    streams = [generation.GenerationStream(tiny_loaded, m, settings) for m in (TRAVEL, TRAIN)]
    order, pieces = [], {0: [], 1: []}
    for i, piece in generation.interleave(streams):
        order.append(i)
        pieces[i].append(piece)
    assert set(order) == {0, 1}
    # Both run together in the engine: the second starts before the first has finished.
    assert order.index(1) < len(order) - 1 - order[::-1].index(0)
    assert engine.get(tiny_loaded).peak_rows >= 2
    for i, messages in enumerate((TRAVEL, TRAIN)):
        result = streams[i].result
        assert result is not None and result.new_tokens == 10
        assert "".join(pieces[i]) == result.text
        assert result.text == generation.generate(tiny_loaded, messages, settings).text


def test_concurrent_generation_on_one_model_matches_sequential_runs(tiny_loaded):
    jobs = [(TRAVEL, 1), (TRAIN, 2), (TRAVEL, 3), (TRAIN, 4)]

    def settings(seed):
        return GenerationSettings(max_new_tokens=24, temperature=1.0, seed=seed)

    expected = [generation.generate(tiny_loaded, m, settings(seed)).text for m, seed in jobs]
    got: list[str | None] = [None] * len(jobs)
    errors = []
    barrier = threading.Barrier(len(jobs))

    def work(i, messages, seed):
        try:
            barrier.wait(timeout=30)
            got[i] = generation.generate(tiny_loaded, messages, settings(seed)).text
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i, m, seed)) for i, (m, seed) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert got == expected


def test_forward_passes_run_on_the_one_compute_thread(tiny_loaded):
    threads = set()
    # The embedding runs in every prefill and every decoding step (the lean step skips the model's forward).
    hook = tiny_loaded.model.model.embed_tokens.register_forward_pre_hook(
        lambda module, args: threads.add(threading.current_thread().name)
    )
    try:
        workers = [threading.Thread(target=generation.generate, args=(tiny_loaded, m, SHORT)) for m in (TRAVEL, TRAIN)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(timeout=120)
        generation.next_token_top(tiny_loaded, TRAVEL, k=3)
    finally:
        hook.remove()
    assert len(threads) == 1
    assert threads.pop().startswith(models.COMPUTE_THREAD)
