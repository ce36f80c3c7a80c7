"""slurm_options typos and malformed values are refused before anything is written."""

from __future__ import annotations

import pandas as pd
import pytest

from slurm_apply import InputError, slurm_apply
from slurm_apply._backends.slurm import options as sbatch_options


def f(x):
    return x


def submit(tmp_path, options):
    return slurm_apply(f, pd.DataFrame({"x": [1]}), slurm_options=options, job_dir=tmp_path,
                       jobname="opts", backend="local", submit=False, preflight=False)


@pytest.mark.parametrize("options, words", [
    ({"tiem": "1:00:00"}, "sbatch has no option --tiem; did you mean 'time'"),
    ({"partiton": "debug"}, "did you mean 'partition'"),
    ({"mem_per_cpu": "2G", "memory": "4G"}, "sbatch has no option --memory"),
    ({"time": "abc"}, "time='abc' is not a form sbatch takes for --time"),
    ({"t": "1h"}, "is not a form sbatch takes for --time"),
    ({"mem": "4 GB"}, "not a form sbatch takes for --mem"),
    ({"gres": "gpu:"}, "not a form sbatch takes for --gres"),
    ({"nodes": "two"}, "not a form sbatch takes for --nodes"),
    ({"Z": "x"}, "-Z is not a short sbatch option"),
])
def test_typos_and_bad_values_are_refused_before_writing(tmp_path, options, words):
    with pytest.raises(InputError, match=words.replace("(", r"\(").replace("'", "'")):
        submit(tmp_path, options)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("options", [
    {"time": "2:00:00"}, {"time": "30"}, {"time": "1-12"}, {"time": "2-00:00:00"}, {"t": "UNLIMITED"},
    {"mem": "4G"}, {"mem": 4000}, {"mem-per-cpu": "500M"}, {"gres": "gpu:a100:1,mps:100"},
    {"gpus": "a100:2"}, {"gpus": 1}, {"nodes": "2-4"}, {"open-mode": "append"}, {"hint": "nomultithread"},
    {"p": "debug"}, {"exclusive": True}, {"requeue": False}, {"qos": "long"},
])
def test_valid_options_pass(tmp_path, options):
    assert submit(tmp_path, options).manifest.latest.slurm_options


def test_names_come_from_this_machines_sbatch_help():
    text = ("Parallel run options:\n  -a, --array=indexes         job array index values\n"
            "      --brand-new=x           an option of a newer Slurm\n")
    assert sbatch_options.parse_help(text) == {"array", "brand-new"}
    # Without a working sbatch (no cluster configured here), the lists of Slurm 22.05 stand in.
    assert {"time", "mem", "partition", "open-mode"} <= sbatch_options.known_names()


def test_on_the_cluster_the_names_are_read_from_its_sbatch(cluster, job_parent):
    import subprocess

    sbatch_options._cache.clear()
    helped = sbatch_options.parse_help(subprocess.run(["sbatch", "--help"], capture_output=True,
                                                      text=True, check=True).stdout)
    assert {"time", "mem", "partition", "gres"} <= helped
    assert helped <= sbatch_options.known_names()
    with pytest.raises(InputError, match="did you mean 'partition'"):
        slurm_apply(f, pd.DataFrame({"x": [1]}), slurm_options={"partiton": "debug"},
                    job_dir=job_parent, jobname="typo", backend="slurm")
    assert list(job_parent.iterdir()) == []
