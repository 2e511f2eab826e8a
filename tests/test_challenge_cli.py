"""The ``challenge`` command on the tiny model: create, submit both tracks in the foreground, show, close,
export; bad input exits 2 with one line on stderr and no hidden example in any output."""

from __future__ import annotations

import json

import pytest

from ftvpe_core import challenges, cli, runs

pytestmark = pytest.mark.timeout(180)


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_demo_prepared_from_the_command_line(capsys, tmp_path, tiny_model_dir):
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

    rc, out, err = _run(capsys, "challenge", "close", "--code", code, "--key", "not-the-key")
    assert rc == 2 and out == "" and err == f"error: Wrong teacher key for challenge {code}; nothing was changed.\n"
    rc, out, _ = _run(capsys, "challenge", "export", "--code", code, "--key", key, "--html", str(tmp_path / "r.html"))
    assert rc == 0 and out.splitlines()[0].startswith("id,name,track") and len(out.splitlines()) == 3
    assert "Fine-tune leaderboard" in (tmp_path / "r.html").read_text()
    rc, out, _ = _run(capsys, "challenge", "close", "--code", code, "--key", key)
    assert rc == 0 and out == f"{code} closed\n"
    rc, _, err = _run(capsys, "challenge", "submit", "--code", code, "--name", "Ada", "--cot")
    assert rc == 2 and err == f"error: Challenge {code} is closed; it takes no more names or submissions.\n"


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--finetune", "--steps", "9"], "You asked for 9 training steps; this challenge allows at most 2."),
        (["--finetune", "--examples", "50"], "You picked 50 training examples; this challenge allows at most 5."),
        (["--finetune", "--pick", "1,x"], "--pick takes example numbers"),
        (["--cot", "--steps", "2"], "go with --finetune"),
        (["--finetune", "--cot"], "either a prompt"),
        (["--role", "x " * 400], "this challenge allows at most 300."),
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
