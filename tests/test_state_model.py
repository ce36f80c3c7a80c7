"""Issue 9's list of untruths, each shown fixed (local backend; the cluster's share is in
test_unknown_cluster.py and test_slurm_backend.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slurm_apply import JobActiveError, SlurmJob, SubmissionError, slurm_apply, slurm_call, slurm_map
from slurm_apply._backends.slurm import backend as slurm_backend
from slurm_apply._store import layout as jd
from slurm_apply._node.rows import row_seed
from slurm_apply.cli import cli
from rowfns import reports_error, seeded, slow, flaky_score  # a light module: tasks import it (tests/rowfns.py)


def run(f, df, tmp_path, **kw):
    kw.setdefault("backend", "local")
    kw.setdefault("job_dir", tmp_path)
    kw.setdefault("nodes", 1)
    kw.setdefault("cpus_per_node", 1)
    return slurm_apply(f, df, **kw)


def test_errors_keep_never_overwrites_a_result_column(tmp_path):
    job = run(reports_error, pd.DataFrame({"x": range(3)}), tmp_path)
    job.wait(timeout_s=60, progress=False)
    out = job.get_output(errors="keep")
    assert out["error"].tolist() == ["e0", "e1", "e2"]  # f's own column, intact
    assert out["slurm_apply_error"].isna().all()


def test_slurm_call_can_ask_for_more_than_one_cpu(tmp_path):
    def ncpu():
        return int(os.environ.get("SLURM_CPUS_PER_TASK", "0") or 0)

    job = slurm_call(ncpu, cpus_per_node=2, backend="local", job_dir=tmp_path, jobname="two")
    assert job.manifest.latest.cpus_per_task == 2
    assert "#SBATCH --cpus-per-task=2" in (job.job_dir / "submit.sh").read_text()
    job.wait(timeout_s=60, progress=False)


def test_slurm_map_passes_seed_arg(tmp_path):
    job = slurm_map(seeded, [10, 20, 30], seed=5, seed_arg="seed", backend="local",
                    job_dir=tmp_path, jobname="m", nodes=1, cpus_per_node=1)
    job.wait(timeout_s=60, progress=False)
    assert job.get_output(outtype="raw") == [row_seed(5, r) for r in range(3)]


def test_slurm_map_refuses_an_option_it_does_not_know(tmp_path):
    with pytest.raises(ValueError, match="unknown option"):
        slurm_map(seeded, [1], nodez=2, job_dir=tmp_path)


@pytest.mark.parametrize("seed", [np.int64(3), np.uint32(3), np.int8(3)])
def test_seed_accepts_numpy_integers(tmp_path, seed):
    job = run(reports_error, pd.DataFrame({"x": [1]}), tmp_path, seed=seed, submit=False,
              jobname=f"s{type(seed).__name__}")
    assert job.manifest.seed == 3 and type(job.manifest.seed) is int


def test_an_sbatch_time_out_is_a_recorded_failed_submission(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in {"sbatch": "sleep 5", "scontrol": "echo 'MaxArraySize = 1001'"}.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setattr(slurm_backend, "COMMAND_TIMEOUT_S", 1)
    slurm_backend._config_cache.clear()
    with pytest.raises(SubmissionError, match="may have been queued"):
        run(reports_error, pd.DataFrame({"x": [1]}), tmp_path, backend="slurm", jobname="slow",
            preflight=False)
    job = SlurmJob.from_dir(tmp_path / "_rslurm_slow")
    assert job.manifest.latest.state == "failed" and "did not answer" in job.manifest.latest.error
    assert job.get_job_status().state == "NOT_SUBMITTED"


def test_resubmit_inherits_nodes_and_max_concurrent_from_the_previous_submission(tmp_path):
    job = run(slow, pd.DataFrame({"x": range(6)}), tmp_path, nodes=3, max_concurrent=1,
              slurm_options={"time": "0:10:00"}, jobname="inherit")
    job.cancel()
    job.wait(timeout_s=60, progress=False)
    job.resubmit(slurm_options={"mem": "100M"})
    first, second = job.manifest.submissions
    assert (second.nodes, second.max_concurrent, second.backend) == (3, 1, "local")
    assert second.slurm_options == {"time": "0:10:00", "mem": "100M"}
    assert "%1" in (job.job_dir / second.script).read_text()
    job.cancel()
    job.wait(timeout_s=60, progress=False)


def test_overwrite_refuses_an_active_job_and_force_replaces_it(tmp_path):
    job = run(slow, pd.DataFrame({"x": range(20)}), tmp_path, jobname="busy")
    with pytest.raises(JobActiveError, match="still queued, running or unknown"):
        run(slow, pd.DataFrame({"x": range(2)}), tmp_path, jobname="busy", overwrite=True)
    assert SlurmJob.from_dir(job.job_dir).manifest.token == job.manifest.token
    new = run(slow, pd.DataFrame({"x": range(2)}), tmp_path, jobname="busy", overwrite=True, force=True)
    assert new.manifest.token != job.manifest.token
    assert new.wait(timeout_s=60, progress=False).completed and new.get_job_status().rows_done == 2


def test_a_task_of_a_replaced_job_writes_nothing(tmp_path):
    old = run(slow, pd.DataFrame({"x": range(2)}), tmp_path, jobname="tok", submit=False)
    new = run(slow, pd.DataFrame({"x": range(2)}), tmp_path, jobname="tok", submit=False, overwrite=True)
    env = {**os.environ, "SLURM_APPLY_TASK": "0"}  # as submit.sh sets it
    proc = subprocess.run([sys.executable, "-m", "slurm_apply._node", str(new.job_dir), "0",
                           old.manifest.token], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "another job" in proc.stdout
    assert not any(jd.results_dir(new.job_dir, 0).iterdir())
    assert not any(jd.tasks_dir(new.job_dir, 0).iterdir())


def test_default_names_are_unique_in_a_loop(tmp_path):
    jobs = [run(slow, pd.DataFrame({"x": [1]}), tmp_path, submit=False) for _ in range(5)]
    assert len({j.job_dir for j in jobs}) == 5


class Unimportable:
    pass


def test_status_list_and_cleanup_work_when_values_cannot_be_unpickled_here(tmp_path):
    """f returns an object of a module that only the nodes can import."""
    mod_dir = tmp_path / "nodeonly"
    mod_dir.mkdir()
    (mod_dir / "nodeonly_mod.py").write_text("class Thing:\n    pass\n")
    script = tmp_path / "make.py"
    script.write_text(
        "import sys, pandas as pd\n"
        f"sys.path.insert(0, {str(mod_dir)!r})\n"
        "import nodeonly_mod\n"
        "from slurm_apply import slurm_apply\n"
        "def f(x):\n    return nodeonly_mod.Thing()\n"
        f"job = slurm_apply(f, pd.DataFrame({{'x': range(50)}}), backend='local', nodes=1, "
        f"cpus_per_node=1, job_dir={str(tmp_path)!r}, jobname='odd', pkgs=['nodeonly_mod'])\n"
        "assert job.wait(timeout_s=60, progress=False).completed\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(mod_dir), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, str(script)], env=env, check=True, timeout=120)
    from click.testing import CliRunner

    d = str(tmp_path / "_rslurm_odd")
    result = CliRunner().invoke(cli, ["status", d])
    assert result.exit_code == 0 and "50/50 rows" in result.output and "COMPLETED" in result.output
    result = CliRunner().invoke(cli, ["list", str(tmp_path)])
    assert result.exit_code == 0 and "50/50 done" in result.output
    result = CliRunner().invoke(cli, ["output", d])
    assert result.exit_code == 1 and "nodeonly_mod" in result.output  # a clear error, not a crash
    result = CliRunner().invoke(cli, ["cleanup", d])
    assert result.exit_code == 0 and not Path(d).exists()


def test_resubmit_chosen_rows_by_position_mask_or_label(tmp_path):
    df = pd.DataFrame({"x": range(6)}, index=[f"r{i}" for i in range(6)])
    job = run(flaky_score, df, tmp_path, jobname="pick")
    out = job.wait(timeout_s=60, progress=False) and job.get_output()
    job.resubmit(rows=out.index[out.score < 0.2])  # labels r0, r1
    assert job.manifest.latest.rows == ((0, 2),)
    job.wait(timeout_s=60, progress=False)
    job.resubmit(rows=(out.score > 0.35).to_numpy(), backend="local")  # a mask: r4, r5
    assert job.manifest.latest.rows == ((4, 6),)
    job.wait(timeout_s=60, progress=False)
    job.resubmit(rows=[3])
    assert job.manifest.latest.rows == ((3, 4),)
    assert job.wait(timeout_s=60, progress=False).completed
    assert job.get_output().score.tolist() == [x / 10 for x in range(6)]
    with pytest.raises(ValueError, match="does not have"):
        job.resubmit(rows=pd.Index(["nope"]))
    with pytest.raises(ValueError, match="one value per row"):
        job.resubmit(rows=[True, False])
    with pytest.raises(ValueError, match="positions must be 0 to 5"):
        job.resubmit(rows=[9])


def test_resubmit_takes_a_list_of_labels_where_they_cannot_be_positions(tmp_path):
    df = pd.DataFrame({"x": range(6)}, index=[f"r{i}" for i in range(6)])
    job = run(flaky_score, df, tmp_path, jobname="labels")
    job.wait(timeout_s=60, progress=False)
    job.resubmit(rows=["r2", "r4"])
    assert job.manifest.latest.rows == ((2, 3), (4, 5))
    assert job.wait(timeout_s=60, progress=False).completed
    with pytest.raises(ValueError, match=r"\['nope'\] that params_df's index does not have"):
        job.resubmit(rows=["r1", "nope"])


def test_row_positions_from_labels_and_what_stays_ambiguous():
    from slurm_apply._job.resubmit import row_positions

    index = pd.Index([f"r{i}" for i in range(6)])
    assert row_positions(["r4", "r2", "r4"], index) == [2, 4]
    assert row_positions(pd.Series(["r5"]), index) == [5]
    assert row_positions(np.array(["r1"]), index) == [1]
    assert row_positions([1, 3], index) == [1, 3]  # ints are positions, as before
    multi = pd.MultiIndex.from_tuples([("a", 1), ("a", 2), ("b", 1)])
    assert row_positions([("b", 1), ("a", 2)], multi) == [1, 2]
    # A mix of numbers and labels could mean either: refused, as is a lone label.
    with pytest.raises(ValueError, match=r"takes row positions.*could be either \(wrap labels in pd.Index\)"):
        row_positions(["r1", 3], index)
    with pytest.raises(ValueError, match=r"a single label.*\['r2'\]"):
        row_positions("r2", index)
    # An index of numbers: its labels look like positions, so labels still need pd.Index.
    floats = pd.Index([0.5, 1.5])
    with pytest.raises(ValueError, match="takes row positions"):
        row_positions([1.5], floats)
    assert row_positions(pd.Index([1.5]), floats) == [1]


def test_a_job_written_with_submit_false_is_submitted_later_here(tmp_path, caplog):
    job = run(flaky_score, pd.DataFrame({"x": range(4)}), tmp_path, jobname="later",
              submit=False)
    assert job.get_job_status().state == "NOT_SUBMITTED"
    job.submit(backend="local")
    assert "on this machine" in caplog.text
    assert job.wait(timeout_s=60, progress=False).completed
    with pytest.raises(ValueError, match="no submission waiting"):
        job.submit()


def test_cli_submit_runs_a_written_job_locally(tmp_path):
    from click.testing import CliRunner

    job = run(flaky_score, pd.DataFrame({"x": range(2)}), tmp_path, jobname="clisub", submit=False)
    result = CliRunner().invoke(cli, ["submit", str(job.job_dir), "--local"])
    assert result.exit_code == 0, result.output
    assert "submitted" in result.output
    assert SlurmJob.from_dir(job.job_dir).wait(timeout_s=60, progress=False).completed
