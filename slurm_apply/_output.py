"""The output table and the errors that say which rows have no result."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional

from ._errors import RemoteTraceback, RowsFailedError, RowsMissingError
from ._render import compress_rows
from ._status import NOT_FINISHED
from ._store.payload import read_only_hint

if TYPE_CHECKING:
    import pandas as pd

    from ._results import Results
    from ._status import JobStatus

ERROR_COLUMN, ERROR_COLUMN_ALT = "error", "slurm_apply_error"


def raise_for_rows(status: "JobStatus", results: "Results") -> None:
    """RowsFailedError if rows raised (the first remote traceback as its cause), else
    RowsMissingError if rows have no result yet or never will."""
    n = status.rows_total
    if status.failed_rows:
        r0 = status.failed_rows[0]
        etype, emsg, tb = results.errors([r0])[r0]
        raise RowsFailedError(
            f"{status.rows_failed} of {n} rows raised: rows {compress_rows(status.failed_rows)}. "
            f"First, row {r0}: {etype}: {emsg}{read_only_hint(emsg)}. See the traceback above; "
            "get_output(errors='keep') returns the other rows, and resubmit(failed=True) reruns "
            "these.",
            rows=status.failed_rows,
        ) from RemoteTraceback(tb)
    if status.rows_pending:
        raise RowsMissingError(
            f"{status.rows_pending} of {n} rows are still queued or running; wait() for them, or "
            "get_output(errors='keep') returns the rows done so far.", rows=status.missing_rows)
    if status.missing_rows:
        detail = "; ".join(f"rows {compress_rows(v)}: {k}" for k, v in status.missing_by_reason().items())
        raise RowsMissingError(
            f"{status.rows_missing} of {n} rows have no result ({detail}); resubmit() runs them "
            "again, or get_output(errors='keep') returns the rest.", rows=status.missing_rows)


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
    return out


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
