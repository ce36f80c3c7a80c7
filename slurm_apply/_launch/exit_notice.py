"""A process that ends while the tasks it started on this machine still run says so, once.

Some backends (the local runner) start tasks that outlive the process that submitted them (the
runner is detached, in its own session). A script that never waits would otherwise end silently
while the tasks keep the CPUs busy and the results arrive later in the job directory.
"""

from __future__ import annotations

import atexit
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, List, Tuple

from .. import _backends as backends
from .._log import logger
from .._backends.states import ACTIVE
from .._store import layout as jd

if TYPE_CHECKING:
    from .._store.manifest import Submission

_started: List[Tuple[Path, "Submission"]] = []  # submissions this process started here


def remember(job_dir: Path, sub: "Submission") -> None:
    """Look at the submission again when this process exits."""
    if not _started:
        atexit.register(_tell_still_running)
    _started.append((job_dir, sub))


def hand_over() -> None:
    """Say nothing at exit of the tasks started so far: their starter (a follow-up that
    retries rows) hands them on by design."""
    _started.clear()


def _still_running(job_dir: Path, sub: "Submission") -> bool:
    """The backend says a task is queued or running, and it has not written its end marker
    (once every task has, the runner may live a few ms more to record them: no work goes on)."""
    answers = backends.get(sub.backend).query(job_dir, [sub]).answers  # a deleted directory: all Unknown
    busy = {key for key, a in answers.items()
            if isinstance(a, backends.TaskRecord) and a.state in ACTIVE}
    if not busy:
        return False
    try:
        return bool(busy & set(jd.tasks_without_end_marker(job_dir, [sub])))
    except OSError:  # the directory went away meanwhile: nothing to say about it
        return False


def _tell_still_running() -> None:
    dirs = list(dict.fromkeys(str(d) for d, sub in _started if _still_running(d, sub)))
    if not dirs:
        return
    more = f" and {len(dirs) - 3} more" if len(dirs) > 3 else ""
    logger.warning(
        "this process ends, but the tasks it started on this machine go on in the background "
        "(%s%s): `slurm-apply status DIR --watch` follows them, `slurm-apply cancel DIR` stops "
        "them, `slurm-apply output DIR` reads the results", ", ".join(map(shlex.quote, dirs[:3])), more)
