"""Running a scheduler's command: with an argument list (never a shell), a time limit, and an
error that names the command and what went wrong. Each backend says how to get its commands onto
PATH (``not_on_path``) and what environment they need."""

from __future__ import annotations

import subprocess
from typing import Mapping, Optional, Sequence

from .._errors import SchedulerError


class CommandTimeout(SchedulerError):
    """A command did not answer in time; it may still have done what it was asked."""


def run(args: Sequence[str], timeout_s: float, not_on_path: str,
        env: Optional[Mapping[str, str]] = None) -> subprocess.CompletedProcess:
    """Run ``args``; its output as text. ``not_on_path`` (a format with one ``{}``, the
    command) is the error when the command is not found."""
    try:
        return subprocess.run(list(args), capture_output=True, text=True, errors="replace",
                              timeout=timeout_s, stdin=subprocess.DEVNULL,
                              env=dict(env) if env is not None else None)
    except FileNotFoundError:
        raise SchedulerError(not_on_path.format(args[0])) from None
    except subprocess.TimeoutExpired:
        raise CommandTimeout(f"{args[0]} did not answer within {timeout_s:.0f} s") from None
    except OSError as exc:
        raise SchedulerError(f"{args[0]} could not be run: {exc}") from None
