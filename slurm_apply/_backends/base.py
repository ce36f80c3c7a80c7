"""What every backend offers, and the answers a scheduler query gives.

A backend turns a written submission (its array script in the job directory) into running
tasks, and answers, per task, what the scheduler knows of it. Nothing outside ``_backends``
asks which backend a submission uses: the rest of the package calls these methods.

An answer per task is one of:

* a :class:`TaskRecord`: the scheduler's own record of the task (state, exit code, ...);
* ``None``: the scheduler was asked and no longer knows the task (it forgot it, or it never
  existed): the task is not queued or running;
* an :class:`Unknown`: the scheduler could not be asked (its commands are not on PATH, the
  controller does not answer, ...). It is never read as "forgotten".

A submission may also have a follow-up (automatic retries, :mod:`slurm_apply._job.followup`): a small
job that starts once every task of the submission has ended. A query answers for it in the same
forms, in :attr:`Query.followups`.

Chains (``slurm_apply(after=...)``): a submission may have to wait for jobs of the same backend
(the upstream jobs). The one way a backend is told is :meth:`Backend.submit_gated`: besides the
array it runs the submission's *gate* (its script ``sub.gate``, :mod:`slurm_apply._job.gate`), a
small job that starts once the given upstream job ids have all ended however they ended, and
decides: it exits 0 when every row of every upstream job is done (the array may start), and
anything else when one never will be (the array must never run). The array waits for the gate's
exit status (on Slurm ``afterok``). A gate that closes calls :meth:`Backend.gate_closed`, so the
array leaves nothing in the queue on a scheduler that would keep it waiting.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, Union

if TYPE_CHECKING:
    from .._store.manifest import Submission


@dataclass(frozen=True)
class TaskRecord:
    """What the scheduler says about one array task."""

    array_job_id: str
    task: Optional[int]  # None for a line that stands for several pending tasks
    state: str  # the package's name (``states``): COMPLETED, FAILED, TIMEOUT, ..., not the scheduler's
    exit_code: str = ""
    elapsed: str = ""
    max_rss: str = ""  # from the .batch step, e.g. "412M"
    req_mem: str = ""
    node_list: str = ""
    reason: str = ""
    time_limit: str = ""
    end_time: Optional[float] = None  # when the task ended (epoch seconds), if the scheduler said
    pending_tasks: Tuple[int, ...] = ()  # for a collapsed pending line


@dataclass(frozen=True)
class Unknown:
    """The scheduler could not be asked about a task; ``why`` says what went wrong."""

    why: str


Answer = Union[TaskRecord, Unknown, None]
TaskKey = Tuple[int, int]  # (submission index, task index)


@dataclass
class Query:
    """The answers of one query: ``answers[(sub, task)]``, plus notes on how they were got
    (e.g. "sacct failed (...); squeue answered instead"), shown with the status."""

    answers: Dict[TaskKey, Answer] = field(default_factory=dict)
    followups: Dict[int, Answer] = field(default_factory=dict)  # submission -> its follow-up
    notes: List[str] = field(default_factory=list)
    calls: int = 0  # scheduler commands run (the benchmark counts them)


@dataclass(frozen=True)
class Limits:
    """The most a submission's partition lets a job ask for (None: no limit known)."""

    max_time_s: Optional[float] = None
    max_mem_mb: Optional[float] = None  # per node
    max_mem_per_cpu_mb: Optional[float] = None
    partition: str = ""
    # Where each limit comes from, in the scheduler's words ("" : the partition's MaxTime, ...).
    max_time_from: str = ""
    max_mem_from: str = ""
    max_mem_per_cpu_from: str = ""


def control_characters(value: str) -> List[str]:
    """The newlines and other control characters in ``value``, as their reprs: any of them would
    end a line of a job script early, and the rest would become a line nobody checked."""
    return sorted({repr(ch) for ch in value if ord(ch) < 32 or 127 <= ord(ch) < 160
                   or ch in "\u2028\u2029"})


OptionValue = Union[str, int, float, bool]


@dataclass(frozen=True)
class ArrayHeader:
    """What the scheduler's part of an array script says: one task per index 0..n_tasks-1."""

    jobname: str
    n_tasks: int
    max_concurrent: Optional[int]  # at most this many tasks at once (None: no limit)
    cpus_per_task: int
    log: Callable[[str], Path]  # a task's log path, given the text that stands for its index
    options: Mapping[str, OptionValue]  # the user's own options, normalized and checked


@dataclass(frozen=True)
class FollowupHeader:
    """What the scheduler's part of a follow-up script says: one CPU, this memory and time
    (in the dialect's own forms), and the options it shares with its array."""

    jobname: str  # the array's job name (the follow-up's own is derived from it)
    log: Path
    mem: str
    time: str
    options: Mapping[str, OptionValue]  # the array's options; the dialect keeps those it shares
    kind: str = "retry"  # what it is, for its job name (``<jobname>.retry``; a chain's gate: "gate")


