"""A query that could not be made is UNKNOWN, never finished or lost.

Each test breaks the way slurm_apply reaches Slurm while a real job runs (slurmctld stopped,
slurmdbd stopped, Slurm's commands off PATH) or reuses a job's name while it runs, and checks
that nothing is taken for finished: statuses say UNKNOWN, wait() keeps waiting, and a running
job's directory is neither deleted nor overwritten.  The daemons are always started again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest

from slurm_apply import JobActiveError, SlurmJob, slurm_apply

SLURM_COMMANDS = ("squeue", "sacct", "sbatch", "scancel", "scontrol")


def slow(x: int) -> int:
    """Marks its row as started in STARTED (a directory sent with add_objects), then takes 1 s."""
    import os
    import time

    open(os.path.join(STARTED, str(x)), "w").close()
    time.sleep(1)
    return 3 * x


def triple(x: int) -> int:
    return 3 * x


def start_slow(parent: Path, name: str, n: int, nodes: int = 2) -> SlurmJob:
    """Submit `slow` over n rows as `name`: nodes tasks of one process, about n / nodes s each."""
    started = parent / f"{name}.started"
    started.mkdir()
    return slurm_apply(slow, pd.DataFrame({"x": range(n)}), add_objects={"STARTED": str(started)},
                       nodes=nodes, cpus_per_node=1, jobname=name, job_dir=parent, backend="slurm")


def wait_started(job: SlurmJob, rows: int, timeout_s: float = 60) -> None:
    """Wait until `rows` rows of a `start_slow` job have started (the job is running)."""
    started = job.job_dir.parent / f"{job.jobname}.started"
    deadline = time.monotonic() + timeout_s
    while len(os.listdir(started)) < rows:
        assert time.monotonic() < deadline, f"fewer than {rows} rows started in {timeout_s} s"
        time.sleep(0.1)


def assert_completed(job: SlurmJob, n: int) -> None:
    status = job.wait(timeout_s=120, progress=False)
    assert status.state == "COMPLETED" and status.ended, str(status)
    assert status.rows_done == n and status.rows_missing == 0 and status.rows_failed == 0, str(status)
    assert list(job.get_output().result) == [3 * x for x in range(n)]


@contextlib.contextmanager
def controller_down_for(cluster, seconds: float) -> Iterator[None]:
    """Stop slurmctld now and start it again `seconds` later from a timer thread."""
    cluster.stop_controller()
    timer = threading.Timer(seconds, cluster.start_controller)
    timer.start()
    try:
        yield
    finally:
        timer.join()
        if "slurmctld" not in cluster.pids():  # the timer's start failed: try once more
            cluster.start_controller()


@contextlib.contextmanager
def dbd_down(cluster) -> Iterator[None]:
    cluster.stop_dbd()
    try:
        yield
    finally:
        cluster.start_dbd()


def slurm_notices(caplog: pytest.LogCaptureFixture, command: str) -> list:
    """Records of the slurm_apply logger, INFO or above, that mention `command`."""
    return [r for r in caplog.records
            if r.name.split(".")[0] == "slurm_apply" and r.levelno >= logging.INFO
            and command in r.getMessage()]


def test_wait_outlives_a_controller_restart(cluster_noacct, job_parent, caplog):
    # Without accounting squeue is the only source, and it fails while slurmctld is stopped.
    caplog.set_level(logging.INFO, logger="slurm_apply")
    job = start_slow(job_parent, "ctld_down", n=30)
    wait_started(job, 2)
    with controller_down_for(cluster_noacct, 14):
        assert_completed(job, 30)
    notices = slurm_notices(caplog, "squeue")
    assert len(notices) == 1, [r.getMessage() for r in caplog.records]


def test_status_without_slurmdbd(cluster, job_parent):
    job = start_slow(job_parent, "dbd_down", n=16)
    wait_started(job, 2)
    with dbd_down(cluster):
        status = job.get_job_status()
        assert status.state == "RUNNING" and not status.ended, str(status)
        assert set(status.tasks.values()) <= {"RUNNING", "COMPLETED"}, str(status)
        assert "RUNNING" in status.tasks.values(), str(status)
        assert any("sacct" in note for note in status.notes), status.notes
        assert_completed(job, 16)
        status = job.get_job_status()
        assert status.state == "COMPLETED" and status.ended, str(status)
        assert set(status.tasks.values()) == {"COMPLETED"}, str(status)


def test_slurm_commands_off_path(cluster, job_parent, tmp_path_factory, monkeypatch):
    empty = tmp_path_factory.mktemp("no_slurm_here")
    assert not any((empty / name).exists() for name in SLURM_COMMANDS)
    job = start_slow(job_parent, "off_path", n=16)
    wait_started(job, 2)
    path = os.environ["PATH"]
    monkeypatch.setenv("PATH", str(empty))

    status = job.get_job_status()
    unfinished = [d for d in status.task_details if d.state != "COMPLETED"]
    assert unfinished, str(status)
    assert all(d.state == "UNKNOWN" and "PATH" in d.reason for d in unfinished), str(status)
    assert status.state == "UNKNOWN" and not status.ended, str(status)
    with pytest.raises(JobActiveError, match="UNKNOWN"):
        job.cleanup_files()
    assert (job.job_dir / "manifest.json").exists()

    monkeypatch.setenv("PATH", path)
    assert_completed(job, 16)


def test_overwrite_refuses_a_running_job(cluster, job_parent):
    job = start_slow(job_parent, "busy", n=12)
    wait_started(job, 2)
    inputs = {name: (job.job_dir / name).read_bytes() for name in ("payload.pkl", "params_meta.pkl", "s0/params.bin")}
    with pytest.raises(JobActiveError) as refused:
        slurm_apply(triple, pd.DataFrame({"x": [7]}), nodes=1, cpus_per_node=1, jobname="busy",
                    job_dir=job_parent, backend="slurm", overwrite=True)
    assert "RUNNING" in str(refused.value) or "running" in str(refused.value), str(refused.value)
    again = SlurmJob.from_dir(job.job_dir)
    assert again.job_ids == job.job_ids
    assert inputs == {name: (job.job_dir / name).read_bytes() for name in inputs}
    assert_completed(again, 12)


def test_default_names_are_unique(cluster, job_parent):
    jobs = [slurm_apply(triple, pd.DataFrame({"x": [i, i + 100]}), nodes=1, cpus_per_node=1,
                        job_dir=job_parent, backend="slurm")
            for i in range(10)]
    assert len({job.job_dir for job in jobs}) == 10
    assert len({job.jobname for job in jobs}) == 10
    for i, job in enumerate(jobs):
        status = job.wait(timeout_s=120, progress=False)
        assert status.state == "COMPLETED" and status.rows_done == 2, str(status)
        assert list(job.get_output().result) == [3 * i, 3 * (i + 100)]
