"""Evaluation tasks: examples in, a score per example out.

A :class:`Task` is a set of examples with the metric that scores them (a built-in dataset's test split, or
every example of an uploaded file). ``score`` judges one answer; ``task_spec`` builds the engineered prompt
for one example from the prompt techniques; ``generate_batch`` answers many prompts at once through the
model's engine (``engine``); ``run_arm`` and ``ablate`` put them together. This module knows
nothing about pages, the run store or fine-tuning: a tuned model is just another ``LoadedModel``.

Over 600 lines because the metrics, the tasks, the batched answering through the engine, the arms and the ablation
share the Task and ArmResult records and one way of building prompts.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import statistics
import string
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from ftvpe_core import FtvpeError
from ftvpe_core.model import engine, generation
from ftvpe_core.model.models import LoadedModel
from ftvpe_core.settings import GenerationSettings
from ftvpe_core.tasks import datasets, prompts
from ftvpe_core.tasks.datasets import Example

BATCH_SIZE = 16
"""Prompts generated together: on 2 CPU cores with q4 weights, 16 answer 4.1-4.3x as many prompts a second
as one at a time (8: 3.7-3.9x; see bench/evaluation.py)."""
METRICS = ("accuracy", "exact_match", "constraints", "fact_recall", "token_f1")
"""accuracy: names the right label and no other; exact_match: the whole answer is the reference;
constraints: share of the brand rules kept; fact_recall: share of the listed facts found; token_f1: word
overlap with the reference (SQuAD F1)."""

PASS_MARK = {"accuracy": 0.999, "exact_match": 0.999, "constraints": 0.999, "fact_recall": 0.5, "token_f1": 0.5}
"""The score from which an answer counts as passed."""
CONTEXT_SHOTS = 4
"""How many related training answers a facts task pastes in as background (context addition)."""

_ROLES = {"support_triage": "a customer-support triage assistant"}
_STOPWORDS = set(
    "a an and are as at be but by can do does for from has have how i if in is it its my of on or our so that the "
    "their them there this to was we what when where which who will with you your".split()
)


@dataclass
class Task:
    """Examples to answer, and how to score them."""

    name: str
    """Short identifier, e.g. 'support_triage'."""
    title: str
    """Name shown in the UI."""
    metric: str
    """One of METRICS."""
    examples: list[Example]
    """What is scored: a built-in dataset's test split, or every example of a file."""
    labels: list[str] = field(default_factory=list)
    """The allowed answers of a label task; empty otherwise."""
    rules: dict = field(default_factory=dict)
    """Brand rules (sign_off, max_words, banned_words, preferred_words); empty otherwise."""
    shots: list[Example] = field(default_factory=list)
    """The pool few-shot examples come from: a built-in's training split, or the file's own examples (an
    example is never shown as its own shot)."""


def _kind(task: Task) -> str:
    """'brand', 'label', 'facts' or 'text': what the prompt techniques add for this task."""
    if task.rules:
        return "brand"
    if task.labels:
        return "label"
    if task.metric == "fact_recall" or any(e.facts for e in task.examples):
        return "facts"
    return "text"


# Loading


