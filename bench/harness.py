"""One measurement of each contender: slurm_apply, rslurm, the Python peers (submitit and
dask-jobqueue, bench/peers.py), a bare array job, a process pool.

Each ``run_*`` function does one timed run from a table already in memory to the results in memory,
cleans up after itself, and returns a dict of figures (seconds unless the key says otherwise).
``bench/run.py`` repeats them, interleaved, and takes medians.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import peers
import probes

HERE = Path(__file__).resolve().parent
R_SCRIPT = HERE / "rslurm_bench.R"


class Context:
    """Where job directories go, and the cluster's log directory."""

    def __init__(self, jobs_root: Path, log_dir: Path) -> None:
        self.jobs_root = jobs_root
        self.log_dir = log_dir

    def scratch(self, tag: str) -> Path:
        """A fresh directory the cluster's daemons (root) can enter."""
        path = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=self.jobs_root))
        os.chmod(path, 0o755)
        return path


def _name(tag: str) -> str:
    return f"{tag}_{secrets.token_hex(3)}"


def _scheduler_figures(ctx: Context, array_id: str, *, acct: bool, rss_steps: bool) -> Dict[str, Any]:
    """Per-task launch/completion from the daemons' logs; granted CPUs and MaxRSS from sacct."""
    deadline = time.monotonic() + 5.0
    while True:  # the daemons may log a task's end a moment after squeue forgets it
        tl = probes.array_timeline(ctx.log_dir, array_id)
        tasks = tl["tasks"]
        if (tasks and all("launched" in t and "completed" in t for t in tasks.values())) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    out: Dict[str, Any] = {"timeline": tl}
    launched = [t["launched"] for t in tasks.values() if "launched" in t]
    completed = [t["completed"] for t in tasks.values() if "completed" in t]
    if launched and len(completed) == len(tasks):
        out["makespan_sched_s"] = max(completed) - min(launched)
    if tl["submitted"] and launched:
        # Slurm's own wait, sbatch to the first launch: 0 to 1 s by where the submission lands
        # in slurmctld's one-second scheduling cycle, so each contender's time beyond it is kept.
        out["queue_s"] = min(launched) - tl["submitted"]
    if acct or rss_steps:
        records = probes.sacct_tasks(array_id, want_steps=rss_steps)
        out["granted_cpus"] = sum(r["alloc_cpus"] for r in records.values())
        if rss_steps:
            out["sacct_max_rss_kb"] = {t: r.get("max_rss_kb") for t, r in sorted(records.items())}
    return out


def _rss_figures(monitor: probes.RssMonitor) -> Dict[str, Any]:
    per = monitor.per_task()
    if not per:
        return {}
    return {
        "rss_per_task": {t: v for t, v in sorted(per.items())},
        "peak_rss_mb": max(v["largest_process_kb"] for v in per.values()) / 1024,
        "peak_rss_sum_mb": max(v["sum_kb"] for v in per.values()) / 1024,
    }


# -- slurm_apply ---------------------------------------------------------------------------------

# The steps of one slurm_apply() call, as named in slurm_apply/_submit/api.py: (where the name is
# looked up, the name, the figure it adds to). Nested steps count in the outermost one.
CALL_STEPS = (
    ("api", "_checked", "call_validate_s"),
    ("jd", "create", "call_directory_s"),
    ("jd", "write_token", "call_directory_s"),
    ("api", "start_preflight", "call_preflight_start_s"),
    ("api", "write_payload", "call_payload_s"),
    ("api", "write_table", "call_table_s"),
    ("launch", "write_submission", "call_chunks_script_s"),
    ("jd", "create_manifest", "call_manifest_s"),
    ("jd", "update_manifest", "call_manifest_s"),
    ("api", "_submit_first", "call_sbatch_s"),
    ("api", "sync_buffers_later", "call_sync_later_s"),
)
CALL_FIGURES = (
    ("call_validate_s", "validation (arguments, pickling f, the scheduler's options)"),
    ("call_directory_s", "job directory created"),
    ("call_preflight_start_s", "pre-flight started (or the warm one reached)"),
    ("call_payload_s", "payload written"),
    ("call_table_s", "table written"),
    ("call_chunks_script_s", "chunks and job script written"),
    ("call_manifest_s", "manifest written"),
    ("call_preflight_wait_s", "waiting for the pre-flight's verdict (the payload loaded)"),
    ("call_sbatch_s", "sbatch (submission and its record)"),
    ("call_sync_later_s", "buffers' fsync handed to the background"),
    ("call_rest_s", "the rest (manifest object, versions, the handle)"),
)


