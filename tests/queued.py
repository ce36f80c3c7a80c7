"""What a real scheduler still lists: for tests that check a job left nothing in the queue."""

from __future__ import annotations

import subprocess
from typing import List, Optional, Sequence


def queued(backend: str, job_ids: Sequence[Optional[str]]) -> List[str]:
    """Which of ``job_ids`` the scheduler (``slurm`` or ``sge``) still lists as queued or running."""
    ids = [j for j in job_ids if j]
    if not ids:
        return []
    if backend == "slurm":
        out = subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i"], capture_output=True,
                             text=True).stdout
        return [line.split("_")[0] for line in out.split() if line.split("_")[0] in ids]
    out = subprocess.run(["qstat", "-u", "*"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0] in ids]
