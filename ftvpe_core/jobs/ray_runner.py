"""The Ray runner: queued runs trained on a Ray cluster, their progress and adapters written to the store here.

A dispatcher (the job process ``worker --runner ray`` that the app starts, or the CLI in the foreground) connects
to the cluster at ``FTVPE_RAY_ADDRESS``, claims queued runs in the store's fair order while the cluster has free
slots (one GPU a run on a GPU cluster, ``FTVPE_RAY_CPUS`` CPUs otherwise), and submits each as a Ray task that
carries the run's settings and dataset (its checkpoint when it resumes; the tuned adapter for a comparison). The
task loads the model on its node (the embedded model package installed there, or a model folder at the same path
on every node), trains, and sends its events (where it landed, phases, steps, probe answers, checkpoints) to the
dispatcher's inbox actor; it returns the adapter's files as bytes. What a kind's task carries, does on its node and
writes back is the kind's (its module's ``pack``, ``on_node``, ``store_result``: ``kinds``); the dispatcher writes the events
(``RunStore.record``) and the results to the store, the complete mark last: nothing on a worker node writes the
SQLite file. This module names no kind.

Cancel asks the task through the inbox to stop at its next step (its checkpoint comes back, so it can resume); a
task that does not stop within STOP_GRACE_S is cancelled by Ray. A worker or node that dies fails its run with
the reason, and the other runs go on. The dispatcher is the Ray driver of its tasks: when it stops (the app
stopped), it stops them first and marks their runs interrupted; Ray ends whatever is left, so no run trains on
for nobody.

Only this module imports ray, and only inside its functions: with ``FTVPE_RAY_ADDRESS`` unset nothing imports it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ftvpe_core import HOME_DIR, FtvpeError
from ftvpe_core import settings as settings_module
from ftvpe_core.jobs import kinds
from ftvpe_core.jobs.worker import STOP_GRACE_S
from ftvpe_core.store.runs import RunStore

POLL_S = 0.25
"""How often the dispatcher takes the inbox's events and looks at the queue and the cancel requests."""
STOP_POLL_S = 0.5
"""How often a task asks the inbox whether it should stop."""
PENDING_NODE = "Ray: waiting for a node"
"""The node of a run sent to a Ray cluster until the task says where it landed."""
CLUSTER_FILE = "cluster.json"
"""The dispatcher's last word on the cluster (nodes, slots, or why it cannot be reached), in the data folder."""
CONNECT_TIMEOUT_S = 5.0
_TOKEN_FILE = Path.home() / ".ray" / "auth_token"
_parts: tuple | None = None
_connected: str | None = None


def _ray():
    if (
        "ray" not in sys.modules
        and not os.environ.get("RAY_AUTH_MODE")
        and (os.environ.get("RAY_AUTH_TOKEN") or _TOKEN_FILE.is_file())
    ):
        # `ray start` turns token authentication on and keeps the token in ~/.ray/auth_token; a driver sends
        # it only in token mode, which Ray reads when it is first imported.
        os.environ["RAY_AUTH_MODE"] = "token"
    try:
        import ray
    except ImportError as e:
        raise FtvpeError(
            "FTVPE_RAY_ADDRESS is set but Ray is not installed here: pip install -r requirements-cluster.txt, "
            "or unset FTVPE_RAY_ADDRESS to train on this machine."
        ) from e
    return ray


def _reachable(address: str) -> None:
    """Fail fast on a HOST:PORT nobody listens on (ray.init would retry for minutes)."""
    hostport = address.removeprefix("ray://")
    if address == "auto" or ":" not in hostport:
        return
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as e:
        raise FtvpeError(f"nothing answers at {hostport} ({e})") from e


