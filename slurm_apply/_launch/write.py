"""Writing a submission (rows in chunks, the array script) and handing it to its backend.

Shared by the first run and by every resubmission.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Tuple

from .. import _backends as backends
from .._store import layout as jd
from .._store import params, table
from . import exit_notice, script as _script
from .._errors import SubmissionError
from .._log import logger
from .._store.manifest import FAILED, SUBMITTED, Manifest, Submission

if TYPE_CHECKING:
    import pandas as pd

# Chunks per submission, whatever rows_per_chunk asks: each is a claim file on a shared file
# system, and a process lists them all once it has run out of its own.
MAX_CHUNKS = 10_000
# A follow-up reads the status, and when it retries, the parameter table to write the rows
# again: a base for Python, pandas and the status, plus room for the table several times over.
FOLLOWUP_BASE_MB = 512
FOLLOWUP_TIME = "00:15:00"  # it waits up to 7 minutes for a scheduler that does not answer
# A chain's gate starts once the upstream jobs it knew of have ended; it may then wait for an
# automatic retry they launched meanwhile (_job/gate.py), so it may take long: a week, or the
# partition's most.
GATE_TIME_S = 7 * 86400.0


def plan(n_rows: int, nodes: int, cpus: int, max_array_size: Optional[int],
         rows_per_chunk: Optional[int] = None) -> Tuple[int, int]:
    """(array tasks, chunks) for this many rows.

    No more tasks than rows need, nor than the cluster's MaxArraySize allows, nor than there
    are chunks (a task without a chunk would start only to find nothing to do). Rows go in 16
    chunks per process (one row per chunk for small tables): small enough that idle processes
    can even out uneven rows, few enough that claiming them (a file create each, about half a
    millisecond on a busy file system) costs nothing next to the rows. Never more than
    MAX_CHUNKS, even with ``rows_per_chunk``.
    """
    n_tasks = max(1, min(nodes, -(-n_rows // cpus)))
    if max_array_size is not None:
        n_tasks = min(n_tasks, max_array_size)
    if rows_per_chunk:
        n_chunks = -(-n_rows // rows_per_chunk)
    else:
        n_chunks = 16 * n_tasks * cpus
    n_chunks = max(1, min(n_chunks, n_rows, MAX_CHUNKS))
    return min(n_tasks, n_chunks), n_chunks


def caller_pythonpath() -> Optional[str]:
    """The directory of the running script, which Python put first on sys.path; a node started
    with ``-m`` would not have it, and f may come from a module beside the script."""
    first = sys.path[0] if sys.path else ""
    if first and os.path.isdir(first):
        return os.path.abspath(first)
    return None


def write_submission(job_dir: Path, manifest: Manifest, df: "pd.DataFrame", sub: Submission,
                     first_row: Optional[int] = None) -> Submission:
    """Write a new submission's rows and script and add it to ``manifest`` (not yet saved).

    ``sub`` says what to run (rows, nodes, cpus, options, backend); the number of tasks and
    chunks are planned here, within the backend's limit on array size. ``df`` is the whole
    table, or with ``first_row`` only the submission's rows, the first of them being row
    ``first_row`` of the job (the rows extend() adds, which the table does not hold yet).
    """
    max_array = backends.get(sub.backend).max_array_size()
    n_tasks, n_chunks = plan(sub.n_rows, sub.nodes, sub.cpus_per_task, max_array,
                             manifest.rows_per_chunk)
    sub = dataclasses.replace(sub, n_tasks=n_tasks, n_chunks=n_chunks, script=jd.script_name(sub.index),
                              written_at=time.time())
    rows = None if first_row is not None or sub.rows == ((0, manifest.n_rows),) else sub.row_positions()
    jd.make_submission_dirs(job_dir, sub.index)
    if sub.max_failures is not None:
        from .._store import stops

        stops.prepare(job_dir, sub.index)
    params.write_params_bin(jd.params_bin(job_dir, sub.index),
                            table.encode_chunks(df, rows, n_chunks, first=first_row or 0))
    _write_array_script(job_dir, manifest, sub)
    if manifest.wants_followup(sub):
        sub = dataclasses.replace(sub, followup=_write_followup(job_dir, manifest, sub))
    manifest.submissions.append(sub)
    return sub


def _write_array_script(job_dir: Path, manifest: Manifest, sub: Submission) -> None:
    script = _script.render(
        dialect=backends.dialect(sub.backend), jobname=manifest.jobname, n_tasks=sub.n_tasks,
        cpus_per_task=sub.cpus_per_task, log=functools.partial(jd.log_pattern, job_dir, sub.index),
        options=sub.slurm_options,
        python=manifest.python, job_dir=job_dir, sub=sub.index, token=manifest.token,
        workdir=Path(manifest.workdir), pythonpath=manifest.pythonpath,
        max_concurrent=sub.max_concurrent, setup=sub.setup,
    )
    jd.write_text(jd.script_path(job_dir, sub.script), script, mode=0o700)


def rewrite_scripts(job_dir: Path, manifest: Manifest, sub: Submission) -> None:
    """Write a written (not launched) submission's scripts again, in the dialect of the backend
    it now records: a job written for one scheduler and submitted to another. Its options must
    already be checked against that dialect; its tasks and chunks stay as planned, so a backend
    whose arrays cannot hold that many tasks is refused."""
    most = backends.get(sub.backend).max_array_size()
    if most is not None and sub.n_tasks > most:
        raise SubmissionError(f"submission {sub.index} of {manifest.jobname} has {sub.n_tasks} array "
                              f"tasks, more than the {sub.backend} backend's arrays hold ({most}); "
                              f"write it again with backend={sub.backend!r}")
    _write_array_script(job_dir, manifest, sub)
    if sub.followup:
        _write_followup(job_dir, manifest, sub)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _write_followup(job_dir: Path, manifest: Manifest, sub: Submission) -> str:
    """Write the script that retries the submission's rows whose task died; return its name."""
    # The follow-up reads the table back (s0's chunks, or params.pkl in format 2): its size on disk.
    added = [jd.params_bin(job_dir, s.index) for s in [*manifest.submissions, sub] if s.added]
    table_mb = sum(_size(p) for p in [*jd.table_paths(job_dir), *added]) / 2**20
    mem_mb = FOLLOWUP_BASE_MB + 256 * int(4 * table_mb / 256 + 1)
    name = jd.followup_script_name(sub.index)
    script = _script.render_followup(
        dialect=backends.dialect(sub.backend), jobname=manifest.jobname, log=jd.followup_log_path(job_dir, sub.index),
        options=sub.slurm_options, python=manifest.python, job_dir=job_dir, sub=sub.index,
        token=manifest.token, workdir=Path(manifest.workdir), pythonpath=manifest.pythonpath,
        setup=sub.setup, mem=f"{mem_mb}M", time=FOLLOWUP_TIME)
    jd.write_text(jd.script_path(job_dir, name), script, mode=0o700)
    return name