def load_task(name_or_file: str, metric: str | None = None, limit: int | None = None) -> Task:
    """A built-in dataset's test split, or every example of a JSONL/CSV file, as a task.

    Args:
        name_or_file: 'support_triage' (or 'support-triage'), 'brand_voice', 'domain_knowledge', or a file in
            the upload format (``datasets.parse_upload``); all of a file's examples are scored.
        metric: one of METRICS, instead of the dataset's own (a built-in's card; for a file: accuracy when
            it has a few short answers used several times, fact_recall when every row lists facts, else
            token_f1).
        limit: score only the first ``limit`` examples.

    Raises:
        FtvpeError: an unknown name or metric, a metric the data cannot support, or a bad file.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise FtvpeError(f"The example limit must be a whole number of at least 1, got {limit!r}.")
    data = datasets.load(name_or_file, what="task")
    if datasets.is_builtin(name_or_file):
        examples, shots = data.splits["test"], data.splits["train"]
    else:
        examples = data.all_examples()
        shots = list(examples)
    return task_from(data, examples, shots, metric, limit)


def task_from(
    data: datasets.Dataset,
    examples: list[Example],
    shots: list[Example],
    metric: str | None = None,
    limit: int | None = None,
) -> Task:
    """A task scoring ``examples`` of ``data`` (few-shot pool ``shots``), with the checks of ``load_task``.

    Raises:
        FtvpeError: a metric the data cannot support.
    """
    if metric is not None and metric not in METRICS:
        raise FtvpeError(f"Unknown metric '{metric}': choose from {', '.join(METRICS)}.")
    chosen = metric or data.metric
    labels = list(data.labels)
    if chosen in ("accuracy", "exact_match") and not labels:
        labels = datasets.label_set(e.response for e in examples)
        if chosen == "accuracy" and not labels:
            distinct = len({e.response.strip() for e in examples})
            raise FtvpeError(
                f"Accuracy needs a few short labels (at most {datasets.MAX_LABELS}, of up to "
                f"{datasets.LABEL_WORDS} words), but {data.title} has {distinct:,} different answers: "
                "use exact_match or token_f1."
            )
    if chosen == "constraints" and not data.rules:
        raise FtvpeError(
            f"The constraints metric checks a brand's rules (sign-off, word limit, banned words); "
            f"{data.title} has none. Use brand_voice, or another metric."
        )
    if chosen == "fact_recall" and not any(e.facts for e in examples):
        raise FtvpeError(f"Fact recall needs examples that list facts; {data.title} has none. Use token_f1.")
    if limit is not None:
        examples = examples[:limit]
    return Task(
        name=data.name,
        title=data.title,
        metric=chosen,
        examples=list(examples),
        labels=labels,
        rules=dict(data.rules),
        shots=list(shots),
    )


# Scoring

_ANSWER_LINE = re.compile(r"^[*#_ >]*" + re.escape(prompts.ANSWER_PREFIX.rstrip(":")) + r"\s*[*_]*:[*_]*\s*", re.I)
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’-]*")


def final_answer(answer: str) -> str:
    """The text after 'Answer:' when the answer's last non-empty line starts with it (chain-of-thought);
    otherwise the whole answer."""
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    if lines:
        found = _ANSWER_LINE.match(lines[-1])
        if found:
            return lines[-1][found.end() :].strip().strip("*_").strip()
    return answer


def _normal(text: str) -> str:
    """Lower case, thousands separators dropped, every run of non-alphanumerics one space, padded with spaces,
    so phrases can be found whole-word with ``in``."""
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text.lower())
    return " " + " ".join(re.sub(r"[^0-9a-z]+", " ", text).split()) + " "


def _labels_named(labels: Sequence[str], text: str) -> list[str]:
    """Labels found whole-word in text, in ``labels`` order; a label inside a longer named label (e.g.
    'spam' in 'not spam') does not count on its own."""
    lowered = text.lower()
    taken: list[tuple[int, int]] = []
    named = set()
    for label in sorted(labels, key=len, reverse=True):
        key = label.strip().lower()
        if not key:
            continue
        pattern = r"(?<![0-9a-z])" + re.escape(key) + r"(?![0-9a-z])"
        for m in re.finditer(pattern, lowered):
            if not any(s <= m.start() and m.end() <= e for s, e in taken):
                named.add(label)
                taken.append(m.span())
    return [label for label in labels if label in named]


def _accuracy(task: Task, example: Example, answer: str) -> tuple[float, str]:
    expected = example.response.strip()
    named = _labels_named(task.labels, final_answer(answer))
    if not named:
        return 0.0, f"names no label (expected {expected})"
    if len(named) > 1:
        count = "two" if len(named) == 2 else str(len(named))
        return 0.0, f"names {count} labels: {', '.join(named)}"
    if named[0].strip().lower() == expected.lower():
        return 1.0, f"names {named[0]}"
    return 0.0, f"names {named[0]}, expected {expected}"


def _exact_match(example: Example, answer: str) -> tuple[float, str]:
    got, expected = final_answer(answer).strip().lower(), example.response.strip().lower()
    if got == expected:
        return 1.0, "exact match"
    return 0.0, f"expected {example.response.strip()!r}"


def _banned_found(text: str, banned: Sequence[str]) -> list[str]:
    # The word or a simple inflection of it: 'customers' breaks the rule against 'customer'.
    lowered = text.lower()
    found = []
    for word in banned:
        pattern = r"(?<![0-9a-z])" + re.escape(word.lower()) + r"(?:s|es|d|ed|ing|er|est|ly)?(?![0-9a-z])"
        if re.search(pattern, lowered):
            found.append(word)
    return found


def _constraints(rules: dict, answer: str) -> tuple[float, str]:
    kept, failed = 0, []
    checks = 0
    if rules.get("sign_off"):
        checks += 1
        if _normal(rules["sign_off"]) in _normal(answer):
            kept += 1
        else:
            failed.append("no sign-off")
    if rules.get("max_words"):
        checks += 1
        n = len(_WORD.findall(answer))
        if n <= int(rules["max_words"]):
            kept += 1
        else:
            failed.append(f"{n} words (limit {rules['max_words']})")
    if rules.get("banned_words") is not None:
        checks += 1
        banned = _banned_found(answer, rules["banned_words"])
        if banned:
            failed.append("banned: " + ", ".join(banned))
        else:
            kept += 1
    if not checks:
        return 0.0, "no rules to check"
    return kept / checks, "all rules kept" if not failed else "; ".join(failed)


def _fact_recall(example: Example, answer: str) -> tuple[float, str]:
    if not example.facts:
        f1, detail = _token_f1(example.response, answer)
        return f1, f"no facts listed: {detail}"
    text = _normal(answer)
    missing = [f for f in example.facts if _normal(f) not in text]
    found = len(example.facts) - len(missing)
    detail = f"{found}/{len(example.facts)} facts"
    return found / len(example.facts), detail + (f"; missing: {', '.join(missing)}" if missing else "")


_PUNCTUATION = set(string.punctuation)


def _squad_tokens(text: str) -> list[str]:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return text.split()


def _token_f1(reference: str, answer: str) -> tuple[float, str]:
    ref, got = _squad_tokens(reference), _squad_tokens(answer)
    if not ref or not got:
        same = float(ref == got)
        return same, f"F1 {same:.2f}"
    common = sum((Counter(ref) & Counter(got)).values())
    if not common:
        return 0.0, "F1 0.00 (no words in common)"
    precision, recall = common / len(got), common / len(ref)
    f1 = 2 * precision * recall / (precision + recall)
    return f1, f"F1 {f1:.2f} (precision {precision:.2f}, recall {recall:.2f})"


def score(task: Task, example: Example, answer: str) -> tuple[float, str]:
    """Score one answer from 0 to 1, with a short detail for the UI.

    accuracy and exact_match read only the final line when it starts with 'Answer:' (chain-of-thought).
    An empty answer scores 0 under every metric.
    """
    if not answer.strip():
        return 0.0, "empty answer"
    metric = task.metric
    if metric == "accuracy":
        return _accuracy(task, example, answer)
    if metric == "exact_match":
        return _exact_match(example, answer)
    if metric == "constraints":
        return _constraints(task.rules, answer)
    if metric == "fact_recall":
        return _fact_recall(example, answer)
    if metric == "token_f1":
        return _token_f1(example.response, answer)
    raise FtvpeError(f"Unknown metric '{metric}': choose from {', '.join(METRICS)}.")


FEEDBACK_EXAMPLE_CHARS = 160
"""The longest example answer feedback quotes (from the training split)."""


def _word_limit(task: Task) -> int:
    """Words past which an answer counts as too long: twice the longest label (at least 5) for a label task,
    the brand's own limit, else twice the longest answer in the few-shot pool (at least 20)."""
    kind = _kind(task)
    if kind == "label":
        return max(5, 2 * max((len(_WORD.findall(label)) for label in task.labels), default=1))
    if kind == "brand" and task.rules.get("max_words"):
        return int(task.rules["max_words"])
    return max(20, 2 * max((len(_WORD.findall(e.response)) for e in task.shots), default=10))


