"""Stopping automatic retries: a cancel() marks the manifest so that no follow-up starts a
submission from then on, and a job directory about to be deleted or replaced first cancels the
follow-ups that have not decided (and only those: the tasks have ended)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List

from .. import _backends as backends
from .._store import layout as jd
from .._store.manifest import Manifest, Submission

if TYPE_CHECKING:
    from .handle import SlurmJob


def stop_retries(job_dir: Path, why: str) -> None:
    """No follow-up starts a submission from now on (``why`` is recorded and shown)."""
    said = f"stopped by {why} at {time.strftime('%Y-%m-%d %H:%M:%S')}"

    def stop(manifest: Manifest) -> None:
        if manifest.retry.retries and not manifest.retries_stopped:
            manifest.retries_stopped = said

    jd.update_manifest(job_dir, stop)


def stop_followups(job: "SlurmJob") -> None:
    """Cancel the follow-ups that have not decided yet, before the job directory is deleted or
    replaced: once the job has ended they have nothing to retry, and they would write there."""
    from .._errors import SchedulerError

    undecided = [s for s in job.manifest.launched() if s.followup and s.decision is None]
    if not undecided:
        return
    stop_retries(job.job_dir, "the job directory is being deleted or replaced")
    by_backend: Dict[str, List[Submission]] = {}
    for s in undecided:
        by_backend.setdefault(s.backend, []).append(s)
    for name, subs in by_backend.items():
        try:
            backends.get(name).cancel_followups(job.job_dir, subs)
        except SchedulerError:  # one that cannot be cancelled finds the directory gone
            pass
