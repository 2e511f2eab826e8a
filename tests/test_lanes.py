"""The job processes' lanes on the tiny model: a prompt's score beside a training run, warm lanes while a challenge
is open, the fair queue by learner, and nothing of a challenge lost (a score waits for its fine-tune, a killed or
interrupted fine-tune is scored once it completes, a half-written submission does not wait forever)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from ftvpe_core.jobs import kinds, runners, worker
from ftvpe_core.store.runs import RunStore
from ftvpe_core.teaching import challenges, results
from ftvpe_core.training import finetune, tuning
from ftvpe_core.ui import room
from tests.test_worker import _wait

pytestmark = pytest.mark.timeout(480)

PROMPT = {"enabled": ["role", "context"], "role": "a support triage assistant", "output_format": "one word"}


def _challenge(store, tiny_model_dir, **overrides):
    s = challenges.ChallengeSettings(
        **{
            "task": "support_triage",
            "hidden_limit": challenges.MIN_HIDDEN,
            "max_steps": 400,
            "max_train_examples": 8,
            "model": str(tiny_model_dir),
            **overrides,
        }
    )
    return challenges.create(store, s)


def _score_run(store, sid) -> str:
    with store.reading() as conn:
        return conn.execute("SELECT score_run FROM challenge_submissions WHERE id = ?", (sid,)).fetchone()[0]


def _entry(store, code, sid) -> dict:
    return next(e for e in results.submissions(store, code) if e["id"] == sid)


def _tick_until(store, predicate, what, timeout=240.0):
    def check():
        runners.current().tick(store)
        return predicate()

    _wait(check, timeout=timeout, what=what)


def _log(store, name: str) -> str:
    path = store.home / "logs" / f"worker-{name}.log"
    return path.read_text(errors="replace") if path.is_file() else ""


def test_every_kind_has_one_lane_and_a_ray_cluster_trains_the_train_lane(monkeypatch):
    assert {kind.lane for kind in kinds.KINDS.values()} <= set(kinds.LANES)
    assert kinds.lane_kinds("short") == ("challenge",) and kinds.RAY_KINDS == kinds.lane_kinds("train")
    assert kinds.local_kinds() is None and kinds.local_kinds("short") == ("challenge",)
    monkeypatch.setenv("FTVPE_RAY_ADDRESS", "127.0.0.1:1")
    assert kinds.local_kinds() == ("challenge",) and kinds.local_kinds("train") == ()
    with pytest.raises(Exception, match="Unknown lane"):
        kinds.lane_kinds("fast")


def test_a_flooders_300_queued_runs_delay_another_learners_first_run_by_at_most_one(tiny_model_dir, tiny_loaded):
    store = RunStore()
    code, _ = _challenge(store, tiny_model_dir)
    for name in ("Mallory", "Bob"):
        challenges.join(store, code, name)
    flood = store.get(_score_run(store, challenges.submit_prompt(store, code, "Mallory", PROMPT, None, "cpu")))
    assert flood.learner == challenges.learner_key(code, "Mallory")
    for _ in range(299):  # the flood as the store sees it: one learner's 300 queued scoring runs
        store.create(flood.kind, flood.dataset, flood.settings, "cpu", learner=flood.learner)
    bob = _score_run(store, challenges.submit_prompt(store, code, "Bob", PROMPT, tiny_loaded.count_tokens, "cpu"))
    queue = [r.id for r in store.queue("cpu")]
    assert len(queue) == 301 and queue.index(bob) <= 1, queue.index(bob)
    bob_entry = next(e for e in results.submissions(store, code, "Bob"))
    assert bob_entry["status"] == "waiting"
    status = room.status(store, bob_entry, store.get(bob), runners.current().slots(store))
    assert status.text.startswith("Queued to score: 2nd of 301 in the queue, starts"), status.text
    place = runners.queue_place(store, store.get(queue[40]), runners.current().slots(store))
    assert place is not None and (place.position, place.of) == (41, 301)  # in the lane's second batch
    assert place.starts_in_s == pytest.approx(60.0, abs=1)  # after the first (no score timed yet: a minute)
    assert bob in store.claim_many("cpu", os.getpid(), kinds=kinds.lane_kinds("short"), limit=2)


def test_a_score_run_is_not_claimed_before_its_fine_tune_has_ended(tiny_model_dir):
    store = RunStore()
    code, _ = _challenge(store, tiny_model_dir)
    challenges.join(store, code, "Ann")
    sid = challenges.submit_finetune(store, code, "Ann", steps=2, examples=4, device="cpu")
    train, score = _entry(store, code, sid)["train_run"], _score_run(store, sid)
    short = kinds.lane_kinds("short")
    assert store.get(train).learner == store.get(score).learner == challenges.learner_key(code, "Ann")
    assert store.claim("cpu", os.getpid(), kinds=short) is None and store.queue("cpu", short) == []
    assert store.claim("cpu", os.getpid()) == train  # the training run, never its score
    assert store.claim("cpu", os.getpid(), kinds=short) is None  # running: still waits
    assert _entry(store, code, sid)["status"] == "training"
    store.interrupt(train)
    assert store.claim("cpu", os.getpid(), kinds=short) is None  # interrupted: a restart or Resume goes on
    store.fail(train, "test")
    assert store.claim("cpu", os.getpid(), kinds=short) == score  # ended: the score says why it has none


def test_a_half_written_submission_does_not_wait_forever(tiny_model_dir):
    store = RunStore()
    code, _ = _challenge(store, tiny_model_dir)
    challenges.join(store, code, "Ann")
    # The process died between the submission's two writes: recorded, but no run queued for it.
    sid, _, _ = challenges._reserve(store, code, "Ann", "prompt", {"prompt": PROMPT}, 5, None)
    assert _entry(store, code, sid)["status"] == "waiting"  # a moment later it may still get its run
    with store.writing() as conn:
        conn.execute("UPDATE challenge_submissions SET created = created - 120 WHERE id = ?", (sid,))
    entry = _entry(store, code, sid)
    assert entry["status"] == "failed" and "submit it again" in entry["error"]
    challenges.submit_prompt(store, code, "Ann", PROMPT, None, "cpu")  # and the learner may submit again


def test_a_prompt_is_scored_by_a_warm_short_lane_while_a_fine_tune_trains(monkeypatch, tiny_model_dir, tiny_loaded):
    monkeypatch.setenv("FTVPE_WARM_IDLE_S", "300")
    monkeypatch.setenv("FTVPE_DEVICE", "cpu")
    store = RunStore()
    code, key = _challenge(store, tiny_model_dir)
    runners.current().start(store)  # the app starts: with a challenge open both lanes come up, warm
    _wait(lambda: "Warm:" in _log(store, "cpu-short"), what="the short lane to load its model")
    _wait(lambda: "Warm:" in _log(store, "cpu"), what="the train lane to read the model")
    assert worker.busy(store, "cpu", "short") and worker.busy(store, "cpu", "train")
    assert "kept loaded" in _log(store, "cpu-short") and "read once" in _log(store, "cpu")

    long = finetune.TrainSettings(max_steps=5000, batch_size=4, max_length=48, eval_every=1000, max_val_examples=4)
    training = tuning.submit("support_triage", long, str(tiny_model_dir), device="cpu", store=store, learner="lab")
    _tick_until(store, lambda: store.metrics(training).get("train_loss"), "the fine-tune to train")
    challenges.join(store, code, "Ada")
    sid = challenges.submit_prompt(store, code, "Ada", PROMPT, tiny_loaded.count_tokens, "cpu")
    score = _score_run(store, sid)
    words = runners.place_words(store, score)  # the warm lane may have taken it already
    assert words.startswith("queued: 1st of 1, starts") or words in ("running", "complete"), words
    _tick_until(store, lambda: _entry(store, code, sid)["status"] == "scored", "the prompt's score")
    run = store.get(store.get(score).id)
    assert store.get(training).status == "running"  # scored beside the training run, not after it
    assert run.pid != store.get(training).pid
    metrics = store.metrics(score)
    assert [v for _, v in metrics["lane_batch"]] == [1.0] and metrics["lane_run_s"][0][1] > 0
    assert "lane_process_s" in metrics  # the lane's first run: what the process took to start (warm: before it)
    assert 0.0 <= _entry(store, code, sid)["score"] <= 1.0

    store.request_cancel(training)
    _tick_until(store, lambda: store.get(training).status == "cancelled", "the fine-tune to stop")
    challenges.close(store, code, key)  # nothing left to be warm for: both lanes leave
    _wait(lambda: not worker.busy(store, "cpu", "short") and not worker.busy(store, "cpu", "train"), 60, "lanes to go")


def test_the_training_lane_gives_the_short_lane_its_core_between_steps_while_it_scores():
    import torch

    store = RunStore()
    worker.lock_path(store, "cpu").parent.mkdir(parents=True, exist_ok=True)
    full = torch.get_num_threads()
    polled = worker._Yielding(store, "cpu", lambda: False)
    polled.CHECK_S = 0.0
    try:
        assert polled() is False and torch.get_num_threads() == full
        with worker._working(store, "cpu", "short"):  # the short lane scores
            assert polled() is False and torch.get_num_threads() == max(1, full - kinds.LANES["short"].threads)
        polled()
        assert torch.get_num_threads() == full  # done: training has every core again
    finally:
        torch.set_num_threads(full)


def test_warm_models_are_those_of_open_challenges_busy_within_the_idle_time(tiny_model_dir):
    store = RunStore()
    code, key = _challenge(store, tiny_model_dir)
    assert store.warm_models(60) == [str(tiny_model_dir)]
    with store.writing() as conn:
        conn.execute("UPDATE challenges SET created = created - 120")
    assert store.warm_models(60) == []  # posed two minutes ago, no submission since
    challenges.join(store, code, "Ann")
    challenges.submit_prompt(store, code, "Ann", PROMPT, None, "cpu")
    assert store.warm_models(60) == [str(tiny_model_dir)]
    challenges.close(store, code, key)
    assert store.warm_models(60) == []


def _kill_and_wait(store, run_id):
    os.kill(store.get(run_id).pid, signal.SIGKILL)
    _wait(lambda: worker.reap(store) or store.get(run_id).status != "running", what="the kill to be noticed")


def test_a_fine_tune_killed_mid_training_is_scored_once_resumed(monkeypatch, tiny_model_dir):
    monkeypatch.setenv("FTVPE_WARM_IDLE_S", "0")
    store = RunStore()
    code, _ = _challenge(store, tiny_model_dir)
    challenges.join(store, code, "Ann")
    sid = challenges.submit_finetune(store, code, "Ann", steps=20, examples=4, device="cpu")
    train = _entry(store, code, sid)["train_run"]
    checkpoint = store.artifact_dir(train) / finetune.CHECKPOINT_FILE
    _tick_until(store, lambda: checkpoint.is_file() and finetune.checkpoint_step(checkpoint), "the first checkpoint")
    _kill_and_wait(store, train)
    assert store.get(train).status == "failed"
    _tick_until(store, lambda: store.get(_score_run(store, sid)).status == "failed", "the score to give up")
    assert "did not finish (failed)" in _entry(store, code, sid)["error"]

    assert tuning.resume(store, train) >= 10  # from its checkpoint; its score is queued again, after it
    assert store.get(_score_run(store, sid)).status == "queued"
    _tick_until(store, lambda: _entry(store, code, sid)["status"] in ("scored", "failed"), "the resumed score")
    entry = _entry(store, code, sid)
    assert entry["status"] == "scored" and store.get(train).summary["steps"] == 20, entry


def test_a_restart_requeues_a_challenge_fine_tune_the_app_stop_interrupted(monkeypatch, tiny_model_dir):
    monkeypatch.setenv("FTVPE_WARM_IDLE_S", "0")
    store = RunStore()
    code, _ = _challenge(store, tiny_model_dir)
    challenges.join(store, code, "Ann")
    sid = challenges.submit_finetune(store, code, "Ann", steps=20, examples=4, device="cpu")
    train = _entry(store, code, sid)["train_run"]
    # A stand-in for the app: a shell that starts the job process as its child, then is killed (the app stops).
    app = subprocess.Popen(
        ["bash", "-c", f'"{sys.executable}" -m ftvpe_core worker --device cpu --parent $$ & wait'],
        env={**os.environ, "FTVPE_HOME": str(store.home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait(lambda: store.metrics(train).get("train_loss"), what="training to start")
    app.kill()
    app.wait()
    _wait(lambda: store.get(train).status != "running", what="the job process to stop")
    assert store.get(train).status == "interrupted"
    assert _entry(store, code, sid)["status"] == "training"  # not failed: it goes on at the next start
    # The app starts again: its first poll re-queues the interrupted fine-tune, which trains and is scored.
    _tick_until(store, lambda: _entry(store, code, sid)["status"] in ("scored", "failed"), "the score")
    entry = _entry(store, code, sid)
    assert entry["status"] == "scored" and store.get(train).status == "complete", entry
