"""The ``challenge`` command on the tiny model: create, submit both tracks in the foreground, show, close,
export; bad input exits 2 with one line on stderr and no hidden example in any output."""

from __future__ import annotations

import io
import json

import pytest

from ftvpe_core import cli
from ftvpe_core.store import runs
from ftvpe_core.teaching import challenges

pytestmark = pytest.mark.timeout(180)


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_demo_prepared_from_the_command_line(capsys, monkeypatch, tmp_path, tiny_model_dir):
    rc, out, _ = _run(
        capsys,
        "challenge",
        "create",
        "--task",
        "support-triage",
        "--hidden-limit",
        "20",
        "--max-steps",
        "2",
        "--max-examples",
        "5",
        "--model",
        str(tiny_model_dir),
        "--json",
    )
    assert rc == 0
    created = json.loads(out)
    code, key = created["code"], created["key"]
    rc, out, _ = _run(
        capsys,
        "challenge",
        "submit",
        "--code",
        code,
        "--name",
        "Ada",
        "--role",
        "a triage assistant",
        "--format",
        "one word",
    )
    assert rc == 0 and out.startswith("submission 1 by Ada: ") and "on 8 hidden examples" in out
    rc, out, _ = _run(
        capsys,
        "challenge",
        "submit",
        "--code",
        code.lower(),
        "--name",
        "Bob",
        "--finetune",
        "--pick",
        "1,2,3",
        "--json",
    )
    entry = json.loads(out)
    assert rc == 0 and entry["status"] == "scored" and entry["train_examples"] == 3 and entry["n"] == 8

    rc, out, err = _run(capsys, "challenge", "show", "--code", code)
    assert rc == 0 and "Prompt leaderboard:" in out and " 1. Ada" in out and " 1. Bob" in out
    rc, out, _ = _run(capsys, "challenge", "list")
    assert code in out and "2 learners" in out
    everything_shown = out
    hidden = [e["prompt"] for e in challenges.reveal(runs.RunStore(), code, key)]
    assert not any(p in everything_shown + err for p in hidden)

    monkeypatch.setenv("FTVPE_TEACHER_KEY", "not-the-key")
    rc, out, err = _run(capsys, "challenge", "close", "--code", code)
    assert rc == 2 and out == "" and err == f"error: Wrong teacher key for challenge {code}; nothing was changed.\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(key + "\n"))  # --key - reads it from stdin, over the variable
    rc, out, _ = _run(capsys, "challenge", "export", "--code", code, "--key", "-", "--html", str(tmp_path / "r.html"))
    assert rc == 0 and out.splitlines()[0].startswith("id,name,track") and len(out.splitlines()) == 3
    assert "Fine-tune leaderboard" in (tmp_path / "r.html").read_text()
    monkeypatch.setenv("FTVPE_TEACHER_KEY", key)
    rc, out, _ = _run(capsys, "challenge", "close", "--code", code)
    assert rc == 0 and out == f"{code} closed\n"
    rc, _, err = _run(capsys, "challenge", "submit", "--code", code, "--name", "Ada", "--cot")
    assert rc == 2 and err == f"error: Challenge {code} is closed; it takes no more names or submissions.\n"


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--finetune", "--steps", "9"], "You asked for 9 training steps; this challenge allows at most 2."),
        (["--finetune", "--examples", "50"], "You picked 50 training examples; this challenge allows at most 5."),
        (["--finetune", "--pick", "1,x"], "--pick takes example numbers"),
        (["--finetune", "--steps", "0"], "Train for at least 1 step, got 0."),  # not the whole budget
        (["--finetune", "--examples", "0"], "Train on at least 1 example, got 0."),
        (["--cot", "--steps", "2"], "go with --finetune"),
        (["--finetune", "--cot"], "either a prompt"),
        (["--context", "x " * 400], "this challenge allows at most 300."),
        (["--role", "x " * 400], "The role is 800 characters long; the limit is 300."),
    ],
)
def test_bad_submissions_exit_2_with_one_line(capsys, tiny_model_dir, extra, words):
    rc, out, _ = _run(
        capsys,
        "challenge",
        "create",
        "--task",
        "support_triage",
        "--max-steps",
        "2",
        "--max-examples",
        "5",
        "--model",
        str(tiny_model_dir),
        "--json",
    )
    code = json.loads(out)["code"]
    rc, out, err = _run(capsys, "challenge", "submit", "--code", code, "--name", "Ada", *extra)
    assert rc == 2 and out == "" and len(err.splitlines()) == 1 and words in err and "Traceback" not in err


