"""Automatic retries as the status sees them: where the follow-up of the latest submission is,
and each retried row's history ("OUT_OF_MEMORY at 200M, done at 400M").

Built from the manifest (what each follow-up decided, what each retry was for and what it
raised), the follow-up's answer from the scheduler and the rows' outcomes; worded by _render.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from .. import _backends as backends
from .._backends import Answer, TaskRecord, Unknown
from .._backends.states import OUT_OF_MEMORY, TIMEOUT
from .classify import ACTIVE_STATES, MARKER_GRACE_S, may_do_more
from .missing import in_rows
from .rowsets import RowSet
from .._store.manifest import FAILED, GAVE_UP, STOPPED

if TYPE_CHECKING:
    from .model import TaskStatus
    from .._store.manifest import Manifest, Submission

# Where the follow-up of the latest submission is (besides the decisions of manifest.py).
WAITING = "waiting"  # for its submission's tasks to end
DECIDING = "deciding"  # queued or running, or just ended and its decision not yet visible
ASKING = "unknown"  # the scheduler could not be asked about it
LOST = "lost"  # ended without recording a decision
OFF = "off"  # could not be submitted
USED_UP = "used up"  # the latest retry was the last one allowed

OUTCOMES = ("done", "failed", "missing", "pending")  # where a retried row is now



@dataclass
class RetryLine:
    """Rows that went through the same retries (as [start, stop) ranges): each run that died
    (state, limit it had), and where they are now (done, failed, missing or pending, and the
    limit of their last run)."""

    rows: List[Tuple[int, int]]
    n_rows: int
    steps: List[Tuple[str, str]]
    outcome: Tuple[str, str]

    def positions(self, most: Optional[int] = None) -> List[int]:
        """The rows' positions (the first ``most`` of them)."""
        out: List[int] = []
        for a, b in self.rows:
            out.extend(range(a, b if most is None else min(b, a + most - len(out))))
            if most is not None and len(out) >= most:
                break
        return out


@dataclass
class Retries:
    """A job's automatic retries, as a status shows them."""

    state: str = ""  # where the latest follow-up is, or what it decided; "" when nothing to say
    detail: str = ""
    busy: bool = False  # the follow-up may still start a submission: the job has not ended
    lines: List[RetryLine] = field(default_factory=list)
    given_up: Dict[str, RowSet] = field(default_factory=dict)  # why not retried -> rows

    def shown_rows(self, most: int = 12) -> List[int]:
        """The rows a status names (the first of each line), to be named by their labels."""
        return [r for line in self.lines for r in line.positions(most)]


def retries(m: "Manifest", details: Sequence["TaskStatus"], followups: Dict[int, Answer],
            rows: Dict[str, Any], now: float, has_work: Callable[["Submission"], bool]) -> Retries:
    """The retries of a job: the latest follow-up's state, and every retried row's history.
    ``rows``: the rows by outcome ("failed", "missing", "pending": RowSets; the rest are done);
    ``has_work(sub)``: whether sub has rows its follow-up may retry."""
    out = Retries(lines=_lines(m, rows), given_up=_given_up(m, rows))
    if not (m.retry.retries or out.lines):
        return out
    out.state, out.detail, out.busy = _followup_state(m, details, followups, now, has_work)
    if not out.busy and any(s.added for s in m.submissions):
        # Rows were added (extend()): the follow-up of an earlier submission may still retry
        # rows of its own, which no later submission runs.
        for sub in _earlier_heads(m):
            mine = [d.state for d in details if d.submission == sub.index]
            if not any(may_do_more(st) for st in mine) and has_work(sub):
                state, detail, busy = _asked(sub, followups.get(sub.index), now)
                if busy:
                    out.state, out.detail, out.busy = state, f"submission {sub.index}: {detail}", True
                    break
    return out


def _earlier_heads(m: "Manifest") -> List["Submission"]:
    """Submissions before the latest whose follow-up has yet to decide, with nothing after them
    running their rows again."""
    return [s for s in m.submissions[:-1]
            if s.launched and s.followup and s.decision is None and not s.followup_error
            and s.submitted_by != "hand" and m.superseded_by(s.index) is None]


def _followup_state(m: "Manifest", details: Sequence["TaskStatus"], followups: Dict[int, Answer],
                    now: float, has_work: Callable[["Submission"], bool]) -> Tuple[str, str, bool]:
    latest = m.latest
    if m.retries_stopped:
        return STOPPED, m.retries_stopped, False
    if latest.state == FAILED and latest.retry_of is not None:
        return GAVE_UP, f"retry submission {latest.index} was refused: {latest.error}", False
    if not latest.launched:
        return "", "", False
    if latest.decision is not None:
        return latest.decision.action, latest.decision.detail, False
    if latest.followup_error:
        return OFF, f"the follow-up of submission {latest.index} could not be submitted: " \
                    f"{latest.followup_error}", False
    if not latest.followup or latest.submitted_by == "hand":  # sbatch by hand: no follow-up
        used = latest.attempt and latest.attempt >= m.retry.retries
        return (USED_UP, f"{m.retry.retries} retries", False) if used else ("", "", False)
    mine = [d.state for d in details if d.submission == latest.index]
    if any(may_do_more(st) for st in mine):
        return WAITING, _name(latest), False
    if not has_work(latest):
        # Every row has its result (or an error not to retry): the follow-up can only decide
        # there is nothing to do, so the job need not wait for it to say so.
        return "", "", False
    return _asked(latest, followups.get(latest.index), now)


