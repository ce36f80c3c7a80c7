"""What happened to one task: pure functions over its markers, the scheduler's answer and its log.

The task states a user sees are those the backends answer in (:mod:`.._backends.states`:
PENDING, RUNNING, ..., COMPLETED, FAILED, TIMEOUT, OUT_OF_MEMORY, ...) plus four of ours:

* LOST: gone from the scheduler with no result and nothing in its log to say why;
* NOT_SUBMITTED: written with submit=False, or refused by sbatch;
* UNKNOWN: the scheduler could not be asked (its commands missing, its controller down);
  never read as finished or lost;
* COMPLETING: the scheduler says it ended well, and its end marker is not visible yet (a
  shared file system shows new files late): given a grace period before it is called FAILED.

What a task's log says of its death is the backend's to read (``Backend.death_in_log``): the
answer comes here as ``death``.
"""

from __future__ import annotations

import re
from typing import Optional, Tuple

from .._backends import Answer, TaskRecord, Unknown
from .._backends import states as st
from .._backends.states import CANCELLED, COMPLETED, FAILED, LOST, NODE_FAIL, OUT_OF_MEMORY, PENDING, TIMEOUT
from .._store.markers import End
from .._timing import MARKER_GRACE_S  # why 30 s: see _timing

COMPLETING = st.COMPLETING
UNKNOWN = "UNKNOWN"
NOT_SUBMITTED = "NOT_SUBMITTED"
#: a task in one of these may still run rows (or, COMPLETING, still show its end marker)
ACTIVE_STATES = (*st.ACTIVE, COMPLETING)


def may_do_more(state: str) -> bool:
    """Whether a task in this state may still do anything: queued, running or completing, or
    UNKNOWN (its scheduler could not be asked, so it may still run). The one answer to "has this
    task finished?" that the status, waits, retries, cleanup and the CLI share."""
    return state in ACTIVE_STATES or state == UNKNOWN

_PY_ERROR = re.compile(r"^(\w+(?:\.\w+)*(?:Error|Exception|Exit)\b.*)$", re.M)


def last_error_line(text: str) -> str:
    """The last Python exception line of a log (what killed the worker, if it was Python)."""
    lines = [m.group(1).strip() for m in _PY_ERROR.finditer(text)
             if not m.group(1).startswith("slurm_apply:")]
    return lines[-1][:300] if lines else ""


def classify(*, started: bool, done: Optional[End], answer: Answer,
             log_text: str, submitted: bool, since_end_s: Optional[float] = None,
             death: Optional[Tuple[str, str]] = None) -> Tuple[str, str]:
    """(state, reason) of a task from its markers (``started``: it has a start marker;
    ``done``: the end marker of its latest start), the scheduler's answer and its log.

    Order of trust: our own end marker first (the rows are on disk; a dead worker process is a
    failure whatever the scheduler still lists), then the scheduler, then the death its log
    tells of (``death``, as the backend read it) when the scheduler no longer knows the task.
    ``since_end_s`` is how long ago the scheduler says the task ended (None if it cannot tell).
    """
    if not submitted:
        return NOT_SUBMITTED, ""
    if done is not None:
        if done.ok:
            return COMPLETED, ""
        return FAILED, "; ".join(done.failures) or "a worker process died"
    if isinstance(answer, Unknown):
        return UNKNOWN, answer.why
    record = answer
    sched = record.state if record is not None else None
    if sched == COMPLETING and record is not None:  # the backend waits for the scheduler's record
        return COMPLETING, record.reason
    if sched in st.ACTIVE:
        if sched == PENDING and record is not None and record.reason and record.reason != "None":
            return PENDING, record.reason
        return sched, ""
    if sched in (None, COMPLETED) and since_end_s is not None and since_end_s < MARKER_GRACE_S:
        return COMPLETING, ("ended; waiting for its end marker to appear (a shared file system "
                            f"can show it late): {since_end_s:.0f} s of {MARKER_GRACE_S:.0f}")
    if record is not None:
        return _ended(record.state, record, death, log_text)
    if death is not None:
        return death
    if not started:
        return LOST, "never started and no longer queued"
    return LOST, _join("gone from the scheduler without a result", last_error_line(log_text))


def _ended(sched: str, record: TaskRecord, from_log: Optional[Tuple[str, str]],
           log_text: str) -> Tuple[str, str]:
    """A task the scheduler says has ended, without our end marker."""
    log_state, log_detail = from_log if from_log else ("", "")
    if sched in (FAILED, CANCELLED) and log_state == OUT_OF_MEMORY:
        return OUT_OF_MEMORY, _memory_reason(record, log_detail)
    if sched == OUT_OF_MEMORY:
        return sched, _memory_reason(record, log_detail)
    if sched == TIMEOUT:
        limit = f" of its {record.time_limit} limit" if record.time_limit else ""
        return sched, _join(f"ran {record.elapsed}{limit}" if record.elapsed else "",
                            log_detail if log_state == TIMEOUT else "")
    if sched == NODE_FAIL:
        return sched, f"node {record.node_list} stopped answering" if record.node_list else ""
    if sched == FAILED:
        return sched, _join(f"exit code {record.exit_code}" if record.exit_code else "",
                            last_error_line(log_text))
    if sched == COMPLETED:
        # Exit 0 without our end marker: the script ended before the worker finished.
        return FAILED, _join("the task ended without finishing its rows", last_error_line(log_text))
    if sched in (LOST, st.KILLED):
        return sched, record.reason
    return sched, log_detail if log_state == sched else ""


def mem_text(value: str) -> str:
    """A memory figure of a task record ("420968K", "0.39G", "200M": K, M, G or T; bytes without
    a unit) in MiB, as "411M"."""
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
