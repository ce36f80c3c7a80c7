"""Automatic retries: the follow-up of a submission, ``python -m slurm_apply._job.followup JOB_DIR SUB TOKEN``.

Each submission of a job with ``retries`` left gets a follow-up: on Slurm a one-CPU job that
depends on the array (``--dependency=afterany``), locally the same script run by the local
runner once its tasks have ended. No process waits on the login node. The follow-up

1. builds the job's status with the one status model, and waits (with back-off, up to
   SETTLE_S) until every task of its submission has ended by that model: a task the
   scheduler could not be asked about is never retried blindly;
2. under the manifest lock, decides (:mod:`._retry_plan`) which rows to run again and with
   what limits, writes the retry as a new submission derived from its own, records the
   decision in its own submission, and launches the retry, which gets its own follow-up
   while retries are left.

``cancel()`` marks the manifest first (``stopping.stop_retries``), so a follow-up that has not yet
decided decides nothing, whatever the order in which the two run.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple

from .. import _backends as backends
from .._backends.states import LOST
from .._status.classify import may_do_more
from .._errors import JobTimeoutError
from .retry_plan import ERROR, MEMORY, RETRYABLE, Facts, Plan, decide
from .wait import Pace, statuses
from .._store import layout as jd
from .._store.manifest import (
    GAVE_UP,
    NOTHING,
    RETRIED,
    STOPPED,
    SUPERSEDED,
    Decision,
    Manifest,
    Submission,
    ranges,
)

if TYPE_CHECKING:
    from .handle import SlurmJob
    from .._status.model import JobStatus, TaskStatus

from .._timing import SETTLE_S, WAIT_MAX_SCHEDULER_S, WAIT_SCHEDULER_S


def main(argv: Sequence[str]) -> int:
    job_dir, k, token = Path(argv[0]).absolute(), int(argv[1]), argv[2]
    if jd.job_replaced(job_dir, token):
        print(f"slurm_apply: {job_dir} now holds another job; nothing to retry", flush=True)
        return 0
    from .handle import SlurmJob

    try:
        job = SlurmJob(job_dir)
        _forget_job_environment(backends.get(job.manifest.submissions[k].backend).dialect)
        status, why = settled(job, k)
        decision = _decide(job, k, status, why)
    except Exception as exc:  # say it in the manifest, not only in a log nobody reads
        traceback.print_exc()
        decision = _record(job_dir, k, Decision(GAVE_UP, time.time(), f"the follow-up failed: "
                                                f"{type(exc).__name__}: {exc}"))
    if decision is not None:
        print(f"slurm_apply: submission {k} has ended: {_said(decision)}", flush=True)
    return 0


def _said(decision: Decision) -> str:
    """What the follow-up decided, for its log."""
    what = {RETRIED: f"rows run again as submission {decision.retry}", NOTHING: "nothing to retry",
            STOPPED: "retries were stopped", SUPERSEDED: "a later submission replaces it",
            GAVE_UP: "gave up"}.get(decision.action, decision.action)
    return what + (f" ({decision.detail})" if decision.detail else "")


def _forget_job_environment(dialect: Optional[backends.Dialect]) -> None:
    """Drop the scheduler's variables of the follow-up's own job (on Slurm SLURM_*, but
    SLURM_CONF, which says which cluster): the scheduler would pass them on to the retry's
    tasks, whose job they do not describe."""
    if dialect is None:
        return
    for key in [k for k in os.environ if k.startswith(dialect.JOB_ENV_PREFIXES)
                and k not in dialect.JOB_ENV_KEPT]:
        del os.environ[key]


def settled(job: "SlurmJob", k: int, settle_s: float = SETTLE_S) -> Tuple[Optional["JobStatus"], str]:
    """The job's status once every task of submission ``k`` has ended by the status model, or
    (None, why) when the scheduler did not say so within ``settle_s``. The one wait loop
    (``wait.statuses``) does the waiting, at its pace."""
    def open_tasks(status: "JobStatus") -> List["TaskStatus"]:
        return [d for d in status.task_details if d.submission == k and may_do_more(d.state)]

    last: Optional["JobStatus"] = None
    try:
        for status in statuses(job, Pace(1.0, 30.0, WAIT_SCHEDULER_S, WAIT_MAX_SCHEDULER_S),
                               timeout_s=settle_s, until=lambda s: not open_tasks(s)):
            last = status
    except JobTimeoutError:
        pass
    assert last is not None  # statuses yields one at once
    still = open_tasks(last)
    if not still:
        return last, ""
    return None, (f"after {settle_s / 60:.0f} minutes task {still[0].task} of submission {k} was "
                  f"still {still[0].describe()}; run job.resubmit() once the scheduler answers")


def _decide(job: "SlurmJob", k: int, status: Optional["JobStatus"], why: str) -> Optional[Decision]:
    with jd.manifest_lock(job.job_dir):
        manifest = jd.load_manifest(job.job_dir)
        sub = manifest.submissions[k]
        now = time.time()
        if sub.decision is not None:
            return None  # decided already: this follow-up was started again (a requeue)
        if manifest.retries_stopped:
            return _save(job.job_dir, manifest, sub, Decision(STOPPED, now, manifest.retries_stopped))
        later = manifest.superseded_by(k)  # not one of rows extend() added: those are others
        if later is not None:
            return _save(job.job_dir, manifest, sub, Decision(
                SUPERSEDED, now, f"submission {later} was made after it"))
        if status is None:
            return _save(job.job_dir, manifest, sub, Decision(GAVE_UP, now, why))
        plan = decide(manifest.retry, sub, facts(job, status, sub))
        given_up = {w: ranges(rows) for w, rows in plan.given_up.items()}
        if not plan.retry:  # the rows given up on are listed, each with why
            action = GAVE_UP if given_up else NOTHING
            return _save(job.job_dir, manifest, sub, Decision(action, now, given_up=given_up))
        new = _write_retry(job.job_dir, manifest, sub, plan)
        decision = Decision(RETRIED, now, _summary(plan), retry=new.index, given_up=given_up)
        manifest.replace_submission(dataclasses.replace(sub, decision=decision))
        # Saved by launch with the retry's outcome, in one write: a status never sees the
        # retry written and not yet submitted (which would end the job early).
        _launch(job.job_dir, manifest, new.index, also=_deciding(k, decision))
        return decision


def _deciding(k: int, decision: Decision) -> Callable[[Manifest], None]:
    """The change that records ``decision`` as what submission k's follow-up decided."""
    def change(manifest: Manifest) -> None:
        manifest.replace_submission(dataclasses.replace(manifest.submissions[k], decision=decision))
    return change


