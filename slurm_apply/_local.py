"""Running an array job on this machine when there is no Slurm.

The same ``submit.sh`` runs once per array task, as ``bash submit.sh`` with ``SLURM_ARRAY_TASK_ID``
set, at most one task per ``cpus_per_task`` cores at a time. A detached supervisor process
(``python -m slurm_apply._local JOB_DIR SUB``) starts them and records each task's state in
``local/s<sub>.json``, so any process can read the job's status, as it would ask Slurm.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

from . import _jobdir as jd


def state_path(job_dir: Path, sub: int) -> Path:
    return job_dir / jd.LOCAL / f"s{sub}.json"


def parallel_tasks(cpus_per_task: int) -> int:
    return max(1, (os.cpu_count() or 1) // cpus_per_task)


def start(job_dir: Path, sub: int, n_tasks: int, cpus_per_task: int) -> str:
    (job_dir / jd.LOCAL).mkdir(mode=0o700, exist_ok=True)
    jd.write_json(state_path(job_dir, sub), {
        "supervisor_pid": None,
        "tasks": {str(t): {"state": "PENDING"} for t in range(n_tasks)},
    })
    with open(job_dir / jd.LOCAL / f"s{sub}.supervisor.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "slurm_apply._local", str(job_dir), str(sub)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            close_fds=True,
        )
    # Record the supervisor at once, so a cancel() right after this call can reach it.
    jd.write_json(state_path(job_dir, sub), {
        "supervisor_pid": proc.pid,
        "tasks": {str(t): {"state": "PENDING"} for t in range(n_tasks)},
    })
    return f"local-{proc.pid}"


def read_state(job_dir: Path, sub: int) -> Dict[str, Any]:
    """The recorded states; RUNNING or PENDING tasks of a supervisor that is gone become LOST."""
    try:
        state = jd.read_json(state_path(job_dir, sub))
    except (FileNotFoundError, ValueError):
        return {"tasks": {}}
    pid = state.get("supervisor_pid")
    if pid is not None and not _alive(pid):
        # The supervisor may have written its last state and exited just now: read once more.
        try:
            state = jd.read_json(state_path(job_dir, sub))
        except (FileNotFoundError, ValueError):
            pass
        for t in state["tasks"].values():
            if t["state"] in ("PENDING", "RUNNING"):
                t["state"] = "LOST"
    return state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); look at /proc where we can.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def cancel(job_dir: Path, sub: int) -> None:
    state = read_state(job_dir, sub)
    pid = state.get("supervisor_pid")
    if pid is None or not _alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    # A supervisor killed before it could record the cancel (e.g. still starting) leaves tasks
    # PENDING or RUNNING in its state file: record it here, as Slurm would.
    state = read_state(job_dir, sub)
    changed = False
    for t in state.get("tasks", {}).values():
        if t["state"] in ("PENDING", "RUNNING", "LOST"):
            t["state"] = "CANCELLED"
            changed = True
    if changed:
        jd.write_json(state_path(job_dir, sub), state)


def supervise(job_dir: Path, sub: int) -> int:
    manifest = jd.load_manifest(job_dir)
    info = manifest["submissions"][sub]
    n_tasks: int = info["n_tasks"]
    script = job_dir / info["script"]
    width = parallel_tasks(info["cpus_per_task"])
    tasks: Dict[str, Dict[str, Any]] = {str(t): {"state": "PENDING"} for t in range(n_tasks)}
    running: Dict[int, subprocess.Popen] = {}
    me = os.getpid()

    def save() -> None:
        jd.write_json(state_path(job_dir, sub), {"supervisor_pid": me, "tasks": tasks})

    def on_term(signum: int, frame: Any) -> None:
        for t, p in running.items():
            try:
                p.terminate()
            except ProcessLookupError:
                pass
            tasks[str(t)]["state"] = "CANCELLED"
        for t in tasks.values():
            if t["state"] == "PENDING":
                t["state"] = "CANCELLED"
        save()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    save()
    pending: List[int] = list(range(n_tasks))
    host = socket.gethostname()
    while pending or running:
        while pending and len(running) < width:
            t = pending.pop(0)
            env = dict(os.environ, SLURM_ARRAY_TASK_ID=str(t), SLURM_ARRAY_JOB_ID=f"local-{me}",
                       SLURM_JOB_ID=f"local-{me}_{t}", SLURMD_NODENAME=host)
            with open(jd.log_path(job_dir, sub, t), "ab") as log:
                running[t] = subprocess.Popen(["bash", str(script)], env=env, stdin=subprocess.DEVNULL,
                                              stdout=log, stderr=subprocess.STDOUT)
            tasks[str(t)] = {"state": "RUNNING", "started": time.time()}
            save()
        time.sleep(0.02)
        for t, p in list(running.items()):
            code = p.poll()
            if code is None:
                continue
            del running[t]
            tasks[str(t)].update(state="COMPLETED" if code == 0 else "FAILED", exit_code=code,
                                 ended=time.time())
            save()
    return 0


if __name__ == "__main__":
    sys.exit(supervise(Path(sys.argv[1]), int(sys.argv[2])))
