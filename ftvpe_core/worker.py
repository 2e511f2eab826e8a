"""Job processes: queued runs (fine-tuning, comparisons, challenge scoring) done one at a time per device, outside the app.

The app queues a run (``jobs.submit``) and calls ``ensure_worker``, which starts
``python -m ftvpe_core worker --device D`` when runs wait and no job process serves that device. The job
process holds a lock file per device (so there is only ever one per device), claims queued runs in order
and trains them with ``jobs.execute``; when the queue is empty it exits. Training in its own process means
a crash or an out-of-memory kill takes down the job, never the app: the next poll (``reap``) marks the run
failed. A job process started by the app stops when the app stops (it watches its parent) and marks its
run interrupted; queued runs wait for the next start.

With a Ray cluster configured (``runners``), the app starts one job process for the whole cluster instead
(``worker --runner ray``, key ``RAY``): the Ray dispatcher (``ray_runner``), with the same lock, parent watch and
reaping.

This module does not import torch or streamlit; the job process does, through ``jobs``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from ftvpe_core import FtvpeError
from ftvpe_core.runs import RunStore

STOP_GRACE_S = 5.0
"""How long a job process whose app is gone waits for its run to stop at a step before it leaves anyway."""

RAY = "ray"
"""The key (in place of a device) of the job process that dispatches queued runs to a Ray cluster."""

_started: dict[tuple[str, str], subprocess.Popen] = {}
_started_lock = threading.Lock()


def lock_path(store: RunStore, device: str) -> Path:
    """The lock file a job process holds while it serves ``device``."""
    safe = "".join(c if c.isalnum() else "-" for c in device)
    return store.home / "locks" / f"worker-{safe}.lock"


@contextlib.contextmanager
def _device_lock(store: RunStore, device: str) -> Iterator[bool]:
    """Hold the device's lock for the block; yields False (holding nothing) when another process has it.

    An flock dies with its process, so a killed job process never leaves a stale lock behind."""
    path = lock_path(store, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def busy(store: RunStore, device: str) -> bool:
    """Whether a job process serves ``device`` now."""
    with _device_lock(store, device) as got:
        return not got


def serve(store: RunStore, device: str, parent_pid: int | None = None, log=print) -> int:
    """Train queued runs for ``device`` one after another until none is left; returns how many it took.

    Args:
        parent_pid: the app's process; when it is gone (or SIGTERM arrives) the current run stops, is
            marked interrupted, and no further run starts.
    """
    stop = threading.Event()
    finished = threading.Event()
    current: dict = {}
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())

    def interrupted() -> bool:
        if parent_pid is not None and os.getppid() != parent_pid:
            stop.set()
        return stop.is_set()

    if parent_pid is not None:
        threading.Thread(
            target=_watch_parent, args=(parent_pid, stop, finished, current, store, log), daemon=True
        ).start()
    try:
        return _serve(store, device, interrupted, log, current)
    finally:
        finished.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _watch_parent(parent_pid: int, stop, finished, current: dict, store: RunStore, log) -> None:
    """Notice the app going away within half a second, however it goes, even while the run is in a phase
    that does not ask ``interrupted`` (loading, evaluating, saving); if the run has not stopped
    STOP_GRACE_S later, mark it interrupted and leave, so no job process outlives its app for long."""
    while not finished.wait(0.5):
        if os.getppid() != parent_pid:
            stop.set()
        if stop.is_set():
            break
    if finished.wait(STOP_GRACE_S):
        return
    run_ids = list(current.get("runs", [])) or [current.get("run")]  # the Ray dispatcher has several
    for run_id in run_ids:
        if run_id is None:
            continue
        try:
            store.interrupt(run_id)
        except Exception:  # noqa: BLE001 - leaving matters more than the mark; the next start finds the run
            pass
    log(f"The app is gone and run(s) {', '.join(map(str, run_ids))} did not stop within {STOP_GRACE_S:.0f} s; leaving.")
    os._exit(3)


def _serve(store: RunStore, device: str, interrupted, log, current: dict | None = None) -> int:
    from ftvpe_core import challenges, compare, jobs, runners

    executors = {"compare": compare.execute, "challenge": challenges.execute}

    taken = 0
    with _device_lock(store, device) as got:
        if not got:
            log(f"Another job process already serves {device}; nothing to do.")
            return 0
        if device == RAY:
            from ftvpe_core import ray_runner

            return ray_runner.serve(store, interrupted, log, current)
        while not interrupted():
            run_id = store.claim(device, os.getpid(), kinds=runners.local_kinds())
            if run_id is None:
                break
            taken += 1
            if current is not None:
                current["run"] = run_id
            log(f"Run {run_id}: started on {device}.")
            try:
                execute = executors.get(store.get(run_id).kind, jobs.execute)
                summary = execute(store, run_id, interrupted=interrupted)
                log(f"Run {run_id}: {summary.get('status')}.")
            except Exception as e:  # the run is marked failed; go on with the queue
                log(f"Run {run_id}: failed: {type(e).__name__}: {e}")
    return taken


def _reap_children() -> None:
    with _started_lock:
        for key, proc in list(_started.items()):
            if proc.poll() is not None:  # also collects the exit status, so no zombie keeps its pid alive
                del _started[key]


def ensure_worker(store: RunStore, device: str) -> bool:
    """Start a job process for ``device`` when runs wait for it and none serves it; True when one started.

    The job process is this process's child and stops when this process stops."""
    _reap_children()
    if not store.queue(None if device == RAY else device) or busy(store, device):
        return False
    key = (str(store.home), device)
    with _started_lock:
        proc = _started.get(key)
        if proc is not None and proc.poll() is None:
            return False  # started a moment ago and not holding its lock yet
        log_dir = store.home / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "FTVPE_HOME": str(store.home)}
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        serves = ["--runner", "ray"] if device == RAY else ["--device", device]
        command = [sys.executable, "-m", "ftvpe_core", "worker", *serves, "--parent", str(os.getpid())]
        try:
            with open(log_dir / f"worker-{lock_path(store, device).stem[7:]}.log", "ab") as log:
                # A new session: Ctrl-C in the app's terminal reaches the app, and the job process then
                # sees its parent gone and stops cleanly instead of dying mid-write.
                _started[key] = subprocess.Popen(
                    command,
                    cwd=root,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
        except OSError as e:
            raise FtvpeError(f"Could not start a job process: {e}") from e
    # Wait for it in the background so its exit status is collected as soon as it ends.
    threading.Thread(target=_started[key].wait, daemon=True).start()
    return True


def reap(store: RunStore) -> list[str]:
    """Mark runs whose job process died (killed, out of memory) as failed; returns their ids."""
    _reap_children()
    return store.reap_dead()
