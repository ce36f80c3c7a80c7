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

import json
import os
import re
import shlex
import tempfile
from collections import deque
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import click

from ._store import layout as jd
from ._errors import InputError, RemoteTraceback, SlurmApplyError, WaitInterrupted
from ._job import SlurmJob
from ._progress import Progress
from ._render import HEALTHY_STATES, interrupted_text, one_line, status_text, table
from ._status import JobStatus
from ._wait import wait

EXIT_ROWS_INCOMPLETE = 3

# The line the worker prints to a task's log for every row that raised.
_ROW_RAISED = re.compile(rb"^slurm_apply: row \d+ raised ")

_FORMATS = {".csv": "csv", ".tsv": "tsv", ".pkl": "pickle", ".pickle": "pickle",
            ".parquet": "parquet", ".pq": "parquet"}
# Compression pandas infers from the file name, for the text and pickle formats.
_COMPRESSIONS = (".gz", ".bz2", ".xz")

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
                      and click.get_text_stream("stdout").isatty())
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
    bar = Progress() if progress else None

    def update(st: JobStatus) -> None:
        show(st)
        if bar is not None:
            bar(st)

    try:
        return wait(job, on_update=update, scheduler_every_s=interval_s,
                    max_scheduler_every_s=max(interval_s, 30.0))
    except InputError:  # not submitted: nothing to watch, show what there is
        st = job.get_job_status()
        show(st)
        return st
    except WaitInterrupted as exc:
        if bar is not None:
            bar.close()  # first, so the line goes below the bar (closing twice is harmless)
        click.echo(interrupted_text(job.jobname, str(job.job_dir), exc.status, cli=True), err=True)
        raise click.exceptions.Exit(130) from None
    finally:
        if bar is not None:
            bar.close()


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
            text = status_text(st, verbose=self.verbose, cli=True)
            key = status_text(st, verbose=self.verbose, cli=True, show_elapsed=False)
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
    fmt = _format_of(out_path) if out_path is not None and str(out_path) != "-" else "csv"
    if fmt == "parquet" and not _have_pyarrow():
        raise click.ClickException(
            "writing Parquet needs pyarrow, which is not installed here: `pip install pyarrow`, "
            "or write .csv or .pkl instead.")
    table = _open(job_dir).get_output(errors=errors)
    if out_path is None or str(out_path) == "-":
        click.echo(table.to_csv(index=_keeps_index(table)), nl=False)
        return
    _writetable(table, out_path, fmt)
    click.echo(f"wrote {len(table)} rows x {table.shape[1]} columns to {out_path}", err=True)


def _format_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in _COMPRESSIONS and _FORMATS.get(suffixes[-2]) != "parquet":
        suffixes.pop()
    fmt = _FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise click.BadParameter(
            f"cannot tell the format of {str(path)!r} from its suffix; use one of "
            f"{', '.join(sorted(_FORMATS))} (a .csv, .tsv or .pkl may end in {', '.join(_COMPRESSIONS)})",
            param_hint="'--output' / '-o'")
    return fmt


def _have_pyarrow() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyarrow") is not None


def _keeps_index(table: Any) -> bool:
    """Write the index only when it says something (not the default 0..n-1)."""
    import pandas as pd

    idx = table.index
    default = isinstance(idx, pd.RangeIndex) and idx.start == 0 and idx.step == 1 and idx.name is None
    return not default


def _writetable(table: Any, path: Path, fmt: str) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    try:
        # The temporary name ends with the real one, so pandas infers the same compression.
        fd, tmp = tempfile.mkstemp(prefix=".", suffix="." + path.name, dir=directory)
    except OSError as exc:
        raise click.FileError(str(path), hint=exc.strerror or str(exc)) from None
    os.close(fd)
    try:
        if fmt == "csv":
            table.to_csv(tmp, index=_keeps_index(table))
        elif fmt == "tsv":
            table.to_csv(tmp, sep="\t", index=_keeps_index(table))
        elif fmt == "pickle":
            table.to_pickle(tmp)
        else:
            try:
                table.to_parquet(tmp, engine="pyarrow")
            except Exception as exc:  # pyarrow's own error types; the message says which column
                raise click.ClickException(
                    f"could not write Parquet: {type(exc).__name__}: {exc}. Parquet needs one type "
                    "per column and string column names; .pkl keeps any Python object.") from exc
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it private; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


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
    chosen = _select_logs(job, tasks, submissions)
    notes: Dict[Tuple[int, int], str] = {}
    if failed:
        chosen, notes = _failed_logs(job, chosen)
        if not chosen:
            click.echo("no failed tasks and no rows that raised", err=True)
            return
    shown = 0
    for sub, task, path in chosen:
        exists = path.is_file()
        if not exists and not (tasks or failed):
            continue  # a task that has not started yet: nothing to show, nothing to say
        note = notes.get((sub, task), "")
        click.echo(("\n" if shown else "") + f"==> {path} <==" + (f"  [{note}]" if note else ""))
        shown += 1
        if not exists:
            click.echo("(no log file: the task has not started, or never did)")
            continue
        for line in _log_lines(path, regex, tail_n):
            click.echo(line)
    if not shown:
        click.echo("no log files yet", err=True)


