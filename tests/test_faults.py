"""Breaking the real cluster: every fault is classified, no finished row is lost, and resubmit()
completes the job with each row exactly once, equal to a plain loop. (Automatic retries of the
same faults: tests/test_retries_cluster.py.)"""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest

from slurm_apply import RowsFailedError, RowsMissingError, SlurmJob, slurm_apply

import early


def work(x: int) -> dict:
    """Fails in the way FAULT (a file path, sent with add_objects) says, while that file exists."""
    import os
    import time

    mode = open(FAULT).read().strip() if os.path.exists(FAULT) else ""
    if mode == f"raise:{x % 5}":
        raise ValueError(f"row {x} was told to fail")
    if mode == "memory" and x == 7:
        hog = b"x" * (400 << 20)  # touched pages: 400 MB of RSS against a 300M limit
        time.sleep(8)
        del hog
    if mode == "sleep" and x == 7:
        time.sleep(600)
    if mode == "slow":
        time.sleep(1.2)
    return {"y": x * x + 1}


def plain_loop(n: int) -> list:
    return [x * x + 1 for x in range(n)]


@contextlib.contextmanager
def on(cluster, monkeypatch) -> Iterator[None]:
    """Point Slurm commands at one of the two clusters (both run at once in some tests)."""
    for k, v in cluster.env().items():
        monkeypatch.setenv(k, v)
    yield


def start(parent: Path, name: str, mode: str, n: int = 20, **kw) -> SlurmJob:
    fault = parent / f"{name}.fault"
    fault.write_text(mode)
    kw.setdefault("nodes", 2)
    kw.setdefault("cpus_per_node", 1)
    # These tests look at how each fault is classified and then run resubmit() by hand;
    # automatic retries (tests/test_retries.py) would rerun the rows first.
    kw.setdefault("retries", 0)
    return slurm_apply(work, pd.DataFrame({"x": range(n)}), add_objects={"FAULT": str(fault)},
                       jobname=name, job_dir=parent, **kw)


def heal_and_resubmit(job: SlurmJob, n: int, **kw) -> None:
    """Remove the fault, rerun what is missing (or failed), and check the result is the loop's."""
    (job.job_dir.parent / f"{job.jobname}.fault").unlink()
    job.resubmit(**kw)
    status = job.wait(timeout_s=180, progress=False)
    assert status.completed and status.rows_failed == 0, str(status)
    out = job.get_output()
    assert list(out.y) == plain_loop(n)
    assert list(out.x) == list(range(n))  # each row exactly once, in order
    assert len(job.manifest.submissions) == 2


