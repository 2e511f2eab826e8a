"""Datasets for the Fine-Tune Lab: the built-in sets in ``assets/datasets`` and uploaded files.

Parsing an upload is pure: bytes and a file name go in, a :class:`Dataset` comes out, or an
:class:`UploadError` that lists every problem with its line number. Nothing here writes to disk or to the
run store, so a bad upload cannot touch anything already stored; saving a parsed dataset is the store's
job. Token counting is a function passed in: this module loads no tokenizer and no model, and it does not
score answers (the card only names the metric).

Over 600 lines because the built-in datasets, the upload reader with its line-numbered checks and the serialiser
share the Example and Dataset records and their limits; each check is a few lines.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import random
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ftvpe_core import ASSETS_DIR, FtvpeError

SPLITS = ("train", "validation", "test")
TASKS = ("label", "brand", "facts", "custom")
"""What a dataset teaches: one label from a list, a brand's voice, facts, or anything else (uploads)."""
METRICS = ("accuracy", "constraints", "fact_recall", "token_f1")
"""How a dataset's answers are scored (names as in ``evaluate.METRICS``): the exact label, the brand rules kept,
the listed facts found, or word overlap with the reference answer."""
MAX_LABELS = 20
"""A label set has at most this many distinct answers (each of at most LABEL_WORDS words)."""
LABEL_WORDS = 3
BUILTINS = ("support_triage", "brand_voice", "domain_knowledge")
"""The built-in datasets, quickest demo first."""
HELD_BACK_FILE = "challenge.jsonl"
"""Each built-in dataset's held-back set: examples written for class challenges only, in none of its splits."""

MB = 1024 * 1024
MAX_UPLOAD_BYTES = 5 * MB
MAX_ROWS = 5_000
MIN_ROWS = 10
MAX_FIELD_CHARS = 20_000
MAX_SHOWN_PROBLEMS = 20
MAX_NAMED_COLUMNS = 12
"""A message that lists a file's columns names this many, then counts the rest."""
NEWLINE = re.compile(r"\r\n|\r|\n")
"""Line endings: Windows, old Mac and Unix, mixed in one file too (what csv and str.splitlines accept,
without the Unicode separators that may sit inside a JSON string)."""

PROMPT_KEYS = ("prompt", "instruction", "question", "input")
"""Column names accepted for the prompt, in order of preference."""
RESPONSE_KEYS = ("response", "output", "answer", "completion")
"""Column names accepted for the response, in order of preference."""
CHAT_ROLES = ("system", "user", "assistant")

JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv", ".tsv")
BINARY_SUFFIXES = (".xlsx", ".xls", ".ods", ".numbers", ".parquet", ".arrow", ".zip", ".gz", ".pdf", ".docx", ".pkl")
"""Formats people try that are not text; other unknown extensions are sniffed."""

CountTokens = Callable[[str], int]


@dataclass
class Example:
    """One training pair."""

    prompt: str
    """What the user says (the last user message of a chat)."""
    response: str
    """The answer the model should learn to give."""
    facts: list[str] = field(default_factory=list)
    """Short phrases a correct answer must contain (fact recall scoring); empty when not used."""
    system: str = ""
    """A system message that goes with the prompt; empty for none."""

    def to_dict(self) -> dict:
        """The JSONL form: prompt and response, plus facts and system only when set."""
        d: dict = {"prompt": self.prompt, "response": self.response}
        if self.facts:
            d["facts"] = list(self.facts)
        if self.system:
            d["system"] = self.system
        return d


@dataclass
class Dataset:
    """A dataset with its card and its train, validation and test splits."""

    name: str
    """Short identifier, e.g. 'support_triage'."""
    title: str
    """Name shown in the UI."""
    task: str
    """One of TASKS."""
    metric: str
    """One of METRICS."""
    description: str
    """One paragraph: what it teaches, where it came from, its licence."""
    labels: list[str] = field(default_factory=list)
    """The allowed answers of a label task; empty otherwise."""
    rules: dict = field(default_factory=dict)
    """Brand rules (sign_off, max_words, banned_words, preferred_words); empty otherwise."""
    splits: dict[str, list[Example]] = field(default_factory=dict)
    """Examples by split name (SPLITS)."""

    def __post_init__(self) -> None:
        if self.metric == "overlap":  # the name token_f1 had before 2026-12-03, in uploads saved with older runs
            self.metric = "token_f1"

    def sizes(self) -> dict[str, int]:
        return {name: len(self.splits.get(name, [])) for name in SPLITS}

    def all_examples(self) -> list[Example]:
        return [e for name in SPLITS for e in self.splits.get(name, [])]


