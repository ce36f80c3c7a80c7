"""Jobs that mostly wait out a Slurm time limit, started as soon as the test clusters are up and
checked later by the tests that own them, so the suite does not sit through each wait in turn.

A test module registers a starter, ``@early.job("acct", "noacct")``, on a function of a
directory for the job and the cluster's kind, that submits the job and returns its handle. When
a selected test of that module uses the ``early_jobs`` fixture, conftest runs the module's
starters with each cluster's environment once the clusters are up, before the first test; the
test then takes each job by the starter's name and the kind: ``early_jobs["time_acct"]``. The jobs go to the clusters'
partition ``long``, whose node nothing else uses, so they do not slow the other tests' jobs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

Starter = Callable[[Path, str], Any]

# (module, "<starter's name>_<kind>") -> (cluster kind, starter)
STARTERS: Dict[Tuple[str, str], Tuple[str, Starter]] = {}
# (module, starter's name) -> (the job, or the exception its start raised; time.monotonic() then)
STARTED: Dict[Tuple[str, str], Tuple[Any, float]] = {}


def job(*kinds: str) -> Callable[[Starter], Starter]:
    if not kinds or set(kinds) - {"acct", "noacct"}:
        raise ValueError(f"kinds must be 'acct' and/or 'noacct', got {kinds!r}")

    def register(fn: Starter) -> Starter:
        for kind in kinds:
            STARTERS[(fn.__module__, f"{fn.__name__}_{kind}")] = (kind, fn)
        return fn

    return register


def start(module: str, name: str, parent: Path) -> None:
    kind, fn = STARTERS[(module, name)]
    try:
        STARTED[(module, name)] = (fn(parent, kind), time.monotonic())
    except Exception as exc:  # raised again in the test that owns the job
        STARTED[(module, name)] = (exc, time.monotonic())


class Jobs:
    """A module's early jobs, by starter name: the job and when it was started."""

    def __init__(self, module: str) -> None:
        self.module = module

    def __getitem__(self, name: str) -> Any:
        return self.get(name)[0]

    def started(self, name: str) -> float:
        return self.get(name)[1]

    def get(self, name: str) -> Tuple[Any, float]:
        key = (self.module, name)
        if key not in STARTED:
            raise KeyError(f"no early job {name!r} was started for {self.module} "
                           f"(registered: {sorted(n for m, n in STARTERS if m == self.module)})")
        job, at = STARTED[key]
        if isinstance(job, Exception):
            raise job
        return job, at