def _select_logs(job: SlurmJob, tasks: Sequence[int],
                 submissions: Sequence[int]) -> List[Tuple[int, int, Path]]:
    """(submission, task, log path) for the chosen submissions and tasks, in order."""
    subs = job.manifest.submissions
    for k in submissions:
        if k >= len(subs):
            raise click.BadParameter(
                f"the job has {len(subs)} submission(s), numbered 0 to {len(subs) - 1}; got {k}",
                param_hint="'--submission'")
    picked = [s for s in subs if not submissions or s.index in submissions]
    for n in tasks:
        if not any(n < s.n_tasks for s in picked):
            most = max(s.n_tasks for s in picked)
            raise click.BadParameter(
                f"the job's array tasks are numbered 0 to {most - 1}; got {n}", param_hint="'--task'")
    out = []
    for s in picked:
        for t in range(s.n_tasks):
            if not tasks or t in tasks:
                out.append((s.index, t, job.log_path(s.index, t)))
    return out


def _failed_logs(job: SlurmJob, chosen: List[Tuple[int, int, Path]]
                 ) -> Tuple[List[Tuple[int, int, Path]], Dict[Tuple[int, int], str]]:
    """Of ``chosen``, the tasks that did not complete or whose log tells of rows that raised."""
    states = {(t.submission, t.task): t for t in job.get_job_status().task_details}
    keep: List[Tuple[int, int, Path]] = []
    notes: Dict[Tuple[int, int], str] = {}
    for sub, task, path in chosen:
        t = states.get((sub, task))
        if t is None or t.state == "NOT_SUBMITTED":
            continue
        raised = _count_raised(path)
        if t.state in HEALTHY_STATES and not raised:
            continue
        note = f"task {task}: {one_line(t.describe())}"
        if raised:
            note += f", {raised} row(s) raised"
        if len(job.manifest.submissions) > 1:
            note = f"submission {sub} " + note
        keep.append((sub, task, path))
        notes[(sub, task)] = note
    return keep, notes


def _count_raised(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for line in fh if _ROW_RAISED.match(line))
    except OSError:
        return 0


def _log_lines(path: Path, regex: Optional["re.Pattern[str]"], tail_n: Optional[int]) -> Iterator[str]:
    if regex is None and tail_n is not None:
        yield from _tail(path, tail_n)
        return
    kept: "deque[str] | None" = deque(maxlen=tail_n) if tail_n is not None else None
    with open(path, "rb") as fh:
        for raw in fh:
            line = raw.decode(errors="replace").rstrip("\r\n")
            if regex is not None and not regex.search(line):
                continue
            if kept is not None:
                kept.append(line)
            else:
                yield line
    if kept is not None:
        yield from kept


