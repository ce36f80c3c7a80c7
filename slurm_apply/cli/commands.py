"""The ``slurm-apply`` command line: look at and act on a job directory from any shell.

Each command rebuilds the handle with :meth:`SlurmJob.from_dir`, calls one method and prints.
Every error the library raises on purpose becomes a :class:`click.ClickException` in one place,
:meth:`_Group.invoke`. Exit status:

    0  success
    1  an error (printed as ``Error: ...``)
    2  a usage error (a bad option or argument)
    3  ``status --check``: the job ended and some rows failed or are missing
  130  ``status --watch`` stopped by Ctrl-C (the job goes on)
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import click

from .. import (InputError, JobStatus, RemoteTraceback, SlurmApplyError, SlurmJob, WaitInterrupted,
                find_job_dirs)

EXIT_ROWS_INCOMPLETE = 3
DIR_PREFIX = "_rslurm_"  # a job directory is _rslurm_<jobname> (the README's "The job directory")

# Where a command records the job directory it opened, so an error can name it in a hint.
_META_DIR = "slurm_apply.job_dir"

# A library message names Python calls; on the command line it names commands and flags.
_CLI_WORDS = (
    ("get_output(errors='keep')", "`slurm-apply output {dir} --errors keep`"),
    ("resubmit(failed=True)", "`slurm-apply resubmit {dir} --failed`"),
    ("resubmit()", "`slurm-apply resubmit {dir}`"),
    ("wait() for them", "wait for them (`slurm-apply status {dir} --watch`)"),
    ("wait for them, cancel() them, or pass force=True",
     "wait for them (`slurm-apply status {dir} --watch`), cancel them (`slurm-apply cancel {dir}`), "
     "or pass --force"),
    ("pass failed=True", "pass --failed"),
    ("pass force=True", "pass --force"),
    ("job.submit() (or `slurm-apply submit DIR`)", "`slurm-apply submit {dir}`"),
    ("See the traceback above;", "See the traceback above (`slurm-apply logs {dir} --failed` shows the "
                                 "task logs);"),
)


def cli_words(message: str, job_dir: str) -> str:
    """The message with Python calls replaced by what to type in a shell."""
    for python, shell in _CLI_WORDS:
        message = message.replace(python, shell.format(dir=job_dir))
    return message


class _Group(click.Group):
    """The command group; the one place where a library error becomes a click error (exit 1)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SlurmApplyError as exc:
            cause = exc.__cause__
            if isinstance(cause, RemoteTraceback):
                # The library's message says "see the traceback above": print it above.
                click.echo("The first failing row's traceback, from the node:", err=True)
                click.echo(cause.tb.rstrip("\n"), err=True)
            where = shlex.quote(ctx.meta.get(_META_DIR, "DIR"))
            message = cli_words(str(exc), where)
            raise click.ClickException(message) from exc


@contextlib.contextmanager
def usage_errors(**options: str) -> Iterator[None]:
    """An InputError about one of the named arguments (its ``argument``) becomes a usage error
    of the option that gave it (exit 2); any other goes on to ``_Group.invoke`` (exit 1)."""
    try:
        yield
    except InputError as exc:
        if exc.argument in options:
            raise click.BadParameter(str(exc), param_hint=options[exc.argument]) from None
        raise


def _open(job_dir: Path) -> SlurmJob:
    """The handle of the job in ``job_dir`` (refuses an unsafe directory)."""
    click.get_current_context().meta[_META_DIR] = str(job_dir)
    return SlurmJob.from_dir(job_dir)


_JOB_DIR = click.argument("job_dir", metavar="DIR", type=click.Path(path_type=Path))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"],
                                           "max_content_width": 100})
@click.version_option(package_name="slurm_apply", prog_name="slurm-apply")
def cli() -> None:
    """Look at and act on slurm_apply jobs: status, output, logs, resubmit, cancel, cleanup.

    DIR is a job directory (`_rslurm_<jobname>`, the `job_dir` of a SlurmJob); it holds all
    of a job's state, so these commands work from any shell, on any day.

    \b
    Examples:
      slurm-apply list
      slurm-apply status _rslurm_fit --watch
      slurm-apply logs _rslurm_fit --failed --tail 20
      slurm-apply output _rslurm_fit -o results.csv

    \b
    Exit status: 0 success, 1 error, 2 usage error,
                 3 `status --check` found failed or missing rows,
                 130 `status --watch` stopped by Ctrl-C (the job goes on).
    """


main = cli


# ---------------------------------------------------------------------------------------------
# status


@cli.command()
@_JOB_DIR
@click.option("--json", "as_json", is_flag=True,
              help="Print the status as one JSON object per line (JobStatus.to_dict()).")
@click.option("--watch", "-w", is_flag=True,
              help="Refresh until no task is queued or running, then stop.")
