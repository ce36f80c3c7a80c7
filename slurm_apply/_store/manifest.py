"""The typed model of a job directory's ``manifest.json``: what was asked, and every submission.

One JSON form, written and read here only, with a format version. A resubmission is derived
from the previous submission (:meth:`Submission.derive`), so it inherits everything it does not
override.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .._errors import JobDirError

FORMAT_VERSION = 3
# Format 2 also kept the whole parameter table in params.pkl; such a directory is read from it.
READABLE_FORMATS = (2, 3)

# A submission's life: written (script on disk), submitted (has a job id), failed (refused).
WRITTEN, SUBMITTED, FAILED = "written", "submitted", "failed"


@dataclass(frozen=True)
class Submission:
    """One array job of a job directory: the first run is 0, each resubmission adds one."""

    index: int
    script: str
    rows: Tuple[Tuple[int, int], ...]  # the row positions it runs, as [start, stop) ranges
    n_rows: int
    n_tasks: int
    cpus_per_task: int
    n_chunks: int
    nodes: int
    backend: str
    slurm_options: Dict[str, Any] = field(default_factory=dict)
    max_concurrent: Optional[int] = None
    state: str = WRITTEN
    job_id: Optional[str] = None
    written_at: float = 0.0
    submitted_at: Optional[float] = None
    error: str = ""
    submitted_by: str = ""  # "hand" for a script written with submit=False and run with sbatch
    setup: Tuple[str, ...] = ()  # shell lines run before the worker
    max_failures: Optional[float] = None  # rows (>= 1) or a fraction of them (< 1); see below

    @property
    def launched(self) -> bool:
        """It has a job id: its tasks were queued (and may have run)."""
        return bool(self.job_id)

    def failure_limit(self) -> Optional[int]:
        """After how many rows raise its tasks stop claiming chunks (None: never)."""
        if self.max_failures is None:
            return None
        if self.max_failures >= 1:
            return int(self.max_failures)
        return max(1, math.ceil(self.max_failures * self.n_rows))

    def row_positions(self) -> List[int]:
        return [r for a, b in self.rows for r in range(a, b)]

    def derive(self, **changes: Any) -> "Submission":
        """The next submission: this one's settings with ``changes``, not yet submitted."""
        fresh = dict(state=WRITTEN, job_id=None, submitted_at=None, error="", submitted_by="")
        fresh.update(changes)
        return dataclasses.replace(self, **fresh)

    def to_json(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["rows"] = [list(r) for r in self.rows]
        out["setup"] = list(self.setup)
        return out

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Submission":
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["rows"] = tuple((int(a), int(b)) for a, b in data["rows"])
        kwargs["setup"] = tuple(data.get("setup", ()))
        return cls(**kwargs)


@dataclass
class Manifest:
    """What a job is: its function and rows, where and how it runs, and its submissions."""

    jobname: str
    job_dir: str
    token: str  # the job's identity: a task of a replaced job refuses to write here
    created: str
    n_rows: int
    columns: List[str]
    function: str
    python: str
    python_version: str
    workdir: str
    pythonpath: Optional[str] = None
    objects: List[str] = field(default_factory=list)
    pkgs: List[str] = field(default_factory=list)
    seed: Optional[int] = None
    seed_arg: Optional[str] = None
    rows_per_chunk: Optional[int] = None
    payload_bytes: int = 0
    packages: Dict[str, str] = field(default_factory=dict)
    prepare_s: Optional[float] = None
    defaults: Dict[str, Any] = field(default_factory=dict)  # what the site defaults file gave
    more_args: List[str] = field(default_factory=list)  # names of the constant arguments
    submissions: List[Submission] = field(default_factory=list)
    format: int = FORMAT_VERSION

    @property
    def latest(self) -> Submission:
        return self.submissions[-1]

    def launched(self) -> List[Submission]:
        return [s for s in self.submissions if s.launched]

    def replace_submission(self, sub: Submission) -> None:
        self.submissions[sub.index] = sub

    def to_json(self) -> Dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["submissions"] = [s.to_json() for s in self.submissions]
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "manifest.json") -> "Manifest":
        if not isinstance(data, dict):
            raise JobDirError(f"{where} is corrupt: expected a JSON object")
        fmt = data.get("format")
        if fmt not in READABLE_FORMATS:
            raise JobDirError(_format_message(where, fmt))
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        try:
            kwargs["submissions"] = [Submission.from_json(s) for s in data.get("submissions", [])]
            return cls(**kwargs)
        except (TypeError, KeyError, ValueError) as exc:
            raise JobDirError(f"{where} is corrupt: {type(exc).__name__}: {exc}") from None


def _format_message(where: str, fmt: Any) -> str:
    if fmt == 1:
        return (f"{where} was written by slurm_apply 0.1 (job directory format 1); this version "
                f"reads format {FORMAT_VERSION}, whose result records differ. Read its results with "
                "slurm_apply 0.1 (pip install 'slurm_apply==0.1.*'), or run the job again.")
    return (f"{where} has format {fmt!r}; this slurm_apply reads format {FORMAT_VERSION}. "
            "It was probably written by a newer slurm_apply: upgrade to read it.")


def merge_options(old: Dict[str, Any], new: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """A resubmission's sbatch options: the previous ones with ``new`` over them."""
    out = dict(old)
    out.update(new or {})
    return out


def ranges(rows: Sequence[int]) -> Tuple[Tuple[int, int], ...]:
    """[0, 1, 2, 5, 6] -> ((0, 3), (5, 7)): a compact record of which rows a submission runs."""
    out: List[List[int]] = []
    for r in rows:
        if out and out[-1][1] == r:
            out[-1][1] = r + 1
        else:
            out.append([r, r + 1])
    return tuple((a, b) for a, b in out)