def _tail(path: Path, n: int, block: int = 65536) -> List[str]:
    """The last ``n`` lines, reading backwards from the end (a log can be gigabytes)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        pos = fh.tell()
        data = b""
        while pos > 0 and data.count(b"\n") <= n:
            step = min(block, pos)
            pos -= step
            fh.seek(pos)
            data = fh.read(step) + data
    return data.decode(errors="replace").splitlines()[-n:]


# ---------------------------------------------------------------------------------------------
# resubmit, cancel, cleanup


@cli.command()
@_JOB_DIR
@click.option("--failed", is_flag=True, help="Also rerun the rows that raised (not only the missing ones).")
@click.option("--time", "time_limit", metavar="T", help="New time limit, e.g. 2:00:00 (sbatch --time).")
@click.option("--mem", metavar="M", help="New memory per task, e.g. 8G (sbatch --mem).")
@click.option("--nodes", type=click.IntRange(min=1), metavar="N", help="At most this many array tasks.")
@click.option("--cpus-per-node", type=click.IntRange(min=1), metavar="N", help="Processes per task (--cpus-per-task).")
@click.option("--max-concurrent", type=click.IntRange(min=1), metavar="N", help="At most this many tasks at once.")
@click.option("--option", "-O", "extra", multiple=True, metavar="KEY=VALUE",
              help="Any other sbatch option, e.g. -O partition=long (KEY alone for a flag).")
@click.option("--force", is_flag=True,
              help="Resubmit even while tasks are queued, running or unknown.")
def resubmit(job_dir: Path, failed: bool, time_limit: Optional[str], mem: Optional[str],
             nodes: Optional[int], cpus_per_node: Optional[int], max_concurrent: Optional[int],
             extra: Tuple[str, ...], force: bool) -> None:
    """Run again, as a new array job in the same directory, the rows without a result.

    Options not given keep the previous submission's values (nodes, CPUs, time, memory and
    every other sbatch option, at-once limit, backend). Refuses while tasks are queued,
    running or unknown, unless --force.

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
                 slurm_options=options or None, max_concurrent=max_concurrent, force=force)
    sub = job.manifest.latest
    click.echo(f"resubmitted {sub.n_rows} row(s) of {job.jobname} as submission {sub.index}: "
               f"job {sub.job_id or '?'}, {sub.n_tasks} task(s)")
    click.echo(f"follow it with: slurm-apply status {shlex.quote(str(job_dir))} --watch")


@cli.command()
@_JOB_DIR
@click.option("--local", "local", is_flag=True, help="Run the tasks on this machine instead of Slurm.")
def submit(job_dir: Path, local: bool) -> None:
    """Submit a job written with submit=False (to Slurm, or with --local on this machine).

    \b
    Example:
      slurm-apply submit _rslurm_fit
      slurm-apply submit _rslurm_fit --local
    """
    job = _open(job_dir)
    job.submit(backend="local" if local else None)
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
    job.cancel()
    click.echo(f"cancelled the queued and running tasks of {job.jobname} ({', '.join(job.job_ids)})")


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
    found = _find_job_dirs(path, depth)
    if not found:
        click.echo(f"no job directories under {path} (searched {depth} level(s) deep)", err=True)
        return
    rows: List[List[str]] = []
    for d in found:
        try:
            st = SlurmJob.from_dir(d).get_job_status(ask_scheduler=not no_scheduler)
        except Exception as exc:  # one broken directory must not hide the others
            err = f"{type(exc).__name__}: {one_line(str(exc))}"
            if as_json:
                click.echo(json.dumps({"job_dir": str(d.absolute()), "error": err}))
            rows.append([d.name[len(jd.DIR_PREFIX):], "ERROR", "-", str(d), err])
            continue
        if as_json:
            click.echo(json.dumps({"job_dir": str(d.absolute()), "status": st.to_dict()}, default=str))
        rows.append([st.jobname, st.state, _rows_summary(st), str(d), ""])
    if not as_json:
        for line in table(["JOB", "STATE", "ROWS", "DIRECTORY", "NOTE"], rows):
            click.echo(line)


def _rows_summary(st: JobStatus) -> str:
    text = f"{st.rows_done}/{st.rows_total} done"
    if st.rows_failed:
        text += f", {st.rows_failed} failed"
    if st.rows_missing and st.ended:
        text += f", {st.rows_missing} missing"
    return text


def _find_job_dirs(root: Path, depth: int) -> List[Path]:
    """Every ``_rslurm_*`` directory with a manifest at most ``depth`` levels below ``root``
    (``root`` itself included); job directories are not searched inside."""
    if _is_job_dir(root):
        return [root]
    found: List[Path] = []

    def walk(d: Path, level: int) -> None:
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            try:
                if not e.is_dir(follow_symlinks=False):
                    continue
            except OSError:
                continue
            p = d / e.name
            if _is_job_dir(p):
                found.append(p)
            elif level < depth and not e.name.startswith("."):
                walk(p, level + 1)

    walk(root, 1)
    return found


def _is_job_dir(p: Path) -> bool:
    try:
        return p.name.startswith(jd.DIR_PREFIX) and (p / jd.MANIFEST).is_file()
    except OSError:
        return False