def wait_rows(job: SlurmJob, at_least: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while job.get_job_status(ask_scheduler=False).rows_done < at_least:
        assert time.monotonic() < deadline, "rows did not arrive in time"
        time.sleep(0.2)


# --- (a) f raises on some rows, on both kinds of cluster ------------------------------------------


def test_rows_that_raise(any_cluster, job_parent):
    job = start(job_parent, "raises", "raise:3", n=20, cpus_per_node=2)
    status = job.wait(timeout_s=120, progress=False)
    assert status.completed  # every row has a result or an error
    assert status.failed_rows == [3, 8, 13, 18]
    assert status.rows_done == 16 and status.rows_missing == 0
    assert set(status.tasks.values()) == {"COMPLETED"}
    assert "failed rows: 3, 8, 13, 18 (first: row 3: ValueError: row 3 was told to fail)" in str(status)
    with pytest.raises(RowsFailedError, match=r"4 of 20 rows raised: rows 3, 8, 13, 18") as err:
        job.get_output()
    assert "row 3 was told to fail" in str(err.value.__cause__)  # the remote traceback
    kept = job.get_output(errors="keep")
    assert kept.error.notna().sum() == 4 and list(kept.y.dropna()) == [
        v for i, v in enumerate(plain_loop(20)) if i % 5 != 3]
    heal_and_resubmit(job, 20, failed=True)


# --- (b) memory, (e) scancel of part of the array: both kinds of cluster ----------------------


def test_task_over_its_memory(any_cluster, job_parent):
    # 300M: a task's own interpreters (pandas imported) use about 200M; seen above 200M once.
    job = start(job_parent, "memory", "memory", n=20, nodes=2, slurm_options={"mem": "300M"},
                rows_per_chunk=1)
    status = job.wait(timeout_s=120, progress=False)
    killed = [d for d in status.task_details if d.state != "COMPLETED"]
    assert len(killed) == 1, str(status)
    assert killed[0].state == "OUT_OF_MEMORY", str(status)
    assert "of 300M" in killed[0].reason or "300M" in killed[0].reason, str(status)
    assert status.rows_missing >= 1 and 7 in status.missing_rows
    assert all("OUT_OF_MEMORY" in status.missing_reasons[r] for r in status.missing_rows)
    assert status.rows_done == 20 - status.rows_missing  # every other row kept
    print(status)
    with pytest.raises(RowsMissingError, match="OUT_OF_MEMORY"):
        job.get_output()
    heal_and_resubmit(job, 20, slurm_options={"mem": "600M"})


def test_part_of_the_array_cancelled(any_cluster, job_parent):
    job = start(job_parent, "cancelled", "slow", n=12, nodes=3, rows_per_chunk=1)
    wait_rows(job, 3)
    subprocess.run(["scancel", f"{job.job_ids[0]}_1"], check=True)
    status = job.wait(timeout_s=120, progress=False)
    assert status.tasks[1] == "CANCELLED", str(status)
    assert status.tasks[0] == "COMPLETED" and status.tasks[2] == "COMPLETED"
    # The other tasks take over the rows task 1 had not started; only its row in flight is lost.
    assert 1 <= status.rows_missing <= 2, str(status)
    assert all(status.missing_reasons[r].startswith("task 1: CANCELLED") for r in status.missing_rows)
    print(status)
    heal_and_resubmit(job, 12)


# --- (c) time limit and (d) dead node, on both clusters at once (each takes a minute or more) --


@early.job("acct", "noacct")
def timeout(parent: Path, kind: str) -> SlurmJob:
    # Two processes: one is stuck on row 7, the other finishes the rest. On the partition
    # ``long``, started with the clusters (tests/early.py): the one-minute limit passes while
    # other tests run.
    return start(parent, f"timeout_{kind}", "sleep", n=10, nodes=1, cpus_per_node=2,
                 rows_per_chunk=1, slurm_options={"time": "00:01:00", "partition": "long"})


def test_time_limit_and_dead_node(cluster, cluster_noacct, job_parent, early_jobs, monkeypatch):
    jobs = {}
    for kind, c in (("acct", cluster), ("noacct", cluster_noacct)):
        with on(c, monkeypatch):
            last = c.node_names[-1]
            jobs[kind, "timeout"] = early_jobs[f"timeout_{kind}"]
            jobs[kind, "node"] = start(job_parent, f"node_{kind}", "sleep", n=10, nodes=1,
                                       cpus_per_node=2, rows_per_chunk=1,
                                       # Slurm requeues a batch job after a node failure by default;
                                       # here the task must stay NODE_FAIL to be classified.
                                       slurm_options={"nodelist": last, "no-requeue": True})
    for kind, c in (("acct", cluster), ("noacct", cluster_noacct)):
        with on(c, monkeypatch):
            wait_rows(jobs[kind, "node"], 9)
            wait_rows(jobs[kind, "timeout"], 9)
            c.kill_node(c.node_names[-1])
    try:
        for kind, c in (("acct", cluster), ("noacct", cluster_noacct)):
            with on(c, monkeypatch):
                st = jobs[kind, "timeout"].wait(timeout_s=240, progress=False)
                assert st.tasks == {0: "TIMEOUT"}, str(st)
                assert st.missing_rows == [7] and st.rows_done == 9, str(st)
                assert "task 0: TIMEOUT" in st.missing_reasons[7]
                print(st)
                st = jobs[kind, "node"].wait(timeout_s=240, progress=False)
                assert st.tasks == {0: "NODE_FAIL"}, str(st)
                assert st.missing_rows == [7] and st.rows_done == 9, str(st)
                print(st)
    finally:
        for c in (cluster, cluster_noacct):
            c.restart_node(c.node_names[-1])
    for kind, c in (("acct", cluster), ("noacct", cluster_noacct)):
        with on(c, monkeypatch):
            heal_and_resubmit(jobs[kind, "timeout"], 10, slurm_options={"time": "00:05:00"})
            heal_and_resubmit(jobs[kind, "node"], 10)


# --- requeue: a task Slurm restarts resumes from its durable progress: requeued three times, in
# tests/test_retries_cluster.py (test_a_task_requeued_three_times_completes_without_a_retry).
