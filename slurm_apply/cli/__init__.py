"""The ``slurm-apply`` command: click commands over the library's public names."""

from .commands import cli, main
from . import act as _act  # noqa: F401  (the commands that act on a job register on ``cli``)

__all__ = ["cli", "main"]
