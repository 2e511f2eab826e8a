"""`python -m ftvpe_core datasets list | check FILE`."""

import json
import subprocess
import sys
from pathlib import Path

from ftvpe_core import cli
from ftvpe_core.tasks import datasets

REPO = Path(__file__).resolve().parent.parent


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_datasets_list_json_names_every_builtin_with_split_sizes(capsys):
    code, out, err = _run(capsys, "datasets", "list", "--json")
    assert code == 0 and err == ""
    rows = {r["name"]: r for r in json.loads(out)["datasets"]}
    assert set(rows) == set(datasets.builtin_names()) >= {"support_triage", "brand_voice", "domain_knowledge"}
    for r in rows.values():
        assert r["sizes"]["train"] >= 150 and r["sizes"]["validation"] >= 30 and r["sizes"]["test"] >= 40


def test_datasets_check_accepts_a_builtin_split(capsys):
    path = datasets.assets_dir() / "support_triage" / "test.jsonl"
    code, out, err = _run(capsys, "datasets", "check", str(path), "--json")
    report = json.loads(out)
    assert (code, err, report["ok"], report["problems"]) == (0, "", True, [])
    assert report["examples"] == report["rows"] >= 40


def test_datasets_check_reports_line_numbers_and_exits_2(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": ""}\nnot json\n')
    code, out, err = _run(capsys, "datasets", "check", str(bad))
    assert code == 2
    assert "line 2" in out and "line 3" in out
    assert err.strip().splitlines() == [f"error: {bad} is not a valid dataset: {out.count('  line')} problem(s)."]


def test_datasets_check_missing_file_is_one_line_error(capsys, tmp_path):
    code, out, err = _run(capsys, "datasets", "check", str(tmp_path / "nope.csv"))
    assert (code, out) == (2, "")
    assert err.startswith("error: No such file") and len(err.strip().splitlines()) == 1


def _cli(*argv: str) -> subprocess.CompletedProcess:
    """The real command line, in its own process: what a user sees, tracebacks included."""
    return subprocess.run(
        [sys.executable, "-m", "ftvpe_core", *argv], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_datasets_check_and_finetune_refuse_hostile_files_in_one_line_with_exit_2(tmp_path):
    good = "".join(json.dumps({"prompt": f"Question {i}?", "response": f"Answer {i}."}) + "\n" for i in range(12))
    deep = tmp_path / "deep.jsonl"
    deep.write_text(good + "[" * 5000 + "]" * 5000 + "\n")
    huge = tmp_path / "huge.csv"
    huge.write_text("messages\n" + '"[' + "9" * 5000 + ']"\n')
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(f"c{i}" for i in range(10_000)) + "\n" + ",".join("v" * 10_000) + "\n")
    for argv, problem in [
        (("datasets", "check", str(deep)), "line 13: not valid JSON (its lists or objects are nested too deeply)"),
        (("datasets", "check", str(huge)), "line 2: 'messages' is not valid JSON (a number in it has more than"),
        (("datasets", "check", str(wide)), "c11 and 9,988 more"),
        (("finetune", "--dataset", str(deep)), "deep.jsonl was not loaded: line 13: not valid JSON"),
    ]:
        done = _cli(*argv)
        assert done.returncode == 2, (argv, done.stderr)
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert problem in done.stdout + done.stderr, (argv, done.stdout, done.stderr)


def test_datasets_check_reads_mixed_line_endings_and_a_bom(tmp_path):
    rows = [json.dumps({"prompt": f"Question {i}?", "response": f"Answer {i}."}) for i in range(12)]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(b"\xef\xbb\xbf" + "".join(r + ("\r\n", "\r", "\n")[i % 3] for i, r in enumerate(rows)).encode())
    done = _cli("datasets", "check", str(mixed), "--json")
    report = json.loads(done.stdout)
    assert (done.returncode, report["ok"], report["examples"]) == (0, True, 12), done.stderr


def test_datasets_check_names_a_folder_shortens_many_columns_and_an_unknown_format(capsys, tmp_path):
    code, out, err = _run(capsys, "datasets", "check", str(tmp_path))
    assert (code, out) == (2, "")
    assert err.strip().splitlines() == [f"error: No such file: {tmp_path} is a folder; name a JSONL or CSV file in it."]

    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(f"c{i}" for i in range(10_000)) + "\n" + ",".join("x" * 10_000) + "\n")
    code, out, _ = _run(capsys, "datasets", "check", str(wide))
    columns = out.splitlines()[1]
    assert code == 2 and columns.startswith("columns: c0, c1,") and columns.endswith("and 9,988 more")

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, out, _ = _run(capsys, "datasets", "check", str(empty))
    assert code == 2 and out.splitlines()[0] == f"{empty}: format not recognised, 0 rows, 0 valid examples"