def _launch(job_dir: Path, manifest: Manifest, index: int,
            also: Callable[[Manifest], None]) -> None:
    from .._launch import exit_notice
    from .._errors import SubmissionError
    from .._launch.write import launch

    try:
        launch(job_dir, manifest, index, also=also)
    except SubmissionError:
        pass  # recorded in the manifest as a failed submission, which the status shows
    exit_notice.hand_over()  # local tasks started here go on after this process, as they should


def _save(job_dir: Path, manifest: Manifest, sub: Submission, decision: Decision) -> Decision:
    jd.update_manifest(job_dir, _deciding(sub.index, decision))
    return decision


def _record(job_dir: Path, k: int, decision: Decision) -> Optional[Decision]:
    with jd.manifest_lock(job_dir):
        manifest = jd.load_manifest(job_dir)
        if manifest.submissions[k].decision is not None:
            return None
        return _save(job_dir, manifest, manifest.submissions[k], decision)


def _summary(plan: Plan) -> str:
    """A retry in a few words: "1 row OUT_OF_MEMORY; mem 200M -> 400M"."""
    parts = [f"{len(rows)} row{'s' if len(rows) > 1 else ''} {'raised' if why == ERROR else why}"
             for why, rows in plan.retry.items()]
    parts += [f"{key} {old} -> {new}" + (f" (at most {plan.capped[key]})" if key in plan.capped else "")
              for key, (old, new) in plan.raised.items()]
    parts += [f"{len(rows)} not retried: {why}" for why, rows in plan.given_up.items()]
    return "; ".join(parts)


def _write_retry(job_dir: Path, manifest: Manifest, sub: Submission, plan: Plan) -> Submission:
    """Write the retry as a new submission, derived from ``sub`` (added to ``manifest``)."""
    from .._store import table
    from .._launch.write import write_submission

    rows = sorted(r for rs in plan.retry.values() for r in rs)
    new = sub.derive(index=len(manifest.submissions), rows=ranges(rows), n_rows=len(rows),
                     attempt=sub.attempt + 1, retry_of=sub.index, slurm_options=plan.options,
                     retried_for={why: ranges(rs) for why, rs in plan.retry.items()},
                     raised=dict(plan.raised), written_at=time.time())
    return write_submission(job_dir, manifest, table.read(job_dir), new)


def facts(job: "SlurmJob", status: "JobStatus", sub: Submission) -> Facts:
    """What the decision needs of ``sub``, once its tasks have ended: why each of its rows has
    no result, the limits its tasks had and those of its partition."""
    mine = set(sub.row_positions())
    tasks = [d for d in status.task_details if d.submission == sub.index]
    # Rows no task took died with the tasks, of what they died of (most of them).
    died = collections.Counter(d.state for d in tasks if d.state in RETRYABLE).most_common(1)
    rows = {}
    for r in status.missing_rows:
        if r in mine:
            state = status.missing_states.get(r, LOST)
            rows[r] = died[0][0] if state == "NOT_STARTED" and died else state
    rows.update((r, ERROR) for r in status.failed_rows if r in mine)
    backend = backends.get(sub.backend)
    mem_mb: Optional[float] = None
    time_s: Optional[float] = None
    for d in tasks:
        record = job._scheduler_answer(sub.index, d.task)
        if d.state == MEMORY and mem_mb is None:
            mem_mb = _memory_of(record, sub) or backend.memory_limit_in_log(_log(job, sub, d.task))
        if record is not None and time_s is None and record.time_limit:
            time_s = backends.dialect(sub.backend).time_s(record.time_limit)
    limits = backend.limits(sub.slurm_options)
    return Facts(rows=rows, mem_mb=mem_mb, time_s=time_s, limits=limits)


def _memory_of(record: Optional[backends.TaskRecord], sub: Submission) -> Optional[float]:
    """MiB per task the scheduler said its tasks were allowed (it may say per CPU)."""
    dialect = backends.dialect(sub.backend)
    if record is None or not record.req_mem:
        return None
    mb = dialect.mem_mb(record.req_mem)
    return mb * sub.cpus_per_task if mb and dialect.mem_is_per_cpu(record.req_mem) else mb


def _log(job: "SlurmJob", sub: Submission, task: int) -> str:
    return jd.read_tail(job.log_path(sub.index, task))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
