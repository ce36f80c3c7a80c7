"""Automatic retries on the private Grid Engine cell (tests/sgebed.py), as tests/test_retries_cluster.py
shows them on Slurm: a task killed at h_rt is retried with h_rt doubled (within the queue's
h_rt), a task whose processes are killed has its rows retried, rows that raised are not retried.
The follow-up waits with -hold_jid and runs on the cell; nobody calls resubmit()."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Dict

import cloudpickle
import pandas as pd
import pytest

from slurm_apply import SlurmJob, slurm_apply

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def work(x: int) -> dict:
    """Records each run in CALLS; row 7 misbehaves as FAULT says."""
    import os
    import time

    earlier = [n for n in os.listdir(CALLS) if n.split(".")[0] == str(x)]
    open(os.path.join(CALLS, f"{x}.{os.getpid()}.{time.monotonic_ns()}"), "w").close()
    if x == 7 and FAULT == "sleep":
        time.sleep(6 if earlier else 600)  # the retry's run outlasts the first h_rt (5 s)
    if x == 7 and FAULT == "stuck once" and not earlier:
        with open(os.path.join(CALLS, "pid"), "w") as f:
            f.write(str(os.getpid()))
        time.sleep(600)
    if x == 3 and FAULT == "raise":
        raise ValueError("three")
    return {"y": x * x + 1}


@pytest.fixture
def cell(sge_cell, monkeypatch):
    for key, value in sge_cell.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(SlurmJob, "resubmit", lambda *a, **k: pytest.fail("resubmit() was called"))
    return sge_cell


def start(parent: Path, name: str, fault: str, n: int, **kw) -> SlurmJob:
    calls = parent / f"{name}.calls"
    calls.mkdir()
    kw.setdefault("nodes", 1)
    kw.setdefault("cpus_per_node", 2)
    kw.setdefault("rows_per_chunk", 1)
    objects = {"CALLS": str(calls), "FAULT": fault, **kw.pop("add_objects", {})}
    return slurm_apply(work, pd.DataFrame({"x": range(n)}), jobname=name, job_dir=parent, backend="sge",
                       add_objects=objects, **kw)


def runs(job: SlurmJob) -> Dict[int, int]:
    out: Dict[int, int] = {}
    for name in os.listdir(job.job_dir.parent / f"{job.jobname}.calls"):
        if name[0].isdigit():
            out[int(name.split(".")[0])] = out.get(int(name.split(".")[0]), 0) + 1
    return out


def finished(job: SlurmJob, n: int, twice: set, timeout_s: float = 150):
    status = job.wait(timeout_s=timeout_s, progress=False)
    assert status.completed and status.rows_failed == 0, str(status)
    assert job.get_output().y.tolist() == [x * x + 1 for x in range(n)]
    assert runs(job) == {x: 2 if x in twice else 1 for x in range(n)}
    return status


def followup_record(cell, job_id: str) -> str:
    return cell.run(["qacct", "-j", job_id], check=False).stdout


def test_a_task_killed_at_h_rt_is_retried_with_h_rt_doubled_within_the_queue_limit(cell, job_parent):
    # The queue allows 8 s: the retry asks for 0:00:08, not the doubled 0:00:10.
    cell.run(["qconf", "-mattr", "queue", "h_rt", "0:0:8", "all.q"])
    try:
        job = start(job_parent, "sge_time", "sleep", n=10, slurm_options={"time": "0:0:5"})
        first = job.manifest.submissions[0]
        assert f"-hold_jid {first.job_id}" in cell.run(["qstat", "-j", first.followup_id]).stdout.replace(
            "jid_predecessor_list (req):", "-hold_jid")
        status = finished(job, 10, {7})
    finally:
        cell.run(["qconf", "-mattr", "queue", "h_rt", "INFINITY", "all.q"])
    first, retry = job.manifest.submissions
    assert status.task_details[0].state == "TIMEOUT", str(status)
    assert (retry.row_positions(), retry.slurm_options["time"], retry.raised) == ([7], "0:00:08", {"time": ("0:0:5", "0:00:08")})
    assert "at most queue all.q's h_rt" in first.decision.detail, first.decision
    assert "retried: row 7: TIMEOUT at 0:0:5, done at 0:00:08" in str(status), str(status)
    # The follow-up ran as a job of the cell, after the array.
    assert "jobname      sge_time.retry" in followup_record(cell, first.followup_id)
    assert "#$ -l h_rt=0:00:08" in (job.job_dir / "submit_s1.sh").read_text()


def test_a_task_whose_processes_are_killed_has_its_rows_retried(cell, job_parent):
    job = start(job_parent, "sge_kill", "stuck once", n=10)
    pid_file = job.job_dir.parent / "sge_kill.calls" / "pid"
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "row 7 did not start"
        time.sleep(0.2)
    worker = int(pid_file.read_text())
    # The other process's rows recorded first (on a loaded machine it may still be at them): then
    # row 7 is the only one the kill loses.
    while job.get_job_status().rows_done < 9:
        assert time.monotonic() < deadline, str(job.get_job_status())
        time.sleep(0.2)
    # The task's whole process group: the job script, the task's runner and its workers.
    os.killpg(os.getpgid(worker), signal.SIGKILL)
    status = finished(job, 10, {7})
    first, retry = job.manifest.submissions
    assert status.task_details[0].state == "KILLED", str(status)
    assert retry.row_positions() == [7] and dict(retry.retried_for) == {"KILLED": ((7, 8),)}
    assert "retried: row 7: KILLED, done" in str(status), str(status)


def test_rows_that_raised_are_not_retried(cell, job_parent):
    job = start(job_parent, "sge_raise", "raise", n=6, retries=2)
    status = job.wait(timeout_s=90, progress=False)
    assert status.rows_done == 5 and status.rows_failed == 1, str(status)
    assert len(job.manifest.submissions) == 1
    deadline = time.monotonic() + 30
    while job.manifest.submissions[0].decision is None and time.monotonic() < deadline:
        time.sleep(0.5)
        job = SlurmJob(job.job_dir)
    assert job.manifest.submissions[0].decision.action == "nothing", job.manifest.submissions[0].decision


def test_a_task_gone_from_qstat_before_qacct_records_it_is_completing_not_lost(cell, job_parent):
    """qacct lags qstat (here 20 s: reporting_params flush_time): a task killed at h_rt is in
    neither for a while. The status says it waits for the record, never LOST, then TIMEOUT. Its
    log was last written over 30 s before (the status's own grace for an end marker is over)."""
    conf = job_parent / "global"
    conf.write_text(cell.run(["qconf", "-sconf"]).stdout.replace("flush_time=00:00:01", "flush_time=00:00:20"))
    cell.run(["qconf", "-Mconf", str(conf)])
    try:
        job = start(job_parent, "sge_lag", "stuck once", n=8, cpus_per_node=1, retries=0,
                    slurm_options={"time": "0:0:32"})
        seen = []
        deadline = time.monotonic() + 90
        while True:
            status = job.get_job_status()
            seen.append((status.task_details[0].state, status.task_details[0].reason))
            if status.ended or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        conf.write_text(cell.run(["qconf", "-sconf"]).stdout.replace("flush_time=00:00:20", "flush_time=00:00:01"))
        cell.run(["qconf", "-Mconf", str(conf)])
    states = [s for s, _ in seen]
    assert "LOST" not in states and states[-1] == "TIMEOUT", seen
    waiting = [r for s, r in seen if s == "COMPLETING"]
    assert waiting and "waiting for Grid Engine's accounting record" in waiting[0], seen


def test_a_task_whose_own_processes_hit_h_vmem_is_retried_with_twice_the_memory(cell, job_parent):
    """At 120M the task's own Python cannot even load numpy under h_vmem (an address-space
    limit), and the payload holds a NumPy array, so loading it imports numpy: OUT_OF_MEMORY, and
    the retry asks for h_vmem doubled. (A row over it raises MemoryError itself and is a row
    error: tests/test_sge.py.)"""
    import numpy as np

    job = start(job_parent, "sge_vmem", "", n=4, cpus_per_node=1, slurm_options={"mem": "120M"},
                add_objects={"WEIGHTS": np.zeros(4)})
    first_status = None
    deadline = time.monotonic() + 60
    while first_status is None and time.monotonic() < deadline:
        st = job.get_job_status()
        if st.task_details[0].state == "OUT_OF_MEMORY":
            first_status = st
        time.sleep(0.5)
    assert first_status is not None and "h_vmem" in first_status.task_details[0].reason, str(st)
    status = finished(job, 4, set(), timeout_s=120)
    retry = job.manifest.latest
    assert (retry.slurm_options["mem"], retry.raised) == ("240M", {"mem": ("120M", "240M")}), retry
    assert "#$ -l h_vmem=240M" in (job.job_dir / "submit_s1.sh").read_text()
    assert "OUT_OF_MEMORY at 120M, done at 240M" in str(status), str(status)
