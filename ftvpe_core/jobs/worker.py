"""Job processes: queued runs (fine-tuning, comparisons, challenge scoring) done outside the app, in lanes.

The app queues a run (a kind's ``submit``) and the runner (``runners``) calls ``ensure_worker``, which starts
``python -m ftvpe_core worker --device D --lane L`` when runs wait for that lane of that device and no job process
serves it. Each device has two lanes (``kinds.LANES``, each kind's in ``kinds.KINDS``): 'train' takes long
runs one at a time, 'short' takes inference-only work of seconds (a class challenge's scoring) beside it, every
waiting run at once, so a prompt's score never waits behind a fine-tune. A job process holds a lock file per device
and lane (so there is only ever one of each), claims queued runs in the store's fair order and executes them; when
its lane is empty it exits, unless a class challenge is open and busy (``RunStore.warm_models``): then it stays up,
its model loaded, for up to ``warm_idle_s()`` without work, so the next submission is scored at once. Training in
its own process means a crash or an out-of-memory kill takes down the job, never the app: the next poll (``reap``)
marks the run failed. A job process started by the app stops when the app stops (it watches its parent) and marks
its run interrupted; queued runs wait for the next start.

With a Ray cluster configured (``runners``), the app starts one job process for the whole cluster instead
(``worker --runner ray``, key ``RAY``): the Ray dispatcher (``ray_runner``, handed to ``serve`` as its
``dispatch``), with the same lock, parent watch and reaping; the short lane stays on this machine.

What each kind of run does is the kinds table's (``kinds``): this module names no kind. It does not import torch or
streamlit; the kinds' functions import torch when they run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ftvpe_core import HOME_DIR, FtvpeError
from ftvpe_core.jobs import kinds
from ftvpe_core.store.runs import RunStore

STOP_GRACE_S = 5.0
"""How long a job process whose app is gone waits for its run to stop at a step before it leaves anyway."""

RAY = "ray"
"""The key (in place of a device) of the job process that dispatches queued runs to a Ray cluster."""
WARM_POLL_S = 0.2
"""How often a warm job process with nothing to do looks at the queue."""
WARM_IDLE_S = 600.0
"""How long a warm job process waits without work while a challenge is open (FTVPE_WARM_IDLE_S overrides)."""


def warm_idle_s() -> float:
    """Seconds a warm job process waits for work (FTVPE_WARM_IDLE_S, default WARM_IDLE_S; 0 keeps none warm)."""
    try:
        return max(0.0, float(os.environ.get("FTVPE_WARM_IDLE_S", WARM_IDLE_S)))
    except ValueError:
        value = os.environ["FTVPE_WARM_IDLE_S"]
        raise FtvpeError(f"FTVPE_WARM_IDLE_S must be a number of seconds, got '{value}'.") from None


def _key(device: str, lane: str | None) -> str:
    """The lock's and the log's name of a device's lane (the train lane keeps the device's own name)."""
    return device if lane in (None, "train") or device == RAY else f"{device}-{lane}"


_IMPORTED = time.monotonic()
"""About when this process started (a job process imports this module first): its start-up cost is measured."""
_started: dict[tuple[str, str], subprocess.Popen] = {}
_started_lock = threading.Lock()


def lock_path(store: RunStore, device: str, lane: str | None = None) -> Path:
    """The lock file a job process holds while it serves ``device``'s ``lane`` (None: the train lane)."""
    safe = "".join(c if c.isalnum() else "-" for c in _key(device, lane))
    return store.home / "locks" / f"worker-{safe}.lock"


@contextlib.contextmanager
def _device_lock(store: RunStore, device: str, lane: str | None = None) -> Iterator[bool]:
    """Hold the lane's lock for the block; yields False (holding nothing) when another process has it.

    An flock dies with its process, so a killed job process never leaves a stale lock behind."""
    path = lock_path(store, device, lane)
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


def busy(store: RunStore, device: str, lane: str | None = None) -> bool:
    """Whether a job process serves ``device``'s ``lane`` (None: the train lane) now."""
    with _device_lock(store, device, lane) as got:
        return not got


