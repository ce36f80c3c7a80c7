"""The handle on a job: little more than its directory's path, plus what was read from it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union, cast

from .. import _backends as backends
from .._store import layout as jd
from .._backends import Answer, TaskKey, TaskRecord, Unknown
from .._status.classify import UNKNOWN
from .._errors import InputError, JobActiveError, JobDirError, JobTimeoutError, SchedulerError
from .._store.stops import read_stops
from .._timing import WAIT_MAX_POLL_S, WAIT_MAX_SCHEDULER_S, WAIT_POLL_S, WAIT_SCHEDULER_S
from .._status.results import Results, list_record_files
from .._store.params import chunk_bounds
from .rows import RowNames
from .._status.retries import decided_meanwhile
from .._status.missing import in_rows
from .stopping import stop_followups, stop_retries
from .._status.model import JobStatus, Snapshot, build
from .._store.claims import ClaimReader
from .._store.manifest import WRITTEN
from .._store.markers import TaskMarkers, read as read_markers

if TYPE_CHECKING:
    import pandas as pd

    from .logs import TaskLog
    from .._store.manifest import Manifest, Submission

ErrorInfo = Tuple[str, str, str]  # (exception type, message, traceback text)
NOT_ASKED = "the scheduler was not asked (ask_scheduler=False)"


class SlurmJob:
    """A job's handle. Everything it knows is in ``job_dir``; rebuild it anywhere with ``from_dir``.

    Methods
    -------
    get_job_status()   rows done / failed / missing, task states and why
    wait(timeout_s)    block until no task is queued, running or unknown
    get_output()       the parameters table with the results as columns
    write_output(path) the same table written to a file (.csv, .parquet, .pkl, ...)
    task_logs()        the array tasks' logs (all, some, or those that went wrong)
    resubmit(...)      run again only the rows without a result
    extend(new_rows)   add rows to the job, run at once as a new submission
    reduce(fn)         fn of the output table, run on the cluster once the job is done
    cancel()           cancel queued and running tasks
    cleanup_files()    delete the job directory once the results are saved
    """

    def __init__(self, job_dir: Union[str, os.PathLike]) -> None:
        """The handle of the job in ``job_dir``; the same checks as :meth:`from_dir`."""
        self.job_dir = Path(job_dir).absolute()
        jd.check_safe(self.job_dir)
        self._manifest = jd.load_manifest(self.job_dir)
        self._results = Results(self.job_dir, self._manifest.n_rows)
        self._answers: Dict[TaskKey, Answer] = {}  # the scheduler's last answers
        self._names = RowNames(self.job_dir, self._manifest.n_rows)
        self._followups: Dict[int, Answer] = {}  # and about the follow-ups (automatic retries)
        self.scheduler_queries = 0  # how often this handle asked a scheduler (the benchmark counts)

    @classmethod
    def from_dir(cls, job_dir: Union[str, os.PathLike]) -> "SlurmJob":
        """Rebuild the handle of a job from its directory, in any process.

        Refuses a directory owned by another user or writable by group or others: loading its
        pickles would run whatever someone put there.
        """
        return cls(job_dir)

    # -- what was asked -----------------------------------------------------------------------

    @property
    def jobname(self) -> str:
        return self._manifest.jobname

    @property
    def manifest(self) -> "Manifest":
        """The job's manifest as last read (do not modify it)."""
        return self._manifest

    @property
    def n_rows(self) -> int:
        return self._manifest.n_rows

    @property
    def index(self) -> "pd.Index":
        """params_df's index: the labels that name the rows everywhere (read on first use)."""
        return self._names.whole()

    @property
    def job_ids(self) -> List[str]:
        return [s.job_id for s in self._manifest.submissions if s.job_id]

    def __repr__(self) -> str:
        from .._status.render import job_repr

        # From the manifest as last read: a repr never asks the scheduler.
        return job_repr(self.jobname, self.job_ids, self.n_rows, str(self.job_dir))

    def _repr_html_(self) -> str:
        """The job's status as HTML, for a notebook (asks the scheduler, as get_job_status does)."""
        from .._status.render import error_html, status_html

        title = f"SlurmJob {self.job_dir}"
        try:
            return status_html(self.get_job_status(), title=title)
        except Exception as exc:  # a display must show something, and say what went wrong
            return error_html(title, exc)

    def task_logs(self, tasks: Optional[Sequence[int]] = None, submissions: Optional[Sequence[int]] = None,
                  *, failed: bool = False) -> List["TaskLog"]:
        """The output files of the job's array tasks, as :class:`TaskLog` (``.path``,
        ``.lines(grep=None, tail=None)``), by submission and task.

        Parameters
        ----------
        tasks, submissions : sequence of int, optional
            Only these array tasks, of these submissions (0 the first run); None: all.
            A number the job does not have raises :class:`InputError` whose ``argument``
            names the parameter.
        failed : bool
            Only the tasks that did not complete (failed, timed out, out of memory, cancelled,
            lost...) or had rows that raised; each log's ``note`` says which (this reads the
            status, asking the scheduler).
        """
        from .logs import failed_logs, select_logs

        self._reload()
        chosen = select_logs(self, list(tasks or ()), list(submissions or ()))
        return failed_logs(self, chosen) if failed else chosen

    def log_path(self, sub: int, task: int) -> Path:
        return jd.log_path(self.job_dir, sub, task)

    def _reload(self) -> None:
        self._check_exists()
        self._manifest = jd.load_manifest(self.job_dir)
        if self._manifest.n_rows != self._names.n_rows:  # extend() added rows (here or elsewhere)
            self._results.grow(self._manifest.n_rows)
            self._names = RowNames(self.job_dir, self._manifest.n_rows)

    def _check_exists(self) -> None:
        """One clear error for every method once the directory is gone (cleanup_files())."""
        if not self.job_dir.exists():
            raise JobDirError(f"job directory {self.job_dir} no longer exists (cleanup_files() "
                              "deletes it, results included); nothing is left to act on")

    # -- status --------------------------------------------------------------------------------

    def get_job_status(self, *, ask_scheduler: bool = True) -> JobStatus:
        """Rows done, failed, pending and missing, each task's state and why.

        Result files and end markers are read first; the scheduler is asked only about tasks
        without an end marker. With ``ask_scheduler=False`` its last answers are used (tasks it
        was never asked about are UNKNOWN). A scheduler that cannot be asked makes its tasks
        UNKNOWN: never finished, never lost.
        """
        status = build(self._snapshot(ask_scheduler))
        self._chain_facts(status)
        return status

    def _chain_facts(self, status: JobStatus) -> None:
        """What the job waits for and what waits for it (chains; a few small files)."""
        from .._store import chain

        status.after = [f"job {up.get('jobname', '?')} ({up.get('job_dir', '?')})" for up in self._manifest.after]
        if status.after:
            verdict = chain.read_verdict(self.job_dir)
            status.gate = "" if verdict is None else "open" if verdict.open else f"closed: {verdict.why}"
            if verdict is None and status.ended:  # killed, out of time, or its node died
                status.gate = (f"closed: its gate ended without deciding, so it never ran; the gate's "
                               f"log is {chain.gate_log_path(self.job_dir)}")
        status.waited_by = [f"job {d.get('jobname', '?')} ({d['job_dir']})" for d in chain.dependents(self.job_dir)
                            if Path(d["job_dir"]).is_dir()]

    def _snapshot(self, ask: bool, again: bool = True) -> Snapshot:
        self._reload()
        m = self._manifest
        try:
            self._results.refresh(list_record_files(self.job_dir, [s.index for s in m.submissions]))
        except JobDirError:
            # A record of rows this manifest does not have yet: extend() launches its rows,
            # then records them, under the manifest's lock. Once it has, read again (only a
            # record of no row of this job fails twice).
            with jd.manifest_lock(self.job_dir):
                self._reload()
            m = self._manifest
            self._results.refresh(list_record_files(self.job_dir, [s.index for s in m.submissions]))
        markers = {s.index: read_markers(self.job_dir, s.index) for s in m.submissions}
        for s in m.submissions:
            if not s.launched and s.state == "written":
                self._adopt(s, markers[s.index])
        unended = {s.index for s in m.launched() if any(
            not (markers[s.index].get(t) or TaskMarkers()).ended_well for t in range(s.n_tasks))}
        to_ask = [s for s in m.launched() if s.index in unended or self._followup_matters(s)]
        notes = self._ask(to_ask, ask)
        if again and decided_meanwhile(m, self._followups, lambda: jd.load_manifest(self.job_dir)):
            return self._snapshot(ask, again=False)
        return Snapshot(
            manifest=m, markers=markers, answers=self._answers, results=self._results,
            read_log=lambda k, t: jd.read_tail(self.log_path(k, t)),
            log_path=lambda k, t: str(self.log_path(k, t)),
            log_mtime=lambda k, t: jd.mtime(self.log_path(k, t)),
            claims=lambda k: ClaimReader(self.job_dir, k).chains(),
            chunk_bounds=chunk_bounds, notes=notes, labels=self._names.labels_or_none,
            stops=read_stops(self.job_dir, m.launched()), followups=self._followups)

    def _followup_matters(self, sub: "Submission") -> bool:
        """Whether the status needs the scheduler's word on the follow-up of ``sub``, whose tasks
        all ended well: only while it may still retry rows of it, i.e. rows of ``sub`` have no
        result (or raised, with retry_errors). Otherwise, once the tasks are done, nothing waits
        for it, and asking would cost a scheduler query after the job has finished."""
        if not sub.followup or sub.decision is not None:
            return False
        left = in_rows(sub) - self._results.done_rows()
        if not self._manifest.retry.retry_errors:
            left = left - self._results.failed_rows()
        return bool(left)

    def _ask(self, subs: List["Submission"], ask: bool) -> List[str]:
        """Ask each backend about its unfinished submissions; keep the answers."""
        notes: List[str] = []
        by_backend: Dict[str, List["Submission"]] = {}
        for s in subs:
            by_backend.setdefault(s.backend, []).append(s)
        for name, group in by_backend.items():
            backend = backends.get(name)
            if ask or backend.query_is_cheap:
                q = backend.query(self.job_dir, group)
                self.scheduler_queries += q.calls
                self._answers.update(q.answers)
                self._followups.update(q.followups)
                notes.extend(q.notes)
            else:
                for s in group:
                    for t in range(s.n_tasks):
                        self._answers.setdefault((s.index, t), Unknown(NOT_ASKED))
                    self._followups.setdefault(s.index, Unknown(NOT_ASKED))
        return notes

    def _adopt(self, sub: "Submission", markers: Dict[int, TaskMarkers]) -> None:
        """A script written with submit=False and run by hand: learn its job id (in memory;
        reading a status writes nothing), from a task's start marker or from the scheduler."""
        import dataclasses

        job_id = next((m.starts[-1].array_job_id for m in markers.values() if m.starts), None)
        if not job_id:
            self.scheduler_queries += 1
            job_id = backends.get(sub.backend).adopt(self.job_dir, sub)
        if job_id:
            self._manifest.replace_submission(dataclasses.replace(
                sub, job_id=job_id, state="submitted", submitted_by="hand"))

    def _scheduler_answer(self, sub: int, task: int) -> Optional[TaskRecord]:
        """The scheduler's last record of a task (None when it has given none)."""
        answer = self._answers.get((sub, task))
        return answer if isinstance(answer, TaskRecord) else None

    def _unfinished_tasks(self) -> List[Tuple[int, int]]:
        """(submission, task) of every launched task without an end marker: one directory
        listing per submission, the cheap check a wait makes often."""
        return jd.tasks_without_end_marker(self.job_dir, self._manifest.launched())

    # -- waiting -------------------------------------------------------------------------------

    def wait(self, timeout_s: Optional[float] = None, *, progress: bool = True,
             on_update: Optional[Callable[[JobStatus], None]] = None,
             poll_s: float = WAIT_POLL_S, max_poll_s: float = WAIT_MAX_POLL_S,
             scheduler_every_s: float = WAIT_SCHEDULER_S,
             max_scheduler_every_s: float = WAIT_MAX_SCHEDULER_S) -> JobStatus:
        """Block until no task is queued, running or unknown, and no automatic retry may
        follow; return the final status.

        Parameters
        ----------
        timeout_s : float, optional
            Raise JobTimeoutError when the job has not ended after this many seconds.
        progress : bool
            Show progress on stderr: rows done and failed, rows/s, time left and what the
            tasks are doing ("2 pending: Priority"). A widget in Jupyter (with ipywidgets), a
            bar on a terminal, a line every 30 s in a log file. False: nothing.
        on_update : callable, optional
            Called with each new status the wait reads (a :class:`JobStatus`; the first at
            once, the last the one returned), before the progress display shows it: to log
            or show the status your own way (``slurm-apply status --watch`` does).
        poll_s, max_poll_s, scheduler_every_s, max_scheduler_every_s : float
            How often the result files are looked at and the scheduler is asked (see _wait).

        Returns
        -------
        JobStatus
            The final status (``ended`` is True).

        Raises
        ------
        WaitInterrupted
            On Ctrl-C (a KeyboardInterrupt): the job keeps running; its message, one line,
            says how to wait again or cancel, and Jupyter shows it without a traceback.

        A scheduler that cannot be asked does not end the wait: it is asked again with
        back-off, and the wait says so once (a warning of the ``slurm_apply`` logger).
        """
        from .._status.progress import Progress
        from .wait import wait

        self._check_exists()
        shown = Progress() if progress else None

        def update(status: JobStatus) -> None:
            if on_update is not None:
                on_update(status)
            if shown is not None:
                shown(status)

        try:
            return wait(self, timeout_s=timeout_s, on_update=update, poll_s=poll_s,
                        max_poll_s=max_poll_s, scheduler_every_s=scheduler_every_s,
                        max_scheduler_every_s=max_scheduler_every_s)
        finally:
            if shown is not None:
                shown.close()

    # -- results -------------------------------------------------------------------------------

    def get_output(self, outtype: str = "table", errors: str = "raise") -> Union["pd.DataFrame", List[Any]]:
        """Results in ``params_df``'s row order.

        Parameters
        ----------
        outtype : {"table", "raw"}
            "table": the parameters with the result's columns (a dict or Series result becomes
            columns, anything else a ``result`` column). "raw": the list of returned values.
        errors : {"raise", "keep"}
            "raise": if any row failed or is missing, raise RowsFailedError / RowsMissingError
            naming the rows by params_df's labels (the first remote traceback is the
            ``__cause__``). "keep": return what there is, never blocking (while the job runs:
            the rows done so far), with two more columns: ``error``, what went wrong for each
            row (None for good rows), and ``state``, one of done, failed, missing (no task left
            to run it) or pending (a task will still run it); either is named
            ``slurm_apply_error`` / ``slurm_apply_state`` when params or results use the name.
            With ``outtype="raw"`` a row without a value is a :class:`FailedRow` or a
            :class:`MissingRow` (saying why), never a bare None.
        """
        from .._store.records import DamagedFrame

        if outtype not in ("table", "raw"):
            raise InputError(f"outtype must be 'table' or 'raw'; got {outtype!r}")
        if errors not in ("raise", "keep"):
            raise InputError(f"errors must be 'raise' or 'keep'; got {errors!r}")
        try:
            return self._output(outtype, errors)
        except DamagedFrame:
            # A record was damaged on disk after this handle had read (and checked) it: read
            # every record again, checking each, so status and output agree the rows are not done.
            self._read_records_again()
            return self._output(outtype, errors)

    def write_output(self, path: Union[str, "os.PathLike[str]", IO[str]], *,
                     errors: str = "raise") -> "pd.DataFrame":
        """Write the output table (``get_output(errors=errors)``) to a file; return the table.

        The file's suffix picks the format: .csv, .tsv (either may end in .gz, .bz2 or .xz),
        .parquet or .pq (needs pyarrow), .pkl or .pickle (which may be compressed too). The
        index is written when it is not the default 0..n-1. The file is written under a
        temporary name beside it and renamed into place, so a reader never sees half of it.
        A text stream (``sys.stdout``, ``io.StringIO()``) gets CSV.

        The format is checked before anything is read: an unknown suffix raises
        :class:`InputError` with ``argument == "path"``.
        """
        from . import export

        if isinstance(path, (str, os.PathLike)):
            target = Path(path)
            fmt = export.format_of(target)
        elif hasattr(path, "write"):
            fmt = None
        else:
            raise InputError(f"path must be a file name or a text stream; got {type(path).__name__}",
                             argument="path")
        table = cast("pd.DataFrame", self.get_output(errors=errors))  # outtype "table": a DataFrame
        if fmt is None:
            table.to_csv(path, index=export.keeps_index(table))
        else:
            export.write_table(table, target, fmt)
        return table

    def _read_records_again(self) -> None:
        """Forget what was read of the records: the next status reads and checks every frame."""
        self._results = Results(self.job_dir, self._manifest.n_rows)

    def _output(self, outtype: str, errors: str) -> Union["pd.DataFrame", List[Any]]:
        from . import output as _output

        status = self.get_job_status(ask_scheduler=False)
        if status.missing_rows or status.rows_pending:  # only now worth asking: to say why
            status = self.get_job_status()
        if errors == "raise":
            unsubmitted = any(s.state == WRITTEN and not s.launched
                              for s in self._manifest.submissions)
            _output.raise_for_rows(status, self._results, self.labels, unsubmitted=unsubmitted)
        if outtype == "raw":
            return _output.raw(self._results.values(), self._results, status, self.labels)
        from .._store import table

        # The table of the manifest the status was read with (rows may be added meanwhile).
        return _output.table(table.read(self.job_dir, self._manifest), self._results, status,
                             keep_errors=errors == "keep")

    def as_completed(self, timeout_s: Optional[float] = None) -> Iterator[Tuple[Any, Any]]:
        """Yield ``(row label, value)`` as rows finish, until the job has ended: the value
        returned, or a :class:`FailedRow` for a row that raised (a row run again by a
        resubmission may come twice). Walks the same wait loop as :meth:`wait`.

        Examples
        --------
        >>> for label, value in job.as_completed():   # doctest: +SKIP
        ...     print(label, value)
        """
        from .rows import as_completed

        self._check_exists()
        return as_completed(self, timeout_s)

    def test_row(self, row: Any, *, fresh: bool = False) -> Any:
        """Run one row here exactly as a node would (same payload, pkgs, more_args, row seed
        and working directory) and return its value, or raise the row's own exception.

        Parameters
        ----------
        row
            The row's label in params_df's index (its position for the default index).
        fresh : bool, default False
            False runs it in this process, so ``%debug`` and pdb see the exception; True in
            a new interpreter, as a node starts (the exception comes back with the
            interpreter's traceback as its cause).
        """
        from . import testrow as _testrow

        self._check_exists()
        position = self.position(row)
        return (_testrow.run_fresh if fresh else _testrow.run_here)(self.job_dir, position)

    def get_errors(self) -> Dict[Any, ErrorInfo]:
        """{row label: (exception type, message, traceback)} for every row that raised.

        Rows are named by params_df's index labels (positions for the default index); the
        traceback is the text printed on the node.
        """
        status = self.get_job_status(ask_scheduler=False)
        errors = self._results.errors(status.failed_rows)
        return dict(zip(self.labels(errors), errors.values()))

    def position(self, row: Any) -> int:
        """The position of the row labelled ``row`` in params_df."""
        return self._names.position(row)

    def labels(self, positions: Any) -> List[Any]:
        """params_df's index labels of these row positions."""
        return self._names.labels(positions)

    # -- acting on the job ---------------------------------------------------------------------

    def cancel(self) -> None:
        """Cancel every queued or running task of every submission, and stop automatic
        retries (a follow-up that has not yet decided decides nothing)."""
        self._check_exists()
        stop_retries(self.job_dir, "cancel()")
        self._reload()
        by_backend: Dict[str, List["Submission"]] = {}
        for s in self._manifest.launched():
            by_backend.setdefault(s.backend, []).append(s)
        for name, subs in by_backend.items():
            self.scheduler_queries += 1
            backends.get(name).cancel(self.job_dir, subs)

    def _refuse_if_active(self, doing: str, status: Optional[JobStatus] = None) -> JobStatus:
        """Raise JobActiveError if any task is queued, running or unknown."""
        status = status or self.get_job_status()
        busy = [t for t in status.task_details if t.active]
        retrying = [f"automatic retries: {status.retries.detail}"] if status.retries.busy else []
        if busy or retrying:
            listed = ", ".join([f"task {t.task}: {t.describe()}" for t in busy[:5]] + retrying)
            more = f" and {len(busy) - 5} more" if len(busy) > 5 else ""
            why = ("the scheduler could not be asked about some, so they may still be running; "
                   if any(t.state == UNKNOWN for t in busy) else "")
            raise JobActiveError(
                f"refusing to {doing} {self.job_dir}: {len(busy)} task(s) still queued, running or "
                f"unknown ({listed}{more}); {why}wait for them, cancel() them, or pass force=True.")
        return status

    def _refuse_if_needed(self, doing: str) -> None:
        """Raise JobActiveError if a job chained after this one has not ended: its gate reads this
        job's status, and its rows (a reduce()) may read this job's results."""
        from .._store import chain

        waiting = []
        for dep in chain.dependents(self.job_dir):
            if jd.job_replaced(Path(dep["job_dir"]), dep.get("token", "")):
                continue  # deleted or replaced: nothing there reads this job any more
            try:
                state = SlurmJob(dep["job_dir"]).get_job_status()
            except JobDirError:
                continue
            if not state.ended and state.state != "NOT_SUBMITTED":
                waiting.append({**dep, "state": state.state})
        if waiting:
            first = waiting[0]
            listed = ", ".join(f"job {d.get('jobname', '?')} ({d['job_dir']}, {d['state']})" for d in waiting)
            raise JobActiveError(
                f"refusing to {doing} {self.job_dir}: {listed} runs after it (after=) and has not "
                "ended: its gate reads this job's status, and its rows may read this job's results. "
                f"Wait for it, cancel it first (SlurmJob.from_dir({first['job_dir']!r}).cancel() in Python, "
                f"`slurm-apply cancel {first['job_dir']}` in a shell), or pass force=True (then its gate finds "
                "this job deleted, and it never runs).")

    def cleanup_files(self, force: bool = False) -> None:
        """Delete the job directory. Refuses while tasks are queued, running or unknown, or while
        a job chained after it (``after=``) has not ended, unless ``force`` (which cancels this
        job's tasks first; a dependent's gate then finds it deleted and never runs it)."""
        status = self.get_job_status()
        if status.state != "NOT_SUBMITTED" and not force:
            self._refuse_if_active("delete", status)
        if not force:
            self._refuse_if_needed("delete")
        if not status.ended and status.state != "NOT_SUBMITTED":
            self._stop("delete")
        else:
            stop_followups(self)
        jd.remove_tree(self.job_dir)

    def _stop(self, doing: str, timeout_s: float = 60) -> None:
        """For ``force=True``: cancel, and wait for the tasks to stop writing. Raises when the
        cancel fails or the tasks do not stop in time: then nothing more is done (``doing``)."""
        try:
            self.cancel()
        except SchedulerError as exc:
            raise SchedulerError(f"force=True could not cancel the tasks of {self.job_dir}, so it "
                                 f"did not {doing} it: {exc}") from None
        try:
            self.wait(timeout_s=timeout_s, progress=False)
        except JobTimeoutError:
            raise JobActiveError(f"force=True cancelled the tasks of {self.job_dir}, but they had not "
                                 f"stopped after {timeout_s:.0f} s, so it did not {doing} it; look "
                                 f"with `slurm-apply status {self.job_dir}` and try again") from None

    def resubmit(self, *, failed: bool = False, rows: Any = None, nodes: Optional[int] = None,
                 cpus_per_node: Optional[int] = None, slurm_options: Optional[Dict[str, Any]] = None,
                 max_concurrent: Optional[int] = None, backend: Optional[str] = None,
                 submit: bool = True, force: bool = False) -> "SlurmJob":
        """Run rows again, as a new array job in the same directory.

        Parameters
        ----------
        failed : bool, default False
            Also run the rows that raised (by default only rows without a result run again).
        rows : optional
            Exactly these rows instead: row positions (ints), a boolean mask (one per row) or
            a pandas Index of params_df's labels, e.g. ``out.index[out.accuracy < 0.5]``.
        nodes, cpus_per_node, max_concurrent, backend : optional
            New settings; those not given are the previous submission's.
        slurm_options : dict, optional
            Merged over the previous submission's options.
        force : bool, default False
            Resubmit even while tasks are queued, running or unknown: they are cancelled
            first (and waited for, up to a minute), so their unfinished rows run again here.
        """
        from .resubmit import resubmit

        self._check_exists()
        resubmit(self, failed=failed, rows=rows, nodes=nodes, cpus_per_node=cpus_per_node,
                 slurm_options=slurm_options, max_concurrent=max_concurrent, backend=backend,
                 submit=submit, force=force)
        self._reload()
        return self

    def extend(self, new_rows: "pd.DataFrame") -> "SlurmJob":
        """Add rows to the job and run them at once, as a new submission in the same directory,
        with the job's function, objects and settings (those of its first submission).

        Works while the job runs (its running rows go on; no row runs twice) and after it ended.
        Everything covers the added rows: ``get_output()`` returns every row in the order added,
        and the status, automatic retries, ``resubmit()``, ``test_row()`` and
        ``as_completed()`` (which yields rows added while it runs) take them as any other.

        Parameters
        ----------
        new_rows : pandas.DataFrame
            The job's columns (in any order), each of the job's dtype or one that converts to
            it without changing a value. With the default index (0..n-1) the rows take the
            next positions; otherwise their labels must name no row of the job. Each row's seed
            derives from its position in the whole job, so a job grown in rounds draws the
            numbers the same rows given in one call would.

        Raises
        ------
        InputError
            (``argument == "new_rows"``) Not a DataFrame, no rows, other columns, dtypes that
            do not convert, labels already in use: checked before anything is written.
        SubmissionError
            The rows were added but the scheduler refused them: ``resubmit()`` runs them.
        """
        from .extend import extend

        self._check_exists()
        extend(self, new_rows)
        self._reload()
        return self

    def reduce(self, fn: Callable[[Any], Any], **options: Any) -> "SlurmJob":
        """Run ``fn(output)`` once on the cluster after this job, where ``output`` is this job's
        ``get_output()`` table; return the handle of that one-call job, whose
        ``get_output()`` is fn's value. It is queued at once (``after=`` this
        job): no waiting here. ``options`` are slurm_call's (``slurm_options``, ``jobname``,
        ``add_objects``, ...); its directory goes beside this job's unless ``job_dir`` is given.
        If rows of this job end failed or missing, fn never runs, and the reducing job's status
        says which."""
        # The public verb (what the command line uses too): a job handle makes a new job only
        # through the package's front door.
        from .. import slurm_call
        from .reduce import Reduction, reduce_options

        self._check_exists()
        subs = self._manifest.submissions
        opts = reduce_options(self.job_dir, subs[-1].backend if subs else "auto", options)
        return ReducedJob(slurm_call(Reduction(fn, self.job_dir), **opts).job_dir)

    def submit(self, backend: Optional[str] = None) -> "SlurmJob":
        """Submit a job written with ``submit=False``: to the backend it was written for, or
        to ``backend`` ("local" runs its tasks on this machine). A job written for another
        scheduler gets its script written again in this one's forms, or is refused, saying
        which of its options this one does not take."""
        from .resubmit import submit

        self._check_exists()
        submit(self, backend)
        self._reload()
        return self


class ReducedJob(SlurmJob):
    """The handle ``reduce()`` returns: a one-call job whose output is the call's value."""

    def get_output(self, outtype: str = "value", errors: str = "raise") -> Any:
        """fn's value (``outtype="value"``); "table" and "raw" as for any job."""
        if outtype != "value":
            return super().get_output(outtype, errors)
        return cast(List[Any], super().get_output("raw", errors))[0]
