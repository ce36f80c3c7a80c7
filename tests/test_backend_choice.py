"""Which backend a job runs on: backend="auto" (Slurm, else Grid Engine, else this machine),
$SLURM_APPLY_BACKEND and the defaults file's ``backend``; and a job written for one scheduler
submitted to another (its script written again in the other's forms, or a clear refusal)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from slurm_apply import InputError, slurm_map
from slurm_apply import _backends as backends


def square(x):
    return x * x


@pytest.fixture
def only_qsub(tmp_path, monkeypatch):
    """A PATH with qsub (and bash) but no sbatch."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("qsub", "bash"):
        found = shutil.which(name)
        if found is None:
            why = f"{name} is not installed (bash tests/run.sh installs Grid Engine's qsub)"
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                pytest.fail(why)  # in CI every test runs: a missing qsub is a failure
            pytest.skip(why)
        (bin_dir / name).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def test_auto_is_grid_engine_where_qsub_and_sge_root_are(only_qsub, monkeypatch, tmp_path):
    monkeypatch.setenv("SGE_ROOT", str(tmp_path))
    assert backends.choose("auto") == "sge"
    monkeypatch.delenv("SGE_ROOT")
    assert backends.choose("auto") == "local"
    assert backends.choose("sge") == "sge"


def test_the_environment_variable_and_the_defaults_file_choose(tmp_path, monkeypatch):
    monkeypatch.setenv("SGE_ROOT", str(tmp_path))  # qsub is installed here; no cell is needed to write
    monkeypatch.setenv("SLURM_APPLY_BACKEND", "sge")
    job = slurm_map(square, range(3), nodes=1, cpus_per_node=1, job_dir=tmp_path, jobname="viaenv", submit=False)
    assert job.manifest.latest.backend == "sge"
    assert "#$ -t 1-1" in (job.job_dir / "submit.sh").read_text()
    monkeypatch.setenv("SLURM_APPLY_BACKEND", "pbs")
    with pytest.raises(InputError, match=r"SLURM_APPLY_BACKEND='pbs' is not a backend; it may be one of"):
        slurm_map(square, range(3), job_dir=tmp_path, jobname="bad", submit=False)
    monkeypatch.delenv("SLURM_APPLY_BACKEND")
    conf = tmp_path / "defaults.toml"
    conf.write_text('backend = "sge"\n')
    monkeypatch.setenv("SLURM_APPLY_CONFIG", str(conf))
    job = slurm_map(square, range(3), nodes=1, cpus_per_node=1, job_dir=tmp_path, jobname="viafile", submit=False)
    assert job.manifest.latest.backend == "sge"
    job = slurm_map(square, range(3), job_dir=tmp_path, jobname="named", submit=False, backend="local")
    assert job.manifest.latest.backend == "local"  # the call's own backend wins


def test_written_for_grid_engine_then_run_here(tmp_path, monkeypatch):
    monkeypatch.setenv("SGE_ROOT", str(tmp_path))
    job = slurm_map(square, range(5), nodes=2, cpus_per_node=1, job_dir=tmp_path, jobname="moved",
                    submit=False, backend="sge", slurm_options={"time": "0:10:00", "mem": "1G"})
    assert "#$ -l h_rt=0:10:00" in (job.job_dir / "submit.sh").read_text()
    job.submit(backend="local")
    script = (job.job_dir / "submit.sh").read_text()
    assert "#$" not in script and "#SBATCH --time=0:10:00" in script and "#SBATCH --mem=1G" in script
    assert job.wait(timeout_s=60, progress=False).completed
    assert job.get_output(outtype="raw") == [0, 1, 4, 9, 16]


def test_options_the_other_scheduler_does_not_take_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SGE_ROOT", str(tmp_path))
    job = slurm_map(square, range(2), nodes=1, cpus_per_node=1, job_dir=tmp_path, jobname="stuck",
                    submit=False, backend="sge", slurm_options={"l": "scratch=1G"})
    before = (job.job_dir / "submit.sh").read_text()
    with pytest.raises(InputError, match=r"was written for the sge backend, with options \{'l': 'scratch=1G'\}, "
                                         r"and the local backend cannot submit it as they are"):
        job.submit(backend="local")
    assert (job.job_dir / "submit.sh").read_text() == before
    assert job.manifest.latest.backend == "sge" and not job.job_ids
    assert os.path.exists(Path(job.job_dir) / "submit.sh")
