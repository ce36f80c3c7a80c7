"""Chains of jobs (``slurm_apply(after=...)``): the records a dependent job and its upstream
jobs keep of each other.

* in the dependent job's directory, ``gate.json``: what its gate decided, written by the gate
  (``_job/gate.py``); a resubmission clears it for its new gate, or records it open when the
  upstream jobs were all done then (``_job/resubmit.py``)::

    {"open": false, "at": 1700000000.0,
     "why": "job a (/x/_rslurm_a) ended INCOMPLETE: rows 3, 7 failed"}

* in each upstream job's directory, ``dependents/<token>.json``, one file per job that waits
  for it (written when that job is submitted; nothing else writes there, so no lock)::

    {"job_dir": "/x/_rslurm_b", "jobname": "b", "token": "..."}

The upstream jobs themselves are in the dependent's manifest (``Manifest.after``); a gated
submission names its gate's script (``Submission.gate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from . import layout as jd

GATE_SCRIPT = "gate.sh"
DEPENDENTS = "dependents"


@dataclass(frozen=True)
class Verdict:
    """What a gate decided: ``open`` (the dependent runs) or not, and why."""

    open: bool
    why: str
    at: float


def gate_log_path(job_dir: Path) -> Path:
    return Path(job_dir) / jd.LOGS / "gate.out"


def verdict_path(job_dir: Path) -> Path:
    return Path(job_dir) / "gate.json"


def write_verdict(job_dir: Path, verdict: Verdict) -> None:
    jd.write_json(verdict_path(job_dir), {"open": verdict.open, "why": verdict.why, "at": verdict.at})


def clear_verdict(job_dir: Path) -> None:
    """Forget what a gate decided: a resubmission behind a new gate is decided anew."""
    verdict_path(job_dir).unlink(missing_ok=True)


def read_verdict(job_dir: Path) -> Optional[Verdict]:
    """The gate's verdict; None while it has not decided (or the file cannot be read)."""
    try:
        data = jd.read_json(verdict_path(job_dir))
        return Verdict(bool(data["open"]), str(data.get("why", "")), float(data.get("at", 0.0)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def add_dependent(upstream_dir: Path, dependent: Dict[str, str]) -> None:
    """Record in ``upstream_dir`` that the job ``dependent`` (job_dir, jobname, token) waits for it."""
    folder = Path(upstream_dir) / DEPENDENTS
    folder.mkdir(mode=0o700, exist_ok=True)
    jd.write_json(folder / f"{dependent['token']}.json", dependent)


def dependents(job_dir: Path) -> List[Dict[str, str]]:
    """The jobs recorded as waiting for this one (those that can be read), oldest first."""
    folder = Path(job_dir) / DEPENDENTS
    out = []
    try:
        files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime)
    except OSError:
        return []
    for path in files:
        try:
            data = jd.read_json(path)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("job_dir"):
            out.append({str(k): str(v) for k, v in data.items()})
    return out
