"""The Grid Engine backend: array jobs submitted with ``qsub``, asked about with one ``qstat
-xml`` per poll (live tasks, pending ones as ranges) and ``qacct -j`` (ended ones), cancelled
with ``qdel``.

Commands run in :mod:`.commands`; their output is read by :mod:`.parse`. Grid Engine's task ids
are 1-based, the package's 0-based: every record is shifted here. A command that cannot answer
(a qmaster that is down, a missing qstat) makes those tasks :class:`Unknown`, never "forgotten".
``qacct`` answers without the qmaster: what it has recorded stands even then.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple

from ..._errors import InputError, SchedulerError, SubmissionError
from ..._store import layout as jd
from .. import states as st
from ..base import Answer, Backend, Dialect, Limits, Query, TaskRecord, Unknown, submit_after
from ..commands import CommandTimeout
from . import commands as cmd
from . import options as opts
from . import resources as res
from .parse import (ACCT_NO_FILE, ACCT_NOT_FOUND, AcctRecord, acct_task_record, find_by_script, last_runs,
                    memory_death, parse_job_name, parse_qacct, parse_qstat_xml, parse_qsub, qacct_problem,
                    qmaster_unreachable, qsub_refusal)

if TYPE_CHECKING:
    from ..._store.manifest import Submission

# Records of a job number submitted this long before our qsub returned belong to an older job
# of the same number (numbers wrap; a cell may be rebuilt).
_OLDER_JOB_S = 60.0
# qacct lags qstat: the qmaster writes a task's accounting record some seconds after the task
# has left qstat (reporting_params flush_time, 15 s by default). A task in neither is given this
# long, from when this process first saw it so, before it is answered as forgotten.
ACCT_GRACE_S = 45.0
NO_ACCOUNTING = ("Grid Engine has no accounting file here yet (`qacct` found none: no job has "
                 "ended since the cell was set up, or accounting is off), so tasks that left "
                 "qstat are read from their own markers only")


def _maybe_queued(script: str) -> str:
    return ("The job may have been queued anyway: before submitting again, look for it with "
            f"`qstat` (its script is {script}) and delete it with `qdel <id>` if it is there.")


def qsub(script: Path, *options: str) -> str:
    """Submit a script; return its job number. Raises SubmissionError with qsub's words."""
    path = str(script)
    try:
        proc = cmd.run(["qsub", "-terse", *options, path], cmd.COMMAND_TIMEOUT_S)
    except CommandTimeout as exc:
        raise SubmissionError(f"{exc}. {_maybe_queued(path)}") from None
    except SchedulerError as exc:
        raise SubmissionError(str(exc)) from None
    if proc.returncode != 0:
        words = qsub_refusal(proc.stdout, proc.stderr) or f"exit status {proc.returncode}"
        raise SubmissionError(f"qsub refused the job: {words}", stderr=words)
    try:
        return parse_qsub(proc.stdout)
    except SchedulerError as exc:
        raise SubmissionError(f"{exc}. {_maybe_queued(path)}") from None


def qdel(job_ids: Sequence[str]) -> None:
    """Delete these jobs; one Grid Engine no longer knows is not an error."""
    ids = [j for j in job_ids if j]
    if not ids:
        return
    proc = cmd.run(["qdel", *ids], cmd.COMMAND_TIMEOUT_S)
    text = proc.stdout + proc.stderr
    if qmaster_unreachable(text):
        raise SchedulerError(f"qdel could not reach the qmaster: {cmd.said(proc)}")
    errors = [ln for ln in text.splitlines() if ln.strip() and "does not exist" not in ln
              and "has registered the job" not in ln and "has deleted" not in ln
              and "deletion" not in ln]
    if proc.returncode != 0 and errors:
        raise SchedulerError(f"qdel failed: {' '.join(errors)}")


def qstat() -> Tuple[List[TaskRecord], Dict[str, TaskRecord]]:
    """This user's array tasks and plain jobs the qmaster knows (queued, running, held, in error)."""
    proc = cmd.run(["qstat", "-xml", "-u", getpass.getuser()])
    if proc.returncode != 0 or qmaster_unreachable(proc.stdout + proc.stderr):
        raise SchedulerError(f"qstat failed: {cmd.said(proc)}")
    return parse_qstat_xml(proc.stdout)


