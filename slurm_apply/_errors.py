"""Every error slurm_apply raises on purpose derives from one base.

    SlurmApplyError
     ├── InputError (also ValueError)        a bad argument, caught before anything is written
     │    ├── UnpicklableError               f or an object cannot be pickled
     │    └── JobDirExistsError              the job directory is already there
     ├── PreflightError                      the payload does not load in a fresh interpreter
     ├── SubmissionError                     sbatch refused the job (carries sbatch's message)
     ├── SchedulerError                      squeue / sacct / scontrol failed unexpectedly
     ├── JobDirError                         the job directory is missing, corrupt or unsafe, or its
     │                                       file system refuses locks
     │    └── UnsafeJobDirError (also PermissionError)
     ├── JobActiveError                      refused because tasks are still queued or running
     ├── JobTimeoutError (also TimeoutError) wait() ran out of time
     └── ResultsError                        get_output() found rows without a result
          ├── RowsFailedError                some rows raised; the first remote traceback is the __cause__
          └── RowsMissingError               some rows never produced a result (and why)

    KeyboardInterrupt
     └── WaitInterrupted                     Ctrl-C stopped wait(); the job itself goes on

WaitInterrupted is a KeyboardInterrupt, not a SlurmApplyError, so ``except Exception`` never
swallows a Ctrl-C and ``except KeyboardInterrupt`` still catches it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Sequence

if TYPE_CHECKING:
    from ._status.model import JobStatus

__all__ = [
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


class SlurmApplyError(Exception):
    """Base of every error slurm_apply raises on purpose."""


class InputError(SlurmApplyError, ValueError):
    """An argument is wrong; nothing was written and nothing was submitted.

    ``argument`` names the argument at fault where a method says which (``"path"``, ``"tasks"``,
    ...), else None: the command line turns those into usage errors of the matching option.
    """

    def __init__(self, *args: object, argument: Optional[str] = None) -> None:
        super().__init__(*args)
        self.argument = argument


class UnpicklableError(InputError):
    """The function or one of the objects cannot be pickled."""


class JobDirExistsError(InputError):
    """The job directory already exists (pass ``overwrite=True`` to replace it)."""


class PreflightError(SlurmApplyError):
    """The pickled payload does not load in a fresh interpreter like the nodes will use."""


class SubmissionError(SlurmApplyError):
    """sbatch refused the job; ``stderr`` holds its own message."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


class SchedulerError(SlurmApplyError):
    """A Slurm command failed in a way slurm_apply cannot interpret."""


class JobDirError(SlurmApplyError):
    """The job directory is missing, incomplete or corrupt, or its file system refuses locks."""


class UnsafeJobDirError(JobDirError, PermissionError):
    """The job directory could be changed by someone else, so its pickles are not safe to load."""


class JobActiveError(SlurmApplyError):
    """The operation needs the job to be over, and tasks are still queued or running."""


class JobTimeoutError(SlurmApplyError, TimeoutError):
    """``wait()`` reached its timeout before the job ended."""


class RemoteTraceback(Exception):
    """Carries a traceback text from a node, shown as the ``__cause__`` of the local error."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return "\n" + self.tb


class ResultsError(SlurmApplyError):
    """Some rows have no result."""

    def __init__(self, message: str, rows: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.rows = list(rows)


class RowsFailedError(ResultsError):
    """Some rows raised on the node; ``rows`` lists them, ``__cause__`` shows the first traceback."""


class RowsMissingError(ResultsError):
    """Some rows produced neither a result nor an error; the message says why."""


class WaitInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a ``wait()``; the job's tasks keep running.

    Its message is one line saying so, and how to wait again or cancel. IPython and Jupyter
    show just that line instead of a traceback (through ``_render_traceback_``), and a run of
    cells stops there as on any interrupt. ``status`` is the last status the wait saw (None
    if it was stopped before it read one). Uncaught in a script, it ends the script with
    that line (naming the commands to type) and exit status 130, as a plain Ctrl-C does.
    """

    def __init__(self, message: str, status: "Optional[JobStatus]", cli_line: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.cli_line = cli_line  # the same line for a shell, once the script it stopped has ended

    def _render_traceback_(self) -> List[str]:
        return [f"{type(self).__name__}: {self}"]
