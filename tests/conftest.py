"""Shared fixtures: an isolated data folder and no hub access for every test, a tiny random chat model, and the
app on that model for the page tests (``tiny_app``).

Embedded-model tests share one data folder for the whole run (``FTVPE_TEST_HOME``, default
``.ftvpe-test-home`` in the repository) so the GGUF-to-safetensors cache is built once and reused.

``make test`` runs the suite on every core with pytest-xdist (``-n auto``), then the real-browser journeys in
one process (``-m browser``: each starts an app server whose job processes use every core; each module's server
has a data folder of its own, ``tests/test_browser.py::browser_home``). What the parallel part needs:
- the Ray tests share one local Ray head per worker (its token lives in ``~/.ray``); the ``browser`` and ``ray``
  marks also get an xdist group here, which ``--dist loadgroup`` would keep on one worker, but xdist 3.8 names the
  group in ``item._nodeid``, which pytest 9 no longer reads, so today they spread like any other test;
- the embedded model's cache is converted once, under a file lock, before the first embedded test
  (``pytest_runtest_setup``);
- torch in each worker uses its share of the cores (two workers on two cores: one thread each), except in tests
  marked ``all_cores``, which check what the kernels' threads could change (batch invariance) as the app runs.
Every other fixture is per test (``tmp_path``) or per worker (session scope: a worker is its own process).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# huggingface_hub reads these when it is first imported, so a per-test monkeypatch alone comes too late.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parent.parent
PAGE_TIMEOUT = 90
"""Seconds one AppTest script run may take: a first run imports torch and plotly, slow on a busy machine."""
_USER_SETTINGS = ("FTVPE_HOME", "FTVPE_MODEL", "FTVPE_DEVICE", "FTVPE_DTYPE", "FTVPE_ALLOW_DOWNLOAD")


XDIST_GROUPS = ("browser", "ray")
"""Marks whose tests run together on one xdist worker (``--dist loadgroup``), one group per mark."""
ALL_CORES_MODULES = ("test_embedded.py", "test_engine.py", "test_fastpath.py")
"""Modules marked ``all_cores`` here (so their owners' edits and this list do not meet): batch invariance and bit
for bit answers, which the kernels' threads could break (a row on the second thread) and one thread would hide."""


def embedded_home() -> Path:
    """The data folder shared by the embedded-model tests of one run (and the runs after it)."""
    return Path(os.environ.get("FTVPE_TEST_HOME") or REPO / ".ftvpe-test-home")


def worker_threads() -> int:
    """Torch threads for a test in this process: all cores when it is the only test process (no xdist, or one
    worker), else this worker's share of them (at least one)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    return max(1, (os.cpu_count() or 1) // workers)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in ALL_CORES_MODULES:
            item.add_marker(pytest.mark.all_cores)
        for mark in XDIST_GROUPS:
            if item.get_closest_marker(mark):
                item.add_marker(pytest.mark.xdist_group(mark))


def _set_torch_threads(n: int) -> None:
    """``n`` intra-op threads on this thread and on the app's compute thread, where its forward passes run (new
    threads start with this thread's count)."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    models = sys.modules.get("ftvpe_core.model.models")
    if models is not None and models._compute_pool is not None:
        models.compute(torch.set_num_threads, n)


@pytest.fixture(autouse=True)
def _torch_threads(request):
    """Each test starts with this worker's share of the cores (a bench run in this process sets all of them), or
    with every core when marked ``all_cores``. Without xdist that is torch's own default, every core."""
    cores = os.cpu_count() or 1
    wanted = cores if request.node.get_closest_marker("all_cores") else worker_threads()
    if wanted != cores or "torch" in sys.modules:
        _set_torch_threads(wanted)


_embedded_cached = False


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures: a module-scoped one may load the embedded model
def pytest_runtest_setup(item):
    """Before the first embedded test of this process: the embedded model's safetensors cache, converted from the
    GGUF file once (a browser test's server needs it too). Under a file lock: xdist workers that get here at once
    (or two runs sharing FTVPE_TEST_HOME) wait while one converts, then find it done."""
    global _embedded_cached
    if _embedded_cached or not item.get_closest_marker("embedded"):
        return
    import fcntl

    from ftvpe_core.model import models

    home = embedded_home()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".convert.lock", "w") as lock, pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTVPE_HOME", str(home))
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        models.cache_gguf(models.embedded_gguf_path())
    _embedded_cached = True


