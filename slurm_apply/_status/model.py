"""The one status model: built here, from one snapshot of the job directory and the scheduler.

Reads never write: building a status changes nothing on disk. Rendering is ``_render``'s.
"""

from __future__ import annotations

import time
from dataclasses import asdict, astuple, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, cast

from .. import _backends as backends
from .._backends import Answer, TaskKey, TaskRecord
from .._backends.states import COMPLETED, RUNNING
from .._store.markers import End, TaskMarkers
from .classify import ACTIVE_STATES, COMPLETING, NOT_SUBMITTED, UNKNOWN, classify, may_do_more
from .missing import in_rows, why_missing
from .rowsets import RowReasons, RowSet
from .retries import ASKING, Retries, left_for_retry, retries

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from .results import Results
    from .._store.claims import Chain
    from .._store.manifest import Manifest, Submission
    from .._store.stops import StopNote

NOT_FINISHED = "queued or running"  # why a row has no result while its tasks are at it


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

    @property
    def active(self) -> bool:
        """Queued, running or UNKNOWN (the scheduler could not be asked): the task may still
        run rows, so the job has not ended (``classify.may_do_more``)."""
        return may_do_more(self.state)


@dataclass(repr=False)  # the dataclass repr would list every task and missing row
class JobStatus:
    """A snapshot of a job: rows by outcome, tasks by state, and why anything is missing.

    Attributes
    ----------
    state : str
        PENDING, RUNNING, UNKNOWN (unfinished tasks the scheduler could not be asked about),
        RETRYING (every task has ended; the follow-up decides which rows to run again),
        COMPLETED, FAILED (rows raised), INCOMPLETE (rows missing) or NOT_SUBMITTED.
    ended : bool
        No task is queued, running or unknown, and no follow-up may still retry rows (rows
        may still be missing).
    completed : bool
        Ended, and every row has a result or an error.
    rows_total, rows_done, rows_failed, rows_pending, rows_missing : int
        Pending rows are in a submission that has not ended and have no record from it yet
        (a row being run again counts here, not as done or failed); missing rows have no
        record at all and no task left to run them.
    tasks, reasons : dict
        Task index -> state, and -> why (when there is something to say), latest submission.
    task_details : list of TaskStatus
        Every task of every submission.
    failed_rows, missing_rows : RowSet
        Row positions (0-based, in ``params_df`` order): read-only lists of int, held as runs
        (a million missing rows cost a few numbers).
    missing_reasons : mapping
        Missing row -> why (the state of the task that had it, or why it never started); a
        read-only dict, held as runs too.
    missing_states : mapping
        Missing row -> the state of the task that had it (NOT_STARTED when none took it,
        STOPPED when the job stopped early); read-only, held as runs.
    retries : Retries
        Automatic retries: where the latest follow-up is (``state``, ``detail``; while
        ``busy`` the job has not ended), each retried row's history (``lines``) and the rows
        not retried, by why (``given_up``).
    notes : list of str
        How the status was got, when that matters (e.g. sacct failed and squeue answered, or
        the job was stopped early by ``max_failures``).
    elapsed_s : float or None
        Wall time of the latest submission: from its submission to now, or to its last end.
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
    rows_pending: int = 0
    task_details: List[TaskStatus] = field(default_factory=list)
    failed_rows: Sequence[int] = field(default_factory=RowSet)
    missing_rows: Sequence[int] = field(default_factory=RowSet)
    missing_reasons: Mapping[int, str] = field(default_factory=dict)
    missing_states: Mapping[int, str] = field(default_factory=dict)
    retries: Retries = field(default_factory=Retries)
    job_ids: List[str] = field(default_factory=list)
    first_error: str = ""
    notes: List[str] = field(default_factory=list)
    elapsed_s: Optional[float] = None
    row_labels: Dict[int, Any] = field(default_factory=dict)  # params_df's labels of the rows named
    # Chains: the jobs it runs after ("job a (/x/_rslurm_a)"), what its gate decided ("" while
    # it has not: "open", or "closed: why"), and the jobs that run after it.
    after: List[str] = field(default_factory=list)
    gate: str = ""
    waited_by: List[str] = field(default_factory=list)

    def row_name(self, position: int) -> str:
        """How a row is named to the user: params_df's index label (its position when the
        index is the default 0..n-1)."""
        return repr(self.row_labels[position]) if position in self.row_labels else str(position)

    def rows_text(self, positions: Sequence[int], limit: int = 12) -> str:
        """Rows named as the user names them: '1-3, 7' for a default index, else labels."""
        from .render import compress_rows

        if not self.row_labels:
            return compress_rows(positions, limit)
        shown = [self.row_name(r) for r in positions[:limit]]
        more = f", ... ({len(positions)} rows)" if len(positions) > limit else ""
        return ", ".join(shown) + more

    def missing_by_reason(self) -> Mapping[str, Sequence[int]]:
        """The missing rows grouped by why they are missing, in row order."""
        if isinstance(self.missing_reasons, RowReasons) and isinstance(self.missing_rows, RowSet):
            out = self.missing_reasons.by_reason(self.missing_rows)
            left = self.missing_rows - RowSet.from_runs(*self.missing_reasons.runs)
            return {**out, NOT_FINISHED: left} if left else out
        grouped: Dict[str, List[int]] = {}
        for r in self.missing_rows:
            grouped.setdefault(self.missing_reasons.get(r, NOT_FINISHED), []).append(r)
        return dict(grouped)

    def pending_mask(self) -> "np.ndarray":
        """A bool per row: pending (its submission has not ended and has not recorded it)."""
        return getattr(self, "_pending", RowSet()).mask(self.rows_total)

    def to_dict(self) -> Dict[str, Any]:
        """Every field as plain JSON-able values (row sets as lists)."""
        out = asdict(self)
        out["failed_rows"] = list(self.failed_rows)
        out["missing_rows"] = list(self.missing_rows)
        out["missing_reasons"] = dict(self.missing_reasons.items())
        out["missing_states"] = dict(self.missing_states.items())
        out["retries"]["given_up"] = {k: list(v) for k, v in self.retries.given_up.items()}
        return out

    def tasks_frame(self) -> "pd.DataFrame":
        """Every task of every submission, one row each.

        Returns
        -------
        pandas.DataFrame
            Columns ``submission, task, state, reason, node, elapsed, max_rss, job_id, log``
            (the fields of :class:`TaskStatus`), in submission and task order.
        """
        import pandas as pd

        return pd.DataFrame([astuple(t) for t in self.task_details],
                            columns=[f.name for f in fields(TaskStatus)])

    def text(self, *, verbose: bool = False, cli: bool = False, show_elapsed: bool = True) -> str:
        """The status as text (``str(status)`` is ``status.text()``).

        Parameters
        ----------
        verbose : bool
            One line per task (node, elapsed, memory) instead of tasks grouped by state.
        cli : bool
            Word what to do next as ``slurm-apply`` commands instead of Python calls.
        show_elapsed : bool
            False leaves out the elapsed time, the one thing that changes every second (to
            tell whether anything else changed between two statuses).
        """
        from .render import status_text

        return status_text(self, verbose=verbose, cli=cli, show_elapsed=show_elapsed)

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        from .render import status_repr

        return status_repr(self)

    def _repr_html_(self) -> str:
        from .render import status_html

        return status_html(self)


@dataclass
class Snapshot:
    """Everything one status is built from, read once."""

    manifest: "Manifest"
    markers: Dict[int, Dict[int, TaskMarkers]]  # submission -> task -> its markers
    answers: Dict[TaskKey, Answer]
    results: "Results"
    read_log: Callable[[int, int], str]  # (submission, task) -> the tail of its log
    log_path: Callable[[int, int], str]
    log_mtime: Callable[[int, int], Optional[float]]
    claims: Callable[[int], Dict[int, "Chain"]]  # submission -> {chunk: its claim chain}
    chunk_bounds: Callable[[int, int], List[Tuple[int, int]]]
    notes: List[str] = field(default_factory=list)
    now: float = field(default_factory=time.time)
    # submission -> its stop note, when it stopped early (max_failures)
    stops: Dict[int, "StopNote"] = field(default_factory=dict)
    followups: Dict[int, Answer] = field(default_factory=dict)  # submission -> its follow-up
    # params_df's labels of the given positions, or None when the index is the default 0..n-1
    labels: Callable[[Sequence[int]], Optional[List[Any]]] = lambda rows: None


def build(snap: Snapshot) -> JobStatus:
    """The status of a job from one snapshot.

    Rows are handled as runs (``RowSet``): the cost grows with the tasks and record frames,
    not the rows, and nothing is done per missing row.
    """
    m = snap.manifest
    details = [_task_status(snap, s, t) for s in m.submissions for t in range(s.n_tasks)]
    open_subs = {d.submission for d in details if d.active}
    rows = _row_outcomes(snap, [s for s in m.submissions if s.index in open_subs])
    launched = bool(m.launched())
    active = [d for d in details if d.state in ACTIVE_STATES]
    unknown = [d for d in details if d.state == UNKNOWN]
    retry = retries(m, details, snap.followups, rows, snap.now, left_for_retry(m, rows))
    ended = launched and not active and not unknown and not retry.busy
    missing, failed = rows["missing"], rows["failed"]
    abnormal = any(d.state not in ACTIVE_STATES and d.state not in (COMPLETED, UNKNOWN)
                   for d in details)
    latest = m.latest.index
    stopped = snap.stops.get(latest)
    # Worth the cost only then; a damaged record is news whenever it is found.
    said = missing and (abnormal or ended or retry.busy or bool(snap.results.damaged(missing)))
    why, states = why_missing(snap, missing, details) if said else (RowReasons(), RowReasons())
    status = JobStatus(
        jobname=m.jobname, job_dir=m.job_dir,
        state=_job_state(launched, active, unknown, rows, stopped is not None, retry),
        completed=ended and not missing, ended=ended, rows_total=m.n_rows,
        rows_done=rows["n_done"], rows_failed=len(failed), rows_missing=len(missing),
        rows_pending=len(rows["pending"]),
        tasks={d.task: d.state for d in details if d.submission == latest},
        reasons={d.task: d.reason for d in details if d.submission == latest and d.reason},
        task_details=details, failed_rows=failed, missing_rows=missing,
        missing_reasons=why, missing_states=states, retries=retry,
        job_ids=[s.job_id for s in m.submissions if s.job_id],
        first_error=_first_error(snap, failed), notes=list(snap.notes),
        elapsed_s=_elapsed_s(snap, ended), row_labels=_named(snap, failed, missing, retry.shown_rows()))
    if stopped is not None:
        status.notes.insert(0, stopped_note(stopped, status.first_error))
    if failed:  # what the scheduler has to do with the first row's error, if anything
        etype = snap.results.errors([failed[0]])[failed[0]][0]
        note = backends.get(m.latest.backend).row_error_note(m.latest, etype)
        if note:
            status.notes.append(note)
    # Not a field (to_dict and == leave it out): for the output's state column.
    status._pending = rows["pending"]  # type: ignore[attr-defined]
    return status


def stopped_note(stop: "StopNote", first_error: str) -> str:
    """"stopped early: 100 rows raised (max_failures=100); first: row 0: ValueError: ..."."""
    first = first_error or stop.first
    return (f"stopped early: {stop.failed} rows raised (max_failures="
            f"{stop.max_failures}), so no task started another chunk"
            + (f"; first: {first}" if first else ""))


def _job_state(launched: bool, active: Sequence[TaskStatus], unknown: Sequence[TaskStatus],
               rows: Dict[str, Any], stopped: bool, retry: Retries) -> str:
    if not launched:
        return "NOT_SUBMITTED"
    if active:
        return "RUNNING" if any(d.state in (RUNNING, COMPLETING) for d in active) else "PENDING"
    if unknown or retry.state == ASKING:
        return UNKNOWN
    if retry.busy:
        return "RETRYING"  # every task has ended; the follow-up decides what to run again
    if stopped:  # rows are missing because rows raised
        return "FAILED"
    if len(rows["missing"]):
        return "INCOMPLETE"
    return "FAILED" if len(rows["failed"]) else "COMPLETED"


def _task_status(snap: Snapshot, s: "Submission", t: int) -> TaskStatus:
    marks = snap.markers.get(s.index, {}).get(t) or TaskMarkers()
    done = marks.end_of_last_start()
    answer = snap.answers.get((s.index, t))
    record = answer if isinstance(answer, TaskRecord) else None
    ok = marks.ended_well
    wants_log = s.launched and not ok and not (record is not None and record.state in ACTIVE_STATES)
    log_text = snap.read_log(s.index, t) if wants_log else ""
    since_end = None
    if s.launched and not ok:
        ended_at = record.end_time if record is not None and record.end_time else snap.log_mtime(s.index, t)
        since_end = snap.now - ended_at if ended_at else None
    death = backends.get(s.backend).death_in_log(log_text) if log_text else None
    state, reason = classify(started=marks.started, done=done, answer=answer, log_text=log_text,
                             submitted=s.launched, since_end_s=since_end, death=death)
    if state == NOT_SUBMITTED and s.state == "failed":
        reason = s.error
    node = marks.node
    return TaskStatus(
        submission=s.index, task=t, state=state, reason=reason,
        node=node or (record.node_list if record else ""),
        elapsed=(record.elapsed if record else "") or _elapsed(done),
        max_rss=record.max_rss if record else "", job_id=str(s.job_id or ""),
        log=snap.log_path(s.index, t))


def _row_outcomes(snap: Snapshot, open_subs: Sequence["Submission"]) -> Dict[str, Any]:
    """Rows by outcome, as runs. A row in a submission that has not ended, with no record from
    it yet, is pending whatever older submissions recorded for it."""
    res = snap.results
    pending = RowSet()
    for s in open_subs:
        pending = pending | (in_rows(s) - res.recorded_rows(s.index))
    done, failed = res.done_rows(), res.failed_rows()
    return {
        "n_done": len(done - pending),
        "failed": failed - pending,
        "missing": (done | failed | pending).complement(snap.manifest.n_rows),
        "pending": pending,
    }


def _named(snap: Snapshot, failed: RowSet, missing: RowSet, retried: List[int],
           most: int = 50) -> Dict[int, Any]:
    """Labels of the rows a status names (the first of each kind), when the index has labels."""
    rows = sorted(set(failed.head(most).tolist()) | set(missing.head(most).tolist()) | set(retried))
    labels = snap.labels(rows) if rows else None
    return dict(zip(rows, labels)) if labels is not None else {}


def _first_error(snap: Snapshot, failed: RowSet) -> str:
    if not failed:
        return ""
    r0 = failed[0]
    etype, emsg, _ = snap.results.errors([r0])[r0]
    labels = snap.labels([r0])
    name = repr(labels[0]) if labels is not None else str(r0)
    return f"row {name}: {etype}: {emsg}"[:300]


def _elapsed(done: Optional[End]) -> str:
    if not done:
        return ""
    secs = int(done.ended - done.started)
    return f"{secs // 3600:02d}:{secs % 3600 // 60:02d}:{secs % 60:02d}"


def _elapsed_s(snap: Snapshot, ended: bool) -> Optional[float]:
    launched = [s for s in snap.manifest.submissions if s.submitted_at]
    if not launched:
        return None
    sub = launched[-1]
    submitted_at = cast(float, sub.submitted_at)  # launched keeps only those with a submitted_at
    if not ended:
        return snap.now - submitted_at
    ends = [m.end.ended for m in snap.markers.get(sub.index, {}).values() if m.end and m.end.ended]
    ends += [t for t in (snap.log_mtime(sub.index, task) for task in range(sub.n_tasks)) if t]
    return max(ends) - submitted_at if ends else None
