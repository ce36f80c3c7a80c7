"""slurm_apply: run a Python function over every row of a table as one Slurm array job.

    >>> job = slurm_apply(f, params_df, nodes=3, cpus_per_node=2)   # doctest: +SKIP
    >>> job.wait()                                                  # doctest: +SKIP
    >>> out = job.get_output()                                      # doctest: +SKIP

Every array task starts with ``python -m slurm_apply._node``, which imports this package first;
so the public names are loaded on first use, and a task pays only for the modules it needs.
"""

import typing as _typing

if _typing.TYPE_CHECKING:  # what static tools see; at run time the names load on first use (below)
    from ._submit.api import slurm_apply
    from ._submit.map import slurm_call, slurm_map
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
        WaitInterrupted,
    )
    from ._job.handle import SlurmJob
    from ._job.output import FailedRow, MissingRow
    from ._job.logs import TaskLog
    from ._status.model import JobStatus, TaskStatus
    from ._store.layout import find_job_dirs

__version__ = "0.2.0"

__all__ = [
    "slurm_apply",
    "slurm_map",
    "slurm_call",
    "SlurmJob",
    "JobStatus",
    "TaskStatus",
    "TaskLog",
    "FailedRow",
    "MissingRow",
    "find_job_dirs",
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
    "WaitInterrupted",
]

_HOME = {name: "._errors" for name in __all__
         if name.endswith("Error") or name in ("RemoteTraceback", "WaitInterrupted")}
_HOME.update(slurm_apply="._submit.api", slurm_map="._submit.map", slurm_call="._submit.map",
             SlurmJob="._job.handle", JobStatus="._status.model", TaskStatus="._status.model",
             FailedRow="._job.output", MissingRow="._job.output", TaskLog="._job.logs",
             find_job_dirs="._store.layout")


def __getattr__(name: str) -> _typing.Any:
    if name in _HOME:
        import importlib

        value = getattr(importlib.import_module(_HOME[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'slurm_apply' has no attribute {name!r}")


def __dir__() -> _typing.List[str]:
    return sorted(set(globals()) | set(__all__))
