"""The local face of a scheduler's "start this job once that array has ended, however it ended":
the supervisor of a local submission runs its follow-up (the script that retries rows whose task
died) once every task has ended.

The follow-up's state goes in the submission's state file, beside its tasks', under
``"followup"``, written by the supervisor only::

    {"followup": {"state": "RUNNING", "started": 1700000000.1, "proc": {...}}}

A cancel (SIGTERM to the supervisor) stops it as it stops a task.

A chained submission's gate (``_job/gate.py``) is run the same way, but first: the supervisor
starts no task unless it exits 0 (its state under ``"gate_run"``).
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

from ..._store import chain
from ..._store import layout as jd
from ..._store.localrun import Run, RunnerState
from ..base import Answer, TaskRecord
from ..states import CANCELLED, COMPLETED, FAILED, LOST, PENDING, RUNNING

if TYPE_CHECKING:
    from .backend import _Supervisor

from ..._timing import LOCAL_POLL_S as POLL_S, STOP_GRACE_S
from .procs import _exit_code, _signal_group, identity


def run(sup: "_Supervisor", stop_requested: List[int]) -> None:
    """Run the follow-up the plan names (if any) to its end, recording its state."""

    script = sup.plan.followup
    if not script or stop_requested:
        return
    rec = Run(PENDING)
    sup.plan.followup_run = rec
    run_script(sup, script, jd.followup_log_path(sup.job_dir, sup.k), rec, stop_requested)


def run_gate(sup: "_Supervisor", stop_requested: List[int]) -> bool:
    """Run the gate the plan names (chains: it waits for the upstream jobs and decides), to its
    end; whether the tasks may run (no gate, or one that exited 0)."""
    script = sup.plan.gate
    if not script:
        return True
    if stop_requested:
        return False
    rec = Run(PENDING)
    sup.plan.gate_run = rec
    run_script(sup, script, chain.gate_log_path(sup.job_dir), rec, stop_requested)
    return rec.state == COMPLETED


def run_script(sup: "_Supervisor", script: str, log_path: Path, rec: Run, stop_requested: List[int]) -> None:
    """Run one of the job's scripts to its end (stopped on a cancel), recording its state in ``rec``."""
    with open(log_path, "ab") as log:
        # Its own process group, as a task's: a cancel stops it and whatever it started.
        proc = subprocess.Popen(["bash", str(jd.script_path(sup.job_dir, script))], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    rec.state, rec.started, rec.proc = RUNNING, time.time(), identity(proc.pid)
    sup.save()
    stopped = False
    while proc.poll() is None:
        if stop_requested and not stopped:
            stopped = True
            _signal_group(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(POLL_S)
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGKILL)
        time.sleep(POLL_S)
    code = proc.wait()
    rec.state = CANCELLED if stopped else COMPLETED if code == 0 else FAILED
    rec.exit_code, rec.ended = code, time.time()
    sup.save()


def answer(state: RunnerState, alive: bool, job_id: str, host: str) -> Optional[Answer]:
    """What the state file says of the follow-up: None when the plan has none."""

    if not state.followup:
        return None
    rec = state.followup_run or Run(PENDING)
    name, reason = rec.state, ""
    if name in (PENDING, RUNNING) and not alive:
        name, reason = LOST, "the local runner is gone"
    return TaskRecord(array_job_id=f"{job_id}-retry", task=None, state=name, node_list=host,
                      reason=reason, exit_code=_exit_code(rec.exit_code), end_time=rec.ended)
