"""``max_failures``: a submission stops early once that many of its rows have raised.

Each task process counts the rows that raised in it and publishes its count (``_store/stops.py``
says how it is kept on disk). A process whose rows raise publishes and lists each time its count
doubles, and then at most every PUBLISH_S (at once when its own count alone reaches the limit);
when the sum reaches the limit it writes the stop note. Every process looks at that note before
each claim and, while it runs a chunk, at most every CHECK_S: once it says stop, the process
leaves the rest of its chunk and claims nothing more, and its task ends.

Without ``max_failures`` none of this runs: no file, no check.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from .._store import stops

if TYPE_CHECKING:
    from .rows import Context

from .._timing import CHECK_S, PUBLISH_S


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
            self.stop_seen = stops.stop_written(self.ctx.job_dir, self.ctx.sub)
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
        self.ctx.files.publish_count(self.stem, self.published, self.count)
        self.published, self.published_at = self.count, now
        total = max(self.count, stops.total_failures(self.ctx.job_dir, self.ctx.sub))
        if self.limit is not None and total >= self.limit and not self.stopped():
            self.write_stop(total)

    def write_stop(self, total: int) -> None:
        note = stops.StopNote(failed=total, limit=self.limit, max_failures=self.spec,
                              at=time.time(), by=self.who, first=self.first[:1000])
        if not self.ctx.files.write_stop(note):
            return  # the job directory is gone
        self.stop_seen = True
        print(f"slurm_apply: {total} rows raised (max_failures={self.spec}): the job stops "
              "early; no task starts another chunk", flush=True)


