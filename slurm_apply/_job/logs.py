"""Reading the array tasks' logs: which to show, which tell of failures, their tails."""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, List, Optional, Sequence, Union

from .._errors import InputError
from .._status.render import HEALTHY_STATES, one_line
from .._store import layout as jd
from .._store import markers

if TYPE_CHECKING:
    from .handle import SlurmJob

# The line the worker prints to a task's log for every row that raised.
ROW_RAISED = re.compile(rb"^slurm_apply: row \S+ raised ")


@dataclass(frozen=True)
class TaskLog:
    """The output file of one array task of one submission: ``logs/s<K>_t<N>.out``.

    Attributes
    ----------
    submission, task : int
        Which submission (0 the first run) and which array task.
    path : Path
        The file; it does not exist until the task has started.
    note : str
        From ``task_logs(failed=True)``: why the task is listed, e.g. ``task 1: COMPLETED, 1
        row(s) raised``; else empty.
    """

    submission: int
    task: int
    path: Path
    note: str = ""

    def lines(self, grep: "Union[str, re.Pattern[str], None]" = None,
              tail: Optional[int] = None) -> Iterator[str]:
        """The log's lines, without their line ends: only those matching ``grep`` (a regular
        expression), and of those only the last ``tail``. A tail alone reads the file backwards
        from its end, so it costs little on a log of gigabytes."""
        if isinstance(grep, str):
            try:
                grep = re.compile(grep)
            except re.error as exc:
                raise InputError(f"grep must be a regular expression; {grep!r} is not: {exc}",
                                 argument="grep") from None
        if tail is not None and (isinstance(tail, bool) or not isinstance(tail, int) or tail < 0):
            raise InputError(f"tail must be a whole number of lines, 0 or more; got {tail!r}", argument="tail")
        if tail == 0:
            return iter(())
        return log_lines(self.path, grep, tail)


def select_logs(job: "SlurmJob", tasks: Sequence[int], submissions: Sequence[int]) -> List[TaskLog]:
    """The logs of the chosen submissions and tasks (none chosen: all), in order."""
    subs = job.manifest.submissions
    for k in submissions:
        if not 0 <= k < len(subs):
            raise InputError(f"the job has {len(subs)} submission(s), numbered 0 to {len(subs) - 1}; got {k}",
                             argument="submissions")
    picked = [s for s in subs if not submissions or s.index in submissions]
    for n in tasks:
        if not any(0 <= n < s.n_tasks for s in picked):
            most = max(s.n_tasks for s in picked)
            raise InputError(f"the job's array tasks are numbered 0 to {most - 1}; got {n}", argument="tasks")
    return [TaskLog(s.index, t, job.log_path(s.index, t))
            for s in picked for t in range(s.n_tasks) if not tasks or t in tasks]


def failed_logs(job: "SlurmJob", chosen: List[TaskLog]) -> List[TaskLog]:
    """Of ``chosen``, the tasks that did not complete or whose log tells of rows that raised,
    each with a note saying which."""
    states = {(t.submission, t.task): t for t in job.get_job_status().task_details}
    keep: List[TaskLog] = []
    for log in chosen:
        sub, task = log.submission, log.task
        t = states.get((sub, task))
        if t is None or t.state == "NOT_SUBMITTED":
            continue
        raised = count_raised(log.path, _end_marker(job, sub, task))
        if t.state in HEALTHY_STATES and not raised:
            continue
        note = f"task {task}: {one_line(t.describe())}"
        if raised:
            note += f", {raised} row(s) raised"
        if len(job.manifest.submissions) > 1:
            note = f"submission {sub} " + note
        keep.append(TaskLog(sub, task, log.path, note))
    return keep


def _end_marker(job: "SlurmJob", sub: int, task: int) -> Optional[markers.End]:
    return markers.read(job.job_dir, sub).get(task, markers.TaskMarkers()).end_of_last_start()


def count_raised(path: Path, end: Optional[markers.End] = None) -> int:
    """Rows that raised in a task: its end marker's count, else the lines its log has (a
    process prints only its first few)."""
    if end is not None:
        return end.errors
    try:
        with open(path, "rb") as fh:
            return sum(1 for line in fh if ROW_RAISED.match(line))
    except OSError:
        return 0


def log_lines(path: Path, regex: Optional["re.Pattern[str]"], tail_n: Optional[int]) -> Iterator[str]:
    if regex is None and tail_n is not None:
        text = jd.read_tail(path, lines=tail_n)
        yield from text.split("\n") if text else ()
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
