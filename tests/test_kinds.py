"""The job-kind registry: one table names each kind of run with its module, lane and whether Ray may run it; the
worker, the runners and the Ray dispatcher read it and name no kind, so a new kind is its module and one line."""

from __future__ import annotations

import ast
import os
import types

import pytest

from ftvpe_core import FtvpeError
from ftvpe_core.jobs import kinds, runners, worker
from ftvpe_core.store.runs import RunStore
from tests.conftest import REPO

JOBS = REPO / "ftvpe_core" / "jobs"


def test_every_kind_names_its_module_a_lane_and_where_it_runs():
    assert set(kinds.KINDS) == {"finetune", "compare", "challenge"}
    for name, kind in kinds.KINDS.items():
        assert kind.lane in kinds.LANES and callable(kind.module.execute), name
        if kind.together:
            assert callable(kind.module.execute_many), name
        if kind.on_ray:
            assert all(callable(getattr(kind.module, f)) for f in ("pack", "on_node", "store_result")), name
    assert kinds.RAY_KINDS == ("finetune", "compare") and kinds.lane_of("challenge").name == "short"
    with pytest.raises(FtvpeError, match="Unknown kind of run 'eval'"):
        kinds.get("eval")


@pytest.mark.parametrize("module", ["worker.py", "runners.py", "ray_runner.py"])
def test_the_runners_name_no_kind(module):
    tree = ast.parse((JOBS / module).read_text(encoding="utf-8"))
    named = sorted(
        {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in kinds.KINDS}
        | {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "KIND"}
    )
    assert named == []


def test_a_new_kind_is_one_module_and_one_line_and_the_job_process_runs_it(monkeypatch):
    done = []

    def execute(store, run_id, interrupted=None, on_event=None):
        done.append(run_id)
        store.finish(run_id, {"echo": store.get(run_id).settings["say"]})
        return {"run_id": run_id, "status": "complete"}

    echo = types.ModuleType("echo")
    echo.execute = execute
    monkeypatch.setitem(kinds.KINDS, "echo", kinds.Kind("echo", "short", echo))  # the one line
    store = RunStore()
    run_id = store.create("echo", "-", {"say": "hi"}, "cpu")
    store.artifact_dir(run_id)
    assert kinds.lane_kinds("short") == ("challenge", "echo") and kinds.local_kinds("train") == ("finetune", "compare")
    assert worker.serve(store, "cpu", log=lambda m: None) == 1
    assert done == [run_id] and store.get(run_id).status == "complete" and store.get(run_id).summary["echo"] == "hi"
    # the CLI's foreground runs it the same way, through the runner
    again = store.create("echo", "-", {"say": "again"}, "cpu")
    store.artifact_dir(again)
    assert runners.current().foreground(store, again)["status"] == "complete" and done[-1] == again
    assert store.get(again).pid == os.getpid()
