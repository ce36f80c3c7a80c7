"""Why rows are missing: the task that had each one's chunk, and how that task ended.

Worked out chunk by chunk on runs of rows (``RowSet``), never row by row: a million rows
missing cost what their chunks cost.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import numpy as np

from .._backends.states import COMPLETED, LOST
from .classify import NOT_SUBMITTED, may_do_more
from .merge import distinct
from .rowsets import RowReasons, RowSet

if TYPE_CHECKING:
    from .model import Snapshot, TaskStatus
    from .._store.manifest import Submission


def why_missing(snap: "Snapshot", missing: RowSet,
                details: List["TaskStatus"]) -> Tuple[RowReasons, RowReasons]:
    """Blame each missing row on the task that had taken its chunk in the latest submission
    that included it (the one it was in flight in, if its chunk was taken over after that
    task died), or say it was never started. Chunk by chunk, never row by row.

    Returns (row -> why, row -> the state of the task to blame): NOT_STARTED when no task
    took its chunk, STOPPED when the job stopped early, NOT_SUBMITTED when nothing ran it,
    DAMAGED when its task recorded it but the record's values fail their checksum."""
    by_task = {(d.submission, d.task): d for d in details}
    left = missing
    reasons, states = RowReasons(), RowReasons()
    for path, number, rows in snap.results.damaged(missing):
        here = rows & left
        left = left - here
        reasons.add(here, damaged_reason(path, number, snap.results.job_dir))
        states.add(here, DAMAGED)
    for s in reversed(snap.manifest.submissions):
        if not left:
            break
        here = left & in_rows(s)
        if not here:
            continue
        left = left - here
        chains = snap.claims(s.index)
        task_states = [d.state for d in details if d.submission == s.index]
        stop = snap.stops.get(s.index)
        stopped = (f"not run: the job stopped early ({stop.failed} rows raised, "
                   f"max_failures={stop.max_failures})") if stop is not None else ""
        blame = functools.lru_cache(maxsize=None)(
            lambda who, s=s, task_states=task_states, stopped=stopped: _blame(s, who, task_states, by_task, stopped))
        starts, stops, chunks = _chunk_runs(s, snap.chunk_bounds(s.n_rows, s.n_chunks))
        by_blame: Dict[Tuple[str, str], List[int]] = {}
        for i in _overlapping(starts, stops, here).tolist():
            chain = chains.get(int(chunks[i]))
            by_blame.setdefault(blame(chain.owner if chain is not None else None), []).append(i)
            for r, who in (chain.lost.items() if chain is not None else ()):
                if starts[i] <= r < stops[i] and r in here:
                    states.set_row(r, blame(who)[0])
                    reasons.set_row(r, blame(who)[1])
        for (state, text), idx in by_blame.items():
            rows = here & RowSet.from_runs(starts[idx], stops[idx])
            reasons.add(rows, text)
            states.add(rows, state)
    if left:
        reasons.add(left, "not in any submission")
        states.add(left, "NOT_SUBMITTED")
    return reasons, states


DAMAGED = "DAMAGED"


def damaged_reason(path: Path, number: int, job_dir: Path) -> str:
    """Why a row recorded in damaged frame ``number`` of ``path`` has no result."""
    try:
        name = str(path.relative_to(job_dir))
    except ValueError:
        name = str(path)
    return (f"its record is damaged ({name}, frame {number}: the values fail their checksum, "
            "so the file changed on disk after it was written); resubmit() runs it again")


def _chunk_runs(s: "Submission", bounds: List[Tuple[int, int]]) -> Tuple[Any, Any, Any]:
    """(row starts, row stops, chunk) of each stretch of rows of one chunk of ``s``: chunks
    are ranges of the submission's positions, which map onto its ranges of rows."""
    r_start = np.array([a for a, _ in s.rows], dtype=np.int64)
    r_len = np.array([b - a for a, b in s.rows], dtype=np.int64)
    r_pos = np.cumsum(r_len) - r_len  # the position of each range's first row
    c_pos = np.array([a for a, _ in bounds], dtype=np.int64)
    cuts = distinct(np.concatenate((r_pos, c_pos, np.array([r_len.sum()], dtype=np.int64))))
    lo, hi = cuts[:-1], cuts[1:]
    rng = np.searchsorted(r_pos, lo, side="right") - 1
    chunk = np.searchsorted(c_pos, lo, side="right") - 1
    start = r_start[rng] + lo - r_pos[rng]
    return start, start + (hi - lo), chunk


def _overlapping(starts: Any, stops: Any, rows: RowSet) -> Any:
    """Indices of the runs [starts, stops) that hold some row of ``rows``."""
    # The first row of ``rows`` at or after each start lies before its stop.
    j = np.searchsorted(rows.stops, starts, side="right")
    ok = j < len(rows.starts)
    first = np.maximum(rows.starts[np.where(ok, j, 0)], starts)
    return np.flatnonzero(ok & (first < stops))


def _blame(s: "Submission", who: Optional[Tuple[int, int]], states: List[str],
           by_task: Dict[Tuple[int, int], "TaskStatus"], stopped: str = "") -> Tuple[str, str]:
    """(the state of the task to blame, why the row is missing)."""
    if stopped and (who is None or getattr(by_task.get((s.index, who[0])), "state", "") == COMPLETED):
        return "STOPPED", stopped  # its task left it when the job stopped early
    if who is None:
        if not s.launched:
            return NOT_SUBMITTED, "not submitted"
        if any(may_do_more(st) for st in states):
            return "NOT_STARTED", "not started yet"
        counts = ", ".join(f"{states.count(st)} {st}" for st in sorted(set(states)))
        return "NOT_STARTED", f"never started: its tasks ended first ({counts})"
    d = by_task.get((s.index, who[0]))
    name = f"task {who[0]}" if s.index == 0 else f"submission {s.index} task {who[0]}"
    return (d.state, f"{name}: {d.describe()}") if d else (LOST, "taken by a task that is gone")


def in_rows(s: "Submission") -> RowSet:
    """The rows a submission runs."""
    return RowSet.from_runs([a for a, _ in s.rows], [b for _, b in s.rows])
