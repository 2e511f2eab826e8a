"""Foreground fine-tuning jobs through the CLI, on the tiny model: store records, adapter, accuracy."""

import json

from ftvpe_core import cli
from ftvpe_core.store import runs


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_finetune_json_reports_the_run_and_stores_it_complete_with_its_adapter(capsys, tiny_model_dir):
    code, out, err = _run(
        capsys, "finetune", "--dataset", "support_triage", "--steps", "3", "--model", str(tiny_model_dir), "--json"
    )
    assert code == 0, err
    summary = json.loads(out)
    for key in ("run_id", "status", "train_seconds", "steps", "final_train_loss", "final_val_loss"):
        assert key in summary
    assert summary["status"] == "complete" and summary["steps"] == 3
    assert runs.RunStore().get(summary["run_id"]).settings["preset"] == "custom"  # --steps changed the preset
    assert 0.0 <= summary["test_accuracy_base"] <= 1.0 and 0.0 <= summary["test_accuracy_tuned"] <= 1.0
    assert "[step 3/3]" in err
    store = runs.RunStore()
    run = store.get(summary["run_id"])
    assert run.status == "complete" and run.summary["steps"] == 3
    assert [step for step, _ in store.metrics(run.id)["train_loss"]] == [1, 2, 3]
    assert (store.artifact_dir(run.id) / "adapter_model.safetensors").is_file()

    code, out, _ = _run(capsys, "runs", "list", "--json")
    assert [r["id"] for r in json.loads(out)["runs"]] == [run.id]
    code, out, _ = _run(capsys, "runs", "show", run.id, "--json")
    shown = json.loads(out)
    assert shown["status"] == "complete" and len(shown["metrics"]["train_loss"]) == 3
    code, out, err = _run(
        capsys,
        "generate",
        "My card was charged twice.",
        "--adapter",
        run.id,
        "--model",
        str(tiny_model_dir),
        "--max-new-tokens",
        "3",
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["model"].endswith(f"+ adapter {run.id}")
    code, _, err = _run(capsys, "generate", "hi", "--adapter", run.id, "--dtype", "q4", "--model", str(tiny_model_dir))
    assert code == 2 and "adapter runs on float weights" in err

    code, out, _ = _run(capsys, "runs", "delete", run.id)
    assert code == 0 and store.list() == []


def test_finetune_bad_input_exits_2_with_one_line(capsys, tiny_model_dir):
    for argv, words in [
        (["--dataset", "nope"], "No dataset 'nope'"),
        (["--dataset", "support_triage", "--steps", "0"], "Steps must be between 1"),
        (["--dataset", "support_triage", "--preset", "fast"], "Unknown preset 'fast'"),
    ]:
        code, out, err = _run(capsys, "finetune", *argv, "--model", str(tiny_model_dir))
        assert (code, out) == (2, "")
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], err
    code, _, err = _run(capsys, "runs", "show", "missing")
    assert code == 2 and "No run 'missing'" in err
    code, _, err = _run(capsys, "generate", "hi", "--adapter", "missing", "--model", str(tiny_model_dir))
    assert code == 2 and "No run 'missing'" in err


def test_finetune_resume_continues_an_interrupted_run_in_the_foreground(capsys, tiny_model_dir):
    from ftvpe_core.training import finetune, tuning

    store = runs.RunStore()
    settings = finetune.TrainSettings(max_steps=12, batch_size=4, max_length=48, eval_every=4, max_val_examples=4)
    run_id = tuning.submit("support_triage", settings, str(tiny_model_dir), device="cpu", store=store)
    store.start(run_id, 1, "cpu")
    events = []

    def step(event):  # the run's events: its phases' messages and its steps; count the steps
        if "step" in event:
            events.append(event)

    stopped = tuning.execute(store, run_id, interrupted=lambda: len(events) >= 7, on_event=step)
    assert stopped["status"] == "interrupted" and store.get(run_id).status == "interrupted"
    assert tuning.resume_step(store, store.get(run_id)) == 7

    code, out, err = _run(capsys, "finetune", "--resume", run_id, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["run_id"] == run_id and summary["status"] == "complete" and summary["steps"] == 12
    assert "[step 8/12]" in err and "[step 7/12]" not in err  # it went on from step 7
    assert [s for s, _ in store.metrics(run_id)["train_loss"]] == list(range(1, 13))

    for argv, words in [
        (["--resume", run_id], f"Run '{run_id}' is complete; only an interrupted, failed or cancelled run resumes"),
        (["--resume", run_id, "--dataset", "support_triage", "--steps", "3"], "drop --dataset, --steps"),
        (["--resume", "missing"], "No run 'missing'"),
        ([], "finetune needs --dataset"),
    ]:
        code, out, err = _run(capsys, "finetune", *argv)
        lines = err.strip().splitlines()
        assert (code, out) == (2, "") and len(lines) == 1 and words in lines[0], err
