"""What happened to one task: pure functions over its markers, the scheduler's answer and its log.

The task states a user sees are Slurm's own names plus four of ours:

* LOST: gone from the scheduler with no result and nothing in its log to say why;
* NOT_SUBMITTED: written with submit=False, or refused by sbatch;
* UNKNOWN: the scheduler could not be asked (its commands missing, its controller down);
  never read as finished or lost;
* COMPLETING: the scheduler says it ended well, and its end marker is not visible yet (a
  shared file system shows new files late): given a grace period before it is called FAILED.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

from .._backends import Answer, TaskRecord, Unknown

ACTIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "SUSPENDED", "COMPLETING")
UNKNOWN = "UNKNOWN"
# How long a task the scheduler calls finished may go without a visible end marker before the
# marker is taken to be missing. NFS caches a directory's attributes for up to 60 s by default
# (acdirmax), but the marker is written with an fsync and a rename, which most clients see
# within a few seconds; 30 s is a compromise between a false FAILED and a slow verdict.
MARKER_GRACE_S = 30.0

_SLURM_TO_STATE = {
    "PENDING": "PENDING", "CONFIGURING": "RUNNING", "RUNNING": "RUNNING", "COMPLETING": "RUNNING",
    "RESIZING": "RUNNING", "SIGNALING": "RUNNING", "STAGE_OUT": "RUNNING", "STOPPED": "RUNNING",
    "SUSPENDED": "SUSPENDED", "REQUEUED": "REQUEUED", "REQUEUE_FED": "REQUEUED",
    "REQUEUE_HOLD": "REQUEUED", "RESV_DEL_HOLD": "PENDING", "SPECIAL_EXIT": "FAILED",
    "COMPLETED": "COMPLETED", "FAILED": "FAILED", "TIMEOUT": "TIMEOUT",
    "OUT_OF_MEMORY": "OUT_OF_MEMORY", "NODE_FAIL": "NODE_FAIL", "CANCELLED": "CANCELLED",
    "PREEMPTED": "PREEMPTED", "BOOT_FAIL": "BOOT_FAIL", "DEADLINE": "DEADLINE",
    "REVOKED": "CANCELLED", "LOST": "LOST",
}

# Lines slurmstepd writes into a task's output when it kills it.
_TIME_LIMIT = re.compile(r"\*\*\* JOB \S+ ON (\S+) CANCELLED AT (\S+) DUE TO TIME LIMIT")
_MEMORY = re.compile(r"exceeded memory limit \((\d+) > (\d+)\)")
_OOM_CGROUP = re.compile(r"oom[-_ ]kill", re.I)
_NODE_FAIL = re.compile(r"\*\*\* JOB \S+ ON (\S+) CANCELLED AT (\S+) DUE TO NODE FAILURE")
_PREEMPT = re.compile(r"\*\*\* JOB \S+ ON (\S+) CANCELLED AT (\S+) DUE TO PREEMPTION")
_CANCELLED = re.compile(r"\*\*\* JOB \S+ ON (\S+) CANCELLED AT (\S+)(?: \*\*\*)?\s*$", re.M)
_PY_ERROR = re.compile(r"^(\w+(?:\.\w+)*(?:Error|Exception|Exit)\b.*)$", re.M)


def scheduler_state(name: str) -> str:
    """Our name for a state the scheduler prints (CONFIGURING is RUNNING, REVOKED CANCELLED...)."""
    return _SLURM_TO_STATE.get(name, name)


def memory_limit_mb(log_text: str) -> Optional[float]:
    """The memory limit slurmstepd enforced, from the last kill line of a task's log."""
    found = _MEMORY.findall(log_text)
    return int(found[-1][1]) / 2**20 if found else None


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


def classify(*, start: Optional[Dict[str, Any]], done: Optional[Dict[str, Any]], answer: Answer,
             log_text: str, submitted: bool, since_end_s: Optional[float] = None) -> Tuple[str, str]:
    """(state, reason) of a task from its markers, the scheduler's answer and its log.

    Order of trust: our own end marker first (the rows are on disk; a dead worker process is a
    failure whatever the scheduler still lists), then the scheduler, then the log's kill lines
    when the scheduler no longer knows the task. ``since_end_s`` is how long ago the scheduler
    says the task ended (None if it cannot tell).
    """
    if not submitted:
        return "NOT_SUBMITTED", ""
    if done is not None:
        if done.get("ok"):
            return "COMPLETED", ""
        return "FAILED", "; ".join(done.get("failures", [])) or "a worker process died"
    if isinstance(answer, Unknown):
        return UNKNOWN, answer.why
    record = answer
    sched = _SLURM_TO_STATE.get(record.state, record.state) if record is not None else None
    if sched in ACTIVE_STATES:
        if sched == "PENDING" and record is not None and record.reason and record.reason != "None":
            return "PENDING", record.reason
        return sched, ""
    if sched in (None, "COMPLETED") and since_end_s is not None and since_end_s < MARKER_GRACE_S:
        return "COMPLETING", ("ended; waiting for its end marker to appear (a shared file system "
                              f"can show it late): {since_end_s:.0f} s of {MARKER_GRACE_S:.0f}")
    from_log = scan_log(log_text)
    if sched is not None and record is not None:  # sched is set only when record is
        return _ended(sched, record, from_log, log_text)
    if from_log is not None:
        return from_log
    if start is None:
        return "LOST", "never started and no longer queued"
    return "LOST", _join("gone from the scheduler without a result", last_error_line(log_text))


def _ended(sched: str, record: TaskRecord, from_log: Optional[Tuple[str, str]],
           log_text: str) -> Tuple[str, str]:
    """A task the scheduler says has ended, without our end marker."""
    log_state, log_detail = from_log if from_log else ("", "")
    if sched in ("FAILED", "CANCELLED") and log_state == "OUT_OF_MEMORY":
        return "OUT_OF_MEMORY", _memory_reason(record, log_detail)
    if sched == "OUT_OF_MEMORY":
        return sched, _memory_reason(record, log_detail)
    if sched == "TIMEOUT":
        limit = f" of its {record.time_limit} limit" if record.time_limit else ""
        return sched, _join(f"ran {record.elapsed}{limit}" if record.elapsed else "",
                            log_detail if log_state == "TIMEOUT" else "")
    if sched == "NODE_FAIL":
        return sched, f"node {record.node_list} stopped answering" if record.node_list else ""
    if sched == "FAILED":
        return sched, _join(f"exit code {record.exit_code}" if record.exit_code else "",
                            last_error_line(log_text))
    if sched == "COMPLETED":
        # Exit 0 without our end marker: the script ended before the worker finished.
        return "FAILED", _join("the task ended without finishing its rows", last_error_line(log_text))
    if sched == "LOST":
        return sched, record.reason
    return sched, log_detail if log_state == sched else ""


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
