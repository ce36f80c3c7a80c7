"""``python -m slurm_apply._node JOB_DIR SUBMISSION TOKEN``: what every array task runs.

Imports only what the node needs (no pandas): a task should reach its first row quickly.

``python -m slurm_apply._node --preflight PAYLOAD [PKG...]`` imports the packages and loads the
payload in this interpreter and exits 0, or prints why it cannot and exits 1: the check the
submitting side runs before sbatch. ``--preflight-when-told PAYLOAD WARM [PKG...]`` imports the
packages (and, if it can, the comma-separated modules WARM) first, then loads the payload once
a line ``go`` arrives on stdin: the submitting side starts it before it writes the payload.
``--preflight-warm WARM [PKG...]`` is the warm pre-flight (see ``_submit/preflight.py``): it
imports the same, then serves one call after another, each loaded in a process forked for it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Optional, Sequence, Tuple

from .._store import layout as jd
from .._store.markers import Start
from .._store.taskfiles import JobReplaced
from . import lease, taskenv
from .preflight import preflight, preflight_server, preflight_when_told
from .rows import Context, load_payload
from .task import Task


def run_task(job_dir: Path, sub: int, task: int, token: str, env: taskenv.TaskEnv) -> int:
    """Run one start of array task ``task`` of submission ``sub`` (``env``: what the scheduler
    said of it); its exit code. The store checks the job's token before every write by path and
    raises JobReplaced when the directory holds another job: the task then stops its processes
    and goes."""
    try:
        begun = _begin(job_dir, sub, task, token, env)
        if begun is None:
            return 1
    except JobReplaced as exc:  # before any process of this task exists
        return _replaced(exc)
    runner, n_starts = begun
    try:
        return _run(runner, job_dir, n_starts)
    except JobReplaced as exc:
        runner.kill_processes()
        return _replaced(exc)


def _replaced(exc: JobReplaced) -> int:
    print(f"slurm_apply: {exc}", flush=True)
    return 1


def _begin(job_dir: Path, sub: int, task: int, token: str,
           env: taskenv.TaskEnv) -> Optional[Tuple[Task, int]]:
    """Record this start; the task, its SIGTERM handled from here on, and its number of starts
    (None: the job was replaced before the task began)."""
    started = time.time()
    manifest = jd.load_manifest(job_dir)
    if manifest.token != token or jd.job_replaced(job_dir, token):
        print(f"slurm_apply: {job_dir} now holds another job (this task's job was replaced, "
              "e.g. by overwrite=True); this task does nothing", flush=True)
        return None
    ncpu = manifest.submissions[sub].cpus_per_task
    ctx = Context(job_dir, manifest, sub, task, started=started, node=env.node)
    files = ctx.files
    files.unmark("done")  # a requeued task starts again: its old end marker says nothing
    files.unmark("idle")
    heartbeat = lease.Heartbeat(files)  # before any claim of this start
    n_starts = files.record_start(Start(
        time=ctx.started,
        node=ctx.node,
        job_id=env.job_id,
        array_job_id=env.array_job_id,
        restart_count=env.restarts,
        pid=os.getpid(),
    ))
    print(f"slurm_apply: submission {sub} task {task} on {ctx.node}: {ncpu} process(es), "
          f"start {n_starts}", flush=True)
    return Task(ctx, ncpu, heartbeat), n_starts


def _run(runner: Task, job_dir: Path, n_starts: int) -> int:
    ctx = runner.ctx
    ctx.f = load_payload(job_dir, ctx.manifest)
    ctx.loaded = time.time()
    if not runner.stopping:
        runner.run(restarted=n_starts > 1)
    if runner.stopping:
        runner.stop()
        sys.stdout.flush()
        # Die of the signal, as the task would have without us: Slurm and the local runner
        # read the cause from how the process ended.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return 128 + signal.SIGTERM
    return 1 if runner.tally.gave_up else 0


def main(argv: Sequence[str]) -> int:
    if len(argv) >= 2 and argv[0] == "--preflight":
        return preflight(Path(argv[1]), argv[2:])
    if len(argv) >= 2 and argv[0] == "--preflight-warm":
        try:
            code = preflight_server([m for m in argv[1].split(",") if m], argv[2:])
        except BrokenPipeError:  # the caller ended
            code = 0
        os._exit(code)  # as below: nothing to tear down
    if len(argv) >= 3 and argv[0] == "--preflight-when-told":
        code = preflight_when_told(Path(argv[1]), [m for m in argv[2].split(",") if m], argv[3:])
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # a check, which the caller waits for: skip tearing down what it imported
    if len(argv) != 3:
        print("usage: python -m slurm_apply._node JOB_DIR SUBMISSION TOKEN", file=sys.stderr)
        return 2
    env = taskenv.read()
    if env.task is None:
        print(f"slurm_apply: {taskenv.TASK} is not set; this command is run by the array job "
              "script (submit.sh), which sets it from the scheduler's task id, not by hand",
              file=sys.stderr)
        return 2
    return run_task(Path(argv[0]), int(argv[1]), env.task, argv[2], env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
