"""A task's markers, as typed records: its starts, its end, and the note it leaves when stopped.

Files in ``s<sub>/tasks/`` (JSON; written by :class:`.taskfiles.TaskFiles`, read here):

* ``t0003.start``: ``{"starts": [Start, ...]}``, one entry per start (a requeued task has several);
* ``t0003.idle``: ``{"since": time}``: out of rows, it watches its siblings and may take over theirs;
* ``t0003.done``: an :class:`End`, the task's last write: it ran out of rows and takes over nothing more;
* ``t0003.live``: the heartbeat (its mtime); a task stopped by SIGTERM writes :class:`Stopped` into it.

Reading is lenient, as a status must be: a field that is missing or of the wrong type takes its
default, and a file that cannot be read counts as absent. The JSON keys are those earlier
versions wrote, so a job directory written by one is read the same.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type, TypeVar

from . import layout as jd

T = TypeVar("T")


def _typed(cls: Type[T], data: object) -> T:
    """``cls`` from a JSON object, keeping only the fields whose values have the right type."""
    if not isinstance(data, dict):
        return cls()
    kept: Dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        value, want = data[f.name], f.type if isinstance(f.type, str) else ""
        if value is None or _fits(value, want):
            kept[f.name] = value
    return cls(**kept)


def _fits(value: object, want: str) -> bool:
    """Whether a JSON value suits a field annotated ``want`` (the annotation's text)."""
    plain = want.replace("Optional[", "").rstrip("]")
    if plain == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if plain == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if plain == "str":
        return isinstance(value, str)
    if plain == "bool":
        return isinstance(value, bool)
    if want.startswith("List["):
        return isinstance(value, list)
    return True


@dataclass(frozen=True)
class Start:
    """One start of a task: when, where, and what the scheduler called it."""

    time: float = 0.0
    node: str = ""
    job_id: Optional[str] = None
    array_job_id: Optional[str] = None
    restart_count: int = 0
    pid: Optional[int] = None


@dataclass(frozen=True)
class ProcStats:
    """What one worker process of a task did (for the end marker and the benchmark)."""

    proc: int = 0
    rows: int = 0
    errors: int = 0
    loop_s: float = 0.0
    first_row_at: Optional[float] = None
    claim_s: float = 0.0
    claim_creates: int = 0
    claim_listings: int = 0


@dataclass(frozen=True)
class End:
    """The end marker: the task ran out of rows (or gave up) and will do nothing more."""

    ok: bool = False
    failures: List[str] = field(default_factory=list)  # why it gave up, when it did
    rows: int = 0
    errors: int = 0
    loop_s: float = 0.0
    procs: List[ProcStats] = field(default_factory=list)
    first_row_at: Optional[float] = None
    deaths: List[str] = field(default_factory=list)  # its worker processes that died, and how
    took_over: List[int] = field(default_factory=list)  # chunks it took over from dead tasks
    node: str = ""
    started: float = 0.0
    payload_loaded: Optional[float] = None
    ended: float = 0.0

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: object) -> "End":
        end = _typed(cls, data)
        procs = [_typed(ProcStats, p) for p in end.procs]
        return dataclasses.replace(end, procs=procs, failures=[str(f) for f in end.failures],
                                   deaths=[str(d) for d in end.deaths],
                                   took_over=[int(c) for c in end.took_over if isinstance(c, int)])


@dataclass(frozen=True)
class TaskMarkers:
    """Every marker of one task."""

    starts: Tuple[Start, ...] = ()
    end: Optional[End] = None
    idle_since: Optional[float] = None

    @property
    def started(self) -> bool:
        return bool(self.starts)

    @property
    def last_start(self) -> Optional[Start]:
        return self.starts[-1] if self.starts else None

    def end_of_last_start(self) -> Optional[End]:
        """The end marker if it belongs to the latest start: a requeued task's old one says nothing."""
        if self.end is None:
            return None
        if self.starts and self.end.started + 1e-6 < self.starts[-1].time:
            return None
        return self.end

    @property
    def ended_well(self) -> bool:
        """Its latest start ended with every row of its chunks on disk (it gave up on none)."""
        end = self.end_of_last_start()
        return end is not None and end.ok

    @property
    def node(self) -> str:
        """Where it last ran ("" when it never started)."""
        end = self.end_of_last_start()
        if end is not None and end.node:
            return end.node
        return self.starts[-1].node if self.starts else ""


def starts_from_json(data: object) -> Tuple[Start, ...]:
    starts = data.get("starts") if isinstance(data, dict) else None
    return tuple(_typed(Start, s) for s in starts) if isinstance(starts, list) else ()


def starts_to_json(starts: Tuple[Start, ...]) -> Dict[str, Any]:
    return {"starts": [dataclasses.asdict(s) for s in starts]}


def read(job_dir: Path, sub: int) -> Dict[int, TaskMarkers]:
    """The markers of every task of a submission that has any: {task: markers} (one listing)."""
    found: Dict[int, Dict[str, object]] = {}
    d = jd.tasks_dir(job_dir, sub)
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return {}
    for name in names:
        parsed = jd.parse_task_file(name)
        if parsed is None or parsed[1] not in ("start", "done", "idle"):
            continue
        try:
            found.setdefault(parsed[0], {})[parsed[1]] = jd.read_json(d / name)
        except (FileNotFoundError, ValueError):
            continue
    return {task: of_files(files) for task, files in found.items()}


def of_files(files: Mapping[str, object]) -> TaskMarkers:
    """A task's markers from its files' JSON contents, by kind ("start", "done", "idle")."""
    idle = files.get("idle")
    since = idle.get("since") if isinstance(idle, dict) else None
    return TaskMarkers(
        starts=starts_from_json(files.get("start")),
        end=End.from_json(files["done"]) if "done" in files else None,
        idle_since=float(since) if isinstance(since, (int, float)) else None)


# -- the note a task stopped by SIGTERM leaves in its heartbeat ---------------------------------

#: process -> (chunk, row) it was running when the task stopped
InFlight = Dict[int, Tuple[int, int]]


@dataclass(frozen=True)
class Stopped:
    """The heartbeat's note: the task stopped (SIGTERM), and which rows were in flight."""

    in_flight: InFlight

    def to_json(self) -> Dict[str, Any]:
        return {"stopped": True, "in_flight": {str(p): list(cr) for p, cr in self.in_flight.items()}}


def read_stopped(heartbeat: Path) -> Optional[Stopped]:
    """The stop note of a heartbeat, or None if it has none (alive, or died without a word)."""
    try:
        note = jd.read_json(heartbeat)
        return Stopped({int(p): (int(c), int(r)) for p, (c, r) in note["in_flight"].items()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
