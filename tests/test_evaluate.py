"""Evaluation: metrics on hand-made answers, tasks from built-ins and files, engineered prompts per technique,
batched generation against one-at-a-time generation on the tiny model, arms and the ablation."""

from __future__ import annotations

import json
import os

import pytest

from ftvpe_core import FtvpeError
from ftvpe_core.model import engine, fastpath, generation
from ftvpe_core.settings import GenerationSettings
from ftvpe_core.tasks import evaluate, prompts
from ftvpe_core.tasks.datasets import Example
from ftvpe_core.tasks.evaluate import Task
from tests.tiny import CONTEXT_LENGTH

LABELS = ["billing", "shipping", "technical", "account"]
BRAND_RULES = {
    "sign_off": "Happy trails from the Pinecone crew!",
    "max_words": 20,
    "banned_words": ["cheap", "customer"],
    "preferred_words": ["trail-mate"],
}
SIGN_OFF = BRAND_RULES["sign_off"]
NO_PENALTY = GenerationSettings(max_new_tokens=10, repetition_penalty=1.0)
# A system message of more than MIN_SHARED_PREFIX tokens: the batched path then computes it once.
SYSTEM = {"role": "system", "content": "act as a travel blogger . use a friendly tone for families in the USA ."}
TINY_PROMPTS = [
    "write something about travel .",
    "when does the train arrive ?",
    "hello world",
    "think step by step about the night train trip and the time it takes to arrive .",
    "good day",
    "write a list of facts about the USA for families .",
]


def task(metric: str, **kw) -> Task:
    return Task(name="t", title="T", metric=metric, examples=[], **kw)


def label_task() -> Task:
    return task("accuracy", labels=LABELS)


def ex(response: str, facts: list[str] | None = None) -> Example:
    return Example("the question", response, facts or [])


# Metrics


@pytest.mark.parametrize(
    "answer, expected, detail",
    [
        ("billing", 1.0, "names billing"),
        ("Billing.", 1.0, "names billing"),
        ("This one is a billing question for the finance team.", 1.0, "names billing"),
        ("billing or shipping", 0.0, "names two labels: billing, shipping"),
        ("shipping", 0.0, "names shipping, expected billing"),
        ("The rebilling team", 0.0, "names no label (expected billing)"),
        ("", 0.0, "empty answer"),
        ("  \n ", 0.0, "empty answer"),
        ("The parcel shipping is fine but the charge is wrong.\nAnswer: billing", 1.0, "names billing"),
        ("Step 1: it is about a charge.\n**Answer:** Billing", 1.0, "names billing"),
        ("Thinking about shipping and billing.\nAnswer: technical", 0.0, "names technical, expected billing"),
    ],
)
def test_accuracy_needs_the_right_label_and_no_other(answer, expected, detail):
    assert evaluate.score(label_task(), ex("billing"), answer) == (expected, detail)


def test_accuracy_does_not_count_a_label_inside_a_longer_label():
    spam = task("accuracy", labels=["spam", "not spam"])
    assert evaluate.score(spam, ex("not spam"), "This is not spam.") == (1.0, "names not spam")
    assert evaluate.score(spam, ex("spam"), "Spam, clearly.") == (1.0, "names spam")
    assert evaluate.score(spam, ex("spam"), "spam, or maybe not spam")[0] == 0.0


def test_exact_match_compares_the_whole_answer_or_its_answer_line():
    t = task("exact_match", labels=LABELS)
    assert evaluate.score(t, ex("billing"), "  Billing \n") == (1.0, "exact match")
    assert evaluate.score(t, ex("billing"), "billing.")[0] == 0.0
    assert evaluate.score(t, ex("billing"), "It is about money.\nAnswer: billing")[0] == 1.0
    assert evaluate.score(t, ex("billing"), "") == (0.0, "empty answer")


def test_final_answer_reads_only_a_last_answer_line():
    assert evaluate.final_answer("reasoning\nAnswer: shipping\n") == "shipping"
    assert evaluate.final_answer("Answer: shipping\nthen more") == "Answer: shipping\nthen more"
    assert evaluate.final_answer("plain") == "plain"


