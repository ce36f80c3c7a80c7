"""Constant arguments (more_args), running one row here (test_row), and rows as they finish."""

from __future__ import annotations

import functools
import os
import random

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from slurm_apply import FailedRow, InputError, slurm_apply, slurm_map
from slurm_apply.cli import cli


def score(x, n_iter, data):
    return {"s": x * n_iter + float(data.sum())}


def local(f, df, tmp_path, **kw):
    kw.setdefault("jobname", "j")
    return slurm_apply(f, df, backend="local", nodes=1, cpus_per_node=1, job_dir=tmp_path, **kw)


def test_more_args_reach_every_call_and_are_stored_once(tmp_path):
    data = np.arange(4.0)
    job = local(score, pd.DataFrame({"x": range(5)}), tmp_path, more_args={"n_iter": 10, "data": data})
    assert job.wait(timeout_s=60, progress=False).completed
    assert job.get_output().s.tolist() == [x * 10 + 6.0 for x in range(5)]
    assert job.manifest.more_args == ["data", "n_iter"]
    for table in ("params_meta.pkl", "s0/params.bin"):
        assert "n_iter" not in (job.job_dir / table).read_bytes().decode("latin1")


def test_functools_partial_works_too(tmp_path):
    job = local(functools.partial(score, n_iter=2, data=np.ones(3)), pd.DataFrame({"x": [1, 2]}), tmp_path)
    assert job.jobname == "j" and job.wait(timeout_s=60, progress=False).completed
    assert job.get_output().s.tolist() == [5.0, 7.0]


def add(x, k):
    return x + k


def test_slurm_map_takes_more_args(tmp_path):
    job = slurm_map(add, [1, 2, 3], more_args={"k": 100}, backend="local", job_dir=tmp_path,
                    jobname="m", nodes=1, cpus_per_node=1)
    job.wait(timeout_s=60, progress=False)
    assert job.get_output(outtype="raw") == [101, 102, 103]


@pytest.mark.parametrize("more, words", [
    ({"x": 1, "n_iter": 2, "data": 0}, r"more_args gives \['x'\], which params_df"),
    ({"n_iter": 1, "data": 0, "nope": 3}, "does not take"),
    (["n_iter"], "must be a dict"),
])
def test_bad_more_args_are_refused(tmp_path, more, words):
    with pytest.raises(InputError, match=words):
        local(score, pd.DataFrame({"x": [1]}), tmp_path, more_args=more)
    assert list(tmp_path.iterdir()) == []


def seeded(x, seed, k):
    if x == 2:
        raise KeyError("two")
    return (x, seed, k, random.random(), os.getcwd())


def test_test_row_runs_a_row_as_the_node_did(tmp_path, monkeypatch):
    df = pd.DataFrame({"x": range(3)}, index=["a", "b", "c"])
    job = local(seeded, df, tmp_path, seed=11, seed_arg="seed", more_args={"k": 7})
    job.wait(timeout_s=60, progress=False)
    on_node = job.get_output(outtype="raw", errors="keep")
    monkeypatch.chdir("/")
    here = job.test_row("b")
    assert here == on_node[1]  # same seed, same random draw, same working directory
    assert job.test_row("b", fresh=True) == on_node[1]
    with pytest.raises(KeyError, match="two"):
        job.test_row("c")
    with pytest.raises(KeyError) as info:
        job.test_row("c", fresh=True)
    assert "KeyError" in str(info.value.__cause__)  # the fresh interpreter's traceback
    assert isinstance(on_node[2], FailedRow)
    with pytest.raises(InputError, match="no row labelled"):
        job.test_row("zz")


def test_cli_test_prints_the_value_or_the_error(tmp_path):
    job = local(seeded, pd.DataFrame({"x": range(3)}), tmp_path, seed=1, seed_arg="seed",
                more_args={"k": 1}, submit=False)
    result = CliRunner().invoke(cli, ["test", str(job.job_dir), "0"])
    assert result.exit_code == 0 and result.output.startswith("(0, ")
    result = CliRunner().invoke(cli, ["test", str(job.job_dir), "2"])
    assert result.exit_code == 1 and "row 2 raised KeyError" in result.output
    result = CliRunner().invoke(cli, ["test", str(job.job_dir), "x"])
    assert result.exit_code == 2


def slowish(x):
    import time

    time.sleep(0.2)
    if x == 3:
        raise ValueError("three")
    return x * x


def test_as_completed_yields_each_row_once_as_it_finishes(tmp_path):
    df = pd.DataFrame({"x": range(8)}, index=[f"r{i}" for i in range(8)])
    job = local(slowish, df, tmp_path)
    got = dict(job.as_completed(timeout_s=60))
    assert sorted(got) == [f"r{i}" for i in range(8)]
    assert got["r5"] == 25 and isinstance(got["r3"], FailedRow) and got["r3"].message == "three"
