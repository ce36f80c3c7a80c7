"""The neutral variables an array task reads: what it is (its index, its job's ids, how often it
was started again, its host), whatever the scheduler.

The job script exports them from the scheduler's own variables, with lines its backend's dialect
gives (``Dialect.task_environment``); the local runner's tasks get them the same way. A task
reads only these, so a new scheduler needs no change here.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Mapping, Optional

TASK = "SLURM_APPLY_TASK"  # the task's index, 0-based
JOB_ID = "SLURM_APPLY_JOB_ID"  # the scheduler's id of this task's own job
ARRAY_JOB_ID = "SLURM_APPLY_ARRAY_JOB_ID"  # the id of the whole array
RESTARTS = "SLURM_APPLY_RESTARTS"  # how often the scheduler has started this task again
NODE = "SLURM_APPLY_NODE"  # the host it runs on
NAMES = (TASK, JOB_ID, ARRAY_JOB_ID, RESTARTS, NODE)


@dataclass(frozen=True)
class TaskEnv:
    task: Optional[int]  # None when the script did not say (not run by an array job)
    job_id: Optional[str]
    array_job_id: Optional[str]
    restarts: int
    node: str


def read(environ: Mapping[str, str] = os.environ) -> TaskEnv:
    """The task's variables; an empty one counts as unset (a scheduler variable the script
    read was not there)."""
    def get(name: str) -> Optional[str]:
        return environ.get(name) or None

    task, restarts = get(TASK), get(RESTARTS)
    return TaskEnv(task=int(task) if task is not None else None, job_id=get(JOB_ID),
                   array_job_id=get(ARRAY_JOB_ID), restarts=int(restarts) if restarts else 0,
                   node=get(NODE) or socket.gethostname())
