"""Chains: ``slurm_apply(g, df, after=job)``. The jobs named are checked before anything is
written; once the job is written, its first submission gets its gate (``_job/gate.py``), and
each upstream job a note of the job that waits for it (``_store/chain.py``)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List

from .._errors import InputError, JobDirError
from .._job.handle import SlurmJob
from .._job.upstreams import Upstream, ended_badly
from .._launch.write import write_gate
from .._store import chain
from .._store import layout as jd

if TYPE_CHECKING:
    from .._store.manifest import Manifest


def check_after(after: Any, backend: str, path: Path, submit: bool) -> List[Upstream]:
    """The upstream jobs ``after`` names (a SlurmJob, a job directory, or a list of them), each
    with its status; raises InputError, saying what to do, for one that cannot be waited for."""
    if after is None:
        return []
    items = list(after) if isinstance(after, (list, tuple)) else [after]
    if not items:
        return []
    if not submit:
        raise InputError("after= needs submit=True: a script submitted by hand would not wait for "
                         "the jobs it names. Submit with after=, or leave after= out.")
    out: List[Upstream] = []
    seen = set()
    for item in items:
        job = _job_of(item)
        if job.job_dir in seen:
            continue
        seen.add(job.job_dir)
        if job.job_dir == path.absolute():
            raise InputError(f"after= names {job.job_dir}, the directory this job would replace; "
                             "a job cannot run after itself: give it another jobname")
        theirs = job.manifest.submissions[-1].backend if job.manifest.submissions else backend
        if theirs != backend:
            raise InputError(f"after= names job {job.jobname} ({job.job_dir}), which runs on the "
                             f"{theirs} backend, but this job would run on {backend}: a job can only "
                             f"wait for jobs of its own scheduler. Pass backend={theirs!r}.")
        status = job.get_job_status()
        if status.state == "NOT_SUBMITTED":
            raise InputError(f"after= names job {job.jobname} ({job.job_dir}), which was never "
                             "submitted, so nothing would ever let this one run: submit it first "
                             "(job.submit())")
        if status.ended and status.rows_done < status.rows_total:
            raise InputError(f"after= names a job whose rows are not all done, so this one would "
                             f"never run: {ended_badly(status, job.job_dir)}. Run them again "
                             "(job.resubmit()) and chain after it once they are done.")
        out.append((job, status))
    return out


def _job_of(item: Any) -> SlurmJob:
    if isinstance(item, SlurmJob):
        return SlurmJob(item.job_dir)  # read afresh: the caller's handle may be old
    if isinstance(item, (str, os.PathLike)):
        try:
            return SlurmJob.from_dir(item)
        except JobDirError as exc:
            raise InputError(f"after= names {os.fspath(item)!r}, which is not a job directory "
                             f"that can be read: {exc}") from None
    raise InputError(f"after= takes a SlurmJob (what slurm_apply returns), a job directory, or a "
                     f"list of them; got {type(item).__name__}")


def describe(ups: List[Upstream]) -> List[Dict[str, str]]:
    """The upstream jobs as the dependent's manifest records them."""
    return [{"job_dir": str(job.job_dir), "jobname": job.jobname, "token": job.manifest.token}
            for job, _ in ups]


def gate_first(path: Path, manifest: "Manifest", ups: List[Upstream]) -> None:
    """Give the written job's first submission its gate, and tell each upstream job it is
    waited for."""
    sub = write_gate(path, manifest, manifest.submissions[0])
    saved = jd.update_manifest(path, lambda m: m.replace_submission(
        dataclasses.replace(m.submissions[0], gate=sub.gate)))
    manifest.__dict__.update(saved.__dict__)
    me = {"job_dir": str(path), "jobname": manifest.jobname, "token": manifest.token}
    for job, _ in ups:
        chain.add_dependent(job.job_dir, me)
