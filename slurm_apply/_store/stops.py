"""``max_failures`` on disk: each process's count of rows that raised, and the stop file.

Each task process publishes its count in the *name* of one small file,
``s<k>/failures/t0003-p812.17`` (task 3, pid 812, 17 rows), renamed as the count grows: the job's
count is then one listing of that directory, no file opened. When the sum reaches the limit a
process writes ``s<k>/stop.json`` (the node's side of this is ``_node/budget.py``).

The stop file is made empty with the submission and written in place, never created or
renamed later: opening an existing file makes an NFS client fetch its attributes afresh
(close-to-open consistency), where a file that did not exist may be taken as still absent
from the client's cache for up to a minute. Its one write is a block of STOP_BYTES (the JSON
padded with spaces), so two processes that stop at once leave one whole note, not a mix.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple, Union

from . import layout as jd

if TYPE_CHECKING:
    from .manifest import Submission

STOP_BYTES = 4096


@dataclass(frozen=True)
class StopNote:
    """Why a submission stopped early: the stop file's contents."""

    failed: int = 0  # rows that raised, as counted (the login side adds later counts)
    limit: Optional[int] = None  # the limit in rows
    max_failures: Union[int, float, None] = None  # as the user gave it (a count or a fraction)
    at: float = 0.0  # when
    by: str = ""  # which process wrote it
    first: str = ""  # the first error it saw ("ValueError: ...")

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def from_json(cls, data: object) -> "StopNote":
        if not isinstance(data, dict):
            return cls()  # torn: stopped all the same
        def num(key: str) -> Optional[float]:
            v = data.get(key)
            return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None
        return cls(failed=int(num("failed") or 0), limit=_int(num("limit")),
                   max_failures=num("max_failures"), at=float(num("at") or 0.0),
                   by=str(data.get("by", "")), first=str(data.get("first", "")))


def _int(v: Optional[float]) -> Optional[int]:
    return None if v is None else int(v)


def prepare(job_dir: Path, sub: int) -> None:
    """Make the submission's empty stop file (before any of its tasks runs)."""
    jd.write_bytes(jd.stop_path(job_dir, sub), b"")


def read_stop(job_dir: Path, sub: int) -> Optional[StopNote]:
    """The stop note, or None while the submission has not stopped (or has no stop file)."""
    try:
        with open(jd.stop_path(job_dir, sub), "rb") as fh:
            data = fh.read(STOP_BYTES)
    except OSError:
        return None
    if not data.strip():
        return None
    try:
        return StopNote.from_json(json.loads(data))
    except ValueError:
        return StopNote()  # torn: stopped all the same


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


def stop_written(job_dir: Path, sub: int) -> bool:
    """Whether the stop note is written (an open and an fstat: asked before each claim)."""
    try:
        fd = os.open(jd.stop_path(job_dir, sub), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        return os.fstat(fd).st_size > 0
    finally:
        os.close(fd)


def publish_count(job_dir: Path, sub: int, stem: str, old: int, new: int) -> None:
    """A process's count of rows that raised goes from ``old`` (0: not yet published) to ``new``."""
    d = jd.failures_dir(job_dir, sub)
    if old:
        os.replace(d / f"{stem}.{old}", d / f"{stem}.{new}")
    else:
        d.mkdir(exist_ok=True)
        (d / f"{stem}.{new}").touch()


def write_stop(job_dir: Path, sub: int, note: StopNote) -> bool:
    """Write the stop note in place; False if the job directory is gone."""
    block = note.to_json()[:STOP_BYTES].ljust(STOP_BYTES)
    try:
        fd = os.open(jd.stop_path(job_dir, sub), os.O_WRONLY)
    except FileNotFoundError:
        return False
    try:
        os.pwrite(fd, block, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def read_stops(job_dir: Path, subs: List["Submission"]) -> Dict[int, StopNote]:
    """For the login side: the stop notes of submissions that stopped early, ``failed`` being
    the rows that raised in them as their processes last counted (one listing each)."""
    out: Dict[int, StopNote] = {}
    for s in subs:
        if s.max_failures is None:
            continue  # no stop file can exist: not even a stat
        note = read_stop(job_dir, s.index)
        if note is not None:
            out[s.index] = dataclasses.replace(
                note, failed=max(note.failed, total_failures(job_dir, s.index)))
    return out
