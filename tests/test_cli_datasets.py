"""`python -m ftvpe_core datasets list | check FILE`."""

import json

from ftvpe_core import cli, datasets


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
