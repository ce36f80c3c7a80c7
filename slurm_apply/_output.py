"""The output table and the errors that say which rows have no result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, List, Optional

from ._errors import RemoteTraceback, RowsFailedError, RowsMissingError
from ._status import NOT_FINISHED

if TYPE_CHECKING:
    import pandas as pd

    from ._results import Results
    from ._status import JobStatus

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


def raise_for_rows(status: "JobStatus", results: "Results", labels: Labels) -> None:
    """RowsFailedError if rows raised (the first remote traceback as its cause), else
    RowsMissingError if rows have no result yet or never will. Rows are named by their labels."""
    n = status.rows_total
    if status.failed_rows:
        r0 = status.failed_rows[0]
        etype, emsg, tb = results.errors([r0])[r0]
        raise RowsFailedError(
            f"{status.rows_failed} of {n} rows raised: rows {status.rows_text(status.failed_rows)}. "
            f"First, row {status.row_name(r0)}: {etype}: {emsg}. See the traceback above; "
            "get_output(errors='keep') returns the other rows, and resubmit(failed=True) reruns these.",
            rows=labels(status.failed_rows),
        ) from RemoteTraceback(tb)
    if status.rows_pending:
        raise RowsMissingError(
            f"{status.rows_pending} of {n} rows are still queued or running; wait() for them, or "
            "get_output(errors='keep') returns the rows done so far.", rows=labels(status.missing_rows))
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


def table(params_path: Path, values: List[Any], results: "Results", status: "JobStatus", *,
          keep_errors: bool) -> "pd.DataFrame":
    """The parameters with each row's result as columns (and, if asked, what went wrong)."""
    import pandas as pd

    params = pd.read_pickle(params_path)
    done = results.done_mask()
    result = result_frame(values, None if done.all() else done.tolist())
    clash = [c for c in result.columns if c in params.columns]
    if clash:
        result = result.rename(columns={c: f"{c}_result" for c in clash})
    result.index = params.index
    out = pd.concat([params, result], axis=1)
    if keep_errors:
        name = ERROR_COLUMN if ERROR_COLUMN not in out.columns else ERROR_COLUMN_ALT
        out[name] = _error_column(status, results)
        name = STATE_COLUMN if STATE_COLUMN not in out.columns else STATE_COLUMN_ALT
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
    import pandas as pd

    sample = [v for i, v in enumerate(values) if present is None or present[i]]
    if sample and all(isinstance(v, dict) for v in sample):
        records = [v if isinstance(v, dict) else {} for v in values]
        return pd.DataFrame.from_records(records)
    if sample and all(isinstance(v, pd.Series) for v in sample):
        return pd.DataFrame([v if isinstance(v, pd.Series) else pd.Series(dtype=object)
                             for v in values]).reset_index(drop=True)
    return pd.DataFrame({"result": pd.Series(values, dtype=None)})