class Dialect(Protocol):
    """The forms of one scheduler's job script and options: what the generic layers write and
    read through it (for Slurm, ``slurm/dialect.py``).

    A job script is the dialect's header (:meth:`array_header`), then a generic bash body that
    starts with the dialect's :meth:`task_environment` lines. Those lines export, from the
    scheduler's own variables, the neutral ones an array task reads (``_node/taskenv.py``).
    """

    SHORT: Mapping[str, str]  # one-letter option -> its long name
    #: option keys the package sets itself (a user's value for one would break the job's layout)
    OWNED: Tuple[str, ...]
    #: the scheduler's variables of a job's environment (names starting so), which a process that
    #: submits another job from inside one must forget; JOB_ENV_KEPT: those it keeps
    JOB_ENV_PREFIXES: Tuple[str, ...]
    JOB_ENV_KEPT: Tuple[str, ...]
    #: what a stand-in runner (the local backend) sets for a task, as the scheduler would: variable
    #: -> a template over {task} (0-based), {task1} (1-based), {job_id} and {node}
    STAND_IN: Mapping[str, str]
    #: option keys that carry a task's time limit and its memory, the first of each the one a
    #: retry sets when the user gave none; MEM_PER_CPU: the memory key whose value is per CPU
    TIME_KEYS: Tuple[str, ...]
    MEM_KEYS: Tuple[str, ...]
    MEM_PER_CPU: str

    def unknown_name(self, key: str) -> Optional[str]:
        """Why ``key`` (a long name or one letter) is not an option, or None."""

    def bad_value(self, key: str, value: object) -> Optional[str]:
        """Why ``value`` is not a form the scheduler takes for ``key``, or None."""

    def normalize_key(self, key: str) -> str:
        """One spelling per option (``--job_name``, ``job_name`` -> ``job-name``)."""

    def bad_key(self, key: str) -> Optional[str]:
        """Why a normalized key cannot render as exactly one option ("is not an ... option name
        (...)"), or None."""

    def owns(self, key: str) -> bool:
        """Whether the scheduler would read ``key`` as one of the OWNED options."""

    def header_value(self, value: str) -> str:
        """``value`` as it goes in a header line, read back exactly; raises InputError when it
        cannot go there (a control character, text that is not UTF-8)."""

    def array_header(self, spec: ArrayHeader) -> List[str]:
        """The header lines of an array script (after ``#!/bin/bash``)."""

    def followup_header(self, spec: FollowupHeader) -> List[str]:
        """The header lines of a follow-up script (after ``#!/bin/bash``)."""

    def task_environment(self, log: Optional[Callable[[str], Path]] = None) -> List[str]:
        """Bash lines that export every neutral task variable (``_node/taskenv.py``) from the
        scheduler's own, each one set (empty when the scheduler's is not there), so none is
        inherited from the environment of whoever submitted the job. ``log`` (a task's log
        path, given the text that stands for its index) is for a scheduler that cannot name
        the log itself: its lines may send the task's output there."""

    def run_lines(self, command: str) -> List[str]:
        """The body's last lines, which run ``command`` (shell-quoted already): ``exec`` it
        where the scheduler may see its exit status as it is."""

    def time_s(self, text: object) -> Optional[float]:
        """Seconds of a time limit in the scheduler's forms (``math.inf``: unlimited); None when
        ``text`` is not one."""

    def time_text(self, seconds: float) -> str:
        """Seconds as the scheduler takes a time limit."""

    def mem_mb(self, text: object) -> Optional[float]:
        """MiB of a memory size in the scheduler's forms; None when ``text`` is not one."""

    def mem_text(self, mb: float, like: object = "") -> str:
        """MiB as the scheduler takes a memory size, in the unit of ``like`` where it can."""

    def mem_is_per_cpu(self, text: object) -> bool:
        """Whether a memory size the scheduler reported (``TaskRecord.req_mem``) is per CPU."""


def submit_after(first: Callable[[], str], then: Callable[[str], str],
                 undo: Callable[[str], None]) -> Tuple[str, str]:
    """Submit ``first``, then ``then(first's id)`` (a job that waits for the first); when the
    second is refused, take the first back (``undo``, best effort) so neither stays queued, and
    raise. Returns (first's id, second's id)."""
    from .._errors import SchedulerError, SubmissionError

    first_id = first()
    try:
        return first_id, then(first_id)
    except SubmissionError:
        try:
            undo(first_id)
        except SchedulerError:
            pass
        raise


