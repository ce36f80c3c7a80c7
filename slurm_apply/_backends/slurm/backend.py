"""The only module that runs Slurm's commands (sbatch, sacct, squeue, scancel, scontrol), and the
Slurm backend built on them.

Each command has a thin runner here and a pure parser in :mod:`.parse`; what slurmstepd writes
into a task's log is read in :mod:`.logs`. No command goes through a shell: arguments are lists.
A runner that gets no answer raises SchedulerError whose message names the command and what
went wrong; :meth:`SlurmBackend.query` turns that into :class:`Unknown` answers, never into
"the scheduler forgot the task".
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Tuple

from ..._errors import InputError, SchedulerError, SubmissionError
from ..._store import layout as jd
from ..base import Answer, Backend, Limits, Query, TaskKey, TaskRecord, Unknown, submit_after
from ..commands import CommandTimeout, run as run_command
from . import logs
from . import resources as res
from .parse import (
    ACCOUNTING_DISABLED,
    SACCT_FIELDS,
    SQUEUE_FORMAT,
    expand_task_ranges,
    parse_find_array_job,
    parse_job_name,
    parse_partitions,
    parse_sacct,
    parse_sacct_jobs,
    parse_sbatch,
    parse_scontrol_config,
    parse_squeue,
    parse_squeue_jobs,
    parse_time,
)

if TYPE_CHECKING:
    from ..._store.manifest import Submission

__all__ = [
    "ACCOUNTING_DISABLED", "COMMAND_TIMEOUT_S", "QUERY_TIMEOUT_S", "SQUEUE_FORMAT", "CommandTimeout",
    "SlurmBackend", "TaskRecord", "cluster_available", "config", "expand_task_ranges",
    "find_array_job", "have_sbatch", "max_array_size", "parse_find_array_job", "parse_job_name",
    "parse_sacct", "parse_sbatch", "parse_scontrol_config", "parse_squeue", "parse_time", "sacct",
    "sbatch", "scancel", "squeue", "partition_limits",
]

# sbatch, scancel, scontrol: rare calls that act, so worth waiting for.
COMMAND_TIMEOUT_S = 60
# sacct, squeue: wait() asks again later, so a slow answer costs one round, not the wait. Not
# shorter: against a dead controller squeue needs about 18 s (its connect retries) to say so,
# and its own words are worth more than "did not answer".
QUERY_TIMEOUT_S = 30

NOT_ON_PATH = "{} is not on PATH; is Slurm loaded in this shell (module load slurm)?"


def _run(args: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess:
    # Slurm prints time stamps as the user's SLURM_TIME_FORMAT says; ask for epoch seconds so
    # the parsers read one form whatever the shell has set.
    return run_command(args, timeout_s, NOT_ON_PATH, env=dict(os.environ, SLURM_TIME_FORMAT="%s"))


def _said(proc: subprocess.CompletedProcess) -> str:
    """What a failed command said: its last line (sacct explains itself last), or its exit status."""
    lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {proc.returncode}"


# --- is there a cluster here? ------------------------------------------------------------------

_available: Dict[tuple, bool] = {}


def have_sbatch() -> bool:
    return shutil.which("sbatch") is not None


def cluster_available() -> bool:
    """True when this machine can submit to a Slurm cluster.

    sbatch on PATH is not enough: Debian installs the client without a cluster. We also need a
    configuration (SLURM_CONF, /etc/slurm/slurm.conf) or, for a "configless" site, a controller
    that answers ``scontrol ping``.
    """
    key = (os.environ.get("PATH", ""), os.environ.get("SLURM_CONF", ""))
    if key not in _available:
        ok = have_sbatch()
        if ok:
            conf = os.environ.get("SLURM_CONF")
            candidates = [conf] if conf else ["/etc/slurm/slurm.conf", "/etc/slurm-llnl/slurm.conf"]
            if not any(c and os.path.exists(c) for c in candidates):
                try:
                    ok = _run(["scontrol", "ping"], 10).returncode == 0
                except SchedulerError:
                    ok = False
        _available[key] = ok
    return _available[key]


# --- sbatch, scancel ---------------------------------------------------------------------------


def _maybe_queued(script: str) -> str:
    return ("The job may have been queued anyway: before submitting again, look for it with "
            f"`squeue --me -o '%F %o'` (its script is {script}) and cancel it with `scancel <id>` "
            "if it is there.")


def sbatch(script: os.PathLike, *options: str) -> str:
    """Submit a script (with more ``options`` before it); return its job id. Raises
    SubmissionError, with sbatch's words, when it is refused, cannot be run, or does not answer
    (the job may then have been queued anyway)."""
    path = os.fspath(script)
    try:
        proc = _run(["sbatch", "--parsable", *options, path], COMMAND_TIMEOUT_S)
    except CommandTimeout as exc:
        raise SubmissionError(f"{exc}. {_maybe_queued(path)}") from None
    except SchedulerError as exc:
        raise SubmissionError(str(exc)) from None
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
        raise SubmissionError(f"sbatch refused the job: {msg}", stderr=msg)
    try:
        return parse_sbatch(proc.stdout)
    except SchedulerError as exc:  # it said yes, in words we cannot read
        raise SubmissionError(f"{exc}. {_maybe_queued(path)}") from None


def scancel(job_ids: Iterable[str]) -> None:
    """Cancel these jobs; an id the controller no longer knows is not an error."""
    ids = [j for j in job_ids if j]
    if not ids:
        return
    proc = _run(["scancel", *ids], COMMAND_TIMEOUT_S)
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip() and "Invalid job id" not in ln]
    if proc.returncode != 0 and (errors or not proc.stderr.strip()):
        raise SchedulerError(f"scancel failed: {errors[-1].strip() if errors else _said(proc)}")


# --- sacct, squeue -----------------------------------------------------------------------------


def sacct_text(job_ids: Sequence[str]) -> Optional[str]:
    """One batched sacct call for all the jobs; None when the cluster keeps no accounting.
    Raises SchedulerError when sacct cannot answer."""
    if not job_ids:
        return ""
    proc = _run(["sacct", "--parsable2", "--noheader", "-j", ",".join(job_ids),
                 "-o", SACCT_FIELDS], QUERY_TIMEOUT_S)
    if proc.returncode != 0:
        if ACCOUNTING_DISABLED in (proc.stderr + proc.stdout).lower():
            return None
        raise SchedulerError(f"sacct failed: {_said(proc)}")
    return proc.stdout


def sacct(array_job_ids: Sequence[str]) -> Optional[List[TaskRecord]]:
    """The array tasks sacct knows of; None when the cluster keeps no accounting."""
    text = sacct_text(array_job_ids)
    return None if text is None else parse_sacct(text)


def squeue_text(job_ids: Sequence[str]) -> str:
    """The jobs the controller still knows (queued, running, or ended within MinJobAge), one
    line per array task. Raises SchedulerError when squeue cannot answer."""
    if not job_ids:
        return ""
    proc = _run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(job_ids),
                 "-o", SQUEUE_FORMAT], QUERY_TIMEOUT_S)
    if proc.returncode != 0:
        # Asked only about ids it has forgotten, squeue exits 1 with "Invalid job id": that is
        # an answer (it knows none of them), not a failure.
        if "Invalid job id" in proc.stderr:
            return ""
        raise SchedulerError(f"squeue failed: {_said(proc)}")
    return proc.stdout


def squeue(array_job_ids: Sequence[str]) -> List[TaskRecord]:
    """The array tasks squeue knows of."""
    return parse_squeue(squeue_text(array_job_ids))


def find_array_job(jobname: str, script: str) -> Optional[str]:
    """The array job id of a script submitted by hand (``sbatch submit.sh``), found by its name
    and its script's absolute path, or None when the controller does not know it."""
    proc = _run(["squeue", "-h", "-t", "all", "-n", jobname, "-o", "%F|%o"], QUERY_TIMEOUT_S)
    if proc.returncode != 0:
        return None
    return parse_find_array_job(proc.stdout, script)


