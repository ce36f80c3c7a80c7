"""The backends a submission can run on; chosen by name, so nothing else asks which it is."""

from __future__ import annotations

import importlib
from typing import Dict

from .base import (Answer, ArrayHeader, Backend, Dialect, FollowupHeader, Limits, Query, TaskKey,
                   TaskRecord, Unknown, control_characters)

__all__ = ["Answer", "ArrayHeader", "Backend", "Dialect", "FollowupHeader", "Limits", "Query",
           "TaskKey", "TaskRecord", "Unknown", "control_characters", "get", "choose", "dialect",
           "NAMES"]

NAMES = ("slurm", "sge", "local")
_CLASSES = {"slurm": ("slurm.backend", "SlurmBackend"), "sge": ("sge.backend", "SgeBackend"),
            "local": ("local.backend", "LocalBackend")}
# Whose job script a backend writes (its options, its header): the local runner runs the same
# sbatch script, so it takes (and checks) sbatch's options, a job tried locally runs unchanged on
# the cluster, and one written for the cluster can be run here.
_DIALECTS = {"auto": "slurm.dialect", "slurm": "slurm.dialect", "sge": "sge.dialect", "local": "slurm.dialect"}
_made: Dict[str, Backend] = {}


def get(name: str) -> Backend:
    """The backend a submission records by name, with the dialect of its scripts."""
    if name not in _made:
        module, cls = _CLASSES[name]
        _made[name] = getattr(importlib.import_module(f"{__name__}.{module}"), cls)(dialect(name))
    return _made[name]


def choose(requested: str) -> str:
    """The backend to use for a new job: "auto" is Slurm where a cluster answers, else Grid
    Engine where this shell is set up for a cell (qsub on PATH, SGE_ROOT set), else local."""
    if requested != "auto":
        return requested
    from .slurm.backend import cluster_available

    if cluster_available():
        return "slurm"
    from .sge.commands import cell_available

    return "sge" if cell_available() else "local"


def dialect(name: str) -> Dialect:
    """The forms of the job script and options of the backend ``name`` ("auto" included)."""
    found: Dialect = importlib.import_module(f"{__name__}.{_DIALECTS[name]}").DIALECT
    return found

