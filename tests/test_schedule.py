"""Queue fairness and start estimates: pure order, and the store claiming in that order (both runners use it)."""

import pytest

from ftvpe_core.store import schedule
from ftvpe_core.store.runs import RunStore
from ftvpe_core.store.schedule import Waiting


def test_each_learner_gets_a_turn_before_anybodys_second_run():
    queued = [
        Waiting("a1", "ann", 1),
        Waiting("a2", "ann", 2),
        Waiting("a3", "ann", 3),
        Waiting("b1", "bob", 4),
        Waiting("c1", "cat", 5),
        Waiting("b2", "bob", 6),
    ]
    assert schedule.fair_order(queued, {}) == ["a1", "b1", "c1", "a2", "b2", "a3"]


def test_a_learner_with_a_run_training_waits_behind_those_with_none():
    queued = [Waiting("a2", "ann", 1), Waiting("b1", "bob", 2), Waiting("x", None, 3)]
    assert schedule.fair_order(queued, {"ann": 1}) == ["b1", "x", "a2"]
    assert schedule.fair_order(queued, {"ann": 1, "bob": 2, None: 1}) == ["a2", "x", "b1"]


def test_start_estimate_fills_the_earliest_free_slot_in_turn():
    assert schedule.start_estimate(1, 2, [], 60) == 0.0  # a free slot
    assert schedule.start_estimate(1, 1, [20], 60) == 20  # after the run training now
    assert schedule.start_estimate(3, 2, [10, 30], 60) == 70  # slots free at 10, 30; the 2nd run ahead takes 10
    assert schedule.start_estimate(2, 1, [-5], 60) == 60  # an overdue ETA counts as now
    with pytest.raises(ValueError):
        schedule.start_estimate(0, 1, [], 60)
    assert schedule.typical_run_s([]) == schedule.DEFAULT_RUN_S
    assert schedule.typical_run_s([30, 10, 20, 100]) == 25


def test_the_store_claims_and_lists_the_queue_in_fair_order():
    store = RunStore()
    a1, a2 = (store.create("finetune", "d", {}, "cpu", learner="ann") for _ in range(2))
    b1 = store.create("finetune", "d", {}, "cpu", learner="bob")
    other = store.create("finetune", "d", {}, "cuda", learner="cat")
    assert [r.id for r in store.queue("cpu")] == [a1, b1, a2]
    assert [r.learner for r in store.queue("cpu")] == ["ann", "bob", "ann"]
    assert store.claim("cpu", 11) == a1
    assert [r.id for r in store.queue("cpu")] == [b1, a2]  # ann trains now: bob goes first
    assert store.claim("cpu", 12) == b1 and store.claim("cpu", 13) == a2 and store.claim("cpu", 14) is None
    assert store.get(a1).node  # this machine's name
    assert store.claim(None, 15) == other and store.get(other).device == "cuda"  # any device keeps its own
    store.place(other, "10.0.0.7", "cuda:0")
    assert (store.get(other).node, store.get(other).device) == ("10.0.0.7", "cuda:0")


def test_a_queued_run_sees_its_place_and_when_it_starts_on_the_local_runner():
    from ftvpe_core.jobs import runners

    store = RunStore()
    running = store.create("finetune", "d", {}, "cpu", learner="ann")
    store.claim("cpu", 11)
    store.log_metrics(running, 3, eta_s=40.0, total_steps=10)
    ann2 = store.create("finetune", "d", {}, "cpu", learner="ann")
    bob = store.create("finetune", "d", {}, "cpu", learner="bob")
    slots = runners.LocalRunner().slots(store)
    assert (slots.queued, slots.running, slots.slots, slots.free) == (2, 1, 1, 0)
    first, second = (
        runners.queue_place(store, store.get(bob), slots),
        runners.queue_place(store, store.get(ann2), slots),
    )
    assert (first.position, first.of, first.starts_in_s) == (1, 2, 40.0)  # when ann's run ends
    assert (second.position, second.starts_in_s) == (2, 40.0 + schedule.DEFAULT_RUN_S)  # then bob's takes a run's time
    assert runners.queue_place(store, store.get(running), slots) is None


def test_cli_runs_list_shows_the_queue_position(capsys):
    import json

    from ftvpe_core import cli

    store = RunStore()
    a1, a2 = (store.create("finetune", "d", {}, "cpu", learner="ann") for _ in range(2))
    b1 = store.create("finetune", "d", {}, "cpu", learner="bob")
    assert cli.main(["runs", "list", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)["runs"]}
    assert [rows[i]["queue_position"] for i in (a1, b1, a2)] == [1, 2, 3]
    assert cli.main(["runs", "list"]) == 0
    assert f"{b1}  finetune  d                  queued  position 2 of 3" in capsys.readouterr().out