def test_an_unknown_code_is_a_clear_error(capsys):
    rc, _, err = _run(capsys, "challenge", "show", "--code", "ZZZZZZ")
    assert rc == 2 and err == "error: No challenge has the code 'ZZZZZZ'. Check the code your teacher showed.\n"


def _create(capsys, tiny_model_dir) -> tuple[str, str]:
    rc, out, _ = _run(
        capsys,
        "challenge",
        "create",
        "--task",
        "support_triage",
        "--hidden-limit",
        "20",
        "--model",
        str(tiny_model_dir),
    )
    assert rc == 0, out
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    return lines["code"], lines["teacher key"]


def test_the_teacher_key_comes_from_the_environment_or_stdin_and_one_on_the_command_line_warns(
    capsys, monkeypatch, tiny_model_dir
):
    code, key = _create(capsys, tiny_model_dir)
    rc, out, err = _run(capsys, "challenge", "close", "--code", code)
    assert (
        rc == 2 and err == "error: Give the teacher key: set FTVPE_TEACHER_KEY, or pass --key - and type it on stdin.\n"
    )
    monkeypatch.setenv("FTVPE_TEACHER_KEY", key)
    rc, out, err = _run(capsys, "challenge", "close", "--code", code)
    assert rc == 0 and out == f"{code} closed\n" and err == ""
    monkeypatch.delenv("FTVPE_TEACHER_KEY")
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{key}\n"))
    rc, out, err = _run(capsys, "challenge", "reopen", "--code", code, "--key", "-")
    assert rc == 0 and out == f"{code} reopened\n" and err == ""
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    rc, _, err = _run(capsys, "challenge", "export", "--code", code, "--key", "-")
    assert rc == 2 and "stdin gave an empty line" in err
    rc, out, err = _run(capsys, "challenge", "close", "--code", code, "--key", key)  # still works, with a warning
    assert rc == 0 and out == f"{code} closed\n"
    assert err.startswith("warning: a teacher key on the command line is visible to other users (ps)")
    for command in ("close", "reopen", "export"):
        with pytest.raises(SystemExit):
            cli.main(["challenge", command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "'-' reads it from stdin; without --key it comes from FTVPE_TEACHER_KEY" in text


def test_a_refused_submit_takes_no_name_and_a_taken_name_needs_its_rejoin_token(capsys, monkeypatch, tiny_model_dir):
    code, _ = _create(capsys, tiny_model_dir)
    for refused in (["--finetune", "--steps", "99"], ["--role", "r" * 400]):
        rc, _, err = _run(capsys, "challenge", "submit", "--code", code, "--name", "Zed", *refused)
        assert rc == 2 and err.startswith("error: ")
        rc, out, _ = _run(capsys, "challenge", "list")
        assert "0 learners" in out  # the refused submission took no name
    rc, out, _ = _run(capsys, "challenge", "submit", "--code", code, "--name", "Zed", "--cot", "--json")
    entry = json.loads(out)
    assert rc == 0 and entry["name"] == "Zed" and entry["status"] == "scored" and len(entry["rejoin"]) >= 12
    token = entry["rejoin"]
    rc, _, err = _run(capsys, "challenge", "submit", "--code", code, "--name", "zed", "--cot")
    assert rc == 2 and err.startswith("error: Someone already joined as 'zed'.")
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{token}\n"))
    rc, out, err = _run(capsys, "challenge", "submit", "--code", code, "--name", "zed", "--cot", "--rejoin", "-")
    assert rc == 0 and out.startswith("submission 2 by Zed: ") and "rejoin token" not in out and err == ""
    rc, out, _ = _run(capsys, "challenge", "list")
    assert "1 learners" in out and "2 submissions" in out


def test_no_teacher_key_starts_with_a_dash_which_the_command_line_would_read_as_an_option(monkeypatch):
    # secrets.token_urlsafe gives such a key 1 time in 64; here it gives two of them before a good one.
    keys = iter(["-abcdEFGH1234", "-_x-yyyyzzzz", "Qabc-EFGH1234"])
    monkeypatch.setattr(challenges.secrets, "token_urlsafe", lambda n: next(keys))
    assert challenges.new_teacher_key() == "Qabc-EFGH1234"
    monkeypatch.undo()
    real = [challenges.new_teacher_key() for _ in range(2000)]  # about 31 would start with '-' unfiltered
    assert not [k for k in real if k.startswith("-")] and len(set(real)) == 2000
