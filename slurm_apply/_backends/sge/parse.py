"""Pure parsers of what Grid Engine's commands print; tested on captured output (tests/test_sge_parse.py).

Nothing here runs a command: the backend will, and hand the text here. Task records speak the
package's state names (:mod:`.._backends.states`), not Grid Engine's letters.

Learnt on the private cell (Son of Grid Engine 8.1.9, tests/sgebed.py) beyond ../shared/sge-testbed.md:

* ``qstat -xml`` lists pending tasks as ranges (``3-10:1``) *and* as comma lists (``1,2``); a
  task being started is under "running" in state ``t`` for a moment; ``qmod -sj`` gives ``s``;
  a ``qdel``'d running task is ``dr`` until its processes are gone (a deleted pending task
  vanishes at once); a task that exits 100 stays ``Eqw``; a task whose script exits 99 is ``Rq``
  until it runs again. A plain (not array) job has no ``<tasks>``; ``qacct`` says
  ``taskid undefined`` for it. Times are local, without a zone (``2026-12-07T14:46:09``).
* ``qacct -j`` holds one record per *run*: a task rescheduled (exit 99, ``failed 25 :
  rescheduling``) has a record for each; the last one is its outcome. A task parked in ``Eqw``
  has a record (``failed 30 : application error returned``, exit 100) while ``qstat`` still
  lists it: ``qstat`` wins. ``maxvmem`` is ``0.000B`` for a task shorter than the execd's sampling.
  ``qacct -j N`` may also hold an older job of the same number (numbers wrap, a cell is rebuilt):
  ``since`` drops records submitted before ours.
* A segfault: ``failed 100``, exit 139 when the job script itself dies of SIGSEGV (our script
  ``exec``s Python); ``failed 0``, exit 139 when a child of the script did and bash exited 128+11.
  ``exit_status`` names the signal in brackets either way (``139 (Segmentation fault)``).
* ``failed 37`` ("qmaster enforced h_rt, h_cpu, or h_vmem limit") with exit 137: h_rt=2 was
  enforced at 2 s wallclock. We ask for no h_cpu, and h_vmem is a ``ulimit -v`` (no kill), so it
  is TIMEOUT.
* ``qdel`` of a running task and a SIGKILL from anyone else leave the same record
  (``failed 100 : assumedly after job``, exit 137 ``(Killed)``), and Grid Engine keeps no record
  of who deleted a job (``reporting=false``). So the backend's ``cancel()`` will write a note in
  the job directory (its time and the job ids) *before* it runs ``qdel``; such a record of a task
  that ended at or after the note's time is CANCELLED, and any other is KILLED "killed by SIGKILL"
  (:func:`outcome`, ``cancelled_at``). Deleted pending tasks leave no record at all: with no
  ``qstat`` line either, the note alone says they were cancelled.
* Without an accounting file (no job has ended since the cell was made) ``qacct -j N`` prints
  ``no jobs running since startup`` and ``<path>: No such file or directory``, exit 1; for a job
  not in it, ``error: job id N not found``, exit 1. A running job is "not found" too, and ``qacct``
  answers without the qmaster: "not found" means "not ended", never "forgotten", unless ``qstat``
  (which needs the qmaster) has answered that it does not know the job either.
* A qmaster that is down fails every client except ``qacct`` at once (0.1 s), exit 1:
  ``error: commlib error: got select error (Connection refused)`` and ``unable to send message to
  qmaster using port N on host "h": got send error`` (on stdout for ``qdel``).
* ``qsub -help`` lists six ``qconf`` options that qsub refuses (``-Ap -astnode -at -dul -mattr
  -srqs``) and omits nine it takes (``-ar -ckpt -clear -dl -pty -R -tc -terse -w``). An unknown
  option: ``qsub: invalid option argument "-x"``, exit 2. Resources are checked by the qmaster
  at submission: ``Unable to run job: unknown resource "x"``, exit 1; with ``-w e``, a request no
  queue can meet gives ``Unable to run job: error: no suitable queues``.
* The execd reports again to a restarted qmaster about 3 s after it is back if it had not
  talked to the old one since its own start, else about 31 s: until then the queue instance is
  ``u`` and no new task starts (running ones go on).
"""

from __future__ import annotations

import re
import signal
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..._errors import SchedulerError
from .. import states as st
from ..base import TaskRecord

# Records a qacct job number may hold from an earlier job: those submitted this long before ours
# are dropped (the clocks are one machine's or NTP's; qsub_time has one-second steps).
CLOCK_SLACK_S = 2.0

