"""``max_failures``: a submission stops early once that many of its rows have raised.

Each task process counts the rows that raised in it and publishes its count in the *name* of
one small file, ``s<k>/failures/t0003-p812.17`` (task 3, pid 812, 17 rows), renamed as the
count grows: the job's count is then one listing of that directory, no file opened. A process
whose rows raise publishes and lists each time its count doubles, and then at most every
PUBLISH_S (at once when its own count alone reaches the limit); when the sum reaches the limit
it writes ``s<k>/stop.json``. Every process
looks at that file before each claim and, while it runs a chunk, at most every CHECK_S: once it
says stop, the process leaves the rest of its chunk and claims nothing more, and its task ends.

The stop file is made empty with the submission and written in place, never created or
renamed later: opening an existing file makes an NFS client fetch its attributes afresh
(close-to-open consistency), where a file that did not exist may be taken as still absent
from the client's cache for up to a minute. Its one write is a block of STOP_BYTES (the JSON
padded with spaces), so two processes that stop at once leave one whole note, not a mix.

Without ``max_failures`` none of this runs: no file, no check.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from .._store import layout as jd

if TYPE_CHECKING:
    from .._store.manifest import Submission
    from .rows import Context

PUBLISH_S = 0.2  # a process's count reaches the others at least this often while rows raise
CHECK_S = 0.1  # how often a process in the middle of a chunk looks at the stop file
STOP_BYTES = 4096


def prepare(job_dir: Path, sub: int) -> None:
    """Make the submission's empty stop file (before any of its tasks runs)."""
    jd.write_bytes(jd.stop_path(job_dir, sub), b"")


def read_stop(job_dir: Path, sub: int) -> Optional[Dict[str, Any]]:
    """The stop note, or None while the submission has not stopped (or has no stop file)."""
    try:
        with open(jd.stop_path(job_dir, sub), "rb") as fh:
            data = fh.read(STOP_BYTES)
    except OSError:
        return None
    if not data.strip():
        return None
    try:
        note = json.loads(data)
    except ValueError:
        note = {}  # torn: stopped all the same
    return note if isinstance(note, dict) else {}


def _parse(name: str) -> Optional[Tuple[str, int]]:
    """``t0003-p812.17`` -> ("t0003-p812", 17)."""
    stem, dot, count = name.rpartition(".")
    if not dot or not stem.startswith("t") or not count.isdigit():
        return None
    return stem, int(count)


def total_failures(job_dir: Path, sub: int) -> int:
    """The rows that raised in a submission, as its processes last published them."""
    try:
        names = os.listdir(jd.failures_dir(job_dir, sub))
    except FileNotFoundError:
        return 0
    best: Dict[str, int] = {}
    for name in names:
        parsed = _parse(name)
        if parsed is not None:  # a listing made during a rename may show both names
            best[parsed[0]] = max(best.get(parsed[0], 0), parsed[1])
    return sum(best.values())


class Budget:
    """One process's side of ``max_failures`` (inert when the submission has none)."""

    def __init__(self, ctx: "Context", who: str) -> None:
        sub = ctx.manifest.submissions[ctx.sub]
        self.ctx, self.limit, self.spec = ctx, sub.failure_limit(), sub.max_failures
        self.stem = f"t{ctx.task:04d}-p{os.getpid()}"
        self.who = who
        self.count = self.published = 0
        self.published_at = self.checked_at = 0.0
        self.first = ""
        self.stop_seen = False

    @property
    def active(self) -> bool:
        return self.limit is not None

    def stopped(self) -> bool:
        """The submission was stopped early (an open and an fstat; asked before each claim)."""
        if self.active and not self.stop_seen:
            try:
                fd = os.open(jd.stop_path(self.ctx.job_dir, self.ctx.sub), os.O_RDONLY)
            except FileNotFoundError:
                return False
            try:
                self.stop_seen = os.fstat(fd).st_size > 0
            finally:
                os.close(fd)
        return self.stop_seen

    def stop_now(self) -> bool:
        """Asked while a chunk runs: the same, at most every CHECK_S."""
        if not self.active or self.stop_seen:
            return self.stop_seen
        now = time.monotonic()
        if now - self.checked_at < CHECK_S:
            return False
        self.checked_at = now
        return self.stopped()

    def add(self, n: int, first: str = "") -> None:
        """``n`` more rows raised in this process (``first``: the first one's error)."""
        if self.limit is None or not n:  # not self.active
            return
        self.count += n
        self.first = self.first or first
        now = time.monotonic()
        # At once while the count doubles (the first errors, where the limit usually lies:
        # a few listings in all), then at most every PUBLISH_S.
        if (self.count >= 2 * self.published or now - self.published_at >= PUBLISH_S
                or self.count >= self.limit):
            self.publish(now)

    def flush(self) -> None:
        """Publish what is not yet (a process's last count, as it ends)."""
        if self.active:
            self.publish(time.monotonic())

    def publish(self, now: float) -> None:
        if self.count == self.published:
            return
        d = jd.failures_dir(self.ctx.job_dir, self.ctx.sub)
        new = d / f"{self.stem}.{self.count}"
        if self.published:
            os.replace(d / f"{self.stem}.{self.published}", new)
        else:
            d.mkdir(exist_ok=True)
            new.touch()
        self.published, self.published_at = self.count, now
        total = max(self.count, total_failures(self.ctx.job_dir, self.ctx.sub))
        if self.limit is not None and total >= self.limit and not self.stopped():
            self.write_stop(total)

    def write_stop(self, total: int) -> None:
        if jd.job_replaced(self.ctx.job_dir, self.ctx.manifest.token):
            return
        note = json.dumps({"failed": total, "limit": self.limit, "max_failures": self.spec,
                           "at": time.time(), "by": self.who, "first": self.first[:1000]})
        block = note.encode()[:STOP_BYTES].ljust(STOP_BYTES)
        try:
            fd = os.open(jd.stop_path(self.ctx.job_dir, self.ctx.sub), os.O_WRONLY)
        except FileNotFoundError:
            return  # the job directory is gone
        try:
            os.pwrite(fd, block, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.stop_seen = True
        print(f"slurm_apply: {total} rows raised (max_failures={self.spec}): the job stops "
              "early; no task starts another chunk", flush=True)


def read_stops(job_dir: Path, subs: List["Submission"]) -> Dict[int, Dict[str, Any]]:
    """For the login side: the stop notes of submissions that stopped early, ``failed`` being
    the rows that raised in them as their processes last counted (one listing each)."""
    out: Dict[int, Dict[str, Any]] = {}
    for s in subs:
        if s.max_failures is None:
            continue  # no stop file can exist: not even a stat
        note = read_stop(job_dir, s.index)
        if note is not None:
            note["failed"] = max(int(note.get("failed", 0)), total_failures(job_dir, s.index))
            out[s.index] = note
    return out