# --- scontrol ----------------------------------------------------------------------------------

_config_cache: Dict[str, Dict[str, str]] = {}


def config() -> Dict[str, str]:
    """The controller's configuration (cached per SLURM_CONF for this process)."""
    key = os.environ.get("SLURM_CONF", "")
    if key not in _config_cache:
        proc = _run(["scontrol", "show", "config"], COMMAND_TIMEOUT_S)
        if proc.returncode != 0:
            raise SchedulerError(f"scontrol show config failed: {_said(proc)}")
        _config_cache[key] = parse_scontrol_config(proc.stdout)
    return _config_cache[key]


def partitions(name: str = "") -> List[Dict[str, str]]:
    """``scontrol show partition`` (all of them, or the one named), one dict per partition."""
    proc = _run(["scontrol", "-o", "show", "partition", *([name] if name else [])], COMMAND_TIMEOUT_S)
    if proc.returncode != 0:
        raise SchedulerError(f"scontrol show partition failed: {_said(proc)}")
    return parse_partitions(proc.stdout)


def partition_limits(options: Dict[str, object]) -> Limits:
    """MaxTime and MaxMemPerNode/MaxMemPerCPU of the partition the options name (else of the
    default partition); no limit where the partition cannot be read."""
    name = str(options.get("partition") or options.get("p") or "")
    try:
        found = partitions(name)
    except SchedulerError:
        return Limits(partition=name)
    part = next((p for p in found if not name and p.get("Default") == "YES"), found[0] if found else {})
    return Limits(max_time_s=res.time_s(part.get("MaxTime", "")),
                  max_mem_mb=res.mem_mb(part.get("MaxMemPerNode", "")),
                  max_mem_per_cpu_mb=res.mem_mb(part.get("MaxMemPerCPU", "")),
                  partition=part.get("PartitionName", name))


