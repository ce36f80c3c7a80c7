"""Heartbeats and takeovers: how the live tasks of an array finish the chunks of a dead one.

Each task's parent keeps a heartbeat, ``s<k>/tasks/t0003.live``, whose mtime it sets every
HEARTBEAT_S. A task that stops on SIGTERM writes into it which row each of its processes had in
flight; one that dies silently (node failure, SIGKILL) just stops touching it. A task with no end
marker whose heartbeat is older than LEASE_S, or says it stopped, is dead, and the chunks it
owns and did not finish are orphans: a task with a free process takes each over (a new claim
generation, ``_store/claims.py``), skips the rows already recorded and the row the dead owner
had in flight, and runs the rest.

Ages are measured against the file system's clock, not ours: the reference is the mtime of our
own heartbeat, just set (on NFS a ``utime`` to "now" takes the server's time), so skewed node
clocks do not matter. Cheap on a shared file system: one ``utime`` per task every HEARTBEAT_S;
a scan lists the tasks directory once and opens a heartbeat only when it looks stale (opening
forces an NFS client to fetch fresh attributes; a listing may show cached ones).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, FrozenSet, Iterable, List, Optional, Set, Tuple

from .._store import layout as jd
from .._store import claims, records
from .._store.markers import InFlight as StopInfo, read_stopped
from .._store.taskfiles import TaskFiles

from .._timing import HEARTBEAT_S, LEASE_S, LINGER_S, SCAN_S  # noqa: F401 (lease.LEASE_S, ...)



def heartbeat_path(job_dir: Path, sub: int, task: int) -> Path:
    return jd.task_marker(job_dir, sub, task, "live")


class Heartbeat:
    """This task's heartbeat: created at its start, touched while it runs (written through
    TaskFiles, so a task of a replaced job touches nothing of the new one)."""

    def __init__(self, files: TaskFiles) -> None:
        self.files = files
        self.path = files.heartbeat
        self.now = files.start_heartbeat()

    def renew(self) -> float:
        """Touch it; return the file system's "now" (its new mtime)."""
        self.now = self.files.renew_heartbeat()
        return self.now

    def stop(self, in_flight: StopInfo) -> None:
        """Say this task stopped, and which rows its processes had in flight."""
        self.files.write_stop_note(in_flight)


def _stop_info(path: Path) -> Optional[StopInfo]:
    """The rows in flight of a heartbeat's stop note, or None if it has none."""
    note = read_stopped(path)
    return note.in_flight if note is not None else None


def _fresh_mtime(path: Path) -> Optional[float]:
    """The mtime as the file server has it now (open + fstat revalidates NFS's cache)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)


def dead_tasks(job_dir: Path, sub: int, me: int, now: float) -> Tuple[Dict[int, Optional[StopInfo]], Set[int]]:
    """({dead task: its stop note or None}, tasks still running) among the other tasks.

    A task is considered only once it has a heartbeat and until it has an end marker.
    """
    dead: Dict[int, Optional[StopInfo]] = {}
    running: Set[int] = set()
    d = jd.tasks_dir(job_dir, sub)
    beats: Dict[int, os.DirEntry] = {}
    ended: Set[int] = set()
    with os.scandir(d) as entries:
        for entry in entries:
            parsed = jd.parse_task_file(entry.name)
            if parsed is None or parsed[0] == me:
                continue
            if parsed[1] == "live":
                beats[parsed[0]] = entry
            elif parsed[1] in ("done", "idle"):  # idle: out of rows, watching like this one
                ended.add(parsed[0])
    for task, entry in beats.items():
        if task in ended:
            continue
        try:
            st = entry.stat()
        except FileNotFoundError:
            continue
        if st.st_size:  # a stop note: it ended on SIGTERM and said what it had in flight
            dead[task] = _stop_info(Path(entry.path)) or {}
            continue
        if now - st.st_mtime > LEASE_S:
            fresh = _fresh_mtime(Path(entry.path))
            if fresh is not None and now - fresh > LEASE_S:
                dead[task] = None
                continue
        running.add(task)
    return dead, running


@dataclass(frozen=True)
class Orphan:
    """A chunk to take over: its next claim generation, what to skip, what was lost."""

    chunk: int
    gen: int
    owner: claims.Owner  # the dead owner
    skip: FrozenSet[int]  # rows recorded, and the row lost in flight
    lost: Optional[int]


class Recorded:
    """Row ids recorded by the processes of some tasks, read incrementally (no unpickling)."""

    def __init__(self, job_dir: Path, sub: int) -> None:
        self.dir = jd.results_dir(job_dir, sub)
        self._readers: Dict[str, records.RecordReader] = {}
        self._ids: Dict[int, Set[int]] = {}

    def refresh(self, tasks: Iterable[int]) -> None:
        """Read what the given tasks' processes appended since the last call."""
        wanted = set(tasks)
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            names = []
        for name in names:
            parsed = records.parse_name(name)
            if parsed is None or parsed[0] not in wanted:
                continue
            reader = self._readers.setdefault(name, records.RecordReader(self.dir / name))
            batch = reader.read_new_batch()
            ids = self._ids.setdefault(parsed[0], set())
            ids.update(records.array_ids(batch.done))
            ids.update(records.array_ids(batch.err))

    def has(self, tasks: Iterable[int], row: int) -> bool:
        return any(row in self._ids.get(t, ()) for t in tasks)


def plan_takeovers(chains: Dict[int, claims.Chain], dead: Dict[int, Optional[StopInfo]],
                   recorded: Recorded, chunk_rows: Callable[[int], List[int]], *,
                   keep_in_flight: bool = False,
                   unknown_dead: Callable[[int], bool] = lambda c: False) -> List[Orphan]:
    """The unfinished chunks owned by dead tasks, each with the rows its taker must skip.

    The row in flight in a dead owner is skipped (it stays missing, blamed on its task, and
    runs again only if resubmitted: it may be what killed the node). It is the row its stop note
    names or, for a silent death, the first row of the chunk without a record. With
    ``keep_in_flight`` (a requeued task taking back its own chunks) it is run again instead.
    ``chunk_rows(c)`` gives a chunk's row ids in run order; ``unknown_dead(c)`` says whether a
    claim whose owner cannot be read is orphaned.
    """
    mine = {c: ch for c, ch in chains.items()
            if ch.owner[0] in dead or (ch.owner[0] < 0 and unknown_dead(c))}
    recorded.refresh({t for ch in mine.values() for t, _ in ch.owners if t >= 0})
    out: List[Orphan] = []
    for c, chain in sorted(mine.items()):
        owners = {t for t, _ in chain.owners if t >= 0}
        rows = chunk_rows(c)
        done = {r for r in rows if recorded.has(owners, r)}
        left = [r for r in rows if r not in done]
        if not left:
            continue
        lost: Optional[int] = None
        if not keep_in_flight:
            note = dead.get(chain.owner[0])
            at = note.get(chain.owner[1]) if note is not None else None
            if at is not None and at[0] == c:
                lost = at[1] if at[1] in left else None  # a row not begun loses nothing
            else:
                lost = left[0]
        if lost is not None:
            done.add(lost)
        if len(done) < len(rows):
            out.append(Orphan(c, chain.next_gen, chain.owner, frozenset(done), lost))
    return out


def unknown_owner_is_dead(job_dir: Path, sub: int, chunk: int, now: float) -> bool:
    """An empty claim (its writer was SIGKILLed between create and write) is orphaned once it
    is older than a lease."""
    mtime = _fresh_mtime(jd.claims_dir(job_dir, sub) / claims.claim_name(chunk))
    return mtime is not None and now - mtime > LEASE_S