class UploadError(FtvpeError):
    """An upload that was not accepted. ``problems`` holds every problem found, each a short sentence that
    starts with its line number where it has one; ``str()`` is a one-line summary."""

    def __init__(self, problems: list[str], filename: str = ""):
        self.problems = list(problems)
        self.filename = filename
        super().__init__(self.summary())

    def summary(self) -> str:
        rest = len(self.problems) - 1
        more = f" (and {rest:,} more problem{'s' if rest != 1 else ''})" if rest > 0 else ""
        return f"{self.filename or 'The file'} was not loaded: {self.problems[0]}{more}."

    def shown(self) -> list[str]:
        """The first MAX_SHOWN_PROBLEMS problems, plus a line counting the rest."""
        shown = self.problems[:MAX_SHOWN_PROBLEMS]
        rest = len(self.problems) - len(shown)
        return shown + ([f"... and {rest:,} more"] if rest else [])


# Built-in datasets


def assets_dir() -> Path:
    """The folder that holds the built-in datasets, one subfolder each."""
    return ASSETS_DIR / "datasets"


def builtin_names() -> list[str]:
    """Names of the built-in datasets present on disk, in BUILTINS order, then any others by name."""
    root = assets_dir()
    found = sorted(p.name for p in root.iterdir() if (p / "card.json").is_file()) if root.is_dir() else []
    return [n for n in BUILTINS if n in found] + [n for n in found if n not in BUILTINS]


def _folder(name: str) -> Path:
    names = builtin_names()
    if name not in names:
        raise FtvpeError(f"Unknown dataset '{name}': choose one of {', '.join(names) or '(none installed)'}.")
    return assets_dir() / name


def _jsonl_examples(path: Path) -> list[Example]:
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [Example(r["prompt"], r["response"], list(r.get("facts", [])), r.get("system", "")) for r in rows]


def load_builtin(name: str) -> Dataset:
    """A built-in dataset with its card and all three public splits (never its held-back set)."""
    folder = _folder(name)
    card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    splits = {split: _jsonl_examples(folder / f"{split}.jsonl") for split in SPLITS}
    return Dataset(
        name=card["name"],
        title=card["title"],
        task=card["task"],
        metric=card["metric"],
        description=card["description"],
        labels=list(card.get("labels", [])),
        rules=dict(card.get("rules", {})),
        splits=splits,
    )


def load_held_back(name: str) -> list[Example]:
    """A built-in dataset's held-back set (``HELD_BACK_FILE``): the hidden test of a class challenge on it.

    No page, no CLI listing and no split reads these: only a challenge's scoring and the teacher's reveal
    (``challenges``) do, so no learner can have seen them before or during the challenge. Empty when the
    dataset ships none."""
    path = _folder(name) / HELD_BACK_FILE
    return _jsonl_examples(path) if path.is_file() else []


# Uploads


@dataclass
class _Row:
    where: str
    """'line 7' (JSONL, CSV) or 'item 3' (a JSON array)."""
    values: dict
    from_csv: bool = False
    """CSV cells are always text, so a 'messages' cell holds JSON to decode."""


@dataclass
class _Parsed:
    """Everything learned from a file, whether or not it is acceptable."""

    format: str | None = None
    columns: list[str] = field(default_factory=list)
    rows: int = 0
    """Data rows seen, malformed ones included (blank lines and a CSV header excluded)."""
    examples: list[Example] = field(default_factory=list)
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)


def _kind(value: object) -> str:
    """How a JSON value reads in a message: 'a number', 'a list', ..."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if value is None:
        return "null"
    return "text"


def _size(n: int) -> str:
    if n == MAX_UPLOAD_BYTES:
        return f"{n // MB} MB" if n % MB == 0 else f"{n / MB:.1f} MB"
    # Just over the limit would read "5.0 MB; the limit is 5 MB", so say it in bytes.
    return f"{n:,} bytes" if round(n / MB, 1) <= MAX_UPLOAD_BYTES / MB else f"{n / MB:.1f} MB"


def _format_for(filename: str, text: str) -> str:
    suffix = Path(filename).suffix.lower()
    if suffix in JSON_SUFFIXES:
        return "jsonl"
    if suffix in CSV_SUFFIXES:
        return "csv"
    return "jsonl" if text.lstrip()[:1] in ("{", "[") else "csv"


def _json(text: str) -> tuple[object, str | None]:
    """(value, None), or (None, why it is not JSON we can read). Python's parser raises more than
    JSONDecodeError on hostile input: RecursionError for deep nesting, ValueError for a huge integer."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        return None, f"{e.msg} at column {e.colno}"
    except RecursionError:
        return None, "its lists or objects are nested too deeply"
    except ValueError:  # int("9" * 5000): more digits than Python converts
        return None, f"a number in it has more than {sys.get_int_max_str_digits():,} digits"


