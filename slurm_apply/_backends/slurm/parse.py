"""Pure parsers of what Slurm's commands print; tested on literal output (tests/test_parsers.py).

Nothing here runs a command: :mod:`slurm_apply._backends.slurm.backend` does, and hands the text here.
The task records they return speak the package's state names (:mod:`.._backends.states`), not
Slurm's.
"""

from __future__ import annotations

import re
import time
from typing import Dict, List, Optional, Tuple

from ..._errors import SchedulerError
from .. import states as st
from ..base import TaskRecord

# The fields asked of sacct, in this order; End is last so older literal outputs still parse.
SACCT_FIELDS = "JobID,State,ExitCode,Elapsed,MaxRSS,ReqMem,NodeList,Timelimit,End"
# %F array id, %K task id (or a pending range), %T state, %r reason, %N nodes, %M elapsed,
# %l time limit, %m memory, %e end time.
SQUEUE_FORMAT = "%F|%K|%T|%r|%N|%M|%l|%m|%e"
ACCOUNTING_DISABLED = "accounting storage is disabled"

# States in which a job has really ended. squeue's %e of a pending or running job is a forecast
# (start + time limit), so an end time is kept only for these.
ENDED_STATES = frozenset({
    "COMPLETED", "COMPLETING", "STAGE_OUT", "CANCELLED", "FAILED", "TIMEOUT", "PREEMPTED",
    "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "REVOKED", "SPECIAL_EXIT",
})

# Slurm's job states (squeue(1), "JOB STATE CODES") in the package's names. A state Slurm adds
# later is passed on as Slurm names it (and read as ended).
_OURS = {
    "PENDING": st.PENDING, "RESV_DEL_HOLD": st.PENDING,
    "CONFIGURING": st.RUNNING, "RUNNING": st.RUNNING, "COMPLETING": st.RUNNING,
    "RESIZING": st.RUNNING, "SIGNALING": st.RUNNING, "STAGE_OUT": st.RUNNING, "STOPPED": st.RUNNING,
    "SUSPENDED": st.SUSPENDED,
    "REQUEUED": st.REQUEUED, "REQUEUE_FED": st.REQUEUED, "REQUEUE_HOLD": st.REQUEUED,
    "COMPLETED": st.COMPLETED, "FAILED": st.FAILED, "SPECIAL_EXIT": st.FAILED,
    "TIMEOUT": st.TIMEOUT, "OUT_OF_MEMORY": st.OUT_OF_MEMORY, "NODE_FAIL": st.NODE_FAIL,
    "CANCELLED": st.CANCELLED, "REVOKED": st.CANCELLED, "PREEMPTED": st.PREEMPTED,
    "BOOT_FAIL": st.BOOT_FAIL, "DEADLINE": st.DEADLINE,
}

_ARRAY_ID = re.compile(r"^(\d+)_(\d+|\[[^\]]*\])$")


def parse_sbatch(stdout: str) -> str:
    """``sbatch --parsable`` prints ``<jobid>`` or ``<jobid>;<cluster>``."""
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id = line.split(";")[0].strip()
    if not job_id.isdigit():
        raise SchedulerError(f"could not read a job id from sbatch's output: {stdout!r}")
    return job_id


def expand_task_ranges(spec: str) -> List[int]:
    """``[0-3,7%2]`` -> [0, 1, 2, 3, 7] (a ``%N`` throttle suffix is ignored)."""
    spec = spec.strip("[]").split("%")[0]
    out: List[int] = []
    for part in spec.split(","):
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            step = 1
            if ":" in b:
                b, s = b.split(":", 1)
                step = int(s)
            out.extend(range(int(a), int(b) + 1, step))
        else:
            out.append(int(part))
    return out