class CallBreakdown:
    """Where one slurm_apply() call's time goes: the library's steps wrapped with timers while
    the call runs (the wrappers cost microseconds), the pre-flight's wait through its handle's
    result(). ``figures(total)`` gives seconds per step and the rest."""

    def __init__(self) -> None:
        self.times: Dict[str, float] = {}
        self._depth = 0
        self._undo: list = []

    def _timed(self, fn: Callable[..., Any], key: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return fn(*args, **kwargs)
            self._depth += 1
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.times[key] = self.times.get(key, 0.0) + time.perf_counter() - t
                self._depth -= 1
        return wrapper

    def __enter__(self) -> "CallBreakdown":
        from slurm_apply._launch import write as launch
        from slurm_apply._store import layout as jd
        from slurm_apply._submit import api

        where = {"api": api, "jd": jd, "launch": launch}
        for mod, name, key in CALL_STEPS:
            obj = where[mod]
            original = getattr(obj, name)
            if name == "start_preflight":
                original = self._with_timed_result(original)
            self._undo.append((obj, name, getattr(obj, name)))
            setattr(obj, name, self._timed(original, key))
        return self

    def _with_timed_result(self, start: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            check = start(*args, **kwargs)
            check.result = self._timed(check.result, "call_preflight_wait_s")
            return check
        return wrapped

    def __exit__(self, *exc: Any) -> None:
        for obj, name, original in reversed(self._undo):
            setattr(obj, name, original)

    def figures(self, total: float) -> Dict[str, float]:
        out = {key: self.times.get(key, 0.0) for key, _ in CALL_FIGURES if key != "call_rest_s"}
        out["call_rest_s"] = total - sum(out.values())
        return out



def run_slurm_apply(ctx: Context, tag: str, f: Callable[..., Any], df: Any, *, nodes: int,
                    cpus_per_node: int, errors: str = "raise", rss: bool = False,
                    acct: bool = False, check: Optional[Callable[[Any], Dict[str, Any]]] = None,
                    options: Optional[Dict[str, Any]] = None, breakdown: bool = False) -> Dict[str, Any]:
    """slurm_apply(...) -> wait() -> get_output(): submit, end-to-end and collect times; each
    task's own timings from its done marker and its launch from slurmd's log; memory if ``rss``;
    the call's own steps if ``breakdown`` (CallBreakdown).
    ``options`` are more keyword arguments of slurm_apply (e.g. ``seed=False``)."""
    from slurm_apply import slurm_apply

    parent = ctx.scratch(tag)
    jobname = _name(tag)
    try:
        with contextlib.ExitStack() as stack:
            monitor = stack.enter_context(probes.RssMonitor(jobname)) if rss else None
            cmds = stack.enter_context(probes.SlurmCommandLog())
            steps = CallBreakdown() if breakdown else None
            w0 = time.time()
            t0 = time.perf_counter()
            with steps or contextlib.nullcontext():
                job = slurm_apply(f, df, nodes=nodes, cpus_per_node=cpus_per_node, job_dir=parent,
                                  jobname=jobname, **(options or {}))
            t1 = time.perf_counter()
            job.wait(progress=False)
            t2 = time.perf_counter()
            out = job.get_output(errors=errors)
            t3 = time.perf_counter()
        sub = job.manifest.submissions[0]
        res: Dict[str, Any] = {
            "submit_s": t1 - t0, "wait_s": t2 - t1, "collect_s": t3 - t2, "end_to_end_s": t3 - t0,
            "scheduler_queries": job.scheduler_queries,
            "slurm_commands": [name for _, name in cmds.calls],
            "job_id": job.job_ids[0], "n_tasks": sub.n_tasks, "n_chunks": sub.n_chunks,
            "rows_out": len(out),
            **(steps.figures(t1 - t0) if steps is not None else {}),
        }
        if check is not None:
            res.update(check(out))
        del out
        if monitor is not None:
            res.update(_rss_figures(monitor))
        markers = probes.task_markers(job.job_dir)
        probes.wait_idle()
        res.update(_scheduler_figures(ctx, res["job_id"], acct=acct, rss_steps=rss))
        tasks: Dict[int, Dict[str, Any]] = {}
        for t, m in sorted(markers.items()):
            launched = res["timeline"]["tasks"].get(t, {}).get("launched")
            tasks[t] = {
                "rows": m["rows"], "loop_s": m["loop_s"],
                "loop_us_per_row": 1e6 * m["loop_s"] / m["rows"] if m["rows"] else None,
                "launch_to_started_s": (m["started"] - launched) if launched else None,
                "started_to_first_row_s": (m["first_row_at"] - m["started"]) if m.get("first_row_at") else None,
                "payload_load_s": m["payload_loaded"] - m["started"],
                # Everything after the first row (claims, decoding, writes and fsyncs included),
                # which loop_s leaves out.
                "after_first_row_us_per_row": (1e6 * (m["ended"] - m["first_row_at"]) / m["rows"]
                                               if m.get("first_row_at") and m["rows"] else None),
                "started_to_ended_s": m["ended"] - m["started"],
                "processes": len(m.get("procs", [])),
            }
        res["tasks"] = tasks
        if markers:
            first_start = min(m["started"] for m in markers.values())
            last_end = max(m["ended"] for m in markers.values())
            res["makespan_markers_s"] = last_end - first_start
            # From the last done marker to wait() returning: how late the handle noticed.
            res["detect_s"] = (w0 + (t2 - t0)) - last_end
            # Where the time went, as moments after the call (medians over runs in the summary).
            launches = [t["launched"] for t in res["timeline"]["tasks"].values() if "launched" in t]
            firsts = [m["first_row_at"] for m in markers.values() if m.get("first_row_at")]
            res.update({
                "at_submitted_s": t1 - t0,
                "at_first_launch_s": (min(launches) - w0) if launches else None,
                "at_first_started_s": first_start - w0,
                "at_first_row_s": (min(firsts) - w0) if firsts else None,
                "at_last_ended_s": last_end - w0,
                "at_wait_returned_s": t2 - t0,
                "at_table_s": t3 - t0,
            })
        return res
    finally:
        shutil.rmtree(parent, ignore_errors=True)


# -- rslurm --------------------------------------------------------------------------------------


def run_rslurm(ctx: Context, tag: str, workload: str, n_rows: int, *, nodes: int, cpus_per_node: int,
               mode: str, rss: bool = False, acct: bool = False) -> Dict[str, Any]:
    """rslurm's slurm_apply + get_slurm_out(outtype="table") in one Rscript (bench/rslurm_bench.R).

    ``mode`` "user": get_slurm_out(wait=TRUE), which blocks on a dummy job submitted with
    ``--dependency=singleton --wait``, as an rslurm user waits. "poll": the same script polls for
    the results files every 50 ms instead: rslurm without its waiting scheme.
    """
    parent = ctx.scratch(tag)
    jobname = _name(tag)
    try:
        with contextlib.ExitStack() as stack:
            monitor = stack.enter_context(probes.RssMonitor(jobname)) if rss else None
            t0 = time.perf_counter()
            proc = subprocess.run(
                ["Rscript", "--vanilla", str(R_SCRIPT), workload, str(n_rows), str(nodes),
                 str(cpus_per_node), jobname, mode],
                cwd=parent, capture_output=True, text=True, timeout=900)
            wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"rslurm run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        res: Dict[str, Any] = {"rscript_wall_s": wall}
        for line in proc.stdout.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                res[key.strip()] = _number(value.strip())
        res["job_id"] = str(res["job_id"])
        if monitor is not None:
            res.update(_rss_figures(monitor))
        probes.wait_idle()
        res.update(_scheduler_figures(ctx, res["job_id"], acct=acct, rss_steps=rss))
        return res
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def _number(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"TRUE": True, "FALSE": False}.get(text, text)


# -- the Python peers ----------------------------------------------------------------------------


def run_peer(ctx: Context, tag: str, peer: str, workload: str, n_rows: int, *, nodes: int, cpus_per_node: int,
             rss: bool = False, acct: bool = False) -> Dict[str, Any]:
    """One measurement of a Python peer (bench/peers.py) in the peers' own venv, with the
    cluster's environment (SLURM_CONF, PATH), as sbatch gets it. A submitit run is one array job:
    its launches, Slurm's queue wait and (``acct``) granted CPUs come from the daemons' logs as for
    the others; dask's workers are separate jobs that outlive the rows, so it has none of those."""
    parent = ctx.scratch(tag)
    jobname = _name(tag)
    env = {**os.environ, "PYTHONPATH": str(HERE)}  # `workloads` for the peers and their tasks
    try:
        with contextlib.ExitStack() as stack:
            monitor = stack.enter_context(probes.RssMonitor(jobname)) if rss else None
            t0 = time.perf_counter()
            proc = subprocess.run(
                [str(peers.venv_python()), str(HERE / "peers.py"), peer, workload, str(n_rows), str(nodes),
                 str(cpus_per_node), jobname, str(parent / "peer")],
                cwd=parent, env=env, capture_output=True, text=True, timeout=300)
            wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{peer} run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        res: Dict[str, Any] = {"process_wall_s": wall, **json.loads(proc.stdout.strip().splitlines()[-1])}
        if monitor is not None:
            res.update(_rss_figures(monitor))
        probes.wait_idle()
        if "job_id" in res:
            res.update(_scheduler_figures(ctx, res["job_id"], acct=acct, rss_steps=rss))
        return res
    finally:
        subprocess.run(["scancel", f"--name={jobname}"], capture_output=True)
        shutil.rmtree(parent, ignore_errors=True)


# -- floors --------------------------------------------------------------------------------------


def run_bare_array(ctx: Context, tag: str, n_tasks: int, cpus_per_task: int) -> Dict[str, Any]:
    """The scheduler floor: ``sbatch --array=0-(T-1)`` whose tasks only touch a file, timed from
    the sbatch call until every file exists, polled every 50 ms (slurm_apply is likewise done when
    its tasks' done files exist)."""
    parent = ctx.scratch(tag)
    try:
        t0 = time.perf_counter()
        proc = subprocess.run(
            ["sbatch", "--parsable", f"--array=0-{n_tasks - 1}", f"--cpus-per-task={cpus_per_task}",
             f"--job-name={_name(tag)}", "--output=/dev/null",
             "--wrap", f"touch {parent}/t$SLURM_ARRAY_TASK_ID"],
            capture_output=True, text=True, check=True)
        t1 = time.perf_counter()
        files = [parent / f"t{i}" for i in range(n_tasks)]
        while not all(p.exists() for p in files):
            time.sleep(0.05)
            if time.perf_counter() - t0 > 300:
                raise RuntimeError("the bare array job did not finish within 300 s")
        t2 = time.perf_counter()
        job_id = proc.stdout.strip().split(";")[0]
        probes.wait_idle()
        res = {"submit_s": t1 - t0, "end_to_end_s": t2 - t0, "job_id": job_id}
        res.update(_scheduler_figures(ctx, job_id, acct=False, rss_steps=False))
        return res
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def run_pool(f: Callable[..., Any], df: Any, processes: int, chunksize: Optional[int] = None) -> Dict[str, Any]:
    """The compute floor: multiprocessing.Pool.starmap over the same rows on this machine, from
    the table to the table with a result column."""
    t0 = time.perf_counter()
    rows = list(df.itertuples(index=False, name=None))
    # The workers must die on the pool's SIGTERM whatever they are blocked in: default action,
    # not the benchmark's own handler (inherited through fork).
    with multiprocessing.get_context("fork").Pool(processes, initializer=_default_sigterm) as pool:
        values = pool.starmap(f, rows, chunksize)
    out = df.assign(result=values)
    t1 = time.perf_counter()
    return {"end_to_end_s": t1 - t0, "rows_out": len(out)}


def _default_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_pool_makespan(f: Callable[..., Any], df: Any, processes: int) -> Dict[str, Any]:
    """Pool over uneven rows, one row per hand-out (the best chunksize for them)."""
    res = run_pool(f, df, processes, chunksize=1)
    res["makespan_s"] = res["end_to_end_s"]
    return res