@pytest.mark.parametrize(
    "answer, expected, detail",
    [
        (f"Hey trail-mate, your gear ships today. {SIGN_OFF}", 1.0, "all rules kept"),
        ("Hey trail-mate, your gear ships today.", 2 / 3, "no sign-off"),
        (f"Hey trail-mate, {'very ' * 20}good gear. {SIGN_OFF}", 2 / 3, "30 words (limit 20)"),
        (f"Our cheap gear ships today. {SIGN_OFF}", 2 / 3, "banned: cheap"),
        (f"Dear customers, our gear ships today. {SIGN_OFF}", 2 / 3, "banned: customer"),
        ("happy trails from the pinecone crew", 1.0, "all rules kept"),
        (
            f"Cheap gear for every customer, {'very ' * 20}good.",
            0.0,
            "no sign-off; 26 words (limit 20); banned: cheap, customer",
        ),
        ("", 0.0, "empty answer"),
    ],
)
def test_constraints_score_the_share_of_brand_rules_kept(answer, expected, detail):
    value, got = evaluate.score(task("constraints", rules=BRAND_RULES), ex("ref"), answer)
    assert value == pytest.approx(expected)
    assert got == detail


def test_fact_recall_counts_facts_found_ignoring_case_and_punctuation():
    t = task("fact_recall")
    e = ex("ref", ["13.8 kWh", "6,000 cycles", "AC-coupled"])
    assert evaluate.score(t, e, "It stores 13.8 KWH, is ac coupled and lasts 6000 cycles.") == (1.0, "3/3 facts")
    value, detail = evaluate.score(t, e, "It stores 13.8 kWh.")
    assert value == pytest.approx(1 / 3)
    assert detail == "1/3 facts; missing: 6,000 cycles, AC-coupled"
    assert evaluate.score(t, e, "It stores 138 kWh")[0] == 0.0  # '13.8' is not '138'
    assert evaluate.score(t, e, "") == (0.0, "empty answer")


def test_fact_recall_without_facts_falls_back_to_token_f1():
    value, detail = evaluate.score(task("fact_recall"), ex("the cat sat"), "cat sat")
    assert value == 1.0 and detail.startswith("no facts listed: F1 1.00")


def test_token_f1_is_squad_f1():
    t = task("token_f1")
    ref = ex("The cat sat on the mat.")
    assert evaluate.score(t, ref, "the cat sat on the mat")[0] == 1.0
    # Articles and punctuation dropped: reference [cat, sat, on, mat], answer [cat, sat]: P 1, R 0.5.
    assert evaluate.score(t, ref, "A cat, sat!") == (pytest.approx(2 / 3), "F1 0.67 (precision 1.00, recall 0.50)")
    assert evaluate.score(t, ref, "dogs run") == (0.0, "F1 0.00 (no words in common)")
    assert evaluate.score(t, ex("cat cat dog"), "cat")[0] == pytest.approx(0.5)  # P 1, R 1/3


def test_an_unknown_metric_is_refused():
    with pytest.raises(FtvpeError, match="Unknown metric 'bleu'"):
        evaluate.score(task("bleu"), ex("x"), "x")


# Tasks


@pytest.mark.parametrize(
    "name, metric, n_train, labels",
    [
        ("support_triage", "accuracy", 167, LABELS),
        ("support-triage", "accuracy", 167, LABELS),
        ("brand_voice", "constraints", 168, []),
        ("domain_knowledge", "fact_recall", 168, []),
    ],
)
def test_builtin_tasks_score_their_test_split(name, metric, n_train, labels):
    t = evaluate.load_task(name)
    assert len(t.examples) == 45 and len(t.shots) == n_train
    assert t.metric == metric and t.labels == labels
    assert t.name == name.replace("-", "_")
    assert bool(t.rules) == (metric == "constraints")
    if metric == "fact_recall":
        assert all(e.facts for e in t.examples)


def test_load_task_limit_and_metric_override():
    t = evaluate.load_task("support_triage", metric="exact_match", limit=5)
    assert len(t.examples) == 5 and t.metric == "exact_match" and t.labels == LABELS
    assert evaluate.load_task("brand_voice", metric="token_f1").metric == "token_f1"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name_or_file": "support_triage", "metric": "bleu"}, "Unknown metric 'bleu': choose from accuracy"),
        ({"name_or_file": "no_such_task"}, "No task 'no_such_task'"),
        ({"name_or_file": "support_triage", "metric": "constraints"}, "constraints metric checks a brand's rules"),
        ({"name_or_file": "support_triage", "metric": "fact_recall"}, "Fact recall needs examples that list facts"),
        ({"name_or_file": "support_triage", "limit": 0}, "at least 1"),
    ],
)
def test_load_task_refuses_what_it_cannot_score(kwargs, message):
    with pytest.raises(FtvpeError, match=message):
        evaluate.load_task(**kwargs)


