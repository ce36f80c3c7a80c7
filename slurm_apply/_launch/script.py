"""The array job script: text built from data, every value quoted.

A script is ``#!/bin/bash``, a comment, the scheduler's header (its backend's dialect writes it
and quotes each value for the scheduler that reads it: ``Dialect.array_header``), then a bash
body shared by every backend, in which every value goes through ``shlex.quote``: the dialect's
lines that export the neutral task variables (``_node/taskenv.py``) from the scheduler's own,
``cd`` to where the caller was, ``PYTHONPATH``, the user's setup lines, and the dialect's
:meth:`Dialect.run_lines` of ``python -m slurm_apply._node`` (on Slurm: ``exec`` it).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence

from .._backends import ArrayHeader, Dialect, FollowupHeader
from .._backends.base import OptionValue


def _body(*, workdir: Path, pythonpath: Optional[str], setup: Sequence[str],
          task_environment: Sequence[str] = ()) -> List[str]:
    lines = ["", "set -e", *task_environment]
    # Run where the caller was, so relative paths in f mean the same on the node.
    lines.append(f"cd {shlex.quote(str(workdir))}")
    if pythonpath:
        lines.append(f"export PYTHONPATH={shlex.quote(pythonpath)}${{PYTHONPATH:+:$PYTHONPATH}}")
    if setup:
        lines.append("# setup lines, as given")
        lines.extend(setup)  # the user's own shell, verbatim (checked: one line each)
    return lines


def render(*, dialect: Dialect, jobname: str, n_tasks: int, cpus_per_task: int, log: Callable[[str], Path],
           options: Mapping[str, OptionValue], python: str, job_dir: Path, sub: int, token: str,
           workdir: Path, pythonpath: Optional[str], max_concurrent: Optional[int],
           setup: Sequence[str] = ()) -> str:
    """The array script of submission ``sub``: ``log`` gives a task's log path from the text
    that stands for its index."""
    lines: List[str] = ["#!/bin/bash", f"# slurm_apply array job: submission {sub} of {jobname}"]
    lines += dialect.array_header(ArrayHeader(jobname=jobname, n_tasks=n_tasks, max_concurrent=max_concurrent,
                                              cpus_per_task=cpus_per_task, log=log, options=options))
    # What the task is (its index, job ids, restarts, node), in the neutral variables it reads.
    lines += _body(workdir=workdir, pythonpath=pythonpath, setup=setup,
                   task_environment=dialect.task_environment(log))
    lines += dialect.run_lines(
        # The job's token: a task of a job that was replaced in this directory does nothing.
        f"{shlex.quote(python)} -m slurm_apply._node {shlex.quote(str(job_dir))} {int(sub)} "
        f"{shlex.quote(token)}"
    )
    return "\n".join(lines) + "\n"


def render_followup(*, dialect: Dialect, jobname: str, log: Path, options: Mapping[str, OptionValue],
                    python: str, job_dir: Path, sub: int, token: str, workdir: Path, pythonpath: Optional[str],
                    setup: Sequence[str], mem: str, time: str, module: str = "slurm_apply._job.followup",
                    kind: str = "retry", what: str = "retries the rows whose task died") -> str:
    """The follow-up of submission ``sub``: a one-CPU job, started once the array has ended,
    that runs again the rows whose task died (``python -m slurm_apply._job.followup``). It goes where
    the array went (the dialect keeps the options that say where: partition, account, ...) and
    runs the same setup lines, so it finds the same Python."""
    lines: List[str] = ["#!/bin/bash", f"# slurm_apply {kind} of submission {sub} of {jobname}: {what}"]
    lines += dialect.followup_header(FollowupHeader(jobname=jobname, log=log, mem=mem, time=time,
                                                    options=options, kind=kind))
    # The task lines too: a scheduler may need them whatever the job (e.g. to guard its exit).
    lines += _body(workdir=workdir, pythonpath=pythonpath, setup=setup,
                   task_environment=dialect.task_environment())
    lines += dialect.run_lines(f"{shlex.quote(python)} -m {module} "
                               f"{shlex.quote(str(job_dir))} {int(sub)} {shlex.quote(token)}")
    return "\n".join(lines) + "\n"
