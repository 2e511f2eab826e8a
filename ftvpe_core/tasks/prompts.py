"""Prompt engineering as small composable techniques.

Building a prompt is pure: a :class:`PromptSpec` goes in, chat messages and the segments that make them up
come out, each segment tagged with the technique that added it, so a page can colour it and count its
tokens. This module knows nothing about models; token counting is a function passed in.

Techniques (the seed article's four): role assignment, few-shot examples, chain-of-thought, and context
addition (background facts, tone, audience, word count, output format).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from ftvpe_core import FtvpeError

TECHNIQUES = ("role", "few-shot", "cot", "context")
"""Technique keys, in the order they are applied."""

TECHNIQUE_LABELS = {
    "task": "Task",
    "role": "Role assignment",
    "few-shot": "Few-shot examples",
    "cot": "Chain-of-thought",
    "context": "Context addition",
}

MAX_TASK_CHARS = 50_000
MAX_WORDS = 2_000
ANSWER_PREFIX = "Answer:"

CountTokens = Callable[[str], int]


@dataclass
class PromptSpec:
    """A task plus the techniques switched on and their fields. Fields of switched-off techniques are kept
    (so a page can restore them) but not used."""

    task: str
    """What the user wants the model to do, in their own words."""
    enabled: tuple[str, ...] = ()
    """Which of TECHNIQUES are on."""
    role: str = ""
    """Role assignment: who the model should act as, e.g. 'a marketing expert'."""
    examples: list[tuple[str, str]] = field(default_factory=list)
    """Few-shot: (input, output) pairs shown before the task."""
    facts: str = ""
    """Context: background facts the answer should use."""
    tone: str = ""
    """Context: the tone, e.g. 'friendly'."""
    audience: str = ""
    """Context: who the answer is for, e.g. 'families in the USA'."""
    words: int | None = None
    """Context: the length to aim for, in words."""
    output_format: str = ""
    """Context: the shape of the answer, e.g. 'a bulleted list' or 'JSON'."""

    def __post_init__(self) -> None:
        self.enabled = tuple(t for t in TECHNIQUES if t in set(self.enabled))
        self.examples = [(str(i), str(o)) for i, o in self.examples]
        if not self.task or not self.task.strip():
            raise FtvpeError("The task is empty: type what you want the model to do.")
        if len(self.task) > MAX_TASK_CHARS:
            raise FtvpeError(
                f"The task is {len(self.task):,} characters long; the limit is {MAX_TASK_CHARS:,}. Shorten it."
            )
        if "role" in self.enabled and not self.role.strip():
            raise FtvpeError("Role assignment is on but the role is empty: say who the model should act as.")
        if "few-shot" in self.enabled:
            if not self.examples:
                raise FtvpeError("Few-shot is on but there are no examples: add at least one input and output.")
            for n, (inp, out) in enumerate(self.examples, 1):
                if not inp.strip() or not out.strip():
                    raise FtvpeError(f"Few-shot example {n} needs both an input and an output.")
        if self.words is not None and not 1 <= self.words <= MAX_WORDS:
            raise FtvpeError(f"The word count must be between 1 and {MAX_WORDS}, got {self.words}.")
        if "context" in self.enabled and not self.context_parts():
            raise FtvpeError(
                "Context addition is on but empty: give background facts, a tone, an audience, "
                "a word count or a format."
            )

    def uses(self, technique: str) -> bool:
        return technique in self.enabled

    def plain(self) -> PromptSpec:
        """The same task with every technique off."""
        return replace(self, enabled=())

    def context_parts(self) -> dict[str, str]:
        """The context fields that are filled in, by name."""
        parts = {
            "facts": self.facts.strip(),
            "tone": self.tone.strip(),
            "audience": self.audience.strip(),
            "words": str(self.words) if self.words else "",
            "format": self.output_format.strip(),
        }
        return {k: v for k, v in parts.items() if v}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["enabled"] = list(self.enabled)
        d["examples"] = [list(e) for e in self.examples]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PromptSpec:
        d = dict(d)
        d["enabled"] = tuple(d.get("enabled", ()))
        d["examples"] = [tuple(e) for e in d.get("examples", [])]
        return cls(**d)


@dataclass(frozen=True)
class Segment:
    """One piece of a message, and the technique that put it there."""

    technique: str
    """'task' or one of TECHNIQUES."""
    text: str
    message: int
    """Index of the message this text belongs to."""
    tokens: int
    detail: str = ""
    """Which part of a technique this is, e.g. 'tone' for context or 'example 1 input' for few-shot."""


@dataclass(frozen=True)
class BuiltPrompt:
    messages: list[dict]
    """Chat messages (role, content) ready for a chat template."""
    segments: list[Segment]
    """Every piece of every message in order; a message's content is its segments' texts joined."""
    exact_tokens: bool
    """False when token counts are estimates (no tokenizer was given)."""

    def tokens_by_technique(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.segments:
            out[s.technique] = out.get(s.technique, 0) + s.tokens
        return out


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text[-1:] in ".!?\"')" else text + "."


def _role(spec: PromptSpec) -> list[tuple[str, str, str]]:
    role = spec.role.strip()
    return [("system", f"Act as {role}. Answer the way {role} would.", "")]


def _few_shot(spec: PromptSpec) -> list[tuple[str, str, str]]:
    turns = []
    for n, (inp, out) in enumerate(spec.examples, 1):
        turns.append(("user", inp.strip(), f"example {n} input"))
        turns.append(("assistant", out.strip(), f"example {n} output"))
    return turns


def _context(spec: PromptSpec) -> list[tuple[str, str]]:
    """(detail, text) pieces appended to the task, each with its separator."""
    parts = spec.context_parts()
    pieces = []
    if "facts" in parts:
        pieces.append(("facts", "Background facts: " + _sentence(parts["facts"])))
    wording = {
        "tone": "Use a {} tone.",
        "audience": "Write for {}.",
        "words": "Use about {} words.",
        "format": "Format the answer as {}.",
    }
    for key, template in wording.items():
        if key in parts:
            pieces.append((key, template.format(parts[key].rstrip("."))))
    return [(d, ("\n\n" if i == 0 else " ") + t) for i, (d, t) in enumerate(pieces)]


COT_INSTRUCTION = (
    f'Think it through step by step, then write the final answer on the last line, starting with "{ANSWER_PREFIX}".'
)


def _estimate_tokens(text: str) -> int:
    # About four characters a token for English BPE vocabularies; only used before a tokenizer exists.
    return max(1, round(len(text) / 4)) if text else 0


def build(spec: PromptSpec, count_tokens: CountTokens | None = None) -> BuiltPrompt:
    """Chat messages and tagged segments for a spec.

    Args:
        spec: the task and techniques.
        count_tokens: counts a text's tokens (a tokenizer); without it, counts are estimates.

    Layout: role assignment is the system message (replacing the chat template's default system prompt);
    few-shot examples are earlier user/assistant turns; the last user message is the task, then context
    addition, then the chain-of-thought instruction.
    """
    count = count_tokens or _estimate_tokens
    segments: list[Segment] = []
    messages: list[dict] = []

    def add_message(role: str, pieces: list[tuple[str, str, str]]) -> None:
        index = len(messages)
        messages.append({"role": role, "content": "".join(text for _, text, _ in pieces)})
        for technique, text, detail in pieces:
            segments.append(Segment(technique, text, index, count(text), detail))

    if spec.uses("role"):
        for role, text, detail in _role(spec):
            add_message(role, [("role", text, detail)])
    if spec.uses("few-shot"):
        for role, text, detail in _few_shot(spec):
            add_message(role, [("few-shot", text, detail)])
    final = [("task", spec.task.strip(), "")]
    if spec.uses("context"):
        final += [("context", text, detail) for detail, text in _context(spec)]
    if spec.uses("cot"):
        final.append(("cot", "\n\n" + COT_INSTRUCTION, ""))
    add_message("user", final)
    return BuiltPrompt(messages, segments, exact_tokens=count_tokens is not None)


def parse_example(text: str) -> tuple[str, str]:
    """'input=>output' as used by the CLI's --example flag."""
    if "=>" not in text:
        raise FtvpeError(f'An example must look like "INPUT=>OUTPUT", got "{text}".')
    inp, out = text.split("=>", 1)
    if not inp.strip() or not out.strip():
        raise FtvpeError(f'An example needs text on both sides of "=>", got "{text}".')
    return inp.strip(), out.strip()
