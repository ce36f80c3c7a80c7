"""The handle on a job: little more than its directory's path, plus a cache of what was read."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

from . import _jobdir as jd
from . import _slurm
from ._errors import (InputError, JobActiveError, JobTimeoutError, RemoteTraceback,
                      RowsFailedError, RowsMissingError)
from ._status import ACTIVE_STATES, NOT_FINISHED, JobStatus, TaskStatus, classify, compress_rows

if TYPE_CHECKING:
    import pandas as pd

ErrorInfo = Tuple[str, str, str]  # (exception type, message, traceback text)


class _Results:
    """Every row's outcome across all submissions, read incrementally from the record files.

    A later submission's record of a row replaces an earlier one's, so each row appears once.
    """

    def __init__(self) -> None:
        self.offsets: Dict[Path, int] = {}
        self.done: Dict[int, Tuple[int, Any]] = {}
        self.errors: Dict[int, Tuple[int, ErrorInfo]] = {}
        self.max_sub = 0

    def refresh(self, job_dir: Path, n_subs: int) -> None:
        for sub in range(n_subs):
            for path in jd.list_result_files(job_dir, sub):
                start = self.offsets.get(path, 0)
                end, batches = jd.read_batches(path, start)
                self.offsets[path] = end
                for rows, values, errs in batches:
                    self._add(sub, rows, values, errs)

    def _add(self, sub: int, rows: List[int], values: List[Any], errs: Dict[int, ErrorInfo]) -> None:
        done, errors = self.done, self.errors
        if sub >= self.max_sub:  # nothing newer was read: these rows win outright (fast path)
            self.max_sub = sub
            done.update(zip(rows, ((sub, v) for v in values)))
            if errors:
                for r in rows:
                    errors.pop(r, None)
        else:
            for r, v in zip(rows, values):
                if r in done and done[r][0] > sub:
                    continue
                if r in errors and errors[r][0] <= sub:
                    del errors[r]
                done[r] = (sub, v)
        for r, info in errs.items():
            if r in done and done[r][0] >= sub:
                continue
            done.pop(r, None)
            errors[r] = (sub, info)


class SlurmJob:
    """A job's handle. Everything it knows is in ``job_dir``; rebuild it anywhere with ``from_dir``.

    Methods
    -------
    get_job_status()   rows done / failed / missing, task states and why
    wait(timeout_s)    block until no task is queued or running
    get_output()       the parameters table with the results as columns
    resubmit(...)      run again only the rows without a result
    cancel()           cancel queued and running tasks
    cleanup_files()    delete the job directory once the results are saved
    """

    def __init__(self, job_dir: Union[str, os.PathLike]) -> None:
        self.job_dir = Path(job_dir).absolute()
        self._manifest = jd.load_manifest(self.job_dir)
        self._results = _Results()
        self.scheduler_queries = 0  # how often this handle asked Slurm (the benchmark counts them)

    @classmethod
    def from_dir(cls, job_dir: Union[str, os.PathLike]) -> "SlurmJob":
        """Rebuild the handle of a job from its directory, in any process.

        Refuses a directory owned by another user or writable by group or others: loading its
        pickles would run whatever someone put there.
        """
        path = Path(job_dir).absolute()
        jd.check_safe(path)
        return cls(path)

    # -- what was asked -----------------------------------------------------------------------

    @property
    def jobname(self) -> str:
        return str(self._manifest["jobname"])

    @property
    def manifest(self) -> Dict[str, Any]:
        """The job's manifest as last read (a copy is not made: do not modify it)."""
        return self._manifest

    @property
    def n_rows(self) -> int:
        return int(self._manifest["n_rows"])

    @property
    def job_ids(self) -> List[str]:
        return [s["job_id"] for s in self._manifest["submissions"] if s.get("job_id")]

    def __repr__(self) -> str:
        return f"SlurmJob({str(self.job_dir)!r})"

    def _reload(self) -> None:
        self._manifest = jd.load_manifest(self.job_dir)

    # -- status --------------------------------------------------------------------------------

    def _adopt_hand_submission(self, sub: int, info: Dict[str, Any],
                               markers: Dict[Tuple[int, str], Dict[str, Any]]) -> None:
        """A script written with submit=False and run with sbatch by hand: learn its job id."""
        job_id = None
        for (task, kind), m in markers.items():
            if kind == "start" and m.get("starts"):
                job_id = m["starts"][-1].get("array_job_id")
                break
        if job_id is None and info.get("backend") == "slurm" and _slurm.available():
            self.scheduler_queries += 1
            job_id = _slurm.find_array_job(self.jobname, str(self.job_dir / info["script"]))
        if job_id:
            with jd.manifest_lock(self.job_dir):
                self._reload()
                live = self._manifest["submissions"][sub]
                if not live.get("job_id"):
                    live.update(job_id=job_id, state="submitted", submitted_at=time.time(),
                                submitted_by="hand")
                    jd.write_json(self.job_dir / jd.MANIFEST, self._manifest)
            info.update(self._manifest["submissions"][sub])

    def _scheduler_records(self, subs: Sequence[Dict[str, Any]], ask_slurm: bool) -> Dict[Tuple[int, int], Any]:
        """{(submission, task): TaskRecord} for the given submissions, from Slurm (when
        ``ask_slurm``) or from the local runner's state file (always: it is a local read)."""
        out: Dict[Tuple[int, int], Any] = {}
        slurm_subs = {s["job_id"]: s["index"] for s in subs if s.get("job_id") and s["backend"] == "slurm"}
        if ask_slurm and slurm_subs and _slurm.available():
            self.scheduler_queries += 1
            records = _slurm.sacct(list(slurm_subs))
            self._add_records(out, slurm_subs, records or [])
            # No accounting, or tasks sacct has not recorded yet (a held or just-queued array
            # has no accounting record): ask the controller.
            if records is None or any(
                    (s["index"], t) not in out for s in subs if s["index"] in slurm_subs.values()
                    for t in range(s["n_tasks"])):
                self.scheduler_queries += 1
                self._add_records(out, slurm_subs, _slurm.squeue(list(slurm_subs)))
        from . import _local

        for s in subs:
            if s.get("job_id") and s["backend"] == "local":
                for t, st in _local.read_state(self.job_dir, s["index"])["tasks"].items():
                    out[(s["index"], int(t))] = _slurm.TaskRecord(
                        s["job_id"], int(t), st["state"],
                        exit_code=f"{st.get('exit_code', '')}:0" if "exit_code" in st else "")
        return out

    @staticmethod
    def _add_records(out: Dict[Tuple[int, int], Any], subs: Dict[str, int], records: List[Any]) -> None:
        for rec in records:
            sub = subs.get(rec.array_job_id)
            if sub is None:
                continue
            for task in ([rec.task] if rec.task is not None else rec.pending_tasks):
                out.setdefault((sub, task), rec)

    def get_job_status(self, *, ask_scheduler: bool = True) -> JobStatus:
        """Rows done, failed and missing, each task's state and the reason for anything abnormal.

        Result files are read first; the scheduler is asked only about tasks that have not
        written their end marker (``sacct`` where the cluster keeps accounting, else ``squeue``),
        and a task's log explains a death the scheduler no longer remembers.
        """
        self._reload()
        subs = self._manifest["submissions"]
        self._results.refresh(self.job_dir, len(subs))
        markers = {s["index"]: jd.read_markers(self.job_dir, s["index"]) for s in subs}
        for s in subs:
            if not s.get("job_id") and s["state"] == "written":
                self._adopt_hand_submission(s["index"], s, markers[s["index"]])
        unfinished = [s for s in subs if s.get("job_id") and any(
            not (markers[s["index"]].get((t, "done")) or {}).get("ok") for t in range(s["n_tasks"]))]
        records = self._scheduler_records(unfinished, ask_scheduler) if unfinished else {}
        return self._build_status(subs, markers, records, asked=ask_scheduler)

    def _build_status(self, subs: List[Dict[str, Any]], markers: Dict[int, Dict],
                      records: Dict[Tuple[int, int], Any], asked: bool) -> JobStatus:
        details: List[TaskStatus] = []
        for s in subs:
            k = s["index"]
            for t in range(s["n_tasks"]):
                start, done = markers[k].get((t, "start")), markers[k].get((t, "done"))
                rec = records.get((k, t))
                log = jd.log_path(self.job_dir, k, t)
                needs_log = not (done and done.get("ok")) and (rec is None or rec.state not in ACTIVE_STATES)
                log_text = _read_tail(log) if needs_log and s.get("job_id") else ""
                if s.get("job_id") and not asked and rec is None and not (done and done.get("ok")) \
                        and s["backend"] == "slurm":
                    state, reason = ("RUNNING" if start else "PENDING"), "not asked the scheduler"
                else:
                    state, reason = classify(start=start, done=done, record=rec, log_text=log_text,
                                             submitted=bool(s.get("job_id")))
                if state == "NOT_SUBMITTED" and s.get("state") == "failed":
                    reason = s.get("error", "")
                node = ""
                if start and start.get("starts"):
                    node = start["starts"][-1].get("node", "")
                if done and done.get("node"):
                    node = done["node"]
                details.append(TaskStatus(
                    submission=k, task=t, state=state, reason=reason, node=node or (rec.node_list if rec else ""),
                    elapsed=(rec.elapsed if rec else "") or _elapsed(done), max_rss=rec.max_rss if rec else "",
                    job_id=str(s.get("job_id") or ""), log=str(log)))
        done_rows = self._results.done
        err_rows = self._results.errors
        n = self.n_rows
        missing = [r for r in range(n) if r not in done_rows and r not in err_rows] \
            if len(done_rows) + len(err_rows) < n else []
        active = any(d.state in ACTIVE_STATES for d in details)
        ended = not active
        latest = subs[-1]["index"] if subs else 0
        tasks = {d.task: d.state for d in details if d.submission == latest}
        reasons = {d.task: d.reason for d in details if d.submission == latest and d.reason}
        # Why rows are missing is worth working out (it reads every claim) only once some task
        # has ended without finishing, or the job is over; until then they are simply not done.
        abnormal = any(d.state not in ACTIVE_STATES and d.state != "COMPLETED" for d in details)
        missing_reasons = self._why_missing(missing, subs, details) if missing and (abnormal or not active) else {}
        first_error = ""
        if err_rows:
            r0 = min(err_rows)
            etype, emsg, _ = err_rows[r0][1]
            first_error = f"row {r0}: {etype}: {emsg}"[:300]
        completed = not missing and ended
        if subs and not any(s.get("job_id") for s in subs):
            state = "NOT_SUBMITTED"
        elif active:
            state = "RUNNING" if any(d.state == "RUNNING" for d in details) else "PENDING"
        elif missing or err_rows:
            state = "FAILED" if not missing else "INCOMPLETE"
        else:
            state = "COMPLETED"
        return JobStatus(
            jobname=self.jobname, job_dir=str(self.job_dir), state=state, completed=completed,
            ended=ended and any(s.get("job_id") for s in subs), rows_total=n,
            rows_done=len(done_rows), rows_failed=len(err_rows), rows_missing=len(missing),
            tasks=tasks, reasons=reasons, task_details=details, failed_rows=sorted(err_rows),
            missing_rows=missing, missing_reasons=missing_reasons, job_ids=self.job_ids,
            first_error=first_error, elapsed_s=self._elapsed_s(subs, markers, ended),
        )

    def _elapsed_s(self, subs: List[Dict[str, Any]], markers: Dict[int, Dict], ended: bool) -> Optional[float]:
        launched = [s for s in subs if s.get("submitted_at")]
        if not launched:
            return None
        sub = launched[-1]
        start = float(sub["submitted_at"])
        if not ended:
            return time.time() - start
        ends = [float(m["ended"]) for (_, kind), m in markers[sub["index"]].items()
                if kind == "done" and m.get("ended")]
        for task in range(sub["n_tasks"]):
            try:
                ends.append(jd.log_path(self.job_dir, sub["index"], task).stat().st_mtime)
            except OSError:
                pass
        return max(ends) - start if ends else None

    def _why_missing(self, missing: List[int], subs: List[Dict[str, Any]],
                     details: List[TaskStatus]) -> Dict[int, str]:
        """Blame each missing row on the task that had taken its chunk in the latest submission
        that included it, or say it was never started."""
        from ._submit import chunk_bounds

        by_task = {(d.submission, d.task): d for d in details}
        left = set(missing)
        out: Dict[int, str] = {}
        for s in reversed(subs):
            if not left:
                break
            k = s["index"]
            rows: List[int] = []
            for a, b in s["rows"]:
                rows.extend(range(a, b))
            claims = jd.read_claims(self.job_dir, k)
            for c, (a, b) in enumerate(chunk_bounds(len(rows), s["n_chunks"])):
                for r in rows[a:b]:
                    if r not in left:
                        continue
                    left.discard(r)
                    who = claims.get(c)
                    if who is None:
                        if not s.get("job_id"):
                            out[r] = "not submitted"
                        else:
                            states = [d.state for d in details if d.submission == k]
                            if any(st in ACTIVE_STATES for st in states):
                                out[r] = "not started yet"
                            else:
                                counts = ", ".join(f"{states.count(st)} {st}" for st in sorted(set(states)))
                                out[r] = f"never started: its tasks ended first ({counts})"
                    else:
                        d = by_task.get((k, who[0]))
                        name = f"task {who[0]}" if k == 0 else f"submission {k} task {who[0]}"
                        out[r] = f"{name}: {d.describe()}" if d else "taken by a task that is gone"
        for r in left:
            out[r] = "not in any submission"
        return out

    # -- waiting -------------------------------------------------------------------------------

    def wait(self, timeout_s: Optional[float] = None, *, progress: bool = True,
             poll_s: float = 0.05, max_poll_s: float = 1.0, scheduler_every_s: float = 5.0,
             max_scheduler_every_s: float = 30.0) -> JobStatus:
        """Block until no task is queued or running; return the final status.

        Result files are checked often (they are local reads); the scheduler only every
        ``scheduler_every_s`` seconds at first, backing off to ``max_scheduler_every_s``, and not
        at all once every task has written its end marker.
        """
        t0 = time.monotonic()
        last_sched = t0
        sched_gap = scheduler_every_s
        shown = _Progress() if progress else None
        logs = _LogWatch()
        status = self.get_job_status(ask_scheduler=False)
        if status.state == "NOT_SUBMITTED":
            raise InputError(f"{self.job_dir} has not been submitted: nothing to wait for. "
                             f"Submit it with `sbatch {self.job_dir / 'submit.sh'}`.")
        while not status.ended:
            # The cheap check, made often: which tasks have not written their end marker?
            # (Building a whole status costs more than a directory listing on a big job.)
            waiting = self._unfinished_tasks()
            if not waiting:
                status = self.get_job_status(ask_scheduler=False)
                break  # every task wrote its end marker: no need to ask Slurm anything
            now = time.monotonic()
            # A kill line in a task's log means the scheduler has news: ask it now, not later.
            killed = logs.kill_seen(jd.log_path(self.job_dir, k, t) for k, t in waiting)
            if now - last_sched >= sched_gap or (killed and now - last_sched >= 1.0):
                status = self.get_job_status(ask_scheduler=True)
                last_sched = time.monotonic()
                if not killed:
                    sched_gap = min(sched_gap * 1.5, max_scheduler_every_s)
                if status.ended:
                    break
            if shown is not None:
                self._results.refresh(self.job_dir, len(self._manifest["submissions"]))
                shown.show(status, len(self._results.done) + len(self._results.errors))
            if timeout_s is not None and now - t0 > timeout_s:
                raise JobTimeoutError(f"job {self.jobname} still running after {timeout_s:.0f} s:\n"
                                      f"{self.get_job_status()}")
            time.sleep(poll_s)
            # Poll fast while the job is young (short jobs finish soon), then back off; a poll
            # is one directory listing per submission, so even the slowest is cheap.
            poll_s = min(max(poll_s, (time.monotonic() - t0) / 50), max_poll_s)
        if shown is not None:
            shown.final(status)
        return status

    def _unfinished_tasks(self) -> List[Tuple[int, int]]:
        """(submission, task) of every launched task without an end marker, minus tasks the
        local runner has seen end (a local task that died writes no marker)."""
        from . import _local

        out: List[Tuple[int, int]] = []
        for s in self._manifest["submissions"]:
            if not s.get("job_id"):
                continue
            try:
                names = set(os.listdir(jd.tasks_dir(self.job_dir, s["index"])))
            except FileNotFoundError:
                names = set()
            ended = set()
            if s["backend"] == "local":
                ended = {int(t) for t, st in _local.read_state(self.job_dir, s["index"])["tasks"].items()
                         if st["state"] not in ACTIVE_STATES}
            out.extend((s["index"], t) for t in range(s["n_tasks"])
                       if t not in ended and jd.task_marker(self.job_dir, s["index"], t, "done").name not in names)
        return out

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
            naming the rows (the first remote traceback is the ``__cause__``). "keep": return
            what there is, with an ``error`` column (None for good rows).
        """
        if outtype not in ("table", "raw"):
            raise InputError(f"outtype must be 'table' or 'raw'; got {outtype!r}")
        if errors not in ("raise", "keep"):
            raise InputError(f"errors must be 'raise' or 'keep'; got {errors!r}")
        status = self.get_job_status(ask_scheduler=False)
        if status.missing_rows:  # only now is the scheduler worth asking: to say why
            status = self.get_job_status()
        done, errs = self._results.done, self._results.errors
        if errors == "raise":
            if errs:
                r0 = min(errs)
                etype, emsg, tb = errs[r0][1]
                raise RowsFailedError(
                    f"{len(errs)} of {self.n_rows} rows raised: rows {compress_rows(sorted(errs))}. "
                    f"First, row {r0}: {etype}: {emsg}. See the traceback above; get_output(errors='keep') "
                    "returns the other rows, and resubmit(failed=True) reruns these.",
                    rows=sorted(errs),
                ) from RemoteTraceback(tb)
            if status.missing_rows:
                detail = "; ".join(f"rows {compress_rows(v)}: {k}"
                                   for k, v in status.missing_by_reason().items())
                hint = ("wait() for them" if not status.ended else "resubmit() runs them again")
                raise RowsMissingError(
                    f"{len(status.missing_rows)} of {self.n_rows} rows have no result ({detail}); {hint}, "
                    "or get_output(errors='keep') returns the rest.", rows=status.missing_rows)
        n = self.n_rows
        values: List[Any] = [None] * n
        for r, (_, v) in done.items():
            values[r] = v
        if outtype == "raw":
            return values
        import pandas as pd

        params = pd.read_pickle(self.job_dir / jd.PARAMS)
        result = _result_frame(values, [r in done for r in range(n)] if len(done) < n else None)
        clash = [c for c in result.columns if c in params.columns]
        if clash:
            result = result.rename(columns={c: f"{c}_result" for c in clash})
        result.index = params.index
        out = pd.concat([params, result], axis=1)
        if errors == "keep":
            err_col: List[Optional[str]] = [None] * n
            for r, (_, (etype, emsg, _)) in errs.items():
                err_col[r] = f"{etype}: {emsg}"
            for r in status.missing_rows:
                err_col[r] = f"missing: {status.missing_reasons.get(r, NOT_FINISHED)}"
            out["error"] = err_col
        return out

    def get_errors(self) -> Dict[int, ErrorInfo]:
        """{row: (exception type, message, traceback)} for every row that raised."""
        self.get_job_status(ask_scheduler=False)
        return {r: info for r, (_, info) in sorted(self._results.errors.items())}

    # -- acting on the job ---------------------------------------------------------------------

    def cancel(self) -> None:
        """Cancel every queued or running task of every submission."""
        from . import _local

        self._reload()
        slurm_ids = []
        for s in self._manifest["submissions"]:
            if not s.get("job_id"):
                continue
            if s["backend"] == "slurm":
                slurm_ids.append(s["job_id"])
            else:
                _local.cancel(self.job_dir, s["index"])
        if slurm_ids:
            self.scheduler_queries += 1
            _slurm.scancel(slurm_ids)

    def cleanup_files(self, force: bool = False) -> None:
        """Delete the job directory. Refuses while tasks are queued or running, unless ``force``
        (which cancels them first)."""
        status = self.get_job_status()
        if not status.ended and status.state != "NOT_SUBMITTED":
            if not force:
                active = [f"task {d.task}: {d.state}" for d in status.task_details if d.state in ACTIVE_STATES]
                raise JobActiveError(
                    f"refusing to delete {self.job_dir}: {len(active)} task(s) still queued or running "
                    f"({', '.join(active[:5])}). Wait for them, cancel() them, or pass force=True.")
            self.cancel()
            try:  # tasks may write for a few seconds after a cancel: let them stop first
                self.wait(timeout_s=60, progress=False)
            except JobTimeoutError:
                pass
        jd.remove_tree(self.job_dir)

    def resubmit(self, *, failed: bool = False, nodes: Optional[int] = None,
                 cpus_per_node: Optional[int] = None, slurm_options: Optional[Dict[str, Any]] = None,
                 max_concurrent: Optional[int] = None, submit: bool = True) -> "SlurmJob":
        """Run again, as a new array job in the same directory, only the rows without a result
        (and with ``failed=True`` the rows that raised). New resources may be given;
        ``slurm_options`` are merged over the previous submission's."""
        from . import _submit
        from . import _validate as v

        status = self.get_job_status()
        active = [d for d in status.task_details if d.state in ACTIVE_STATES]
        if active:
            raise JobActiveError(f"job {self.jobname} still has {len(active)} queued or running task(s); "
                                 "wait() or cancel() first")
        written = [s for s in self._manifest["submissions"] if s["state"] == "written"]
        if written:
            script = self.job_dir / written[-1]["script"]
            raise JobActiveError(
                f"submission {written[-1]['index']} of {self.jobname} was written but never submitted "
                f"(submit=False): run `sbatch {script}` to submit it, rather than resubmitting")
        # A submission sbatch refused ran nothing: its rows are missing and are run now.
        rows = sorted(status.missing_rows + (status.failed_rows if failed else []))
        if not rows:
            what = "has a result" if failed or not status.failed_rows else "has a result or an error (pass failed=True to rerun errors)"
            raise InputError(f"nothing to resubmit: every row of {self.jobname} {what}")
        last = self._manifest["submissions"][-1]
        nodes = v.check_positive_int("nodes", nodes) if nodes is not None else self._manifest["nodes"]
        cpus = (v.check_positive_int("cpus_per_node", cpus_per_node) if cpus_per_node is not None
                else last["cpus_per_task"])
        options = dict(last["slurm_options"])
        options.update(v.check_options(slurm_options))
        max_concurrent = v.check_optional_positive_int("max_concurrent", max_concurrent)
        import pandas as pd

        params = pd.read_pickle(self.job_dir / jd.PARAMS)
        with jd.manifest_lock(self.job_dir):
            self._reload()
            info = _submit.write_submission(
                self.job_dir, self._manifest, params, rows=rows, nodes=nodes, cpus_per_task=cpus,
                options=options, max_concurrent=max_concurrent, backend=last["backend"],
                rows_per_chunk=self._manifest.get("rows_per_chunk"))
            jd.write_json(self.job_dir / jd.MANIFEST, self._manifest)
            if submit:
                _submit.launch(self.job_dir, self._manifest, info["index"])
        return self