def columns_text(columns: list[str]) -> str:
    """'a, b, c', or the first MAX_NAMED_COLUMNS and a count of the rest."""
    rest = len(columns) - MAX_NAMED_COLUMNS
    shown = ", ".join(columns[:MAX_NAMED_COLUMNS]) or "none"
    return shown + (f" and {rest:,} more" if rest > 0 else "")


def _decode(data: bytes, problems: list[str]) -> str | None:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        problems.append("the file is UTF-16 text; save it as UTF-8 and upload it again")
        return None
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        pos = bom + e.start
        line = len(NEWLINE.findall(data[:pos].decode("utf-8", "replace"))) + 1
        problems.append(
            f"the file is not UTF-8 text (byte 0x{data[pos]:02x} at position {pos:,}, line {line}); "
            "save it as UTF-8 and upload it again"
        )
        return None
    if "\x00" in text:
        pos = text.index("\x00")
        problems.append(
            f"the file contains a NUL character at position {pos:,}: it looks like a binary or UTF-16 file; "
            "save it as UTF-8 text"
        )
        return None
    return text


def _json_rows(text: str, parsed: _Parsed) -> list[_Row]:
    stripped = text.lstrip()
    if stripped.startswith("[") or (stripped.startswith("{") and "\n" in stripped.strip()):
        # A whole-file JSON document (a list of objects, or one pretty-printed object) rather than JSONL.
        doc, _ = _json(text)  # not one document: read it line by line below, with line numbers
        if isinstance(doc, list):
            parsed.format = "json"
            parsed.rows = len(doc)
            rows = []
            for i, item in enumerate(doc, 1):
                if isinstance(item, dict):
                    rows.append(_Row(f"item {i}", item))
                else:
                    parsed.problems.append(
                        f"item {i}: expected an object with 'prompt' and 'response', got {_kind(item)}"
                    )
            return rows
        if isinstance(doc, dict):
            parsed.problems.append(
                "the file is one JSON object; expected one object per line (JSONL) or a list of objects"
            )
            return []
    parsed.format = "jsonl"
    rows = []
    for n, raw in enumerate(NEWLINE.split(text), 1):
        line = raw.strip()
        if not line:
            continue
        parsed.rows += 1
        obj, why = _json(line)
        if why is not None:
            parsed.problems.append(f"line {n}: not valid JSON ({why})")
            continue
        if not isinstance(obj, dict):
            parsed.problems.append(
                f'line {n}: expected a JSON object like {{"prompt": ..., "response": ...}}, got {_kind(obj)}'
            )
            continue
        rows.append(_Row(f"line {n}", obj))
    if parsed.rows and not rows and "," in NEWLINE.split(text, 1)[0] and not stripped.startswith(("{", "[")):
        parsed.problems.append("no line is a JSON object: if this is a CSV file, give it a .csv name")
    return rows


def _delimiter(filename: str, text: str) -> str:
    if Path(filename).suffix.lower() == ".tsv":
        return "\t"
    header = NEWLINE.split(text, 1)[0]
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > counts[","] else ","


