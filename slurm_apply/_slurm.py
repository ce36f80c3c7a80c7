"""The only module that runs Slurm commands.

Each command has a thin runner and a pure parser; the parsers are tested on literal output.
No command goes through a shell: arguments are lists.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence

from ._errors import SchedulerError, SubmissionError

COMMAND_TIMEOUT_S = 60


_available: Dict[tuple, bool] = {}


def have_sbatch() -> bool:
    return shutil.which("sbatch") is not None


def available() -> bool:
    """True when this machine can submit to a Slurm cluster.

    sbatch on PATH is not enough: Debian installs the client without a cluster. We also need a
    configuration (SLURM_CONF, /etc/slurm/slurm.conf) or, for a "configless" site, a controller
    that answers ``scontrol ping``.
    """
    key = (os.environ.get("PATH", ""), os.environ.get("SLURM_CONF", ""))
    if key not in _available:
        ok = have_sbatch()
        if ok:
            conf = os.environ.get("SLURM_CONF")
            candidates = [conf] if conf else ["/etc/slurm/slurm.conf", "/etc/slurm-llnl/slurm.conf"]
            if not any(c and os.path.exists(c) for c in candidates):
                try:
                    ok = _run(["scontrol", "ping"], timeout_s=10).returncode == 0
                except SchedulerError:
                    ok = False
        _available[key] = ok
    return _available[key]


def _run(args: Sequence[str], timeout_s: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        raise SchedulerError(f"{args[0]} is not on PATH; is Slurm installed on this machine?") from None
    except subprocess.TimeoutExpired:
        raise SchedulerError(f"`{' '.join(args)}` did not answer within {timeout_s:.0f} s") from None


# --- sbatch ------------------------------------------------------------------------------------


def parse_sbatch(stdout: str) -> str:
    """``sbatch --parsable`` prints ``<jobid>`` or ``<jobid>;<cluster>``."""
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id = line.split(";")[0].strip()
    if not job_id.isdigit():
        raise SchedulerError(f"could not read a job id from sbatch's output: {stdout!r}")
    return job_id


def sbatch(script: os.PathLike, cwd: os.PathLike) -> str:
    """Submit a script; return the job id. A refusal raises SubmissionError with sbatch's words."""
    proc = _run(["sbatch", "--parsable", os.fspath(script)])
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip()
        raise SubmissionError(f"sbatch refused the job: {msg}", stderr=msg)
    return parse_sbatch(proc.stdout)


# --- scancel -----------------------------------------------------------------------------------


def scancel(job_ids: Iterable[str]) -> None:
    ids = [j for j in job_ids if j]
    if not ids:
        return
    proc = _run(["scancel", *ids])
    if proc.returncode != 0 and "Invalid job id" not in proc.stderr:
        raise SchedulerError(f"scancel failed: {proc.stderr.strip()}")


# --- scheduler records -------------------------------------------------------------------------


@dataclass
class TaskRecord:
    """What the scheduler says about one array task."""

    array_job_id: str
    task: Optional[int]  # None for a line that stands for several pending tasks
    state: str  # COMPLETED, FAILED, TIMEOUT, ... (first word: "CANCELLED by 0" -> CANCELLED)
    exit_code: str = ""
    elapsed: str = ""
    max_rss: str = ""  # from the .batch step, e.g. "412M"
    req_mem: str = ""
    node_list: str = ""
    reason: str = ""
    time_limit: str = ""
    pending_tasks: List[int] = field(default_factory=list)  # for a collapsed pending line


_ARRAY_ID = re.compile(r"^(\d+)_(\d+|\[[^\]]*\])$")


def expand_task_ranges(spec: str) -> List[int]:
    """``[0-3,7%2]`` -> [0, 1, 2, 3, 7] (a ``%N`` throttle suffix is ignored)."""
    spec = spec.strip("[]").split("%")[0]
    out: List[int] = []
    for part in spec.split(","):
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            step = 1
            if ":" in b:
                b, s = b.split(":", 1)
                step = int(s)
            out.extend(range(int(a), int(b) + 1, step))
        else:
            out.append(int(part))
    return out


def _split_id(job_id: str) -> Optional[tuple]:
    m = _ARRAY_ID.match(job_id)
    if not m:
        return None
    array_id, task = m.groups()
    if task.startswith("["):
        return array_id, None, expand_task_ranges(task)
    return array_id, int(task), []