def qacct(job_id: str, since: Optional[float]) -> Tuple[List[AcctRecord], Optional[str]]:
    """The records of ``job_id`` (its runs that ended), and why there are none if so
    (:data:`.parse.ACCT_NO_FILE`, :data:`.parse.ACCT_NOT_FOUND`, or qacct's words)."""
    proc = cmd.run(["qacct", "-j", job_id])
    problem = qacct_problem(proc.returncode, proc.stdout, proc.stderr)
    return (parse_qacct(proc.stdout, since) if problem is None else []), problem


def _shift(record: TaskRecord) -> TaskRecord:
    """Grid Engine's 1-based task ids as the package's 0-based ones."""
    return dataclasses.replace(record, task=None if record.task is None else record.task - 1,
                               pending_tasks=tuple(t - 1 for t in record.pending_tasks))


def _since(sub: "Submission") -> Optional[float]:
    return sub.submitted_at - _OLDER_JOB_S if sub.submitted_at else sub.written_at or None


class SgeBackend(Backend):
    """Array jobs on a Grid Engine cell (Son of Grid Engine, Univa/Altair GE)."""

    name = "sge"

    def __init__(self, dialect: Optional[Dialect] = None) -> None:
        super().__init__(dialect)
        self._gone_since: Dict[Tuple[str, Optional[int]], float] = {}

    def _not_recorded(self, job_id: str, task: Optional[int]) -> Optional[TaskRecord]:
        """A task (a follow-up: ``task`` None) in neither qstat nor qacct: COMPLETING while
        qacct may still be about to record it, then None (forgotten)."""
        now = time.time()
        first = self._gone_since.setdefault((job_id, task), now)
        if now - first >= ACCT_GRACE_S:
            return None
        what = f"task {task + 1} of job {job_id}" if task is not None else f"job {job_id}"
        return TaskRecord(job_id, task, st.COMPLETING, reason=(
            f"left qstat; waiting for Grid Engine's accounting record of it (qacct -j {job_id}), which "
            f"the qmaster writes a little after a task ends: {now - first:.0f} s of {ACCT_GRACE_S:.0f}"
            f" ({what})"))

    def submit(self, job_dir: Path, sub: "Submission") -> str:
        return qsub(jd.script_path(job_dir, sub.script))

    def submit_followup(self, job_dir: Path, sub: "Submission") -> Optional[str]:
        """-hold_jid: it starts once every task of the array has ended, whatever their states.
        Its script asks for 15 minutes and some memory; a queue that allows less would keep it
        waiting forever, so it asks for the queue's h_rt and h_vmem instead (qsub's own options
        override the script's)."""
        script = jd.script_path(job_dir, sub.followup)
        asked: Dict[str, Optional[str]] = {"h_rt": None, "h_vmem": None}
        for line in script.read_text().splitlines():
            for key in asked:
                if line.startswith(f"#$ -l {key}="):
                    asked[key] = line.split("=", 1)[1].strip()
        queue = self.limits(sub.slurm_options)
        fit = []
        want_s = res.time_s(asked["h_rt"] or "")
        if queue.max_time_s is not None and want_s is not None and queue.max_time_s < want_s:
            fit.append(f"h_rt={res.time_text(queue.max_time_s)}")
        want_mb = res.mem_mb(asked["h_vmem"] or "")
        if queue.max_mem_per_cpu_mb is not None and want_mb is not None and queue.max_mem_per_cpu_mb < want_mb:
            fit.append(f"h_vmem={res.mem_text(queue.max_mem_per_cpu_mb)}")
        extra = ["-l", ",".join(fit)] if fit else []
        return qsub(script, "-hold_jid", str(sub.job_id), *extra)

    def submit_gated(self, job_dir: Path, sub: "Submission",
                     upstream: Sequence[str]) -> Tuple[str, Optional[str]]:
        # -hold_jid waits for the listed jobs to end however they ended: the gate waits so for
        # the upstream jobs, and the array for the gate; a gate that closes deletes the array
        # (gate_closed), since Grid Engine would release it whatever the gate's exit status.
        hold = ["-hold_jid", ",".join(upstream)] if upstream else []
        gate_id, array_id = submit_after(
            lambda: qsub(jd.script_path(job_dir, sub.gate), *hold),
            lambda gate: qsub(jd.script_path(job_dir, sub.script), "-hold_jid", gate),
            lambda gate: qdel([gate]))
        return array_id, gate_id

    def gate_closed(self, job_dir: Path, sub: "Submission") -> None:
        if sub.job_id:
            jd.write_cancel_note(job_dir, sub.index, [sub.job_id], time.time())
            qdel([sub.job_id])

    def query(self, job_dir: Path, subs: Sequence["Submission"]) -> Query:
        """One qstat for every live task, then one qacct per array (and follow-up) with tasks
        qstat did not list. Never raises for a command that could not answer."""
        out = Query()
        arrays = {s.job_id: s for s in subs if s.job_id}
        follow = {s.followup_id: s for s in subs if s.followup_id and s.decision is None}
        if not arrays and not follow:
            return out
        out.calls += 1
        live_error = ""
        try:
            tasks, jobs = qstat()
        except SchedulerError as exc:
            tasks, jobs, live_error = [], {}, str(exc)
        for rec in sorted(tasks, key=lambda r: r.task is None):  # a task's own line wins
            sub = arrays.get(rec.array_job_id)
            if sub is None:
                continue
            shifted = _shift(rec)
            for t in ([shifted.task] if shifted.task is not None else shifted.pending_tasks):
                if 0 <= t < sub.n_tasks:
                    out.answers.setdefault((sub.index, t), shifted)
        no_file = False
        for job_id, sub in arrays.items():
            missing = [t for t in range(sub.n_tasks) if (sub.index, t) not in out.answers]
            if missing:
                out.calls += 1
                no_file |= self._ended(out, job_dir, job_id, sub, missing, live_error)
        for job_id, sub in follow.items():
            if job_id in jobs:
                out.followups[sub.index] = jobs[job_id]
                continue
            out.calls += 1
            no_file |= self._ended_followup(out, job_id, sub, live_error)
        if no_file:
            out.notes.append(NO_ACCOUNTING)
        return out

    def _ended(self, out: Query, job_dir: Path, job_id: str, sub: "Submission", missing: List[int],
               live_error: str) -> bool:
        """Answer the tasks qstat did not list from qacct; True when there is no accounting file."""
        try:
            records, problem = qacct(job_id, _since(sub))
        except SchedulerError as exc:
            records, problem = [], str(exc)
        cancelled_at = jd.read_cancel_note(job_dir, sub.index)
        runs = last_runs(records)
        for t in missing:
            run = runs.get(t + 1)
            answer: Answer
            if run is not None:
                answer = _shift(acct_task_record(run, cancelled_at))
            elif live_error:
                answer = Unknown(f"{live_error} (and qacct has no record of its end)")
            elif problem not in (None, ACCT_NOT_FOUND, ACCT_NO_FILE):
                answer = Unknown(f"qacct -j {job_id} failed: {problem}")
            elif cancelled_at is not None:
                # A task deleted before it started leaves no accounting record at all.
                answer = TaskRecord(job_id, t, st.CANCELLED, reason="deleted (qdel) by cancel() before it started")
            else:  # the qmaster was asked and knows it no more; qacct may not have it yet
                answer = self._not_recorded(job_id, t)
            out.answers[(sub.index, t)] = answer
        return problem == ACCT_NO_FILE

    def _ended_followup(self, out: Query, job_id: str, sub: "Submission", live_error: str) -> bool:
        try:
            records, problem = qacct(job_id, _since(sub))
        except SchedulerError as exc:
            records, problem = [], str(exc)
        run = last_runs(records).get(None)
        if run is not None:
            out.followups[sub.index] = acct_task_record(run)
        elif live_error:
            out.followups[sub.index] = Unknown(live_error)
        elif problem not in (None, ACCT_NOT_FOUND, ACCT_NO_FILE):
            out.followups[sub.index] = Unknown(f"qacct -j {job_id} failed: {problem}")
        else:
            out.followups[sub.index] = self._not_recorded(job_id, None)
        return problem == ACCT_NO_FILE

    def cancel(self, job_dir: Path, subs: Sequence["Submission"]) -> None:
        # Grid Engine records a qdel as any other SIGKILL: the note, written first, tells them apart.
        now = time.time()
        for sub in subs:
            ids = [j for j in (sub.job_id, sub.followup_id) if j]
            if ids:
                jd.write_cancel_note(job_dir, sub.index, ids, now)
        qdel([j for s in subs for j in (s.job_id, s.followup_id, s.gate_id) if j])

    def cancel_followups(self, job_dir: Path, subs: Sequence["Submission"]) -> None:
        qdel([s.followup_id for s in subs if s.followup_id])

    def limits(self, options: Dict[str, object]) -> Limits:
        """h_rt and h_vmem (per slot) of the queue the options name, else of the cell's only
        queue; none known where the queue cannot be read."""
        name = str(options.get("partition") or options.get("q") or "")
        try:
            if not name:
                queues = cmd.qconf_list("-sql")
                name = queues[0] if len(queues) == 1 else ""
            if not name or any(c in name for c in "*,@"):
                return Limits(partition=name)
            conf = cmd.qconf_show("-sq", name)
        except SchedulerError:
            return Limits(partition=name)
        return Limits(max_time_s=res.time_s(conf.get("h_rt", "")),
                      max_mem_per_cpu_mb=res.mem_mb(conf.get("h_vmem", "")), partition=name,
                      max_time_from=f"queue {name}'s h_rt", max_mem_per_cpu_from=f"queue {name}'s h_vmem per slot")

    def adopt(self, job_dir: Path, sub: "Submission") -> Optional[str]:
        """The number of this submission's script run by hand with qsub, found by its job name
        (``qstat -j <name>``) and its script's path; None when the qmaster does not know it
        (any more: a task that started says it in its start marker) or cannot be asked."""
        script = jd.script_path(job_dir, sub.script)
        try:
            name = parse_job_name(script.read_text())
            if not name:
                return None
            proc = cmd.run(["qstat", "-j", name])
        except (OSError, SchedulerError):
            return None
        if proc.returncode != 0:
            return None
        return find_by_script(proc.stdout, str(script))

    def death_in_log(self, text: str) -> Optional[Tuple[str, str]]:
        """A task's own processes that ran out of address space (h_vmem) outside its rows: its
        retry asks for twice the memory."""
        return memory_death(text)

    def row_error_note(self, sub: "Submission", error_type: str) -> Optional[str]:
        """h_vmem is a limit on each process's address space (``ulimit -v``): a row over it
        raises MemoryError, and fails alone, rather than being killed."""
        if error_type != "MemoryError":
            return None
        mem = sub.slurm_options.get("mem")
        if isinstance(mem, str) and res.mem_mb(mem):
            limit = (f"h_vmem={res.per_slot(mem, sub.cpus_per_task)} per slot (mem={mem} over "
                     f"{sub.cpus_per_task} slot(s))")
            more = res.mem_text(2 * (res.mem_mb(mem) or 0), like=mem)
        else:
            limit = "the queue's default h_vmem (`qconf -sq <queue>` shows it)"
            more = "8G"
        return (f"rows raised MemoryError: memory. Grid Engine enforces {limit} as a limit on each "
                "process's virtual memory, so Python raises MemoryError instead of being killed; "
                f"raise it with job.resubmit(failed=True, slurm_options={{'mem': '{more}'}}) "
                "(mem is per task, divided among its slots)")

    def check_usable(self, requested: str) -> None:
        if not cmd.have_qsub():
            raise InputError(f"backend={requested!r} needs Grid Engine, but qsub is not on PATH; set "
                             "up Grid Engine in this shell (e.g. `module load sge`), or use "
                             "backend='local' or 'auto'")
        if not os.environ.get("SGE_ROOT"):
            raise InputError(f"backend={requested!r} needs Grid Engine, but SGE_ROOT is not set; "
                             "source $SGE_ROOT/$SGE_CELL/common/settings.sh (your site's path) first")

    def check_resources(self, cpus_per_task: int, options: Mapping[str, object]) -> None:
        """A task of several slots needs a parallel environment: the one the options name
        (``pe``), else one the cell has (``qconf -spl``); none is an error before writing."""
        if options.get(opts.PE) in (None, False, True):
            cmd.pe_for(int(cpus_per_task))

    def max_array_size(self) -> Optional[int]:
        """max_aj_tasks of the global configuration (0: no limit; Grid Engine's default 75000)."""
        try:
            value = cmd.qconf_show("-sconf").get("max_aj_tasks", "75000")
        except SchedulerError:
            return 75000
        return int(value) or None if value.isdigit() else 75000
