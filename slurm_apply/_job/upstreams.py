"""What the upstream jobs of a chain (``slurm_apply(g, df, after=job)``) mean for a dependent
job once it is queued: how one that ended badly is described, the ids a gate waits for, and
whether the dependent may run its rows again (``resubmit()``). (What an upstream job's
``cleanup_files()`` asks of its dependents is in handle.py, which this module is below.)

A resubmission of a dependent job keeps the rule its first submission had: its rows run only
once every row of the jobs it runs after is done. An upstream job still running: the rows are
resubmitted behind a new gate, queued after it (as Slurm's ``--dependency`` or Grid Engine's
``-hold_jid`` would have them wait). An upstream job that ended with rows failed or missing:
refused, naming it and its rows, since its gate would close at once; the user runs those rows
again first (which is what a pipeline tool does: the failed step, then the steps after it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Tuple

from .._errors import InputError
from .._store import chain
from .._store import layout as jd

if TYPE_CHECKING:
    from .._status.model import JobStatus
    from .._store.manifest import Manifest
    from .handle import SlurmJob

Upstream = Tuple["SlurmJob", "JobStatus"]


def ended_badly(status: "JobStatus", path: Path) -> str:
    """'job a (/x/_rslurm_a) ended FAILED: rows 3, 7 raised (ValueError: ...); rows 9 missing (CANCELLED)'."""
    parts = []
    if status.rows_failed:
        first = f" ({status.first_error})" if status.first_error else ""
        parts.append(f"rows {status.rows_text(status.failed_rows)} raised{first}")
    for reason, rows in status.missing_by_reason().items():
        parts.append(f"rows {status.rows_text(rows)} missing ({reason})")
    return f"job {status.jobname} ({path}) ended {status.state}: " + "; ".join(parts)


def open_ids(ups: List[Upstream]) -> List[str]:
    """The scheduler's ids of what the upstream jobs may still run: the arrays with a task queued
    or running, and the follow-ups that have not decided (they may launch retries)."""
    ids: List[str] = []
    for job, status in ups:
        active = {t.submission for t in status.task_details if t.active}
        for s in job.manifest.launched():
            if s.index in active and s.job_id:
                ids.append(s.job_id)
            if s.followup_id and s.decision is None:
                ids.append(s.followup_id)
    return list(dict.fromkeys(ids))


def pending_for_resubmit(job: "SlurmJob", manifest: "Manifest") -> List[Upstream]:
    """The upstream jobs of the dependent ``job`` that have not ended (a resubmission of its
    rows waits for them behind a new gate); raises InputError, saying what to do, when one ended
    with rows not done, or is gone before its gate ever opened."""
    job_dir = job.job_dir
    pending: List[Upstream] = []
    for up in manifest.after:
        path, name = Path(up["job_dir"]), up.get("jobname", "?")
        if jd.job_replaced(path, up.get("token", "")):
            verdict = chain.read_verdict(job_dir)
            if verdict is not None and verdict.open:
                continue  # every row of it was done when the gate opened; it is not waited for again
            gone = "was deleted" if not path.exists() else "was replaced by another job"
            raise InputError(
                f"refusing to resubmit job {manifest.jobname} ({job_dir}): it runs after job {name} "
                f"({path}), which {gone} before its rows were done, so nothing can tell when this "
                "one may run. Run the rows as a job of their own (slurm_apply(..., after=...) "
                "naming the jobs that replace it)")
        upstream = type(job)(path)  # a handle like the caller's (this module is below handle.py)
        status = upstream.get_job_status()
        if not status.ended:
            pending.append((upstream, status))
        elif status.rows_done < status.rows_total:
            raise InputError(
                f"refusing to resubmit job {manifest.jobname} ({job_dir}): it runs after "
                f"{ended_badly(status, path)}, so its rows would never run behind it. Run those "
                f"rows again first (resubmit it with failed=True, or `slurm-apply resubmit {path} "
                "--failed`), then resubmit this one: it waits for them.")
    return pending