def connect(address: str) -> None:
    """Connect this process to the cluster as a driver; FtvpeError with one clear line when it cannot.

    Tasks find this project's code through PYTHONPATH (the checkout at the same path on every node, or the
    package installed there); nothing is uploaded."""
    global _connected
    ray = _ray()
    if ray.is_initialized() and _connected == address:
        return
    if ray.is_initialized():  # FTVPE_RAY_ADDRESS changed: this process follows it
        ray.shutdown()
    root = str(HOME_DIR)
    passed = ("FTVPE_MODEL", "FTVPE_ALLOW_DOWNLOAD", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    env = {"PYTHONPATH": root, **{k: os.environ[k] for k in passed if k in os.environ}}
    try:
        _reachable(address)
        ray.init(
            address=address,
            namespace="ftvpe",
            runtime_env={"env_vars": env},
            log_to_driver=False,
            logging_level="ERROR",
        )
    except Exception as e:  # noqa: BLE001 - every way of not connecting reads the same to the user
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "auth" in repr(e.__cause__ or e.__context__ or e).lower():
            reason += " (its authentication token was refused: give this machine the cluster's ~/.ray/auth_token)"
        raise FtvpeError(
            f"The Ray cluster at FTVPE_RAY_ADDRESS={address} cannot be reached: {reason}. Start it (ray start "
            "--head) or unset FTVPE_RAY_ADDRESS to train on this machine."
        ) from e
    _connected = address


def _remote() -> tuple[Any, Any]:
    """The inbox actor class and the remote task, made once per process (after ``connect``)."""
    global _parts
    if _parts is None:
        ray = _ray()

        @ray.remote(num_cpus=0)
        class Inbox:
            """Events from the tasks to the dispatcher, and the dispatcher's stop requests to the tasks."""

            def __init__(self) -> None:
                self.events: list = []
                self.stops: dict = {}

            def put(self, run_id: str, event: dict) -> None:
                self.events.append((run_id, event))

            def take(self) -> list:
                events, self.events = self.events, []
                return events

            def stop(self, run_id: str, why: str) -> None:
                self.stops[run_id] = why

            def stopping(self, run_id: str) -> str | None:
                return self.stops.get(run_id)

        _parts = (Inbox, ray.remote(max_retries=0)(run_on_node))
    return _parts


# -- on a node ---------------------------------------------------------------------------------------------


def run_on_node(job: dict, inbox: Any) -> dict:
    """A Ray task: train (or compare) one run on this node; events go to ``inbox``, the result comes back.

    Returns:
        {'status': 'complete' | 'stopped' | 'failed', ...}: a fine-tune's summary and adapter files (bytes), a
        comparison's result, a stopped run's checkpoint, or a failure's message.
    """
    import ray

    run_id = job["run_id"]
    gpus = ray.get_gpu_ids()
    device = "cuda" if gpus else "cpu"  # Ray shows the task only its own GPU

    def send(event: dict) -> None:
        inbox.put.remote(run_id, event)

    last_asked = [0.0, None]

    def should_stop() -> bool:
        if time.monotonic() - last_asked[0] >= STOP_POLL_S:
            last_asked[:] = [time.monotonic(), ray.get(inbox.stopping.remote(run_id))]
        return last_asked[1] is not None

    node = ray.util.get_node_ip_address()
    send({"placement": {"node": node, "device": device if not gpus else f"cuda (GPU {gpus[0]})", "pid": os.getpid()}})
    try:
        with tempfile.TemporaryDirectory(prefix=f"ftvpe-{run_id}-") as tmp:
            out = kinds.get(job["kind"]).cluster.on_node(job, Path(tmp), device, send, should_stop)
    except Exception as e:  # noqa: BLE001 - the dispatcher marks the run failed with this line
        out = {"status": "failed", "error": str(e) if isinstance(e, FtvpeError) else f"{type(e).__name__}: {e}"}
    ray.get(inbox.put.remote(run_id, {"end": True}))  # every event is in the inbox before the result is
    return out


# -- the dispatcher, on the app's machine ---------------------------------------------------------------------


def per_run() -> dict:
    """What a run asks of the connected cluster: a GPU (and a CPU) where it has GPUs, FTVPE_RAY_CPUS CPUs
    otherwise."""
    if _ray().cluster_resources().get("GPU", 0) >= 1:
        return {"num_gpus": 1, "num_cpus": 1}
    return {"num_cpus": settings_module.ray_cpus_per_run()}


def slots() -> int:
    """How many runs the connected cluster trains at once (its alive nodes' resources, a run's share each)."""
    total, need = _ray().cluster_resources(), per_run()
    by_cpu = total.get("CPU", 0) // need["num_cpus"]
    return int(min(by_cpu, total.get("GPU", 0) // need["num_gpus"]) if "num_gpus" in need else by_cpu)


class Dispatcher:
    """Submits claimed runs to the cluster and writes what they send back to the store."""

    def __init__(
        self,
        store: RunStore,
        address: str,
        log: Callable[[str], None] = print,
        on_event: Callable[[dict], None] | None = None,
        options: dict | None = None,
    ) -> None:
        """``on_event`` sees every event the store records; ``options`` go to each kind's ``pack`` (the CLI's)."""
        self.store, self.address, self.log = store, address, log
        self.on_event, self.options = on_event, options or {}
        connect(address)
        self.ray = _ray()
        inbox_class, self.task = _remote()
        self.inbox = inbox_class.remote()
        self.refs: dict[str, Any] = {}
        """run id -> the task training it."""
        self.stops: dict[str, tuple[str, float]] = {}
        """run id -> (why: 'cancel' or 'interrupt', when asked)."""
        self.nodes: dict[str, str] = {}
        self.workers: dict[str, int] = {}
        """run id -> the process id of the Ray worker training it (on its node)."""
        self.finished: dict[str, dict] = {}

    # -- capacity ------------------------------------------------------------------------------------

    def per_run(self) -> dict:
        return per_run()

    def slots(self) -> int:
        return slots()

    def write_status(self, error: str | None = None) -> None:
        nodes = [
            f"{n['NodeManagerAddress']} ({int(n['Resources'].get('CPU', 0))} CPU, "
            f"{int(n['Resources'].get('GPU', 0))} GPU)"
            for n in self.ray.nodes()
            if n.get("Alive")
        ]
        per_run = self.per_run()
        write_cluster(
            self.store,
            {
                "address": self.address,
                "time": time.time(),
                "nodes": nodes,
                "slots": self.slots(),
                "busy": len(self.refs),
                "per_run": ", ".join(f"{v} {k[4:].upper()}" for k, v in per_run.items()),
                "error": error,
            },
        )

    # -- runs ----------------------------------------------------------------------------------------

    def submit(self, run_id: str) -> None:
        """Send a claimed run to the cluster with everything it needs."""
        run = self.store.get(run_id)
        try:
            job = {
                "run_id": run_id,
                "kind": run.kind,
                **kinds.get(run.kind).cluster.pack(self.store, run, self.options),
            }
            self.store.set_progress(run_id, 0.0, "Sent to the Ray cluster; waiting for a node")
            self.refs[run_id] = self.task.options(**self.per_run()).remote(job, self.inbox)
        except Exception as e:  # noqa: BLE001 - this run fails; the others go on
            self.store.fail_unless_ended(run_id, e)
            self.log(f"Run {run_id}: failed before it was sent: {e}")

    def pump(self) -> None:
        """Write the events the tasks sent since last time."""
        for run_id, event in self.ray.get(self.inbox.take.remote()):
            try:
                self._apply(run_id, event)
            except FtvpeError as e:  # e.g. the run was deleted meanwhile
                self.log(f"Run {run_id}: event not stored: {e}")

    def _apply(self, run_id: str, event: dict) -> None:
        if "placement" in event:
            self.nodes[run_id] = event["placement"]["node"]
            self.workers[run_id] = event["placement"]["pid"]
            self.store.place(run_id, event["placement"]["node"], event["placement"]["device"])
        elif "file" in event:  # a file of the run's folder (a checkpoint) as it is written on the node
            self.store.write_artifact(run_id, event["file"], event["data"])
        elif "end" not in event:
            self.store.record(run_id, event)
            if self.on_event:
                self.on_event(event)

    def watch_cancels(self) -> None:
        """Pass the users' cancel requests on; a task that does not stop in time is cancelled by Ray."""
        for run_id, ref in self.refs.items():
            if run_id not in self.stops and self.store.cancel_requested(run_id):
                self.stop(run_id, "cancel")
            why_when = self.stops.get(run_id)
            if why_when and time.monotonic() - why_when[1] > STOP_GRACE_S:
                self.ray.cancel(ref, force=True)

    def stop(self, run_id: str, why: str) -> None:
        if run_id not in self.stops:
            self.stops[run_id] = (why, time.monotonic())
            self.inbox.stop.remote(run_id, why)

    def collect(self, timeout: float = 0.0) -> list[str]:
        """Store the results of the tasks that ended; returns their run ids."""
        if not self.refs:
            return []
        ready, _ = self.ray.wait(list(self.refs.values()), num_returns=len(self.refs), timeout=timeout)
        done = [run_id for run_id, ref in self.refs.items() if ref in ready]
        if done:
            self.pump()
        for run_id in done:
            ref = self.refs.pop(run_id)
            try:
                out = self.ray.get(ref)
            except Exception as e:  # noqa: BLE001 - the task, its worker or its node died
                out = self._lost(run_id, e)
            try:
                self.finished[run_id] = self._store_result(run_id, out)
                self.log(f"Run {run_id}: {self.finished[run_id].get('status')}.")
            except Exception as e:  # noqa: BLE001 - one run's result failing to store must not stop the others
                self.store.fail_unless_ended(run_id, e)
                self.finished[run_id] = {"run_id": run_id, "status": "failed", "error": str(e)}
                self.log(f"Run {run_id}: failed while storing its result: {e}")
        return done

    def _lost(self, run_id: str, error: Exception) -> dict:
        if isinstance(error, self.ray.exceptions.TaskCancelledError) and run_id in self.stops:
            return {"status": "stopped", "summary": {}}
        where = self.nodes.get(run_id, "its node")
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return {
            "status": "failed",
            "error": f"the Ray worker training it on {where} died ({type(error).__name__}: {reason})"[:500],
        }

    def _store_result(self, run_id: str, out: dict) -> dict:
        if out["status"] == "failed":
            self.store.fail_unless_ended(run_id, out["error"])
            return {"run_id": run_id, "status": "failed", "error": out["error"]}
        interrupted = self.stops.get(run_id, ("cancel", 0))[0] == "interrupt"
        return kinds.get(self.store.get(run_id).kind).cluster.store_result(self.store, run_id, out, interrupted)

    def stop_all(self, why: str) -> None:
        """Stop every run at its next step and store what comes back, within STOP_GRACE_S; then leave."""
        for run_id in list(self.refs):
            self.stop(run_id, why)
        deadline = time.monotonic() + STOP_GRACE_S
        while self.refs and time.monotonic() < deadline:
            self.pump()
            self.collect(timeout=POLL_S)
        for run_id in list(self.refs):  # did not stop in time: Ray ends them with this driver
            try:
                if why == "interrupt":
                    self.store.interrupt(run_id)
                else:
                    self.store.mark_cancelled(run_id)
            except FtvpeError:
                pass

    def close(self) -> None:
        """Let the inbox go. The connection stays for the process's next dispatcher (its workers stay warm);
        it ends with the process."""
        try:
            self.ray.kill(self.inbox)
        except Exception:  # noqa: BLE001 - leaving anyway
            pass


def read_cluster(store: RunStore) -> dict:
    """What the dispatcher last wrote about the cluster ({} before it has)."""
    try:
        return json.loads((store.home / CLUSTER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_cluster(store: RunStore, status: dict) -> None:
    """Replace the cluster record at once (the pages read it while the dispatcher writes)."""
    path = store.home / CLUSTER_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status), encoding="utf-8")
    os.replace(tmp, path)


ONE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch for multi-node clusters; "0" keeps a head on one machine on loopback addresses."""


@contextlib.contextmanager
def local_head(num_cpus: int, temp_dir: str | Path) -> Iterator[str]:
    """A Ray head on this machine for the block (``ray start --head --block``, no dashboard, no usage stats),
    yielding its address; stopped (its whole process group) at the end. For trying the runner on one machine,
    the tests and bench/cluster.py; a real cluster is started by hand (README, "Serving a large class")."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Ray turns 127.0.0.1 into this machine's network address (for other nodes to reach), so its processes would
    # talk over that interface; with clusters off (its switch for laptops) every one of them stays on loopback.
    # Set here, the head, this process's driver and every job process started after it inherit it.
    os.environ[ONE_MACHINE_ENV] = "0"
    ray_cli = str(Path(sys.executable).with_name("ray"))
    root = str(HOME_DIR)
    head = subprocess.Popen(
        [
            ray_cli,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            f"--num-cpus={num_cpus}",
            "--num-gpus=0",
            "--node-ip-address=127.0.0.1",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
            "--object-store-memory=100000000",
        ],
        env={**os.environ, "PYTHONPATH": root},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _reachable(f"127.0.0.1:{port}")
                break
            except FtvpeError:
                if head.poll() is not None or time.monotonic() > deadline:
                    raise FtvpeError("The local Ray head did not start (ray start --head).") from None
                time.sleep(0.3)
        time.sleep(1.0)  # the GCS listens a moment before the head's raylet has registered
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGKILL)  # SIGTERM would drain for 30 s first
        head.wait()


def serve(store: RunStore, interrupted: Callable[[], bool], log=print, current: dict | None = None) -> int:
    """The dispatcher job process's loop: keep the cluster's free slots busy with queued runs (fair order) until
    none is queued or running; returns how many runs it sent. When the cluster cannot be reached, the queued runs
    fail with the reason (the pages and the CLI show it) and it leaves."""
    address = settings_module.ray_address() or "auto"
    try:
        dispatcher = Dispatcher(store, address, log)
    except FtvpeError as e:
        write_cluster(store, {"address": address, "time": time.time(), "error": str(e), "slots": 0})
        for run in store.queue(kinds=kinds.RAY_KINDS):
            store.fail_unless_ended(run.id, str(e))
        log(str(e))
        return 0
    taken = 0
    try:
        while not interrupted():
            free = dispatcher.slots() - len(dispatcher.refs)
            while free > 0 and (run_id := store.claim(None, os.getpid(), PENDING_NODE, kinds.RAY_KINDS)) is not None:
                dispatcher.submit(run_id)
                taken, free = taken + 1, free - 1
                log(f"Run {run_id}: sent to the cluster.")
            if current is not None:
                current["runs"] = list(dispatcher.refs)
            dispatcher.pump()
            dispatcher.watch_cancels()
            dispatcher.collect()
            full = (
                ""
                if dispatcher.slots()
                else (
                    f"the Ray cluster at {address} has no room for a run: each asks {dispatcher.per_run()} (FTVPE_RAY_CPUS), "
                    "more than any node offers; add nodes or lower FTVPE_RAY_CPUS"
                )
            )
            dispatcher.write_status(full or None)
            if not dispatcher.refs and not store.queue(kinds=kinds.RAY_KINDS):
                break
            time.sleep(POLL_S)
        if interrupted():
            dispatcher.stop_all("interrupt")
    finally:
        dispatcher.close()
    return taken


def foreground(store: RunStore, address: str, run_id: str, on_event=None, options: dict | None = None) -> dict:
    """Send one queued run to the cluster from this process (the CLI) and follow it to its end; returns its
    summary. Ctrl-C stops it at its next step (interrupted, resumable)."""
    run = store.get(run_id)
    try:
        dispatcher = Dispatcher(store, address, lambda m: None, on_event, options)
    except FtvpeError as e:
        store.fail_unless_ended(run_id, str(e))
        raise
    try:
        store.start(run_id, os.getpid(), run.device, PENDING_NODE)
        dispatcher.submit(run_id)
        try:
            while run_id in dispatcher.refs:
                dispatcher.pump()
                dispatcher.watch_cancels()
                dispatcher.collect(timeout=POLL_S)
        except KeyboardInterrupt:
            dispatcher.stop_all("interrupt")
            raise
    finally:
        dispatcher.close()
    out = dispatcher.finished.get(run_id) or {"run_id": run_id, "status": store.get(run_id).status}
    if out.get("status") == "failed":
        raise FtvpeError(f"Run {run_id} failed on the Ray cluster: {out.get('error') or store.get(run_id).error}")
    return out
