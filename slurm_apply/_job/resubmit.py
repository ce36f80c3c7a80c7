"""Running rows again, and submitting a job written with submit=False.

A resubmission is derived from the previous submission, so everything not overridden is
inherited (nodes, CPUs, options, at-once limit, setup lines, backend).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from .. import _backends as backends
from .._launch import write as _submit
from .._launch import validate as v
from .._errors import InputError, JobActiveError
from . import upstreams
from .._store import chain
from .._store import layout as jd
from .._store.manifest import WRITTEN, Manifest, merge_options, ranges

if TYPE_CHECKING:
    import pandas as pd

    from .handle import SlurmJob
    from .._status.model import JobStatus


def resubmit(job: "SlurmJob", *, failed: bool, rows: Any, nodes: Optional[int],
             cpus_per_node: Optional[int], slurm_options: Optional[Dict[str, Any]],
             max_concurrent: Optional[int], backend: Optional[str], submit: bool, force: bool) -> None:
    nodes = v.check_optional_positive_int("nodes", nodes)
    cpus = v.check_optional_positive_int("cpus_per_node", cpus_per_node)
    max_concurrent = v.check_optional_positive_int("max_concurrent", max_concurrent)
    if backend is not None:
        v.check_choice("backend", backend, backends.NAMES)
    options = v.check_options(slurm_options, backends.dialect(backend or job.manifest.latest.backend))
    from .._store import table

    if force:  # cancel what still runs and let it stop, outside the lock (cancel() takes it)
        st = job.get_job_status()
        if not st.ended and st.state != "NOT_SUBMITTED":
            job._stop("resubmit")
    # The check and the write are one step under the lock: of resubmissions started together,
    # the first submits and the others see its tasks queued and refuse.
    with jd.manifest_lock(job.job_dir):
        params = table.read(job.job_dir)  # every row, those extend() added included
        # What this handle read of the records was checked when read; a record damaged on disk
        # since would still count as done. Choosing what to run is worth one fresh, checked read.
        job._read_records_again()
        status = job.get_job_status()
        if not force:
            job._refuse_if_active("resubmit", status)
        _refuse_unsubmitted(job)
        chosen = _rows_to_run(job, status, params, rows, failed)
        manifest = jd.load_manifest(job.job_dir)
        # A chained job's rows run again behind its upstream jobs, as they first did.
        pending = upstreams.pending_for_resubmit(job, manifest) if manifest.after else []
        if pending and not submit:
            raise InputError(f"job {job.jobname} runs after job(s) still running "
                             f"({', '.join(u.jobname for u, _ in pending)}): resubmit(submit=False) "
                             "would leave a script that does not wait for them. Resubmit with "
                             "submit=True, or once they have ended.")
        manifest.retries_stopped = ""  # a resubmission by hand is retried as the first run was
        prev = manifest.latest
        merged = merge_options(prev.slurm_options, options)
        if backend and backends.dialect(backend) is not backends.dialect(prev.backend):
            _options_for(job, {k: val for k, val in merged.items() if val is not None}, prev.backend,
                         backend, "run them again")
        sub = prev.derive(
            index=len(manifest.submissions), rows=ranges(chosen), n_rows=len(chosen),
            nodes=nodes or prev.nodes, cpus_per_task=cpus or prev.cpus_per_task,
            slurm_options=merged,
            max_concurrent=max_concurrent if max_concurrent is not None else prev.max_concurrent,
            backend=backend or prev.backend, written_at=time.time())
        backends.get(sub.backend).check_resources(sub.cpus_per_task, sub.slurm_options)
        sub = _submit.write_submission(job.job_dir, manifest, params, sub)
        if pending:
            sub = _submit.write_gate(job.job_dir, manifest, sub)
            manifest.put_submission(sub)  # what launch() hands over: the array with its gate
            chain.clear_verdict(job.job_dir)  # the new gate decides anew
        elif manifest.after:
            chain.write_verdict(job.job_dir, chain.Verdict(
                True, "every row of the jobs it runs after was done when it was resubmitted", time.time()))

        def add(m: Manifest) -> None:
            m.retries_stopped = ""
            m.put_submission(sub)

        jd.update_manifest(job.job_dir, add)
        if submit:
            _submit.launch(job.job_dir, manifest, sub.index, upstream=upstreams.open_ids(pending))


def _refuse_unsubmitted(job: "SlurmJob") -> None:
    written = [s for s in job.manifest.submissions if s.state == WRITTEN and not s.launched]
    if written:
        raise JobActiveError(
            f"submission {written[-1].index} of {job.jobname} was written but never submitted "
            "(submit=False): submit it with job.submit() (or `slurm-apply submit DIR`) rather "
            "than resubmitting")


def _rows_to_run(job: "SlurmJob", status: "JobStatus", params: "pd.DataFrame", rows: Any,
                 failed: bool) -> List[int]:
    """Positions of the rows to run: those asked for, else the missing (and failed) ones."""
    if rows is not None:
        chosen = row_positions(rows, params.index)
        if not chosen:
            raise InputError("rows= selects no row; nothing to resubmit")
        return chosen
    chosen = sorted([*status.missing_rows, *(status.failed_rows if failed else ())])
    if not chosen:
        what = ("has a result" if failed or not status.failed_rows
                else "has a result or an error (pass failed=True to rerun errors)")
        raise InputError(f"nothing to resubmit: every row of {job.jobname} {what}")
    return chosen


def row_positions(rows: Any, index: "pd.Index") -> List[int]:
    """Row positions from what a user has at hand: a boolean mask (one per row), params_df's
    labels (a pandas Index, e.g. ``out.index[out.accuracy < 0.5]``, or a list of labels none of
    which is a number: a string cannot be a position), or positions (ints)."""
    import numpy as np
    import pandas as pd

    n = len(index)
    if isinstance(rows, (str, bytes)):
        raise InputError(f"rows= takes a list of rows; got a single label {rows!r}: pass [{rows!r}]")
    if not isinstance(rows, pd.Index):
        values = rows.tolist() if isinstance(rows, (pd.Series, np.ndarray)) else list(rows)
        if values and not any(_number(v) for v in values):
            rows = pd.Index(values, tupleize_cols=True)
    if isinstance(rows, pd.Index):
        where = index.get_indexer(rows)
        if (where < 0).any():
            missing = list(rows[where < 0][:5])
            raise InputError(f"rows= names label(s) {missing} that params_df's index does not have")
        return sorted(set(where.tolist()))
    arr = np.asarray(rows.to_numpy() if isinstance(rows, pd.Series) else list(rows))
    if arr.dtype == bool:
        if len(arr) != n:
            raise InputError(f"a boolean rows= mask needs one value per row ({n}); got {len(arr)}")
        return np.flatnonzero(arr).tolist()
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InputError("rows= takes row positions (ints), a boolean mask, or params_df's labels "
                         f"(a list of labels that are not numbers, or a pandas Index); got values of "
                         f"type {arr.dtype}, which could be either (wrap labels in pd.Index)")
    bad = [int(r) for r in arr if not 0 <= r < n]
    if bad:
        raise InputError(f"rows= positions must be 0 to {n - 1}; got {bad[:5]}")
    return sorted(set(arr.astype(int).tolist()))


def _number(value: Any) -> bool:
    """Whether ``value`` could be read as a position or a mask's value (NumPy's numbers too)."""
    import numbers

    import numpy as np

    return isinstance(value, (numbers.Number, np.bool_))


def submit(job: "SlurmJob", backend: Optional[str]) -> None:
    """Submit the submission written with submit=False, to its backend or ``backend``."""
    if backend is not None:
        v.check_choice("backend", backend, backends.NAMES)
    with jd.manifest_lock(job.job_dir):
        manifest = jd.load_manifest(job.job_dir)
        sub = manifest.latest
        if sub.launched or sub.state != WRITTEN:
            raise InputError(f"{job.jobname} has no submission waiting to be submitted (the "
                             f"latest, {sub.index}, is {sub.state}); resubmit() runs rows again")
        if backend and backend != sub.backend:
            backends.get(backend).check_usable(backend)
            backends.get(backend).check_resources(sub.cpus_per_task, sub.slurm_options)
            moved = dataclasses.replace(sub, backend=backend)
            if backends.dialect(backend) is not backends.dialect(sub.backend):
                # Written in another scheduler's forms: written again in this one's, if its
                # options mean something here.
                _options_for(job, sub.slurm_options, sub.backend, backend, "submit it")
                _submit.rewrite_scripts(job.job_dir, manifest, moved)
            manifest.replace_submission(moved)
        _submit.launch(job.job_dir, manifest, sub.index)


def _options_for(job: "SlurmJob", options: Dict[str, Any], old: str, new: str, what: str) -> None:
    """Refuse, saying which and why, options written for backend ``old`` that backend ``new``
    does not take."""
    try:
        v.check_options(options, backends.dialect(new))
    except InputError as exc:
        raise InputError(
            f"{job.jobname} was written for the {old} backend, with options {options}, and the "
            f"{new} backend cannot {what} as they are ({exc}). Use the options both take (time, "
            f"mem, partition, account), or write the job again with backend={new!r}") from None
