"""The output table and the errors that say which rows have no result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional

import numpy as np

from .._errors import RemoteTraceback, RowsFailedError, RowsMissingError
from .._status.model import NOT_FINISHED
from .._store.columns import kind
from .._store.payload import read_only_hint

if TYPE_CHECKING:
    import pandas as pd

    from .._status.results import Results
    from .._status.model import JobStatus

ERROR_COLUMN, ERROR_COLUMN_ALT = "error", "slurm_apply_error"
STATE_COLUMN, STATE_COLUMN_ALT = "state", "slurm_apply_state"
Labels = Callable[[Iterable[int]], List[Any]]  # positions -> params_df's labels


@dataclass(frozen=True)
class FailedRow:
    """Stands in ``get_output(outtype="raw", errors="keep")`` for a row that raised (a bare None
    could not be told apart from f returning None)."""

    row: Any  # params_df's index label
    error_type: str
    message: str
    traceback: str = field(repr=False)


@dataclass(frozen=True)
class MissingRow:
    """Stands in the raw output for a row without a result: ``reason`` says why (still queued
    or running, or the task that had it and how it ended)."""

    row: Any
    reason: str


def raise_for_rows(status: "JobStatus", results: "Results", labels: Labels, *,
                   unsubmitted: bool = False) -> None:
    """RowsFailedError if rows raised (the first remote traceback as its cause), else
    RowsMissingError if rows have no result yet or never will. Rows are named by their labels.
    ``unsubmitted``: the latest submission was written with submit=False and never submitted
    (``submit()`` runs it, and ``resubmit()`` refuses)."""
    n = status.rows_total
    if status.failed_rows:
        r0 = status.failed_rows[0]
        etype, emsg, tb = results.errors([r0])[r0]
        raise RowsFailedError(
            f"{status.rows_failed} of {n} rows raised: rows {status.rows_text(status.failed_rows)}. "
            f"First, row {status.row_name(r0)}: {etype}: {emsg}{read_only_hint(emsg)}. See the "
            "traceback above; get_output(errors='keep') returns the other rows, and "
            "resubmit(failed=True) reruns these.",
            rows=labels(status.failed_rows),
        ) from RemoteTraceback(tb)
    if status.rows_pending:
        raise RowsMissingError(
            f"{status.rows_pending} of {n} rows are still queued or running; wait() for them, or "
            "get_output(errors='keep') returns the rows done so far.", rows=labels(status.missing_rows))
    if status.missing_rows and unsubmitted:
        raise RowsMissingError(
            f"{status.rows_missing} of {n} rows have no result: the job was written with "
            "submit=False and has not been submitted; submit it with job.submit() (or "
            "`slurm-apply submit DIR`).", rows=labels(status.missing_rows))
    if status.missing_rows:
        detail = "; ".join(f"rows {status.rows_text(v)}: {k}" for k, v in status.missing_by_reason().items())
        raise RowsMissingError(
            f"{status.rows_missing} of {n} rows have no result ({detail}); resubmit() runs them "
            "again, or get_output(errors='keep') returns the rest.", rows=labels(status.missing_rows))


def raw(values: List[Any], results: "Results", status: "JobStatus", labels: Labels) -> List[Any]:
    """The returned values, with a FailedRow or MissingRow where a row has no value."""
    done = results.done_mask()
    if done.all():
        return values
    names = labels(range(status.rows_total))
    for r, (etype, emsg, tb) in results.errors(status.failed_rows).items():
        values[r] = FailedRow(names[r], etype, emsg, tb)
    missing = set(status.missing_rows)
    for r in (~done).nonzero()[0].tolist():
        if not isinstance(values[r], FailedRow):
            why = status.missing_reasons.get(r, NOT_FINISHED) if r in missing else f"pending: {NOT_FINISHED}"
            values[r] = MissingRow(names[r], why)
    return values


def table(params: "pd.DataFrame", results: "Results", status: "JobStatus", *,
          keep_errors: bool) -> "pd.DataFrame":
    """The parameters with each row's result as columns (and, if asked, what went wrong)."""
    import pandas as pd

    result = column_frame(results)
    if result is None:  # values of other shapes: one Python object per row
        done = results.done_mask()
        result = result_frame(results.values(), None if done.all() else done.tolist())
    clash = [c for c in result.columns if c in params.columns]
    if clash:
        taken = set(params.columns) | set(result.columns)
        renamed = {}
        for c in clash:
            renamed[c] = unique_name(f"{c}_result", taken, f"{c}_result")
            taken.add(renamed[c])
        result = result.rename(columns=renamed)
    result.index = params.index
    out = pd.concat([params, result], axis=1)
    if keep_errors:
        name = unique_name(ERROR_COLUMN, out.columns, ERROR_COLUMN_ALT)
        out[name] = _error_column(status, results)
        name = unique_name(STATE_COLUMN, out.columns, STATE_COLUMN_ALT)
        out[name] = _state_column(status, results)
    return out


def _state_column(status: "JobStatus", results: "Results") -> "pd.Categorical":
    """Each row's state: done, failed, missing (no task left to run it) or pending."""
    import numpy as np
    import pandas as pd

    codes = np.zeros(status.rows_total, dtype=np.int8)  # done
    codes[results.failed_mask()] = 1
    codes[status.missing_rows] = 2
    codes[status.pending_mask()] = 3
    return pd.Categorical.from_codes(codes, categories=["done", "failed", "missing", "pending"])


def _error_column(status: "JobStatus", results: "Results") -> List[Optional[str]]:
    col: List[Optional[str]] = [None] * status.rows_total
    if status.rows_pending:  # rows without a result that a running submission will still run
        for r in (~results.done_mask()).nonzero()[0].tolist():
            col[r] = f"pending: {NOT_FINISHED}"
    for r, (etype, emsg, _) in results.errors(status.failed_rows).items():
        col[r] = f"{etype}: {emsg}"
    for r in status.missing_rows:
        col[r] = f"missing: {status.missing_reasons.get(r, NOT_FINISHED)}"
    return col


