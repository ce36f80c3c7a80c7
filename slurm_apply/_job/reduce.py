"""``job.reduce(fn, **options)``: one call of ``fn`` on the job's output table, run on the
cluster after the job (a chained ``slurm_call``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict


class Reduction:
    """Called (with no argument) in the reducing job's one task: ``fn`` of the upstream job's
    output table, read there (``SlurmJob(job_dir).get_output()``)."""

    def __init__(self, fn: Callable[[Any], Any], job_dir: Path) -> None:
        self.fn, self.job_dir = fn, str(job_dir)
        # How the job is named and described: after fn.
        self.__name__ = getattr(fn, "__name__", "reduce")
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self.__module__ = getattr(fn, "__module__", __name__)

    @property
    def __signature__(self) -> Any:
        import inspect

        return inspect.Signature([])

    def __call__(self) -> Any:
        from .. import SlurmJob  # the public name: handle.py imports this module

        return self.fn(SlurmJob(self.job_dir).get_output())

    @property
    def __globals__(self) -> Dict[str, Any]:
        return getattr(self.fn, "__globals__", {})


def reduce_options(job_dir: Path, backend: str, options: Dict[str, Any]) -> Dict[str, Any]:
    """The options of the reducing call: ``after`` the job, on its backend and with its
    directory beside the job's (unless given), and slurm_call's own defaults for the rest."""
    if "after" in options:
        from .._errors import InputError

        raise InputError(f"reduce() runs after its own job: after={options['after']!r} cannot be "
                         "given to it; chain the other jobs with slurm_call(..., after=[...])")
    return {"job_dir": os.fspath(Path(job_dir).parent), "backend": backend, **options,
            "after": str(job_dir)}