@click.option("--interval", "interval_s", type=click.FloatRange(min=0.5), default=5.0,
              show_default=True, metavar="SECONDS",
              help="With --watch: seconds between refreshes (each one asks the scheduler).")
@click.option("--check", is_flag=True,
              help="Exit with status 3 if the job has ended with rows failed or missing.")
@click.option("--verbose", "-v", is_flag=True,
              help="One line per task (node, elapsed, memory) instead of tasks grouped by state.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="With --watch: a progress bar on stderr (rows/s, time left, why tasks pend); "
                   "a line every 30 s when stderr is not a terminal.")
def status(job_dir: Path, as_json: bool, watch: bool, interval_s: float, check: bool,
           verbose: bool, progress: bool) -> None:
    """Show how far a job got: rows done, failed and missing, and its tasks by state with reasons.

    \b
    Examples:
      slurm-apply status _rslurm_fit
      slurm-apply status _rslurm_fit --watch --interval 10
      slurm-apply status _rslurm_fit --watch --check && echo "every row has a result"
      slurm-apply status _rslurm_fit --json | jq .rows_failed

    --check makes the exit status 3 when the job has ended and some rows failed or are missing;
    while tasks are still queued or running it is 0, so use it with --watch to wait first.
    """
    job = _open(job_dir)
    show = _Snapshots(as_json=as_json, verbose=verbose, redraw=watch and not as_json
                      and sys.stdout.isatty())
    if watch:
        st = _watch(job, show, interval_s, progress)
    else:
        st = job.get_job_status()
        show(st)
    if check and st.ended and (st.rows_failed or st.rows_missing):
        click.get_current_context().exit(EXIT_ROWS_INCOMPLETE)


def _watch(job: SlurmJob, show: "_Snapshots", interval_s: float, progress: bool) -> JobStatus:
    """Status snapshots on stdout and a progress bar on stderr until the job ends; Ctrl-C
    stops watching (not the job) with one line and exit status 130, as a shell expects."""
    try:
        return job.wait(progress=progress, on_update=show, scheduler_every_s=interval_s,
                        max_scheduler_every_s=max(interval_s, 30.0))
    except InputError:  # not submitted: nothing to watch, show what there is
        st = job.get_job_status()
        show(st)
        return st
    except WaitInterrupted as exc:  # the bar is closed by now, so the line goes below it
        click.echo(exc.cli_line, err=True)
        raise click.exceptions.Exit(130) from None


class _Snapshots:
    """Prints a status: redrawn in place on a terminal, and elsewhere (a log file, a pipe) a
    new snapshot only when something other than the elapsed time changed."""

    def __init__(self, *, as_json: bool, verbose: bool, redraw: bool) -> None:
        self.as_json, self.verbose, self.redraw = as_json, verbose, redraw
        self.shown: Optional[str] = None

    def __call__(self, st: JobStatus) -> None:
        if self.as_json:
            text = key = json.dumps(st.to_dict(), default=str)
        else:
            text = st.text(verbose=self.verbose, cli=True)
            key = st.text(verbose=self.verbose, cli=True, show_elapsed=False)
        if self.redraw:
            click.clear()
            click.echo(text)
        elif key != self.shown:
            if self.shown is not None and not self.as_json:
                click.echo()
            click.echo(text)
        self.shown = key


# ---------------------------------------------------------------------------------------------
# output


@cli.command()
@_JOB_DIR
@click.option("--output", "-o", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here; the suffix picks the format: .csv, .tsv (optionally .gz/.bz2/.xz), "
                   ".parquet or .pq (needs pyarrow), .pkl or .pickle. Default (or -): CSV to stdout.")
@click.option("--errors", type=click.Choice(["raise", "keep"]), default="raise", show_default=True,
              help="raise: fail when any row failed or is missing. keep: write what there is, "
                   "with an `error` column.")
def output(job_dir: Path, out_path: Optional[Path], errors: str) -> None:
    """Write the combined table: the parameters with each row's result as columns.

    \b
    Examples:
      slurm-apply output _rslurm_fit                     # CSV on stdout
      slurm-apply output _rslurm_fit -o results.parquet
      slurm-apply output _rslurm_fit -o partial.pkl --errors keep

    A file is written under a temporary name and renamed into place, so a reader never sees
    half of it.
    """
    job = _open(job_dir)
    if out_path is None or str(out_path) == "-":
        job.write_output(sys.stdout, errors=errors)  # CSV
        return
    try:
        with usage_errors(path="'--output' / '-o'"):
            table = job.write_output(out_path, errors=errors)
    except OSError as exc:
        if isinstance(exc, SlurmApplyError):  # about the job directory, not the file written
            raise
        raise click.FileError(str(out_path), hint=exc.strerror or str(exc)) from None
    click.echo(f"wrote {len(table)} rows x {table.shape[1]} columns to {out_path}", err=True)