def parse_time(value: str) -> Optional[float]:
    """A Slurm time stamp as epoch seconds; None for "Unknown", "None", "N/A" or anything else.

    The runner sets ``SLURM_TIME_FORMAT=%s``, so Slurm prints epoch seconds; its default form
    (``2026-11-21T09:59:00``, local time) is read too, for a Slurm that ignores the setting.
    """
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return time.mktime(time.strptime(value, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def our_state(slurm_state: str) -> str:
    """The package's name for a state Slurm prints (CONFIGURING is RUNNING, REVOKED CANCELLED...);
    sacct's "CANCELLED by 0" is read by its first word."""
    name = slurm_state.split()[0] if slurm_state.strip() else ""
    return _OURS.get(name, name)


def end_time(state: str, value: str) -> Optional[float]:
    """When a task ended, or None while it has not (or the scheduler did not say); ``state`` is
    Slurm's own name."""
    return parse_time(value) if state in ENDED_STATES else None


def _split_id(job_id: str) -> Optional[Tuple[str, Optional[int], Tuple[int, ...]]]:
    m = _ARRAY_ID.match(job_id)
    if not m:
        return None
    array_id, task = m.groups()
    if task.startswith("["):
        pending = _ranges_or_none(task)
        return None if pending is None else (array_id, None, pending)
    return array_id, int(task), ()


def _ranges_or_none(spec: str) -> Optional[Tuple[int, ...]]:
    # A range this parser cannot read skips its line rather than failing the whole answer.
    try:
        return tuple(expand_task_ranges(spec))
    except ValueError:
        return None


def parse_sacct(text: str) -> List[TaskRecord]:
    """Parse ``sacct --parsable2 --noheader -o <SACCT_FIELDS>``.

    The allocation line (``123_4``) gives state, exit code, elapsed, nodes and end; the
    ``.batch`` step line gives the memory the script used. Tasks not yet started share one
    line (``123_[2-5]``).
    """
    lines: Dict[tuple, dict] = {}
    max_rss: Dict[tuple, str] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 7:
            continue
        job_id, state, exit_code, elapsed, rss, req_mem, nodes = parts[:7]
        base, _, step = job_id.partition(".")
        split = _split_id(base)
        if split is None:
            continue
        array_id, task, pending = split
        key = (array_id, task if task is not None else base)
        if step:
            if step == "batch" and rss:
                max_rss[key] = rss
            continue
        state = state.split()[0] if state else ""  # "CANCELLED by 0" -> CANCELLED
        lines[key] = dict(
            array_job_id=array_id, task=task, state=our_state(state), exit_code=exit_code,
            elapsed=elapsed, req_mem=req_mem, node_list=nodes, pending_tasks=pending,
            time_limit=parts[7] if len(parts) > 7 else "",
            end_time=end_time(state, parts[8]) if len(parts) > 8 else None)
    return [TaskRecord(max_rss=max_rss.get(key, ""), **fields) for key, fields in lines.items()]


def parse_squeue(text: str) -> List[TaskRecord]:
    """Parse ``squeue -h -r -t all -o <SQUEUE_FORMAT>``."""
    out: List[TaskRecord] = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 8:
            continue
        array_id, task, state, reason, nodes, elapsed, limit, mem = parts[:8]
        if not array_id.isdigit():
            continue
        pending = () if task.isdigit() else _ranges_or_none(task)
        if pending is None:
            continue
        ended = end_time(state, parts[8]) if len(parts) > 8 else None
        out.append(TaskRecord(array_id, int(task) if task.isdigit() else None, our_state(state),
                              elapsed=elapsed, node_list=nodes, reason=reason, req_mem=mem,
                              time_limit=limit, end_time=ended, pending_tasks=pending))
    return out


def parse_sacct_jobs(text: str) -> Dict[str, TaskRecord]:
    """The plain (not array) jobs in the same sacct output, by job id: the follow-ups that
    retry a submission's rows (:func:`parse_sacct` reads only array tasks)."""
    out: Dict[str, TaskRecord] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 7 or not parts[0].isdigit():  # steps ("124.batch") and arrays are not
            continue
        state = parts[1].split()[0] if parts[1] else ""
        out[parts[0]] = TaskRecord(
            parts[0], None, our_state(state), exit_code=parts[2], elapsed=parts[3], req_mem=parts[5],
            node_list=parts[6], time_limit=parts[7] if len(parts) > 7 else "",
            end_time=end_time(state, parts[8]) if len(parts) > 8 else None)
    return out


def parse_squeue_jobs(text: str) -> Dict[str, TaskRecord]:
    """The plain (not array) jobs in the same squeue output (their task id is "N/A")."""
    out: Dict[str, TaskRecord] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 8 or not parts[0].isdigit() or parts[1] != "N/A":
            continue
        job_id, _, state, reason, nodes, elapsed, limit, mem = parts[:8]
        out[job_id] = TaskRecord(job_id, None, our_state(state), elapsed=elapsed, node_list=nodes,
                                 reason=reason, req_mem=mem, time_limit=limit,
                                 end_time=end_time(state, parts[8]) if len(parts) > 8 else None)
    return out


def parse_partitions(text: str) -> List[Dict[str, str]]:
    """``scontrol -o show partition``: one line per partition of ``Key=value`` words."""
    out: List[Dict[str, str]] = []
    for line in text.splitlines():
        fields = dict(word.split("=", 1) for word in line.split() if "=" in word)
        if "PartitionName" in fields:
            out.append(fields)
    return out


def parse_find_array_job(text: str, script: str) -> Optional[str]:
    """The array id on a ``squeue -o '%F|%o'`` line whose command is ``script``."""
    for line in text.splitlines():
        array_id, _, command = line.strip().partition("|")
        if array_id.isdigit() and command.strip() == script:
            return array_id
    return None


def parse_job_name(script_text: str) -> Optional[str]:
    """The ``#SBATCH --job-name=`` value of an array script, unquoted as sbatch reads it."""
    for line in script_text.splitlines():
        if line.startswith("#SBATCH --job-name="):
            value = line.split("=", 1)[1].strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            return value
    return None


def parse_scontrol_config(text: str) -> Dict[str, str]:
    """``scontrol show config`` lines ``Key  = value`` -> {Key: value}."""
    out: Dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            out[key.strip()] = value.strip()
    return out