def write_jsonl(path, rows: list[dict]):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return str(path)


def test_a_file_with_few_short_answers_is_an_accuracy_task_over_all_its_rows(tmp_path):
    rows = [{"prompt": f"message number {i}", "response": ["yes", "no", "maybe"][i % 3]} for i in range(12)]
    t = evaluate.load_task(write_jsonl(tmp_path / "votes.jsonl", rows))
    assert t.metric == "accuracy" and t.labels == ["maybe", "no", "yes"]
    assert [e.prompt for e in t.examples] != [] and len(t.examples) == 12  # every split is scored
    assert sorted(e.prompt for e in t.examples) == sorted(r["prompt"] for r in rows)
    assert len(t.shots) == 12
    assert evaluate.load_task(str(tmp_path / "votes.jsonl"), limit=3).examples == t.examples[:3]


def test_a_file_with_facts_is_a_fact_recall_task_and_free_text_is_token_f1(tmp_path):
    facts = [{"prompt": f"q{i}", "response": f"answer {i}", "facts": [f"fact {i}"]} for i in range(10)]
    assert evaluate.load_task(write_jsonl(tmp_path / "facts.jsonl", facts)).metric == "fact_recall"
    free = [{"prompt": f"q{i}", "response": f"a different long answer number {i}"} for i in range(10)]
    path = write_jsonl(tmp_path / "free.jsonl", free)
    t = evaluate.load_task(path)
    assert t.metric == "token_f1" and t.labels == []
    assert evaluate.load_task(path, metric="exact_match").metric == "exact_match"
    with pytest.raises(FtvpeError, match="Unknown metric"):
        evaluate.load_task(path, metric="rouge")
    with pytest.raises(FtvpeError, match="brand"):
        evaluate.load_task(path, metric="constraints")


def test_a_bad_file_is_refused(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "only one row"}\n', encoding="utf-8")
    with pytest.raises(FtvpeError, match="bad.jsonl was not loaded"):
        evaluate.load_task(str(path))


# Prompts


def test_no_technique_gives_the_example_prompt_alone():
    t = evaluate.load_task("support_triage")
    e = t.examples[0]
    built = prompts.build(evaluate.task_spec(t, e, []))
    assert built.messages == [{"role": "user", "content": e.prompt}]


def test_each_technique_adds_its_part():
    t = evaluate.load_task("support_triage")
    e = t.examples[0]

    def messages(*techniques):
        return prompts.build(evaluate.task_spec(t, e, techniques)).messages

    assert messages("role")[0] == {
        "role": "system",
        "content": "Act as a customer-support triage assistant. "
        "Answer the way a customer-support triage assistant would.",
    }
    shots = messages("few-shot")
    assert len(shots) == 9 and [m["role"] for m in shots[:2]] == ["user", "assistant"]
    assert sorted(m["content"] for m in shots[1:8:2]) == sorted(LABELS)  # one shot per label
    assert messages("cot")[-1]["content"].endswith(prompts.COT_INSTRUCTION)
    assert messages("context")[-1]["content"] == (
        e.prompt + "\n\nFormat the answer as a single word: one of billing, shipping, technical or account."
    )


def test_brand_and_facts_context():
    brand = evaluate.load_task("brand_voice")
    text = prompts.build(evaluate.task_spec(brand, brand.examples[0], ["context", "role"])).messages
    assert "the copywriter of Pinecone Outfitters" in text[0]["content"]
    assert 'end every answer with "Happy trails from the Pinecone crew!"' in text[-1]["content"]
    assert (
        "use at most 60 words" in text[-1]["content"] and "never use these words: unfortunately" in text[-1]["content"]
    )
    facts = evaluate.load_task("domain_knowledge")
    cleaning = next(e for e in facts.examples if "hose down" in e.prompt)
    spec = evaluate.task_spec(facts, cleaning, ["context"])
    assert "dry cloth" in spec.facts  # a related training answer, pasted in as background


def test_few_shot_and_context_never_show_the_example_itself(tmp_path):
    rows = [
        {"prompt": f"q{i} about topic {i % 3}", "response": f"r{i} on topic {i % 3}", "facts": [f"r{i}"]}
        for i in range(10)
    ]
    t = evaluate.load_task(write_jsonl(tmp_path / "facts.jsonl", rows))
    assert t.shots == t.examples  # a file's pool is its own examples
    for e in t.examples:
        spec = evaluate.task_spec(t, e, ["few-shot", "context"], k=4)
        assert len(spec.examples) == 4
        assert e.prompt not in [i for i, _ in spec.examples]
        assert e.response not in spec.facts