def parse_sacct(text: str) -> List[TaskRecord]:
    """Parse ``sacct --parsable2 --noheader -o JobID,State,ExitCode,Elapsed,MaxRSS,ReqMem,NodeList,Timelimit``.

    The allocation line (``123_4``) gives state, exit code, elapsed and nodes; the ``.batch`` step
    line gives the memory the script used. Tasks not yet started share one line (``123_[2-5]``).
    """
    records: Dict[tuple, TaskRecord] = {}
    steps: Dict[tuple, str] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 7:
            continue
        job_id, state, exit_code, elapsed, max_rss, req_mem, nodes = parts[:7]
        limit = parts[7] if len(parts) > 7 else ""
        base, _, step = job_id.partition(".")
        split = _split_id(base)
        if split is None:
            continue
        array_id, task, pending = split
        key = (array_id, task if task is not None else base)
        if step:
            if step == "batch" and max_rss:
                steps[key] = max_rss
            continue
        records[key] = TaskRecord(
            array_job_id=array_id, task=task, state=state.split()[0] if state else "",
            exit_code=exit_code, elapsed=elapsed, req_mem=req_mem, node_list=nodes,
            pending_tasks=pending, time_limit=limit,
        )
    for key, rss in steps.items():
        if key in records:
            records[key].max_rss = rss
    return list(records.values())


ACCOUNTING_DISABLED = "accounting storage is disabled"


def sacct(array_job_ids: Sequence[str]) -> Optional[List[TaskRecord]]:
    """One batched sacct call for all the array jobs; None when the cluster keeps no accounting."""
    if not array_job_ids:
        return []
    proc = _run([
        "sacct", "--parsable2", "--noheader", "-j", ",".join(array_job_ids),
        "-o", "JobID,State,ExitCode,Elapsed,MaxRSS,ReqMem,NodeList,Timelimit",
    ])
    if proc.returncode != 0:
        if ACCOUNTING_DISABLED in (proc.stderr + proc.stdout).lower():
            return None
        raise SchedulerError(f"sacct failed: {(proc.stderr or proc.stdout).strip()}")
    return parse_sacct(proc.stdout)


SQUEUE_FORMAT = "%F|%K|%T|%r|%N|%M|%l|%m"


def parse_squeue(text: str) -> List[TaskRecord]:
    """Parse ``squeue -h -r -t all -o '%F|%K|%T|%r|%N|%M|%l|%m'``."""
    out: List[TaskRecord] = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 8:
            continue
        array_id, task, state, reason, nodes, elapsed, limit, mem = parts[:8]
        if not array_id.isdigit():
            continue
        if task.isdigit():
            rec = TaskRecord(array_id, int(task), state, elapsed=elapsed, node_list=nodes,
                             reason=reason, req_mem=mem, time_limit=limit)
        else:
            rec = TaskRecord(array_id, None, state, elapsed=elapsed, node_list=nodes, reason=reason,
                             req_mem=mem, time_limit=limit, pending_tasks=expand_task_ranges(task))
        out.append(rec)
    return out


def squeue(array_job_ids: Sequence[str]) -> List[TaskRecord]:
    """Tasks the controller still knows (queued, running, or ended within MinJobAge)."""
    if not array_job_ids:
        return []
    proc = _run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(array_job_ids),
                 "-o", SQUEUE_FORMAT])
    if proc.returncode != 0:
        # squeue fails for ids it has already forgotten; that is "nothing known", not an error.
        if "Invalid job id" in proc.stderr:
            return []
        raise SchedulerError(f"squeue failed: {proc.stderr.strip()}")
    return parse_squeue(proc.stdout)


def find_array_job(jobname: str, script: str) -> Optional[str]:
    """The array job id of a script submitted by hand (``sbatch submit.sh``), found by its name
    and its script's absolute path, or None when the controller does not know it."""
    proc = _run(["squeue", "-h", "-t", "all", "-n", jobname, "-o", "%F|%o"])
    if proc.returncode != 0:
        return None
    return parse_find_array_job(proc.stdout, script)


def parse_find_array_job(text: str, script: str) -> Optional[str]:
    for line in text.splitlines():
        array_id, _, command = line.strip().partition("|")
        if array_id.isdigit() and command.strip() == script:
            return array_id
    return None


# --- scontrol ----------------------------------------------------------------------------------


def parse_scontrol_config(text: str) -> Dict[str, str]:
    """``scontrol show config`` lines ``Key  = value`` -> {Key: value}."""
    out: Dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            out[key.strip()] = value.strip()
    return out


_config_cache: Dict[str, Dict[str, str]] = {}


def config() -> Dict[str, str]:
    """The controller's configuration (cached per SLURM_CONF for this process)."""
    key = os.environ.get("SLURM_CONF", "")
    if key not in _config_cache:
        proc = _run(["scontrol", "show", "config"])
        if proc.returncode != 0:
            raise SchedulerError(f"scontrol show config failed: {proc.stderr.strip()}")
        _config_cache[key] = parse_scontrol_config(proc.stdout)
    return _config_cache[key]


def max_array_size() -> int:
    """Array task ids must be below MaxArraySize (default 1001)."""
    try:
        return int(config().get("MaxArraySize", "1001"))
    except ValueError:
        return 1001