# ---------------------------------------------------------------------------------------------
# logs


@cli.command()
@_JOB_DIR
@click.option("--task", "tasks", type=click.IntRange(min=0), multiple=True, metavar="N",
              help="Only this array task (repeat for several).")
@click.option("--submission", "submissions", type=click.IntRange(min=0), multiple=True, metavar="K",
              help="Only this submission: 0 the first run, 1 the first resubmission... (default all).")
@click.option("--failed", is_flag=True,
              help="Only tasks that did not complete (failed, timed out, out of memory, cancelled, "
                   "lost...) or had rows that raised.")
@click.option("--tail", "tail_n", type=click.IntRange(min=1), metavar="N",
              help="Only the last N lines of each log (after --grep).")
@click.option("--grep", "pattern", metavar="REGEX", help="Only lines matching this regular expression.")
def logs(job_dir: Path, tasks: Tuple[int, ...], submissions: Tuple[int, ...], failed: bool,
         tail_n: Optional[int], pattern: Optional[str]) -> None:
    """Print the Slurm output of a job's array tasks (files DIR/logs/s<K>_t<N>.out).

    Each log is introduced by a `==> path <==` line, as `tail` does with several files.

    \b
    Examples:
      slurm-apply logs _rslurm_fit --failed
      slurm-apply logs _rslurm_fit --task 3 --tail 50
      slurm-apply logs _rslurm_fit --grep 'raised|Error'
      slurm-apply logs _rslurm_fit --submission 1 --failed --tail 5
    """
    regex = None
    if pattern is not None:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise click.BadParameter(f"{pattern!r} is not a regular expression: {exc}",
                                     param_hint="'--grep'") from None
    job = _open(job_dir)
    with usage_errors(tasks="'--task'", submissions="'--submission'"):
        chosen = job.task_logs(tasks, submissions, failed=failed)
    if failed and not chosen:
        click.echo("no failed tasks and no rows that raised", err=True)
        return
    shown = 0
    for log in chosen:
        exists = log.path.is_file()
        if not exists and not (tasks or failed):
            continue  # a task that has not started yet: nothing to show, nothing to say
        click.echo(("\n" if shown else "") + f"==> {log.path} <==" + (f"  [{log.note}]" if log.note else ""))
        shown += 1
        if not exists:
            click.echo("(no log file: the task has not started, or never did)")
            continue
        for line in log.lines(grep=regex, tail=tail_n):
            click.echo(line)
    if not shown:
        click.echo("no log files yet", err=True)


# ---------------------------------------------------------------------------------------------
# list


@cli.command("list")
@click.argument("path", default=".", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--depth", type=click.IntRange(min=1), default=2, show_default=True, metavar="N",
              help="How many directory levels below PATH to search.")
@click.option("--no-scheduler", is_flag=True,
              help="Do not ask Slurm: read the job directories only (fast; tasks without an end "
                   "marker show as UNKNOWN).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per job directory and line.")
def list_jobs(path: Path, depth: int, no_scheduler: bool, as_json: bool) -> None:
    """List the job directories under PATH (default: here), one line of status each.

    A job directory is a `_rslurm_*` directory holding a manifest.json. One that cannot be read
    is listed with the reason instead of a status.

    \b
    Examples:
      slurm-apply list
      slurm-apply list ~/projects --depth 3
    """
    found = find_job_dirs(path, depth)
    if not found:
        click.echo(f"no job directories under {path} (searched {depth} level(s) deep)", err=True)
        return
    rows: List[List[str]] = []
    for d in found:
        try:
            st = SlurmJob.from_dir(d).get_job_status(ask_scheduler=not no_scheduler)
        except Exception as exc:  # one broken directory must not hide the others
            err = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            if as_json:
                click.echo(json.dumps({"job_dir": str(d.absolute()), "error": err}))
            rows.append([d.name[len(DIR_PREFIX):], "ERROR", "-", str(d), err])
            continue
        if as_json:
            click.echo(json.dumps({"job_dir": str(d.absolute()), "status": st.to_dict()}, default=str))
        rows.append([st.jobname, st.state, _rows_summary(st), str(d), ""])
    if not as_json:
        for line in _table(["JOB", "STATE", "ROWS", "DIRECTORY", "NOTE"], rows):
            click.echo(line)


def _table(head: List[str], rows: List[List[str]]) -> List[str]:
    """Columns padded to their widest cell, two spaces apart (as the status's task table)."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [head, *rows]]


def _rows_summary(st: JobStatus) -> str:
    text = f"{st.rows_done}/{st.rows_total} done"
    if st.rows_failed:
        text += f", {st.rows_failed} failed"
    if st.rows_missing and st.ended:
        text += f", {st.rows_missing} missing"
    return text