def _csv_rows(text: str, filename: str, parsed: _Parsed) -> list[_Row]:
    parsed.format = "csv"
    delimiter = _delimiter(filename, text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    rows = []
    broken = False
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            # The reader cannot resynchronise after a quoting error, so stop here.
            if "field larger than field limit" in str(e):
                parsed.problems.append(
                    f"line {start}: a field is longer than {csv.field_size_limit():,} characters (the limit is "
                    f"{MAX_FIELD_CHARS:,}); check for a missing or stray double quote"
                )
            else:
                parsed.problems.append(f"line {start}: not valid CSV ({e}); check for a missing or stray double quote")
            broken = True
            break
        if not any(cell.strip() for cell in record):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in record]
            seen = set()
            for name in header:
                if name and name in seen:
                    parsed.problems.append(f"the header names the column '{name}' twice")
                seen.add(name)
            parsed.columns = [name for name in header if name]
            continue
        parsed.rows += 1
        if len(record) != len(header):
            hint = " (put text that contains the separator in double quotes)" if len(record) > len(header) else ""
            parsed.problems.append(f"line {start}: {len(record)} fields, expected {len(header)}{hint}")
            continue
        rows.append(_Row(f"line {start}", {k: v for k, v in zip(header, record) if k}, from_csv=True))
    if not broken and header is None:
        parsed.problems.append("the file is empty")
    elif not broken and parsed.rows == 0:
        parsed.problems.append("the file has a header but no rows")
    return rows


def _schema(columns: list[str]) -> tuple[str, str] | str | None:
    """(prompt key, response key), or 'messages' for chat rows, or None when the columns don't fit."""
    prompt = next((k for k in PROMPT_KEYS if k in columns), None)
    response = next((k for k in RESPONSE_KEYS if k in columns), None)
    if prompt and response and prompt != response:
        return prompt, response
    if "messages" in columns:
        return "messages"
    return None


def _text(row: _Row, key: str, label: str, problems: list[str], required: bool = True) -> str | None:
    """The text in ``row[key]``, or None after adding a problem; ``label`` names it in messages."""
    if key not in row.values:
        if required:
            problems.append(f"{row.where}: no '{label}'")
        return None
    value = row.values[key]
    if value is None:
        problems.append(f"{row.where}: '{label}' is empty (null)")
        return None
    if not isinstance(value, str):
        problems.append(f"{row.where}: '{label}' must be text, got {_kind(value)}")
        return None
    if required and not value.strip():
        problems.append(f"{row.where}: '{label}' is empty")
        return None
    if len(value) > MAX_FIELD_CHARS:
        problems.append(f"{row.where}: '{label}' is {len(value):,} characters; the limit is {MAX_FIELD_CHARS:,}")
        return None
    return value


def _facts(row: _Row, problems: list[str]) -> list[str] | None:
    facts = row.values.get("facts", [])
    if isinstance(facts, str):  # a CSV cell: several facts separated by '|'
        return [f.strip() for f in facts.split("|") if f.strip()]
    if not isinstance(facts, list) or not all(isinstance(f, str) for f in facts):
        problems.append(f"{row.where}: 'facts' must be a list of short texts")
        return None
    return [f.strip() for f in facts if f.strip()]


def _pair_example(row: _Row, prompt_key: str, response_key: str, problems: list[str]) -> Example | None:
    before = len(problems)
    prompt = _text(row, prompt_key, prompt_key, problems)
    response = _text(row, response_key, response_key, problems)
    extra = _text(row, "input", "input", problems, required=False) if prompt_key == "instruction" else None
    system = _text(row, "system", "system", problems, required=False)
    facts = _facts(row, problems)
    if len(problems) > before or prompt is None or response is None or facts is None:
        return None
    if extra and extra.strip():
        # Alpaca style: the instruction, then its input.
        prompt = f"{prompt.strip()}\n\n{extra.strip()}"
    return Example(prompt.strip(), response.strip(), facts, (system or "").strip())


def _chat_example(row: _Row, problems: list[str]) -> Example | None:
    where = row.where
    messages = row.values.get("messages")
    if "messages" not in row.values:
        problems.append(f"{where}: no 'messages'")
        return None
    if isinstance(messages, str) and row.from_csv:
        messages, why = _json(messages)
        if why is not None:
            problems.append(f"{where}: 'messages' is not valid JSON ({why})")
            return None
    if not isinstance(messages, list) or not messages:
        problems.append(f'{where}: \'messages\' must be a non-empty list of {{"role": ..., "content": ...}} objects')
        return None
    turns = []
    for i, m in enumerate(messages, 1):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            problems.append(f"{where}: message {i} needs a 'role' and a text 'content'")
            return None
        role = m["role"].strip().lower()
        if role not in CHAT_ROLES:
            problems.append(f"{where}: message {i} has role '{m['role']}'; use system, user or assistant")
            return None
        turns.append((role, m["content"]))
    last_assistant = max((i for i, (r, _) in enumerate(turns) if r == "assistant"), default=None)
    if last_assistant is None:
        problems.append(f"{where}: 'messages' has no assistant message")
        return None
    last_user = max((i for i, (r, _) in enumerate(turns[:last_assistant]) if r == "user"), default=None)
    if last_user is None:
        problems.append(f"{where}: 'messages' has no user message before the last assistant message")
        return None
    system = next((c for r, c in turns if r == "system"), "")
    before = len(problems)
    for label, content in (("user message", turns[last_user][1]), ("assistant message", turns[last_assistant][1])):
        if not content.strip():
            problems.append(f"{where}: the last {label} is empty")
        elif len(content) > MAX_FIELD_CHARS:
            problems.append(f"{where}: the {label} is {len(content):,} characters; the limit is {MAX_FIELD_CHARS:,}")
    if len(problems) > before:
        return None
    return Example(turns[last_user][1].strip(), turns[last_assistant][1].strip(), [], system.strip())