def answer_feedback(task: Task, outputs: Sequence[str]) -> dict:
    """What went wrong across a set of answers, in counts only: empty answers, answers naming no allowed label
    (or several), answers past a word limit, and one answer from the few-shot pool (the training split) to show
    what a good one looks like. Nothing in it quotes or measures an input: a learner may see all of it.

    Args:
        task: the task the answers were scored on (its labels, rules and few-shot pool are read, not its examples).
        outputs: the model's answers, as scored.
    Returns:
        {'n', 'empty', 'not_a_label' (None unless a label task), 'too_long', 'word_limit', 'labels',
        'example_answer' (None when the pool is empty)}.
    """
    texts = [str(o) for o in outputs]
    limit = _word_limit(task)
    empty = sum(not t.strip() for t in texts)
    not_a_label = None
    if _kind(task) == "label":
        not_a_label = sum(bool(t.strip()) and len(_labels_named(task.labels, final_answer(t))) != 1 for t in texts)
    too_long = sum(len(_WORD.findall(final_answer(t))) > limit for t in texts)
    example = next((e.response.strip() for e in task.shots if e.response.strip()), None)
    if example is not None and len(example) > FEEDBACK_EXAMPLE_CHARS:
        example = example[: FEEDBACK_EXAMPLE_CHARS - 1].rstrip() + "…"
    return {
        "n": len(texts),
        "empty": empty,
        "not_a_label": not_a_label,
        "too_long": too_long,
        "word_limit": limit,
        "labels": list(task.labels),
        "example_answer": example,
    }