def serve(
    store: RunStore,
    device: str,
    parent_pid: int | None = None,
    log=print,
    lane: str | None = None,
    dispatch: Callable[..., int] | None = None,
) -> int:
    """Execute queued runs for ``device`` until none is left; returns how many it took.

    Args:
        parent_pid: the app's process; when it is gone (or SIGTERM arrives) the current run stops, is
            marked interrupted, and no further run starts.
        lane: serve only this lane's kinds (``kinds.LANES``), with its batch size, threads and warm wait; None
            serves every kind one run at a time and leaves when the queue is empty (the CLI's plain
            ``worker``; it holds the train lane's lock).
        dispatch: instead of executing runs here, this loop (``ray_runner.serve(store, interrupted, log,
            current)``) runs under the lock and the parent watch: the Ray dispatcher's job process (``RAY``).
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
        return _serve(store, device, interrupted, log, current, lane, dispatch)
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


def _serve(
    store: RunStore, device: str, interrupted, log, current: dict | None, lane: str | None, dispatch=None
) -> int:
    spec = kinds.LANES[lane] if lane else None
    lane_kinds = kinds.local_kinds(lane)
    taken = 0
    with _device_lock(store, device, lane) as got:
        if not got:
            log(f"Another job process already serves {_key(device, lane)}; nothing to do.")
            return 0
        if dispatch is not None:
            return dispatch(store, interrupted, log, current)
        if spec and spec.threads:
            import torch

            torch.set_num_threads(spec.threads)
        warm = _Warm(store, device, log, spec.keeps_model) if spec and spec.warm and lane_kinds != () else None
        # A lane on all the cores (training) polls this between steps: it gives the lanes beside it their cores
        # while they work, so neither oversubscribes the machine (OpenMP teams stall when a core is taken).
        polled = _Yielding(store, device, interrupted) if spec and not spec.threads and device == "cpu" else interrupted
        idle_since = time.monotonic()
        while not interrupted():
            run_ids = (
                store.claim_many(device, os.getpid(), kinds=lane_kinds, limit=spec.batch if spec else 1)
                if lane_kinds != ()
                else []
            )
            if not run_ids:
                if warm is not None and warm.wanted(idle_since):
                    time.sleep(WARM_POLL_S)
                    continue
                break
            if taken == 0:  # how long this process took to start and load before its first run
                for run_id in run_ids:
                    store.log_metrics(run_id, 0, lane_process_s=time.monotonic() - _IMPORTED)
            taken += len(run_ids)
            if current is not None:
                current["run"], current["runs"] = run_ids[0], list(run_ids)
            by_kind: dict[str, list[str]] = {}
            for run_id in run_ids:
                by_kind.setdefault(store.get(run_id).kind, []).append(run_id)
            for kind, ids in by_kind.items():
                log(f"Run(s) {', '.join(ids)}: started on {_key(device, lane)}.")
                started = time.monotonic()
                with _working(store, device, lane) if spec and spec.threads else contextlib.nullcontext():
                    for summary in _execute(kinds.get(kind), ids, store, polled):
                        log(f"Run {summary.get('run_id')}: {summary.get('status')}{_why(summary)}.")
                for run_id in ids:  # for a bench: the wall time of the pass it was in, and how many shared it
                    try:
                        store.log_metrics(run_id, 0, lane_run_s=time.monotonic() - started, lane_batch=len(ids))
                    except FtvpeError:
                        pass  # deleted meanwhile
            idle_since = time.monotonic()
    return taken


def _execute(kind: kinds.Kind, ids: list[str], store: RunStore, interrupted) -> list[dict]:
    """Execute claimed runs of one kind: together where the kind can, else one by one; a run that fails is
    marked failed (by its execute) and the others go on."""
    if kind.together and len(ids) > 1:
        try:
            return kind.execute_many(store, ids, interrupted=interrupted)
        except Exception as e:  # noqa: BLE001 - each run is marked failed by the batch; go on with the queue
            return [{"run_id": run_id, "status": "failed", "error": f"{type(e).__name__}: {e}"} for run_id in ids]
    out = []
    for run_id in ids:
        try:
            out.append(kind.execute(store, run_id, interrupted=interrupted))
        except Exception as e:  # noqa: BLE001 - the run is marked failed; go on with the queue
            out.append({"run_id": run_id, "status": "failed", "error": f"{type(e).__name__}: {e}"})
    return out


def _working_path(store: RunStore, device: str, lane: str) -> Path:
    return lock_path(store, device, lane).with_suffix(".working")


@contextlib.contextmanager
def _working(store: RunStore, device: str, lane: str | None) -> Iterator[None]:
    """Hold the lane's 'working' lock while it executes runs (the training lane yields cores to it meanwhile)."""
    path = _working_path(store, device, lane or "train")
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _Yielding:
    """``interrupted`` for a run on all the cores, which its training loop polls before every step: while a lane
    beside it (one with its own threads, ``kinds.Lane.threads``) executes runs, torch here uses that many threads
    fewer, and all of them again once it is done. Looks at most every CHECK_S."""

    CHECK_S = 0.25

    def __init__(self, store: RunStore, device: str, interrupted) -> None:
        self.interrupted = interrupted
        self.beside = [
            (_working_path(store, device, n), lane.threads) for n, lane in kinds.LANES.items() if lane.threads
        ]
        self.full: int | None = None
        self.checked = 0.0
        self.yielded = 0

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self.checked >= self.CHECK_S:
            self.checked = now
            self._adjust()
        return self.interrupted()

    def _adjust(self) -> None:
        import torch

        if self.full is None:
            self.full = torch.get_num_threads()
        give = sum(threads for path, threads in self.beside if _held(path))
        want = max(1, self.full - give)
        if torch.get_num_threads() != want:
            torch.set_num_threads(want)
            self.yielded += want < self.full


