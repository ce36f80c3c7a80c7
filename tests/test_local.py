"""The same array tasks run on this machine when there is no Slurm, and the logic that does not
need a cluster: output shapes, seeds, resubmission, durable progress after a kill."""

from __future__ import annotations

import os
import signal
import time

import pandas as pd
import pytest

import slurm_apply
from slurm_apply import RowsFailedError, SlurmJob, slurm_apply as apply


def run(f, df, tmp_path, name, **kw):
    kw.setdefault("nodes", 2)
    kw.setdefault("cpus_per_node", 2)
    job = apply(f, df, backend="local", job_dir=tmp_path, jobname=name, **kw)
    status = job.wait(timeout_s=120, progress=False)
    return job, status


def test_public_names_are_exactly_all():
    public = {n for n in dir(slurm_apply) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(slurm_apply, n)).__name__ == "module"}
    assert public - modules == set(slurm_apply.__all__)


def test_local_round_trip_and_notice(tmp_path, caplog):
    def f(a, b):
        return a * b

    df = pd.DataFrame({"a": range(20), "b": [3] * 20}, index=[f"r{i}" for i in range(20)])
    job, status = run(f, df, tmp_path, "local")
    # A notice of the "slurm_apply" logger (pytest's handler takes it; with nothing configured it
    # goes to stderr: tests/test_notebook.py checks that in a fresh interpreter).
    assert any(r.name == "slurm_apply" and "running the 2 array task(s) on this machine" in r.getMessage()
               for r in caplog.records)
    assert status.completed and status.tasks == {0: "COMPLETED", 1: "COMPLETED"}
    out = job.get_output()
    assert list(out.index) == list(df.index)  # the caller's index and order
    assert list(out.result) == [a * 3 for a in range(20)]
    assert job.get_output(outtype="raw") == [a * 3 for a in range(20)]


def test_a_local_task_knows_what_it_is_as_on_slurm(tmp_path, monkeypatch):
    """The runner sets what slurmd would (SLURM_ARRAY_TASK_ID, ...), the script turns it into the
    neutral variables, and the task records them; an enclosing job's variables do not leak in."""
    import json
    import socket

    def env(x):
        import os

        return {k: os.environ.get(k) for k in ("SLURM_ARRAY_TASK_ID", "SLURM_APPLY_TASK", "SLURM_APPLY_NODE")}

    monkeypatch.setenv("SLURM_APPLY_TASK", "7")  # as if submitted from inside another task
    monkeypatch.setenv("SLURM_APPLY_RESTARTS", "5")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "")
    job, status = run(env, pd.DataFrame({"x": range(2)}), tmp_path, "taskenv", cpus_per_node=1)
    assert status.completed, str(status)
    host = socket.gethostname()
    for seen in job.get_output(outtype="raw"):  # a row runs in either task
        assert seen["SLURM_ARRAY_TASK_ID"] in ("0", "1") and seen == {
            "SLURM_ARRAY_TASK_ID": seen["SLURM_ARRAY_TASK_ID"], "SLURM_APPLY_TASK": seen["SLURM_ARRAY_TASK_ID"],
            "SLURM_APPLY_NODE": host}
    job_id = job.manifest.latest.job_id
    for t in (0, 1):
        [start] = json.loads((job.job_dir / "s0" / "tasks" / f"t000{t}.start").read_text())["starts"]
        assert (start["job_id"], start["array_job_id"], start["node"], start["restart_count"]) == (
            f"{job_id}_{t}", job_id, host, 0)


def test_dict_and_series_results_become_columns(tmp_path):
    def as_dict(x):
        return {"sq": x * x, "neg": -x, "x": "clash"}

    def as_series(x):
        import pandas as pd

        return pd.Series({"half": x / 2})

    df = pd.DataFrame({"x": range(5)})
    job, _ = run(as_dict, df, tmp_path, "dict")
    out = job.get_output()
    assert list(out.columns) == ["x", "sq", "neg", "x_result"]
    assert list(out.sq) == [0, 1, 4, 9, 16]
    job, _ = run(as_series, df, tmp_path, "series")
    assert list(job.get_output().half) == [0, 0.5, 1, 1.5, 2]


def test_errors_raise_with_remote_traceback_or_are_kept(tmp_path):
    def f(x):
        if x in (2, 5):
            raise KeyError(f"no {x}")
        return x

    job, status = run(f, pd.DataFrame({"x": range(8)}), tmp_path, "errs")
    assert status.failed_rows == [2, 5] and status.state == "FAILED"
    with pytest.raises(RowsFailedError) as err:
        job.get_output()
    assert err.value.rows == [2, 5]
    assert "KeyError" in str(err.value.__cause__) and "raise KeyError" in str(err.value.__cause__)
    kept = job.get_output(errors="keep")
    assert kept.error[2] == "KeyError: 'no 2'" and kept.error.isna().sum() == 6
    assert set(job.get_errors()) == {2, 5}


