"""Growing a job: ``SlurmJob.extend(new_rows)`` adds rows to the table and runs them as a new
submission in the same job directory, with the job's function, objects and settings.

The added rows take the positions after the job's last row, so each row's seed (which derives
from its position) is the one it would have had had every row been given in one call. They are
stored once, as the chunks of the submission that runs them (as the first rows are the first
submission's); what the table's meta keeps whole and the index grow with them, and the
manifest's row count last, in the same write as the submission's launch. Nothing reads the rows
the job already had: adding rows costs what writing them costs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, List

from .._errors import InputError, JobActiveError, JobDirError, SubmissionError
from .._launch import write as _write
from .._store import layout as jd
from .._store import table
from .._store.manifest import EXTENDED_FORMAT, WRITTEN, Manifest, Submission

if TYPE_CHECKING:
    import pandas as pd

    from .handle import SlurmJob


def extend(job: "SlurmJob", new_rows: Any) -> Submission:
    """Add ``new_rows`` to ``job`` and submit them; the submission that runs them."""
    import pandas as pd

    if not isinstance(new_rows, pd.DataFrame):
        raise InputError(f"new_rows must be a pandas DataFrame with the job's columns; got "
                         f"{type(new_rows).__name__}", argument="new_rows")
    if len(new_rows) == 0:
        raise InputError("new_rows has no rows: nothing to add", argument="new_rows")
    if (job.job_dir / jd.PARAMS).exists():
        raise JobDirError(f"{job.job_dir} was written by an older slurm_apply (its table is "
                          f"{jd.PARAMS}), whose directories cannot grow; run the rows as a job of "
                          "their own (slurm_apply)")
    new = table.conform(job.job_dir, new_rows)  # reads the table's meta, never its rows
    with jd.manifest_lock(job.job_dir):
        manifest = jd.load_manifest(job.job_dir)
        _refuse_unsubmitted(manifest, job.jobname, job.job_dir)
        n_old, n_new = manifest.n_rows, len(new)
        index = grown_index(jd.read_index(job.job_dir)[:n_old], new_rows.index, n_old)
        # The job's settings are the ones it was submitted with: the first submission's.
        sub = manifest.submissions[0].derive(
            index=len(manifest.submissions), rows=((n_old, n_old + n_new),), n_rows=n_new,
            added=True, written_at=time.time())
        manifest.retries_stopped = ""  # as after resubmit(): the job is being run again
        try:
            table.append(job.job_dir, n_old, new, index)
            sub = _write.write_submission(job.job_dir, manifest, new, sub, first_row=n_old)
        except BaseException:
            _remove_written(job, sub)
            raise

        def grow(m: Manifest) -> None:
            m.n_rows = n_old + n_new
            m.format = EXTENDED_FORMAT
            m.retries_stopped = ""

        try:
            # The rows, their submission and its outcome are saved in one write: a status never
            # sees rows no submission runs, nor a submission not yet launched.
            return _write.launch(job.job_dir, manifest, sub.index, also=grow)
        except SubmissionError as exc:
            raise SubmissionError(
                f"{exc}\nThe {n_new} rows were added to {job.jobname} (rows {n_old} to "
                f"{n_old + n_new - 1}, submission {sub.index}) but could not be submitted: once "
                "the cause is fixed, resubmit() runs them.", stderr=exc.stderr) from None


def _refuse_unsubmitted(manifest: Manifest, jobname: str, job_dir: Path) -> None:
    if manifest.after:
        from .._store import chain

        verdict = chain.read_verdict(job_dir)
        if verdict is None or not verdict.open:
            names = ", ".join(f"job {up.get('jobname', '?')}" for up in manifest.after)
            said = "still waits for" if verdict is None else "never runs: its gate closed on"
            raise JobActiveError(
                f"job {jobname} {said} {names} (after=): rows added now would not wait for it. "
                f"Add them once it runs (job.wait() on {names.split(', ')[0][4:]}), or as a job "
                "of their own with the same after=")
    written = [s for s in manifest.submissions if s.state == WRITTEN and not s.launched]
    if written:
        raise JobActiveError(
            f"submission {written[-1].index} of {jobname} was written but never submitted "
            "(submit=False): submit it with job.submit() (or `slurm-apply submit DIR`) before "
            "adding rows")


def _remove_written(job: "SlurmJob", sub: Submission) -> None:
    """What writing a submission that was never recorded left behind."""
    jd.remove_tree(jd.sub_dir(job.job_dir, sub.index))
    for name in (jd.script_name(sub.index), jd.followup_script_name(sub.index)):
        jd.script_path(job.job_dir, name).unlink(missing_ok=True)


def grown_index(old: "pd.Index", new: "pd.Index", n_old: int) -> "pd.Index":
    """The index of the table with the rows labelled ``new`` after the ``n_old`` rows labelled
    ``old``. A default 0..n-1 index continues: new rows with the default index get the next
    positions. Otherwise each new label must name no other row, and be of the same kind."""
    import pandas as pd

    def default(index: "pd.Index") -> bool:
        return isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1

    if default(old) and default(new):
        return pd.RangeIndex(0, n_old + len(new), name=old.name)
    fix = ("new_rows.reset_index(drop=True) numbers them after the job's rows" if default(old)
           else "give the new rows labels of their own (new_rows.index = [...])")
    if new.has_duplicates:
        dup = _shown(new[new.duplicated()].unique())
        raise InputError(f"new_rows' index has duplicate labels ({dup}), but a label names one "
                         f"row; {fix}", argument="new_rows")
    if old.nlevels != new.nlevels:
        raise InputError(f"the job's rows are labelled by an index of {old.nlevels} level(s), "
                         f"new_rows by one of {new.nlevels}; {fix}", argument="new_rows")
    clash = new[new.isin(old)]
    if len(clash):
        raise InputError(f"new_rows' labels {_shown(clash)} already name rows of the job, and a "
                         f"label names one row; {fix} (or leave those rows out)",
                         argument="new_rows")
    grown = old.append(new)
    if grown.dtype != old.dtype and not (old.dtype.kind in "iu" and new.dtype.kind in "iu"):
        raise InputError(f"the job's rows are labelled by {old.dtype} (e.g. {old[0]!r}), new_rows' "
                         f"by {new.dtype} (e.g. {new[0]!r}): rows are named by labels of one kind; "
                         f"{fix}", argument="new_rows")
    grown = grown.set_names(old.names)
    if default(old) and grown.equals(pd.RangeIndex(len(grown))):
        return pd.RangeIndex(len(grown), name=old.name)
    return grown


def _shown(labels: "pd.Index", most: int = 5) -> str:
    listed: List[Any] = labels[:most].tolist()
    more = f" and {len(labels) - most} more" if len(labels) > most else ""
    return ", ".join(repr(x) for x in listed) + more