def _asked(sub: "Submission", answer: Optional[Answer], now: float) -> Tuple[str, str, bool]:
    """The follow-up of a submission whose tasks have all ended, by the scheduler's answer."""
    if isinstance(answer, Unknown):
        return ASKING, f"{_name(sub)}: {answer.why}", True
    state = answer.state if isinstance(answer, TaskRecord) else ""
    if state in ACTIVE_STATES:
        return DECIDING, f"{_name(sub)} {state}", True
    # It records its decision before it ends, so its end is soon followed by the decision; a
    # shared file system may show the manifest late.
    end = answer.end_time if isinstance(answer, TaskRecord) else None
    if end is not None and now - end < MARKER_GRACE_S:
        return DECIDING, f"{_name(sub)} ended {now - end:.0f} s ago", True
    said = (f" ({state}{': ' + answer.reason if answer.reason else ''})"
            if isinstance(answer, TaskRecord) and state else "")
    return LOST, f"{_name(sub)} ended without deciding{said}; its log is logs/s{sub.index}_retry.out", False


def _name(sub: "Submission") -> str:
    return f"follow-up {sub.followup_id}" if sub.followup_id else "the follow-up"


def limit_of(sub: "Submission", why: str, before: bool = False) -> str:
    """The limit ``sub`` ran with that matters for a death of kind ``why`` ("" if none);
    ``before``: the limit it raised from (the run that died)."""
    # The limit a retry raises after each kind of death, as the options of the dialect that set it.
    dialect = backends.dialect(sub.backend)
    keys = {OUT_OF_MEMORY: dialect.MEM_KEYS, TIMEOUT: dialect.TIME_KEYS}.get(why, ())
    for key in keys:
        if key in sub.raised:
            return sub.raised[key][0 if before else 1] + (" per CPU" if key == dialect.MEM_PER_CPU else "")
    for key in keys:
        if key in sub.slurm_options:
            return str(sub.slurm_options[key]) + (" per CPU" if key == dialect.MEM_PER_CPU else "")
    return ""


def _lines(m: "Manifest", rows: Dict[str, Any]) -> List[RetryLine]:
    """One line per group of rows with the same retries and the same outcome. Rows are followed
    as runs (RowSet), one set per distinct history: a retry of millions of rows costs a few set
    operations per submission, not a Python step per row."""
    groups: Dict[Tuple[Tuple[Tuple[str, str], ...], str], RowSet] = {}  # (steps, limit now) -> rows
    for s in m.submissions:
        for why, ranges in (s.retried_for if s.retry_of is not None else {}).items():
            # The run that died had the limit the retry raised from, or the one it kept.
            step, limit = (why, limit_of(s, why, before=True)), limit_of(s, why)
            sel = RowSet.from_runs([a for a, _ in ranges], [b for _, b in ranges])
            moved: Dict[Tuple[Tuple[Tuple[str, str], ...], str], RowSet] = {((step,), limit): sel}
            for (steps, _), have in list(groups.items()):
                here = have & sel
                if here:
                    groups[(steps, _)] = have - here
                    moved[((step,), limit)] = moved[((step,), limit)] - here
                    key = (steps + (step,), limit)
                    moved[key] = moved.get(key, RowSet()) | here
            for key, got in moved.items():
                groups[key] = groups.get(key, RowSet()) | got
    lines = []
    for (steps, limit), have in groups.items():
        by_outcome = {k: have & rows[k] for k in ("failed", "missing", "pending")}
        by_outcome["done"] = have - by_outcome["failed"] - by_outcome["missing"] - by_outcome["pending"]
        for outcome in OUTCOMES:
            sel = by_outcome[outcome]
            if sel:
                lines.append(RetryLine(rows=list(zip(sel.starts.tolist(), sel.stops.tolist())),
                                       n_rows=len(sel), steps=list(steps), outcome=(outcome, limit)))
    return sorted(lines, key=lambda line: line.rows[0][0])


def _given_up(m: "Manifest", rows: Dict[str, Any]) -> Dict[str, RowSet]:
    """Rows a follow-up chose not to retry, and why, while they still have no result."""
    out: Dict[str, RowSet] = {}
    for s in m.submissions:
        for why, ranges in (s.decision.given_up if s.decision else {}).items():
            here = RowSet.from_runs([a for a, _ in ranges], [b for _, b in ranges]) & rows["missing"]
            if here:
                out[why] = out.get(why, RowSet()) | here
    return out


def decided_meanwhile(m: "Manifest", followups: Dict[int, Answer],
                      reload: Callable[[], "Manifest"]) -> bool:
    """A follow-up the scheduler says has ended, with no decision in the manifest as read: as it
    records its decision before it ends, the manifest has changed since it was read."""
    answers = {s.index: followups.get(s.index) for s in m.launched() if s.followup and s.decision is None}
    ended = [k for k, a in answers.items() if isinstance(a, TaskRecord) and a.state not in ACTIVE_STATES]
    return bool(ended) and any(reload().submissions[k].decision for k in ended)


def left_for_retry(m: "Manifest", rows: Dict[str, Any]) -> Callable[["Submission"], bool]:
    """Whether a submission has rows its follow-up may retry: rows without a result, and rows
    that raised when errors are retried. Without any, it can only decide there is nothing."""
    left = rows["missing"] | rows["failed"] if m.retry.retry_errors else rows["missing"]
    return lambda s: bool(left & in_rows(s))