def max_array_size() -> int:
    """Array task ids must be below MaxArraySize (default 1001)."""
    try:
        return int(config().get("MaxArraySize", "1001"))
    except ValueError:
        return 1001


# --- the backend -------------------------------------------------------------------------------


def _fill(answers: Dict[TaskKey, Answer], subs: Dict[str, "Submission"],
          records: Sequence[TaskRecord]) -> None:
    """Record each task's line; a task's own line wins over a collapsed pending one."""
    for rec in sorted(records, key=lambda r: r.task is None):
        sub = subs.get(rec.array_job_id)
        if sub is None:
            continue
        for task in ([rec.task] if rec.task is not None else rec.pending_tasks):
            if 0 <= task < sub.n_tasks:
                answers.setdefault((sub.index, task), rec)


def _unanswered(answers: Dict[TaskKey, Answer], subs: Dict[str, "Submission"]) -> List[str]:
    return [job_id for job_id, s in subs.items()
            if any((s.index, t) not in answers for t in range(s.n_tasks))]


def _fill_followups(out: Dict[int, Answer], followups: Dict[str, "Submission"],
                    records: Dict[str, TaskRecord]) -> None:
    for job_id, s in followups.items():
        if job_id in records:
            out.setdefault(s.index, records[job_id])


def _read(answers: Query, arrays: Dict[str, "Submission"], followups: Dict[str, "Submission"],
          text: str, sacct_form: bool) -> None:
    """Fill answers from one command's output: array tasks, and the follow-ups among them."""
    if sacct_form:
        _fill(answers.answers, arrays, parse_sacct(text))
        _fill_followups(answers.followups, followups, parse_sacct_jobs(text))
    else:
        _fill(answers.answers, arrays, parse_squeue(text))
        _fill_followups(answers.followups, followups, parse_squeue_jobs(text))


