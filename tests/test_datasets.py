"""Datasets: the built-in sets keep their promises, uploads parse or fail with specific messages, splits."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from ftvpe_core import FtvpeError
from ftvpe_core.tasks import datasets
from ftvpe_core.tasks.datasets import Example, UploadError

MIN_SIZES = {"train": 150, "validation": 30, "test": 40}
TRIAGE_LABELS = ["billing", "shipping", "technical", "account"]


def normalised(text: str) -> str:
    return " ".join(text.casefold().split())


def bare(text: str) -> str:
    """Lower case, letters and digits only: catches near-duplicates that differ in punctuation."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.casefold()).split())


def words(text: str) -> list[str]:
    return text.split()


# Built-in datasets


@pytest.fixture(scope="module")
def builtins() -> dict[str, datasets.Dataset]:
    return {name: datasets.load_builtin(name) for name in datasets.builtin_names()}


def test_the_three_builtins_are_listed_quick_demo_first():
    assert datasets.builtin_names() == ["support_triage", "brand_voice", "domain_knowledge"]


def test_unknown_builtin_names_the_valid_ones():
    with pytest.raises(FtvpeError, match="Unknown dataset 'nope': choose one of support_triage, brand_voice"):
        datasets.load_builtin("nope")


@pytest.mark.parametrize("name", datasets.BUILTINS)
def test_builtin_has_required_split_sizes(builtins, name):
    sizes = builtins[name].sizes()
    for split, minimum in MIN_SIZES.items():
        assert sizes[split] >= minimum, (split, sizes)


@pytest.mark.parametrize("name", datasets.BUILTINS)
def test_builtin_card_is_complete(builtins, name):
    ds = builtins[name]
    card = json.loads((datasets.assets_dir() / name / "card.json").read_text(encoding="utf-8"))
    assert ds.name == name and ds.title
    assert ds.task in datasets.TASKS and ds.metric in datasets.METRICS
    assert "FT vs PE Studio" in ds.description and "CC0-1.0" in ds.description
    assert card["sizes"] == ds.sizes()


@pytest.mark.parametrize("name", datasets.BUILTINS)
@pytest.mark.parametrize("norm", [str, normalised, bare], ids=["exact", "case-space", "punctuation"])
def test_builtin_splits_share_no_prompt(builtins, name, norm):
    seen: dict[str, str] = {}
    for split, examples in builtins[name].splits.items():
        for e in examples:
            key = norm(e.prompt)
            assert key not in seen, f"{e.prompt!r} is in {seen[key]} and {split}"
            seen[key] = split


@pytest.mark.parametrize("name", datasets.BUILTINS)
def test_builtin_prompts_and_responses_are_short_and_non_empty(builtins, name):
    for e in builtins[name].all_examples():
        assert e.prompt.strip() and e.response.strip()
        assert len(words(e.response)) <= 60, e.response


@pytest.mark.parametrize("name", datasets.BUILTINS)
def test_builtin_wording_varies(builtins, name):
    train = builtins[name].splits["train"]
    openings = {" ".join(normalised(e.prompt).split()[:3]) for e in train}
    assert len(openings) >= 0.4 * len(train), f"{len(openings)} distinct openings in {len(train)} rows"
    lengths = {len(words(e.prompt)) for e in train}
    assert len(lengths) >= 10, "prompts should not all be the same length"


def test_builtins_stay_small():
    total = sum(p.stat().st_size for p in datasets.assets_dir().rglob("*") if p.is_file())
    assert total < 1_000_000


def test_triage_answers_are_labels_and_every_label_is_in_every_split(builtins):
    ds = builtins["support_triage"]
    assert ds.labels == TRIAGE_LABELS and ds.metric == "accuracy"
    for split, examples in ds.splits.items():
        assert {e.response for e in examples} == set(TRIAGE_LABELS), split