class Backend(abc.ABC):
    """Submits array scripts and answers for their tasks; ``dialect`` is the form of the job
    scripts it runs (given by the registry: ``_backends.get``)."""

    def __init__(self, dialect: Optional[Dialect] = None) -> None:
        self.dialect = dialect

    #: the name recorded in a submission ("slurm", "local")
    name: str = ""
    #: a query costs no more than reading a file, so a status may make it whenever it is built
    query_is_cheap: bool = False
    #: its tasks run on this machine and go on after the submitting process ends
    tasks_outlive_caller: bool = False
    #: words the scheduler writes into a task's log when it kills the task: a wait that sees
    #: one asks the scheduler at once rather than at its usual pace
    kill_marks: Tuple[str, ...] = ()

    @abc.abstractmethod
    def submit(self, job_dir: Path, sub: "Submission") -> str:
        """Start the submission's array script; return its job id.

        Raises SubmissionError (with the scheduler's own words) when it is refused or the
        scheduler does not answer in time.
        """

    @abc.abstractmethod
    def query(self, job_dir: Path, subs: Sequence["Submission"]) -> Query:
        """An answer for every task of every given (submitted) submission; never raises
        because the scheduler could not be asked: those tasks are :class:`Unknown`."""

    @abc.abstractmethod
    def cancel(self, job_dir: Path, subs: Sequence["Submission"]) -> None:
        """Cancel the queued and running tasks of these submissions."""

    def cancel_followups(self, job_dir: Path, subs: Sequence["Submission"]) -> None:
        """Cancel the follow-ups of these submissions, and nothing else: their tasks have ended
        (cancelling one that is still ending would record it as cancelled)."""
        self.cancel(job_dir, subs)

    def submit_followup(self, job_dir: Path, sub: "Submission") -> Optional[str]:
        """Have the follow-up script ``sub.followup`` run once every task of ``sub`` (already
        submitted) has ended; return its job id, or None when the backend runs it itself.
        Raises SubmissionError when it cannot be arranged."""
        from .._errors import SubmissionError

        raise SubmissionError(f"the {self.name} backend cannot run a follow-up")

    def submit_gated(self, job_dir: Path, sub: "Submission",
                     upstream: Sequence[str]) -> Tuple[str, Optional[str]]:
        """Submit ``sub`` so that its array starts only once its gate (the script ``sub.gate``)
        has ended with exit status 0; the gate itself starts once every job in ``upstream``
        (job ids of this backend: arrays, follow-ups, gates) has ended, whatever their states
        (none: at once). Return (the array's job id, the gate's job id or None when the backend
        runs the gate itself). Raises SubmissionError as submit() does, leaving neither queued."""
        from .._errors import SubmissionError

        raise SubmissionError(f"the {self.name} backend cannot run a job after another (after=)")

    def gate_closed(self, job_dir: Path, sub: "Submission") -> None:
        """The gate of ``sub`` (running now) decided its array never runs: make sure the array
        leaves nothing queued (cancel it, where the scheduler would keep it waiting). Called
        from the gate's own job, so it must not cancel the gate."""
        return None

    def limits(self, options: Dict[str, object]) -> Limits:
        """The limits of the partition these sbatch options submit to (none known here)."""
        return Limits()

    def check_usable(self, requested: str) -> None:
        """Raise InputError when this backend cannot run jobs here (``requested`` is what the
        caller asked for, e.g. "auto" or "slurm", for the message)."""
        return None  # usable by default

    def check_resources(self, cpus_per_task: int, options: Mapping[str, object]) -> None:
        """Raise InputError when tasks of ``cpus_per_task`` CPUs with these (checked) options
        cannot be asked for here (e.g. no parallel environment to put them in): called before
        anything is written."""
        return None

    def max_array_size(self) -> Optional[int]:
        """The most tasks one array may have (None: no limit)."""
        return None

    def adopt(self, job_dir: Path, sub: "Submission") -> Optional[str]:
        """The job id of a submission written with submit=False and started by hand, if the
        scheduler knows it; None otherwise."""
        return None

    def death_in_log(self, text: str) -> Optional[Tuple[str, str]]:
        """How a task died, as (state, detail), from what the scheduler wrote into its log (the
        tail of its output file): e.g. ("OUT_OF_MEMORY", "used 401M of 200M allowed"). The last
        death told wins (a requeued task appends to its log). None when the log tells of none,
        or the scheduler writes no such lines."""
        return None

    def memory_limit_in_log(self, text: str) -> Optional[float]:
        """The memory limit (MiB) the scheduler says in a task's log it enforced when it killed
        the task; None when the log does not say."""
        return None

    def row_error_note(self, sub: "Submission", error_type: str) -> Optional[str]:
        """What the scheduler has to do with rows of ``sub`` that raised ``error_type`` (e.g. a
        memory limit it enforces as a limit on address space, which Python meets as a
        MemoryError), and how to change it; None when nothing."""
        return None

    def launch_notice(self, sub: "Submission") -> Optional[str]:
        """A line to tell the user when the submission starts (None: nothing to say)."""
        return None
