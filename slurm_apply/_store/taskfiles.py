"""Every file an array task writes in the job directory, each write behind the job's token.

A job directory can be replaced (``overwrite=True``) while a task of the old job still runs, on
a node the scheduler cannot be asked about. The old task's open record file follows the old
directory (it was renamed away whole, then deleted), but a write by path would land in the new
job: its heartbeat, markers, stop note, a takeover's claim, a death record, its failure count.
So each of those first checks that the directory still holds this task's job (one ``stat`` of
the token file) and raises :class:`JobReplaced` otherwise; the task then stops writing and goes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import BinaryIO, Optional, Tuple

from . import claims, records, stops
from .markers import End, InFlight, Start, Stopped, starts_from_json, starts_to_json
from . import layout as jd


class JobReplaced(Exception):
    """The job directory now holds another job: a task of the old one writes nothing more."""


class TaskFiles:
    """The files of one array task (``s<sub>/tasks/t<task>.*`` and what it writes beside)."""

    def __init__(self, job_dir: Path, sub: int, task: int, token: str) -> None:
        self.job_dir, self.sub, self.task, self.token = job_dir, sub, task, token

    def replaced(self) -> bool:
        return jd.job_replaced(self.job_dir, self.token)

    def guard(self) -> None:
        if self.replaced():
            raise JobReplaced(f"{self.job_dir} now holds another job (replaced, e.g. by "
                              "overwrite=True); this task writes nothing more there")

    def _marker(self, kind: str) -> Path:
        return jd.task_marker(self.job_dir, self.sub, self.task, kind)

    # -- the heartbeat: created at the start, touched while the task runs -----------------------

    @property
    def heartbeat(self) -> Path:
        return self._marker("live")

    def start_heartbeat(self) -> float:
        """Create it empty (a requeued task clears its stop note); the file system's "now"."""
        self.guard()
        with open(self.heartbeat, "wb"):  # nothing to keep: no fsync
            pass
        return os.stat(self.heartbeat).st_mtime

    def renew_heartbeat(self) -> float:
        """Touch it; return the file system's "now" (its new mtime)."""
        self.guard()
        os.utime(self.heartbeat)
        return os.stat(self.heartbeat).st_mtime

    def write_stop_note(self, in_flight: InFlight) -> None:
        """The task stopped on SIGTERM; which rows its processes had in flight."""
        self.guard()
        jd.write_json(self.heartbeat, Stopped(in_flight).to_json())

    # -- markers: start (one entry per start), idle (out of rows, watching), done (its last write)

    def record_start(self, start: Start) -> int:
        """Add this start to the start marker (a requeued task has several); their number."""
        self.guard()
        try:
            starts = starts_from_json(jd.read_json(self._marker("start")))
        except (FileNotFoundError, ValueError):
            starts = ()
        starts += (start,)
        jd.write_json(self._marker("start"), starts_to_json(starts))
        return len(starts)

    def mark_idle(self) -> None:
        self.guard()
        jd.write_json(self._marker("idle"), {"since": time.time()})

    def unmark(self, kind: str) -> None:
        """Remove the idle or end marker (a requeued start, or a task working again)."""
        self.guard()
        try:
            os.unlink(self._marker(kind))
        except FileNotFoundError:
            pass

    def mark_done(self, end: End) -> None:
        self.guard()
        jd.write_json(self._marker("done"), end.to_json())

    # -- rows --------------------------------------------------------------------------------

    def open_records(self, path: Path) -> BinaryIO:
        """Open a record file of this task to add frames (see records.open_for_append)."""
        self.guard()
        return records.open_for_append(path)

    def take_over(self, chunk: int, gen: int, owner: claims.Owner,
                  lost: Optional[Tuple[int, claims.Owner]] = None) -> bool:
        """Claim a dead task's chunk (see claims.try_take_over)."""
        self.guard()
        return claims.try_take_over(self.job_dir, self.sub, chunk, gen, owner, lost)

    # -- max_failures ------------------------------------------------------------------------

    def publish_count(self, stem: str, old: int, new: int) -> None:
        self.guard()
        stops.publish_count(self.job_dir, self.sub, stem, old, new)

    def write_stop(self, note: stops.StopNote) -> bool:
        self.guard()
        return stops.write_stop(self.job_dir, self.sub, note)