def test_brand_voice_answers_keep_the_card_rules(builtins):
    ds = builtins["brand_voice"]
    rules = ds.rules
    assert set(rules) == {"sign_off", "max_words", "banned_words", "preferred_words"}
    for e in ds.all_examples():
        text = e.response
        assert text.endswith(rules["sign_off"]), text
        assert len(words(text)) <= rules["max_words"], text
        for banned in rules["banned_words"]:
            assert not re.search(rf"\b{re.escape(banned)}", text, re.IGNORECASE), (banned, text)
        assert any(p.lower() in text.lower() for p in rules["preferred_words"]), text


def test_domain_knowledge_answers_contain_their_facts(builtins):
    ds = builtins["domain_knowledge"]
    assert ds.metric == "fact_recall"
    for e in ds.all_examples():
        assert e.facts, e.prompt
        for fact in e.facts:
            assert fact.lower() in e.response.lower(), (fact, e.response)


def test_domain_knowledge_tests_facts_that_training_teaches(builtins):
    ds = builtins["domain_knowledge"]
    taught = {f.lower() for e in ds.splits["train"] for f in e.facts}
    for split in ("validation", "test"):
        for e in ds.splits[split]:
            assert {f.lower() for f in e.facts} <= taught, e.prompt


@pytest.mark.parametrize("name", datasets.BUILTINS)
def test_builtin_files_are_valid_uploads(name):
    data = (datasets.assets_dir() / name / "train.jsonl").read_bytes()
    ds = datasets.parse_upload(data, "train.jsonl")
    assert len(ds.all_examples()) == datasets.load_builtin(name).sizes()["train"]
    expected_task = {"support_triage": "label", "brand_voice": "custom", "domain_knowledge": "facts"}[name]
    assert ds.task == expected_task


# Uploads: helpers


def pairs(n: int, start: int = 0) -> list[dict]:
    return [{"prompt": f"Question number {i}?", "response": f"Answer {i}."} for i in range(start, start + n)]


def jsonl(rows: list, sep: str = "\n") -> bytes:
    return sep.join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode("utf-8") + sep.encode()


def good_rows_with(line: int, bad: str, n: int = 12) -> bytes:
    """n good JSONL rows with line ``line`` (1-based) replaced by ``bad``."""
    rows: list = pairs(n)
    rows[line - 1] = bad
    return jsonl(rows)


def csv_bytes(header: str, rows: list[str], sep: str = "\n") -> bytes:
    return (sep.join([header, *rows]) + sep).encode("utf-8")