def _normalise(text: str) -> str:
    return " ".join(text.casefold().split())


def _position(problem: str) -> int:
    """Sort key that puts problems in file order, whole-file problems first."""
    m = re.match(r"(?:line|item) (\d+):", problem)
    return int(m.group(1)) if m else 0


def _parse(data: bytes, filename: str) -> _Parsed:
    """Read a file as far as it goes, collecting problems instead of raising; problems in file order."""
    parsed = _Parsed()
    _read(data, filename, parsed)
    parsed.problems.sort(key=_position)
    return parsed


def _read(data: bytes, filename: str, parsed: _Parsed) -> None:
    problems = parsed.problems
    if len(data) > MAX_UPLOAD_BYTES:
        problems.append(f"the file is {_size(len(data))}; the limit is {_size(MAX_UPLOAD_BYTES)}")
        return
    if not data.strip() or data.strip() == b"\xef\xbb\xbf":
        problems.append("the file is empty")
        return
    suffix = Path(filename).suffix.lower()
    if suffix in BINARY_SUFFIXES:
        problems.append(
            f"'{suffix}' files are not supported: upload a .jsonl or .csv file (from a spreadsheet, save as CSV UTF-8)"
        )
        return
    text = _decode(data, problems)
    if text is None:
        return
    if _format_for(filename, text) == "csv":
        rows = _csv_rows(text, filename, parsed)
    else:
        rows = _json_rows(text, parsed)
        for row in rows:
            row.values = {str(k).strip().lower(): v for k, v in row.values.items()}
        seen: dict[str, None] = {}
        for row in rows:
            seen.update(dict.fromkeys(row.values))
        parsed.columns = list(seen)
    if parsed.rows > MAX_ROWS:
        parsed.problems[:] = [f"{parsed.rows:,} rows; the limit is {MAX_ROWS:,}"]
        return
    if not rows:
        return
    schema = _schema(parsed.columns)
    if schema is None:
        problems.append(
            f"missing columns: need 'prompt' and 'response' (or 'messages'); found: {columns_text(parsed.columns)}"
        )
        return
    first_seen: dict[str, tuple[str, str]] = {}
    for row in rows:
        if schema == "messages":
            example = _chat_example(row, problems)
        else:
            example = _pair_example(row, schema[0], schema[1], problems)
        if example is None:
            continue
        key = _normalise(example.system) + "\n" + _normalise(example.prompt)
        if key in first_seen:
            where, response = first_seen[key]
            parsed.duplicates += 1
            if response == _normalise(example.response):
                problems.append(f"{row.where}: duplicate of {where}")
            else:
                problems.append(f"{row.where}: same prompt as {where} but a different response")
            continue
        first_seen[key] = (row.where, _normalise(example.response))
        parsed.examples.append(example)
    if not problems and len(parsed.examples) < MIN_ROWS:
        problems.append(
            f"only {len(parsed.examples)} row{'s' if len(parsed.examples) != 1 else ''}; "
            f"at least {MIN_ROWS} are needed to train, validate and test"
        )


def _infer_task(examples: list[Example]) -> tuple[str, str, list[str]]:
    """(task, metric, labels) for uploaded examples."""
    if examples and all(e.facts for e in examples):
        return "facts", "fact_recall", []
    answers = [e.response.strip() for e in examples]
    distinct = label_set(answers)
    # Few short answers, each used several times: a classification task scored by exact match.
    if len(distinct) >= 2 and len(distinct) * 3 <= len(answers):
        return "label", "accuracy", distinct
    return "custom", "token_f1", []


