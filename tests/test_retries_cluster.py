"""Automatic retries on the real clusters, with and without accounting: a task over its --mem, a
task over its --time, a node that dies, a task requeued three times, and cancel() during a
retry. Each ends with every row either done or failed with its own error (cancel() aside), no
row run more than twice, and no call to resubmit(): nobody but the cluster acts."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator

import cloudpickle
import pandas as pd
import pytest

from slurm_apply import SlurmJob, slurm_apply

import early

# The row function travels by value, as from a notebook: by reference, the task would import
# this module, and with it pytest and pandas, whose memory a 400M retry should not pay for.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def work(x: int) -> dict:
    """Records each run in CALLS; row 7 misbehaves as FAULT says (see start())."""
    import os
    import time

    earlier = [n for n in os.listdir(CALLS) if n.split(".")[0] == str(x)]
    open(os.path.join(CALLS, f"{x}.{os.getpid()}.{time.monotonic_ns()}"), "w").close()
    if x == 7 and FAULT == "hog":
        hog = b"x" * (300 << 20)  # touched: 300 MB of RSS, over a 200M limit, under 400M
        time.sleep(HOLD_S)
        del hog
    if x == 7 and FAULT == "sleep":
        # Slurm enforces limits every 30 s or so, so a 1-minute task is killed 60 to 95 s in:
        # the first run waits for that; the retry takes 70 s, more than the first limit.
        time.sleep(70 if earlier else 600)
    if x == 7 and FAULT == "stuck once" and not earlier:
        time.sleep(600)
    if FAULT == "slow":
        time.sleep(1.2)
    return {"y": x * x + 1}


@pytest.fixture(autouse=True)
def no_hands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody resubmits here: the retries must come from the cluster alone."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("resubmit() was called")

    monkeypatch.setattr(SlurmJob, "resubmit", refuse)


@contextlib.contextmanager
def on(cluster, monkeypatch) -> Iterator[None]:
    for k, v in cluster.env().items():
        monkeypatch.setenv(k, v)
    yield


def start(parent: Path, name: str, fault: str, n: int, hold_s: float = 3, **kw) -> SlurmJob:
    calls = parent / f"{name}.calls"
    calls.mkdir()
    kw.setdefault("nodes", 2)
    kw.setdefault("cpus_per_node", 1)
    kw.setdefault("rows_per_chunk", 1)
    return slurm_apply(work, pd.DataFrame({"x": range(n)}), jobname=name, job_dir=parent,
                       add_objects={"CALLS": str(calls), "FAULT": fault, "HOLD_S": hold_s}, **kw)


def runs(job: SlurmJob) -> Dict[int, int]:
    out: Dict[int, int] = {}
    for name in os.listdir(job.job_dir.parent / f"{job.jobname}.calls"):
        out[int(name.split(".")[0])] = out.get(int(name.split(".")[0]), 0) + 1
    return out


def finished(job: SlurmJob, n: int, twice: set, t0: float, timeout_s: float = 170):
    """Wait; every row done, equal to a plain loop; the rows in ``twice`` ran twice, the others once."""
    status = job.wait(timeout_s=timeout_s, progress=False)
    assert status.completed and status.rows_failed == 0, str(status)
    assert job.get_output().y.tolist() == [x * x + 1 for x in range(n)]
    assert runs(job) == {x: 2 if x in twice else 1 for x in range(n)}
    print(f"\n{status}\nwall {time.monotonic() - t0:.0f} s")
    return status


def wait_rows(job: SlurmJob, at_least: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while job.get_job_status(ask_scheduler=False).rows_done < at_least:
        assert time.monotonic() < deadline, "rows did not arrive in time"
        time.sleep(0.2)


def test_a_task_over_its_memory_is_retried_with_more_memory(any_cluster, job_parent):
    t0 = time.monotonic()
    job = start(job_parent, "memory", "hog", n=12, slurm_options={"mem": "200M"})
    status = finished(job, 12, {7}, t0)
    first, retry = job.manifest.submissions
    assert "OUT_OF_MEMORY" in {t.state for t in status.task_details if t.submission == 0}
    assert (retry.row_positions(), retry.slurm_options["mem"], retry.raised) == ([7], "400M", {"mem": ("200M", "400M")})
    assert first.decision.action == "retried" and retry.retry_of == 0 and retry.attempt == 1
    assert "retried: row 7: OUT_OF_MEMORY at 200M, done at 400M" in str(status)


def test_a_task_whose_node_dies_is_retried_elsewhere(cluster, job_parent):
    t0 = time.monotonic()
    # Slurm would requeue the task itself after a node failure; here it must stay NODE_FAIL.
    job = start(job_parent, "node", "stuck once", n=10, nodes=1, cpus_per_node=2,
                slurm_options={"no-requeue": True})
    wait_rows(job, 9)
    node = job.get_job_status().task_details[0].node
    cluster.kill_node(node)
    try:
        status = finished(job, 10, {7}, t0, timeout_s=150)
    finally:
        cluster.restart_node(node)
    assert status.task_details[0].state == "NODE_FAIL", str(status)
    assert status.task_details[-1].node != node
    assert "retried: row 7: NODE_FAIL, done" in str(status)


def test_a_task_requeued_three_times_completes_without_a_retry(cluster, job_parent):
    """Each requeue: the task waits in the queue (the job has not ended), then resumes from its
    durable progress; only rows in flight run again, and the log is appended to. (This took
    over test_faults.py's single requeue, which it repeats three times.)"""
    t0 = time.monotonic()
    job = start(job_parent, "requeue", "slow", n=8, nodes=1)
    task = f"{job.job_ids[0]}_0"
    for i in range(1, 4):
        wait_rows(job, 2 * i)  # each time another row is in flight, so none runs three times
        subprocess.run(["scontrol", "requeue", task], check=True)
        deadline = time.monotonic() + 60
        while "Reason=BeginTime" not in subprocess.run(["scontrol", "show", "job", task],
                                                       capture_output=True, text=True).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        st = job.get_job_status()
        assert st.tasks[0] in ("PENDING", "REQUEUED") and not st.ended, str(st)
        # Slurm holds a requeued task for two minutes; not "now": a task restarted within the
        # second its credential was revoked is killed by slurmd ("Job credential revoked").
        subprocess.run(["scontrol", "update", f"JobId={task}", "StartTime=now+3"], check=True)
    status = job.wait(timeout_s=150, progress=False)
    assert status.completed and status.rows_failed == 0, str(status)
    assert job.get_output().y.tolist() == [x * x + 1 for x in range(8)]
    counts = runs(job)
    assert max(counts.values()) <= 2 and sum(counts.values()) <= 8 + 3, counts
    assert len(job.manifest.submissions) == 1  # Slurm's requeue did it all
    start_marker = json.loads((job.job_dir / "s0" / "tasks" / "t0000.start").read_text())
    assert [s["restart_count"] for s in start_marker["starts"]] == [0, 1, 2, 3]
    log = (job.job_dir / "logs" / "s0_t0.out").read_text()
    assert log.count("slurm_apply: submission 0 task 0") == 4  # appended, not overwritten
    print(f"\n{status}\nruns {counts}\nwall {time.monotonic() - t0:.0f} s")


def test_cancel_during_a_retry_stops_further_retries(cluster_noacct, job_parent):
    job = start(job_parent, "cancel", "hog", n=10, hold_s=60, slurm_options={"mem": "200M"})
    deadline = time.monotonic() + 90
    while runs(job).get(7, 0) < 2:  # row 7's retry, at 400M, holds its memory for a minute
        assert time.monotonic() < deadline, "no retry was started"
        time.sleep(0.2)
    job.cancel()
    status = job.wait(timeout_s=90, progress=False)
    retry = job.manifest.latest
    assert status.retries.state == "stopped", str(status)
    assert status.missing_rows == [7] and "CANCELLED" in status.missing_reasons[7], str(status)
    assert job.manifest.retries_stopped.startswith("stopped by cancel() at ")
    said = subprocess.run(["squeue", "-h", "-t", "all", "-j", retry.followup_id, "-o", "%T"],
                          capture_output=True, text=True).stdout.split()
    assert said == ["CANCELLED"] or (retry.decision and retry.decision.action == "stopped"), said
    time.sleep(5)
    assert len(SlurmJob(job.job_dir).manifest.submissions) == 2
    assert max(runs(job).values()) <= 2
    print(f"\n{status}")


@early.job("acct", "noacct")
def over_time(parent: Path, kind: str) -> SlurmJob:
    # Two processes: one is stuck on row 7, the other finishes the rest.
    return start(parent, f"time_{kind}", "sleep", n=10, nodes=1, cpus_per_node=2,
                 slurm_options={"time": "00:01:00", "partition": "long"})


def test_a_task_over_its_time_is_retried_with_more_time(cluster, cluster_noacct, early_jobs, monkeypatch):
    """Both clusters; the jobs were started with the clusters (tests/early.py), on the partition
    ``long``: row 7 is stuck until the task's one-minute limit; the retry asks for twice the
    time, and row 7's second run takes 70 s, more than the first limit (about 150 s in all)."""
    for kind, c in (("acct", cluster), ("noacct", cluster_noacct)):
        with on(c, monkeypatch):
            job, t0 = early_jobs.get(f"over_time_{kind}")
            status = finished(job, 10, {7}, t0, timeout_s=200)
            assert status.task_details[0].state == "TIMEOUT", str(status)
            retry = job.manifest.latest
            assert retry.row_positions() == [7] and retry.slurm_options["time"] == "00:02:00"
            assert retry.slurm_options["partition"] == "long"
            assert "retried: row 7: TIMEOUT at 00:01:00, done at 00:02:00" in str(status)


def test_a_finished_job_asks_the_scheduler_nothing_while_its_follow_up_waits(cluster, job_parent):
    """Every row done and the follow-up held in the queue (its decision not yet made): nothing
    waits for it, so wait() returns and a status, wait() and get_output() ask the scheduler
    nothing more once the tasks' end markers are there."""
    job = start(job_parent, "quiet", "", n=4)
    subprocess.run(["scontrol", "hold", job.manifest.latest.followup_id], check=True)
    try:
        status = job.wait(timeout_s=90, progress=False)
        asked = job.scheduler_queries
        assert status.completed and job.manifest.latest.decision is None, str(status)
        later = SlurmJob(job.job_dir)
        assert later.get_job_status().completed and later.wait(progress=False).completed
        later.get_output()
        assert (job.get_job_status().completed, job.scheduler_queries, later.scheduler_queries) == (True, asked, 0)
    finally:
        subprocess.run(["scancel", job.manifest.latest.followup_id], check=False)
