"""Job processes on the tiny model: queue order, one process per device, cancel, crash and app-stop."""

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from ftvpe_core import HOME_DIR, FtvpeError
from ftvpe_core.jobs import foreground, worker
from ftvpe_core.model import adapters
from ftvpe_core.store import runs
from ftvpe_core.store.runs import RunStore
from ftvpe_core.tasks import datasets
from ftvpe_core.training import finetune, tuning

pytestmark = pytest.mark.timeout(180)


def _settings(**overrides):
    return finetune.TrainSettings(
        **{"max_steps": 2, "batch_size": 4, "max_length": 48, "eval_every": 2, "max_val_examples": 4, **overrides}
    )


def _wait(predicate, timeout=90.0, what="the condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_submit_keeps_an_upload_with_the_run_and_trains_on_exactly_it(tiny_model_dir):
    store = RunStore()
    upload = datasets.load("support_triage")
    upload.name, upload.title = "my_upload", "My upload"
    upload.splits["train"] = upload.splits["train"][:12]
    run_id = tuning.submit(upload, _settings(), str(tiny_model_dir), device="cpu", store=store)
    run = store.get(run_id)
    assert (run.status, run.device, run.dataset) == ("queued", "cpu", "my_upload")
    assert run.settings["dataset_source"] == "upload" and run.settings["model"] == str(tiny_model_dir)
    saved = tuning.run_dataset(store, run)
    assert saved.splits["train"] == upload.splits["train"] and saved.labels == upload.labels


class _ClaimingStore(RunStore):
    """A store whose every new run is read by a job process the moment it is queued, as a warm one does."""

    def create(self, *args, **kwargs):
        run_id = super().create(*args, **kwargs)
        self.claimed = tuning.run_dataset(self, self.get(run_id))
        return run_id


def test_an_upload_is_in_the_runs_folder_before_a_job_process_can_claim_the_run(tiny_model_dir):
    # A challenge's fine-tune failed so in the class journey: "lost its uploaded dataset", the file written after
    # the run was queued, while the warm job process had already claimed it.
    store = _ClaimingStore()
    upload = datasets.load("support_triage")
    upload.name, upload.splits["train"] = "my_upload", upload.splits["train"][:12]
    tuning.submit(upload, _settings(), str(tiny_model_dir), device="cpu", store=store)
    assert store.claimed.splits["train"] == upload.splits["train"]


def test_an_upload_that_cannot_be_saved_queues_no_run(tiny_model_dir, monkeypatch):
    store = RunStore()
    upload = datasets.load("support_triage")
    upload.name = "my_upload"

    def full_disk(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(FtvpeError, match="The dataset could not be saved with the run: .*No space left"):
        tuning.submit(upload, _settings(), str(tiny_model_dir), device="cpu", store=store)
    monkeypatch.undo()
    assert store.list() == [] and not any((store.home / "runs").glob("*"))


def test_a_builtin_dataset_can_be_named_with_hyphens(tiny_model_dir):
    store = RunStore()
    run = store.get(tuning.submit("support-triage", _settings(), str(tiny_model_dir), device="cpu", store=store))
    assert run.dataset == "support_triage" and run.settings["dataset_source"] == "builtin"
    assert not (store.home / "runs" / run.id / tuning.DATASET_FILE).exists()


def test_claim_takes_queued_runs_oldest_first_for_the_device_and_never_twice(tiny_model_dir):
    store = RunStore()
    first = tuning.submit("support_triage", _settings(), str(tiny_model_dir), device="cpu", store=store)
    other = tuning.submit("support_triage", _settings(), str(tiny_model_dir), device="cuda", store=store)
    second = tuning.submit("support_triage", _settings(), str(tiny_model_dir), device="cpu", store=store)
    assert [r.id for r in store.queue("cpu")] == [first, second]
    assert store.claim("cpu", 111) == first and store.claim("cpu", 222) == second
    assert store.claim("cpu", 333) is None
    assert store.get(first).pid == 111 and store.get(first).status == "running"
    assert [r.id for r in store.queue("cuda")] == [other]


def test_serve_trains_the_queue_in_order_and_releases_the_device(tiny_model_dir):
    store = RunStore()
    ids = [tuning.submit("support_triage", _settings(), str(tiny_model_dir), device="cpu", store=store) for _ in "ab"]
    lines = []
    assert worker.serve(store, "cpu", log=lines.append) == 2
    runs = [store.get(i) for i in ids]
    assert [r.status for r in runs] == ["complete", "complete"]
    assert runs[0].finished <= runs[1].started  # one at a time
    assert runs[0].summary["trainable_parameters"] > 0 and "test_accuracy_tuned" in runs[0].summary
    assert not worker.busy(store, "cpu")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_a_second_job_process_for_the_same_device_does_nothing(tiny_model_dir):
    store = RunStore()
    run_id = tuning.submit("support_triage", _settings(), str(tiny_model_dir), device="cpu", store=store)
    with worker._device_lock(store, "cpu") as got:
        assert got and worker.busy(store, "cpu")
        assert worker.serve(store, "cpu", log=lambda m: None) == 0
    assert store.get(run_id).status == "queued"


def test_ensure_worker_starts_one_process_that_trains_the_run(tiny_model_dir):
    store = RunStore()
    assert not worker.ensure_worker(store, "cpu")  # nothing queued
    run_id = tuning.submit("support_triage", _settings(), str(tiny_model_dir), device="cpu", store=store)
    assert worker.ensure_worker(store, "cpu")
    assert not worker.ensure_worker(store, "cpu")  # already started
    _wait(lambda: store.get(run_id).status not in ("queued", "running"), what="the run to finish")
    run = store.get(run_id)
    assert run.status == "complete", (run.error, (store.home / "logs" / "worker-cpu.log").read_text())
    assert run.pid != os.getpid()
    assert (store.artifact_dir(run_id) / "adapter_model.safetensors").is_file()
    record = json.loads((store.artifact_dir(run_id) / tuning.METRICS_FILE).read_text())
    assert record["summary"]["steps"] == 2 and [s for s, _ in record["metrics"]["train_loss"]] == [1, 2]
    with zipfile.ZipFile(io.BytesIO(tuning.adapter_zip(store, run_id))) as z:
        names = sorted(n.split("/", 1)[1] for n in z.namelist())
    assert names == ["adapter_config.json", "adapter_model.safetensors", "metrics.json", "run.json"]


def _start_long_run(store, tiny_model_dir):
    run_id = tuning.submit(
        "support_triage", _settings(max_steps=5000, eval_every=1000), str(tiny_model_dir), device="cpu", store=store
    )
    return run_id


def test_cancel_stops_a_running_job_and_the_next_queued_run_still_trains(tiny_model_dir):
    store = RunStore()
    long_run = _start_long_run(store, tiny_model_dir)
    queued = tuning.submit("support_triage", _settings(), str(tiny_model_dir), device="cpu", store=store)
    assert [r.id for r in store.queue("cpu")] == [long_run, queued]
    worker.ensure_worker(store, "cpu")
    _wait(lambda: store.metrics(long_run).get("train_loss"), what="training to start")
    store.request_cancel(long_run)
    _wait(lambda: store.get(queued).status == "complete", what="the queued run")
    assert store.get(long_run).status == "cancelled"


def test_a_job_process_killed_with_sigkill_leaves_its_run_failed_and_the_store_readable(tiny_model_dir):
    store = RunStore()
    run_id = _start_long_run(store, tiny_model_dir)
    worker.ensure_worker(store, "cpu")
    _wait(lambda: store.metrics(run_id).get("train_loss"), what="training to start")
    os.kill(store.get(run_id).pid, signal.SIGKILL)
    _wait(lambda: worker.reap(store) or store.get(run_id).status != "running", what="the kill to be noticed")
    run = store.get(run_id)
    assert run.status == "failed" and "stopped unexpectedly" in run.error
    assert store.metrics(run_id)["train_loss"] and [r.id for r in store.list()] == [run_id]
    assert not worker.busy(store, "cpu")  # the lock died with the process


def test_a_job_process_whose_app_stops_marks_its_run_interrupted(tiny_model_dir):
    store = RunStore()
    run_id = _start_long_run(store, tiny_model_dir)
    # A stand-in for the app: a shell that starts the job process as its child, then is killed.
    app = subprocess.Popen(
        ["bash", "-c", f'"{sys.executable}" -m ftvpe_core worker --device cpu --parent $$ & wait'],
        env={**os.environ, "FTVPE_HOME": str(store.home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait(lambda: store.metrics(run_id).get("train_loss"), what="training to start")
    app.kill()
    app.wait()
    _wait(lambda: store.get(run_id).status != "running", what="the job process to stop")
    run = store.get(run_id)
    assert run.status == "interrupted" and "app stopped" in run.error
    assert not worker.busy(store, "cpu")


STUCK_WORKER = """
import sys, time
from ftvpe_core.jobs import worker
from ftvpe_core.training import tuning
from ftvpe_core.store.runs import RunStore

tuning.execute = lambda store, run_id, interrupted: time.sleep(120)  # a phase that never asks 'interrupted'
worker.serve(RunStore(), "cpu", parent_pid=int(sys.argv[1]))
"""


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_job_process_leaves_within_seconds_of_its_app_even_mid_phase(tiny_model_dir, tmp_path, how):
    store = RunStore()
    run_id = tuning.submit("support_triage", _settings(), str(tiny_model_dir), device="cpu", store=store)
    script = tmp_path / "stuck_worker.py"
    script.write_text(STUCK_WORKER)
    app = subprocess.Popen(
        ["bash", "-c", f'"{sys.executable}" "{script}" $$ & wait'],
        env={**os.environ, "FTVPE_HOME": str(store.home), "PYTHONPATH": str(HOME_DIR)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait(lambda: store.get(run_id).status == "running", what="the run to start")
    pid = store.get(run_id).pid
    app.send_signal(how)
    app.wait()
    gone_at = time.monotonic()
    _wait(lambda: not runs.pid_alive(pid), timeout=worker.STOP_GRACE_S + 10, what="the job process to leave")
    assert time.monotonic() - gone_at < worker.STOP_GRACE_S + 5
    run = store.get(run_id)
    assert run.status == "interrupted" and "app stopped" in run.error
    assert store.recover_interrupted() == []  # nothing left running for a restarted app to mark


def _adapter(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / adapters.WEIGHTS_FILE))


def test_a_killed_run_resumes_from_its_checkpoint_and_ends_as_if_never_stopped(tiny_model_dir):
    store = RunStore()
    settings = _settings(max_steps=60, eval_every=5, dropout=0.1)
    run_id = tuning.submit("support_triage", settings, str(tiny_model_dir), device="cpu", store=store)
    with pytest.raises(Exception, match="no checkpoint|queued"):
        tuning.resume(store, run_id)
    worker.ensure_worker(store, "cpu")
    checkpoint = store.artifact_dir(run_id) / finetune.CHECKPOINT_FILE
    _wait(checkpoint.is_file, what="the first checkpoint")
    os.kill(store.get(run_id).pid, signal.SIGKILL)
    _wait(lambda: worker.reap(store) or store.get(run_id).status != "running", what="the kill to be noticed")
    assert store.get(run_id).status == "failed"
    step = tuning.resume_step(store, store.get(run_id))
    assert step is not None and 5 <= step < 60 and step % 5 == 0, step
    logged = [s for s, _ in store.metrics(run_id)["train_loss"]]
    assert logged[-1] >= step  # steps after the checkpoint were logged, and will come again

    assert tuning.resume(store, run_id) == step
    assert store.get(run_id).status == "queued" and store.get(run_id).error is None
    worker.ensure_worker(store, "cpu")
    _wait(lambda: store.get(run_id).status == "complete", what="the resumed run")
    metrics = store.metrics(run_id)
    assert [s for s, _ in metrics["train_loss"]] == list(range(1, 61))  # one curve, no step twice
    assert [s for s, _ in metrics["val_loss"]] == list(range(5, 61, 5))
    assert sorted({s.step for s in store.samples(run_id)}) == list(range(5, 61, 5))
    assert not checkpoint.exists() and store.get(run_id).summary["steps"] == 60

    whole = foreground.finetune("support_triage", settings, str(tiny_model_dir), store=store, measure_accuracy=False)
    expected, got = _adapter(store.artifact_dir(whole["run_id"])), _adapter(store.artifact_dir(run_id))
    assert expected.keys() == got.keys()
    for k in expected:
        assert torch.allclose(got[k], expected[k], atol=1e-5), k
    with pytest.raises(Exception, match="complete; only an interrupted"):
        tuning.resume(store, run_id)
