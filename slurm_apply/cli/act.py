"""The commands that act on a job: resubmit, submit, cancel, cleanup (registered on ``cli``)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import click

from .. import InputError, SlurmJob
from .commands import _JOB_DIR, _open, cli


@cli.command()
@_JOB_DIR
@click.option("--failed", is_flag=True, help="Also rerun the rows that raised (not only the missing ones).")
@click.option("--time", "time_limit", metavar="T", help="New time limit, e.g. 2:00:00 (--time on Slurm).")
@click.option("--mem", metavar="M", help="New memory per task, e.g. 8G (--mem on Slurm).")
@click.option("--nodes", type=click.IntRange(min=1), metavar="N", help="At most this many array tasks.")
@click.option("--cpus-per-node", type=click.IntRange(min=1), metavar="N", help="Processes per task (--cpus-per-task).")
@click.option("--max-concurrent", type=click.IntRange(min=1), metavar="N", help="At most this many tasks at once.")
@click.option("--option", "-O", "extra", multiple=True, metavar="KEY=VALUE",
              help="Any other sbatch option, e.g. -O partition=long (KEY alone for a flag).")
@click.option("--force", is_flag=True,
              help="Resubmit even while tasks are queued, running or unknown: cancel them first.")
@click.option("--backend", metavar="NAME", help="Run them on another backend: slurm, sge or local.")
def resubmit(job_dir: Path, failed: bool, time_limit: Optional[str], mem: Optional[str],
             nodes: Optional[int], cpus_per_node: Optional[int], max_concurrent: Optional[int],
             extra: Tuple[str, ...], force: bool, backend: Optional[str]) -> None:
    """Run again, as a new array job in the same directory, the rows without a result.

    Options not given keep the previous submission's values (nodes, CPUs, time, memory and
    every other sbatch option, at-once limit, backend). Refuses while tasks are queued,
    running or unknown, unless --force (which cancels them first).

    \b
    Examples:
      slurm-apply resubmit _rslurm_fit                        # rows that never finished
      slurm-apply resubmit _rslurm_fit --failed --mem 16G     # and the rows that raised
      slurm-apply resubmit _rslurm_fit --time 4:00:00 -O partition=long
    """
    options: Dict[str, Any] = {}
    for item in extra:
        key, eq, value = item.partition("=")
        if not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE or KEY; got {item!r}", param_hint="'--option'")
        options[key.strip()] = value if eq else True
    if time_limit is not None:
        options["time"] = time_limit
    if mem is not None:
        options["mem"] = mem
    job = _open(job_dir)
    job.resubmit(failed=failed, nodes=nodes, cpus_per_node=cpus_per_node,
                 slurm_options=options or None, max_concurrent=max_concurrent, force=force,
                 backend=backend)
    sub = job.manifest.latest
    click.echo(f"resubmitted {sub.n_rows} row(s) of {job.jobname} as submission {sub.index}: "
               f"job {sub.job_id or '?'}, {sub.n_tasks} task(s)")
    click.echo(f"follow it with: slurm-apply status {shlex.quote(str(job_dir))} --watch")


@cli.command()
@_JOB_DIR
@click.option("--local", "local", is_flag=True, help="Run the tasks on this machine instead of Slurm.")
@click.option("--backend", metavar="NAME",
              help="Submit to this backend (slurm, sge or local) instead of the one it was written for.")
def submit(job_dir: Path, local: bool, backend: Optional[str]) -> None:
    """Submit a job written with submit=False (to its scheduler, or with --local on this machine).

    \b
    Example:
      slurm-apply submit _rslurm_fit
      slurm-apply submit _rslurm_fit --local
      slurm-apply submit _rslurm_fit --backend sge
    """
    if local and backend not in (None, "local"):
        raise click.BadParameter(f"--local and --backend {backend} disagree; give one", param_hint="'--backend'")
    job = _open(job_dir)
    job.submit(backend="local" if local else backend)
    sub = job.manifest.latest
    click.echo(f"submitted {sub.n_rows} row(s) of {job.jobname}: job {sub.job_id}, {sub.n_tasks} task(s)")
    click.echo(f"follow it with: slurm-apply status {shlex.quote(str(job_dir))} --watch")


@cli.command()
@_JOB_DIR
def cancel(job_dir: Path) -> None:
    """Cancel every queued or running task of the job (every submission).

    The rows finished so far stay in DIR; `slurm-apply resubmit DIR` runs the rest later.

    \b
    Example:
      slurm-apply cancel _rslurm_fit
    """
    job = _open(job_dir)
    if not job.job_ids:
        click.echo(f"nothing to cancel: {job.jobname} was never submitted")
        return
    status = job.get_job_status()
    if status.ended:  # nothing queued, running, unknown or about to be retried
        click.echo(f"nothing to cancel: {job.jobname} ({', '.join(job.job_ids)}) has ended, "
                   f"{status.state}; no task is queued or running")
        return
    busy = sum(1 for t in status.task_details if t.active)
    job.cancel()
    retries = " and stopped its automatic retries" if job.manifest.retry.retries else ""
    click.echo(f"cancelled {job.jobname} ({', '.join(job.job_ids)}): {busy} queued, running or "
               f"unknown task(s){retries}")


@cli.command()
@_JOB_DIR
@click.option("--force", is_flag=True, help="Cancel queued or running tasks first instead of refusing.")
def cleanup(job_dir: Path, force: bool) -> None:
    """Delete the job directory, results included: save the output first.

    Refuses while tasks are queued, running or unknown, unless --force (which cancels them).

    \b
    Examples:
      slurm-apply output _rslurm_fit -o results.parquet && slurm-apply cleanup _rslurm_fit
      slurm-apply cleanup _rslurm_fit --force
    """
    job = _open(job_dir)
    job.cleanup_files(force=force)
    click.echo(f"deleted {job.job_dir}")


@cli.command("test")
@_JOB_DIR
@click.argument("row")
@click.option("--fresh", is_flag=True, help="In a new interpreter, as a node starts (default: this one).")
@click.option("--pdb", "use_pdb", is_flag=True, help="On an exception, open pdb where it was raised.")
def test_row(job_dir: Path, row: str, fresh: bool, use_pdb: bool) -> None:
    """Run one row here exactly as a node would, and print what it returned.

    ROW is the row's label in params_df's index (its position for the default index). Same
    payload, packages, constant arguments, row seed and working directory as on the node.

    \b
    Examples:
      slurm-apply test _rslurm_fit 3
      slurm-apply test _rslurm_fit 3 --pdb
    """
    import traceback

    job = _open(job_dir)
    label = _label(job, row)
    try:
        job.position(label)  # a row that does not exist is a usage error, not the row's
    except InputError as exc:
        raise click.BadParameter(str(exc), param_hint="'ROW'") from None
    try:
        value = job.test_row(label, fresh=fresh)
    except Exception as exc:  # the row's own error: shown as the node would log it
        click.echo("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)), err=True)
        if use_pdb and not fresh:
            import pdb

            pdb.post_mortem(exc.__traceback__)
        raise click.ClickException(f"row {label!r} raised {type(exc).__name__}: {exc}") from None
    click.echo(repr(value))


def _label(job: SlurmJob, row: str) -> Any:
    """The index label a command-line ROW names: a position for the default index, else the
    label whose text is ROW."""
    import pandas as pd

    index = job.index
    if isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1:  # the default
        if not row.isdigit():
            raise click.BadParameter(f"the job's rows are numbered 0 to {job.n_rows - 1}; got {row!r}",
                                     param_hint="'ROW'")
        return int(row)
    for label in index:
        if str(label) == row:
            return label
    raise click.BadParameter(f"params_df's index has no label {row!r}", param_hint="'ROW'")
