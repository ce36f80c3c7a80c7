"""The command line and submission failures, on a real job on the private Slurm cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd
import pytest

from slurm_apply import SlurmJob, SubmissionError, slurm_apply


def flaky(x):
    import os
    import time

    time.sleep(0.3)
    if x == 4 and os.path.exists(FLAG):
        raise ValueError("row 4 is bad")
    return x * 2


def cli(*args, check_code=0):
    proc = subprocess.run([sys.executable, "-m", "slurm_apply", *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd="/")
    assert proc.returncode == check_code, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_cli_on_a_real_job(cluster, job_parent):
    flag = job_parent / "flag"
    flag.write_text("on")
    job = slurm_apply(flaky, pd.DataFrame({"x": range(12)}), add_objects={"FLAG": str(flag)}, nodes=2,
                      cpus_per_node=1, rows_per_chunk=1, jobname="clijob", job_dir=job_parent)
    d = job.job_dir
    during = json.loads(cli("status", d, "--json"))
    assert during["rows_total"] == 12 and not during["ended"]
    assert "STATE" in cli("status", d)
    cli("cleanup", d, check_code=1)  # refuses while running, and says why
    assert d.exists()
    cli("status", d, "--watch", "--interval", "0.5")  # returns once the job ended
    text = cli("status", d, "--check", check_code=3)
    assert "failed rows: 4 (first: row 4: ValueError: row 4 is bad)" in text
    logs = cli("logs", d, "--failed")
    assert "slurm_apply: row 4 raised ValueError: row 4 is bad" in logs
    assert "row 4" in cli("logs", d, "--grep", "raised")
    out_err = cli("output", d, check_code=1)
    assert "Error: 1 of 12 rows raised" in out_err
    cli("output", d, "--errors", "keep", "-o", job_parent / "out.csv")
    table = pd.read_csv(job_parent / "out.csv")
    assert table.error.notna().sum() == 1 and len(table) == 12
    flag.unlink()
    cli("resubmit", d, "--failed", "--time", "00:05:00", "--nodes", "1")
    cli("status", d, "--watch", "--interval", "0.5")
    cli("status", d, "--check")
    cli("output", d, "-o", job_parent / "out.pkl")
    assert list(pd.read_pickle(job_parent / "out.pkl").result) == [x * 2 for x in range(12)]
    script = (d / "submit_s1.sh").read_text()
    assert "#SBATCH --time=00:05:00" in script and "#SBATCH --array=0-0" in script
    assert "clijob" in cli("list", job_parent)
    cli("cleanup", d)
    assert not d.exists()


def test_cli_cancel_on_a_real_job(cluster, job_parent):
    job = slurm_apply(flaky, pd.DataFrame({"x": range(4)}), add_objects={"FLAG": "/nonexistent"},
                      nodes=2, cpus_per_node=1, slurm_options={"begin": "now+1hour"}, jobname="clicancel",
                      job_dir=job_parent)
    cli("cancel", job.job_dir)
    status = SlurmJob.from_dir(job.job_dir).wait(timeout_s=60, progress=False)
    assert set(status.tasks.values()) == {"CANCELLED"}, str(status)
    assert status.rows_missing == 4
    assert "CANCELLED" in cli("status", job.job_dir, "--check", check_code=3)


def test_sbatch_refusal_keeps_the_directory_and_resubmit_fixes_it(cluster, job_parent):
    with pytest.raises(SubmissionError, match="Invalid partition") as err:
        slurm_apply(flaky, pd.DataFrame({"x": range(3)}), add_objects={"FLAG": "/nonexistent"},
                    slurm_options={"partition": "nosuchpartition"}, jobname="refused", job_dir=job_parent)
    assert "Invalid partition" in err.value.stderr
    job = SlurmJob.from_dir(job_parent / "_rslurm_refused")
    status = job.get_job_status()
    assert status.state == "NOT_SUBMITTED" and "Invalid partition" in status.reasons[0]
    assert job.manifest.submissions[0].state == "failed"
    job.resubmit(slurm_options={"partition": "debug"})
    assert job.wait(timeout_s=120, progress=False).completed
    assert list(job.get_output().result) == [0, 2, 4]


def test_max_concurrent_and_max_array_size_on_the_cluster(cluster, job_parent):
    from slurm_apply._backends.slurm import backend as _slurm

    assert _slurm.max_array_size() == 1001  # read from `scontrol show config`
    job = slurm_apply(flaky, pd.DataFrame({"x": range(6)}), add_objects={"FLAG": "/nonexistent"},
                      nodes=3, cpus_per_node=1, max_concurrent=1, jobname="throttle", job_dir=job_parent)
    info = subprocess.run(["scontrol", "show", "job", job.job_ids[0]], capture_output=True, text=True).stdout
    assert "ArrayTaskThrottle=1" in info
    running_at_once = 0
    deadline = time.monotonic() + 120
    while not job.get_job_status().ended:
        assert time.monotonic() < deadline
        running_at_once = max(running_at_once, list(job.get_job_status().tasks.values()).count("RUNNING"))
        time.sleep(0.3)
    assert running_at_once == 1
    assert job.get_output(outtype="raw") == [x * 2 for x in range(6)]
