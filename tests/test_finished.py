"""One meaning of "finished": a task has finished when it will do nothing more.

Issue 16, bugs 1 and 2: the status said "ended" while a task process still ran rows.
"""

import json
import os
import signal
import subprocess
import time

import pandas as pd

from slurm_apply import slurm_apply
from rowfns import _slow_second_half, _slow  # a light module: tasks import it (tests/rowfns.py)


def _kill_task(job_dir, task):
    """SIGKILL a task's parent process and every process it forked (no chance to save)."""
    start = json.loads((job_dir / "s0" / "tasks" / f"t{task:04d}.start").read_text())
    pid = start["starts"][-1]["pid"]
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for p in [pid, *map(int, children)]:
        try:
            os.kill(int(p), signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_task_that_may_still_take_over_rows_has_not_finished(tmp_path):
    # Task 0 runs rows 0-9 (0.2 s each) and runs out of rows; task 1 (rows 10-19, 1 s each) is
    # killed after a few of its rows. Task 0 stays to take over task 1's chunk once its lease runs
    # out: until it has, the job has not ended, and what wait() returns must not change afterwards.
    job = slurm_apply(_slow_second_half, pd.DataFrame({"x": range(20)}), backend="local",
                      job_dir=tmp_path, jobname="linger", nodes=2, cpus_per_node=1,
                      rows_per_chunk=10, retries=0)
    deadline = time.monotonic() + 60
    while job.get_job_status().rows_done < 12:  # chunk 0 and two rows of chunk 1
        assert time.monotonic() < deadline
        time.sleep(0.05)
    _kill_task(job.job_dir, 1)
    assert job.get_job_status().rows_done < 19
    status = job.wait(timeout_s=120, progress=False)
    done = status.rows_done
    time.sleep(5)  # a task that was still at work would finish more rows meanwhile
    again = job.get_job_status()
    assert again.rows_done == done, f"wait() returned with {done} rows done, {again.rows_done} later"
    # Task 0 took task 1's chunk over: every row but the one in flight when task 1 died is done.
    assert done >= 19, str(status)


def test_tasks_of_a_killed_local_runner_still_run_and_are_not_called_lost(tmp_path):
    # The local runner (the supervisor) dies; the task processes it started go on. Their rows keep
    # arriving, so the job has not ended: wait() waits for them, and nothing is called LOST.
    from slurm_apply._backends.local.backend import read_identity

    job = slurm_apply(_slow, pd.DataFrame({"x": range(16)}), backend="local", job_dir=tmp_path,
                      jobname="orphans", nodes=2, cpus_per_node=1, retries=0)
    deadline = time.monotonic() + 30
    while job.get_job_status().rows_done < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(read_identity(job.job_dir, 0).proc.pid, signal.SIGKILL)
    time.sleep(0.5)
    status = job.get_job_status()
    assert not status.ended, str(status)
    assert "LOST" not in status.tasks.values(), str(status)
    final = job.wait(timeout_s=60, progress=False)
    assert final.rows_done == 16, str(final)
    assert job.get_output(outtype="raw") == list(range(16))