def result_frame(values: List[Any], present: Optional[List[bool]]) -> "pd.DataFrame":
    """The result columns, row by row. Rows that returned a dict or a Series give columns,
    whatever the other rows returned: rows that returned None (or have no result) are NaN
    there, and any other value goes to a ``result`` column of its own."""
    import pandas as pd

    has = [present is None or present[i] for i in range(len(values))]
    shaped = [v for v, h in zip(values, has) if h and v is not None]
    mapped = [v for v in shaped if isinstance(v, (dict, pd.Series))]
    if not mapped:
        return pd.DataFrame({"result": pd.Series(values, dtype=None)})
    if len(mapped) == len(shaped) and all(isinstance(v, pd.Series) for v in mapped):
        return pd.DataFrame([v if h and isinstance(v, pd.Series) else pd.Series(dtype=object)
                             for v, h in zip(values, has)]).reset_index(drop=True)
    keys: set = set()
    for v in mapped:
        keys.update(v.keys())
    other = unique_name("result", keys)  # a value of another kind beside the dicts
    records = [{} if not h or v is None else v if isinstance(v, dict)
               else v.to_dict() if isinstance(v, pd.Series) else {other: v}
               for v, h in zip(values, has)]
    return pd.DataFrame.from_records(records)


def unique_name(name: str, taken: Any, alt: str = "") -> str:
    """``name``, else ``alt``, else ``alt_2``, ``alt_3``, ...: the first not ``taken``, so a
    column slurm_apply adds never replaces one of the user's."""
    if name not in taken:
        return name
    alt = alt or f"slurm_apply_{name}"
    candidate, n = alt, 1
    while candidate in taken:
        n += 1
        candidate = f"{alt}_{n}"
    return candidate


# Where a row has no result, the table holds what result_frame's pandas calls would put there.
_MISSING_IN_DICTS = np.nan  # DataFrame.from_records: a key a record lacks
_MISSING_RESULT = None  # Series(values): the None standing for the row


def column_frame(results: "Results") -> Optional["pd.DataFrame"]:
    """The result columns built from frames stored by column: the table result_frame would
    give, without a Python object per number. None when some winning frame is not stored by
    column, or their shapes or types do not combine (then the values go row by row)."""
    import pandas as pd

    if not results.all_by_column():
        return None
    build = _ColumnBuilder(results.n_rows)
    for frame, rf, won in results.winning_frames():
        keys, _, cols = rf.columns(frame)
        rows = np.frombuffer(frame.done, dtype=np.int64)[won]
        if not build.add(keys, cols, rows, won):
            return None
    present = results.done_mask()
    scalar = build.order is None
    columns = {name: _finish(build.out[name], build.kinds[name], present,
                             _MISSING_RESULT if scalar else _MISSING_IN_DICTS)
               for name in (build.order or ["result"])}
    if scalar:
        return pd.DataFrame({"result": pd.Series(columns["result"])})
    return pd.DataFrame(columns)


class _ColumnBuilder:
    """Fills one NumPy array per result column, frame by frame."""

    _DTYPES = {"d": np.float64, "q": np.int64, "B": np.bool_, "s": object}

    def __init__(self, n_rows: int) -> None:
        self.n_rows = n_rows
        self.keys: Optional[frozenset] = None
        self.order: Optional[List[str]] = None  # key order of the frame with the lowest row
        self.lowest = n_rows
        self.out: Dict[str, np.ndarray] = {}
        self.kinds: Dict[str, str] = {}

    def add(self, keys: Optional[List[str]], cols: List[Any], rows: np.ndarray,
            won: np.ndarray) -> bool:
        """Put a frame's winning values in place; False when it does not fit the others."""
        names = keys if keys is not None else ["result"]
        shape = frozenset(keys) if keys is not None else None
        if self.out and shape != self.keys:
            return False  # other keys (from_records would add columns), or dicts beside scalars
        self.keys = shape
        if keys is not None and len(rows) and rows.min() < self.lowest:
            # from_records orders columns as the first record with a value orders its keys
            self.order, self.lowest = list(keys), int(rows.min())
        for name, col in zip(names, cols):
            k = kind(col)
            if not self._accept(name, k):
                return False
            vals = np.frombuffer(col, dtype=self._DTYPES[k]) if k != "s" else np.array(col, dtype=object)
            self.out[name][rows] = vals[won]
        return True

    def _accept(self, name: str, k: str) -> bool:
        have = self.kinds.get(name)
        if have is None:
            self.out[name] = np.empty(self.n_rows, dtype=self._DTYPES[k])
        elif {have, k} == {"q", "d"}:  # ints beside floats: pandas makes the column float64
            if have == "q":
                self.out[name] = self.out[name].astype(np.float64)
            k = "d"
        elif have != k:
            return False  # e.g. bools beside numbers: pandas makes it object; go row by row
        self.kinds[name] = k
        return True


def _finish(arr: np.ndarray, k: str, present: np.ndarray, missing: Any) -> np.ndarray:
    """Fill the rows without a result as pandas would: NaN in a float column (ints become
    floats), ``missing`` in an object column (bools become objects)."""
    if present.all():
        return arr
    if k in ("d", "q"):
        arr = arr.astype(np.float64, copy=False)
        arr[~present] = np.nan
        return arr
    if k == "B":
        obj = np.empty(len(arr), dtype=object)
        obj[present] = arr[present].tolist()  # Python bools, as in the records
        arr = obj
    arr[~present] = missing
    return arr