# qacct's "failed" codes this module names (sge_shepherd's exit codes, see "man accounting").
FAILED_NONE = 0
FAILED_RESCHEDULED = 25  # the script exited 99 (or the job was told to be rescheduled)
FAILED_APP_ERROR = 30  # the script exited 100: the task waits in state Eqw
FAILED_LIMIT = 37  # the qmaster enforced h_rt, h_cpu or h_vmem
FAILED_AFTER_JOB = 100  # the script was killed by a signal (qdel included)

# What qacct -j answered, besides records.
ACCT_NO_FILE = "no accounting file"
ACCT_NOT_FOUND = "job not found"

# What every client but qacct says when the qmaster does not answer.
_UNREACHABLE = ("unable to send message to qmaster", "commlib error")

# qsub -help of 8.1.9 lists these qconf options, which qsub refuses ...
_HELP_LISTS_WRONGLY = frozenset({"Ap", "astnode", "at", "dul", "mattr", "srqs"})
# ... and omits these, which it takes (name -> the argument, as the help would show it).
_HELP_OMITS = {"ar": "ar_id", "ckpt": "ckpt_name", "clear": "", "dl": "date_time", "pty": "y[es]|n[o]",
               "R": "y[es]|n[o]", "tc": "max_running_tasks", "terse": "", "w": "e|w|n|v|p"}

_TASK_SPEC = re.compile(r"^\d+(-\d+(:\d+)?)?(,\d+(-\d+(:\d+)?)?)*$")
_HELP_LINE = re.compile(r"^\s*\[-(\S+?)(?:\s+(.*?))?\]\s{2,}\S")
_MEMORY = re.compile(r"^([\d.]+)\s*([KMGTkmgt]?)B?$")
_MULTIPLIER = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4,
               "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_qsub(stdout: str) -> str:
    """The job number from ``qsub -terse``: ``3.1-4:1`` for an array, ``3`` for a plain job."""
    line = stdout.strip().splitlines()[-1].strip() if stdout.strip() else ""
    m = re.match(r"^(\d+)(\.\d+-\d+:\d+)?$", line)
    if not m:
        raise SchedulerError(f"expected qsub -terse to print a job id such as 3 or 3.1-4:1, got {stdout!r}")
    return m.group(1)


def expand_tasks(spec: str) -> List[int]:
    """Grid Engine's task list: ``3-10:1`` -> [3, ..., 10]; ``1,2`` and ``1,4-8:2`` too."""
    spec = spec.strip()
    if not _TASK_SPEC.match(spec):
        raise ValueError(f"expected a task list such as 3-10:1 or 1,2, got {spec!r}")
    out: List[int] = []
    for part in spec.split(","):
        first, _, rest = part.partition("-")
        last, _, step = rest.partition(":")
        out.extend(range(int(first), int(last or first) + 1, int(step or 1)))
    return out


def our_state(letters: str) -> Tuple[str, str]:
    """The package's state for a ``qstat`` state (``r``, ``qw``, ``hqw``, ``Eqw``, ``dr``, ``Rq``, ``s``...),
    with a reason to show beside it ("" when the state says it all).

    An error state (``E``) is FAILED: Grid Engine will not run the task again by itself. A state
    this does not know is passed on as printed (and read as ended).
    """
    s = letters.strip()
    if "E" in s:
        return st.FAILED, (f"Grid Engine holds the task in error state ({s}) and will not run it until "
                           "`qmod -cj <job>` clears it or `qdel <job>` removes it; `qstat -j <job>` says why")
    if "d" in s:
        if "r" in s or "t" in s:
            return st.RUNNING, f"being deleted ({s})"
        return st.CANCELLED, f"deleted ({s})"
    if any(c in s for c in "sST"):
        why = {"s": "by qmod -sj", "S": "by a subordinate queue", "T": "by a load threshold"}
        return st.SUSPENDED, "suspended " + " and ".join(why[c] for c in "sST" if c in s) + f" ({s})"
    if "r" in s or "t" in s:
        return st.RUNNING, "starting (t)" if s == "t" else ""
    if "h" in s:
        return st.PENDING, f"on hold ({s}): a hold or a -hold_jid dependency; `qstat -j <job>` says which"
    if "R" in s:
        return st.REQUEUED, f"rescheduled ({s}): it ran and will run again"
    if "q" in s or "w" in s:
        return st.PENDING, ""
    return s, ""


