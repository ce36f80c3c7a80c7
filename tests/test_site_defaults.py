"""Setup lines and a user's site defaults file."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from slurm_apply import InputError, slurm_apply


def f(x):
    return x


def write(tmp_path, **kw):
    kw.setdefault("job_dir", tmp_path)
    kw.setdefault("backend", "local")
    kw.setdefault("submit", False)
    kw.setdefault("preflight", False)
    return slurm_apply(f, pd.DataFrame({"x": [1, 2]}), **kw)


def test_setup_lines_go_into_the_script_before_the_worker_verbatim(tmp_path):
    job = write(tmp_path, jobname="s", setup=["module load cuda/12.1", "source ~/venv/bin/activate  # x"])
    script = (job.job_dir / "submit.sh").read_text().splitlines()
    at = script.index("module load cuda/12.1")
    assert script[at + 1] == "source ~/venv/bin/activate  # x"
    assert script[-1].startswith("exec ") and at < len(script) - 1
    assert job.manifest.latest.setup == ("module load cuda/12.1", "source ~/venv/bin/activate  # x")


@pytest.mark.parametrize("setup, words", [
    (["echo a\necho b"], "give one line per list item"),
    ("module load x", "must be a list of shell lines"),
    ([1], "must be a list of shell lines"),
])
def test_bad_setup_is_refused(tmp_path, setup, words):
    with pytest.raises(InputError, match=words):
        write(tmp_path, jobname="bad", setup=setup)
    assert list(tmp_path.iterdir()) == []


def here(x):
    if x == 1 and not os.path.exists(FLAG):
        open(FLAG, "w").close()
        raise ValueError("first time")
    return os.environ.get("SA_SETUP", "unset")


def test_setup_runs_on_the_node_and_is_kept_for_resubmissions(tmp_path):
    job = slurm_apply(here, pd.DataFrame({"x": range(3)}), setup=["export SA_SETUP=yes"],
                      add_objects={"FLAG": str(tmp_path / "flag")}, job_dir=tmp_path, jobname="run",
                      backend="local", nodes=1, cpus_per_node=1)
    assert job.wait(timeout_s=60, progress=False).rows_failed == 1
    job.resubmit(failed=True)
    assert job.wait(timeout_s=60, progress=False).completed
    assert job.get_output().result.tolist() == ["yes"] * 3
    assert job.manifest.latest.setup == ("export SA_SETUP=yes",)
    assert "export SA_SETUP=yes" in (job.job_dir / job.manifest.latest.script).read_text()


def config(tmp_path, text, monkeypatch, via_env=True):
    if via_env:
        path = tmp_path / "site.toml"
        monkeypatch.setenv("SLURM_APPLY_CONFIG", str(path))
    else:
        path = tmp_path / "xdg" / "slurm_apply" / "config.toml"
        path.parent.mkdir(parents=True)
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    path.write_text(text)
    return path


SITE = """
nodes = 3
cpus_per_node = 1
setup = ["module load python"]

[slurm_options]
partition = "short"
time = "2:00:00"
"""


@pytest.mark.parametrize("via_env", [True, False])
def test_site_defaults_fill_what_the_call_leaves_out_and_are_recorded(tmp_path, monkeypatch, via_env):
    path = config(tmp_path, SITE, monkeypatch, via_env)
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    job = write(jobs, jobname="site", slurm_options={"t": "0:30:00", "mem": "1G"})
    sub = job.manifest.latest
    assert (sub.nodes, sub.cpus_per_task, sub.setup) == (3, 1, ("module load python",))
    assert sub.slurm_options == {"partition": "short", "time": "0:30:00", "mem": "1G"}
    assert job.manifest.defaults == {"file": str(path), "applied": {
        "nodes": 3, "cpus_per_node": 1, "setup": ["module load python"],
        "slurm_options": {"partition": "short"}}}
    other = write(jobs, jobname="mine", nodes=1, cpus_per_node=2, setup=[])
    assert (other.manifest.latest.nodes, other.manifest.latest.cpus_per_task) == (1, 2)
    assert other.manifest.latest.setup == ()


@pytest.mark.parametrize("text, words", [
    ("nodez = 3\n", r"unknown key\(s\) \['nodez'\]"),
    ("nodes = 'three'\n", "nodes must be a int"),
    ("[slurm_options]\ntiem = '1:00:00'\n", "did you mean 'time'"),
    ("nodes = \n", "cannot be read"),
])
def test_a_bad_defaults_file_is_an_input_error_naming_it(tmp_path, monkeypatch, text, words):
    config(tmp_path, text, monkeypatch)
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    with pytest.raises(InputError, match=words):
        write(jobs, jobname="x")
    assert list(jobs.iterdir()) == []


def test_the_environment_variable_must_name_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_APPLY_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(InputError, match="names no file"):
        write(tmp_path, jobname="x")


def reads_env(x):
    return os.environ.get("SA_SETUP", "unset")


def test_setup_lines_run_on_the_cluster_with_site_defaults(cluster, job_parent, tmp_path, monkeypatch):
    config(tmp_path, 'setup = ["export SA_SETUP=site"]\n[slurm_options]\ntime = "0:05:00"\n', monkeypatch)
    job = slurm_apply(reads_env, pd.DataFrame({"x": range(4)}), nodes=2, cpus_per_node=1,
                      job_dir=job_parent, jobname="setup", backend="slurm")
    assert job.wait(timeout_s=120, progress=False).completed
    assert job.get_output().result.tolist() == ["site"] * 4
    assert "#SBATCH --time=0:05:00" in (job.job_dir / "submit.sh").read_text()
