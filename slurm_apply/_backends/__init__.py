"""The backends a submission can run on; chosen by name, so nothing else asks which it is."""

from __future__ import annotations

import importlib
from typing import Dict, cast

from .base import Answer, Backend, Limits, OptionRules, Query, TaskKey, TaskRecord, Unknown

__all__ = ["Answer", "Backend", "Limits", "OptionRules", "Query", "TaskKey", "TaskRecord", "Unknown", "get",
           "choose", "option_rules", "NAMES"]

NAMES = ("slurm", "local")
_CLASSES = {"slurm": ("slurm.backend", "SlurmBackend"), "local": ("local.backend", "LocalBackend")}
# Whose options a backend takes: the local runner runs the same sbatch script, so it takes (and
# checks) sbatch's, and a job tried locally runs unchanged on the cluster.
_OPTION_RULES = {"auto": "slurm.options", "slurm": "slurm.options", "local": "slurm.options"}
_made: Dict[str, Backend] = {}


def get(name: str) -> Backend:
    """The backend a submission records by name."""
    if name not in _made:
        module, cls = _CLASSES[name]
        _made[name] = getattr(importlib.import_module(f"{__name__}.{module}"), cls)()
    return _made[name]


def choose(requested: str) -> str:
    """The backend to use for a new job: "auto" is Slurm where a cluster answers, else local."""
    if requested != "auto":
        return requested
    from .slurm.backend import cluster_available

    return "slurm" if cluster_available() else "local"


def option_rules(name: str) -> OptionRules:
    """The names and value forms of the options the backend ``name`` takes ("auto" included)."""
    return cast(OptionRules, importlib.import_module(f"{__name__}.{_OPTION_RULES[name]}"))
