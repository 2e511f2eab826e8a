"""The run store: records, metrics and samples round trip; 'complete' is written last; dead jobs are found."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ftvpe_core import FtvpeError
from ftvpe_core.jobs import kinds
from ftvpe_core.store import runs
from ftvpe_core.store.runs import RunStore

REPO = Path(__file__).resolve().parent.parent


def _python(code: str, *args: str) -> subprocess.Popen:
    """Start a Python process that can import ftvpe_core."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _running(store: RunStore, pid: int | None = None) -> str:
    run_id = store.create("finetune", "capitals", {"rank": 8})
    store.start(run_id, pid if pid is not None else os.getpid(), "cpu")
    return run_id


def test_create_get_and_list_round_trip(tmp_path):
    store = RunStore(tmp_path)
    first = store.create("finetune", "capitals", {"rank": 8, "lr": 1e-3})
    second = store.create("finetune", "recipes", {"rank": 4})
    other = store.create("eval", "capitals", {})

    run = store.get(first)
    assert (run.id, run.kind, run.dataset, run.status) == (first, "finetune", "capitals", "queued")
    assert run.settings == {"rank": 8, "lr": 1e-3}
    assert run.summary is None and run.started is None and not run.cancel_requested
    assert [r.id for r in store.list()] == [other, second, first]
    assert [r.id for r in store.list(kind="finetune")] == [second, first]
    assert (tmp_path / "runs.sqlite3").is_file()


def test_run_ids_are_short_and_sort_by_creation(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create("finetune", "capitals", {})
    date, clock, suffix = run_id.split("-")
    assert len(date) == 8 and len(clock) == 6 and len(suffix) == 4
    assert date == time.strftime("%Y%m%d")


def test_store_defaults_to_ftvpe_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FTVPE_HOME", str(tmp_path / "home"))
    run_id = RunStore().create("finetune", "capitals", {})
    assert (tmp_path / "home" / "runs.sqlite3").is_file()
    assert RunStore(tmp_path / "home").get(run_id).id == run_id
    assert RunStore().artifact_dir(run_id) == tmp_path / "home" / "runs" / run_id


def test_store_uses_wal_and_records_schema_version(tmp_path):
    import sqlite3

    RunStore(tmp_path)
    conn = sqlite3.connect(tmp_path / "runs.sqlite3")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(runs.SCHEMA_VERSION,)]
    finally:
        conn.close()
    RunStore(tmp_path)  # opening again keeps one version row
    conn = sqlite3.connect(tmp_path / "runs.sqlite3")
    try:
        assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 1
    finally:
        conn.close()


def test_unknown_run_id_is_a_user_error(tmp_path):
    store = RunStore(tmp_path)
    for call in (
        lambda: store.get("x"),
        lambda: store.start("x", 1, "cpu"),
        lambda: store.log_metrics("x", 0, train_loss=1.0),
        lambda: store.log_sample("x", 0, "p", "a"),
        lambda: store.metrics("x"),
        lambda: store.artifact_dir("x"),
        lambda: store.delete("x"),
        lambda: store.fail("x", "boom"),
    ):
        with pytest.raises(FtvpeError, match="No run 'x' in the store."):
            call()


def test_metrics_are_grouped_by_name_in_step_order(tmp_path):
    store = RunStore(tmp_path)
    run_id = _running(store)
    store.log_metrics(run_id, 2, train_loss=1.5, lr=1e-4)
    store.log_metrics(run_id, 0, train_loss=2.5, lr=2e-4)
    store.log_metrics(run_id, 1, train_loss=2.0)
    store.log_metrics(run_id, 2, val_loss=1.8)
    assert store.metrics(run_id) == {
        "train_loss": [(0, 2.5), (1, 2.0), (2, 1.5)],
        "lr": [(0, 2e-4), (2, 1e-4)],
        "val_loss": [(2, 1.8)],
    }
    assert store.metrics(store.create("finetune", "capitals", {})) == {}


def test_samples_come_back_in_step_then_logging_order(tmp_path):
    store = RunStore(tmp_path)
    run_id = _running(store)
    store.log_sample(run_id, 10, "Capital of France?", "Paris")
    store.log_sample(run_id, 0, "Capital of France?", "Fr")
    store.log_sample(run_id, 10, "Capital of Peru?", "Lima")
    got = [(s.step, s.probe, s.answer) for s in store.samples(run_id)]
    assert got == [
        (0, "Capital of France?", "Fr"),
        (10, "Capital of France?", "Paris"),
        (10, "Capital of Peru?", "Lima"),
    ]
    assert all(s.time > 0 for s in store.samples(run_id))


