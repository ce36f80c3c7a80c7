"""The one wait loop, shared by ``SlurmJob.wait()`` and ``slurm-apply status --watch``.

Cheap checks often (one directory listing per submission for the tasks' end markers), the
scheduler seldom (every few seconds, backing off), at once when a task's log tells of a kill,
and never once every task has written its end marker. A scheduler that cannot be asked does
not end the wait: its tasks are UNKNOWN, the wait says so once and asks again later.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Iterable, Iterator, Optional, Sequence, Tuple

from .. import _backends as backends
from .._status.classify import UNKNOWN
from .._errors import InputError, JobTimeoutError, WaitInterrupted
from .._log import logger
from .._timing import WAIT_MAX_POLL_S, WAIT_MAX_SCHEDULER_S, WAIT_POLL_S, WAIT_SCHEDULER_S

if TYPE_CHECKING:
    from .handle import SlurmJob
    from .._status.model import JobStatus


class Pace:
    """When to look again: marker polls fast while the job is young, then slower; scheduler
    queries every ``every_s`` growing to ``max_every_s``, faster again after a kill line."""

    def __init__(self, poll_s: float, max_poll_s: float, every_s: float, max_every_s: float) -> None:
        self.t0 = time.monotonic()
        self.poll_s, self.max_poll_s = poll_s, max_poll_s
        self.gap, self.max_gap = every_s, max_every_s
        self.last_query = time.monotonic()

    def query_due(self, killed: bool) -> bool:
        since = time.monotonic() - self.last_query
        return since >= self.gap or (killed and since >= 1.0)

    def queried(self, *, failed: bool, killed: bool) -> None:
        self.last_query = time.monotonic()
        if failed:  # back off harder while the scheduler cannot be asked
            self.gap = min(self.gap * 2, self.max_gap)
        elif not killed:
            self.gap = min(self.gap * 1.5, self.max_gap)

    def sleep(self) -> None:
        time.sleep(self.poll_s)
        # Short jobs end soon: poll fast at first; a poll is cheap, so even the slowest is often.
        self.poll_s = min(max(self.poll_s, (time.monotonic() - self.t0) / 50), self.max_poll_s)


def wait(job: "SlurmJob", *, timeout_s: Optional[float] = None,
         on_update: Optional[Callable[["JobStatus"], None]] = None, poll_s: float = WAIT_POLL_S,
         max_poll_s: float = WAIT_MAX_POLL_S, scheduler_every_s: float = WAIT_SCHEDULER_S,
         max_scheduler_every_s: float = WAIT_MAX_SCHEDULER_S) -> "JobStatus":
    """Block until the job has ended; return a status whose ``ended`` is True.

    ``on_update`` is called with each new status: the only way a progress display learns of
    one. Ctrl-C raises WaitInterrupted, carrying the last status, in place of a traceback.
    """
    pace = Pace(poll_s, max_poll_s, scheduler_every_s, max_scheduler_every_s)
    last: Optional["JobStatus"] = None
    try:
        for last in statuses(job, pace, timeout_s):
            if on_update is not None:
                on_update(last)
    except KeyboardInterrupt:
        from .._status.render import interrupted_text

        # "from None": what was running when Ctrl-C came (a sleep, a scheduler query) is noise.
        _exit_quietly_if_uncaught()
        raise WaitInterrupted(interrupted_text(job.jobname, str(job.job_dir), last, cli=False),
                              last, cli_line=interrupted_text(job.jobname, str(job.job_dir), last,
                                                           cli=True)) from None
    assert last is not None and last.ended
    return last


def _exit_quietly_if_uncaught() -> None:
    """A WaitInterrupted nobody catches ends a script as a plain Ctrl-C does (the shell sees
    130), with its one line instead of a traceback.

    Python gives that exit status only to a KeyboardInterrupt of that exact class, so a hook
    does it: it prints the line, finishes the interpreter's work (non-daemon threads, such as
    the fsync of the payload's buffers, then the atexit functions), and ends the process by
    SIGINT as Python itself does. Other exceptions go to the hook that was there before.
    IPython and Jupyter never call sys.excepthook for a cell, so they are not affected.
    """
    import sys

    previous = sys.excepthook
    if getattr(previous, "slurm_apply_wait", False):
        return

    def hook(etype: type, value: BaseException, tb: object) -> None:
        if not isinstance(value, WaitInterrupted):
            previous(etype, value, tb)  # type: ignore[arg-type]
            return
        import atexit
        import signal
        import threading

        try:
            sys.stderr.write(f"{etype.__name__}: {value.cli_line or value}\n")
            shutdown = getattr(threading, "_shutdown", None)  # what Python's own exit runs first
            if shutdown is not None:
                shutdown()
            atexit._run_exitfuncs()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
            os._exit(130)  # only if the signal did not end the process

    hook.slurm_apply_wait = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def statuses(job: "SlurmJob", pace: Pace, timeout_s: Optional[float] = None,
             until: Callable[["JobStatus"], bool] = lambda status: status.ended) -> Iterator["JobStatus"]:
    """The one wait loop, as the statuses it sees: the first at once, the last one for which
    ``until`` holds, by default the job's end (``wait()``, ``as_completed()`` and the
    follow-up, which waits for the tasks of one submission, all walk it)."""
    logs = LogWatch()
    status = job.get_job_status()
    if status.state == "NOT_SUBMITTED":
        raise InputError(f"{job.job_dir} has not been submitted: nothing to wait for. "
                         "Submit it first (job.submit(), or `slurm-apply submit DIR`).")
    unknown_told = _tell_unknown(status, False)
    yield status
    while not until(status):
        if timeout_s is not None and time.monotonic() - pace.t0 > timeout_s:
            raise JobTimeoutError(f"job {job.jobname} still running after {timeout_s:.0f} s:\n{status}")
        pace.sleep()
        waiting = job._unfinished_tasks()
        marks = {s: backends.get(job.manifest.submissions[s].backend).kill_marks for s, _ in waiting}
        killed = bool(waiting) and logs.kill_seen((job.log_path(s, t), marks[s]) for s, t in waiting)
        # A follow-up deciding what to retry is asked about at the scheduler's pace too.
        if (waiting or status.retries.busy) and not pace.query_due(killed):
            status = job.get_job_status(ask_scheduler=False)  # the last answers, new rows
        else:
            status = job.get_job_status()
            failed = any(t.state == UNKNOWN for t in status.task_details)
            pace.queried(failed=failed, killed=killed)
            unknown_told = _tell_unknown(status, unknown_told)
        yield status


def _tell_unknown(status: "JobStatus", told: bool) -> bool:
    """Say once that the scheduler could not be asked, and once that it answers again."""
    unknown = [t for t in status.task_details if t.state == UNKNOWN]
    if unknown and not told:
        logger.warning("could not ask the scheduler about %d task(s) of %s (%s); "
                       "still waiting, and asking again with back-off", len(unknown),
                       status.jobname, unknown[0].reason)
        return True
    if told and not unknown:
        logger.info("the scheduler answers again for %s", status.jobname)
        return False
    return told


class LogWatch:
    """Notices new kill lines (the scheduler's, as its backend names them in ``kill_marks``, or
    our worker's SIGTERM note) in task logs cheaply: only the bytes added since the last look
    are read."""

    OURS = ("got SIGTERM",)  # what a worker process says when it is told to stop

    def __init__(self) -> None:
        self.sizes: Dict[str, int] = {}

    def kill_seen(self, logs: Iterable[Tuple[Path, Sequence[str]]]) -> bool:
        """Whether one of these logs (each with the scheduler's kill marks) gained a kill line."""
        seen = False
        for log, marks in logs:
            path = str(log)
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
            seen = seen or any(m in new for m in (*self.OURS, *marks))
        return seen
