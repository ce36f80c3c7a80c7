"""A crash costs one row, and the job finishes without you: on the real cluster, with no call
to resubmit(). Each test ends with every row done or failed with its own error (or, for a
lost node, missing with NODE_FAIL as the reason) and no row run more than twice."""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import Dict, List

import pandas as pd
import pytest

from slurm_apply import SlurmJob, slurm_apply
from slurm_apply._store import claims

N_ROWS = 40


def crashes(x: int) -> int:
    """Notes that it started row x (RUNS/<task>.<pid>), works 0.2 s, and dies as FAULTS says."""
    import ctypes
    import os
    import sys
    import time

    with open(os.path.join(RUNS, f"{os.environ['SLURM_ARRAY_TASK_ID']}.{os.getpid()}"), "a") as fh:
        fh.write(f"{x}\n")
    time.sleep(DELAY)
    fault = FAULTS.get(x)
    if fault == "segfault":
        ctypes.string_at(0)
    elif fault == "sys.exit":
        sys.exit(f"bad input for row {x}")
    elif fault == "os._exit":
        os._exit(3)
    elif fault == "SIGKILL":
        os.kill(os.getpid(), 9)
    return x * x


def start(parent: Path, name: str, faults: Dict[int, str], n: int = N_ROWS, delay: float = 0.2,
          **kw) -> SlurmJob:
    runs = parent / f"{name}.runs"
    runs.mkdir()
    kw.setdefault("nodes", 2)
    kw.setdefault("cpus_per_node", 2)
    kw.setdefault("rows_per_chunk", 10)
    return slurm_apply(crashes, pd.DataFrame({"x": range(n)}), jobname=name, job_dir=parent,
                       add_objects={"RUNS": str(runs), "FAULTS": faults, "DELAY": delay}, **kw)


def runs(job: SlurmJob, task: int = -1) -> Dict[str, List[int]]:
    """{"<task>.<pid>": rows that process started} (of one task, if given)."""
    d = job.job_dir.parent / f"{job.jobname}.runs"
    return {p.name: [int(x) for x in p.read_text().split()] for p in d.iterdir()
            if task < 0 or p.name.startswith(f"{task}.")}


def times_run(job: SlurmJob) -> collections.Counter:
    return collections.Counter(r for rows in runs(job).values() for r in rows)


EXPECTED = {
    "segfault": ("WorkerDied", "the process running row {x} was killed by SIGSEGV (a crash in compiled code)"),
    "sys.exit": ("SystemExit", "bad input for row {x}"),
    "os._exit": ("WorkerDied", "the process running row {x} exited with code 3 before the row returned "
                               "(os._exit, or exit() in compiled code)"),
    "SIGKILL": ("WorkerDied", "the process running row {x} was killed by SIGKILL (the kernel's "
                              "out-of-memory killer, or a kill by hand)"),
}


def check_crashed(job: SlurmJob, faults: Dict[int, str], started: float) -> None:
    """Every row done but the faulty ones, each failed with its own error; nothing resubmitted."""
    status = job.wait(timeout_s=120, progress=False)
    print(status, f"\nwall time {time.monotonic() - started:.1f} s")
    assert status.completed and status.rows_missing == 0, str(status)
    assert status.failed_rows == sorted(faults) and status.rows_done == N_ROWS - len(faults)
    assert set(status.tasks.values()) == {"COMPLETED"}, str(status)
    errors = job.get_errors()
    for x, fault in faults.items():
        etype, message = EXPECTED[fault]
        assert errors[x][:2] == (etype, message.format(x=x)), errors[x]
    kept = job.get_output(errors="keep")
    assert list(kept.result.drop(sorted(faults))) == [x * x for x in range(N_ROWS) if x not in faults]
    counts = times_run(job)
    assert sorted(counts) == list(range(N_ROWS)) and max(counts.values()) <= 2, counts
    assert all(counts[x] == 1 for x in faults)  # the row that killed its process is not rerun
    assert len(job.manifest.submissions) == 1  # no resubmit()


@pytest.mark.parametrize("fault", ["segfault", "sys.exit", "os._exit", "SIGKILL"])
def test_a_dying_row_costs_only_that_row(cluster, job_parent, fault):
    """Row 5 of 40 (chunks of 10, 4 processes, rows of 0.2 s) dies: rows 6-9 still run."""
    t = time.monotonic()
    job = start(job_parent, fault.replace(".", "_").lower(), {5: fault})
    check_crashed(job, {5: fault}, t)
    log = job.log_path(0, 0).read_text() + job.log_path(0, 1).read_text()
    if fault != "sys.exit":
        assert "a replacement goes on with its chunk" in log


def test_every_kind_of_death_in_one_job_without_accounting(cluster_noacct, job_parent):
    faults = {5: "segfault", 15: "sys.exit", 25: "os._exit", 35: "SIGKILL"}
    t = time.monotonic()
    check_crashed(start(job_parent, "all_deaths", faults), faults, t)


def test_a_lost_node_costs_only_its_rows_in_flight(cluster, job_parent):
    """Three tasks on three nodes; the node of task 1 is killed (slurmd and every process of
    its job, as a power cut would) a few seconds in. Tasks 0 and 2 take over its chunks once
    its heartbeat is LEASE_S old; the rows it had in flight are missing, blamed on NODE_FAIL.

    Tasks 0 and 2 have work for longer than that (about 25 s after the kill), so they take
    over as they run out of chunks of their own, not while lingering: on this testbed Slurm
    calls the node failed about 25 s after the kill, when a lingering task may just be about
    to take over (test_node.py shows lingering tasks taking over).

    retries=0: the takeover alone is shown here; test_retries_cluster.py shows the rows in
    flight retried by the follow-up."""
    t, n = time.monotonic(), 240
    job = start(job_parent, "node_lost", {}, n=n, delay=0.5, nodes=3, cpus_per_node=2,
                rows_per_chunk=5, slurm_options={"no-requeue": True}, retries=0)
    deadline = time.monotonic() + 120
    while len(runs(job, 1)) < 2 or sum(len(r) for r in runs(job, 1).values()) < 4:
        assert time.monotonic() < deadline, "task 1 did not start its rows"
        time.sleep(0.2)
    victim = json.loads((job.job_dir / "s0" / "tasks" / "t0001.start").read_text())["starts"][-1]["node"]
    cluster.kill_node(victim)
    killed = time.monotonic()
    try:
        status = job.wait(timeout_s=240, progress=False)
    finally:
        cluster.restart_node(victim)
    print(status, f"\nwall time {time.monotonic() - t:.1f} s, {killed - t:.1f} s to the kill")
    assert status.tasks == {0: "COMPLETED", 1: "NODE_FAIL", 2: "COMPLETED"}, str(status)
    done = set(range(n)) - set(status.missing_rows)
    in_flight = {r for rows in runs(job, 1).values() for r in rows} - done
    assert 1 <= len(in_flight) <= 2 and set(status.missing_rows) == in_flight, (in_flight, str(status))
    assert all(status.missing_reasons[r].startswith("task 1: NODE_FAIL") for r in in_flight)
    assert status.rows_done == n - len(in_flight) and status.rows_failed == 0
    counts = times_run(job)
    assert max(counts.values()) == 1, counts  # the lost rows are not run again
    chains = claims.ClaimReader(job.job_dir, 0).chains()
    taken = [c for c, ch in chains.items() if ch.owners[0][0] == 1 and ch.owner[0] != 1]
    assert taken, "no chunk of task 1 was taken over"
    assert set(claims.read_lost(job.job_dir, 0)) <= in_flight
    assert len(job.manifest.submissions) == 1