def parse_qstat_xml(text: str) -> Tuple[List[TaskRecord], Dict[str, TaskRecord]]:
    """``qstat -xml``: the array tasks (running ones one per record, pending ones one record per
    range or list, ``task`` None and ``pending_tasks`` set), and the plain jobs by job number
    (the follow-ups)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as error:
        raise SchedulerError(f"expected qstat -xml to print XML, got {text[:200]!r} ({error})") from None
    tasks: List[TaskRecord] = []
    jobs: Dict[str, TaskRecord] = {}
    for entry in root.iter("job_list"):
        job = (entry.findtext("JB_job_number") or "").strip()
        letters = (entry.findtext("state") or "").strip()
        if not job.isdigit() or not letters:
            continue
        state, reason = our_state(letters)
        queue = (entry.findtext("queue_name") or "").strip()
        node = queue.partition("@")[2]
        spec = entry.findtext("tasks")
        if spec is None:
            jobs[job] = TaskRecord(job, None, state, node_list=node, reason=reason)
            continue
        spec = spec.strip()
        if spec.isdigit():
            tasks.append(TaskRecord(job, int(spec), state, node_list=node, reason=reason))
            continue
        try:
            pending = tuple(expand_tasks(spec))
        except ValueError:
            continue  # a form this cannot read skips its line rather than failing the answer
        tasks.append(TaskRecord(job, None, state, node_list=node, reason=reason, pending_tasks=pending))
    return tasks, jobs


@dataclass(frozen=True)
class AcctRecord:
    """One run of one task, as ``qacct -j`` tells it."""

    job_id: str
    task: Optional[int]  # None for a plain job ("taskid undefined")
    failed: int
    failed_reason: str  # qacct's words after the code ("rescheduling", ...)
    exit_status: int
    exit_word: str  # qacct's name of 128+N ("Killed", "Segmentation fault"), or ""
    maxvmem: Optional[float]  # bytes
    wallclock_s: Optional[float]
    qsub_time: Optional[float]  # epoch seconds (qacct prints local time)
    start_time: Optional[float]
    end_time: Optional[float]
    hostname: str = ""
    jobname: str = ""
    slots: int = 1


def parse_qacct(text: str, since: Optional[float] = None) -> List[AcctRecord]:
    """The records of ``qacct -j <job>``, in the file's order (the order the runs ended). With
    ``since`` (when we submitted, epoch seconds), records of an earlier job of the same number
    are left out."""
    out: List[AcctRecord] = []
    for block in re.split(r"^={20,}\s*$", text, flags=re.M):
        fields: Dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.strip().partition(" ")
            if key:
                fields[key] = value.strip()
        if not fields.get("jobnumber", "").isdigit():
            continue
        failed, _, failed_reason = fields.get("failed", "").partition(":")
        code, _, word = fields.get("exit_status", "").partition("(")
        taskid = fields.get("taskid", "")
        if not failed.strip().isdigit() or not code.strip().isdigit():
            continue
        record = AcctRecord(
            job_id=fields["jobnumber"], task=int(taskid) if taskid.isdigit() else None,
            failed=int(failed), failed_reason=failed_reason.strip(), exit_status=int(code),
            exit_word=word.rstrip(")").strip(), maxvmem=memory_bytes(fields.get("maxvmem", "")),
            wallclock_s=seconds(fields.get("ru_wallclock", "")),
            qsub_time=parse_time(fields.get("qsub_time", "")),
            start_time=parse_time(fields.get("start_time", "")),
            end_time=parse_time(fields.get("end_time", "")),
            hostname=fields.get("hostname", ""), jobname=fields.get("jobname", ""),
            slots=int(fields["slots"]) if fields.get("slots", "").isdigit() else 1,
        )
        if since is not None and record.qsub_time is not None and record.qsub_time < since - CLOCK_SLACK_S:
            continue
        out.append(record)
    return out


def last_runs(records: Sequence[AcctRecord]) -> Dict[Optional[int], AcctRecord]:
    """Each task's last run (a rescheduled task has a record per run); key None for a plain job."""
    return {record.task: record for record in records}


def qacct_problem(returncode: int, stdout: str, stderr: str) -> Optional[str]:
    """Why ``qacct -j`` gave no records: :data:`ACCT_NO_FILE` (no accounting file: no job has
    ended since the cell was made, or accounting is off), :data:`ACCT_NOT_FOUND` (the job has not
    ended, or never existed), another message as printed, or None when it answered."""
    if returncode == 0:
        return None
    text = stdout + stderr
    if "No such file or directory" in text or "no jobs running since startup" in text:
        return ACCT_NO_FILE
    if re.search(r"job id \S+ not found", text):
        return ACCT_NOT_FOUND
    return " ".join(text.split()) or f"qacct exited {returncode} and printed nothing"