class _LogWatch:
    """Notices new kill lines (slurmstepd's, or our worker's SIGTERM note) in task logs cheaply:
    only the bytes added since the last look are read."""

    MARKS = ("slurmstepd", "*** JOB", "got SIGTERM")

    def __init__(self) -> None:
        self.sizes: Dict[str, int] = {}

    def kill_seen(self, paths: Any) -> bool:
        seen = False
        for path in paths:
            try:
                size = os.stat(path).st_size
            except OSError:
                continue
            old = self.sizes.get(path, 0)
            if size <= old:
                continue
            self.sizes[path] = size
            with open(path, "rb") as fh:
                fh.seek(old)
                new = fh.read(size - old).decode(errors="replace")
            seen = seen or any(m in new for m in self.MARKS)
        return seen


def _elapsed(done: Optional[Dict[str, Any]]) -> str:
    if not done:
        return ""
    secs = int(done.get("ended", 0) - done.get("started", 0))
    return f"{secs // 3600:02d}:{secs % 3600 // 60:02d}:{secs % 60:02d}"


def _read_tail(path: Path, n_bytes: int = 65536) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - n_bytes))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _result_frame(values: List[Any], present: Optional[List[bool]]) -> "pd.DataFrame":
    import pandas as pd

    sample = [v for i, v in enumerate(values) if present is None or present[i]]
    if sample and all(isinstance(v, dict) for v in sample):
        records = [v if isinstance(v, dict) else {} for v in values]
        return pd.DataFrame.from_records(records)
    if sample and all(isinstance(v, pd.Series) for v in sample):
        return pd.DataFrame([v if isinstance(v, pd.Series) else pd.Series(dtype=object) for v in values]).reset_index(drop=True)
    return pd.DataFrame({"result": pd.Series(values, dtype=None)})


class _Progress:
    """One line on stderr: rewritten in place on a terminal; elsewhere (a notebook, a log file)
    printed when it changes, at most every ``every_s`` seconds."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.tty = sys.stderr.isatty()
        self.every_s = every_s
        self.shown = ""
        self.printed_at = -1e9

    def show(self, status: JobStatus, rows: int) -> None:
        line = f"{status.jobname}: {rows}/{status.rows_total} rows done or failed"
        if line == self.shown or (not self.tty and time.monotonic() - self.printed_at < self.every_s):
            return
        sys.stderr.write(("\r" + line) if self.tty else (line + "\n"))
        sys.stderr.flush()
        self.shown, self.printed_at = line, time.monotonic()

    def final(self, status: JobStatus) -> None:
        line = (f"{status.jobname}: {status.state}, {status.rows_done} done, {status.rows_failed} failed, "
                f"{status.rows_missing} missing of {status.rows_total}")
        sys.stderr.write(("\r" if self.tty else "") + line + "\n")
        sys.stderr.flush()