def chat(user: str, assistant: str | None, system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": user})
    if assistant is not None:
        messages.append({"role": "assistant", "content": assistant})
    return {"messages": messages}


def non_utf8() -> bytes:
    data = jsonl(pairs(12))
    cut = data.index(b"Question number 3")
    return data[:cut] + b"\x92" + data[cut:]


MALFORMED = [
    (b"", "a.jsonl", "the file is empty"),
    (b"\n  \n\r\n", "a.jsonl", "the file is empty"),
    (b"\xef\xbb\xbf\n", "a.csv", "the file is empty"),
    (non_utf8(), "a.jsonl", "the file is not UTF-8 text (byte 0x92 at position"),
    ('{"prompt": "hi"}\n'.encode("utf-16"), "a.jsonl", "the file is UTF-16 text"),
    (b"x" * int(6.2 * datasets.MB), "big.jsonl", "the file is 6.2 MB; the limit is 5 MB"),
    (jsonl(pairs(7012)), "many.jsonl", "7,012 rows; the limit is 5,000"),
    (
        good_rows_with(7, '{"prompt": "a" "response": "b"}'),
        "a.jsonl",
        "line 7: not valid JSON (Expecting ',' delimiter",
    ),
    (good_rows_with(3, '["a question", "an answer"]'), "a.jsonl", "line 3: expected a JSON object"),
    (good_rows_with(3, '{"prompt": "Why?", "response": "  "}'), "a.jsonl", "line 3: 'response' is empty"),
    (good_rows_with(3, '{"prompt": "Why?", "response": null}'), "a.jsonl", "line 3: 'response' is empty (null)"),
    (good_rows_with(4, '{"prompt": "Why?"}'), "a.jsonl", "line 4: no 'response'"),
    (good_rows_with(12, json.dumps(pairs(1, 3)[0])), "a.jsonl", "line 12: duplicate of line 4"),
    (
        good_rows_with(9, '{"prompt": "question  NUMBER 1?", "response": "Something else."}'),
        "a.jsonl",
        "line 9: same prompt as line 2 but a different response",
    ),
    (
        jsonl([{"text": "a", "label": "b"}] * 12),
        "a.jsonl",
        "missing columns: need 'prompt' and 'response' (or 'messages'); found: text, label",
    ),
    (csv_bytes("text,label", [f"t{i},l{i}" for i in range(12)]), "a.csv", "found: text, label"),
    (
        jsonl(
            [chat(f"q{i}", f"a{i}") for i in range(8)] + [chat("Hello?", None)] + [chat(f"r{i}", "b") for i in range(3)]
        ),
        "a.jsonl",
        "line 9: 'messages' has no assistant message",
    ),
    (
        jsonl([chat(f"q{i}", f"a{i}") for i in range(11)] + [{"messages": "hello"}]),
        "a.jsonl",
        "line 12: 'messages' must be a non-empty list",
    ),
    (
        jsonl([chat(f"q{i}", f"a{i}") for i in range(11)] + [{"messages": [{"role": "tool", "content": "x"}]}]),
        "a.jsonl",
        "line 12: message 1 has role 'tool'",
    ),
    (
        csv_bytes("prompt,response", [f"q{i},a{i}" for i in range(3)] + ["q, with comma,a"]),
        "a.csv",
        "line 5: 3 fields, expected 2",
    ),
    (good_rows_with(6, '{"prompt": 42, "response": "b"}'), "a.jsonl", "line 6: 'prompt' must be text, got a number"),
    (good_rows_with(6, '{"prompt": "a", "response": ["b"]}'), "a.jsonl", "line 6: 'response' must be text, got a list"),
    (
        good_rows_with(8, json.dumps({"prompt": "x" * 25_000, "response": "b"})),
        "a.jsonl",
        "line 8: 'prompt' is 25,000 characters; the limit is 20,000",
    ),
    (jsonl(pairs(5)), "a.jsonl", "only 5 rows; at least 10 are needed"),
    (csv_bytes("prompt,response", []), "a.csv", "the file has a header but no rows"),
    (csv_bytes("prompt,prompt,response", ["a,b,c"] * 12), "a.csv", "names the column 'prompt' twice"),
    (csv_bytes("prompt,response", [f"q{i},a{i}" for i in range(11)] + [",a"]), "a.csv", "line 13: 'prompt' is empty"),
    (csv_bytes("prompt,response", ["q1,a1", '"unclosed,a2']), "a.csv", "line 3: not valid CSV"),
    (b"PK\x03\x04 spreadsheet", "sheet.xlsx", "'.xlsx' files are not supported"),
    (b'{\n  "prompt": "a",\n  "response": "b"\n}\n', "a.json", "the file is one JSON object"),
    (csv_bytes("prompt,response", [f"q{i},a{i}" for i in range(12)]), "a.jsonl", "if this is a CSV file"),
    (b'{"prompt": "a\x00b", "response": "c"}\n', "a.jsonl", "NUL character"),
]


@pytest.mark.parametrize(("data", "filename", "expected"), MALFORMED, ids=[m[2][:40] for m in MALFORMED])
def test_malformed_upload_is_refused_with_a_specific_message(data, filename, expected):
    with pytest.raises(UploadError) as info:
        datasets.parse_upload(data, filename)
    assert any(expected in p for p in info.value.problems), info.value.problems


DEEP = "[" * 5000 + "]" * 5000
"""Nested past Python's recursion limit: json.loads raises RecursionError, not JSONDecodeError."""
HUGE_INT = "9" * 5000
"""More digits than Python converts to an int (sys.get_int_max_str_digits): json.loads raises ValueError."""
HOSTILE = [
    (good_rows_with(5, DEEP), "deep.jsonl", "line 5: not valid JSON (its lists or objects are nested too deeply)"),
    (good_rows_with(5, '{"prompt": ' + DEEP + ', "response": "b"}'), "deep-value.jsonl", "line 5: not valid JSON"),
    (DEEP.encode(), "deep.json", "line 1: not valid JSON (its lists or objects are nested too deeply)"),
    (
        csv_bytes("messages", [f'"{DEEP}"'] * 12),
        "deep.csv",
        "line 2: 'messages' is not valid JSON (its lists or objects are nested too deeply)",
    ),
    (
        good_rows_with(3, '{"prompt": ' + HUGE_INT + ', "response": "b"}'),
        "huge-int.jsonl",
        "line 3: not valid JSON (a number in it has more than 4,300 digits)",
    ),
    (f"[{HUGE_INT}]".encode(), "huge-int.json", "line 1: not valid JSON (a number in it has more than"),
    (
        good_rows_with(4, '{"prompt": 1e999, "response": "b"}'),
        "inf.jsonl",
        "line 4: 'prompt' must be text, got a number",
    ),
    (good_rows_with(4, '{"prompt": NaN, "response": "b"}'), "nan.jsonl", "line 4: 'prompt' must be text, got a number"),
    (
        good_rows_with(4, '{"prompt": "a", "response": -Infinity}'),
        "inf.jsonl",
        "line 4: 'response' must be text, got a number",
    ),
    (
        csv_bytes(",".join(f"c{i}" for i in range(10_000)), [",".join("v" * 10_000)] * 12),
        "wide.csv",
        "found: c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11 and 9,988 more",
    ),
    (
        csv_bytes("prompt,response", [f"q{i},a{i}" for i in range(12)] + ["q," + "a" * 200_000]),
        "long-field.csv",
        "line 14: a field is longer than 131,072 characters (the limit is 20,000)",
    ),
    (
        csv_bytes("prompt,response", [f"q{i},a{i}" for i in range(12)] + ['q,"' + "a" * 200_000 + '"']),
        "long-quoted-field.csv",
        "line 14: a field is longer than 131,072 characters",
    ),
    (
        jsonl(pairs(12)).replace(b"Question number 3", b"\xff\xfeQuestion"),
        "bad-utf8.jsonl",
        "line 4); save it as UTF-8",
    ),
    (jsonl(pairs(12), sep="\r").replace(b"Question number 3", b"\xc3("), "bad-utf8-cr.jsonl", "line 4); save it"),
    (jsonl(pairs(12)) + b"\x00", "nul.jsonl", "the file contains a NUL character"),
]


@pytest.mark.parametrize(("data", "filename", "expected"), HOSTILE, ids=[h[1] for h in HOSTILE])
def test_hostile_upload_is_refused_with_a_line_numbered_problem_not_a_crash(data, filename, expected):
    """Only UploadError comes out, however the file was made; check_file reports the same problems."""
    with pytest.raises(UploadError) as info:
        datasets.parse_upload(data, filename)
    assert any(expected in p for p in info.value.problems), info.value.problems
    assert len(str(info.value)) < 400, "one readable line"


def test_hostile_upload_is_refused_by_check_file_too(tmp_path):
    for data, filename, expected in HOSTILE:
        path = tmp_path / filename
        path.write_bytes(data)
        report = datasets.check_file(path)
        assert not report["ok"] and any(expected in p for p in report["problems"]), (filename, report["problems"])


def test_upload_error_is_one_readable_line_and_keeps_every_problem():
    rows: list = pairs(40)
    for i in range(0, 40, 2):
        rows[i] = "{oops"
    rows.extend(["[1, 2]"] * 5)
    with pytest.raises(UploadError) as info:
        datasets.parse_upload(jsonl(rows), "bad.jsonl")
    err = info.value
    assert len(err.problems) == 25
    assert "\n" not in str(err)
    assert str(err).startswith("bad.jsonl was not loaded: line 1: not valid JSON")
    assert str(err).endswith("(and 24 more problems).")
    shown = err.shown()
    assert len(shown) == datasets.MAX_SHOWN_PROBLEMS + 1 and shown[-1] == "... and 5 more"
    assert isinstance(err, FtvpeError)


def test_a_refused_upload_writes_nothing(tmp_path):
    home = Path(os.environ["FTVPE_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "kept.txt").write_text("already stored")
    before = sorted(p.relative_to(home) for p in home.rglob("*"))
    for data, filename, _ in MALFORMED[:8]:
        with pytest.raises(UploadError):
            datasets.parse_upload(data, filename)
    datasets.parse_upload(jsonl(pairs(12)), "good.jsonl")
    assert sorted(p.relative_to(home) for p in home.rglob("*")) == before
    assert (home / "kept.txt").read_text() == "already stored"


# Uploads: accepted files


def parsed_examples(data: bytes, filename: str) -> list[Example]:
    ds = datasets.parse_upload(data, filename)
    return sorted(ds.all_examples(), key=lambda e: e.prompt)


def expected_pairs(n: int) -> list[Example]:
    return sorted((Example(r["prompt"], r["response"]) for r in pairs(n)), key=lambda e: e.prompt)


def test_jsonl_upload_parses_to_its_rows():
    ds = datasets.parse_upload(jsonl(pairs(12)), "My Data.jsonl")
    assert sorted(ds.all_examples(), key=lambda e: e.prompt) == expected_pairs(12)
    assert ds.name == "my_data" and ds.title == "My Data"
    assert ds.task == "custom" and ds.metric == "token_f1"
    assert sum(ds.sizes().values()) == 12


@pytest.mark.parametrize(
    ("data", "filename"),
    [
        (b"\xef\xbb\xbf" + jsonl(pairs(12)), "bom.jsonl"),
        (jsonl(pairs(12), sep="\r\n"), "crlf.jsonl"),
        (jsonl(pairs(12), sep="\r"), "cr.jsonl"),
        (b"".join(jsonl([row], sep=("\r\n", "\r", "\n")[i % 3]) for i, row in enumerate(pairs(12))), "mixed.jsonl"),
        (
            b"\xef\xbb\xbf"
            + b"".join(jsonl([row], sep=("\n", "\r", "\r\n")[i % 3]) for i, row in enumerate(pairs(12))),
            "bom-mixed.jsonl",
        ),
        (
            b"prompt,response\r"
            + b"".join((f"Question number {i}?,Answer {i}." + ("\r\n", "\r", "\n")[i % 3]).encode() for i in range(12)),
            "mixed.csv",
        ),
        (
            csv_bytes(
                "prompt,response," + ",".join(f"extra{i}" for i in range(9_998)),
                [f"Question number {i}?,Answer {i}." + ",x" * 9_998 for i in range(12)],
            ),
            "10000-columns.csv",
        ),
        (jsonl([{**row, "score": float("nan"), "big": 1e308} for row in pairs(12)]), "nan-in-other-column.jsonl"),
        (b"\n\n" + jsonl(pairs(6)) + b"\n   \n" + jsonl(pairs(6, 6)) + b"\n\n", "blank-lines.jsonl"),
        (json.dumps(pairs(12), indent=2).encode(), "array.json"),
        (jsonl(pairs(12)), "no-extension"),
        (csv_bytes("prompt,response", [f"Question number {i}?,Answer {i}." for i in range(12)]), "a.csv"),
        (
            b"\xef\xbb\xbf"
            + csv_bytes("Prompt,Response", [f"Question number {i}?,Answer {i}." for i in range(12)], "\r\n"),
            "bom-crlf.csv",
        ),
        (csv_bytes("prompt;response", [f"Question number {i}?;Answer {i}." for i in range(12)]), "semicolon.csv"),
        (csv_bytes("prompt\tresponse", [f"Question number {i}?\tAnswer {i}." for i in range(12)]), "tabs.tsv"),
        (csv_bytes("prompt,response", [f"Question number {i}?,Answer {i}." for i in range(12)]), "sniffed.txt"),
    ],
)
def test_accepted_encodings_and_layouts_give_the_same_examples(data, filename):
    assert parsed_examples(data, filename) == expected_pairs(12)


@pytest.mark.parametrize(
    ("prompt_key", "response_key"),
    [
        ("input", "output"),
        ("instruction", "output"),
        ("question", "answer"),
        ("prompt", "completion"),
        ("PROMPT", "Response"),
    ],
)
def test_column_aliases_are_accepted(prompt_key, response_key):
    rows = [{prompt_key: r["prompt"], response_key: r["response"]} for r in pairs(12)]
    assert parsed_examples(jsonl(rows), "a.jsonl") == expected_pairs(12)


def test_alpaca_input_is_appended_to_the_instruction():
    rows = [
        {"instruction": f"Translate item {i}.", "input": "Bonjour" if i == 0 else "", "output": f"t{i}"}
        for i in range(12)
    ]
    examples = datasets.parse_upload(jsonl(rows), "alpaca.jsonl").all_examples()
    prompts = {e.prompt for e in examples}
    assert "Translate item 0.\n\nBonjour" in prompts and "Translate item 1." in prompts


def test_csv_quoted_commas_quotes_and_newlines_survive():
    rows = [f'"Hello, world {i}","She said ""hi""\nthen left."' for i in range(12)]
    examples = parsed_examples(csv_bytes("prompt,response", rows), "a.csv")
    assert examples[0] == Example("Hello, world 0", 'She said "hi"\nthen left.')


def test_csv_line_numbers_count_physical_lines():
    rows = ['"multi\nline",a'] + [f"q{i},a{i}" for i in range(10)] + ["bad,row,here"]
    with pytest.raises(UploadError) as info:
        datasets.parse_upload(csv_bytes("prompt,response", rows), "a.csv")
    assert info.value.problems == [
        "line 14: 3 fields, expected 2 (put text that contains the separator in double quotes)"
    ]


def test_chat_messages_use_the_last_user_and_assistant_turns_and_keep_the_system():
    rows = [
        {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "First question"},
                {"role": "assistant", "content": "First answer"},
                {"role": "user", "content": f"Real question {i}"},
                {"role": "assistant", "content": f"Real answer {i}"},
            ]
        }
        for i in range(12)
    ]
    examples = parsed_examples(jsonl(rows), "chat.jsonl")
    assert examples[0] == Example("Real question 0", "Real answer 0", [], "You are terse.")
    assert len(examples) == 12


def test_chat_rows_can_end_with_an_unanswered_user_turn():
    row = chat("q", "a")
    row["messages"].append({"role": "user", "content": "follow-up"})
    rows = [row] + [chat(f"q{i}", f"a{i}") for i in range(11)]
    examples = datasets.parse_upload(jsonl(rows), "chat.jsonl").all_examples()
    assert Example("q", "a") in examples


def test_same_prompt_with_a_different_system_message_is_not_a_duplicate():
    rows = [chat("Hello", "Hi!", "Be warm."), chat("Hello", "Hello.", "Be formal.")] + [
        chat(f"q{i}", f"a{i}") for i in range(10)
    ]
    assert len(datasets.parse_upload(jsonl(rows), "chat.jsonl").all_examples()) == 12


def test_a_labelled_upload_becomes_a_label_task_with_every_label_in_every_split():
    rows = [{"prompt": f"message {i}", "response": TRIAGE_LABELS[i % 4]} for i in range(40)]
    ds = datasets.parse_upload(jsonl(rows), "tickets.jsonl")
    assert ds.task == "label" and ds.metric == "accuracy"
    assert ds.labels == sorted(TRIAGE_LABELS)
    for split, examples in ds.splits.items():
        assert {e.response for e in examples} == set(TRIAGE_LABELS), split


def test_facts_are_read_from_jsonl_lists_and_csv_cells():
    rows = [{"prompt": f"q{i}", "response": f"It is {i} kWh.", "facts": [f"{i} kWh"]} for i in range(12)]
    ds = datasets.parse_upload(jsonl(rows), "facts.jsonl")
    assert ds.task == "facts" and all(e.facts == [e.response[6:-1]] for e in ds.all_examples())
    csv_ds = datasets.parse_upload(
        csv_bytes("prompt,response,facts", [f"q{i},a{i},x{i} | y{i}" for i in range(12)]), "f.csv"
    )
    assert sorted(e.facts for e in csv_ds.all_examples())[0] == ["x0", "y0"]


# Splitting, checking, token lengths


def numbered(n: int) -> list[Example]:
    return [Example(f"p{i}", f"r{i}") for i in range(n)]


def test_auto_split_is_deterministic_and_covers_every_example_once():
    examples = numbered(100)
    first = datasets.auto_split(examples, seed=3)
    assert first == datasets.auto_split(examples, seed=3)
    assert first != datasets.auto_split(examples, seed=4)
    assert {k: len(v) for k, v in first.items()} == {"train": 65, "validation": 15, "test": 20}
    prompts = [e.prompt for split in first.values() for e in split]
    assert sorted(prompts) == sorted(e.prompt for e in examples)


@pytest.mark.parametrize("n", [3, 4, 5, 10])
def test_tiny_sets_still_get_a_validation_and_a_test_example(n):
    sizes = {k: len(v) for k, v in datasets.auto_split(numbered(n)).items()}
    assert sizes["validation"] >= 1 and sizes["test"] >= 1 and sizes["train"] >= 1
    assert sum(sizes.values()) == n


def test_auto_split_keeps_input_order_within_each_split():
    for examples in datasets.auto_split(numbered(50), seed=1).values():
        indices = [int(e.prompt[1:]) for e in examples]
        assert indices == sorted(indices)


@pytest.mark.parametrize(
    ("n", "validation", "test", "message"),
    [(2, 0.15, 0.2, "At least 3"), (10, 0.5, 0.5, "less than 1"), (10, 0, 0.2, "between 0 and 1")],
)
def test_auto_split_refuses_what_it_cannot_do(n, validation, test, message):
    with pytest.raises(FtvpeError, match=message):
        datasets.auto_split(numbered(n), validation=validation, test=test)


def test_check_file_reports_rows_columns_duplicates_and_problems(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_bytes(jsonl(pairs(12)))
    report = datasets.check_file(good)
    assert report == {
        "file": str(good),
        "format": "jsonl",
        "rows": 12,
        "examples": 12,
        "columns": ["prompt", "response"],
        "duplicates": 0,
        "problems": [],
        "ok": True,
    }
    bad = tmp_path / "bad.csv"
    bad.write_bytes(csv_bytes("prompt,response,source", [f"q{i},a{i},web" for i in range(10)] + ["q1,a1,web", "q2,a2"]))
    report = datasets.check_file(bad)
    assert report["ok"] is False and report["format"] == "csv"
    assert report["rows"] == 12 and report["duplicates"] == 1
    assert report["columns"] == ["prompt", "response", "source"]
    assert report["problems"] == ["line 12: duplicate of line 3", "line 13: 2 fields, expected 3"]


def test_check_file_on_a_missing_file_says_so(tmp_path):
    with pytest.raises(FtvpeError, match="No such file"):
        datasets.check_file(tmp_path / "missing.jsonl")


def test_token_lengths_counts_prompt_with_system_and_response():
    examples = [Example("one two three", "four"), Example("a b", "c d e", system="be brief")]
    lengths = datasets.token_lengths(examples, lambda t: len(t.split()))
    assert lengths == {"prompt": [3, 4], "response": [1, 3], "total": [4, 7]}
    assert datasets.token_lengths([], len) == {"prompt": [], "response": [], "total": []}


def test_example_to_dict_omits_empty_optional_fields():
    assert Example("p", "r").to_dict() == {"prompt": "p", "response": "r"}
    assert Example("p", "r", ["f"], "s").to_dict() == {"prompt": "p", "response": "r", "facts": ["f"], "system": "s"}


@pytest.mark.parametrize(
    "argv",
    [
        ["datasets", "check", "{f}"],
        ["finetune", "--dataset", "{f}"],
        ["compare", "--task", "{f}"],
        ["ablate", "--task", "{f}"],
    ],
)
@pytest.mark.parametrize("trouble", ["unreadable", "huge", "folder"])
def test_a_dataset_file_that_cannot_be_read_is_one_line_in_every_command(tmp_path, monkeypatch, capsys, argv, trouble):
    from ftvpe_core import cli

    path = tmp_path / "data.jsonl"
    if trouble == "folder":
        path = tmp_path / "folder.jsonl"
        path.mkdir()
        words = "No dataset" if argv[0] == "finetune" else "No such file" if argv[0] == "datasets" else "No task"
    elif trouble == "huge":
        with open(path, "wb") as f:
            f.truncate(2 * 1024**3)  # sparse: 2 GB that must not be read to be refused
        words = "is 2048.0 MB; the limit for a dataset file is 5 MB"
    else:
        path.write_bytes(jsonl(pairs(12)))
        real = Path.read_bytes

        def denied(self):
            if self == path:
                raise PermissionError(13, "Permission denied")
            return real(self)

        monkeypatch.setattr(Path, "read_bytes", denied)  # root reads any file, so chmod cannot show it
        words = f"Could not read {path}: Permission denied."
    code = cli.main([a.format(f=path) for a in argv])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert (code, out) == (2, "") and len(lines) == 1 and words in lines[0], err


def test_one_rule_says_which_answers_are_labels_for_uploads_and_for_accuracy(tmp_path):
    from ftvpe_core.tasks import evaluate

    assert datasets.label_set(["yes ", "no", "yes"]) == ["no", "yes"]
    assert datasets.label_set(["a very long answer here"]) == []  # more than LABEL_WORDS words
    many = [f"label{i}" for i in range(datasets.MAX_LABELS + 1)]
    assert datasets.label_set(many[:-1]) == sorted(many[:-1]) and datasets.label_set(many) == []
    # an upload with 21 short answers used 3 times each is not a label task, and accuracy on it says why
    rows = [{"prompt": f"q{i} {k}", "response": a} for k in range(3) for i, a in enumerate(many)]
    data = datasets.parse_upload(jsonl(rows), "many.jsonl")
    assert (data.task, data.metric, data.labels) == ("custom", "token_f1", [])
    assert set(datasets.METRICS) <= set(evaluate.METRICS)  # one name per metric
    path = tmp_path / "many.jsonl"
    path.write_bytes(jsonl(rows))
    with pytest.raises(FtvpeError, match=f"at most {datasets.MAX_LABELS}, of up to 3 words.*has 21 different"):
        evaluate.load_task(str(path), metric="accuracy")
    assert datasets.Dataset("x", "X", "custom", "overlap", "").metric == "token_f1"  # older saved uploads
