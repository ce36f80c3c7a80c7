"""The typed model of a job directory's ``manifest.json``: what was asked, and every submission.

One JSON form, written and read here only, with a format version. A resubmission is derived
from the previous submission (:meth:`Submission.derive`), so it inherits everything it does not
override. An automatic retry is a submission too: it says which submission it retries
(``retry_of``), for what (``retried_for``) and what it raised (``raised``); the submission it
retries records what its follow-up decided (``decision``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .._errors import JobDirError

FORMAT_VERSION = 3
# Format 2 also kept the whole parameter table in params.pkl; such a directory is read from it.
# Format 4 is format 3 grown by extend(): rows of the table are also in the params.bin of the
# submissions that added them (``Submission.added``), which a reader of format 3 would not see.
EXTENDED_FORMAT = 4
READABLE_FORMATS = (2, 3, EXTENDED_FORMAT)

# A submission's life: written (script on disk), submitted (has a job id), failed (refused).
WRITTEN, SUBMITTED, FAILED = "written", "submitted", "failed"
# What a follow-up decided once its submission had ended.
RETRIED, NOTHING, STOPPED, GAVE_UP, SUPERSEDED = "retried", "nothing", "stopped", "gave up", "superseded"
Ranges = Tuple[Tuple[int, int], ...]


@dataclass(frozen=True)
class RetryPolicy:
    """How a job retries rows whose task died: set once, by ``slurm_apply(retries=...)``."""

    retries: int = 0  # automatic retries per row (0: none)
    retry_errors: bool = False  # rows that raised are retried too
    max_mem: Optional[str] = None  # the most memory a retry may ask for (sbatch form)
    max_time: Optional[str] = None  # the longest time limit a retry may ask for

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Optional[Dict[str, Any]]) -> "RetryPolicy":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


@dataclass(frozen=True)
class Decision:
    """What the follow-up of a submission decided, once every task of it had ended."""

    action: str  # RETRIED, NOTHING, STOPPED, GAVE_UP or SUPERSEDED
    at: float
    detail: str = ""
    retry: Optional[int] = None  # the submission that retries its rows (RETRIED)
    given_up: Dict[str, Ranges] = field(default_factory=dict)  # why not retried -> rows

    def to_json(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["given_up"] = {k: [list(r) for r in v] for k, v in self.given_up.items()}
        return out

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Decision":
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["given_up"] = {k: _ranges_of(v) for k, v in data.get("given_up", {}).items()}
        return cls(**kwargs)


def _ranges_of(data: Any) -> Ranges:
    return tuple((int(a), int(b)) for a, b in data)


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
    # Automatic retries: how many retries deep this is (0: the first run, or one by hand), what
    # it retries, what it raised ({"mem": ["200M", "400M"]}), and its own follow-up.
    attempt: int = 0
    retry_of: Optional[int] = None
    retried_for: Dict[str, Ranges] = field(default_factory=dict)  # task state -> rows
    raised: Dict[str, Tuple[str, str]] = field(default_factory=dict)
    followup: str = ""  # the follow-up's script: decides what to retry once this one has ended
    followup_id: Optional[str] = None  # its job id, where the backend gives one
    followup_error: str = ""  # why it could not be submitted
    decision: Optional[Decision] = None
    # It runs rows extend() added to the job: its params.bin is where the table keeps them.
    added: bool = False
    # Chains (slurm_apply(after=...)): the script of its gate, which decides once the upstream
    # jobs have ended whether it may run (_job/gate.py), and the gate's job id where the backend
    # gives one.
    gate: str = ""
    gate_id: Optional[str] = None

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
        fresh: Dict[str, Any] = dict(
            state=WRITTEN, job_id=None, submitted_at=None, error="", submitted_by="", attempt=0,
            retry_of=None, retried_for={}, raised={}, followup="", followup_id=None,
            followup_error="", decision=None, added=False, gate="", gate_id=None)
        fresh.update(changes)
        return dataclasses.replace(self, **fresh)

    def to_json(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["rows"] = [list(r) for r in self.rows]
        out["setup"] = list(self.setup)
        out["retried_for"] = {k: [list(r) for r in v] for k, v in self.retried_for.items()}
        out["raised"] = {k: list(v) for k, v in self.raised.items()}
        out["decision"] = self.decision.to_json() if self.decision else None
        return out

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Submission":
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["rows"] = tuple((int(a), int(b)) for a, b in data["rows"])
        kwargs["setup"] = tuple(data.get("setup", ()))
        kwargs["retried_for"] = {k: _ranges_of(v) for k, v in data.get("retried_for", {}).items()}
        kwargs["raised"] = {k: (str(v[0]), str(v[1])) for k, v in data.get("raised", {}).items()}
        decision = data.get("decision")
        kwargs["decision"] = Decision.from_json(decision) if decision else None
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
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    retries_stopped: str = ""  # why automatic retries were stopped (cancel()), "" while they go on
    # The jobs it runs after (slurm_apply(after=...)): [{"job_dir": ..., "jobname": ..., "token": ...}]
    after: List[Dict[str, str]] = field(default_factory=list)
    submissions: List[Submission] = field(default_factory=list)
    format: int = FORMAT_VERSION

    @property
    def latest(self) -> Submission:
        return self.submissions[-1]

    def launched(self) -> List[Submission]:
        return [s for s in self.submissions if s.launched]

    def wants_followup(self, sub: Submission) -> bool:
        """Whether ``sub`` gets a follow-up that retries its rows whose task died."""
        return self.retry.retries > sub.attempt and not self.retries_stopped

    def table_parts(self) -> List[Tuple[int, int, int]]:
        """Where the table's rows are stored: (submission, first row, end row) for the first
        submission (the table as slurm_apply was given it) and each one extend() added."""
        first = self.submissions[0]
        parts = [(0, 0, first.n_rows)]
        parts += [(s.index, s.rows[0][0], s.rows[-1][1]) for s in self.submissions if s.added]
        return parts

    def superseded_by(self, k: int) -> Optional[int]:
        """The later submission that runs rows of submission ``k`` again (a resubmission or a
        retry), which its follow-up leaves the rows to; None if none does. A submission of
        added rows (extend()) runs other rows, so it supersedes nothing."""
        mine = self.submissions[k].rows
        for s in self.submissions[k + 1:]:
            if not s.added and _overlap(mine, s.rows):
                return s.index
        return None

    def replace_submission(self, sub: Submission) -> None:
        self.submissions[sub.index] = sub

    def put_submission(self, sub: Submission) -> None:
        """Replace submission ``sub.index``, or add it when it is the next one."""
        if sub.index == len(self.submissions):
            self.submissions.append(sub)
        elif 0 <= sub.index < len(self.submissions):
            self.submissions[sub.index] = sub
        else:
            raise JobDirError(f"submission {sub.index} cannot be recorded: the manifest has "
                              f"{len(self.submissions)} (was the job directory replaced?)")

    def to_json(self) -> Dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["submissions"] = [s.to_json() for s in self.submissions]
        out["retry"] = self.retry.to_json()
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
            kwargs["retry"] = RetryPolicy.from_json(data.get("retry"))
            return cls(**kwargs)
        except (TypeError, KeyError, ValueError) as exc:
            raise JobDirError(f"{where} is corrupt: {type(exc).__name__}: {exc}") from None


def _format_message(where: str, fmt: Any) -> str:
    if fmt == 1:
        return (f"{where} was written by slurm_apply 0.1 (job directory format 1); this version "
                f"reads format {FORMAT_VERSION}, whose result records differ. Read its results with "
                "slurm_apply 0.1 (pip install 'slurm_apply==0.1.*'), or run the job again.")
    return (f"{where} has format {fmt!r}; this slurm_apply reads formats up to "
            f"{max(READABLE_FORMATS)}. "
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


def _overlap(a: Ranges, b: Ranges) -> bool:
    """Whether two sorted lists of [start, stop) ranges share a row."""
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i][0] < b[j][1] and b[j][0] < a[i][1]:
            return True
        if a[i][1] <= b[j][1]:
            i += 1
        else:
            j += 1
    return False
