"""The Ray runner on one local Ray head (started once for the session, on loopback, 2 CPUs), with the tiny model:
CLI and page runs train on Ray and reach the store, two learners train at once and a third run waits its turn,
cancel, a killed worker fails its run while the next still completes, an unreachable cluster is one clear line.

The head is ``ray start --head --block`` in a subprocess of the session; this process connects to it once as a
driver, so the Ray workers (and their imports) are reused from test to test.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from ftvpe_core import cli
from ftvpe_core.jobs import runners, worker
from ftvpe_core.store.runs import RunStore
from ftvpe_core.training import finetune, tuning
from tests.conftest import REPO
from tests.test_worker import _wait

if importlib.util.find_spec("ray") is None:
    pytest.skip(
        "Ray is not installed: pip install -r requirements-cluster.txt (make test does)", allow_module_level=True
    )
from ftvpe_core.jobs import ray_runner  # noqa: E402 - imports ray only when it connects

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def on_ray(ray_head, monkeypatch):
    monkeypatch.setenv("FTVPE_RAY_ADDRESS", ray_head)
    return ray_head


def _settings(**overrides):
    return finetune.TrainSettings(
        **{"max_steps": 4, "batch_size": 4, "max_length": 48, "eval_every": 2, "max_val_examples": 4, **overrides}
    )


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_with_ray_unset_nothing_imports_ray_and_the_runner_is_local():
    code = (
        "import sys; from ftvpe_core import cli; from ftvpe_core.jobs import runners, worker, ray_runner; "
        "from ftvpe_core.training import tuning; from ftvpe_core.studies import compare; "
        "from ftvpe_core.ui import run_views; "
        "assert runners.current().name == 'local'; assert 'ray' not in sys.modules, 'ray imported'; print('ok')"
    )
    env = {k: v for k, v in os.environ.items() if k != "FTVPE_RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_an_unreachable_cluster_is_one_clear_line_in_the_cli_and_fails_queued_runs_with_it(
    ray_head, monkeypatch, capsys, tiny_model_dir
):
    monkeypatch.setenv("FTVPE_RAY_ADDRESS", f"127.0.0.1:{_free_port()}")  # nobody listens there
    started = time.monotonic()
    code, out, err = _run(
        capsys, "finetune", "--dataset", "support_triage", "--steps", "2", "--model", str(tiny_model_dir)
    )
    assert time.monotonic() - started < 30
    lines = err.strip().splitlines()
    assert (code, out) == (2, "") and len(lines) == 1, err
    assert "The Ray cluster at FTVPE_RAY_ADDRESS=127.0.0.1:" in lines[0] and "cannot be reached" in lines[0]

    store = RunStore()
    run_id = tuning.submit("support_triage", _settings(), str(tiny_model_dir), device="cpu", store=store)
    assert runners.serve(store, worker.RAY, log=lambda m: None) == 0  # the dispatcher job process's loop
    run = store.get(run_id)
    assert run.status == "failed" and "cannot be reached" in run.error
    slots = runners.current().slots(store)
    assert slots.runner == "ray" and "cannot be reached" in slots.error and slots.free == 0


def test_an_unreachable_cluster_is_named_on_the_page_and_its_queued_run_fails_with_it(monkeypatch, tiny_model_dir):
    from streamlit.testing.v1 import AppTest

    address = f"127.0.0.1:{_free_port()}"
    monkeypatch.setenv("FTVPE_RAY_ADDRESS", address)
    monkeypatch.setenv("FTVPE_MODEL", str(tiny_model_dir))
    store = RunStore()
    run_id = tuning.submit("support_triage", _settings(), str(tiny_model_dir), device="cpu", store=store)
    at = AppTest.from_file(
        str(REPO / "pages" / "6_Runs.py"), default_timeout=60
    ).run()  # its tick starts the dispatcher
    _wait(lambda: store.get(run_id).status == "failed", what="the dispatcher to give up")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert any(e.startswith("Runs cannot start: The Ray cluster at FTVPE\\_RAY\\_ADDRESS") for e in errors), errors
    assert any("Failed:" in e and "cannot be reached" in e for e in errors), errors
    assert "cannot be reached" in store.get(run_id).error


def test_cli_finetune_trains_on_ray_and_its_curves_and_adapter_reach_the_store(on_ray, capsys, tiny_model_dir):
    code, out, err = _run(
        capsys, "finetune", "--dataset", "support_triage", "--steps", "4", "--model", str(tiny_model_dir), "--json"
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["status"] == "complete" and summary["steps"] == 4 and "test_accuracy_tuned" in summary
    assert "[step 4/4]" in err  # the task's progress came back while it trained
    store = RunStore()
    run = store.get(summary["run_id"])
    assert run.status == "complete" and run.learner == "cli" and run.pid == os.getpid()
    assert run.node in ("127.0.0.1", ray_runner._ray().util.get_node_ip_address()) and run.device == "cpu"
    assert [s for s, _ in store.metrics(run.id)["train_loss"]] == [1, 2, 3, 4]
    assert len([s for s in store.samples(run.id) if s.step == 4]) == 3  # the probe answers at the last evaluation
    folder = store.artifact_dir(run.id)
    assert (folder / "adapter_model.safetensors").is_file() and (folder / tuning.METRICS_FILE).is_file()
    assert not (folder / finetune.CHECKPOINT_FILE).exists()  # removed once complete, as locally
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
    assert code == 0 and json.loads(out)["model"].endswith(f"+ adapter {run.id}"), err

    code, out, err = _run(capsys, "compare", "--task", "support_triage", "--run", run.id, "--limit", "2", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert [a["name"] for a in result["arms"]] == ["base", "prompt", "tuned", "tuned+prompt"]
    compared = store.get(result["run_id"])
    assert compared.status == "complete" and compared.node == run.node and len(result["forgetting"]) == 10


def test_two_learners_train_at_once_and_a_third_run_waits_its_turn(on_ray, tiny_model_dir):
    store = RunStore()

    def submit(who: str) -> str:
        settings = _settings(max_steps=12, eval_every=6)
        return tuning.submit("support_triage", settings, str(tiny_model_dir), device="cpu", store=store, learner=who)

    ann1, ann2, bob1 = submit("ann"), submit("ann"), submit("bob")
    assert [r.id for r in store.queue()] == [ann1, bob1, ann2]  # bob's first run before ann's second
    lines = []
    assert runners.serve(store, worker.RAY, log=lines.append) == 3
    a1, a2, b1 = (store.get(i) for i in (ann1, ann2, bob1))
    assert [r.status for r in (a1, a2, b1)] == ["complete"] * 3, (lines, a1.error, a2.error, b1.error)
    assert max(a1.started, b1.started) < min(a1.finished, b1.finished)  # ann's and bob's first runs overlapped
    assert a2.started >= min(a1.finished, b1.finished) - 0.5  # 2 CPUs, 1 a run: the third waited for a slot
    assert all(r.node != "Ray: waiting for a node" for r in (a1, a2, b1))
    status = ray_runner.read_cluster(store)
    assert status["slots"] == 2 and status["per_run"] == "1 CPUS" and status["error"] is None and status["nodes"]


def test_cancel_a_killed_worker_and_an_app_stop_on_ray_and_the_next_run_still_completes(on_ray, tiny_model_dir):
    store = RunStore()
    long = _settings(max_steps=5000, eval_every=5)
    cancelled = tuning.submit("support_triage", long, str(tiny_model_dir), device="cpu", store=store, learner="ann")
    killed = tuning.submit("support_triage", long, str(tiny_model_dir), device="cpu", store=store, learner="bob")
    dispatcher = ray_runner.Dispatcher(store, on_ray, log=lambda m: None, options={"measure_accuracy": False})

    def step():
        dispatcher.pump()
        dispatcher.watch_cancels()
        return dispatcher.collect(timeout=0.2)

    try:
        for run_id in (cancelled, killed):
            store.start(run_id, os.getpid(), "cpu", ray_runner.PENDING_NODE)
            dispatcher.submit(run_id)
        _wait(
            lambda: (
                step() is not None and all(len(store.metrics(i).get("val_loss", [])) >= 1 for i in (cancelled, killed))
            ),
            what="both runs to train",
        )
        store.request_cancel(cancelled)
        os.kill(dispatcher.workers[killed], signal.SIGKILL)
        _wait(lambda: step() is not None and not dispatcher.refs, what="both runs to end")
        run = store.get(cancelled)
        assert run.status == "cancelled" and tuning.resume_step(store, run)  # its checkpoint came back
        run = store.get(killed)
        assert run.status == "failed" and "the Ray worker training it on" in run.error and "died" in run.error
        assert store.metrics(killed)["train_loss"]  # what it logged before it died stays

        after = tuning.submit("support_triage", _settings(), str(tiny_model_dir), device="cpu", store=store)
        left = tuning.submit("support_triage", long, str(tiny_model_dir), device="cpu", store=store)
        for run_id in (after, left):
            store.start(run_id, os.getpid(), "cpu", ray_runner.PENDING_NODE)
            dispatcher.submit(run_id)
        _wait(lambda: step() is not None and store.get(after).status != "running", what="the next run")
        assert store.get(after).status == "complete"
        _wait(lambda: step() is not None and store.metrics(left).get("val_loss"), what="the last run to train")
        dispatcher.stop_all("interrupt")  # what the dispatcher job process does when its app stops
        run = store.get(left)
        assert run.status == "interrupted" and "app stopped" in run.error and tuning.resume_step(store, run)
    finally:
        dispatcher.close()


def test_a_run_launched_from_the_page_trains_on_ray_and_shows_where(on_ray, tiny_app):
    from ftvpe_core.ui import markdown
    from tests.test_finetune_pages import _until, launch_small_run

    at, run_id = launch_small_run(tiny_app)
    at = _until(at, lambda a: any("Complete" in s.value for s in a.success), "the run to complete", timeout=120)
    store = RunStore()
    run = store.get(run_id)
    assert run.status == "complete" and run.learner.startswith("session-")
    assert run.pid != os.getpid() and run.node != ray_runner.PENDING_NODE  # the dispatcher job process sent it
    assert [s for s, _ in store.metrics(run_id)["val_loss"]] == [2, 4]
    captions = " ".join(c.value for c in at.caption)
    assert f"Trained {markdown.literal(f'on {run.node} · cpu')}" in captions
    assert "the Ray cluster at" in captions and "free slot(s) of 2" in captions


def test_a_class_on_ray_trains_fine_tunes_on_the_cluster_and_scores_everything_here(
    on_ray, monkeypatch, tiny_model_dir, tiny_loaded
):
    from ftvpe_core.teaching import challenges, results

    monkeypatch.setenv("FTVPE_DEVICE", "cpu")
    store = RunStore()
    settings = challenges.ChallengeSettings(
        task="support_triage",
        hidden_limit=challenges.MIN_HIDDEN,
        max_steps=2,
        max_train_examples=4,
        model=str(tiny_model_dir),
    )
    code, key = challenges.create(store, settings)
    runner = runners.current()
    runner.start(store)  # the app starts with a challenge open: the short lane comes up here, warm
    prompt = {"enabled": ["role"], "role": "a support triage assistant"}
    sids = []
    for name in ("Ada", "Bob", "Cy", "Di"):
        challenges.join(store, code, name)
        if name in ("Ada", "Cy"):
            sids.append(challenges.submit_finetune(store, code, name, steps=2, examples=4, device="cpu"))
        else:
            sids.append(challenges.submit_prompt(store, code, name, prompt, tiny_loaded.count_tokens, "cpu"))
    runner.ensure(store, "cpu")
    score_runs = [e["score_run"] for e in results.submissions(store, code)]
    runners.wait(store, score_runs, timeout_s=200)
    entries = results.submissions(store, code)
    assert [e["status"] for e in entries] == ["scored"] * 4, [(e["status"], e["error"]) for e in entries]
    trains = [store.get(e["train_run"]) for e in entries if e["track"] == "finetune"]
    scores = {e["track"]: store.get(e["score_run"]) for e in entries}
    for train in trains:
        assert train.status == "complete" and train.node != ray_runner.PENDING_NODE
        assert train.learner.startswith(f"challenge:{code}:")
    # Trained by the dispatcher on the cluster; scored by this machine's short lane, each after its fine-tune.
    assert {t.pid for t in trains} != {scores["prompt"].pid} and scores["prompt"].pid == scores["finetune"].pid
    for e in entries:
        if e["track"] == "finetune":
            assert store.get(e["score_run"]).started >= store.get(e["train_run"]).finished
    assert "Warm:" in (store.home / "logs" / "worker-cpu-short.log").read_text()
    challenges.close(store, code, key)  # nothing left to be warm for: the short lane leaves
    _wait(lambda: not worker.busy(store, "cpu", "short"), 60, "the short lane to leave")
