"""The "local" backend: a submission's array tasks run on this machine, when there is no Slurm.

The array script runs once per task (``bash SCRIPT`` with the variables the scheduler it stands in
for would set: its dialect's ``STAND_IN``, e.g. Slurm's task id), one task
per ``cpus_per_task`` of the CPUs this process may use at a time, under a detached supervisor
(``python -m slurm_apply._backends.local.backend JOB_DIR SUB``) that records each task's state, so any
process on this host can ask about the job as it would ask Slurm. Its two files per submission
(the state, written by the supervisor only once it runs, and the supervisor's identity) are typed
records of the store: ``_store/localrun.py``.

A pid alone names another process once its owner is gone, so a process is taken for the
supervisor (or a task) only if its pid, start time (``/proc/<pid>/stat`` field 22: clock ticks
since boot; ``ps``'s ``lstart`` where there is no /proc) and host all match.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from ..._store import layout as jd
from ..._store import localrun
from ..._store.localrun import Proc, Run, RunnerIdentity, RunnerState
from ..._errors import SchedulerError, SubmissionError
from . import followup as local_followup
from .procs import CannotTell, _exit_code, _signal_group, identity, is_alive
from ..._timing import LOCAL_POLL_S as POLL_S, STOP_GRACE_S
from ..base import Answer, Backend, Query, TaskRecord, Unknown
from ..states import CANCELLED, COMPLETED, FAILED, LOST, PENDING, RUNNING  # its tasks' states, as answered

if TYPE_CHECKING:
    from ..._store.manifest import Submission

# Its files' paths are the job directory's: see layout (local_dir, local_state_path, ...).
local_dir, state_path = jd.local_dir, jd.local_state_path
runner_path, supervisor_log = jd.local_runner_path, jd.local_supervisor_log
read_state, read_identity = localrun.read_state, localrun.read_identity


def parallel_tasks(cpus_per_task: int) -> int:
    """Tasks that fit at once on the CPUs this process may use (its affinity mask, which a
    container, taskset or an enclosing Slurm allocation narrows), not on all of the machine's."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity on this platform (macOS)
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, cpus_per_task))


def _width(sub: "Submission") -> int:
    # An array throttle (--array=0-N%M) holds here as it would under Slurm.
    return min(parallel_tasks(sub.cpus_per_task), sub.max_concurrent or sub.n_tasks, sub.n_tasks)


# -- the backend -------------------------------------------------------------------------------