def write_gate(job_dir: Path, manifest: Manifest, sub: Submission) -> Submission:
    """Write the gate of ``sub`` (chains: it decides, once the upstream jobs have ended, whether
    ``sub`` may run; ``python -m slurm_apply._job.gate``); return ``sub`` naming it."""
    from .._store import chain

    dialect = backends.dialect(sub.backend)
    most = backends.get(sub.backend).limits(sub.slurm_options).max_time_s
    seconds = min(GATE_TIME_S, most) if most else GATE_TIME_S
    script = _script.render_followup(
        dialect=dialect, jobname=manifest.jobname, log=chain.gate_log_path(job_dir),
        options=sub.slurm_options, python=manifest.python, job_dir=job_dir, sub=sub.index,
        token=manifest.token, workdir=Path(manifest.workdir), pythonpath=manifest.pythonpath,
        setup=sub.setup, mem=f"{FOLLOWUP_BASE_MB}M", time=dialect.time_text(seconds),
        module="slurm_apply._job.gate", kind="gate",
        what="lets it run once every row of the jobs it runs after is done")
    jd.write_text(jd.script_path(job_dir, chain.GATE_SCRIPT), script, mode=0o700)
    return dataclasses.replace(sub, gate=chain.GATE_SCRIPT)


def launch(job_dir: Path, manifest: Manifest, index: int,
           also: Optional[Callable[[Manifest], None]] = None,
           upstream: Sequence[str] = ()) -> Submission:
    """Hand a written submission to its backend and record the outcome in the manifest.

    ``manifest.submissions[index]`` is what to launch (it need not be saved yet); ``also``, if
    given, is a change saved in the same write as the outcome. Each save is a read-modify-write
    of the manifest on disk (``update_manifest``), and the manifest lock is held from the
    submission to the last save: a cancel() waits for the job id it has to cancel, and nothing
    another process decided meanwhile is lost. ``manifest`` is brought up to date with what
    was saved.

    A refusal, or a scheduler that did not answer, is recorded as a failed submission before
    SubmissionError goes up. A submission with a gate (chains) is handed over with it:
    ``upstream`` are the job ids the gate starts after.
    """
    sub = manifest.submissions[index]
    backend = backends.get(sub.backend)
    notice = backend.launch_notice(sub)
    if notice:
        logger.info(notice)
    with jd.manifest_lock(job_dir):
        try:
            gate_id: Optional[str] = None
            if sub.gate:
                job_id, gate_id = backend.submit_gated(job_dir, sub, upstream)
            else:
                job_id = backend.submit(job_dir, sub)
        except SubmissionError as exc:
            _record(job_dir, manifest, dataclasses.replace(sub, state=FAILED, error=str(exc)), also)
            raise
        sub = dataclasses.replace(sub, state=SUBMITTED, job_id=job_id, gate_id=gate_id,
                                  submitted_at=time.time())
        if backend.tasks_outlive_caller:
            exit_notice.remember(job_dir, sub)  # to say at exit if its tasks still run
        _record(job_dir, manifest, sub, also)
        if sub.followup:
            sub = _launch_followup(job_dir, manifest, backend, sub)
    return sub


