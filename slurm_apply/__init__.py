"""slurm_apply: run a Python function over every row of a table as one Slurm array job.

    >>> job = slurm_apply(f, params_df, nodes=3, cpus_per_node=2)   # doctest: +SKIP
    >>> job.wait()                                                  # doctest: +SKIP
    >>> out = job.get_output()                                      # doctest: +SKIP

This module imports nothing heavy: the node side (``python -m slurm_apply._worker``) starts here too.
"""

from ._api import slurm_apply, slurm_call, slurm_map
from ._errors import (
    InputError,
    JobActiveError,
    JobDirError,
    JobDirExistsError,
    JobTimeoutError,
    PreflightError,
    RemoteTraceback,
    ResultsError,
    RowsFailedError,
    RowsMissingError,
    SchedulerError,
    SlurmApplyError,
    SubmissionError,
    UnpicklableError,
    UnsafeJobDirError,
)
from ._job import SlurmJob
from ._status import JobStatus, TaskStatus

__version__ = "0.1.0"

__all__ = [
    "slurm_apply",
    "slurm_map",
    "slurm_call",
    "SlurmJob",
    "JobStatus",
    "TaskStatus",
    "SlurmApplyError",
    "InputError",
    "UnpicklableError",
    "JobDirExistsError",
    "PreflightError",
    "SubmissionError",
    "SchedulerError",
    "JobDirError",
    "UnsafeJobDirError",
    "JobActiveError",
    "JobTimeoutError",
    "ResultsError",
    "RowsFailedError",
    "RowsMissingError",
    "RemoteTraceback",
]