# Prompts


def _same(a: Example, b: Example) -> bool:
    return a is b or a.prompt.strip().lower() == b.prompt.strip().lower()


def _shots(task: Task, example: Example, k: int) -> list[Example]:
    """k examples from the pool, never the example itself; label tasks take the labels in turn, so every label
    is shown once before any is shown twice."""
    pool = [s for s in task.shots if not _same(s, example)]
    if _kind(task) != "label":
        return pool[:k]
    by_label: dict[str, list[Example]] = {}
    for s in pool:
        by_label.setdefault(s.response.strip().lower(), []).append(s)
    queues = [by_label.get(label.strip().lower(), []) for label in task.labels]
    chosen: list[Example] = []
    for rank in range(max((len(q) for q in queues), default=0)):
        chosen += [q[rank] for q in queues if rank < len(q)]
        if len(chosen) >= k:
            break
    return chosen[:k]


def _content_words(text: str) -> set[str]:
    return {w for w in _normal(text).split() if w not in _STOPWORDS and len(w) > 2}


def _related(task: Task, example: Example, k: int) -> list[Example]:
    """The k pool examples whose question and answer share the rarest words with this question (words weighted
    by inverse document frequency over the pool; ties in pool order)."""
    pool = [s for s in task.shots if not _same(s, example)]
    words = [_content_words(s.prompt + " " + s.response) for s in pool]
    counts = Counter(w for ws in words for w in ws)
    want = _content_words(example.prompt)

    def weight(ws: set[str]) -> float:
        return sum(math.log((1 + len(pool)) / counts[w]) for w in want & ws)

    ranked = sorted(range(len(pool)), key=lambda i: (-weight(words[i]), i))
    return [pool[i] for i in ranked[:k]]


def _subject(task: Task) -> str:
    """'Pinecone Outfitters' from 'Brand voice: Pinecone Outfitters'."""
    return task.title.split(":", 1)[1].strip() if ":" in task.title else task.title


def _join(words: Sequence[str], last: str = "or") -> str:
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + f" {last} " + words[-1]


def _role(task: Task) -> str:
    """Who answers, as a short noun phrase (prompts.build wraps it: 'Act as ... Answer the way ... would.')."""
    kind = _kind(task)
    if task.name in _ROLES:
        return _ROLES[task.name]
    if kind == "label":
        return "a careful text classifier"
    if kind == "brand":
        return f"the copywriter of {_subject(task)}"
    if kind == "facts":
        return f"a product expert on {_subject(task)}"
    return "a knowledgeable expert"