class SlurmBackend(Backend):
    """Array jobs submitted with sbatch; asked about with sacct, else squeue."""

    name = "slurm"
    kill_marks = logs.KILL_MARKS

    def submit(self, job_dir: Path, sub: "Submission") -> str:
        return sbatch(jd.script_path(job_dir, sub.script))

    def query(self, job_dir: Path, subs: Sequence["Submission"]) -> Query:
        """One sacct for every array and undecided follow-up; squeue for what sacct did not
        answer (no accounting, a failed sacct, jobs too new or held to have a record). Never
        raises for a command that could not answer: those tasks are Unknown."""
        out = Query()
        by_id = {s.job_id: s for s in subs if s.job_id}
        follow = {s.followup_id: s for s in subs if s.followup_id and s.decision is None}
        if not by_id and not follow:
            return out
        out.calls += 1
        try:
            text = sacct_text([*by_id, *follow])
            if text is not None:
                _read(out, by_id, follow, text, sacct_form=True)
        except SchedulerError as exc:
            out.notes.append(f"sacct could not be used, so squeue was asked: {exc}")
        left = _unanswered(out.answers, by_id)
        left_followups = [j for j, s in follow.items() if s.index not in out.followups]
        if left or left_followups:
            out.calls += 1
            answer: Answer = None  # asked, and not known: the controller has forgotten them
            try:
                _read(out, by_id, follow, squeue_text([*left, *left_followups]), sacct_form=False)
            except SchedulerError as exc:
                answer = Unknown(str(exc))
            for job_id in left:
                s = by_id[job_id]
                for t in range(s.n_tasks):
                    out.answers.setdefault((s.index, t), answer)
            for job_id in left_followups:
                out.followups.setdefault(follow[job_id].index, answer)
        return out

    def cancel(self, job_dir: Path, subs: Sequence["Submission"]) -> None:
        scancel([j for s in subs for j in (s.job_id, s.followup_id, s.gate_id) if j])

    def submit_gated(self, job_dir: Path, sub: "Submission",
                     upstream: Sequence[str]) -> Tuple[str, Optional[str]]:
        # The gate: afterany on every upstream job still known (arrays, follow-ups, their gates).
        # The array: afterok on the gate, so only a gate that exits 0 lets it start; one that
        # exits otherwise makes the dependency never satisfied, and --kill-on-invalid-dep=yes
        # has Slurm cancel the array then (kill_invalid_depend is off by default, which would
        # leave it PENDING "DependencyNeverSatisfied" for ever); gate_closed() cancels it too.
        after = [f"--dependency=afterany:{':'.join(upstream)}"] if upstream else []
        gate_id, array_id = submit_after(
            lambda: sbatch(jd.script_path(job_dir, sub.gate), *after, "--kill-on-invalid-dep=yes"),
            lambda gate: sbatch(jd.script_path(job_dir, sub.script), f"--dependency=afterok:{gate}",
                                "--kill-on-invalid-dep=yes"),
            lambda gate: scancel([gate]))
        return array_id, gate_id

    def gate_closed(self, job_dir: Path, sub: "Submission") -> None:
        if sub.job_id:
            scancel([sub.job_id])

    def cancel_followups(self, job_dir: Path, subs: Sequence["Submission"]) -> None:
        scancel([s.followup_id for s in subs if s.followup_id])

    def submit_followup(self, job_dir: Path, sub: "Submission") -> Optional[str]:
        # afterany: it starts once every task has ended, whatever their states; a dependency
        # that can never be met (the array forgotten) cancels it rather than leaving it queued.
        return sbatch(jd.script_path(job_dir, sub.followup), f"--dependency=afterany:{sub.job_id}",
                      "--kill-on-invalid-dep=yes")

    def limits(self, options: Dict[str, object]) -> Limits:
        return partition_limits(options)

    def check_usable(self, requested: str) -> None:
        if not have_sbatch():
            raise InputError(f"backend={requested!r} needs Slurm, but sbatch is not on PATH; load "
                             "Slurm (e.g. `module load slurm`), or use backend='local' or 'auto'")

    def max_array_size(self) -> Optional[int]:
        return max_array_size()

    def death_in_log(self, text: str) -> Optional[Tuple[str, str]]:
        return logs.death(text)  # slurmstepd's kill lines

    def memory_limit_in_log(self, text: str) -> Optional[float]:
        return logs.memory_limit_mb(text)

    def adopt(self, job_dir: Path, sub: "Submission") -> Optional[str]:
        """The id of this submission's script run by hand with sbatch, found by the job name in
        the script and the script's path; None when unknown or when squeue cannot answer."""
        script = jd.script_path(job_dir, sub.script)
        try:
            name = parse_job_name(script.read_text())
            return find_array_job(name, str(script)) if name else None
        except (OSError, SchedulerError):
            return None
