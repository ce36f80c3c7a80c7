"""What happened to each task and row: pure functions over markers, scheduler records and logs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ._slurm import TaskRecord

# Task states a user sees. Slurm's own names, plus LOST (gone from the scheduler with no result),
# NOT_SUBMITTED (written with submit=False, or sbatch refused it) and UNKNOWN.
ACTIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "SUSPENDED")
NOT_FINISHED = "queued or running"  # the reason of a missing row while its tasks are still at it
_SLURM_TO_STATE = {
    "PENDING": "PENDING", "CONFIGURING": "RUNNING", "RUNNING": "RUNNING", "COMPLETING": "RUNNING",
    "RESIZING": "RUNNING", "SIGNALING": "RUNNING", "STAGE_OUT": "RUNNING", "STOPPED": "RUNNING",
    "SUSPENDED": "SUSPENDED", "REQUEUED": "REQUEUED", "REQUEUE_FED": "REQUEUED",
    "REQUEUE_HOLD": "REQUEUED", "RESV_DEL_HOLD": "PENDING", "SPECIAL_EXIT": "FAILED",
    "COMPLETED": "COMPLETED", "FAILED": "FAILED", "TIMEOUT": "TIMEOUT",
    "OUT_OF_MEMORY": "OUT_OF_MEMORY", "NODE_FAIL": "NODE_FAIL", "CANCELLED": "CANCELLED",
    "PREEMPTED": "PREEMPTED", "BOOT_FAIL": "BOOT_FAIL", "DEADLINE": "DEADLINE",
    "REVOKED": "CANCELLED",
}

# Lines slurmstepd writes into a task's output when it kills it.
_TIME_LIMIT = re.compile(r"\*\*\* JOB \S+ ON (\S+) CANCELLED AT (\S+) DUE TO TIME LIMIT")
_MEMORY = re.compile(r"exceeded memory limit \((\d+) > (\d+)\)")
_OOM_CGROUP = re.compile(r"oom[-_ ]kill", re.I)
_NODE_FAIL = re.compile(r"\*\*\* JOB \S+ ON (\S+) CANCELLED AT (\S+) DUE TO NODE FAILURE")
_PREEMPT = re.compile(r"\*\*\* JOB \S+ ON (\S+) CANCELLED AT (\S+) DUE TO PREEMPTION")
_CANCELLED = re.compile(r"\*\*\* JOB \S+ ON (\S+) CANCELLED AT (\S+)(?: \*\*\*)?\s*$", re.M)
_PY_ERROR = re.compile(r"^(\w+(?:\.\w+)*(?:Error|Exception|Exit)\b.*)$", re.M)


def mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.0f}M"


def scan_log(text: str) -> Optional[Tuple[str, str]]:
    """The death a task's log tells of, as (state, detail), or None.

    The last kill line wins: a requeued task appends a new attempt after the old one's lines.
    """
    found: List[Tuple[int, str, str]] = []
    for m in _TIME_LIMIT.finditer(text):
        found.append((m.start(), "TIMEOUT", f"killed at its time limit on {m.group(1)}"))
    for m in _MEMORY.finditer(text):
        used, limit = int(m.group(1)), int(m.group(2))
        found.append((m.start(), "OUT_OF_MEMORY", f"used {mib(used)} of {mib(limit)} allowed"))
    for m in _OOM_CGROUP.finditer(text):
        found.append((m.start(), "OUT_OF_MEMORY", "killed by the out-of-memory handler"))
    for m in _NODE_FAIL.finditer(text):
        found.append((m.start(), "NODE_FAIL", f"node {m.group(1)} failed"))
    for m in _PREEMPT.finditer(text):
        found.append((m.start(), "PREEMPTED", f"preempted on {m.group(1)}"))
    for m in _CANCELLED.finditer(text):
        if "DUE TO" not in m.group(0):
            found.append((m.start(), "CANCELLED", f"cancelled on {m.group(1)}"))
    if not found:
        return None
    found.sort()
    last_pos = found[-1][0]
    # A memory kill is followed by a plain CANCELLED line for the same kill: report the cause.
    for pos, state, detail in reversed(found):
        if state == "OUT_OF_MEMORY" and last_pos - pos < 2000:
            return state, detail
    return found[-1][1], found[-1][2]


def last_error_line(text: str) -> str:
    """The last Python exception line of a log (what killed the worker, if it was Python)."""
    lines = [m.group(1).strip() for m in _PY_ERROR.finditer(text)
             if not m.group(1).startswith("slurm_apply:")]
    return lines[-1][:300] if lines else ""


@dataclass
class TaskStatus:
    """One array task of one submission."""

    submission: int
    task: int
    state: str
    reason: str = ""
    node: str = ""
    elapsed: str = ""
    max_rss: str = ""
    job_id: str = ""
    log: str = ""

    def describe(self) -> str:
        return f"{self.state} ({self.reason})" if self.reason else self.state


def classify(*, start: Optional[Dict[str, Any]], done: Optional[Dict[str, Any]],
             record: Optional[TaskRecord], log_text: str, submitted: bool) -> Tuple[str, str]:
    """(state, reason) of a task from its markers, the scheduler's record and its log.

    Order of trust: our own end marker first (the rows are on disk), then the scheduler, then
    the log's kill lines when the scheduler no longer knows the task.
    """
    if not submitted:
        return "NOT_SUBMITTED", ""
    if done is not None and done.get("ok"):
        return "COMPLETED", ""
    sched = _SLURM_TO_STATE.get(record.state, record.state) if record is not None else None
    if sched in ACTIVE_STATES:
        if sched == "PENDING" and record is not None and record.reason and record.reason != "None":
            return "PENDING", record.reason
        return sched, ""
    from_log = scan_log(log_text)
    if done is not None:  # the worker finished but some process of it died
        return "FAILED", "; ".join(done.get("failures", [])) or "a worker process died"
    if sched is not None:
        if sched in ("FAILED", "CANCELLED") and from_log and from_log[0] == "OUT_OF_MEMORY":
            return "OUT_OF_MEMORY", _memory_reason(record, from_log[1])
        if sched == "OUT_OF_MEMORY":
            return sched, _memory_reason(record, from_log[1] if from_log else "")
        if sched == "TIMEOUT":
            limit = f" of its {record.time_limit} limit" if record and record.time_limit else ""
            return sched, _join(f"ran {record.elapsed}{limit}" if record and record.elapsed else "",
                                from_log[1] if from_log and from_log[0] == "TIMEOUT" else "")
        if sched == "NODE_FAIL":
            return sched, f"node {record.node_list} stopped answering" if record and record.node_list else ""
        if sched == "FAILED":
            return sched, _join(f"exit code {record.exit_code}" if record and record.exit_code else "",
                                last_error_line(log_text))
        if sched == "COMPLETED":
            # Exit 0 without our end marker: the script ended before the worker finished.
            return "FAILED", _join("the task ended without finishing its rows",
                                   last_error_line(log_text))
        return sched, from_log[1] if from_log and from_log[0] == sched else ""
    if from_log is not None:
        state, detail = from_log
        return state, detail
    if start is None:
        return "LOST", "never started and no longer queued"
    err = last_error_line(log_text)
    return "LOST", _join("gone from the scheduler without a result", err)


def mem_text(value: str) -> str:
    """Slurm's memory figures ("420968K", "0.39G", "200M") in MiB, as "411M"."""
    m = re.match(r"^([\d.]+)([KMGT]?)", value or "")
    if not m:
        return value
    factor = {"": 1 / 2**20, "K": 1 / 1024, "M": 1, "G": 1024, "T": 2**20}[m.group(2)]
    return f"{float(m.group(1)) * factor:.0f}M"