def task_spec(task: Task, example: Example, techniques: Sequence[str], k: int = 4) -> prompts.PromptSpec:
    """The engineered prompt for one example: its prompt as the task, plus the techniques asked for.

    - role: who answers, by task kind (a triage assistant, the brand's copywriter, a product expert, ...).
    - few-shot: ``k`` examples from ``task.shots``, never the example itself (label tasks take the labels in
      turn).
    - cot: the prompts module's chain-of-thought instruction (final line 'Answer: ...').
    - context: label tasks get the allowed labels and 'a single word'; brand tasks the brand rules; facts tasks
      the answers of the ``CONTEXT_SHOTS`` most related pool examples as background (retrieval, never the
      example's own answer); free-text tasks the typical answer length; an example's system text, if any, goes
      in as background too.

    Raises:
        FtvpeError: an unknown technique, or a technique with nothing to add (few-shot with an empty pool).
    """
    unknown = [t for t in techniques if t not in prompts.TECHNIQUES]
    if unknown:
        raise FtvpeError(
            f"Unknown technique {', '.join(map(repr, unknown))}: choose from {', '.join(prompts.TECHNIQUES)}."
        )
    kind = _kind(task)
    background: list[str] = [example.system.strip()] if example.system.strip() else []
    output_format, words = "", None
    if "context" in techniques:
        if kind == "label":
            single = all(len(label.split()) == 1 for label in task.labels)
            output_format = f"{'a single word' if single else 'the label alone'}: one of {_join(task.labels)}"
        elif kind == "brand":
            r = task.rules
            rules = []
            if r.get("sign_off"):
                rules.append(f'end every answer with "{r["sign_off"]}"')
            if r.get("max_words"):
                rules.append(f"use at most {r['max_words']} words")
            if r.get("banned_words"):
                rules.append("never use these words: " + ", ".join(r["banned_words"]))
            if r.get("preferred_words"):
                rules.append("where they fit, use the brand's own words: " + ", ".join(r["preferred_words"]))
            background.append(f"The brand rules of {_subject(task)}: " + "; ".join(rules) + ".")
        elif kind == "facts":
            background += [s.response.strip() for s in _related(task, example, CONTEXT_SHOTS)]
        else:
            lengths = [len(_WORD.findall(s.response)) for s in task.shots if not _same(s, example)]
            words = min(max(1, round(statistics.median(lengths))), prompts.MAX_WORDS) if lengths else None
    return prompts.PromptSpec(
        task=example.prompt,
        enabled=tuple(techniques),
        role=_role(task),
        examples=[(s.prompt, s.response) for s in _shots(task, example, k)] if "few-shot" in techniques else [],
        facts=" ".join(b if b[-1:] in ".!?" else b + "." for b in background),
        words=words,
        output_format=output_format,
    )


# Batched generation


@dataclass
class BatchAnswer:
    text: str
    prompt_tokens: int
    new_tokens: int
    latency_s: float
    """The call's wall time divided by its number of answers (what an answer costs at this batch size)."""


def shared_prefix_tokens(encoded: Sequence[Sequence[int]]) -> int:
    """The first tokens every one of these prompts shares (chat template, role, few-shot examples), as the
    engine's ``prefix_tokens``: 0 when fewer than ``engine.MIN_SHARED_PREFIX``, and always short of the
    shortest prompt. It depends on the prompts alone, so a prompt gets the same split, and the same answer,
    whatever else is generated beside it."""
    if not encoded:
        return 0
    first, n = encoded[0], min(len(ids) for ids in encoded) - 1
    for ids in encoded[1:]:
        n = next((i for i in range(n) if ids[i] != first[i]), n)
    return n if n >= engine.MIN_SHARED_PREFIX else 0