# What launching a submission decides of it; the rest of a saved submission is left as found.
_LAUNCH_FIELDS = ("backend", "state", "error", "job_id", "submitted_at", "followup_id", "followup_error",
                  "gate", "gate_id")


def _record(job_dir: Path, manifest: Manifest, sub: Submission,
            also: Optional[Callable[[Manifest], None]] = None) -> None:
    """Save the launch's outcome for ``sub`` (and the change ``also``) into the manifest on
    disk: the whole submission if it is not saved yet, else only what launching it decides.
    ``manifest`` is brought up to date with what was saved."""
    def change(m: Manifest) -> None:
        if also is not None:
            also(m)
        if sub.index < len(m.submissions):
            saved = m.submissions[sub.index]
            m.put_submission(dataclasses.replace(saved, **{k: getattr(sub, k) for k in _LAUNCH_FIELDS}))
        else:
            m.put_submission(sub)

    saved = jd.update_manifest(job_dir, change)
    manifest.__dict__.update(saved.__dict__)


def _launch_followup(job_dir: Path, manifest: Manifest, backend: "backends.Backend",
                     sub: Submission) -> Submission:
    """Arrange the submission's follow-up. The array runs either way: a follow-up that cannot
    be submitted turns automatic retries off for it, and says so."""
    try:
        sub = dataclasses.replace(sub, followup_id=backend.submit_followup(job_dir, sub))
    except SubmissionError as exc:
        sub = dataclasses.replace(sub, followup_error=str(exc))
        logger.warning("rows of %s whose task dies will not be retried automatically: its "
                       "follow-up job could not be submitted (%s)", manifest.jobname, exc)
    _record(job_dir, manifest, sub)
    return sub
