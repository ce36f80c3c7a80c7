"""The gate of a chained job (``slurm_apply(g, df, after=job)``):
``python -m slurm_apply._job.gate JOB_DIR SUB TOKEN``.

Why a gate, rather than a dependency on the upstream's array alone: the upstream's rows are
done only once its automatic retries are, and those are submitted later, by its follow-up, as
jobs nobody could name when the dependent job was queued. So the dependent's array waits for
one small job of its own, the gate (on Slurm ``afterok``: only its exit 0 lets the array start),
and the gate is queued after every upstream job known then (arrays, follow-ups, their gates:
``afterany``, Grid Engine's ``-hold_jid``). When it starts, the upstream follow-ups have
decided; if one launched a retry, the gate waits for it with the one wait loop
(``wait.statuses``, at the scheduler's pace), so it may hold one CPU while a retry runs: the
price of a dependency on jobs that do not exist yet. (A gate that queued another gate would need
the array's dependency changed while it waits, which not every scheduler allows.)

Then it decides, from each upstream job's status (the one status model): every row done, so it
records an open verdict (``_store/chain.py``) and exits 0; else it records why (the upstream job,
and its rows failed or missing) and has the backend make sure the array leaves nothing in the
queue (``Backend.gate_closed``), and exits 1. The local backend's supervisor runs the same gate
before any task, and runs none unless it exits 0.
"""

from __future__ import annotations

import collections
import sys
import time
import traceback
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .. import _backends as backends
from .._store import chain
from .._store import layout as jd
from .._timing import WAIT_MAX_SCHEDULER_S, WAIT_SCHEDULER_S
from .stopping import stop_retries
from .upstreams import ended_badly
from .wait import Pace, statuses

CLOSED = 1  # the gate's exit status when the dependent never runs


def main(argv: Sequence[str]) -> int:
    job_dir, k, token = Path(argv[0]).absolute(), int(argv[1]), argv[2]
    if jd.job_replaced(job_dir, token):
        print(f"slurm_apply: {job_dir} now holds another job; the gate lets nothing run", flush=True)
        return CLOSED
    try:
        why = upstream_problem(jd.load_manifest(job_dir).after)
    except Exception as exc:  # say it in the verdict, not only in a log nobody reads
        traceback.print_exc()
        why = f"the gate could not read the jobs it waits for: {type(exc).__name__}: {exc}"
    verdict = chain.Verdict(why is None, why or "every row of the jobs it runs after is done", time.time())
    chain.write_verdict(job_dir, verdict)
    print(f"slurm_apply: gate of {job_dir}: {'open' if verdict.open else 'closed'}: {verdict.why}", flush=True)
    if verdict.open:
        return 0
    # Its follow-up (it starts once the array has ended) has nothing to retry: say why.
    stop_retries(job_dir, "its gate (the jobs it runs after did not all end well)")
    # Under the lock: the launch that queued this gate records the array's id under it.
    with jd.manifest_lock(job_dir):
        sub = jd.load_manifest(job_dir).submissions[k]
    try:
        backends.get(sub.backend).gate_closed(job_dir, sub)
    except Exception:
        traceback.print_exc()  # the verdict is written; a dependency never met still holds it
    return CLOSED


def upstream_problem(after: List[Dict[str, str]], poll_s: float = 1.0) -> Optional[str]:
    """Wait for every upstream job to end (its automatic retries included); None when every row
    of every one is done, else why the dependent job must never run."""
    from .handle import SlurmJob

    for up in after:
        path = Path(up["job_dir"])
        if not path.exists():
            return (f"job {up.get('jobname', '?')} ({path}), which it runs after, was deleted "
                    "(cleanup_files) before this job's gate could read it")
        if jd.job_replaced(path, up.get("token", "")):
            return (f"job {up.get('jobname', '?')} ({path}), which it runs after, was replaced by "
                    "another job in its directory")
        job = SlurmJob(path)
        pace = Pace(poll_s, 30.0, WAIT_SCHEDULER_S, WAIT_MAX_SCHEDULER_S)
        status = collections.deque(statuses(job, pace), maxlen=1)[0]  # the last: the job's end
        if status.rows_done < status.rows_total:
            return ended_badly(status, path)
    return None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