class LocalBackend(Backend):
    """Array tasks as subprocesses of a supervisor on this machine.

    The runner enforces no time or memory limit and writes no kill notice into a task's log, so
    ``death_in_log`` and ``memory_limit_in_log`` keep the interface's None: what the runner
    knows of a task's end is in its state and exit code.
    """

    name = "local"
    query_is_cheap = True  # two small files per submission
    tasks_outlive_caller = True  # the runner is detached: its tasks go on after the caller ends

    def submit(self, job_dir: Path, sub: "Submission") -> str:
        return self._start(job_dir, sub, gate=None)

    def submit_gated(self, job_dir: Path, sub: "Submission",
                     upstream: Sequence[str]) -> Tuple[str, Optional[str]]:
        # The supervisor runs the gate before any task, at once: the gate itself waits for the
        # upstream jobs (their status costs a file read here), and only its exit 0 lets the
        # tasks start; otherwise they are recorded CANCELLED and nothing runs.
        return self._start(job_dir, sub, gate=sub.gate), None

    def _start(self, job_dir: Path, sub: "Submission", gate: Optional[str]) -> str:
        local_dir(job_dir).mkdir(mode=0o700, exist_ok=True)
        # The whole plan goes in the state file before the supervisor exists: it reads it there,
        # and from then on it is the file's only writer.
        localrun.write_state(job_dir, sub.index, RunnerState(
            script=sub.script, cpus_per_task=sub.cpus_per_task, parallel=_width(sub),
            tasks={t: Run(PENDING) for t in range(sub.n_tasks)},
            followup=sub.followup,  # run by the supervisor once every task has ended
            gate=gate,  # run by the supervisor before any task (chains)
            # What the script reads of its task, as the scheduler whose script it is would set it.
            env=dict(self.dialect.STAND_IN) if self.dialect else {}))
        try:
            with open(supervisor_log(job_dir, sub.index), "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "slurm_apply._backends.local.backend", str(job_dir), str(sub.index)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                    close_fds=True)
        except OSError as exc:
            raise SubmissionError(f"could not start the local runner ({sys.executable}): {exc}") from None
        ident = RunnerIdentity(identity(proc.pid), f"local-{proc.pid}", time.time())
        try:
            # Before returning, so a cancel() right after this call can reach the supervisor.
            localrun.write_identity(job_dir, sub.index, ident)
        except OSError as exc:
            _signal_group(proc.pid, signal.SIGKILL)  # a runner nobody could find or cancel
            raise SubmissionError(f"could not record the local runner: {exc}") from None
        return ident.job_id

    def query(self, job_dir: Path, subs: Sequence["Submission"]) -> Query:
        # Reads of two small files per submission: no scheduler command, so calls stays 0.
        out = Query()
        for sub in subs:
            tasks, followup = _answers(job_dir, sub)
            out.answers.update(((sub.index, t), a) for t, a in enumerate(tasks))
            if followup is not None:
                out.followups[sub.index] = followup
        return out

    def submit_followup(self, job_dir: Path, sub: "Submission") -> Optional[str]:
        return None  # the supervisor runs it: submit() put it in its plan

    def cancel(self, job_dir: Path, subs: Sequence["Submission"]) -> None:
        for sub in subs:
            _cancel(job_dir, sub.index)

    def launch_notice(self, sub: "Submission") -> Optional[str]:
        return (f"running the {sub.n_tasks} array task(s) on this machine, "
                f"{_width(sub)} at a time")


def _runner(job_dir: Path, k: int) -> Tuple[RunnerIdentity, bool]:
    """The identity of submission k's supervisor, and whether it still runs. Raises CannotTell
    (saying why) when that cannot be known from here."""
    try:
        ident = read_identity(job_dir, k)
    except (OSError, ValueError) as exc:
        raise CannotTell(f"cannot read the local runner's identity of submission {k}: {exc}") from None
    if ident.proc.host != socket.gethostname():
        raise CannotTell(f"the local runner of submission {k} runs on host {ident.proc.host}; look from there")
    try:
        return ident, is_alive(ident.proc)
    except CannotTell as exc:
        raise CannotTell(f"cannot tell whether the local runner (pid {ident.proc.pid}) still runs: "
                         f"{exc}") from None


def _answers(job_dir: Path, sub: "Submission") -> Tuple[List[Answer], Optional[Answer]]:
    """One answer per task of ``sub``: its record, LOST if its supervisor is gone, or Unknown;
    and one for its follow-up (None when it has none)."""
    try:
        ident, alive = _runner(job_dir, sub.index)
        # Read after the liveness check: a supervisor writes its last states before it exits, so
        # a dead one's file is final, and a live one's PENDING/RUNNING are current.
        try:
            plan = read_state(job_dir, sub.index)
        except (OSError, ValueError) as exc:
            raise CannotTell(f"cannot read the local runner's states {state_path(job_dir, sub.index)}: "
                             f"{exc}") from None
    except CannotTell as exc:
        return [Unknown(str(exc))] * sub.n_tasks, Unknown(str(exc)) if sub.followup else None
    pid, host = ident.proc.pid, ident.proc.host
    job_id = sub.job_id or ident.job_id
    out: List[Answer] = []
    for t in range(sub.n_tasks):
        rec = plan.tasks.get(t)
        if rec is None:
            out.append(Unknown(f"the local runner's states have no task {t}"))
            continue
        state, reason = rec.state, ""
        if state == PENDING and plan.gate and (plan.gate_run is None or plan.gate_run.state in (PENDING, RUNNING)):
            reason = "Dependency"  # its gate waits for the upstream jobs (Slurm's word)
        if state in (PENDING, RUNNING) and not alive:
            # The task's own process (pid and start time, as cancel checks) outlives its runner.
            if state == RUNNING and rec.proc is not None and _still_runs(rec.proc):
                reason = f"the local runner (pid {pid} on {host}) is gone; the task still runs"
            else:
                state, reason = LOST, f"the local runner (pid {pid} on {host}) is gone"
        out.append(TaskRecord(array_job_id=job_id, task=t, state=state, node_list=host, reason=reason,
                              exit_code=_exit_code(rec.exit_code), end_time=rec.ended))
    return out, local_followup.answer(plan, alive, job_id, host)


def _cancel(job_dir: Path, k: int) -> None:
    if not runner_path(job_dir, k).exists():
        return  # never started here
    signalled = False
    try:
        ident, alive = _runner(job_dir, k)
        if alive:
            # Its own session, so its group is just itself; it stops its tasks and records them.
            signalled = _signal_group(ident.proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S + 5
            while is_alive(ident.proc) and time.monotonic() < deadline:
                time.sleep(POLL_S)
            if is_alive(ident.proc):
                return  # still stopping its tasks: it will record them itself
    except CannotTell as exc:
        raise SchedulerError(f"cannot cancel submission {k}: {exc}") from None
    _record_cancel(job_dir, k, signalled)


def _still_runs(ident: Proc) -> bool:
    try:
        return is_alive(ident)
    except CannotTell:
        return False


def _record_cancel(job_dir: Path, k: int, signalled: bool) -> None:
    """The supervisor is gone, so the state file is ours: stop tasks it left running, and say
    CANCELLED for what this cancel stopped (a supervisor killed before it could record)."""
    try:
        state = read_state(job_dir, k)
    except (OSError, ValueError):
        return
    changed = False
    for rec in state.tasks.values():
        orphan = rec.state == RUNNING and rec.proc is not None and _still_runs(rec.proc)
        if orphan and rec.proc is not None:
            _signal_group(rec.proc.pid, signal.SIGTERM)
        if orphan or (signalled and rec.state in (PENDING, RUNNING)):
            rec.state, rec.ended = CANCELLED, time.time()
            changed = True
    if changed:
        localrun.write_state(job_dir, k, state)


# -- the supervisor ----------------------------------------------------------------------------

class _Supervisor:
    """Runs the tasks of one submission, a few at a time, and records their states."""

    def __init__(self, job_dir: Path, k: int) -> None:
        self.job_dir, self.k = job_dir, k
        plan = read_state(job_dir, k)
        self.script = jd.script_path(job_dir, plan.script)
        self.width = plan.parallel
        self.tasks: Dict[int, Run] = plan.tasks
        self.plan = plan
        self.running: Dict[int, subprocess.Popen] = {}
        self.job_id = f"local-{os.getpid()}"
        self.host = socket.gethostname()

    def save(self) -> None:
        localrun.write_state(self.job_dir, self.k, self.plan)

    def start(self, t: int) -> None:
        facts = {"task": t, "task1": t + 1, "job_id": self.job_id, "node": self.host}
        env = dict(os.environ, **{name: str(value).format(**facts)
                                  for name, value in self.plan.env.items()})
        with open(jd.log_path(self.job_dir, self.k, t), "ab") as log:
            # Its own process group, so a cancel can signal the task and every process it
            # started (as Slurm signals a whole step), and nothing else.
            proc = subprocess.Popen(["bash", str(self.script)], env=env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.running[t] = proc
        self.tasks[t] = Run(RUNNING, started=time.time(), proc=identity(proc.pid))
        self.save()

    def reap(self, stopping: bool = False) -> None:
        """Record the tasks that have ended (and, once stopping, whose processes all have)."""
        for t, proc in list(self.running.items()):
            code = proc.poll()
            # Once stopping, wait for every process of the task: each saves its rows on SIGTERM.
            if code is None or (stopping and _signal_group(proc.pid, 0)):
                continue
            del self.running[t]
            state = COMPLETED if code == 0 else (CANCELLED if stopping else FAILED)
            run = self.tasks[t]
            run.state, run.exit_code, run.ended = state, code, time.time()
            self.save()

    def stop(self) -> None:
        """SIGTERM every running task (its rows are saved by the worker's handler), give them
        STOP_GRACE_S to exit, SIGKILL what is left, and record all unfinished tasks CANCELLED."""
        for proc in self.running.values():
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while self.running and time.monotonic() < deadline:
            time.sleep(POLL_S)
            self.reap(stopping=True)
        for t, proc in self.running.items():
            _signal_group(proc.pid, signal.SIGKILL)
            self.tasks[t].exit_code = proc.wait()
        self.running.clear()
        for rec in self.tasks.values():
            if rec.state in (PENDING, RUNNING):
                rec.state, rec.ended = CANCELLED, time.time()
        self.save()

    def run(self, stop_requested: List[int]) -> int:
        if not local_followup.run_gate(self, stop_requested):
            # The gate closed (an upstream job ended with rows not done), or a cancel came
            # first: no task ever runs, and none is left waiting.
            for rec in self.tasks.values():
                if rec.state == PENDING:
                    rec.state, rec.ended = CANCELLED, time.time()
            self.save()
            local_followup.run(self, stop_requested)  # as a scheduler would start it now
            return 0
        pending = sorted(t for t, rec in self.tasks.items() if rec.state == PENDING)
        while (pending or self.running) and not stop_requested:
            while pending and len(self.running) < self.width and not stop_requested:
                self.start(pending.pop(0))
            time.sleep(POLL_S)
            self.reap()
        if stop_requested:
            self.stop()
        local_followup.run(self, stop_requested)
        return 0


def main(argv: Sequence[str]) -> int:
    """The supervisor process: ``python -m slurm_apply._backends.local.backend JOB_DIR SUBMISSION``."""
    stop_requested: List[int] = []
    # Only note the request: the loop acts on it between steps, so a SIGTERM that arrives while
    # a task is being started or a state written cannot leave either half done.
    signal.signal(signal.SIGTERM, lambda signum, frame: stop_requested.append(signum))
    return _Supervisor(Path(argv[0]), int(argv[1])).run(stop_requested)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
