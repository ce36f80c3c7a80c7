"""The library's notices go through ``logging.getLogger("slurm_apply")``.

Configure nothing and they still show: INFO and up are written to stderr as
``slurm_apply: <message>`` by a fallback handler, which stays quiet as soon as a handler of
yours would take them (one on this logger or an ancestor, e.g. after ``logging.basicConfig()``),
so nothing is shown twice. To change what is shown::

    logging.getLogger("slurm_apply").setLevel(logging.WARNING)   # only warnings
    logging.getLogger("slurm_apply").addHandler(my_handler)      # route them (fallback goes quiet)

The logger's level is INFO unless it was set before slurm_apply was imported: the INFO notices
(e.g. "running 4 array task(s) on this machine") are ones users rely on, and Python's default
WARNING level would hide them. Lines that array tasks write to their logs do not come here.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("slurm_apply")


class _Fallback(logging.Handler):
    """Writes a record to the current ``sys.stderr`` when no other handler would take it."""

    def emit(self, record: logging.LogRecord) -> None:
        if _routed():
            return
        try:
            # The current sys.stderr, looked up at each record: a notebook or pytest replaces it.
            sys.stderr.write(f"slurm_apply: {record.getMessage()}\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def _routed() -> bool:
    """Whether a handler other than the fallback sits on the logger or an ancestor it reaches."""
    node: "logging.Logger | None" = logger
    while node is not None:
        if any(not isinstance(h, _Fallback) for h in node.handlers):
            return True
        if not node.propagate:
            return False
        node = node.parent
    return False


if not any(isinstance(h, _Fallback) for h in logger.handlers):
    logger.addHandler(_Fallback())
if logger.level == logging.NOTSET:
    logger.setLevel(logging.INFO)