def qmaster_unreachable(text: str) -> bool:
    """Whether a client's output says the qmaster could not be reached (the answer is then
    unknown, not "no such job")."""
    return any(words in text for words in _UNREACHABLE)


def signal_name(number: int) -> str:
    """SIGKILL for 9 and so on; "signal N" for a number Linux does not name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def outcome(record: AcctRecord, cancelled_at: Optional[float] = None) -> Tuple[str, str, str]:
    """The package's state for a task's last run, a detail to show, and its exit code in the
    form ``exit:signal`` the other backends use (``7:0``; ``0:9`` for killed by SIGKILL).

    ``cancelled_at`` is when our ``cancel()`` noted it would ``qdel`` the job (None if it did not):
    a task killed by SIGKILL that ended at or after it is CANCELLED; otherwise FAILED.
    """
    code, failed = record.exit_status, record.failed
    if failed == FAILED_NONE:
        if code == 0:
            return st.COMPLETED, "", "0:0"
        if 128 < code < 128 + 65:
            return (st.FAILED, f"exit code {code}: a command of the script was killed by "
                    f"{signal_name(code - 128)}", f"{code}:0")
        return st.FAILED, f"exit code {code}", f"{code}:0"
    if failed == FAILED_LIMIT:
        ran = f" after {record.wallclock_s:.0f} s" if record.wallclock_s is not None else ""
        return st.TIMEOUT, f"killed at its time limit (h_rt){ran}", f"0:{code - 128}" if code > 128 else f"{code}:0"
    if failed == FAILED_AFTER_JOB and 128 < code < 128 + 65:
        number = code - 128
        if (number == signal.SIGKILL and cancelled_at is not None and record.end_time is not None
                and record.end_time >= cancelled_at - CLOCK_SLACK_S):
            return st.CANCELLED, "deleted (qdel) by cancel()", f"0:{number}"
        killed = f"killed by {signal_name(number)}"
        if number == signal.SIGKILL:
            # Grid Engine records these three alike; none is the rows' fault: KILLED is retried.
            return (st.KILLED, killed + " (qdel by someone, the kernel's out-of-memory killer, or an "
                    "administrator: Grid Engine records them alike)", f"0:{number}")
        return st.FAILED, killed, f"0:{number}"
    if failed == FAILED_RESCHEDULED:
        return st.REQUEUED, f"rescheduled (exit code {code}): it will run again", f"{code}:0"
    if failed == FAILED_APP_ERROR:
        return (st.FAILED, f"exit code {code}: Grid Engine holds the task in error state (Eqw) until "
                "`qdel` or `qmod -cj`", f"{code}:0")
    return (st.FAILED, f"Grid Engine could not run it: failed {failed} ({record.failed_reason}), "
            f"exit code {code}", f"{code}:0")


def acct_task_record(record: AcctRecord, cancelled_at: Optional[float] = None) -> TaskRecord:
    """A task's last run as the package's TaskRecord (``max_rss`` stays empty: qacct has
    ``maxvmem``, the address space, which ``AcctRecord.maxvmem`` keeps)."""
    state, detail, exit_code = outcome(record, cancelled_at)
    return TaskRecord(record.job_id, record.task, state, exit_code=exit_code,
                      elapsed=_clock(record.wallclock_s), node_list=record.hostname, reason=detail,
                      end_time=record.end_time)


def parse_qsub_help(text: str) -> Dict[str, str]:
    """The options qsub takes, from ``qsub -help``: name without the dash -> its argument as the
    help shows it ("" for a flag), corrected for what 8.1.9's help gets wrong (see above)."""
    out: Dict[str, str] = {}
    for line in text.splitlines():
        m = _HELP_LINE.match(line)
        if m:
            out[m.group(1)] = (m.group(2) or "").strip()
    if not out:
        raise SchedulerError(f"expected qsub -help to list options such as [-N name], got {text[:200]!r}")
    for name in _HELP_LISTS_WRONGLY:
        out.pop(name, None)
    for name, argument in _HELP_OMITS.items():
        out.setdefault(name, argument)
    return out


# What a process says when h_vmem (``ulimit -v``) refuses it memory outside a row: Python's
# MemoryError, a shared library that cannot be mapped (an import), OpenBLAS's and C++'s words.
_OUT_OF_ADDRESS_SPACE = re.compile(
    r"^(?:MemoryError\b.*|.*failed to map segment from shared object.*|.*Memory allocation still "
    r"failed.*|.*Cannot allocate memory.*|.*std::bad_alloc.*)$", re.M)
