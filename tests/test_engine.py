"""The engine on the tiny random model: greedy answers equal a plain decoding loop over the model's own forward
pass, alone or batched with others; continuous batching, the queue, cancellation, chunked prefill, memory
limits and failures."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from ftvpe_core import FtvpeError
from ftvpe_core.model import engine, fastpath, generation, models
from ftvpe_core.settings import GenerationSettings
from tests.conftest import reference_greedy

PROMPTS = [
    "write something about travel .",
    "when does the train arrive ?",
    "act as a travel blogger . write about a night train trip for families .",
    "hello world",
    "think step by step : when does the last train arrive ? answer in the final line .",
]
GREEDY = GenerationSettings(max_new_tokens=20, repetition_penalty=1.0)


def ids_of(loaded, text: str) -> list[int]:
    return generation.encode_chat(loaded, [{"role": "user", "content": text}])


@pytest.fixture
def fresh(lively):
    """A new engine for the lively model (nothing remembered, default limits), and a way to set limits."""

    def make(**limits) -> engine.Engine:
        return engine.configure(lively, engine.EngineSettings(**limits))

    make()
    return make


def test_greedy_answers_alone_equal_the_plain_decoding_loop(lively, fresh):
    for text in PROMPTS:
        ids = ids_of(lively, text)
        got = engine.get(lively).generate(ids, GREEDY)
        assert got.tokens == reference_greedy(lively, ids, GREEDY.max_new_tokens), text
        assert got.stop_reason in ("end", "length")


def test_greedy_answers_batched_together_equal_each_alone(lively, fresh):
    scheduler = engine.get(lively)
    requests = [scheduler.submit(ids_of(lively, t), GREEDY) for t in PROMPTS]
    for r in requests:
        r.wait(60)
    assert scheduler.peak_rows >= 3  # they really decoded together
    for text, r in zip(PROMPTS, requests):
        assert r.tokens == reference_greedy(lively, ids_of(lively, text), GREEDY.max_new_tokens), text
    assert len({tuple(r.tokens) for r in requests}) > 2  # different answers, so rows were not mixed up


def test_a_request_joins_a_running_batch_without_changing_its_answer(lively, fresh):
    scheduler = engine.get(lively)
    long = GenerationSettings(max_new_tokens=60, repetition_penalty=1.0, stop_at_end=False)
    first = scheduler.submit(ids_of(lively, PROMPTS[2]), long)
    first.read(5, timeout=30)  # decoding already
    late = scheduler.submit(ids_of(lively, PROMPTS[0]), GREEDY)
    late.wait(60)
    assert not first.finished or len(first.tokens) == 60
    first.wait(60)
    assert scheduler.peak_rows == 2
    assert len(first.tokens) == 60
    assert late.tokens == reference_greedy(lively, ids_of(lively, PROMPTS[0]), GREEDY.max_new_tokens)


def test_sampled_answers_follow_their_own_seed_in_a_batch(lively, fresh):
    sampled = [GenerationSettings(max_new_tokens=16, temperature=1.0, top_p=0.9, seed=s) for s in (1, 2, 3)]
    alone = [engine.get(lively).generate(ids_of(lively, PROMPTS[0]), s).tokens for s in sampled]
    fresh()
    together = [engine.get(lively).submit(ids_of(lively, PROMPTS[0]), s) for s in sampled]
    assert [r.wait(60).tokens for r in together] == alone
    assert len({tuple(t) for t in alone}) > 1


def test_a_full_batch_queues_requests_with_their_positions(lively, fresh):
    scheduler = fresh(max_batch=2)
    slow = GenerationSettings(max_new_tokens=40, repetition_penalty=1.0, stop_at_end=False)
    requests = [scheduler.submit(ids_of(lively, t), slow) for t in PROMPTS[:4]]
    requests[1].read(1, timeout=30)
    positions = [r.queue_position for r in requests]
    assert positions[:2] == [None, None] and positions[2:] == [1, 2]
    assert scheduler.stats()["waiting"] == 2
    for r in requests:
        assert len(r.wait(60).tokens) == 40
    assert scheduler.peak_rows == 2


def test_the_queue_gives_an_owner_with_nothing_running_the_next_place(lively, fresh):
    scheduler = fresh(max_batch=1)
    settings = GenerationSettings(max_new_tokens=6, repetition_penalty=1.0, stop_at_end=False)
    busy = [scheduler.submit(ids_of(lively, PROMPTS[0]), settings, owner="busy") for _ in range(3)]
    newcomer = scheduler.submit(ids_of(lively, PROMPTS[1]), settings, owner="newcomer")
    for r in busy + [newcomer]:
        r.wait(60)
    started = sorted(busy + [newcomer], key=lambda r: r.first_token_at)
    assert started.index(newcomer) == 1  # right after the request that was already running


def test_cancel_frees_the_place_within_one_step(lively, fresh):
    scheduler = fresh(max_batch=1)
    endless = GenerationSettings(max_new_tokens=200, repetition_penalty=1.0, stop_at_end=False)
    running = scheduler.submit(ids_of(lively, PROMPTS[0]), endless)
    waiting = scheduler.submit(ids_of(lively, PROMPTS[1]), GREEDY)
    running.read(3, timeout=30)
    steps = scheduler.steps
    running.cancel()
    running.wait(30)  # a cancelled request has no error: wait returns
    assert running.state == "cancelled" and running.stop_reason == "cancelled"
    assert scheduler.steps - steps <= 1
    assert len(running.tokens) < 200
    waiting.wait(60)
    assert waiting.state == "done"


def test_an_abandoned_stream_is_cancelled(lively, fresh):
    endless = GenerationSettings(max_new_tokens=200, repetition_penalty=1.0, stop_at_end=False)
    stream = generation.GenerationStream(lively, [{"role": "user", "content": PROMPTS[0]}], endless)
    next(stream)
    stream.close()
    stream.request.wait(30)
    assert stream.request.state == "cancelled"
    two = [generation.GenerationStream(lively, [{"role": "user", "content": p}], endless) for p in PROMPTS[:2]]
    for _ in generation.interleave(two):
        break  # leaving the loop early, as a Streamlit rerun does
    for s in two:
        s.request.wait(30)
        assert s.request.state == "cancelled"


def test_a_long_prompt_is_prefilled_in_chunks_while_the_batch_keeps_decoding(lively, fresh):
    scheduler = fresh(prefill_chunk=16)
    shapes: list[tuple[int, int]] = []
    hook = lively.model.model.embed_tokens.register_forward_hook(
        lambda module, args, out: shapes.append(tuple(args[0].shape))
    )
    try:
        running = scheduler.submit(ids_of(lively, PROMPTS[0]), GenerationSettings(max_new_tokens=80, stop_at_end=False))
        running.read(2, timeout=30)
        long_ids = ids_of(lively, " ".join(PROMPTS * 2))
        assert len(long_ids) > 3 * 16
        long = scheduler.submit(long_ids, GREEDY)
        long.wait(60)
        running.wait(60)
    finally:
        hook.remove()
    chunks = [i for i, s in enumerate(shapes) if s[0] == 1 and s[1] == 16]
    assert len(chunks) >= 3
    between = shapes[chunks[0] : chunks[-1]]
    assert any(s[1] == 1 for s in between)  # decoding steps ran between the chunks
    assert all(s[1] <= 16 for s in shapes)


def test_the_same_prompt_again_skips_its_prefill_and_answers_the_same(lively, fresh):
    ids = ids_of(lively, PROMPTS[2])
    first = engine.get(lively).generate(ids, GREEDY, first_top=5)
    passes: list[int] = []
    hook = lively.model.model.embed_tokens.register_forward_hook(
        lambda module, args, out: passes.append(args[0].shape[-1])
    )
    try:
        again = engine.get(lively).generate(ids, GREEDY, first_top=5)
    finally:
        hook.remove()
    assert again.tokens == first.tokens and again.first_top == first.first_top
    assert max(passes, default=1) == 1  # decoding steps only: no prefill pass


def test_first_top_is_the_prompt_next_token_distribution(lively, fresh):
    ids = ids_of(lively, PROMPTS[1])
    request = engine.get(lively).generate(ids, GenerationSettings(max_new_tokens=1), first_top=4)
    with torch.inference_mode():
        probs = torch.softmax(lively.model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
    top = torch.topk(probs, 4)
    assert [i for _, i in request.first_top] == top.indices.tolist()
    assert [p for p, _ in request.first_top] == pytest.approx(top.values.tolist(), abs=1e-6)


def test_memory_limits_refuse_or_queue_requests(lively, fresh):
    per_token = engine._bytes_per_token(lively.model.config, 4)
    scheduler = fresh(kv_cache_mb=1)
    prompt = 2**20 // per_token  # with 2,048 new tokens: more than 1 MB
    with pytest.raises(FtvpeError, match="needs 2 MB of key/value cache, more than the engine's 1 MB"):
        scheduler.submit([5] * prompt, GenerationSettings(max_new_tokens=2048))
    # Two requests that each fit alone but not together run one after the other.
    settings = GenerationSettings(max_new_tokens=30, repetition_penalty=1.0, stop_at_end=False)
    ids = ids_of(lively, PROMPTS[0])
    assert len(ids) + 30 <= 64  # a row's share: prompt and new tokens, in steps of 64 positions
    rows_fit = 2**20 // (64 * per_token)
    scheduler = fresh(kv_cache_mb=1, max_batch=64)
    requests = [scheduler.submit(ids, settings) for _ in range(rows_fit + 2)]
    for r in requests:
        r.wait(60)
    assert scheduler.peak_rows == rows_fit


def test_a_failing_step_fails_its_requests_clearly_and_the_engine_goes_on(lively, fresh, monkeypatch):
    original = fastpath.decode_step
    calls = []

    def broken(*args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return original(*args)

    monkeypatch.setattr(fastpath, "decode_step", broken)
    request = engine.get(lively).submit(ids_of(lively, PROMPTS[0]), GREEDY)
    with pytest.raises(FtvpeError, match="Generation failed: RuntimeError: out of memory"):
        request.wait(30)
    assert request.state == "failed"
    later = engine.get(lively).generate(ids_of(lively, PROMPTS[1]), GREEDY)
    assert later.tokens == reference_greedy(lively, ids_of(lively, PROMPTS[1]), GREEDY.max_new_tokens)


def test_models_without_the_lean_step_are_scheduled_row_by_row_with_the_same_answers(lively, monkeypatch):
    expected = [reference_greedy(lively, ids_of(lively, t), GREEDY.max_new_tokens) for t in PROMPTS[:3]]
    monkeypatch.setattr(fastpath, "supports", lambda model: False)
    scheduler = engine.configure(lively, engine.EngineSettings())
    assert not scheduler.batched
    requests = [scheduler.submit(ids_of(lively, t), GREEDY) for t in PROMPTS[:3]]
    assert [r.wait(60).tokens for r in requests] == expected
    engine.configure(lively, engine.EngineSettings())


def test_engine_settings_are_checked():
    with pytest.raises(FtvpeError, match="max_batch"):
        engine.EngineSettings(max_batch=0)
    with pytest.raises(FtvpeError, match="prefill_chunk"):
        engine.EngineSettings(prefill_chunk=4)
    assert engine.EngineSettings.for_device("cuda").max_batch > engine.EngineSettings.for_device("cpu").max_batch


def test_requests_from_many_threads_all_finish_with_their_own_answers(lively, fresh):
    expected = {t: reference_greedy(lively, ids_of(lively, t), GREEDY.max_new_tokens) for t in PROMPTS}
    got: dict[int, list[int]] = {}
    barrier = threading.Barrier(10)

    def learner(i: int) -> None:
        barrier.wait(30)
        got[i] = engine.get(lively).generate(ids_of(lively, PROMPTS[i % 5]), GREEDY, owner=f"s{i}").tokens

    threads = [threading.Thread(target=learner, args=(i,)) for i in range(10)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert time.monotonic() - began < 60
    assert all(got[i] == expected[PROMPTS[i % 5]] for i in range(10))


def test_generate_called_on_the_compute_thread_runs_inline_instead_of_waiting_forever(lively, fresh):
    ids = ids_of(lively, PROMPTS[1])
    request = models.compute(engine.get(lively).generate, ids, GREEDY)
    assert request.tokens == reference_greedy(lively, ids, GREEDY.max_new_tokens)


PREAMBLE = "act as a travel blogger . use a friendly tone for families in the USA . answer in the final line . "


def _with_preamble(lively, question: str) -> tuple[list[int], int]:
    """A prompt that starts with the shared preamble, and the length of the part every such prompt shares."""
    ids = ids_of(lively, PREAMBLE + question)
    other = ids_of(lively, PREAMBLE + "hello")
    n = next(i for i, (a, b) in enumerate(zip(ids, other)) if a != b)
    return ids, n


def test_a_shared_prefix_is_prefilled_once_and_each_answer_is_the_one_it_gets_alone(lively, fresh):
    questions = [p for p in PROMPTS if p != "hello world"]
    asked = [_with_preamble(lively, q) for q in questions]
    alone = []
    for ids, n in asked:
        fresh()  # nothing remembered: the prefix computed for this request alone
        alone.append(engine.get(lively).generate(ids, GREEDY, first_top=5, prefix_tokens=n))
    fresh()
    scheduler = engine.get(lively)
    passes: list[int] = []
    hook = lively.model.model.embed_tokens.register_forward_hook(
        lambda module, args, out: passes.append(args[0].shape[-1])
    )
    try:
        others = [scheduler.submit(ids_of(lively, t), GREEDY) for t in PROMPTS[:2]]  # strangers in the batch
        together = [scheduler.submit(ids, GREEDY, first_top=5, prefix_tokens=n) for ids, n in asked]
        for r in others + together:
            r.wait(60)
    finally:
        hook.remove()
    assert scheduler.peak_rows >= 4
    for question, a, t in zip(questions, alone, together):
        assert t.tokens == a.tokens, question
        assert t.first_top == a.first_top, question  # the prompt's logits, bit for bit
    assert passes.count(asked[0][1]) == 1  # the preamble: one prefill for all four


def test_a_prefix_must_be_a_whole_number_shorter_than_the_prompt(lively, fresh):
    ids = ids_of(lively, PROMPTS[0])
    for bad in (-1, len(ids), len(ids) + 3, 2.5, True):
        with pytest.raises(FtvpeError, match="prefix"):
            engine.get(lively).submit(ids, GREEDY, prefix_tokens=bad)