def _answer_all(
    loaded: LoadedModel,
    encoded: list[list[int]],
    settings: list[GenerationSettings],
    prefixes: list[int],
    batch_size: int,
    on_answer: Callable[[int], None] | None = None,
    dropped: Callable[[], set[int]] | None = None,
) -> dict[int, engine.Request]:
    """Answer the encoded prompts through the engine, ``batch_size`` in flight at a time, in order; returns the
    finished requests by index. ``on_answer(i)`` follows each answer; prompts in ``dropped()`` (asked after each
    answer) are cancelled or never submitted, and missing from the result."""
    scheduler = engine.get(loaded)
    changed = threading.Event()
    waiting = iter(range(len(encoded)))
    running: dict[int, engine.Request] = {}
    done: dict[int, engine.Request] = {}
    gone: set[int] = set()
    try:
        while True:
            while len(running) < batch_size and (i := next(waiting, None)) is not None:
                if i in gone:
                    continue
                running[i] = scheduler.submit(encoded[i], settings[i], prefix_tokens=prefixes[i])
                running[i].watch(changed)
            if not running:
                return done
            finished = [i for i, r in running.items() if r.finished]
            if not finished:
                changed.wait(1.0)
                changed.clear()
                continue
            for i in finished:
                done[i] = running.pop(i).wait()
                if on_answer:
                    on_answer(i)
            if dropped is not None and (gone := dropped()):
                for i in [i for i in running if i in gone]:
                    running.pop(i).cancel()
                done = {i: r for i, r in done.items() if i not in gone}
    finally:
        for r in running.values():
            r.cancel()


def _encode_all(loaded: LoadedModel, messages_list: list[list[dict]], max_new: list[int]) -> list[list[int]]:
    encoded = [generation.encode_chat(loaded, messages) for messages in messages_list]
    for i, ids in enumerate(encoded):
        try:
            generation.check_fits(loaded, len(ids), max_new[i])
        except FtvpeError as e:
            raise FtvpeError(f"Prompt {i + 1} of {len(encoded)}: {e}") from None
    return encoded


