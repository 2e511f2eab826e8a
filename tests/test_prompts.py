"""Prompt building: exact messages and segments per technique, validation, and the presets."""

from __future__ import annotations

import itertools
import json

import pytest

from ftvpe_core import FtvpeError
from ftvpe_core.tasks import presets, prompts
from ftvpe_core.tasks.prompts import COT_INSTRUCTION, TECHNIQUES, PromptSpec

TASK = "Write a short post about Lisbon."
ROLE_TEXT = "Act as a travel blogger. Answer the way a travel blogger would."
COT_TEXT = '\n\nThink it through step by step, then write the final answer on the last line, starting with "Answer:".'
EXAMPLES = [("Describe Paris.", "Paris is the city of light."), ("Describe Rome.", "Rome is the eternal city.")]


def full_spec(enabled=()) -> PromptSpec:
    """A spec with every technique's fields filled in; only ``enabled`` are used."""
    return PromptSpec(
        task=TASK,
        enabled=tuple(enabled),
        role="a travel blogger",
        examples=EXAMPLES,
        facts="Lisbon has seven hills",
        tone="friendly",
        audience="families in the USA",
        words=100,
        output_format="a bulleted list",
    )


def triples(built) -> list[tuple[str, str, int]]:
    return [(s.technique, s.text, s.message) for s in built.segments]


def test_cot_instruction_wording_is_fixed():
    assert COT_TEXT == "\n\n" + COT_INSTRUCTION


def test_no_technique_gives_the_task_alone():
    built = prompts.build(full_spec())
    assert built.messages == [{"role": "user", "content": TASK}]
    assert triples(built) == [("task", TASK, 0)]


def test_role_becomes_the_system_message():
    built = prompts.build(full_spec(["role"]))
    assert built.messages == [
        {"role": "system", "content": ROLE_TEXT},
        {"role": "user", "content": TASK},
    ]
    assert triples(built) == [("role", ROLE_TEXT, 0), ("task", TASK, 1)]


def test_few_shot_examples_become_earlier_turns():
    built = prompts.build(full_spec(["few-shot"]))
    assert built.messages == [
        {"role": "user", "content": "Describe Paris."},
        {"role": "assistant", "content": "Paris is the city of light."},
        {"role": "user", "content": "Describe Rome."},
        {"role": "assistant", "content": "Rome is the eternal city."},
        {"role": "user", "content": TASK},
    ]
    assert triples(built) == [
        ("few-shot", "Describe Paris.", 0),
        ("few-shot", "Paris is the city of light.", 1),
        ("few-shot", "Describe Rome.", 2),
        ("few-shot", "Rome is the eternal city.", 3),
        ("task", TASK, 4),
    ]
    assert [s.detail for s in built.segments[:4]] == [
        "example 1 input",
        "example 1 output",
        "example 2 input",
        "example 2 output",
    ]


def test_chain_of_thought_appends_the_instruction_to_the_task():
    built = prompts.build(full_spec(["cot"]))
    assert built.messages == [{"role": "user", "content": TASK + COT_TEXT}]
    assert triples(built) == [("task", TASK, 0), ("cot", COT_TEXT, 0)]


def test_context_appends_every_filled_field_in_order():
    built = prompts.build(full_spec(["context"]))
    content = (
        TASK + "\n\nBackground facts: Lisbon has seven hills. Use a friendly tone. Write for families in the USA."
        " Use about 100 words. Format the answer as a bulleted list."
    )
    assert built.messages == [{"role": "user", "content": content}]
    assert triples(built) == [
        ("task", TASK, 0),
        ("context", "\n\nBackground facts: Lisbon has seven hills.", 0),
        ("context", " Use a friendly tone.", 0),
        ("context", " Write for families in the USA.", 0),
        ("context", " Use about 100 words.", 0),
        ("context", " Format the answer as a bulleted list.", 0),
    ]
    assert [s.detail for s in built.segments[1:]] == ["facts", "tone", "audience", "words", "format"]


def test_context_with_one_field_starts_with_a_blank_line_and_drops_a_trailing_full_stop():
    spec = PromptSpec(task=TASK, enabled=("context",), tone="friendly.")
    built = prompts.build(spec)
    assert built.messages == [{"role": "user", "content": TASK + "\n\nUse a friendly tone."}]


def test_background_facts_keep_their_own_end_punctuation():
    spec = PromptSpec(task=TASK, enabled=("context",), facts="Is it hilly?")
    assert prompts.build(spec).messages[0]["content"] == TASK + "\n\nBackground facts: Is it hilly?"


def test_role_and_chain_of_thought():
    built = prompts.build(full_spec(["role", "cot"]))
    assert built.messages == [
        {"role": "system", "content": ROLE_TEXT},
        {"role": "user", "content": TASK + COT_TEXT},
    ]
    assert triples(built) == [("role", ROLE_TEXT, 0), ("task", TASK, 1), ("cot", COT_TEXT, 1)]