def _held(path: Path) -> bool:
    """Whether another process holds the flock on ``path`` now."""
    if not path.exists():
        return False
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def _why(summary: dict) -> str:
    return f": {summary['error']}" if summary.get("status") == "failed" and summary.get("error") else ""


class _Warm:
    """A lane's job process kept warm: while a challenge is open and busy, it waits for work, up to
    ``warm_idle_s()`` without any, with torch imported and the challenge's model read once (kept loaded between
    runs, ``models.keep_loaded``, where the lane keeps models)."""

    def __init__(self, store: RunStore, device: str, log, keep: bool) -> None:
        self.store, self.device, self.log, self.keep = store, device, log, keep
        self.idle_s = warm_idle_s()
        self.loaded: set = set()

    def wanted(self, idle_since: float) -> bool:
        if self.idle_s <= 0 or time.monotonic() - idle_since > self.idle_s:
            return False
        wanted = self.store.warm_models(self.idle_s)
        for name in wanted:
            if name not in self.loaded:
                self.loaded.add(name)
                self._load(name)
        return bool(wanted)

    def _load(self, name: str | None) -> None:
        from ftvpe_core.model import adapters, models

        if self.keep:
            models.keep_loaded()
        try:
            # The same load a score makes (float32, the adapters' format): kept, so scoring reuses it.
            loaded = models.load(name, device=self.device, weight_format=adapters.WEIGHT_FORMAT)
            kept = "kept loaded" if self.keep else "read once"
            self.log(f"Warm: {loaded.source.label} on {self.device}, {kept} ({loaded.load_seconds:.1f} s).")
        except Exception as e:  # noqa: BLE001 - a run on it fails with the reason; waiting goes on
            self.log(f"Could not keep {name or 'the default model'} warm: {type(e).__name__}: {e}")


def _reap_children() -> None:
    with _started_lock:
        for key, proc in list(_started.items()):
            if proc.poll() is not None:  # also collects the exit status, so no zombie keeps its pid alive
                del _started[key]


def ensure_worker(
    store: RunStore, device: str, lane: str | None = None, kinds: tuple[str, ...] | None = None, warm: bool = False
) -> bool:
    """Start a job process for ``device``'s ``lane`` when runs of ``kinds`` wait for it (or ``warm``: it waits for
    them, loaded) and none serves it; True when one started.

    The job process is this process's child and stops when this process stops."""
    _reap_children()
    waiting = warm or store.queue(None if device == RAY else device, kinds)
    if not waiting or busy(store, device, lane):
        return False
    key = (str(store.home), _key(device, lane))
    with _started_lock:
        proc = _started.get(key)
        if proc is not None and proc.poll() is None:
            return False  # started a moment ago and not holding its lock yet
        log_dir = store.home / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "FTVPE_HOME": str(store.home)}
        root = str(HOME_DIR)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        serves = ["--runner", "ray"] if device == RAY else ["--device", device, *(["--lane", lane] if lane else [])]
        command = [sys.executable, "-m", "ftvpe_core", "worker", *serves, "--parent", str(os.getpid())]
        try:
            with open(log_dir / f"worker-{lock_path(store, device, lane).stem[7:]}.log", "ab") as log:
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
