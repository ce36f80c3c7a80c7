"""A task's start and end markers (``s<k>/tasks/t0003.start`` and ``.done``): what the login
side reads first to know what happened to it (``_status.py``, ``_classify.py``)."""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List

from .._store import layout as jd
from .rows import Context


def record_start(ctx: Context) -> int:
    """Add this start to the task's start marker (a requeued task has several); their number."""
    path = jd.task_marker(ctx.job_dir, ctx.sub, ctx.task, "start")
    starts: List[Dict[str, Any]] = []
    try:
        starts = jd.read_json(path)["starts"]
    except (FileNotFoundError, ValueError, KeyError):
        pass
    starts.append({
        "time": ctx.started,
        "node": ctx.node,
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
        "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
        "pid": os.getpid(),
    })
    jd.write_json(path, {"starts": starts})
    return len(starts)


def mark_idle(ctx: Context) -> None:
    """Out of rows, staying a while to take over a dead sibling's chunks: siblings need not
    watch this task, but it has not finished (its end marker comes when it goes)."""
    if not jd.job_replaced(ctx.job_dir, ctx.manifest.token):
        jd.write_json(jd.task_marker(ctx.job_dir, ctx.sub, ctx.task, "idle"), {"since": time.time()})


def unmark_idle(ctx: Context) -> None:
    """Working again (a takeover, or a requeued start)."""
    try:
        os.unlink(jd.task_marker(ctx.job_dir, ctx.sub, ctx.task, "idle"))
    except FileNotFoundError:
        pass


def unmark_done(ctx: Context) -> None:
    """Remove the end marker: a requeued task, or one working again, has not ended."""
    try:
        os.unlink(jd.task_marker(ctx.job_dir, ctx.sub, ctx.task, "done"))
    except FileNotFoundError:
        pass


def mark_done(ctx: Context, summary: Dict[str, Any]) -> bool:
    """Write the end marker, the task's last write: it has run out of rows and will take over
    nothing more. False if the directory now holds another job (nothing is written then)."""
    if jd.job_replaced(ctx.job_dir, ctx.manifest.token):
        print("slurm_apply: the job directory now holds another job; no end marker written",
              flush=True)
        return False
    ended = time.time()
    jd.write_json(jd.task_marker(ctx.job_dir, ctx.sub, ctx.task, "done"), {
        **summary, "node": ctx.node, "started": ctx.started, "payload_loaded": ctx.loaded,
        "ended": ended})
    extra = summary["failures"] + summary["deaths"]
    print(f"slurm_apply: task {ctx.task} finished {summary['rows']} row(s), {summary['errors']} "
          f"raised, in {ended - ctx.started:.2f} s" + ("; " + "; ".join(extra) if extra else ""),
          flush=True)
    return True
