"""Reading the array tasks' logs: which to show, which tell of failures, their tails."""

from __future__ import annotations

import os
import re
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Sequence, Tuple

from .._errors import InputError
from .render import HEALTHY_STATES, one_line

if TYPE_CHECKING:
    from .._job.handle import SlurmJob

# The line the worker prints to a task's log for every row that raised.
ROW_RAISED = re.compile(rb"^slurm_apply: row \S+ raised ")


class BadSelection(InputError):
    """A task or submission number the job does not have; ``option`` names what chose it."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


def select_logs(job: "SlurmJob", tasks: Sequence[int],
                 submissions: Sequence[int]) -> List[Tuple[int, int, Path]]:
    """(submission, task, log path) for the chosen submissions and tasks, in order."""
    subs = job.manifest.submissions
    for k in submissions:
        if k >= len(subs):
            raise BadSelection("--submission",
                               f"the job has {len(subs)} submission(s), numbered 0 to {len(subs) - 1}; got {k}")
    picked = [s for s in subs if not submissions or s.index in submissions]
    for n in tasks:
        if not any(n < s.n_tasks for s in picked):
            most = max(s.n_tasks for s in picked)
            raise BadSelection("--task", f"the job's array tasks are numbered 0 to {most - 1}; got {n}")
    out = []
    for s in picked:
        for t in range(s.n_tasks):
            if not tasks or t in tasks:
                out.append((s.index, t, job.log_path(s.index, t)))
    return out


def failed_logs(job: "SlurmJob", chosen: List[Tuple[int, int, Path]]
                 ) -> Tuple[List[Tuple[int, int, Path]], Dict[Tuple[int, int], str]]:
    """Of ``chosen``, the tasks that did not complete or whose log tells of rows that raised."""
    states = {(t.submission, t.task): t for t in job.get_job_status().task_details}
    keep: List[Tuple[int, int, Path]] = []
    notes: Dict[Tuple[int, int], str] = {}
    for sub, task, path in chosen:
        t = states.get((sub, task))
        if t is None or t.state == "NOT_SUBMITTED":
            continue
        raised = count_raised(path, _done_marker(job, sub, task))
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


def _done_marker(job: "SlurmJob", sub: int, task: int) -> Optional[Dict]:
    from .._store import layout as jd

    try:
        return jd.read_json(jd.task_marker(job.job_dir, sub, task, "done"))
    except (OSError, ValueError):
        return None


def count_raised(path: Path, done: Optional[Dict] = None) -> int:
    """Rows that raised in a task: its end marker's count, else the lines its log has (a
    process prints only its first few)."""
    if done is not None and isinstance(done.get("errors"), int):
        return done["errors"]
    try:
        with open(path, "rb") as fh:
            return sum(1 for line in fh if ROW_RAISED.match(line))
    except OSError:
        return 0


def log_lines(path: Path, regex: Optional["re.Pattern[str]"], tail_n: Optional[int]) -> Iterator[str]:
    if regex is None and tail_n is not None:
        yield from tail(path, tail_n)
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


def tail(path: Path, n: int, block: int = 65536) -> List[str]:
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

