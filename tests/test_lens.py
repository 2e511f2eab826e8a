"""The token lens on the tiny random model: teacher forcing matches plain forward passes, ranks agree with the top
lists, an adapter moves the distributions, and the two lens figures draw one panel or line per condition."""

from __future__ import annotations

import json

import pytest

from ftvpe_core import FtvpeError, figures
from ftvpe_core.model import adapters, generation, models
from ftvpe_core.studies import lens
from ftvpe_core.tasks import evaluate, prompts

MESSAGES = [{"role": "user", "content": "write something about travel for families"}]
ENGINEERED = [
    {"role": "system", "content": "act as a travel blogger"},
    {"role": "user", "content": "write something about travel for families in the USA , use a friendly tone"},
]
ANSWER = "the train does arrive at night , good trip"


@pytest.fixture(scope="module")
def tuned_loaded(tiny_model_dir, tmp_path_factory):
    """The tiny model with a LoRA adapter whose B matrices are random (not zero), merged in float32."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    folder = adapters.save(get_peft_model(model, config), tmp_path_factory.mktemp("lens-adapter"))
    return models.load(str(tiny_model_dir), device="cpu", weight_format="float32", adapter=folder)


def _probs_after(loaded, messages, answer_ids):
    """The next-token distribution after the prompt and ``answer_ids``, from its own forward pass."""
    import torch

    ids = generation.encode_chat(loaded, messages) + list(answer_ids)
    with torch.inference_mode():
        return torch.softmax(loaded.model(input_ids=torch.tensor([ids])).logits[0, -1].float(), dim=-1)


def test_position_zero_matches_next_token_top(tiny_loaded):
    found = lens.build({lens.PLAIN: (tiny_loaded, MESSAGES)}, lens.PLAIN, max_new_tokens=3, k=8)
    expected = generation.next_token_top(tiny_loaded, MESSAGES, k=8)
    got = found.tops[lens.PLAIN][0]
    assert [t["id"] for t in got] == [t.token_id for t in expected]
    assert [t["prob"] for t in got] == pytest.approx([t.prob for t in expected], abs=1e-5)


def test_every_position_matches_a_forward_pass_on_the_answer_prefix(tiny_loaded):
    found = lens.build({lens.ENGINEERED: (tiny_loaded, ENGINEERED)}, "Typed", k=5, answer_text=ANSWER)
    assert found.answer_ids == tiny_loaded.tokenizer.encode(ANSWER, add_special_tokens=False)
    assert "".join(found.answer_tokens) == ANSWER.replace(" ", "")  # the word-level tokenizer drops spaces
    for i, token in enumerate(found.answer_ids):
        probs = _probs_after(tiny_loaded, ENGINEERED, found.answer_ids[:i])
        top = probs.topk(5)
        assert [t["id"] for t in found.tops[lens.ENGINEERED][i]] == top.indices.tolist()
        assert [t["prob"] for t in found.tops[lens.ENGINEERED][i]] == pytest.approx(top.values.tolist(), abs=1e-5)
        assert found.followed_prob[lens.ENGINEERED][i] == pytest.approx(float(probs[token]), abs=1e-5)
        assert found.followed_rank[lens.ENGINEERED][i] == int((probs > probs[token]).sum()) + 1


def test_followed_probs_and_ranks_agree_with_the_top_lists(tiny_loaded, tuned_loaded):
    conditions = {lens.PLAIN: (tiny_loaded, MESSAGES), lens.TUNED: (tuned_loaded, MESSAGES)}
    found = lens.build(conditions, "Typed", k=3, answer_text=ANSWER)
    checked_outside = 0
    for label in found.labels:
        for i, token in enumerate(found.answer_ids):
            rank, prob, top = found.followed_rank[label][i], found.followed_prob[label][i], found.tops[label][i]
            assert [t["prob"] for t in top] == sorted((t["prob"] for t in top), reverse=True)
            if rank <= found.k:
                assert top[rank - 1]["id"] == token and top[rank - 1]["prob"] == pytest.approx(prob)
            else:
                assert all(t["id"] != token for t in top) and prob <= top[-1]["prob"]
                checked_outside += 1
    assert checked_outside  # a random model puts many of these words outside its top 3


def test_the_greedy_answer_is_the_top_token_of_its_own_condition_at_every_position(tiny_loaded, tuned_loaded):
    conditions = {lens.PLAIN: (tiny_loaded, MESSAGES), lens.TUNED: (tuned_loaded, MESSAGES)}
    found = lens.build(conditions, lens.TUNED, max_new_tokens=6)
    assert found.follow == lens.TUNED and 1 <= found.n_positions <= 6
    assert found.followed_rank[lens.TUNED] == [1] * found.n_positions
    assert all(found.tops[lens.TUNED][i][0]["id"] == t for i, t in enumerate(found.answer_ids))


def test_an_adapter_moves_the_distributions_and_identical_conditions_do_not(tiny_loaded, tuned_loaded):
    same = lens.build({"A": (tiny_loaded, MESSAGES), "B": (tiny_loaded, MESSAGES)}, "Typed", answer_text=ANSWER)
    assert same.distances == pytest.approx([0.0] * same.n_positions, abs=1e-6)
    assert not any(same.disagree(i) for i in range(same.n_positions))
    moved = lens.build(
        {lens.PLAIN: (tiny_loaded, MESSAGES), lens.TUNED: (tuned_loaded, MESSAGES)}, "Typed", answer_text=ANSWER
    )
    assert min(moved.distances) > 0.01
    assert moved.followed_prob[lens.PLAIN] != pytest.approx(moved.followed_prob[lens.TUNED], abs=1e-3)
    far = moved.most_divergent()
    assert moved.divergence(far) == max(moved.distances)
    assert moved.leader(far) in moved.labels


def test_a_prompt_changes_the_distributions_on_the_same_weights(tiny_loaded):
    found = lens.build(
        {lens.PLAIN: (tiny_loaded, MESSAGES), lens.ENGINEERED: (tiny_loaded, ENGINEERED)}, lens.PLAIN, max_new_tokens=4
    )
    assert found.prompt_tokens[lens.ENGINEERED] > found.prompt_tokens[lens.PLAIN]
    assert min(found.distances) > 0.0
    assert found.messages[lens.ENGINEERED] == ENGINEERED


def test_the_lens_survives_a_json_round_trip(tiny_loaded):
    found = lens.build(
        {lens.PLAIN: (tiny_loaded, MESSAGES), lens.ENGINEERED: (tiny_loaded, ENGINEERED)},
        lens.ENGINEERED,
        max_new_tokens=4,
    )
    again = lens.Lens.from_dict(json.loads(json.dumps(found.to_dict())))
    assert again == found
    with pytest.raises(FtvpeError, match="not a saved token lens"):
        lens.Lens.from_dict({"labels": []})


def test_the_reading_names_the_token_and_every_condition_most_sure_first(tiny_loaded, tuned_loaded):
    conditions = {lens.PLAIN: (tiny_loaded, MESSAGES), lens.TUNED: (tuned_loaded, MESSAGES)}
    found = lens.build(conditions, "Typed", k=2, answer_text=ANSWER)
    for i in range(found.n_positions):
        text = found.reading(i)
        first = found.leader(i)
        assert text.startswith(f"At this token the {'fine-tuned model' if first == lens.TUNED else 'plain prompt'}")
        assert f"“{found.answer_tokens[i]}”" in text and text.count("%") >= 2
        if any(found.followed_rank[label][i] > 2 for label in found.labels):
            assert "not in the top 2" in text
    with pytest.raises(FtvpeError, match="outside the answer"):
        found.reading(found.n_positions)


def test_example_messages_are_the_compare_arms_prompts():
    task = evaluate.load_task("support_triage")
    example = task.examples[3]
    plain, engineered = lens.example_messages(task, example, ["role", "few-shot", "context"])
    assert plain == prompts.build(evaluate.task_spec(task, example, ())).messages
    assert engineered == prompts.build(evaluate.task_spec(task, example, ["role", "few-shot", "context"])).messages
    assert plain == [{"role": "user", "content": example.prompt}]
    assert engineered[0]["role"] == "system" and len(engineered) > 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"follow": "Nobody"}, "Unknown condition 'Nobody'"),
        ({"follow": "Typed", "answer_text": "   "}, "empty"),
        ({"follow": "Typed", "answer_text": " ".join(["the"] * 250)}, "context"),
        ({"follow": lens.PLAIN, "max_new_tokens": 250}, "context"),
        ({"follow": lens.PLAIN, "max_new_tokens": 0}, "Max new tokens"),
        ({"follow": lens.PLAIN, "k": 0}, "Top-k"),
        ({"follow": lens.PLAIN, "k": 51}, "Top-k"),
        ({"follow": lens.PLAIN, "k": 2.5}, "Top-k"),
    ],
)
def test_bad_requests_raise_a_readable_error(tiny_loaded, kwargs, message):
    with pytest.raises(FtvpeError, match=message):
        lens.build({lens.PLAIN: (tiny_loaded, MESSAGES)}, **kwargs)


def test_no_conditions_is_an_error():
    with pytest.raises(FtvpeError, match="at least one condition"):
        lens.build({}, lens.PLAIN)


# Figures


@pytest.fixture(scope="module")
def three(tiny_loaded, tuned_loaded):
    conditions = {
        lens.PLAIN: (tiny_loaded, MESSAGES),
        lens.ENGINEERED: (tiny_loaded, ENGINEERED),
        lens.TUNED: (tuned_loaded, MESSAGES),
    }
    return lens.build(conditions, "Typed", k=3, answer_text=ANSWER)


def test_lens_position_draws_one_panel_per_condition_with_the_answer_token_highlighted(three):
    fig = figures.lens_position(three, 2)
    assert len(fig.data) == 3 and [t.name for t in fig.data] == three.labels
    assert len(fig.layout.annotations) == 3  # the subplot titles
    token = figures._token_label(three.answer_tokens[2])
    for trace, label, note in zip(fig.data, three.labels, fig.layout.annotations):
        assert list(trace.marker.color).count(figures.LENS_HIGHLIGHT) == 1
        highlighted = trace.y[list(trace.marker.color).index(figures.LENS_HIGHLIGHT)]
        assert highlighted.startswith(token)
        assert note.text.startswith(label) and token in note.text
        rank = three.followed_rank[label][2]
        assert len(trace.y) == (3 if rank <= 3 else 4)  # the answer's token is added under the top 3, with its rank
        if rank > 3:
            assert highlighted.endswith(f"(#{rank})")
    before = "".join(three.answer_tokens[:2])
    assert fig.layout.title.text == f"Token 3 of {three.n_positions}: the next token after “{before}”"


def test_lens_position_accepts_the_dict_and_clamps_the_position(three):
    fig = figures.lens_position(three.to_dict(), 99)
    assert fig.layout.title.text.startswith(f"Token {three.n_positions} of {three.n_positions}")
    assert "start of the answer" in figures.lens_position(three.to_dict(), 0).layout.title.text


def test_lens_track_draws_a_line_per_condition_and_marks_the_position(three):
    fig = figures.lens_track(three, 4)
    assert [t.name for t in fig.data] == three.labels
    assert list(fig.data[1].y) == pytest.approx(three.followed_prob[lens.ENGINEERED])
    assert list(fig.layout.xaxis.ticktext) == [figures._token_label(t) for t in three.answer_tokens]
    assert [s.x0 for s in fig.layout.shapes] == [4]
    assert not figures.lens_track(three, None).layout.shapes


@pytest.mark.parametrize("empty", [None, {}, {"labels": ["A"], "answer_tokens": []}])
def test_the_lens_figures_without_data_are_empty_and_titled(empty):
    for fig in (figures.lens_position(empty, 0), figures.lens_track(empty, 0)):
        assert not fig.data and fig.layout.title.text and fig.layout.annotations