def test_seeds_do_not_depend_on_how_rows_are_split(tmp_path):
    def draw(x):
        import random

        return random.random()

    df = pd.DataFrame({"x": range(40)})
    a, _ = run(draw, df, tmp_path, "seed_a", seed=7, nodes=1, cpus_per_node=1)
    b, _ = run(draw, df, tmp_path, "seed_b", seed=7, nodes=3, cpus_per_node=2, rows_per_chunk=3)
    c, _ = run(draw, df, tmp_path, "seed_c", seed=8)
    assert a.get_output(outtype="raw") == b.get_output(outtype="raw")
    assert a.get_output(outtype="raw") != c.get_output(outtype="raw")
    assert a.manifest.seed == 7


def test_seed_false_leaves_rows_unseeded(tmp_path):
    def draw(x):
        import random

        return random.random()

    job, _ = run(draw, pd.DataFrame({"x": range(6)}), tmp_path, "noseed", seed=False, nodes=1,
                 cpus_per_node=1)
    values = job.get_output(outtype="raw")
    assert len(set(values)) == 6 and job.manifest.seed is None
    with pytest.raises(slurm_apply.InputError, match="seed=False"):
        apply(draw, pd.DataFrame({"x": [1]}), seed=False, seed_arg="s", backend="local", job_dir=tmp_path)


def test_seed_arg_passes_the_row_seed(tmp_path):
    from slurm_apply._node.rows import row_seed

    def f(x, s):
        return s

    job, _ = run(f, pd.DataFrame({"x": range(4)}), tmp_path, "seedarg", seed=11, seed_arg="s")
    assert job.get_output(outtype="raw") == [row_seed(11, r) for r in range(4)]


def test_resubmit_runs_only_missing_or_failed_rows(tmp_path):
    flag = tmp_path / "fail"
    flag.write_text("x")

    def f(x):
        import os

        if x % 4 == 1 and os.path.exists(FLAG):
            raise RuntimeError("flaky")
        return x + 100

    job, status = run(f, pd.DataFrame({"x": range(12)}), tmp_path, "resub", add_objects={"FLAG": str(flag)})
    assert status.failed_rows == [1, 5, 9]
    with pytest.raises(slurm_apply.InputError, match="pass failed=True"):
        job.resubmit()
    flag.unlink()
    job.resubmit(failed=True, nodes=1, cpus_per_node=1)
    status = job.wait(timeout_s=60, progress=False)
    assert status.completed and status.rows_failed == 0
    assert list(job.get_output().result) == [x + 100 for x in range(12)]
    subs = job.manifest.submissions
    assert len(subs) == 2 and subs[1].rows == ((1, 2), (5, 6), (9, 10)) and subs[1].n_tasks == 1
    assert (job.job_dir / "submit_s1.sh").exists()


def test_a_killed_task_keeps_its_finished_rows(tmp_path):
    def slow(x):
        import time

        time.sleep(0.3)
        return x

    job = apply(slow, pd.DataFrame({"x": range(40)}), backend="local", job_dir=tmp_path, jobname="kill",
                nodes=1, cpus_per_node=1, rows_per_chunk=1)
    deadline = time.monotonic() + 30
    while job.get_job_status().rows_done < 8:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    start = (job.job_dir / "s0" / "tasks" / "t0000.start").read_text()
    pid = __import__("json").loads(start)["starts"][0]["pid"]
    os.kill(pid, signal.SIGKILL)  # no chance to save anything: only durable rows survive
    status = job.wait(timeout_s=30, progress=False)
    assert status.tasks[0] == "FAILED" and 6 <= status.rows_done < 40, str(status)
    done = status.rows_done
    job.resubmit()
    job.wait(timeout_s=60, progress=False)
    assert job.get_output(outtype="raw") == list(range(40))
    assert job.manifest.submissions[1].n_rows == 40 - done


def test_cancel_and_cleanup_locally(tmp_path):
    def slow(x):
        import time

        time.sleep(30)

    job = apply(slow, pd.DataFrame({"x": range(2)}), backend="local", job_dir=tmp_path, jobname="cancel",
                nodes=1, cpus_per_node=1)
    with pytest.raises(slurm_apply.JobActiveError):
        job.cleanup_files()
    job.cancel()
    status = job.wait(timeout_s=30, progress=False)
    assert status.tasks == {0: "CANCELLED"} and status.rows_missing == 2
    job.cleanup_files()
    assert not job.job_dir.exists()


def test_from_dir_sees_the_same_job(tmp_path):
    def f(x):
        return -x

    job, _ = run(f, pd.DataFrame({"x": range(3)}), tmp_path, "again")
    other = SlurmJob.from_dir(job.job_dir)
    assert str(other.get_job_status()) == str(job.get_job_status())
    assert other.get_output().equals(job.get_output())