def _memory_reason(record: Optional[TaskRecord], detail: str) -> str:
    if record is not None and record.max_rss:
        req = f" of {record.req_mem} requested" if record.req_mem else ""
        return _join(f"MaxRSS {mem_text(record.max_rss)}{req}", detail)
    return detail


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def compress_rows(rows: List[int], limit: int = 12) -> str:
    """[1, 2, 3, 7, 9, 10] -> '1-3, 7, 9-10' (shortened with '...' past ``limit`` ranges)."""
    ranges: List[List[int]] = []
    for r in sorted(rows):
        if ranges and ranges[-1][1] == r - 1:
            ranges[-1][1] = r
        else:
            ranges.append([r, r])
    text = [f"{a}-{b}" if a != b else f"{a}" for a, b in ranges[:limit]]
    if len(ranges) > limit:
        text.append(f"... ({len(rows)} rows)")
    return ", ".join(text)


@dataclass
class JobStatus:
    """A snapshot of a job: rows by outcome, tasks by state, and why anything is missing.

    Attributes
    ----------
    completed : bool
        Every row has a result or an error, and no task is queued or running.
    ended : bool
        No task is queued or running (rows may still be missing).
    rows_total, rows_done, rows_failed, rows_missing : int
    tasks : dict
        Task index -> state name, for the latest submission.
    reasons : dict
        Task index -> why it is in that state (empty when there is nothing to say).
    task_details : list of TaskStatus
        Every task of every submission.
    failed_rows, missing_rows : list of int
        Row positions (0-based, in ``params_df`` order).
    missing_reasons : dict
        Missing row -> why (the state of the task that had it, or why it never started); empty
        while every task is queued, running or completed (the rows are simply not done yet).
    elapsed_s : float or None
        Wall time of the latest submission: from sbatch to now, or to its last task's end
        (a task's end marker, or its log's last write for a task that was killed).
    """

    jobname: str
    job_dir: str
    state: str
    completed: bool
    ended: bool
    rows_total: int
    rows_done: int
    rows_failed: int
    rows_missing: int
    tasks: Dict[int, str]
    reasons: Dict[int, str]
    task_details: List[TaskStatus] = field(default_factory=list)
    failed_rows: List[int] = field(default_factory=list)
    missing_rows: List[int] = field(default_factory=list)
    missing_reasons: Dict[int, str] = field(default_factory=dict)
    job_ids: List[str] = field(default_factory=list)
    first_error: str = ""
    elapsed_s: Optional[float] = None

    def missing_by_reason(self) -> Dict[str, List[int]]:
        """The missing rows grouped by why they are missing, in row order."""
        out: Dict[str, List[int]] = {}
        for r in self.missing_rows:
            out.setdefault(self.missing_reasons.get(r, NOT_FINISHED), []).append(r)
        return out

    def to_dict(self) -> Dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    def __str__(self) -> str:
        ids = ", ".join(i for i in self.job_ids if i) or "not submitted"
        lines = [f"job {self.jobname} [{ids}]: {self.state}",
                 f"  rows: {self.rows_done} done, {self.rows_failed} failed, {self.rows_missing} missing "
                 f"of {self.rows_total}"]
        counts: Dict[str, int] = {}
        for t in self.task_details:
            counts[t.state] = counts.get(t.state, 0) + 1
        lines.append("  tasks: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        for t in self.task_details:
            if t.state not in ("COMPLETED", "PENDING", "RUNNING", "NOT_SUBMITTED") or t.reason:
                where = f" on {t.node}" if t.node else ""
                prefix = f"submission {t.submission} " if len(self.job_ids) > 1 else ""
                lines.append(f"  {prefix}task {t.task}: {t.describe()}{where}")
        if self.failed_rows:
            first = f" (first: {self.first_error})" if self.first_error else ""
            lines.append(f"  failed rows: {compress_rows(self.failed_rows)}{first}")
        if self.missing_rows:
            for why, rows in self.missing_by_reason().items():
                lines.append(f"  missing rows: {compress_rows(rows)} ({why})")
        return "\n".join(lines)
