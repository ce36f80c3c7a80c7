"""The backends a submission can run on; chosen by name, so nothing else asks which it is."""

from __future__ import annotations

import importlib
from typing import Dict

from .base import Answer, Backend, Limits, Query, TaskKey, TaskRecord, Unknown

__all__ = ["Answer", "Backend", "Limits", "Query", "TaskKey", "TaskRecord", "Unknown", "get", "choose", "NAMES"]

NAMES = ("slurm", "local")
_CLASSES = {"slurm": ("slurm.backend", "SlurmBackend"), "local": ("local.backend", "LocalBackend")}
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