_TASK_HEADER = re.compile(r"^slurm_apply: submission \d+ task \d+ ", re.M)


def memory_death(log_text: str) -> Optional[Tuple[str, str]]:
    """(OUT_OF_MEMORY, detail) when the last run told in a task's log (it appends a header per
    start) ran out of address space outside its rows: the task's own processes hit h_vmem. A
    row that does is a row error, recorded with its row, and its task ends well; this is only
    read for a task that did not."""
    starts = [m.start() for m in _TASK_HEADER.finditer(log_text)]
    last = log_text[starts[-1]:] if starts else log_text
    found = list(_OUT_OF_ADDRESS_SPACE.finditer(last))
    if not found:
        return None
    return (st.OUT_OF_MEMORY, "the task's own processes ran out of memory under h_vmem (a limit on "
            f"their address space): {found[-1].group(0).strip()[:200]}")


def parse_job_name(script_text: str) -> Optional[str]:
    """The ``#$ -N`` value of a job script (one word: :func:`.script.directive_value`)."""
    for line in script_text.splitlines():
        if line.startswith("#$ -N "):
            return line[len("#$ -N "):].strip() or None
    return None


def find_by_script(qstat_j: str, script: str) -> Optional[str]:
    """The job number, of those ``qstat -j <name>`` describes, whose script is ``script`` (an
    absolute path; qstat gives ``script_file`` as qsub was given it, relative to
    ``sge_o_workdir``); the latest when several are; None when none is."""
    import os.path

    found: List[int] = []
    for block in re.split(r"^={20,}\s*$", qstat_j, flags=re.M):
        fields = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        number, path = fields.get("job_number", ""), fields.get("script_file", "")
        if not number.isdigit() or not path:
            continue
        where = os.path.normpath(os.path.join(fields.get("sge_o_workdir", ""), path))
        if where == os.path.normpath(script):
            found.append(int(number))
    return str(max(found)) if found else None


def qsub_refusal(stdout: str, stderr: str) -> str:
    """qsub's own words for why it refused a job, on one line (without "Unable to run job:"
    and "Exiting.")."""
    lines = [line.strip() for line in (stderr + "\n" + stdout).splitlines()]
    words = [re.sub(r"^Unable to run job:\s*", "", line) for line in lines if line and line != "Exiting."]
    return " ".join(words)


def parse_conf(text: str) -> Dict[str, str]:
    """``qconf -sq <queue>`` (and the other ``qconf -s...`` objects): ``name  value`` lines, a
    value that ends with a backslash going on on the next line."""
    out: Dict[str, str] = {}
    continued = ""
    for raw in text.splitlines():
        line = raw.strip()
        if continued:
            out[continued] = out[continued][:-1].rstrip() + " " + line
        elif line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            continued, out[key] = key, value.strip()
        else:
            continue
        if not out[continued].endswith("\\"):
            continued = ""
    return out


def memory_bytes(value: str) -> Optional[float]:
    """A Grid Engine memory figure in bytes: qacct's ``5.051MB``, ``0.000B``, ``4.359KB`` (powers
    of 1024) and the limits' ``4G``, ``200M`` (K, M, G, T: powers of 1024; k, m, g, t: of 1000).
    None for INFINITY, empty or anything else."""
    m = _MEMORY.match(value.strip())
    if not m:
        return None
    try:
        return float(m.group(1)) * _MULTIPLIER[m.group(2)]
    except ValueError:
        return None


def seconds(value: str) -> Optional[float]:
    """A duration in seconds: qacct's ``5s`` (or ``5``), a limit's ``0:0:5`` or ``00:05:00``;
    None for INFINITY, empty or anything else."""
    value = value.strip()
    m = re.match(r"^(\d+(?:\.\d+)?)s?$", value)
    if m:
        return float(m.group(1))
    parts = value.split(":")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        h, mi, s = (int(p) for p in parts)
        return float(h * 3600 + mi * 60 + s)
    return None


def parse_time(value: str) -> Optional[float]:
    """qacct's ``Mon Dec  7 14:46:33 2026`` or qstat's ``2026-12-07T14:46:09`` (local time) as
    epoch seconds; None for ``-/-``, empty or anything else."""
    value = " ".join(value.split())
    for form in ("%a %b %d %H:%M:%S %Y", "%Y-%m-%dT%H:%M:%S"):
        try:
            return time.mktime(time.strptime(value, form))
        except ValueError:
            continue
    return None


def _clock(value: Optional[float]) -> str:
    if value is None:
        return ""
    s = int(value)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
