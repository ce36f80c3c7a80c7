"""Grid Engine's dialect (slurm_apply/_backends/sge/dialect.py): the ``#$`` header, the task's
variables and log, the guard on exit statuses 99 and 100, the options and their forms. The
script's body runs in a real bash here; tests/test_sge.py runs whole jobs on the cell."""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import pytest

from slurm_apply._backends.base import ArrayHeader, FollowupHeader
from slurm_apply._backends.sge import options
from slurm_apply._backends.sge import resources as res
from slurm_apply._backends.sge.dialect import DIALECT as D
from slurm_apply._errors import InputError
from slurm_apply._launch import validate as v


def _spec(**kw) -> ArrayHeader:
    base = dict(jobname="fit", n_tasks=4, max_concurrent=None, cpus_per_task=1,
                log=lambda i: Path(f"/j/logs/s0_t{i}.out"), options={})
    base.update(kw)
    return ArrayHeader(**base)


def test_array_header_lines():
    lines = D.array_header(_spec(n_tasks=5, max_concurrent=2, cpus_per_task=3,
                                 options={"pe": "mpi", "time": "1:30:00", "mem": "3G",
                                          "partition": "long.q", "account": "lab", "gpus": 2,
                                          "l": "scratch=10G", "notify": True, "hold": False}))
    assert lines[:4] == ["#$ -N fit", "#$ -t 1-5", "#$ -tc 2", "#$ -pe mpi 3"]
    assert {"#$ -S /bin/bash", "#$ -cwd", "#$ -V", "#$ -o /dev/null", "#$ -j y"} <= set(lines)
    # mem is per task; h_vmem per slot: 3G over 3 slots is 1024M each.
    assert lines[-7:] == ["#$ -l h_rt=1:30:00", "#$ -l h_vmem=1024M", "#$ -q long.q", "#$ -P lab",
                          "#$ -l gpu=2", "#$ -l scratch=10G", "#$ -notify"]
    assert not any("hold" in ln for ln in lines)


def test_one_slot_needs_no_parallel_environment():
    lines = D.array_header(_spec(options={"mem": "2G"}))
    assert not any(ln.startswith("#$ -pe") for ln in lines)
    assert "#$ -l h_vmem=2G" in lines


def test_followup_header_keeps_where_the_array_went():
    lines = D.followup_header(FollowupHeader(jobname="fit", log=Path("/j/logs/s0_retry.out"), mem="768M",
                                             time="00:15:00", options={"partition": "q1", "l": "x=1",
                                                                       "P": "lab"}))
    assert lines[:3] == ["#$ -N fit.retry", "#$ -l h_rt=00:15:00", "#$ -l h_vmem=768M"]
    assert "#$ -o /j/logs/s0_retry.out" in lines and "#$ -q q1" in lines and "#$ -P lab" in lines
    assert not any("x=1" in ln for ln in lines)


def _body(tmp_path: Path, command: str, env: dict) -> subprocess.CompletedProcess:
    script = tmp_path / "t.sh"
    lines = ["set -e", *D.task_environment(lambda i: tmp_path / f"s0_t{i}.out"), *D.run_lines(command)]
    script.write_text("\n".join(lines) + "\n")
    return subprocess.run(["bash", str(script)], env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True)


def test_task_variables_and_log(tmp_path):
    proc = _body(tmp_path, 'env | grep ^SLURM_APPLY_ | sort', {"SGE_TASK_ID": "3", "JOB_ID": "41",
                                                              "RESTARTED": "1", "HOSTNAME": "n7"})
    assert proc.returncode == 0 and proc.stdout == ""  # everything went to the task's log
    text = (tmp_path / "s0_t2.out").read_text()
    assert text.splitlines() == ["SLURM_APPLY_ARRAY_JOB_ID=41", "SLURM_APPLY_JOB_ID=41.3",
                                 f"SLURM_APPLY_NODE={os.uname().nodename}", "SLURM_APPLY_RESTARTS=1",
                                 "SLURM_APPLY_TASK=2"]


@pytest.mark.parametrize("command, status", [("exit 99", 1), ("(exit 100)", 1), ("exit 7", 7),
                                             ("true", 0), ("bash -c 'kill -SEGV $$'", 139)])
def test_no_status_grid_engine_acts_on(tmp_path, command, status):
    proc = _body(tmp_path, command, {"SGE_TASK_ID": "1"})
    assert proc.returncode == status
    if status == 1:
        assert "which Grid Engine would act on" in (tmp_path / "s0_t0.out").read_text()


def test_options_are_checked_before_anything_is_written():
    assert v.check_options({"-l": "scratch=10G", "time": "2:00:00", "hold_jid": "12", "notify": True}, D) == {
        "l": "scratch=10G", "time": "2:00:00", "hold_jid": "12", "notify": True}
    cases = [({"lscratch": "1"}, "qsub has no option -lscratch"),
             ({"t": "1-3"}, "which slurm_apply sets itself"),
             ({"o": "/tmp/x"}, "which slurm_apply sets itself"),
             ({"time": "90"}, "a bare number would be seconds to Grid Engine"),
             ({"mem": "4000"}, "a bare number would be bytes"),
             ({"mem": "1.5G"}, "whole number with a unit"),
             ({"pe": "smp 4"}, "has whitespace"), ({"pe": "4"}, "the name of a parallel environment only"),
             ({"l": "h_vmem=2G"}, "use {'time': 'H:MM:SS'} or {'mem': '4G'}"),
             ({"notify": "yes"}, "-notify is a flag"),
             ({"q": True}, "-q needs a value"),
             ({"A": "two words"}, "has whitespace"),
             ({"gpus": "a100:1"}, "a whole number of GPUs")]
    for given, words in cases:
        with pytest.raises(InputError, match=None) as info:
            v.check_options(given, D)
        assert words in str(info.value), (given, str(info.value))


def test_time_and_memory_forms():
    assert res.time_s("1:30:00") == 5400 and res.time_s("3600") == 3600 and res.time_s("2:05") == 125
    assert res.time_s("INFINITY") == math.inf and res.time_s("soon") is None
    assert res.time_text(5400) == "1:30:00" and res.time_text(0.2) == "0:00:01"
    assert res.mem_mb("4G") == 4096 and res.mem_mb("200M") == 200 and res.mem_mb("1g") == pytest.approx(953.67, 0.01)
    assert res.mem_mb("INFINITY") is None
    assert res.mem_text(8192, "4G") == "8G" and res.mem_text(300, "4G") == "300M"
    assert res.per_slot("4G", 1) == "4G" and res.per_slot("4G", 3) == "1366M"
    assert D.time_s(D.time_text(7201)) == 7201


def test_qsub_help_names_are_used(monkeypatch):
    assert "hold_jid" in options.qsub_options() and "tc" in options.qsub_options()
    assert "mattr" not in options.qsub_options()  # listed by 8.1.9's help, refused by qsub