def test_task_spec_refuses_an_unknown_technique():
    t = evaluate.load_task("support_triage")
    with pytest.raises(FtvpeError, match="Unknown technique 'emoji'"):
        evaluate.task_spec(t, t.examples[0], ["emoji"])


def test_max_new_tokens_by_task_kind():
    assert evaluate.max_new_tokens(label_task(), []) == 12
    assert evaluate.max_new_tokens(label_task(), ["cot"]) == 96
    assert evaluate.max_new_tokens(task("constraints", rules=BRAND_RULES), []) == 100
    assert evaluate.max_new_tokens(task("fact_recall"), []) == 120
    assert evaluate.max_new_tokens(task("token_f1"), []) == 120


# Batched generation (tiny random model)


def tiny_chats(with_system: bool = True) -> list[list[dict]]:
    return [([SYSTEM] if with_system else []) + [{"role": "user", "content": p}] for p in TINY_PROMPTS]


@pytest.mark.parametrize("settings", [NO_PENALTY, GenerationSettings(max_new_tokens=10)], ids=["plain", "penalty"])
@pytest.mark.parametrize("with_system", [True, False], ids=["shared-prefix", "no-prefix"])
def test_batched_answers_match_one_at_a_time_generation_in_input_order(lively, settings, with_system):
    chats = tiny_chats(with_system)
    one_by_one = [generation.generate(lively, c, settings) for c in chats]
    assert len({r.text for r in one_by_one}) == len(chats)  # different answers, so order is checked
    for batch_size in (1, 4, 8):
        answers = evaluate.generate_batch(lively, chats, settings, batch_size=batch_size)
        assert [a.text for a in answers] == [r.text for r in one_by_one]
        assert [a.prompt_tokens for a in answers] == [r.prompt_tokens for r in one_by_one]
        assert [a.new_tokens for a in answers] == [r.new_tokens for r in one_by_one]
        assert all(a.latency_s > 0 for a in answers)


@pytest.mark.parametrize("with_system", [True, False], ids=["shared-prefix", "no-prefix"])
def test_rows_that_end_early_leave_the_batch_without_changing_the_others(lively, monkeypatch, with_system):
    # The random model rarely picks its end token: make a common word end answers too, at different steps.
    stop = {lively.tokenizer.eos_token_id, lively.tokenizer.convert_tokens_to_ids("list")}
    monkeypatch.setattr(engine, "stop_ids", lambda loaded: stop)
    chats = tiny_chats(with_system)
    one_by_one = [generation.generate(lively, c, NO_PENALTY) for c in chats]
    assert len({r.new_tokens for r in one_by_one}) > 2
    answers = evaluate.generate_batch(lively, chats, NO_PENALTY, batch_size=4)
    assert [a.text for a in answers] == [r.text for r in one_by_one]
    assert [a.new_tokens for a in answers] == [r.new_tokens for r in one_by_one]


def test_the_shared_prefix_is_computed_once(lively):
    import torch

    def prompt_tokens_computed(chats) -> int:
        engine.configure(lively, engine.EngineSettings())  # no prompts remembered from earlier tests
        counted = []
        hook = lively.model.model.embed_tokens.register_forward_hook(
            lambda module, args, out: counted.append(args[0].shape[-1]) if args[0].shape[0] == 1 else None
        )
        try:
            with torch.no_grad():
                evaluate.generate_batch(lively, chats, NO_PENALTY, batch_size=2)
        finally:
            hook.remove()
        # Batch-1 passes of several tokens are prefills; decoding steps pass one token a row.
        return sum(n for n in counted if n > 1)

    shared = tiny_chats(with_system=True)
    lengths = [len(generation.encode_chat(lively, c)) for c in shared]
    common = len(os.path.commonprefix([generation.encode_chat(lively, c) for c in shared]))
    assert common >= engine.MIN_SHARED_PREFIX
    # Each prompt after the first computes only what it does not share with one before it.
    assert prompt_tokens_computed(shared) <= sum(lengths) - (len(shared) - 1) * common
    alone = tiny_chats(with_system=False)  # '<|im_start|> user' alone is too short to share
    assert prompt_tokens_computed(alone) == sum(len(generation.encode_chat(lively, c)) for c in alone)