@pytest.fixture(autouse=True)
def _isolated_env(request, monkeypatch, tmp_path):
    for name in _USER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    if request.node.get_closest_marker("embedded"):
        monkeypatch.setenv("FTVPE_HOME", str(embedded_home()))
    else:
        monkeypatch.setenv("FTVPE_HOME", str(tmp_path / "ftvpe-home"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tests.tiny import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"))


@dataclass
class TinyApp:
    """The app as the page tests run it: on the session's tiny model, with this test's own data folder."""

    model: Path
    """The tiny model's folder (``FTVPE_MODEL``): one for the whole session, so ``st.cache_resource``, which
    lasts the whole process, loads it once for every page test."""
    home: Path
    """This test's data folder (``FTVPE_HOME``): a fresh run store per test."""

    def page(self, path: str = "app.py", timeout: float = PAGE_TIMEOUT):
        """An AppTest of the script at ``path`` (from the repository root, e.g. ``pages/4_Compare.py``), not run
        yet. ``app.py`` is the navigation; AppTest runs its default page, Home, and ``switch_page`` the others."""
        from streamlit.testing.v1 import AppTest

        return AppTest.from_file(str(REPO / path), default_timeout=timeout)


@pytest.fixture
def tiny_app(_isolated_env, monkeypatch, tiny_model_dir) -> TinyApp:
    """The app's settings for a page test: the tiny model, on the CPU in float32 (as on a machine without a
    GPU), and the data folder the autouse fixture made for this test."""
    monkeypatch.setenv("FTVPE_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("FTVPE_DEVICE", "cpu")
    monkeypatch.setenv("FTVPE_DTYPE", "float32")
    return TinyApp(model=tiny_model_dir, home=Path(os.environ["FTVPE_HOME"]))


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir):
    """The tiny model loaded once for the session. Tests must not modify it."""
    from ftvpe_core.model import models

    return models.load(str(tiny_model_dir), device="cpu", weight_format="float32")


@pytest.fixture(scope="session")
def lively(tmp_path_factory):
    """The tiny model with larger random weights (norms kept), so greedy answers vary from prompt to prompt and
    some end early; with the default initialisation every answer is 'assistant assistant ...'."""
    import torch

    from ftvpe_core.model import models
    from tests.tiny import make_tiny_model_dir

    loaded = models.load(str(make_tiny_model_dir(tmp_path_factory.mktemp("lively"))), "cpu", "float32")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in loaded.model.named_parameters():
            if "norm" not in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 5 / p.shape[-1] ** 0.5)
    return loaded


def reference_greedy(loaded, prompt_ids: list[int], n: int) -> list[int]:
    """Greedy tokens from the model's own forward pass with a DynamicCache, one at a time, without the engine:
    what the engine's answers are checked against."""
    import torch
    from transformers import DynamicCache

    from ftvpe_core.model import engine, models

    def run() -> list[int]:
        stop, out = engine.stop_ids(loaded), []
        with torch.inference_mode():
            cache, ids = DynamicCache(config=loaded.model.config), torch.tensor([prompt_ids])
            for _ in range(n):
                token = int(loaded.model(input_ids=ids, past_key_values=cache, use_cache=True).logits[0, -1].argmax())
                if token in stop:
                    break
                out.append(token)
                ids = torch.tensor([[token]])
        return out

    return models.compute(run)


@pytest.fixture(scope="session")
def ray_head():
    """One local Ray head for the test session (2 CPUs, loopback, a short temp folder for its sockets), reused by
    every Ray test; this process connects to it once, so Ray's workers stay warm from test to test."""
    import shutil
    import tempfile

    from ftvpe_core.jobs import ray_runner

    temp = tempfile.mkdtemp(prefix="ftray", dir="/tmp")
    try:
        with ray_runner.local_head(2, temp) as address:
            # Imported once the head has written its token (~/.ray/auth_token), so this driver sends it.
            ray = ray_runner._ray()
            yield address
            if ray.is_initialized():
                ray.shutdown()
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def run_bench(script: str, *args: str, timeout: float = 300):
    """``python bench/SCRIPT ARGS`` from the repository root, as a user runs it; the finished process."""
    import subprocess
    import sys

    command = [sys.executable, str(REPO / "bench" / script), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def bench_json(script: str, *args: str) -> dict:
    """The JSON report of a bench script that must succeed (its stderr's tail when it does not)."""
    import json

    done = run_bench(script, *args, "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)