def test_few_shot_and_context_put_context_only_in_the_final_message():
    spec = PromptSpec(
        task="I was charged twice.",
        enabled=("few-shot", "context"),
        examples=[("My parcel is late.", "shipping")],
        output_format="one word",
    )
    built = prompts.build(spec)
    assert built.messages == [
        {"role": "user", "content": "My parcel is late."},
        {"role": "assistant", "content": "shipping"},
        {"role": "user", "content": "I was charged twice.\n\nFormat the answer as one word."},
    ]
    assert triples(built) == [
        ("few-shot", "My parcel is late.", 0),
        ("few-shot", "shipping", 1),
        ("task", "I was charged twice.", 2),
        ("context", "\n\nFormat the answer as one word.", 2),
    ]


def test_context_comes_before_chain_of_thought():
    spec = PromptSpec(task=TASK, enabled=("cot", "context"), words=50)
    built = prompts.build(spec)
    assert built.messages == [{"role": "user", "content": TASK + "\n\nUse about 50 words." + COT_TEXT}]
    assert [s.technique for s in built.segments] == ["task", "context", "cot"]


def test_all_four_techniques_together():
    built = prompts.build(full_spec(TECHNIQUES))
    final = (
        TASK + "\n\nBackground facts: Lisbon has seven hills. Use a friendly tone. Write for families in the USA."
        " Use about 100 words. Format the answer as a bulleted list." + COT_TEXT
    )
    assert built.messages == [
        {"role": "system", "content": ROLE_TEXT},
        {"role": "user", "content": "Describe Paris."},
        {"role": "assistant", "content": "Paris is the city of light."},
        {"role": "user", "content": "Describe Rome."},
        {"role": "assistant", "content": "Rome is the eternal city."},
        {"role": "user", "content": final},
    ]
    assert triples(built) == [
        ("role", ROLE_TEXT, 0),
        ("few-shot", "Describe Paris.", 1),
        ("few-shot", "Paris is the city of light.", 2),
        ("few-shot", "Describe Rome.", 3),
        ("few-shot", "Rome is the eternal city.", 4),
        ("task", TASK, 5),
        ("context", "\n\nBackground facts: Lisbon has seven hills.", 5),
        ("context", " Use a friendly tone.", 5),
        ("context", " Write for families in the USA.", 5),
        ("context", " Use about 100 words.", 5),
        ("context", " Format the answer as a bulleted list.", 5),
        ("cot", COT_TEXT, 5),
    ]


def test_enabled_techniques_are_put_in_canonical_order():
    assert full_spec(["context", "cot", "role"]).enabled == ("role", "cot", "context")


def test_task_and_role_are_stripped():
    spec = PromptSpec(task="  Say hi.  ", enabled=("role",), role="  a pirate ")
    assert prompts.build(spec).messages == [
        {"role": "system", "content": "Act as a pirate. Answer the way a pirate would."},
        {"role": "user", "content": "Say hi."},
    ]


ALL_COMBINATIONS = [c for n in range(len(TECHNIQUES) + 1) for c in itertools.combinations(TECHNIQUES, n)]


@pytest.mark.parametrize("enabled", ALL_COMBINATIONS, ids=lambda c: "+".join(c) or "none")
def test_each_message_is_its_segments_joined(enabled):
    built = prompts.build(full_spec(enabled))
    assert len(ALL_COMBINATIONS) == 16
    for index, message in enumerate(built.messages):
        texts = [s.text for s in built.segments if s.message == index]
        assert texts, f"message {index} has no segments"
        assert message["content"] == "".join(texts)
    assert [s.message for s in built.segments] == sorted(s.message for s in built.segments)
    assert {s.technique for s in built.segments} == {"task", *enabled}
    assert built.messages[-1]["role"] == "user"


def test_plain_switches_every_technique_off_but_keeps_the_fields():
    spec = full_spec(TECHNIQUES)
    plain = spec.plain()
    assert plain.enabled == ()
    assert plain.role == "a travel blogger" and plain.examples == EXAMPLES
    assert prompts.build(plain).messages == [{"role": "user", "content": TASK}]
    assert spec.enabled == TECHNIQUES  # the original is untouched