def label_set(answers: Iterable[str]) -> list[str]:
    """The distinct answers, sorted, when they can be a label set (at most MAX_LABELS, each at most LABEL_WORDS
    words); else []. The one rule for "these answers are labels", for uploads and for scoring by accuracy."""
    distinct = sorted({a.strip() for a in answers})
    short = all(len(a.split()) <= LABEL_WORDS for a in distinct)
    return distinct if len(distinct) <= MAX_LABELS and short else []


def parse_upload(data: bytes, filename: str) -> Dataset:
    """Read an uploaded file into a dataset split into train, validation and test.

    Accepted files (at most MAX_UPLOAD_BYTES and MAX_ROWS rows, at least MIN_ROWS):

    - JSONL (``.jsonl``, ``.ndjson``, ``.json``; a ``.json`` file may also be one list of objects) or CSV
      (``.csv``, ``.tsv``; comma, semicolon or tab separated, header row first). Other text files (``.txt``,
      no extension) are sniffed: JSON if they start with ``{`` or ``[``, else CSV.
    - Columns ``prompt`` and ``response``, or the common aliases ``input``/``output``,
      ``instruction``/``output`` (an ``input`` column next to ``instruction`` is appended to the prompt,
      as in Alpaca), ``question``/``answer`` and ``prompt``/``completion``. Optional ``system`` and
      ``facts`` (a list, or ``|``-separated in CSV).
    - Or chat rows with ``messages``: a list of ``{"role", "content"}``. The last assistant message is the
      response, the last user message before it the prompt, and the first system message is kept as
      ``system``; earlier turns are dropped.

    UTF-8 with or without a BOM; LF, CRLF or CR line endings, mixed too; blank lines are skipped. Column
    names ignore case. Two rows with the same prompt (ignoring case and spacing) are an error, so no prompt
    can land in two splits. However a file is made (nested thousands deep, numbers of thousands of digits,
    fields past the csv module's limit), only UploadError comes out.

    Args:
        data: the file's bytes.
        filename: its name; the extension picks the format.

    Returns:
        The dataset, named after the file, split by :func:`auto_split`. A set of a few short answers, each
        used several times, becomes a label task; rows that all have facts become a facts task.

    Raises:
        UploadError: listing every problem found, e.g. ``line 7: not valid JSON (...)``.
    """
    parsed = _parse(data, filename)
    if parsed.problems:
        raise UploadError(parsed.problems, filename)
    task, metric, labels = _infer_task(parsed.examples)
    key = (lambda e: e.response.strip()) if task == "label" else None
    stem = Path(filename).stem
    return Dataset(
        name=re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_") or "upload",
        title=stem or "Upload",
        task=task,
        metric=metric,
        description=f"Uploaded from {filename}: {len(parsed.examples):,} examples.",
        labels=labels,
        splits=auto_split(parsed.examples, key=key),
    )


def auto_split(
    examples: list[Example],
    seed: int = 0,
    validation: float = 0.15,
    test: float = 0.2,
    key: Callable[[Example], str] | None = None,
) -> dict[str, list[Example]]:
    """Deterministic train/validation/test split.

    Args:
        examples: at least 3.
        seed: the same seed and examples always give the same split.
        validation, test: the fractions to hold out; each split gets at least one example.
        key: optional group of each example (e.g. its label); every group is then shared out across the
            splits in proportion, so a label with enough examples appears in all three.

    Returns:
        {'train': [...], 'validation': [...], 'test': [...]}, each in the input order.
    """
    if not (0 < validation < 1 and 0 < test < 1 and validation + test < 1):
        raise FtvpeError(
            f"The validation and test fractions must each be between 0 and 1 and add up to less than 1, "
            f"got {validation} and {test}."
        )
    n = len(examples)
    if n < 3:
        raise FtvpeError(f"At least 3 examples are needed for train, validation and test; got {n}.")
    n_test, n_val = max(1, round(n * test)), max(1, round(n * validation))
    while n_test + n_val > n - 1:  # keep at least one training example
        if n_test >= n_val:
            n_test -= 1
        else:
            n_val -= 1
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        groups.setdefault(key(e) if key else "", []).append(i)
    rng = random.Random(seed)
    for members in groups.values():
        rng.shuffle(members)
    held = {"test": _shares(groups, n_test, n), "validation": _shares(groups, n_val, n)}
    chosen: dict[str, set[int]] = {"train": set(), "validation": set(), "test": set()}
    for g, members in groups.items():
        t, v = held["test"][g], held["validation"][g]
        chosen["test"].update(members[:t])
        chosen["validation"].update(members[t : t + v])
        chosen["train"].update(members[t + v :])
    return {split: [examples[i] for i in sorted(chosen[split])] for split in SPLITS}


