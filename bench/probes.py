"""What the benchmark reads besides its own clocks: Slurm's logs and accounting, the kernel's memory
high-water marks, the Slurm commands a process runs, and slurm_apply's task markers.

Every time here is wall-clock (``time.time()``): the cluster's daemons, the tasks and the benchmark
all run on this one machine, so their clocks agree.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

SLURM_CLIENTS = frozenset({"sbatch", "squeue", "sacct", "scontrol", "scancel", "sinfo", "srun", "sacctmgr"})

_STAMP = r"\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})\]"
_ALLOC = re.compile(_STAMP + r" (?:sched: Allocate|backfill: Started) JobId=(\d+)_(\d+)\((\d+)\)")
_COMPLETE = re.compile(_STAMP + r" _job_complete: JobId=(\d+)_(\d+)\((\d+)\) done")
_SUBMIT = re.compile(_STAMP + r" _slurm_rpc_submit_batch_job: JobId=(\d+)\b")
_LAUNCH = re.compile(_STAMP + r" Launching batch job (\d+) for UID")


def _stamp(text: str) -> float:
    # Slurm logs local time with milliseconds; a naive datetime's timestamp() reads it as local.
    return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f").timestamp()


def array_timeline(log_dir: Path, array_id: str) -> Dict[str, Any]:
    """Submission, and each task's allocation, launch and completion, from the daemons' logs.

    Returns ``{"submitted": t, "tasks": {task: {"job_id", "allocated", "launched", "completed"}}}``
    (times in seconds since the epoch, to the millisecond; a key is missing when its line is).
    """
    out: Dict[str, Any] = {"submitted": None, "tasks": {}}
    tasks: Dict[int, Dict[str, Any]] = out["tasks"]
    by_job: Dict[str, int] = {}
    ctld = _read(log_dir / "slurmctld.log")
    for m in _SUBMIT.finditer(ctld):
        if m.group(2) == array_id:
            out["submitted"] = _stamp(m.group(1))
    for m in _ALLOC.finditer(ctld):
        if m.group(2) == array_id:
            task = int(m.group(3))
            tasks.setdefault(task, {})["job_id"] = m.group(4)
            tasks[task]["allocated"] = _stamp(m.group(1))
            by_job[m.group(4)] = task
    for m in _COMPLETE.finditer(ctld):
        if m.group(2) == array_id:
            tasks.setdefault(int(m.group(3)), {})["completed"] = _stamp(m.group(1))
    for log in sorted(log_dir.glob("slurmd-*.log")):
        for m in _LAUNCH.finditer(_read(log)):
            task = by_job.get(m.group(2))
            if task is not None:
                tasks[task]["launched"] = _stamp(m.group(1))
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _run(args: List[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def wait_idle(timeout_s: float = 120.0) -> float:
    """Block until the cluster runs and queues nothing (the previous measurement's jobs, and
    rslurm's dummy waiting job, are gone); return how long that took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        proc = _run(["squeue", "-h", "-o", "%i"])
        if proc.returncode == 0 and not proc.stdout.strip():
            return time.monotonic() - t0
        time.sleep(0.1)
    raise RuntimeError(f"the cluster still has jobs after {timeout_s:.0f} s:\n{_run(['squeue']).stdout}")


def sacct_tasks(array_id: str, want_steps: bool = False, timeout_s: float = 20.0) -> Dict[int, Dict[str, Any]]:
    """{task: {"alloc_cpus", "state", "max_rss_kb" (of the .batch step)}} from accounting.

    slurmdbd records a finished step a moment after the task ends, so this retries until every
    task (and, with ``want_steps``, every .batch step's MaxRSS) is there.
    """
    deadline = time.monotonic() + timeout_s
    out: Dict[int, Dict[str, Any]] = {}
    while True:
        proc = _run(["sacct", "-j", array_id, "--parsable2", "--noheader",
                     "-o", "JobID,AllocCPUS,State,MaxRSS"])
        out = {}
        steps: Dict[int, Optional[int]] = {}
        for line in proc.stdout.splitlines():
            parts = line.split("|")
            if len(parts) < 4:
                continue
            job, cpus, state, rss = parts[:4]
            base, _, step = job.partition(".")
            m = re.fullmatch(r"(\d+)_(\d+)", base)
            if not m or m.group(1) != array_id:
                continue
            task = int(m.group(2))
            if not step:
                out[task] = {"alloc_cpus": int(cpus or 0), "state": state}
            elif step == "batch":
                steps[task] = parse_size_kb(rss)
        for task, kb in steps.items():
            if task in out:
                out[task]["max_rss_kb"] = kb
        complete = bool(out) and all(
            not want_steps or out[t].get("max_rss_kb") is not None for t in out)
        if complete or time.monotonic() > deadline:
            return out
        time.sleep(0.25)


def parse_size_kb(text: str) -> Optional[int]:
    """sacct's ``412K`` / ``1.5M`` / ``2G`` -> KB (a bare number is bytes)."""
    text = text.strip()
    if not text:
        return None
    units = {"K": 1, "M": 1024, "G": 1024 ** 2, "T": 1024 ** 3}
    if text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(float(text) / 1024)


def _comm(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/comm", "rb") as fh:
            return fh.read().strip()
    except OSError:
        return b""


class RssMonitor:
    """Peak resident memory of every process of an array job's tasks, from the kernel.

    A thread looks every ``interval_s`` for processes whose environment has
    ``SLURM_JOB_NAME=<jobname>`` and a ``SLURM_ARRAY_TASK_ID`` (the tasks' batch scripts and all
    their children), and reads ``VmHWM`` from ``/proc/PID/status``: the kernel's own high-water
    mark of the process's resident set since its last exec. So a peak between two looks is never
    missed; only growth in the last ``interval_s`` before a process exits can be. Unlike sacct's
    MaxRSS (sampled once per JobAcctGatherFrequency, 1 s here, and summed over a step's
    processes), it is exact per process. A forked child starts with its parent's high-water
    mark, so the sum over a task's processes over-counts where the worker forks; the largest
    process is the figure to compare.
    """

    def __init__(self, jobname: str, interval_s: float = 0.02) -> None:
        self.want = f"SLURM_JOB_NAME={jobname}".encode()
        self.interval_s = interval_s
        self.procs: Dict[int, Dict[str, Any]] = {}  # pid -> {"task", "comm", "hwm_kb"}
        self._skip: set = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-monitor", daemon=True)

    def __enter__(self) -> "RssMonitor":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                pid = int(entry)
                if pid in self._skip or pid == me:
                    continue
                if pid not in self.procs:
                    task = self._task_of(pid)
                    if task is None:
                        # slurmstepd forks a task's process and sets its environment at exec: a
                        # child still named slurmstepd is looked at again on the next pass.
                        if _comm(pid) != b"slurmstepd":
                            self._skip.add(pid)
                        continue
                    self.procs[pid] = {"task": task, "comm": "", "hwm_kb": 0}
                self._sample(pid)
            self._stop.wait(self.interval_s)

    def _task_of(self, pid: int) -> Optional[int]:
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            return None
        if self.want not in env:
            return None
        for item in env:
            if item.startswith(b"SLURM_ARRAY_TASK_ID="):
                return int(item.split(b"=", 1)[1])
        return None

    def _sample(self, pid: int) -> None:
        try:
            with open(f"/proc/{pid}/status", "rb") as fh:
                status = fh.read().decode(errors="replace")
        except OSError:
            return
        rec = self.procs[pid]
        for line in status.splitlines():
            if line.startswith("Name:"):
                rec["comm"] = line.split(None, 1)[1] if len(line.split()) > 1 else ""
            elif line.startswith("VmHWM:"):
                rec["hwm_kb"] = max(rec["hwm_kb"], int(line.split()[1]))

    def per_task(self) -> Dict[int, Dict[str, Any]]:
        """{task: {"largest_process_kb", "sum_kb", "processes": [(comm, kb), ...]}}."""
        out: Dict[int, Dict[str, Any]] = {}
        for rec in self.procs.values():
            if not rec["hwm_kb"]:
                continue
            t = out.setdefault(rec["task"], {"largest_process_kb": 0, "sum_kb": 0, "processes": []})
            t["largest_process_kb"] = max(t["largest_process_kb"], rec["hwm_kb"])
            t["sum_kb"] += rec["hwm_kb"]
            t["processes"].append((rec["comm"], rec["hwm_kb"]))
        return out


class SlurmCommandLog:
    """Records every Slurm client command this process starts (``sacct``, ``squeue``, ...), with
    the time it started, by wrapping ``subprocess.Popen`` for the duration of a ``with`` block.

    An independent count beside ``SlurmJob.scheduler_queries``: it sees every command, whichever
    code path ran it.
    """

    def __init__(self) -> None:
        self.calls: List[Tuple[float, str]] = []

    def __enter__(self) -> "SlurmCommandLog":
        self._orig = subprocess.Popen
        calls = self.calls
        orig = self._orig

        class _Recording(orig):  # type: ignore[misc, valid-type]
            def __init__(self, args: Any, *a: Any, **k: Any) -> None:
                first = args.split()[0] if isinstance(args, str) and args.strip() else \
                    args if isinstance(args, (bytes, os.PathLike)) else next(iter(args), "")
                name = os.path.basename(os.fsdecode(first)) if first else ""
                if name in SLURM_CLIENTS:
                    calls.append((time.time(), name))
                super().__init__(args, *a, **k)

        subprocess.Popen = _Recording  # type: ignore[misc]
        return self

    def __exit__(self, *exc: Any) -> None:
        subprocess.Popen = self._orig  # type: ignore[misc]

    def since(self, t: float, names: Optional[set] = None) -> List[Tuple[float, str]]:
        return [(ts, n) for ts, n in self.calls if ts >= t and (names is None or n in names)]


def task_markers(job_dir: Path, sub: int = 0) -> Dict[int, Dict[str, Any]]:
    """{task: its end marker's fields} of a submission, read through slurm_apply's own store."""
    from slurm_apply._store import markers

    return {task: m.end.to_json() for task, m in markers.read(job_dir, sub).items() if m.end}