def test_fields_of_switched_off_techniques_are_not_used():
    built = prompts.build(full_spec(["cot"]))
    text = "".join(m["content"] for m in built.messages)
    assert "travel blogger" not in text and "Paris" not in text and "friendly" not in text


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(task=""), "task is empty"),
        (dict(task="   \n"), "task is empty"),
        (dict(task="x" * (prompts.MAX_TASK_CHARS + 1)), "limit is 50,000"),
        (dict(task="Hi", enabled=("role",)), "role is empty"),
        (dict(task="Hi", enabled=("role",), role="   "), "role is empty"),
        (dict(task="Hi", enabled=("few-shot",)), "no examples"),
        (dict(task="Hi", enabled=("few-shot",), examples=[("in", " ")]), "example 1 needs both an input and an output"),
        (
            dict(task="Hi", enabled=("few-shot",), examples=[("a", "b"), ("", "d")]),
            "example 2 needs both an input and an output",
        ),
        (dict(task="Hi", words=0), "between 1 and 2000, got 0"),
        (dict(task="Hi", words=2001), "between 1 and 2000, got 2001"),
        (dict(task="Hi", enabled=("context",)), "Context addition is on but empty"),
        (dict(task="Hi", enabled=("context",), tone="  ", facts=" "), "Context addition is on but empty"),
    ],
    ids=[
        "empty-task",
        "blank-task",
        "too-long-task",
        "role-missing",
        "role-blank",
        "no-examples",
        "half-example",
        "second-half-example",
        "zero-words",
        "too-many-words",
        "context-empty",
        "context-blank",
    ],
)
def test_invalid_specs_are_refused_with_a_clear_message(kwargs, words):
    with pytest.raises(FtvpeError, match=words):
        PromptSpec(**kwargs)


def test_limits_themselves_are_accepted():
    PromptSpec(task="x" * prompts.MAX_TASK_CHARS)
    PromptSpec(task="Hi", enabled=("context",), words=1)
    PromptSpec(task="Hi", enabled=("context",), words=prompts.MAX_WORDS)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Great food => positive", ("Great food", "positive")),
        ("a=>b=>c", ("a", "b=>c")),
        ("  in  =>  out ", ("in", "out")),
    ],
)
def test_parse_example_splits_on_the_first_arrow_and_strips(text, expected):
    assert prompts.parse_example(text) == expected


@pytest.mark.parametrize(
    "text, words",
    [("no arrow here", 'must look like "INPUT=>OUTPUT"'), ("=>out", "both sides"), ("in=>  ", "both sides")],
)
def test_parse_example_refuses_malformed_examples(text, words):
    with pytest.raises(FtvpeError, match=words):
        prompts.parse_example(text)


def test_token_counts_come_from_the_counter_passed_in():
    calls = []

    def count(text: str) -> int:
        calls.append(text)
        return len(text.split()) * 10

    built = prompts.build(full_spec(["role", "cot"]), count)
    assert built.exact_tokens is True
    assert [s.tokens for s in built.segments] == [len(s.text.split()) * 10 for s in built.segments]
    assert calls == [s.text for s in built.segments]
    assert built.tokens_by_technique() == {
        "role": len(ROLE_TEXT.split()) * 10,
        "task": len(TASK.split()) * 10,
        "cot": len(COT_TEXT.split()) * 10,
    }


def test_without_a_counter_token_counts_are_estimates():
    built = prompts.build(full_spec(["role"]))
    assert built.exact_tokens is False
    assert [s.tokens for s in built.segments] == [round(len(ROLE_TEXT) / 4), round(len(TASK) / 4)]


def test_dict_round_trip_gives_an_equal_spec():
    spec = full_spec(["few-shot", "context"])
    d = spec.to_dict()
    assert json.loads(json.dumps(d)) == d  # plain JSON types only
    assert d["enabled"] == ["few-shot", "context"]
    assert d["examples"] == [list(e) for e in EXAMPLES]
    again = PromptSpec.from_dict(json.loads(json.dumps(d)))
    assert again == spec
    assert prompts.build(again) == prompts.build(spec)


@pytest.mark.parametrize("preset", presets.PRESETS, ids=lambda p: p.key)
def test_every_preset_builds_engineered_and_plain(preset):
    engineered = prompts.build(preset.spec)
    plain = prompts.build(preset.spec.plain())
    assert preset.spec.enabled, "a preset switches at least one technique on"
    assert plain.messages == [{"role": "user", "content": preset.spec.task}]
    assert engineered.messages != plain.messages
    assert presets.get(preset.key) is preset


def test_preset_keys_are_unique():
    keys = [p.key for p in presets.PRESETS]
    assert len(keys) == len(set(keys))


def test_unknown_preset_is_refused_with_the_choices():
    with pytest.raises(FtvpeError, match="Unknown preset 'nope': choose one of travel, skincare"):
        presets.get("nope")


def test_travel_preset_plain_is_vague_and_engineered_is_specific():
    spec = presets.get("travel").spec
    assert prompts.build(spec.plain()).messages == [{"role": "user", "content": "Write something about travel."}]
    engineered = prompts.build(spec).messages
    assert engineered[0] == {
        "role": "system",
        "content": "Act as a travel blogger. Answer the way a travel blogger would.",
    }
    user = engineered[-1]["content"]
    assert user.startswith("Write something about travel.\n\n")
    for phrase in ("Use a friendly tone.", "Write for families in the USA.", "Use about 100 words."):
        assert phrase in user
