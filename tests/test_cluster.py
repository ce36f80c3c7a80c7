"""The foundation, shown on the private Slurm cluster the suite starts (see conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from slurm_apply import SlurmJob, slurm_apply, slurm_call, slurm_map

SCALE = 7.0  # reaches the node through add_objects


def where(x: int, y: float) -> dict:
    import os

    return {"z": x * y, "node": os.environ.get("SLURMD_NODENAME", "?"), "pid": os.getpid()}


def uses_objects(x: int) -> dict:
    import sys

    return {"scaled": x * SCALE * OFFSET_TABLE[x % 3], "has_pkg": "fractions" in sys.modules}


def square(x):
    return x * x


def grid(n: int = 30) -> pd.DataFrame:
    return pd.DataFrame({"x": range(n), "y": [0.5 + i / 10 for i in range(n)]})


def test_round_trip_equals_plain_loop(cluster, job_parent):
    df = grid(30)
    job = slurm_apply(where, df, nodes=3, cpus_per_node=2, jobname="roundtrip", job_dir=job_parent)
    status = job.wait(timeout_s=120, progress=False)
    assert status.completed, str(status)
    out = job.get_output()
    expected = [x * y for x, y in zip(df.x, df.y)]
    assert list(out.z) == expected
    assert list(out.x) == list(df.x) and list(out.y) == list(df.y)
    assert status.rows_done == 30 and status.rows_failed == 0 and status.rows_missing == 0
    assert status.tasks == {0: "COMPLETED", 1: "COMPLETED", 2: "COMPLETED"}
    # Three array tasks, each with two processes, on the cluster's nodes.
    assert set(out.node) <= set(cluster.node_names)
    assert len({d.node for d in status.task_details}) >= 2
    script = (job.job_dir / "submit.sh").read_text()
    assert "#SBATCH --array=0-2" in script and "#SBATCH --cpus-per-task=2" in script
    assert f"exec {sys.executable} -m slurm_apply._node" in script


def test_add_objects_and_pkgs_reach_the_node(cluster, job_parent):
    global OFFSET_TABLE
    OFFSET_TABLE = [1, 10, 100]
    try:
        job = slurm_apply(uses_objects, pd.DataFrame({"x": range(6)}), add_objects=["SCALE", "OFFSET_TABLE"],
                          pkgs=["fractions"], nodes=2, cpus_per_node=1, jobname="objs", job_dir=job_parent)
    finally:
        del OFFSET_TABLE
    job.wait(timeout_s=120, progress=False)
    out = job.get_output()
    assert list(out.scaled) == [x * 7.0 * [1, 10, 100][x % 3] for x in range(6)]
    assert all(out.has_pkg)


def test_slurm_options_reach_slurm(cluster, job_parent):
    job = slurm_apply(square, pd.DataFrame({"x": [1, 2]}), nodes=1, cpus_per_node=1,
                      slurm_options={"time": "00:07:00", "comment": "from slurm_apply", "mem": "300M",
                                     "hold": True},
                      jobname="opts", job_dir=job_parent)
    info = subprocess.run(["scontrol", "show", "job", job.job_ids[0]], capture_output=True, text=True,
                          check=True).stdout
    assert "TimeLimit=00:07:00" in info
    assert "Comment=from slurm_apply" in info
    assert "MinMemoryNode=300M" in info or "mem=300M" in info
    assert "JobState=PENDING" in info and "Reason=JobHeldUser" in info  # the bare --hold flag
    status = job.get_job_status()
    assert set(status.tasks.values()) == {"PENDING"} and not status.ended
    subprocess.run(["scontrol", "release", job.job_ids[0]], check=True)
    assert job.wait(timeout_s=120, progress=False).completed
    assert list(job.get_output().result) == [1, 4]


def test_submit_false_then_sbatch_by_hand(cluster, job_parent):
    job = slurm_apply(square, pd.DataFrame({"x": range(5)}), nodes=2, cpus_per_node=1, submit=False,
                      jobname="byhand", job_dir=job_parent)
    assert job.job_ids == []
    assert job.get_job_status().state == "NOT_SUBMITTED"
    # A user in another shell, somewhere else:
    subprocess.run(["sbatch", str(job.job_dir / "submit.sh")], check=True, cwd="/", capture_output=True)
    fresh = SlurmJob.from_dir(job.job_dir)
    status = fresh.wait(timeout_s=120, progress=False)
    assert status.completed, str(status)
    assert len(fresh.job_ids) == 1
    assert list(fresh.get_output().result) == [0, 1, 4, 9, 16]


def test_handle_rebuilt_in_a_fresh_process(cluster, job_parent):
    job = slurm_apply(where, grid(12), nodes=2, cpus_per_node=2, jobname="fresh", job_dir=job_parent)
    job.wait(timeout_s=120, progress=False)
    here = job.get_output()
    code = (
        "import json, sys\n"
        "from slurm_apply import SlurmJob\n"
        "job = SlurmJob.from_dir(sys.argv[1])\n"
        "st = job.get_job_status()\n"
        "out = job.get_output()\n"
        "print(json.dumps({'completed': st.completed, 'z': list(out.z), 'ids': job.job_ids}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(job.job_dir)], capture_output=True, text=True,
                          cwd="/", check=True)
    there = json.loads(proc.stdout)
    assert there == {"completed": True, "z": list(here.z), "ids": job.job_ids}


def test_cleanup_files(cluster, job_parent):
    job = slurm_apply(square, pd.DataFrame({"x": range(3)}), nodes=1, cpus_per_node=1,
                      slurm_options={"hold": True}, jobname="clean", job_dir=job_parent)
    from slurm_apply import JobActiveError

    with pytest.raises(JobActiveError, match="still queued, running or unknown"):
        job.cleanup_files()
    assert job.job_dir.exists()
    subprocess.run(["scontrol", "release", job.job_ids[0]], check=True)
    job.wait(timeout_s=120, progress=False)
    job.cleanup_files()
    assert not job.job_dir.exists()


def test_slurm_map_and_slurm_call(cluster, job_parent):
    job = slurm_map(square, [3, 4, 5], nodes=2, cpus_per_node=1, jobname="map", job_dir=job_parent)
    one = slurm_call(where, x=3, y=2.0, jobname="call", job_dir=job_parent)
    job.wait(timeout_s=120, progress=False)
    one.wait(timeout_s=120, progress=False)
    assert job.get_output(outtype="raw") == [9, 16, 25]
    assert one.get_output(outtype="raw")[0]["z"] == 6.0


def test_round_trip_without_accounting(cluster_noacct, job_parent):
    proc = subprocess.run(["sacct"], capture_output=True, text=True)
    assert "accounting storage is disabled" in (proc.stdout + proc.stderr).lower()
    job = slurm_apply(where, grid(10), nodes=2, cpus_per_node=2, jobname="noacct", job_dir=job_parent)
    status = job.wait(timeout_s=120, progress=False)
    assert status.completed, str(status)
    assert list(job.get_output().z) == [x * y for x, y in zip(grid(10).x, grid(10).y)]
    assert set(job.get_job_status().tasks.values()) == {"COMPLETED"}