def _shares(groups: dict[str, list[int]], total: int, n: int) -> dict[str, int]:
    """Split ``total`` across groups in proportion to their sizes (largest remainder)."""
    exact = {g: len(m) * total / n for g, m in groups.items()}
    counts = {g: int(x) for g, x in exact.items()}
    for g in sorted(exact, key=lambda g: exact[g] - counts[g], reverse=True)[: total - sum(counts.values())]:
        counts[g] += 1
    return counts


def read_file(path: str | Path) -> bytes:
    """A dataset file's bytes; FtvpeError when it is missing, a folder, unreadable, or over the upload
    limit (said before reading it, so a huge file is not read whole)."""
    path = Path(path)
    if path.is_dir():
        raise FtvpeError(f"No such file: {path} is a folder; name a JSONL or CSV file in it.")
    if not path.is_file():
        raise FtvpeError(f"No such file: {path}")
    try:
        size = path.stat().st_size
        if size > MAX_UPLOAD_BYTES:
            raise FtvpeError(f"{path} is {_size(size)}; the limit for a dataset file is {_size(MAX_UPLOAD_BYTES)}.")
        return path.read_bytes()
    except OSError as e:
        raise FtvpeError(f"Could not read {path}: {e.strerror or e}.") from e


def is_builtin(name_or_file: str) -> bool:
    """Whether ``name_or_file`` names a built-in dataset (hyphens for underscores allowed) and no file."""
    return name_or_file.replace("-", "_") in builtin_names() and not Path(name_or_file).is_file()


def load(name_or_file: str, what: str = "dataset") -> Dataset:
    """A built-in dataset by name, or a JSONL/CSV file parsed and split as an upload is.

    Args:
        what: the word for it in the error when it is neither ('dataset', 'task').
    """
    if is_builtin(name_or_file):
        return load_builtin(name_or_file.replace("-", "_"))
    path = Path(name_or_file)
    if not path.is_file():
        raise FtvpeError(f"No {what} '{name_or_file}': use one of {', '.join(builtin_names())} or a JSONL/CSV file.")
    return parse_upload(read_file(path), path.name)


def check_file(path: str | Path) -> dict:
    """What an upload of this file would find, without raising for its content (for ``datasets check``).

    Returns:
        {'file', 'format', 'rows', 'examples', 'columns', 'duplicates', 'problems', 'ok'}: rows counts data
        rows seen (malformed ones too), examples the rows that parsed, problems every problem found.
    """
    path = Path(path)
    parsed = _parse(read_file(path), path.name)
    return {
        "file": str(path),
        "format": parsed.format,
        "rows": parsed.rows,
        "examples": len(parsed.examples),
        "columns": parsed.columns,
        "duplicates": parsed.duplicates,
        "problems": parsed.problems,
        "ok": not parsed.problems,
    }


def token_lengths(examples: Iterable[Example], count_tokens: CountTokens) -> dict[str, list[int]]:
    """Token counts per example for a histogram: {'prompt': [...], 'response': [...], 'total': [...]}.

    The prompt count includes the system message; chat-template tokens are not counted.
    """
    out: dict[str, list[int]] = {"prompt": [], "response": [], "total": []}
    for e in examples:
        p = count_tokens(e.prompt) + (count_tokens(e.system) if e.system else 0)
        r = count_tokens(e.response)
        out["prompt"].append(p)
        out["response"].append(r)
        out["total"].append(p + r)
    return out


def to_dict(dataset: Dataset) -> dict:
    """A dataset as JSON-ready data (``from_dict`` reads it back): how an upload is kept with its run or challenge."""
    d = dataclasses.asdict(dataset)
    d["splits"] = {name: [e.to_dict() for e in examples] for name, examples in dataset.splits.items()}
    return d


def from_dict(d: dict) -> Dataset:
    """The dataset ``to_dict`` wrote."""
    d = dict(d)
    d["splits"] = {name: [Example(**e) for e in rows] for name, rows in d["splits"].items()}
    return Dataset(**d)
