"""Rows as the user names them (params_df's labels), and rows as they come in."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Generator, Iterator, List, Optional, Tuple

from .._errors import InputError
from .._store import layout as jd

if TYPE_CHECKING:
    import pandas as pd

    from .handle import SlurmJob
    from .._status.results import Results
    from .._status.rowsets import RowSet


class RowNames:
    """params_df's index, read once and only when a row must be named (index.pkl, not the
    whole table); None stands for the default 0..n-1, where labels are positions."""

    def __init__(self, job_dir: Path, n_rows: int) -> None:
        self.job_dir, self.n_rows = job_dir, n_rows
        self._whole: Any = None  # params_df's index, once read
        self._index: Any = None

    def whole(self) -> "pd.Index":
        """params_df's index as it was, the default 0..n-1 included."""
        if self._whole is None:
            import pandas as pd

            index = jd.read_index(self.job_dir)[:self.n_rows]  # beyond: an extend() under way
            default = isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1
            self._whole, self._index = index, (None if default else index)
        return self._whole

    def index(self) -> Any:
        """params_df's index, or None for the default 0..n-1 (where labels are positions)."""
        if self._whole is None and self.n_rows <= jd.index_default_rows(self.job_dir):
            return None  # known without pandas
        self.whole()
        return self._index

    def labels_or_none(self, positions: Any) -> Optional[List[Any]]:
        index = self.index()
        return None if index is None else index[list(positions)].tolist()

    def labels(self, positions: Any) -> List[Any]:
        positions = list(positions)
        named = self.labels_or_none(positions)
        return named if named is not None else positions

    def position(self, row: Any) -> int:
        import numpy as np

        index = self.index()
        if index is None:
            if isinstance(row, bool) or not isinstance(row, (int, np.integer)) or not 0 <= row < self.n_rows:
                raise InputError(f"row must be a label of params_df's index (0 to {self.n_rows - 1}); "
                                 f"got {row!r}")
            return int(row)
        try:
            where = index.get_loc(row)
        except KeyError:
            raise InputError(f"params_df's index has no row labelled {row!r}") from None
        if not isinstance(where, int):
            raise InputError(f"more than one row is labelled {row!r}; name one by position "
                             "with a unique index")
        return where


def as_completed(job: "SlurmJob", timeout_s: Optional[float]) -> Iterator[Tuple[Any, Any]]:
    """(label, value or FailedRow) for each row once it has an outcome its submission will not
    change, walking the one wait loop, until the job has ended. Rows extend() adds meanwhile
    (in the loop's body, say) come too: a job that had ended when its last rows were yielded,
    but has submissions that status had not seen, is waited for again."""
    import time

    from .._status.rowsets import RowSet
    from .wait import Pace

    pace = Pace(0.05, 1.0, 5.0, 30.0)
    told = RowSet()  # as runs: a poll costs what the new rows cost, not the job's size
    while True:
        left = None if timeout_s is None else max(0.0, timeout_s - (time.monotonic() - pace.t0))
        seen, told = yield from _completed(job, pace, left, told)
        job._reload()
        if len(job.manifest.submissions) == seen:
            return


def _completed(job: "SlurmJob", pace: Any, timeout_s: Optional[float],
               told: "RowSet") -> Generator[Tuple[Any, Any], None, Tuple[int, "RowSet"]]:
    """One walk of the wait loop for as_completed, yielding the rows not in ``told``; returns
    how many submissions the job had at its last status, and the rows told by then."""
    from .output import FailedRow
    from .._status.rowsets import RowSet
    from .wait import statuses

    seen = 0
    for status in statuses(job, pace, timeout_s):
        seen = len(job.manifest.submissions)  # what this status was built from
        results: "Results" = job._results  # the handle's, even if it had to read them afresh
        pending = getattr(status, "_pending", RowSet())
        fresh = ((results.done_rows() | results.failed_rows()) - pending) - told
        if not fresh:
            continue
        told = told | fresh
        new = fresh.rows()
        values = results.values_at(new)
        errors = results.errors(new)
        for r, label in zip(new.tolist(), job.labels(new.tolist())):
            yield (label, FailedRow(label, *errors[r])) if r in errors else (label, values.get(r))
    return seen, told
