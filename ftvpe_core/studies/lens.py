"""The differential next-token lens: one answer, read token by token under several conditions.

A condition is a loaded model and the chat messages it is given (the plain prompt on the base model, an
engineered prompt on the base model, the plain prompt on a fine-tuned model). ``build`` picks the answer to
step through (one condition's greedy answer, or a text the caller gives), then teacher-forces every condition
on those same tokens: one forward pass over prompt + answer gives the next-token distribution at every answer
position. Position i is the distribution of answer token i given the prompt and answer[:i]. It keeps the k most
likely tokens there and the probability and rank of the token the answer actually continues with.

This module only reads distributions: it samples nothing beyond the followed condition's greedy answer, scores
no task and draws nothing (``figures.lens_position`` and ``figures.lens_track`` do). Comparing conditions is
fair only when their models share a tokenizer and a weight format; the caller loads them (the Token Lens page
uses float32 for all three).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from ftvpe_core import FtvpeError
from ftvpe_core.model import engine, generation, models
from ftvpe_core.model.models import LoadedModel
from ftvpe_core.settings import GenerationSettings
from ftvpe_core.tasks import evaluate, prompts
from ftvpe_core.tasks.datasets import Example

PLAIN = "Plain prompt"
ENGINEERED = "Engineered prompt"
TUNED = "Fine-tuned"
MAX_K = 50
MAX_NEW_TOKENS = 256

Condition = tuple[LoadedModel, list[dict]]


@dataclass
class Lens:
    """What every condition predicted at every position of one answer. Plain data: ``to_dict`` is JSON-safe."""

    labels: list[str]
    """The conditions, in the order given."""
    follow: str
    """Where the answer came from: a condition's label (its greedy answer) or a name for a given text."""
    answer_ids: list[int]
    """The answer's token ids (a greedy answer keeps its end-of-turn token when it stopped on one)."""
    answer_tokens: list[str]
    """Each answer token decoded on its own."""
    tops: dict[str, list[list[dict]]]
    """label -> position -> the k most likely next tokens, most likely first: {"id", "token", "prob"}."""
    followed_prob: dict[str, list[float]]
    """label -> position -> probability of the answer's own token there."""
    followed_rank: dict[str, list[int]]
    """label -> position -> rank of the answer's own token there (1 = the most likely)."""
    distances: list[float]
    """position -> largest total variation distance between two conditions' full distributions (0: the same,
    1: no token in common)."""
    messages: dict[str, list[dict]] = field(default_factory=dict)
    """label -> the chat messages that condition was given."""
    prompt_tokens: dict[str, int] = field(default_factory=dict)
    """label -> prompt length in tokens (chat template included)."""
    k: int = 8
    model: str = ""
    """The base model's name, for captions."""

    @property
    def n_positions(self) -> int:
        return len(self.answer_ids)

    def _check(self, position: int) -> None:
        if not 0 <= position < self.n_positions:
            raise FtvpeError(f"Position {position} is outside the answer (0 to {self.n_positions - 1}).")

    def text_before(self, position: int) -> str:
        """The answer's text before ``position``."""
        self._check(position)
        return "".join(self.answer_tokens[:position])

    def divergence(self, position: int) -> float:
        """How far apart the conditions are at ``position``: the largest total variation distance of two."""
        self._check(position)
        return self.distances[position]

    def disagree(self, position: int) -> bool:
        """True when the conditions' most likely next tokens are not all the same."""
        self._check(position)
        return len({self.tops[label][position][0]["id"] for label in self.labels}) > 1

    def most_divergent(self) -> int | None:
        """The position where the conditions differ most (None for a single condition or no answer)."""
        if len(self.labels) < 2 or not self.distances:
            return None
        return max(range(self.n_positions), key=lambda i: self.distances[i])

    def leader(self, position: int) -> str:
        """The condition that gives the answer's token the most probability at ``position``."""
        self._check(position)
        return max(self.labels, key=lambda label: self.followed_prob[label][position])

    def reading(self, position: int) -> str:
        """One sentence reading ``position``: how much each condition puts on the answer's token, most first."""
        self._check(position)
        ranked = sorted(self.labels, key=lambda label: -self.followed_prob[label][position])
        rest = [f"the {_phrase(label)} {_percent(self.followed_prob[label][position])}" for label in ranked[1:]]
        sentence = f"At this token the {_phrase(ranked[0])} puts {_percent(self.followed_prob[ranked[0]][position])}"
        sentence += f" on {_quoted(self.answer_tokens[position])}"
        if rest:
            sentence += ", " + (", ".join(rest[:-1]) + " and " if len(rest) > 1 else "") + rest[-1]
        outside = [_phrase(label) for label in self.labels if self.followed_rank[label][position] > self.k]
        if outside:
            sentence += f" (not in the top {self.k} of the {' or the '.join(outside)})"
        return sentence + "."

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Lens:
        try:
            return cls(**data)
        except TypeError as e:
            raise FtvpeError(f"This is not a saved token lens: {e}") from None