def generate_batch(
    loaded: LoadedModel,
    messages_list: list[list[dict]],
    settings: GenerationSettings | None = None,
    batch_size: int = BATCH_SIZE,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[BatchAnswer]:
    """Answer many chats through the model's engine, ``batch_size`` of them in flight at a time.

    The engine decodes every running request in one batched forward pass (with other sessions' requests, if
    any), and a request leaves as soon as it ends, so the next prompt takes its place at once. The first tokens
    that all the prompts share (chat template, role, few-shot examples: ``shared_prefix_tokens``) are computed
    once. Answers come back in input order, each the same whatever else the engine runs beside it (batch
    invariance). Token choice is the same as ``generation.generate`` (repetition penalty included); with a shared
    prefix the prompt's last tokens are computed apart from it, so a near tie can go the other way than in an
    answer to the prompt alone, prefilled whole.

    Args:
        settings: default ``GenerationSettings()``, as ``generation.generate``.
        batch_size: prompts of this call in flight together.
        on_progress: called with (answers done, total) after each answer.

    Raises:
        FtvpeError: a prompt that does not fit the model's context with ``max_new_tokens`` (nothing is
            generated then).
    """
    settings = settings or GenerationSettings()
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise FtvpeError(f"The batch size must be a whole number of at least 1, got {batch_size!r}.")
    n = len(messages_list)
    encoded = _encode_all(loaded, messages_list, [settings.max_new_tokens] * n)
    prefix = shared_prefix_tokens(encoded) if n > 1 else 0
    count = itertools.count(1)
    began = time.perf_counter()
    done = _answer_all(
        loaded,
        encoded,
        [settings] * n,
        [prefix] * n,
        batch_size,
        (lambda i: on_progress(next(count), n)) if on_progress else None,
    )
    latency = (time.perf_counter() - began) / max(n, 1)
    return [
        BatchAnswer(loaded.tokenizer.decode(r.tokens, skip_special_tokens=True), len(ids), len(r.tokens), latency)
        for ids, r in ((encoded[i], done[i]) for i in range(n))
    ]


# Arms


@dataclass
class ExampleResult:
    index: int
    """Position of the example in the task."""
    prompt: str
    """The example's own prompt (without the techniques' additions)."""
    reference: str
    answer: str
    score: float
    passed: bool
    detail: str
    prompt_tokens: int
    """Tokens of the whole engineered prompt through the chat template."""
    latency_s: float


@dataclass
class ArmResult:
    """One way of answering a task (a model and a prompt) and how it scored."""

    name: str
    """Short key, e.g. 'base' or 'tuned+prompt'."""
    label: str
    """Name shown in the UI."""
    score: float
    """Mean score over the examples."""
    n: int
    mean_prompt_tokens: float
    mean_latency_s: float
    train_seconds: float
    """Training time behind this arm's model (0 for prompting alone)."""
    techniques: list[str]
    examples: list[ExampleResult]

    def to_dict(self) -> dict:
        return asdict(self)


def max_new_tokens(task: Task, techniques: Sequence[str]) -> int:
    """Room for an answer: one label is a few tokens; reasoning first (chain-of-thought) needs more."""
    kind = _kind(task)
    cot = "cot" in techniques
    if kind == "label":
        return 96 if cot else 12
    if kind == "brand":
        return 160 if cot else 100
    return 160 if cot else 120


@dataclass
class ArmSpec:
    """One arm to answer: a task's examples, prompted with ``techniques`` (``task_spec``) or with a prompt
    someone wrote (``template``: a challenge's prompt submission; each example's input becomes its task and
    its techniques are the template's own)."""

    task: Task
    name: str
    label: str
    techniques: Sequence[str] = ()
    train_seconds: float = 0.0
    template: prompts.PromptSpec | None = None


def run_arms(
    loaded: LoadedModel,
    arms: Sequence[ArmSpec],
    batch_size: int | None = BATCH_SIZE,
    on_progress: Callable[[int, int, int], bool | None] | None = None,
) -> list[ArmResult | None]:
    """Answer every arm's examples in one batched pass through the engine and score the answers; arm by arm,
    each arm's result is the one it gets alone (``run_arm``): its prompts share the prefix they share among
    themselves (``shared_prefix_tokens``), and the engine answers a request alike in any batch.

    Greedy with no repetition penalty: the penalty would push the model away from the labels and brand
    words that few-shot examples and context put in the prompt.

    Args:
        batch_size: prompts in flight together (over all arms, in order: an arm's prompts go in together);
            None: as many as the engine decodes together (``EngineSettings.max_batch``).
        on_progress: called with (arm index, its answers done, its total) after each answer; False drops that
            arm (its prompts cancelled; None in the result).
    """
    if batch_size is None:
        batch_size = engine.get(loaded).settings.max_batch
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise FtvpeError(f"The batch size must be a whole number of at least 1, got {batch_size!r}.")
    owner, messages, settings, prefixes, wanted = [], [], [], [], []
    for a, arm in enumerate(arms):
        techniques = arm.template.enabled if arm.template is not None else arm.techniques
        wanted.append(techniques)
        if arm.template is not None:
            specs = [dataclasses.replace(arm.template, task=e.prompt) for e in arm.task.examples]
        else:
            specs = [task_spec(arm.task, e, techniques) for e in arm.task.examples]
        chats = [prompts.build(spec, loaded.count_tokens).messages for spec in specs]
        limit = max_new_tokens(arm.task, techniques)
        encoded = _encode_all(loaded, chats, [limit] * len(chats))
        prefix = shared_prefix_tokens(encoded) if len(encoded) > 1 else 0
        owner += [a] * len(chats)
        messages += encoded
        settings += [GenerationSettings(max_new_tokens=limit, repetition_penalty=1.0)] * len(chats)
        prefixes += [prefix] * len(chats)
    sizes = Counter(owner)
    counts: Counter = Counter()
    dropped: set[int] = set()

    def on_answer(i: int) -> None:
        arm = owner[i]
        counts[arm] += 1
        if on_progress is not None and on_progress(arm, counts[arm], sizes[arm]) is False:
            dropped.add(arm)

    began = time.perf_counter()
    done = _answer_all(
        loaded,
        messages,
        settings,
        prefixes,
        batch_size,
        on_answer,
        lambda: {i for i, a in enumerate(owner) if a in dropped},
    )
    latency = (time.perf_counter() - began) / max(len(done), 1)
    out: list[ArmResult | None] = []
    first = 0
    for a, arm in enumerate(arms):
        indices = range(first, first + sizes[a])
        first += sizes[a]
        if a in dropped:
            out.append(None)
            continue
        results = []
        for k, (example, i) in enumerate(zip(arm.task.examples, indices)):
            text = loaded.tokenizer.decode(done[i].tokens, skip_special_tokens=True)
            value, detail = score(arm.task, example, text)
            results.append(
                ExampleResult(
                    index=k,
                    prompt=example.prompt,
                    reference=example.response,
                    answer=text,
                    score=value,
                    passed=value >= PASS_MARK[arm.task.metric],
                    detail=detail,
                    prompt_tokens=len(messages[i]),
                    latency_s=latency,
                )
            )
        n = len(results)
        out.append(
            ArmResult(
                name=arm.name,
                label=arm.label,
                score=sum(r.score for r in results) / n if n else 0.0,
                n=n,
                mean_prompt_tokens=sum(r.prompt_tokens for r in results) / n if n else 0.0,
                mean_latency_s=latency if n else 0.0,
                train_seconds=arm.train_seconds,
                techniques=[t for t in prompts.TECHNIQUES if t in wanted[a]],
                examples=results,
            )
        )
    return out


def run_arm(
    loaded: LoadedModel,
    task: Task,
    name: str,
    label: str,
    techniques: Sequence[str] = (),
    train_seconds: float = 0.0,
    batch_size: int = BATCH_SIZE,
    on_progress: Callable[[int, int], None] | None = None,
    template: prompts.PromptSpec | None = None,
) -> ArmResult:
    """Answer every example of the task with the given techniques and score the answers (``run_arms`` for one
    arm; ``template``: a prompt someone wrote, see ``ArmSpec``)."""
    arm = ArmSpec(task, name, label, techniques, train_seconds, template)
    progress = (lambda _a, done, total: on_progress(done, total)) if on_progress else None
    result = run_arms(loaded, [arm], batch_size, progress)[0]
    assert result is not None
    return result


def combinations() -> list[list[str]]:
    """All 16 subsets of prompts.TECHNIQUES, plain prompt first, then by size."""
    return [list(c) for r in range(len(prompts.TECHNIQUES) + 1) for c in itertools.combinations(prompts.TECHNIQUES, r)]


def ablate(
    loaded: LoadedModel,
    task: Task,
    limit: int | None = None,
    batch_size: int = BATCH_SIZE,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Score the task under every combination of techniques.

    Returns:
        16 dicts {"techniques", "score", "mean_prompt_tokens", "n"}, plain prompt first.
        ``on_progress(done, total)`` counts answers over all combinations.
    """
    examples = task.examples[:limit] if limit else task.examples
    sub = Task(task.name, task.title, task.metric, examples, task.labels, task.rules, task.shots)
    combos = combinations()
    total = len(combos) * len(examples)
    out = []
    for n, techniques in enumerate(combos):

        def progress(done: int, _: int, before: int = n * len(examples)) -> None:
            if on_progress:
                on_progress(before + done, total)

        arm = run_arm(loaded, sub, "+".join(techniques) or "plain", "", techniques, 0.0, batch_size, progress)
        out.append(
            {"techniques": techniques, "score": arm.score, "mean_prompt_tokens": arm.mean_prompt_tokens, "n": arm.n}
        )
    return out


def technique_gains(combinations: list[dict]) -> dict[str, float]:
    """Per technique: mean score of the combinations with it minus the mean of those without it.

    A technique missing from every combination, or present in all of them, is left out.
    """
    gains = {}
    for t in prompts.TECHNIQUES:
        with_t = [c["score"] for c in combinations if t in c["techniques"]]
        without = [c["score"] for c in combinations if t not in c["techniques"]]
        if with_t and without:
            gains[t] = sum(with_t) / len(with_t) - sum(without) / len(without)
    return gains