def test_finish_writes_summary_and_marks_complete(tmp_path):
    store = RunStore(tmp_path)
    run_id = _running(store, pid=1234)
    run = store.get(run_id)
    assert (run.status, run.pid, run.device) == ("running", 1234, "cpu") and run.started is not None
    store.artifact_dir(run_id)
    store.finish(run_id, {"final_loss": 0.4, "steps": 10})
    run = store.get(run_id)
    assert run.status == "complete"
    assert run.summary == {"final_loss": 0.4, "steps": 10}
    assert run.finished is not None and not run.active


def test_finish_refuses_a_run_without_artifact_folder(tmp_path):
    store = RunStore(tmp_path)
    run_id = _running(store)
    with pytest.raises(FtvpeError, match="artifact folder"):
        store.finish(run_id, {"final_loss": 0.4})
    run = store.get(run_id)
    assert run.status == "running" and run.summary is None


def test_crash_between_summary_and_complete_mark_leaves_run_not_complete(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    run_id = _running(store)
    store.artifact_dir(run_id)

    def crash(conn, run_id):
        raise RuntimeError("power cut")

    monkeypatch.setattr(runs, "_mark_complete", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        store.finish(run_id, {"final_loss": 0.4})
    run = RunStore(tmp_path).get(run_id)
    assert run.status == "running"
    assert run.summary is None  # the whole transaction rolled back
    monkeypatch.undo()
    store.finish(run_id, {"final_loss": 0.4})
    assert store.get(run_id).status == "complete"


def test_fail_records_the_error_and_is_final(tmp_path):
    store = RunStore(tmp_path)
    run_id = _running(store)
    store.fail(run_id, "CUDA out of memory")
    run = store.get(run_id)
    assert (run.status, run.error) == ("failed", "CUDA out of memory") and run.finished is not None
    store.artifact_dir(run_id)
    with pytest.raises(FtvpeError, match="is failed; it cannot be finished"):
        store.finish(run_id, {})
    with pytest.raises(FtvpeError, match="cannot be started"):
        store.start(run_id, os.getpid(), "cpu")


def test_cancel_flow_for_running_and_queued_runs(tmp_path):
    store = RunStore(tmp_path)
    running = _running(store)
    queued = store.create("finetune", "capitals", {})
    assert not store.cancel_requested(running)

    store.request_cancel(running)
    assert store.cancel_requested(running)
    assert store.get(running).status == "running"  # the job process stops itself
    store.mark_cancelled(running)
    assert store.get(running).status == "cancelled"

    store.request_cancel(queued)  # no process will pick it up: cancelled at once
    assert store.get(queued).status == "cancelled"
    assert store.queue() == []
    with pytest.raises(FtvpeError, match="cannot be started"):
        store.start(queued, os.getpid(), "cpu")


def test_queue_lists_queued_runs_oldest_first(tmp_path):
    store = RunStore(tmp_path)
    ids = [store.create("finetune", f"data{i}", {}) for i in range(4)]
    store.start(ids[0], os.getpid(), "cpu")
    store.request_cancel(ids[2])
    assert [r.id for r in store.queue()] == [ids[1], ids[3]]


def test_delete_removes_rows_and_artifacts(tmp_path):
    store = RunStore(tmp_path)
    run_id = _running(store)
    keep = _running(store)
    store.log_metrics(run_id, 0, train_loss=1.0)
    store.log_metrics(keep, 0, train_loss=2.0)
    store.log_sample(run_id, 0, "p", "a")
    folder = store.artifact_dir(run_id)
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    store.finish(run_id, {})

    store.delete(run_id)
    assert not folder.exists()
    with pytest.raises(FtvpeError, match="No run"):
        store.get(run_id)
    assert [r.id for r in store.list()] == [keep]
    assert store.metrics(keep) == {"train_loss": [(0, 2.0)]}


def test_delete_refuses_a_running_run(tmp_path):
    store = RunStore(tmp_path)
    run_id = _running(store)
    folder = store.artifact_dir(run_id)
    with pytest.raises(FtvpeError, match="running; cancel it"):
        store.delete(run_id)
    assert folder.is_dir() and store.get(run_id).status == "running"


def test_recover_interrupted_marks_dead_pids_and_keeps_live_ones(tmp_path):
    store = RunStore(tmp_path)
    dead = _running(store, pid=_dead_pid())
    live = _running(store, pid=os.getpid())
    queued = store.create("finetune", "capitals", {})

    assert store.recover_interrupted() == [dead]
    assert store.get(dead).status == "interrupted"
    assert store.get(live).status == "running"
    assert store.get(queued).status == "queued"

    assert store.recover_interrupted(assume_dead=True) == [live]
    assert store.get(live).status == "interrupted"


def test_reap_dead_marks_dead_runs_failed(tmp_path):
    store = RunStore(tmp_path)
    dead = _running(store, pid=_dead_pid())
    live = _running(store)
    assert store.reap_dead() == [dead]
    run = store.get(dead)
    assert run.status == "failed" and run.error == runs.KILLED_ERROR
    assert store.get(live).status == "running"
    assert store.reap_dead() == []


_TRAINER = """
import os, sys, time
from pathlib import Path
from ftvpe_core.store.runs import RunStore

store = RunStore(Path(sys.argv[1]))
run_id = sys.argv[2]
store.start(run_id, os.getpid(), "cpu")
step = 0
while True:
    store.log_metrics(run_id, step, train_loss=1.0 / (step + 1), tokens_seen=step * 10)
    step += 1
    time.sleep(0.005)
"""


def test_sigkilled_job_is_reaped_as_failed_with_its_metrics_kept(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create("finetune", "capitals", {})
    proc = _python(_TRAINER, str(tmp_path), run_id)
    try:
        deadline = time.monotonic() + 10
        while len(store.metrics(run_id).get("train_loss", [])) < 5:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the job logged no metrics"
            time.sleep(0.02)
        assert store.get(run_id).pid == proc.pid
        assert store.reap_dead() == []  # still alive
    finally:
        proc.kill()  # SIGKILL: no cleanup runs in the job
        proc.wait()  # reap the zombie, or it still looks alive
    assert proc.returncode == -9

    assert store.reap_dead() == [run_id]
    run = RunStore(tmp_path).get(run_id)
    assert run.status == "failed" and "killed or out of memory" in run.error
    losses = store.metrics(run_id)["train_loss"]
    assert [step for step, _ in losses] == list(range(len(losses)))
    assert len(store.metrics(run_id)["tokens_seen"]) == len(losses)


_WRITER = """
import sys
from pathlib import Path
from ftvpe_core.store.runs import RunStore

store = RunStore(Path(sys.argv[1]))
run_id = sys.argv[2]
for step in range(150):
    store.log_metrics(run_id, step, train_loss=float(step), lr=0.1)
    if step % 10 == 0:
        store.log_sample(run_id, step, "probe", f"answer {step}")
print("done")
"""


def test_two_processes_write_concurrently_without_losing_rows(tmp_path):
    store = RunStore(tmp_path)
    ids = [store.create("finetune", "capitals", {}) for _ in range(2)]
    procs = [_python(_WRITER, str(tmp_path), run_id) for run_id in ids]
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert out.strip() == "done"
    for run_id in ids:
        got = store.metrics(run_id)
        assert got["train_loss"] == [(step, float(step)) for step in range(150)]
        assert len(got["lr"]) == 150
        assert [s.step for s in store.samples(run_id)] == list(range(0, 150, 10))


def test_corrupt_store_is_a_user_error_and_is_left_untouched(tmp_path):
    path = tmp_path / "runs.sqlite3"
    garbage = b"this is not a SQLite database\n" * 200
    path.write_bytes(garbage)
    with pytest.raises(FtvpeError, match="runs.sqlite3 is damaged") as info:
        RunStore(tmp_path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == garbage


def test_a_schema_1_store_gains_the_new_columns_and_keeps_its_runs(tmp_path):
    import sqlite3

    store = RunStore(tmp_path)
    run_id = store.create("finetune", "support_triage", {"rank": 8})
    with sqlite3.connect(store.path) as conn:  # make it look like a store written by schema 1
        for column in ("progress_json", "learner", "node"):
            conn.execute(f"ALTER TABLE runs DROP COLUMN {column}")
        conn.execute("UPDATE schema_version SET version = 1")
    again = RunStore(tmp_path)
    assert again.get(run_id).progress is None and again.get(run_id).settings == {"rank": 8}
    assert (again.get(run_id).learner, again.get(run_id).node) == (None, None)
    again.set_progress(run_id, 1.5, "Scoring")
    assert again.get(run_id).progress == {"fraction": 1.0, "message": "Scoring"}
    assert again.claim("cpu", 7) == run_id and again.get(run_id).node  # the new columns are written
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(runs.SCHEMA_VERSION,)]


def test_claim_and_queue_take_only_the_kinds_asked_for(tmp_path, monkeypatch):

    store = RunStore(tmp_path)
    tune = store.create("finetune", "support_triage", {}, "cpu")
    score = store.create("challenge", "support_triage", {}, "cpu")
    assert [r.id for r in store.queue(kinds=kinds.RAY_KINDS)] == [tune]
    monkeypatch.setenv("FTVPE_RAY_ADDRESS", "127.0.0.1:1")  # a cluster trains fine-tunes; scoring stays here
    assert kinds.local_kinds() == ("challenge",)
    assert store.claim("cpu", 1, kinds=kinds.local_kinds()) == score
    assert store.claim("cpu", 1, kinds=kinds.local_kinds()) is None  # the fine-tune waits for the cluster
    assert store.get(tune).status == "queued"
    monkeypatch.delenv("FTVPE_RAY_ADDRESS")
    assert kinds.local_kinds() is None and store.claim("cpu", 1, kinds=kinds.local_kinds()) == tune