def test_the_transformers_forward_path_gives_the_same_answers(lively, monkeypatch):
    lean = [a.text for a in evaluate.generate_batch(lively, tiny_chats(), NO_PENALTY, batch_size=4)]
    monkeypatch.setattr(fastpath, "supports", lambda model: False)
    plain = [a.text for a in evaluate.generate_batch(lively, tiny_chats(), NO_PENALTY, batch_size=4)]
    assert plain == lean


def test_progress_is_reported_after_each_answer(tiny_loaded):
    seen = []
    evaluate.generate_batch(tiny_loaded, tiny_chats(), NO_PENALTY, 4, lambda done, total: seen.append((done, total)))
    assert seen == [(n, 6) for n in range(1, 7)]


def test_an_over_long_prompt_is_refused_before_generating(tiny_loaded, monkeypatch):
    calls = []
    monkeypatch.setattr(engine.Engine, "submit", lambda *a, **k: calls.append(a))
    long_chat = [{"role": "user", "content": "hello " * CONTEXT_LENGTH}]
    with pytest.raises(FtvpeError, match="Prompt 2 of 2: The prompt is .* more than the model's context"):
        evaluate.generate_batch(tiny_loaded, [tiny_chats()[0], long_chat], NO_PENALTY)
    assert calls == []
    with pytest.raises(FtvpeError, match="batch size"):
        evaluate.generate_batch(tiny_loaded, tiny_chats(), NO_PENALTY, batch_size=0)


# Arms and the ablation


def tiny_task() -> Task:
    examples = [Example(p, r) for p, r in [("hello world", "good"), ("good day", "night"), ("the night train", "good")]]
    shots = [Example("when does the train arrive", "night"), Example("a good trip", "good")]
    return Task("tiny", "Tiny", "accuracy", examples, ["good", "night"], {}, shots)


def test_run_arm_scores_every_example(tiny_loaded):
    t = tiny_task()
    arm = evaluate.run_arm(tiny_loaded, t, "prompt", "Engineered prompt", ["context", "role"], 12.5, batch_size=2)
    assert (arm.name, arm.label, arm.n, arm.train_seconds) == ("prompt", "Engineered prompt", 3, 12.5)
    assert arm.techniques == ["role", "context"]
    assert [r.index for r in arm.examples] == [0, 1, 2]
    assert [r.prompt for r in arm.examples] == [e.prompt for e in t.examples]
    assert [r.reference for r in arm.examples] == ["good", "night", "good"]
    for r in arm.examples:
        assert (r.score, r.detail) == evaluate.score(t, t.examples[r.index], r.answer)
        assert r.passed == (r.score >= 0.999)
    assert arm.score == pytest.approx(sum(r.score for r in arm.examples) / 3)
    plain = evaluate.run_arm(tiny_loaded, t, "base", "Base", ())
    assert arm.mean_prompt_tokens > plain.mean_prompt_tokens > 0
    d = json.loads(json.dumps(arm.to_dict()))
    assert d["examples"][0]["reference"] == "good" and d["techniques"] == ["role", "context"]


def test_ablate_scores_all_sixteen_combinations(tiny_loaded):
    progress = []
    combos = evaluate.ablate(tiny_loaded, tiny_task(), limit=2, on_progress=lambda d, t: progress.append((d, t)))
    assert len(combos) == 16
    assert combos[0]["techniques"] == [] and combos[-1]["techniques"] == list(prompts.TECHNIQUES)
    assert len({tuple(c["techniques"]) for c in combos}) == 16
    assert all(c["n"] == 2 and 0.0 <= c["score"] <= 1.0 for c in combos)
    assert combos[-1]["mean_prompt_tokens"] > combos[0]["mean_prompt_tokens"]
    assert progress[-1] == (32, 32)


def test_technique_gains_compare_combinations_with_and_without_each_technique():
    combos = [{"techniques": c, "score": 0.5 * ("context" in c) + 0.1 * ("role" in c)} for c in evaluate.combinations()]
    gains = evaluate.technique_gains(combos)
    assert gains == pytest.approx({"role": 0.1, "few-shot": 0.0, "cot": 0.0, "context": 0.5})
    partial = [{"techniques": ["cot"], "score": 0.2}, {"techniques": [], "score": 0.6}]
    assert evaluate.technique_gains(partial) == pytest.approx({"cot": -0.4})