def _percent(p: float) -> str:
    return f"{100 * p:.0f} %" if p >= 0.01 or p == 0 else "<1 %"


def _phrase(label: str) -> str:
    return {TUNED: "fine-tuned model"}.get(label, label[:1].lower() + label[1:])


def _quoted(token: str) -> str:
    shown = token.replace("\n", "⏎")
    return f"“{shown}”"


def example_messages(
    task: evaluate.Task, example: Example, techniques: Sequence[str], count_tokens=None
) -> tuple[list[dict], list[dict]]:
    """The plain and the engineered messages for one example, built as the Compare page builds its arms."""
    plain = prompts.build(evaluate.task_spec(task, example, ()), count_tokens).messages
    engineered = prompts.build(evaluate.task_spec(task, example, list(techniques)), count_tokens).messages
    return plain, engineered


def _greedy(loaded: LoadedModel, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """Greedy answer ids from the engine, ending with the end-of-turn token when the model stops."""
    settings = GenerationSettings(max_new_tokens=max_new_tokens, repetition_penalty=1.0)
    request = engine.get(loaded).generate(prompt_ids, settings)
    return request.tokens + ([request.end_token] if request.end_token is not None else [])


def _forced_probs(loaded: LoadedModel, prompt_ids: list[int], answer_ids: list[int]):
    """Next-token probabilities at every answer position, one forward pass: (A, V) float32 on the CPU."""
    import torch

    # Feeding prompt + answer[:-1] and keeping the last A positions gives exactly the A predictions.
    ids = prompt_ids + answer_ids[:-1]
    with torch.inference_mode():
        out = loaded.model(input_ids=torch.tensor([ids], device=loaded.device), logits_to_keep=len(answer_ids))
        return torch.softmax(out.logits[0].float(), dim=-1).cpu()  # (A, V)


def build(
    conditions: dict[str, Condition],
    follow: str,
    max_new_tokens: int = 24,
    k: int = 8,
    answer_text: str | None = None,
) -> Lens:
    """Read the next-token distributions of several conditions along one answer.

    Args:
        conditions: label -> (loaded model, chat messages). The models must share a tokenizer.
        follow: the label whose greedy answer is stepped through; with ``answer_text``, a name for that text.
        max_new_tokens: the longest greedy answer, in tokens.
        k: how many most likely tokens to keep per position and condition.
        answer_text: step through this text instead (tokenized without special tokens).

    Raises:
        FtvpeError: no conditions, an unknown follow label, an empty answer, a prompt and answer longer than a
            model's context, conditions with different tokenizers, or k / max_new_tokens out of range.
    """
    _check_request(conditions, follow, max_new_tokens, k, answer_text)
    labels = list(conditions)
    first = conditions[labels[0]][0]
    prompt_ids = {label: generation.encode_chat(loaded, messages) for label, (loaded, messages) in conditions.items()}
    answer_ids = _answer_ids(conditions, prompt_ids, follow, max_new_tokens, answer_text)
    for label, (loaded, _) in conditions.items():
        generation.check_fits(loaded, len(prompt_ids[label]), len(answer_ids))
    read = {
        label: _read_condition(loaded, prompt_ids[label], answer_ids, k) for label, (loaded, _) in conditions.items()
    }
    return Lens(
        labels=labels,
        follow=follow,
        answer_ids=list(answer_ids),
        answer_tokens=[first.tokenizer.decode([i]) for i in answer_ids],
        tops={label: r["tops"] for label, r in read.items()},
        followed_prob={label: r["prob"] for label, r in read.items()},
        followed_rank={label: r["rank"] for label, r in read.items()},
        distances=_largest_distances([r["probs"] for r in read.values()], len(answer_ids)),
        messages={label: [dict(m) for m in messages] for label, (_, messages) in conditions.items()},
        prompt_tokens={label: len(ids) for label, ids in prompt_ids.items()},
        k=k,
        model=first.source.label.split(" + adapter")[0],
    )


def _check_request(conditions: dict[str, Condition], follow: str, max_new_tokens, k, answer_text) -> None:
    if not conditions:
        raise FtvpeError("The lens needs at least one condition to read.")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise FtvpeError(f"Top-k must be a whole number between 1 and {MAX_K}, got {k!r}.")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
        raise FtvpeError(f"Max new tokens must be a whole number, got {max_new_tokens!r}.")
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise FtvpeError(f"Max new tokens must be between 1 and {MAX_NEW_TOKENS}, got {max_new_tokens}.")
    if answer_text is None and follow not in conditions:
        raise FtvpeError(f"Unknown condition '{follow}' to follow: choose from {', '.join(conditions)}.")
    sizes = {len(loaded.tokenizer) for loaded, _ in conditions.values()}
    if len(sizes) > 1:
        raise FtvpeError("The conditions use models with different tokenizers; their tokens cannot be compared.")
    if k > min(sizes):
        raise FtvpeError(f"Top-k {k} is more than the model's vocabulary of {min(sizes)} tokens.")


def _answer_ids(conditions, prompt_ids: dict[str, list[int]], follow: str, max_new_tokens: int, answer_text):
    """The tokens to step through: ``answer_text`` tokenized, or the followed condition's greedy answer."""
    if answer_text is not None:
        answer_ids = list(next(iter(conditions.values()))[0].tokenizer.encode(answer_text, add_special_tokens=False))
        if not answer_text.strip() or not answer_ids:
            raise FtvpeError("The answer to step through is empty: write a few words.")
        if len(answer_ids) > MAX_NEW_TOKENS:
            raise FtvpeError(f"The answer is {len(answer_ids):,} tokens; the lens reads at most {MAX_NEW_TOKENS}.")
        return answer_ids
    loaded = conditions[follow][0]
    generation.check_fits(loaded, len(prompt_ids[follow]), max_new_tokens)
    answer_ids = _greedy(loaded, prompt_ids[follow], max_new_tokens)
    if not answer_ids:
        raise FtvpeError(f"The {follow.lower()} condition gave an empty answer; there is nothing to step through.")
    return answer_ids


def _read_condition(loaded: models.LoadedModel, prompt_ids: list[int], answer_ids: list[int], k: int) -> dict:
    """One condition along the answer: its distributions (A, V), the followed token's probability and rank,
    and the top ``k`` tokens at each position."""
    import torch

    probs = models.compute(_forced_probs, loaded, prompt_ids, answer_ids)  # (A, V)
    own = probs.gather(1, torch.tensor(answer_ids)[:, None])[:, 0]  # (A,)
    values, indices = torch.topk(probs, k, dim=-1)  # (A, k)
    tops = [
        [{"id": int(i), "token": loaded.tokenizer.decode([int(i)]), "prob": float(p)} for p, i in zip(vs, ix)]
        for vs, ix in zip(values, indices)
    ]
    return {
        "probs": probs,
        "prob": [float(p) for p in own],
        "rank": [int(r) + 1 for r in (probs > own[:, None]).sum(dim=1)],
        "tops": tops,
    }


def _largest_distances(all_probs: list, positions: int) -> list[float]:
    """At each position, the largest total-variation distance between any two conditions' distributions."""
    distances = [0.0] * positions
    for a in range(len(all_probs)):
        for b in range(a + 1, len(all_probs)):
            tv = 0.5 * (all_probs[a] - all_probs[b]).abs().sum(dim=1)  # (A,)
            distances = [max(d, float(t)) for d, t in zip(distances, tv)]
    return distances
