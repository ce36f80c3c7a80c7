"""slurm_apply's benchmark suite, side by side with rslurm, submitit and dask-jobqueue, on a
private Slurm cluster.

    python bench/run.py                 # everything, 3-5 repetitions (about 35 minutes)
    python bench/run.py --quick         # 1 repetition, fewer sizes (about 4 minutes)
    python bench/run.py --only W1,W3    # some workloads (W1 W2 W3 W4 WAIT DIAG)
    python bench/run.py --no-rslurm     # without the R side
    python bench/run.py --no-python-peers   # without submitit and dask-jobqueue
    python bench/run.py --scheduler sge --quick   # W1 and W2 on a private Grid Engine cell (bench/sge.py)

It sets itself up: as root it installs Debian's Slurm packages (through tests/testbed.py) and R with
rslurm (``apt-get install r-base-core r-cran-rslurm``) when missing, pip-installs the Python peers
at the versions pinned in bench/peers.py into a venv of their own (.venvs/bench in the checkout;
never into the interpreter that runs this), starts a private 3-node
cluster with accounting (tests/testbed.py), runs every workload, stops the cluster, prints the
tables and the targets with PASS/FAIL, and writes bench/results/latest.json (every run's raw
figures, the methods, the diagnostics) and bench/results/latest.md (the tables).

Workloads (each timed from the call, with the table already in memory, to the result table in
memory; the median of the repetitions, contenders interleaved within each repetition). The
Python peers (W1, W2, W3) get the same rows chunked by hand into nodes x cpus_per_node contiguous
chunks, one 1-CPU array task (submitit) or worker (dask-jobqueue) per chunk; see bench/peers.py.
  W1  f(a, b) = a + b over 1e3..1e6 rows, nodes=2, cpus_per_node=1
  W2  64 rows, rows 0-3 sleep 3 s, the rest 0.05 s, nodes=2, cpus_per_node=2
  W3  1,000,000 rows x 10 numeric columns, nodes=4, cpus_per_node=1
  W4  100 rows, row 37 raises; get_output(errors="keep")
  WAIT  a job of about 75 s (20 s with --quick): Slurm queries while waiting and after completion
  DIAG  profiles: the node's row loop, one whole task, a task's start-up, slurm_apply()'s submit
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# bench/ is sys.path[0] already (this script's directory), so the nodes import `workloads` too.
# slurm_apply itself is imported from a copy taken at start (see use_library_snapshot).
sys.path.insert(1, str(REPO / "tests"))

import harness  # noqa: E402
import peers  # noqa: E402
import probes  # noqa: E402
import testbed  # noqa: E402
import workloads  # noqa: E402

ALL = ("W1", "W2", "W3", "W4", "WAIT", "DIAG")
R_PACKAGES = ("r-base-core", "r-cran-rslurm")
SA, SA0, RP, RU, BARE, POOL = ("slurm_apply", "slurm_apply_unseeded", "rslurm_poll", "rslurm_user",
                                "bare_array", "pool")
SUB, SUBP, DASK = "submitit", "submitit_poll", "dask"
COLUMNS = {
    SA: "slurm_apply",
    SA0: "slurm_apply, rows not seeded",
    RP: "rslurm (polls its files)",
    RU: "rslurm (get_slurm_out wait=TRUE)",
    SUB: "submitit chunked by hand (job.result())",
    SUBP: "submitit chunked by hand (polls done())",
    DASK: "dask-jobqueue batched",
    BARE: "bare array (floor)",
    POOL: "Pool (floor)",
}
PEER_KEYS = (RP, RU, SUB, SUBP, DASK)  # what slurm_apply is compared with (the floors are not peers)


MAIN_PID = os.getpid()
PHASE_RNG = random.Random(6)


def _on_sigterm(signum: int, frame: Any) -> None:
    if os.getpid() != MAIN_PID:  # a forked Pool worker being shut down: just go
        os._exit(128 + signum)
    raise KeyboardInterrupt


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- set-up --------------------------------------------------------------------------------------


def ensure_slurm() -> None:
    missing = testbed.slurm_packages_missing(accounting=True)
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"bench: Slurm is missing ({', '.join(missing)}) and this is not root; as root run "
                 "`apt-get install -y --no-install-recommends " + " ".join(testbed.DEBIAN_PACKAGES) + "`")
    log(f"installing Debian's Slurm packages ({', '.join(missing)} missing)")
    testbed.install_slurm_packages()


def rslurm_available() -> Optional[str]:
    """rslurm's version, or None."""
    if not shutil.which("Rscript"):
        return None
    proc = subprocess.run(["Rscript", "-e", "cat(as.character(packageVersion('rslurm')))"],
                          capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def ensure_rslurm() -> Dict[str, Any]:
    version = rslurm_available()
    if version:
        return {"available": True, "version": version}
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return {"available": False, "why": "R or rslurm is missing and this is not root with apt-get; "
                "install them with `apt-get install -y --no-install-recommends r-base-core r-cran-rslurm`"}
    log("installing R and rslurm from Debian's packages (r-base-core r-cran-rslurm)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["update", "-qq"], ["install", "-y", "-qq", "--no-install-recommends", *R_PACKAGES]):
        proc = subprocess.run(["apt-get", *args], env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            return {"available": False, "why": f"apt-get {' '.join(args)} failed: {proc.stderr[-500:]}"}
    version = rslurm_available()
    return {"available": bool(version), "version": version,
            **({} if version else {"why": "installed, but library(rslurm) does not load"})}


def _r_version() -> str:
    proc = subprocess.run(["Rscript", "-e", "cat(R.version.string)"], capture_output=True, text=True)
    return proc.stdout.strip()


def _other_slurmctlds(ours: Path) -> int:
    """slurmctld processes on this machine that are not this run's cluster (noise)."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and os.path.basename(cmd[0]) == b"slurmctld" and str(ours).encode() not in b" ".join(cmd):
            count += 1
    return count


def use_library_snapshot(into: Path) -> Dict[str, str]:
    """Copy this checkout's slurm_apply into ``into`` and import it from there, here and on the
    nodes (PYTHONPATH, which sbatch passes on). Others may edit the library while a run goes on:
    the whole run then measures the version it started with."""
    shutil.copytree(REPO / "slurm_apply", into / "slurm_apply", ignore=shutil.ignore_patterns("__pycache__"))
    # Byte-compiled, as pip installs a package (and the peers' venv): without it, where
    # PYTHONDONTWRITEBYTECODE is set (this machine sets it), every task and pre-flight compiled
    # the package from source again (~45 ms of CPU each), which no user's installation does.
    import compileall

    if not compileall.compile_dir(str(into / "slurm_apply"), quiet=1):
        raise RuntimeError(f"could not byte-compile the snapshot in {into}")
    sys.path.insert(1, str(into))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(into), os.environ.get("PYTHONPATH")]))
    import slurm_apply

    # A task starts as `cd <this directory>; python -m slurm_apply._node` with this environment.
    task_sees = subprocess.run([sys.executable, "-c", "import slurm_apply; print(slurm_apply.__file__)"],
                               capture_output=True, text=True).stdout.strip()
    for where in (slurm_apply.__file__, task_sees):
        if Path(where).parent != into / "slurm_apply":
            raise RuntimeError(f"slurm_apply is imported from {where}, not from the snapshot in {into}")
    return {"commit": _git_commit(), "files": _library_digest(into / "slurm_apply"),
            "version": getattr(slurm_apply, "__version__", "?")}


def _git_commit() -> str:
    proc = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "slurm_apply"],
                           capture_output=True, text=True).stdout.strip()
    return proc.stdout.strip() + ("+uncommitted changes" if dirty else "")


def _library_digest(package: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(package.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


# -- statistics ----------------------------------------------------------------------------------


def median(values: List[Any]) -> Optional[float]:
    vals = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return statistics.median(vals) if vals else None


def summarize(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The median of every number the runs share; booleans must hold in every run."""
    out: Dict[str, Any] = {"n_runs": len(runs)}
    keys = {k for r in runs for k, v in r.items() if isinstance(v, (int, float))}
    for k in sorted(keys):
        vals = [r.get(k) for r in runs]
        if all(isinstance(v, bool) for v in vals if v is not None):
            out[k] = all(v for v in vals if v is not None)
        else:
            m = median(vals)
            if m is not None:
                out[k] = m
    tasks = [t for r in runs for t in r.get("tasks", {}).values()]
    for k in ("loop_us_per_row", "after_first_row_us_per_row", "launch_to_started_s",
              "started_to_first_row_s", "payload_load_s"):
        vals = [t.get(k) for t in tasks if t.get(k) is not None]
        if vals:
            out[f"task_{k}_median"] = statistics.median(vals)
            out[f"task_{k}_max"] = max(vals)
    return out


class Workload:
    """Repetitions of one workload's contenders, interleaved, with their summaries."""

    def __init__(self, name: str, params: Dict[str, Any]) -> None:
        self.name = name
        self.params = params
        self.runs: Dict[str, List[Dict[str, Any]]] = {}

    def run(self, reps: int, contenders: Dict[str, Callable[[], Dict[str, Any]]]) -> None:
        for rep in range(reps):
            for key, fn in contenders.items():
                if key != POOL:
                    # slurmctld allocates on a one-second cycle, so a job waits 0-1 s depending on
                    # when in that cycle it is submitted. A random pause first makes that phase
                    # random for every contender alike, rather than tied to the previous run.
                    time.sleep(PHASE_RNG.uniform(0.0, 1.0))
                t = time.perf_counter()
                try:
                    res = fn()
                except Exception as exc:  # one contender's fault must not lose the others' figures
                    self.runs.setdefault(key, []).append({"error": f"{type(exc).__name__}: {exc}"[-3000:]})
                    log(f"{self.name} rep {rep + 1}/{reps} {key} FAILED: {str(exc)[-1500:]}")
                    probes.wait_idle()
                    continue
                if "end_to_end_s" in res and "queue_s" in res:
                    res["beyond_queue_s"] = res["end_to_end_s"] - res["queue_s"]
                self.runs.setdefault(key, []).append(res)
                log(f"{self.name} rep {rep + 1}/{reps} {key}: end-to-end "
                    f"{res.get('end_to_end_s', float('nan')):.3f} s (measured in {time.perf_counter() - t:.1f} s)")

    def summary(self) -> Dict[str, Dict[str, Any]]:
        return {k: summarize(v) for k, v in self.runs.items()}

    def to_json(self) -> Dict[str, Any]:
        return {"params": self.params, "summary": self.summary(), "runs": self.runs}


# -- the workloads -------------------------------------------------------------------------------


def python_peers(ctx: harness.Context, tag: str, workload: str, n: int, nodes: int, cpus: int,
                 **kw: Any) -> Dict[str, Callable[[], Dict[str, Any]]]:
    """submitit (both ways of waiting) and dask-jobqueue over the same rows, chunked by hand."""
    suffix = {SUB: "i", SUBP: "p", DASK: "d"}
    return {key: (lambda key=key: harness.run_peer(ctx, tag + suffix[key], key, workload, n, nodes=nodes,
                                                   cpus_per_node=cpus, **kw))
            for key in suffix}


def w1(ctx: harness.Context, sizes: List[int], reps: int, rslurm: bool,
       unseeded: Optional[Dict[str, Any]], quick: bool, py_peers: bool = False) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for n in sizes:
        # Small tables are quick and their figures are dominated by scheduler jitter: more runs.
        n_reps = reps if quick or n > 100_000 else max(reps, 5)
        df = workloads.tiny_table(n)

        def check(table: Any) -> Dict[str, Any]:
            return {"correct": bool((table["result"].to_numpy() == 2 * table["a"].to_numpy()).all())}

        wl = Workload(f"W1 n={n:g}", {"rows": n, "nodes": 2, "cpus_per_node": 1})
        contenders: Dict[str, Callable[[], Dict[str, Any]]] = {
            SA: lambda: harness.run_slurm_apply(ctx, "w1", workloads.add, df, nodes=2, cpus_per_node=1, check=check,
                                                breakdown=True)}
        if unseeded is not None:
            contenders[SA0] = lambda: harness.run_slurm_apply(ctx, "w1s", workloads.add, df, nodes=2, cpus_per_node=1,
                                                              check=check, options=unseeded, breakdown=True)
        if rslurm:
            contenders[RP] = lambda: harness.run_rslurm(ctx, "w1r", "tiny", n, nodes=2, cpus_per_node=1, mode="poll")
            if not (quick and n >= 1_000_000):  # 45 s of rslurm's waiting: not in a quick run
                contenders[RU] = lambda: harness.run_rslurm(ctx, "w1u", "tiny", n, nodes=2, cpus_per_node=1,
                                                            mode="user")
        if py_peers:
            contenders.update(python_peers(ctx, "w1", "tiny", n, 2, 1))
        contenders[BARE] = lambda: harness.run_bare_array(ctx, "w1b", 2, 1)
        contenders[POOL] = lambda: harness.run_pool(workloads.add, df, 2)
        wl.run(n_reps, contenders)
        out[str(n)] = wl.to_json()
    return out


def w2(ctx: harness.Context, reps: int, rslurm: bool, py_peers: bool = False) -> Dict[str, Any]:
    df = workloads.skewed_table()
    work = workloads.skew_work_s()
    longest = workloads.SKEW_LONG_S
    wl = Workload("W2", {"rows": len(df), "nodes": 2, "cpus_per_node": 2, "total_work_s": work,
                         "longest_row_s": longest})

    def with_ideal(res: Dict[str, Any], makespan_key: str) -> Dict[str, Any]:
        cpus = res.get("granted_cpus") or 0
        if cpus and makespan_key in res:
            res["ideal_s"] = max(longest, work / cpus)
            res["makespan_s"] = res[makespan_key]
            res["makespan_over_ideal"] = res[makespan_key] / res["ideal_s"]
            if "makespan_sched_s" in res:
                res["makespan_sched_over_ideal"] = res["makespan_sched_s"] / res["ideal_s"]
        return res

    contenders: Dict[str, Callable[[], Dict[str, Any]]] = {
        SA: lambda: with_ideal(harness.run_slurm_apply(ctx, "w2", workloads.skewed, df, nodes=2,
                                                       cpus_per_node=2, acct=True), "makespan_markers_s")}
    if rslurm:
        # rslurm leaves no per-task markers: its makespan is the tasks' launch-to-completion in
        # the daemons' logs (the same figure is kept for slurm_apply as makespan_sched_s).
        contenders[RP] = lambda: with_ideal(harness.run_rslurm(ctx, "w2r", "skewed", len(df), nodes=2,
                                                               cpus_per_node=2, mode="poll", acct=True),
                                            "makespan_sched_s")
        contenders[RU] = lambda: with_ideal(harness.run_rslurm(ctx, "w2u", "skewed", len(df), nodes=2,
                                                               cpus_per_node=2, mode="user", acct=True),
                                            "makespan_sched_s")
    if py_peers:
        # Contiguous chunks, as a user chunks by hand: the four long rows land in one chunk.
        for key, run in python_peers(ctx, "w2", "skewed", len(df), 2, 2, acct=True).items():
            contenders[key] = (lambda run=run: with_ideal(run(), "makespan_sched_s")) if key != DASK else run
    contenders[BARE] = lambda: harness.run_bare_array(ctx, "w2b", 2, 2)
    contenders[POOL] = lambda: harness.run_pool_makespan(workloads.skewed, df, 4)
    wl.run(reps, contenders)
    return wl.to_json()


def w3(ctx: harness.Context, n: int, reps: int, rslurm: bool,
       unseeded: Optional[Dict[str, Any]], quick: bool, py_peers: bool = False) -> Dict[str, Any]:
    df = workloads.wide_table(n)

    def check(table: Any) -> Dict[str, Any]:
        import numpy as np

        return {"correct": bool(np.allclose(table["result"].to_numpy(),
                                            table["c0"].to_numpy() + table["c9"].to_numpy()))}

    wl = Workload("W3", {"rows": n, "columns": workloads.WIDE_COLUMNS, "nodes": 4, "cpus_per_node": 1})
    contenders: Dict[str, Callable[[], Dict[str, Any]]] = {
        SA: lambda: harness.run_slurm_apply(ctx, "w3", workloads.wide, df, nodes=4, cpus_per_node=1,
                                            rss=True, check=check)}
    if unseeded is not None:
        contenders[SA0] = lambda: harness.run_slurm_apply(ctx, "w3s", workloads.wide, df, nodes=4, cpus_per_node=1,
                                                          rss=True, check=check, options=unseeded)
    if rslurm:
        contenders[RP] = lambda: harness.run_rslurm(ctx, "w3r", "wide", n, nodes=4, cpus_per_node=1,
                                                    mode="poll", rss=True)
        if not quick:  # about 55 s, most of it rslurm's waiting
            contenders[RU] = lambda: harness.run_rslurm(ctx, "w3u", "wide", n, nodes=4, cpus_per_node=1,
                                                        mode="user", rss=True)
    if py_peers:
        contenders.update(python_peers(ctx, "w3", "wide", n, 4, 1, rss=True))
    contenders[BARE] = lambda: harness.run_bare_array(ctx, "w3b", 4, 1)
    contenders[POOL] = lambda: harness.run_pool(workloads.wide, df, 4)
    wl.run(reps, contenders)
    return wl.to_json()


def w4(ctx: harness.Context, reps: int, rslurm: bool) -> Dict[str, Any]:
    df = workloads.failing_table()

    def check(table: Any) -> Dict[str, Any]:
        good = table["error"].isna()
        return {
            "good_rows": int(good.sum()),
            "good_rows_correct": bool((table.loc[good, "result"] == table.loc[good, "i"]).all()),
            "failed_rows": [int(r) for r in table.index[~good]],
        }

    wl = Workload("W4", {"rows": len(df), "failing_row": workloads.FAIL_ROW, "nodes": 2, "cpus_per_node": 2})
    contenders: Dict[str, Callable[[], Dict[str, Any]]] = {
        SA: lambda: harness.run_slurm_apply(ctx, "w4", workloads.failing, df, nodes=2, cpus_per_node=2,
                                            errors="keep", check=check)}
    if rslurm:
        contenders[RP] = lambda: harness.run_rslurm(ctx, "w4r", "failure", len(df), nodes=2,
                                                    cpus_per_node=2, mode="poll")
    wl.run(reps, contenders)
    return wl.to_json()


def waiting(ctx: harness.Context, n_rows: int, sleep_s: float) -> Dict[str, Any]:
    """A job of n_rows x sleep_s over 4 processes: the Slurm commands run while waiting, after the
    last task finished, and by a user's calls once it has."""
    import pandas as pd

    from slurm_apply import slurm_apply

    parent = ctx.scratch("wait")
    df = pd.DataFrame({"i": range(n_rows), "sleep_s": [sleep_s] * n_rows})
    try:
        with probes.SlurmCommandLog() as cmds:
            job = slurm_apply(workloads.sleeper, df, nodes=2, cpus_per_node=2, job_dir=parent,
                              jobname=f"wait_{os.getpid()}")
            w_wait = time.time()
            job.wait(progress=False)
            w_done = time.time()
            q_wait = job.scheduler_queries
            # What a user does next; none of it should need the scheduler.
            job.get_job_status()
            job.wait(progress=False)
            job.get_output()
            q_after_calls = job.scheduler_queries - q_wait
        markers = probes.task_markers(job.job_dir)
        last_end = max(m["ended"] for m in markers.values())
        queries = [(t - w_wait, n) for t, n in cmds.since(w_wait) if n in ("sacct", "squeue", "scontrol") and t < w_done]
        # A check is one sacct, and an squeue when sacct lacks a task: group commands < 1 s apart.
        checks: List[float] = []
        for t, _ in queries:
            if not checks or t - checks[-1] > 1.0:
                checks.append(t)
        gaps = [b - a for a, b in zip([0.0] + checks, checks)]
        duration = w_done - w_wait
        per_check = len(queries) / len(checks) if checks else 0.0
        horizon = 600.0
        last_gap = gaps[-1] if gaps else None
        # Two extrapolations to a 10-minute job. Conservative: every later check comes after the
        # last observed gap (the back-off only lengthens it). Schedule: the gaps keep growing by
        # the observed factor up to wait()'s max_scheduler_every_s.
        conservative = len(queries) + (per_check * (horizon - duration) / last_gap if last_gap else 0.0)
        growth = gaps[-1] / gaps[-2] if len(gaps) >= 2 and gaps[-2] > 0 else 1.0
        cap = _wait_default("max_scheduler_every_s") or last_gap
        t, gap, n_checks = (checks[-1], last_gap, len(checks)) if checks else (0.0, None, 0)
        while gap and t < horizon:
            gap = min(gap * growth, cap)
            t += gap
            n_checks += t < horizon
        scheduled = n_checks * per_check
        return {
            "rows": n_rows, "sleep_s": sleep_s, "nodes": 2, "cpus_per_node": 2,
            "wait_s": duration,
            "scheduler_queries_counter": q_wait,
            "slurm_commands_while_waiting": len(queries),
            "check_times_s": [round(c, 2) for c in checks],
            "check_gaps_s": [round(g, 2) for g in gaps],
            "queries_per_check": per_check,
            "seconds_per_query_observed": duration / len(queries) if queries else None,
            "backoff_growth_observed": growth, "backoff_cap_s": cap,
            "queries_projected_600s": scheduled,
            "seconds_per_query_projected_600s": horizon / scheduled if scheduled else None,
            "queries_projected_600s_conservative": conservative,
            "seconds_per_query_projected_600s_conservative": horizon / conservative if conservative else None,
            "queries_after_last_task_ended": len([1 for t, n in cmds.since(last_end)
                                                  if n in ("sacct", "squeue", "scontrol") and t < w_done]),
            "queries_by_calls_after_completion": q_after_calls,
            "slurm_commands_by_calls_after_completion": len(cmds.since(w_done)),
            "method": ("every Slurm client command the process started was recorded (subprocess.Popen "
                       "wrapped) beside SlurmJob.scheduler_queries; commands < 1 s apart are one check. "
                       "10-minute projection: the observed checks, then gaps growing by the observed "
                       "factor up to wait()'s max_scheduler_every_s default, at the observed queries per "
                       "check; the conservative one holds the last observed gap instead."),
        }
    finally:
        probes.wait_idle()
        shutil.rmtree(parent, ignore_errors=True)


def diagnostics(ctx: harness.Context, quick: bool, which: List[str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    n = "200000" if quick else "500000"
    runs = {"startup": ["startup"],
            "worker_loop": ["worker-loop", "tiny", n], "worker_loop_w3": ["worker-loop", "wide", n],
            "submit_w1": ["submit", "tiny", str(ctx.jobs_root)], "submit_w3": ["submit", "wide", str(ctx.jobs_root)],
            "task_w1_1e5_seeded": ["task", "100000", "seeded"], "task_w1_1e5_unseeded": ["task", "100000", "unseeded"]}
    for key in which:
        proc = subprocess.run([sys.executable, str(HERE / "diagnose.py"), *runs[key]],
                              capture_output=True, text=True, timeout=600)
        try:
            out[key] = json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            out[key] = {"unavailable": (proc.stderr or proc.stdout)[-2000:]}
        log(f"diagnostic {key} done")
    probes.wait_idle()
    return out


def _wait_default(name: str) -> Optional[float]:
    import inspect

    from slurm_apply import SlurmJob

    p = inspect.signature(SlurmJob.wait).parameters.get(name)
    return float(p.default) if p is not None and isinstance(p.default, (int, float)) else None


def f_call_us(n: int = 1_000_000) -> float:
    """The cost of calling W1's f itself: ``f(*row)`` over prebuilt rows in a plain loop (best of 3)."""
    df = workloads.tiny_table(n)
    rows = list(zip(df["a"].tolist(), df["b"].tolist()))
    f = workloads.add
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for row in rows:
            f(*row)
        best = min(best, time.perf_counter() - t)
    return 1e6 * best / n


def seeding_off() -> Optional[Dict[str, Any]]:
    """The keyword arguments of slurm_apply that turn per-row seeding off, if it has them: tried
    on a one-row job written with submit=False (the manifest must then carry no seed)."""
    from slurm_apply import InputError, SlurmJob, slurm_apply

    parent = Path(tempfile.mkdtemp(prefix="sab-probe-"))
    try:
        for kwargs in ({"seed": False},):
            try:
                job = slurm_apply(workloads.add, workloads.tiny_table(1), job_dir=parent, jobname="probe",
                                  submit=False, backend="local", preflight=False, overwrite=True, **kwargs)
            except (InputError, TypeError):
                continue
            if SlurmJob(job.job_dir).manifest.seed is None:
                return kwargs
        return None
    finally:
        shutil.rmtree(parent, ignore_errors=True)


# -- targets and tables --------------------------------------------------------------------------


def _get(d: Dict[str, Any], *path: Any) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def targets(res: Dict[str, Any]) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []

    def add(tid: str, text: str, value: Optional[float], limit: Optional[float], *, fmt: str = "{:.3f}",
            higher_is_better: bool = False, detail: str = "") -> None:
        ok = None if value is None or limit is None else (value >= limit if higher_is_better else value <= limit)
        out.append({"id": tid, "target": text, "value": value, "limit": limit, "pass": ok,
                    "measured": "n/a" if value is None else fmt.format(value),
                    "limit_text": "n/a" if limit is None else fmt.format(limit), "detail": detail})

    ws = {k: w for k, w in res["workloads"].items() if isinstance(w, dict) and "error" not in w}
    s1 = _get(ws, "W1", "100000", "summary") or {}
    e2e = _get(s1, SA, "end_to_end_s")
    beyond = _get(s1, SA, "beyond_queue_s")
    for key, label in ((RP, "polling"), (RU, "get_slurm_out(wait=TRUE)")):
        r, rb = _get(s1, key, "end_to_end_s"), _get(s1, key, "beyond_queue_s")
        add(f"W1-1e5-vs-{key}", f"W1 1e5: end-to-end <= 0.8 x rslurm ({label}); ratio",
            e2e / r if e2e and r else None, 0.8, fmt="{:.2f}",
            detail=(f"slurm_apply {e2e:.3f} s, rslurm {r:.3f} s; without Slurm's queue wait "
                    f"{beyond:.3f} s vs {rb:.3f} s (ratio {beyond / rb:.2f})") if e2e and r and beyond and rb else "")
    floor, fb = _get(s1, BARE, "end_to_end_s"), _get(s1, BARE, "beyond_queue_s")
    # The floor is mostly Slurm's queue wait, 0-1 s by where the submission lands in slurmctld's
    # one-second cycle: compare what each adds beyond it (measured per run from the logs).
    add("W1-1e5-floor", "W1 1e5: time above the bare-array floor <= 0.5 s (both without Slurm's queue wait)",
        beyond - fb if beyond is not None and fb is not None else None, 0.5,
        detail=(f"beyond the queue wait: slurm_apply {beyond:.3f} s, bare array {fb:.3f} s; raw end-to-end "
                f"{e2e:.3f} s vs {floor:.3f} s (difference {e2e - floor:.3f} s)") if beyond and fb and floor else "")
    b0 = _get(s1, SA0, "beyond_queue_s")
    if b0 is not None and fb is not None:
        add("W1-1e5-floor-unseeded", "W1 1e5: the same, per-row seeding off", b0 - fb, 0.5,
            detail=f"beyond the queue wait: {b0:.3f} s vs {fb:.3f} s; raw end-to-end {_get(s1, SA0, 'end_to_end_s'):.3f} s")
    s6 = _get(ws, "W1", "1000000", "summary") or {}
    add("W1-1e6-collect", "W1 1e6: collect (get_output) <= 1 s", _get(s6, SA, "collect_s"), 1.0)
    raw = _get(s6, SA, "task_loop_us_per_row_median")
    fcost = res.get("f_call_us")
    add("W1-1e6-overhead", "W1 1e6: worker overhead per row (loop_s/rows - cost of f) <= 5 us, default settings",
        raw - fcost if raw is not None and fcost is not None else None, 5.0, fmt="{:.2f}",
        detail=(f"raw loop {raw:.2f} us/row in the cluster (tasks' own loop_s/rows, median), f itself "
                f"{fcost:.2f} us; per-row seeding: {res.get('seeding_note', '')}") if raw is not None else "")
    raw0 = _get(s6, SA0, "task_loop_us_per_row_median")
    if raw0 is not None and fcost is not None:
        add("W1-1e6-overhead-unseeded", "W1 1e6: the same, per-row seeding off", raw0 - fcost, 5.0, fmt="{:.2f}",
            detail=f"raw loop {raw0:.2f} us/row in the cluster, f itself {fcost:.2f} us")
    s2 = _get(ws, "W2", "summary") or {}
    add("W2-makespan", "W2: makespan / ideal <= 1.1", _get(s2, SA, "makespan_over_ideal"), 1.1, fmt="{:.3f}",
        detail=(f"makespan {_get(s2, SA, 'makespan_s'):.3f} s, ideal {_get(s2, SA, 'ideal_s'):.3f} s for "
                f"{_get(s2, SA, 'granted_cpus'):.0f} granted CPUs") if _get(s2, SA, "ideal_s") else "")
    s3 = _get(ws, "W3", "summary") or {}
    add("W3-submit", "W3: submit <= 1 s", _get(s3, SA, "submit_s"), 1.0)
    for key, label in ((RP, "polling"), (RU, "get_slurm_out(wait=TRUE)")):
        a, r = _get(s3, SA, "end_to_end_s"), _get(s3, key, "end_to_end_s")
        add(f"W3-e2e-vs-{key}", f"W3: end-to-end <= 0.3 x rslurm ({label}); ratio",
            a / r if a and r else None, 0.3, fmt="{:.2f}",
            detail=f"slurm_apply {a:.3f} s, rslurm {r:.3f} s" if a and r else "")
    a = _get(s3, SA, "peak_rss_mb")
    rr = [x for x in (_get(s3, RP, "peak_rss_mb"), _get(s3, RU, "peak_rss_mb")) if x]
    r = statistics.median(rr) if rr else None
    add("W3-rss", "W3: peak RSS per task <= 0.6 x rslurm; ratio", a / r if a and r else None, 0.6, fmt="{:.2f}",
        detail=f"slurm_apply {a:.0f} MB, rslurm {r:.0f} MB (largest process of a task, kernel VmHWM)" if a and r else "")
    s4 = _get(ws, "W4", "summary") or {}
    good = _get(s4, SA, "good_rows")
    add("W4-good-rows", "W4: good rows returned (of 99), each with its row index", good, 99, fmt="{:.0f}",
        higher_is_better=True,
        detail="values checked against their row index" if _get(s4, SA, "good_rows_correct") else "VALUES WRONG")
    wt = ws.get("WAIT") or {}
    add("WAIT-rate", "Waiting: seconds per Slurm query over a 10-minute job (extrapolated) >= 5",
        wt.get("seconds_per_query_projected_600s"), 5.0, fmt="{:.1f}", higher_is_better=True,
        detail=(f"{wt.get('slurm_commands_while_waiting')} queries in a {wt.get('wait_s', 0):.0f} s job, "
                f"checks at {wt.get('check_times_s')} s; back-off x{wt.get('backoff_growth_observed', 0):.2f} "
                f"to {wt.get('backoff_cap_s')} s; holding the last gap instead: one per "
                f"{wt.get('seconds_per_query_projected_600s_conservative') or 0:.1f} s") if wt else "")
    after = None if not wt else wt["queries_after_last_task_ended"] + wt["queries_by_calls_after_completion"]
    add("WAIT-after", "Waiting: Slurm queries once the result files show completion = 0", after, 0, fmt="{:.0f}")
    # Issue 17's targets: against the faster way of waiting of each peer, in the same run.
    def vs(summary: Dict[str, Any], mine: str, theirs: Tuple[str, ...]) -> Tuple[Optional[float], str]:
        a = _get(summary, mine, "end_to_end_s")
        have = [(k, _get(summary, k, "end_to_end_s")) for k in theirs if _get(summary, k, "end_to_end_s")]
        if not a or not have:
            return None, ""
        k, b = min(have, key=lambda kv: kv[1])
        return a / b, f"{COLUMNS[mine]} {a:.3f} s, {COLUMNS[k]} {b:.3f} s"
    rslurm_keys, submitit_keys = (RP, RU), (SUB, SUBP)
    for tid, text, summary, mine, theirs, limit in (
            ("W1-1e5-vs-rslurm-17", "W1 1e5: end-to-end <= 0.7 x rslurm, defaults; ratio", s1, SA, rslurm_keys, 0.7),
            ("W1-1e5-vs-submitit-17", "W1 1e5: end-to-end <= 0.8 x submitit chunked by hand, rows not seeded; ratio",
             s1, SA0, submitit_keys, 0.8),
            ("W3-vs-submitit-unseeded-17", "W3: end-to-end <= 0.9 x submitit chunked by hand, rows not seeded; ratio",
             s3, SA0, submitit_keys, 0.9),
            ("W3-vs-submitit-17", "W3: end-to-end <= 1.3 x submitit chunked by hand, defaults; ratio",
             s3, SA, submitit_keys, 1.3),
            ("W2-vs-rslurm-17", "W2: end-to-end <= 0.7 x rslurm; ratio", s2, SA, rslurm_keys, 0.7),
            ("W2-vs-submitit-17", "W2: end-to-end <= 0.7 x submitit chunked by hand; ratio", s2, SA, submitit_keys,
             0.7)):
        value, detail = vs(summary, mine, theirs)
        add(tid, text, value, limit, fmt="{:.2f}", detail=detail)
    first = _get(s1, SA, "task_started_to_first_row_s_median")
    add("first-row", "A task reaches its first row <= 0.3 s after it starts (W1 1e5, median task)", first, 0.3,
        detail=(f"max {_get(s1, SA, 'task_started_to_first_row_s_max'):.3f} s; before 'started': slurmd launch "
                f"to started {_get(s1, SA, 'task_launch_to_started_s_median'):.3f} s (median)") if first else "")
    return out


def _fmt(v: Any, fmt: str = "{:.3f}") -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    return fmt.format(v)


def _fastest_peer(summary: Dict[str, Any]) -> Optional[str]:
    have = [k for k in PEER_KEYS if _get(summary, k, "end_to_end_s")]
    return min(have, key=lambda k: summary[k]["end_to_end_s"]) if have else None


def ratios(ws: Dict[str, Any]) -> str:
    """slurm_apply's end-to-end over each peer's, and over the fastest peer's, in this run."""
    named = [(f"W1 {int(k):,} rows", w["summary"]) for k, w in (ws.get("W1") or {}).items()]
    named += [(label, ws[k]["summary"]) for k, label in (("W2", "W2 skewed"), ("W3", "W3 1e6 x 10")) if ws.get(k)]
    peer_cols = [k for k in PEER_KEYS if any(k in s for _, s in named)]
    if not named or not peer_cols:
        return ""
    out = ("\n\nEnd-to-end ratios, slurm_apply over each peer in the same run (below 1: slurm_apply is "
           "faster):\n\n| Workload | slurm_apply | " + " | ".join(f"÷ {COLUMNS[k]}" for k in peer_cols)
           + " | ÷ the fastest peer |\n|---|---|" + "---|" * (len(peer_cols) + 1) + "\n")
    for label, s in named:
        fastest = _fastest_peer(s)
        for c in (SA, SA0):
            mine = _get(s, c, "end_to_end_s")
            if not mine:
                continue
            cells = [_fmt(mine / _get(s, k, "end_to_end_s"), "{:.2f}") if _get(s, k, "end_to_end_s") else "–"
                     for k in peer_cols]
            best = (f"{mine / s[fastest]['end_to_end_s']:.2f} ({COLUMNS[fastest]}, "
                    f"{s[fastest]['end_to_end_s']:.3f} s)") if fastest else "–"
            out += f"| {label} | {COLUMNS[c]} | " + " | ".join(cells) + f" | {best} |\n"
    return out.rstrip("\n")


def tables(res: Dict[str, Any], tgts: List[Dict[str, Any]]) -> str:
    ws = {k: w for k, w in res["workloads"].items() if isinstance(w, dict) and "error" not in w}
    cols = [k for k in COLUMNS if any(k in w["summary"] for _, w in _named_summaries(ws))]
    lines = ["| Workload | Figure | " + " | ".join(COLUMNS[c] for c in cols) + " |",
             "|---|---|" + "---|" * len(cols)]

    def row(workload: str, figure: str, summary: Dict[str, Any], key: str, fmt: str = "{:.3f}") -> None:
        vals = [_fmt(_get(summary, c, key), fmt) for c in cols]
        if any(v != "–" for v in vals):
            lines.append(f"| {workload} | {figure} | " + " | ".join(vals) + " |")

    def peer_rows(workload: str, summary: Dict[str, Any]) -> None:
        row(workload, "dask: its workers up s", summary, "workers_up_s")
        row(workload, "dask: from workers up to the table s", summary, "after_workers_up_s")

    for n, w in (ws.get("W1") or {}).items():
        s = w["summary"]
        label = f"W1 {int(n):,} rows"
        row(label, "end-to-end s", s, "end_to_end_s")
        row(label, "end-to-end minus Slurm's queue wait s", s, "beyond_queue_s")
        row(label, "submit s", s, "submit_s")
        peer_rows(label, s)
        row(label, "collect s", s, "collect_s")
        row(label, "loop µs/row (tasks' own)", s, "task_loop_us_per_row_median", "{:.2f}")
        row(label, "first row after task start s", s, "task_started_to_first_row_s_median")
    if ws.get("W2"):
        s = ws["W2"]["summary"]
        row("W2 skewed", "end-to-end s", s, "end_to_end_s")
        peer_rows("W2 skewed", s)
        row("W2 skewed", "makespan s", s, "makespan_s")
        row("W2 skewed", "makespan / ideal", s, "makespan_over_ideal")
        row("W2 skewed", "makespan / ideal (Slurm logs)", s, "makespan_sched_over_ideal")
    if ws.get("W3"):
        s = ws["W3"]["summary"]
        row("W3 1e6 x 10", "end-to-end s", s, "end_to_end_s")
        row("W3 1e6 x 10", "submit s", s, "submit_s")
        peer_rows("W3 1e6 x 10", s)
        row("W3 1e6 x 10", "collect s", s, "collect_s")
        row("W3 1e6 x 10", "peak RSS per task MB", s, "peak_rss_mb", "{:.0f}")
        row("W3 1e6 x 10", "sacct MaxRSS per task MB", _sacct_mb(ws["W3"]), "sacct_mb", "{:.0f}")
    if ws.get("W4"):
        s = ws["W4"]["summary"]
        row("W4 row 37 fails", "good rows returned (of 99)", s, "good_rows", "{:.0f}")
        row("W4 row 37 fails", "end-to-end s", s, "end_to_end_s")
    wrong = [f"{name} {k}" for name, w in _named_summaries(ws) for k, v in w["summary"].items()
             if v.get("correct") is False]
    if wrong:
        lines.append(f"\n**Wrong results** from: {', '.join(wrong)}")
    out = "\n".join(lines)
    s1 = _get(ws, "W1", "100000", "summary")
    if s1 and "at_table_s" in (s1.get(SA) or {}):
        have = [c for c in (SA, SA0) if c in s1]
        out += ("\n\nW1 100,000 rows, where the time goes (median moments after the call, s):\n\n| Moment | "
                + " | ".join(COLUMNS[c] for c in have) + " |\n|---|" + "---|" * len(have) + "\n")
        for key, label in MOMENTS:
            out += f"| {label} | " + " | ".join(_fmt(_get(s1, c, key)) for c in have) + " |\n"
        if "call_sbatch_s" in (s1.get(SA) or {}):
            out += ("\nThe call itself, W1 100,000 rows (median seconds in each step of slurm_apply(), "
                    "in the benchmark's long-lived process, so the pre-flight is warm):\n\n| Step | "
                    + " | ".join(COLUMNS[c] for c in have) + " |\n|---|" + "---|" * len(have) + "\n")
            for key, label in harness.CALL_FIGURES:
                out += f"| {label} | " + " | ".join(_fmt(_get(s1, c, key), "{:.4f}") for c in have) + " |\n"
            out += "| the whole call (submit s) | " + " | ".join(_fmt(_get(s1, c, "submit_s"), "{:.4f}")
                                                           for c in have) + " |\n"
        out = out.rstrip("\n")
    out += ratios(ws)
    wt = ws.get("WAIT")
    if wt:
        out += (f"\n\nWaiting ({wt['rows']} rows x {wt['sleep_s']:g} s on 4 processes, {wt['wait_s']:.0f} s): "
                f"{wt['slurm_commands_while_waiting']} Slurm queries while waiting (checks at "
                f"{wt['check_times_s']} s), projected {wt['queries_projected_600s']:.0f} over 10 minutes "
                f"(one per {wt['seconds_per_query_projected_600s']:.0f} s); "
                f"{wt['queries_after_last_task_ended']} after the last task ended, "
                f"{wt['queries_by_calls_after_completion']} from get_job_status()/wait()/get_output() afterwards.")
    out += "\n\n| Target | Measured | Limit | Result |\n|---|---|---|---|\n"
    out += "\n".join(f"| {t['target']} | {t['measured']} | {t['limit_text']} | "
                     f"{'n/a' if t['pass'] is None else 'PASS' if t['pass'] else 'FAIL'} |" for t in tgts)
    return out


DIAGNOSTICS = ("startup", "worker_loop", "worker_loop_w3", "submit_w1", "submit_w3",
               "task_w1_1e5_seeded", "task_w1_1e5_unseeded")
MOMENTS = (
    ("at_submitted_s", "slurm_apply() returned (job submitted)"),
    ("at_first_launch_s", "slurmd launched the first task"),
    ("at_first_started_s", "first task's worker started (interpreter and imports done)"),
    ("at_first_row_s", "first row began"),
    ("at_last_ended_s", "last task wrote its done marker"),
    ("at_wait_returned_s", "wait() returned"),
    ("at_table_s", "get_output() returned the table"),
)


def _named_summaries(ws: Dict[str, Any]) -> List[Any]:
    """(name, workload) for every workload with a summary; W1 has one per size."""
    out = []
    for k, w in ws.items():
        if k == "W1":
            out.extend((f"W1 {n}", v) for n, v in w.items())
        elif isinstance(w, dict) and "summary" in w:
            out.append((k, w))
    return out


def _sacct_mb(w: Dict[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, runs in w["runs"].items():
        vals = [max(v for v in r["sacct_max_rss_kb"].values() if v is not None) / 1024
                for r in runs if r.get("sacct_max_rss_kb") and any(v is not None for v in r["sacct_max_rss_kb"].values())]
        if vals:
            out[key] = {"sacct_mb": statistics.median(vals)}
    return out


# -- main ----------------------------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--quick", action="store_true", help="1 repetition, W1 at 1e4/1e5/1e6, a 20 s waiting job")
    ap.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    ap.add_argument("--no-rslurm", action="store_true", help="do not install or run R/rslurm")
    ap.add_argument("--no-python-peers", action="store_true",
                    help="do not install or run submitit and dask-jobqueue (bench/peers.py)")
    ap.add_argument("--reps", type=int, help="repetitions (default 3, or 1 with --quick)")
    ap.add_argument("--out", default=str(HERE / "results" / "latest.json"), help="where the JSON goes")
    ap.add_argument("--readme", action="store_true",
                    help="also put this run's tables in README.md's Performance section (between "
                         "<!-- perf --> and <!-- /perf -->, appended at the end the first time)")
    ap.add_argument("--scheduler", choices=("slurm", "sge"), default="slurm",
                    help="sge: W1 and W2 on a private Grid Engine cell instead (bench/sge.py; "
                         "writes bench/results/sge_latest.json unless --out)")
    ap.add_argument("--tables", metavar="JSON",
                    help="print the tables (and targets) of an earlier run's JSON again, with this "
                         "script's tables; with --readme also put them in README.md; runs nothing")
    args = ap.parse_args(argv)
    if args.tables:
        res = json.loads(Path(args.tables).read_text())
        res["targets"] = targets(res)
        res["markdown"] = tables(res, res["targets"])
        print(f"{_versions_line(res['meta'])}\n\n{res['markdown']}")
        if args.readme:
            write_readme(res, REPO / "README.md")
        return 0
    if args.scheduler == "sge":
        import sge as sge_bench

        out = Path(args.out if "--out" in (sys.argv if argv is None else argv)
                   else HERE / "results" / "sge_latest.json").absolute()
        root = Path(tempfile.mkdtemp(prefix="sab-sge-", dir="/tmp"))
        os.chmod(root, 0o755)
        os.chdir(root)  # as below: the tasks must import the snapshot, not the checkout
        use_library_snapshot(root / "lib")
        try:
            return sge_bench.main(args.quick, args.reps, out)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    only = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    bad = [w for w in only if w not in ALL]
    if bad:
        ap.error(f"--only: unknown {bad}; choose from {','.join(ALL)}")
    reps = args.reps or (1 if args.quick else 3)
    sizes = [10_000, 100_000, 1_000_000] if args.quick else [1_000, 10_000, 100_000, 1_000_000]
    started = time.time()

    ensure_slurm()
    r_info: Dict[str, Any] = {"available": False, "why": "--no-rslurm"}
    if not args.no_rslurm:
        r_info = ensure_rslurm()
        if not r_info["available"]:
            log(f"rslurm unavailable, running without it: {r_info['why']}")
    use_r = bool(r_info["available"])
    if use_r:
        r_info["r_version"] = _r_version()
    py_info: Dict[str, Any] = {"available": False, "why": "--no-python-peers"}
    if not args.no_python_peers:
        py_info = peers.ensure_venv(log)
        if not py_info["available"]:
            log(f"the Python peers are unavailable, running without them: {py_info['why']}")
    use_py = bool(py_info["available"])

    out = Path(args.out).absolute()
    root = Path(tempfile.mkdtemp(prefix="sab-", dir="/tmp"))
    os.chmod(root, 0o755)
    # Jobs run in their caller's directory, and `python -m` puts that directory first on a task's
    # sys.path: from the repository's root, the nodes would import the checkout, not the snapshot.
    home = os.getcwd()
    os.chdir(root)
    library = use_library_snapshot(root / "lib")
    cluster = testbed.SlurmCluster(root / "c", nodes=3, cpus_per_node=2, accounting=True, name="bench")
    jobs = root / "jobs"
    jobs.mkdir()
    os.chmod(jobs, 0o755)
    # A SIGTERM (or the shell's time limit) must still stop the cluster.
    signal.signal(signal.SIGTERM, _on_sigterm)
    res: Dict[str, Any] = {"meta": {}, "workloads": {}}
    try:
        log(f"starting a private Slurm cluster under {root}")
        cluster.start()
        os.environ.update(cluster.env())
        ctx = harness.Context(jobs, cluster.log_dir)
        slurm_version = subprocess.run(["sinfo", "--version"], capture_output=True, text=True).stdout.strip()
        res = {
            "meta": {
                "command": " ".join(["python bench/run.py", *(sys.argv[1:] if argv is None else argv)]),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                "repetitions": reps, "statistic": "median over repetitions; contenders interleaved",
                "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform()},
                "cluster": {"nodes": 3, "cpus_per_node": 2, "accounting": True, "slurm": slurm_version,
                            "note": "3 slurmd on this one machine's cores (oversubscribed); "
                                    "JobAcctGatherFrequency=1"},
                "slurm_apply": library,
                "rslurm": r_info,
                "python_peers": py_info,
                # Other sessions' test clusters on this machine add noise: say how many there were.
                "load_average_start": os.getloadavg(),
                "other_slurmctld_at_start": _other_slurmctlds(root),
            },
            "methods": METHODS,
            "workloads": {},
        }
        unseeded = seeding_off()
        res["meta"]["seeding_off"] = unseeded
        log("warm-up (not measured)")
        harness.run_slurm_apply(ctx, "warm", workloads.add, workloads.tiny_table(1000), nodes=2, cpus_per_node=1)
        if use_r:
            harness.run_rslurm(ctx, "warmr", "tiny", 1000, nodes=2, cpus_per_node=1, mode="poll")
        if use_py:
            for key in (SUB, DASK):
                harness.run_peer(ctx, "warmp", key, "tiny", 1000, nodes=2, cpus_per_node=1)
        ws = res["workloads"]
        steps: Dict[str, Callable[[], Any]] = {
            "W1": lambda: w1(ctx, sizes, reps, use_r, unseeded, args.quick, use_py),
            "W2": lambda: w2(ctx, reps, use_r, use_py),
            "W3": lambda: w3(ctx, 1_000_000, reps, use_r, unseeded, args.quick, use_py),
            "W4": lambda: w4(ctx, reps, use_r),
            "WAIT": lambda: waiting(ctx, 8, 10.0) if args.quick else waiting(ctx, 12, 25.0),
        }
        for name in [w for w in ALL if w in only and w in steps]:
            log(f"{name}")
            try:
                ws[name] = steps[name]()
            except Exception:  # keep the other workloads' figures; say what broke
                ws[name] = {"error": traceback.format_exc()}
                log(f"{name} failed:\n{ws[name]['error']}")
                probes.wait_idle()
        if "DIAG" in only:
            res["diagnostics"] = diagnostics(ctx, args.quick, list(DIAGNOSTICS))
    except KeyboardInterrupt:
        log("interrupted: stopping the cluster, writing what was measured")
        res["meta"]["interrupted"] = True
    finally:
        cluster.stop()
        os.chdir(home)
        shutil.rmtree(root, ignore_errors=True)
    res["meta"]["load_average_end"] = os.getloadavg()
    res["meta"]["other_slurmctld_at_end"] = _other_slurmctlds(root)
    if res["meta"].get("slurm_apply"):
        now = _library_digest(REPO / "slurm_apply")
        if now != library["files"]:
            res["meta"]["slurm_apply"]["checkout_changed_during_run"] = f"{_git_commit()} files {now}"
            log(f"the checkout's slurm_apply changed during the run ({library['commit']} -> {_git_commit()}); "
                "this run measured the copy taken at its start")

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str) + "\n")  # the figures, whatever follows
    res["f_call_us"] = f_call_us()
    loop = _get(res, "diagnostics", "worker_loop") or {}
    off = res["meta"].get("seeding_off")
    res["seeding_note"] = (
        (f"slurm_apply({', '.join(f'{k}={v!r}' for k, v in off.items())}) turns it off" if off else
         "the library offers no way to turn it off")
        + (f"; in one idle process the row loop takes {loop['loop_us_per_row_seeded']:.2f} us/row "
           f"seeded and {loop['loop_us_per_row_unseeded']:.2f} us/row unseeded "
           f"(seeding costs {loop['seeding_us_per_row']:.2f} us/row)" if "loop_us_per_row_seeded" in loop else ""))
    res["targets"] = targets(res)
    res["meta"]["duration_s"] = round(time.time() - started, 1)
    text = tables(res, res["targets"])
    res["markdown"] = text
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    versions = _versions_line(res["meta"])
    out.with_suffix(".md").write_text(f"`{res['meta']['command']}` ({res['meta']['started']}, "
                                      f"{res['meta']['duration_s']:.0f} s)\n\n{versions}\n\n{text}\n")
    print(f"{versions}\n\n{text}")
    if args.readme:
        write_readme(res, REPO / "README.md")
    print(f"\n{sum(1 for t in res['targets'] if t['pass'])} of {len(res['targets'])} targets pass; "
          f"results in {out} ({res['meta']['duration_s']:.0f} s)")
    broken = [k for k, w in res["workloads"].items() if isinstance(w, dict) and "error" in w]
    if broken or res["meta"].get("interrupted"):
        print(f"incomplete run: {', '.join(broken) or 'interrupted'}", file=sys.stderr)
        return 1
    return 0


PERF_START, PERF_END = "<!-- perf -->", "<!-- /perf -->"


def write_readme(res: Dict[str, Any], readme: Path) -> None:
    """Replace the Performance section between the markers (or append it) with this run's tables."""
    meta = res["meta"]
    lib = meta.get("slurm_apply", {})
    r = meta.get("rslurm", {})
    block = (
        f"{PERF_START}\n## Performance\n\n"
        "Measured by the benchmark suite, which starts its own private Slurm cluster (3 nodes x 2 CPUs "
        "on a 2-core machine, so timings are noisy) and runs rslurm "
        f"{r.get('version') or '(not available)'}{_peer_versions(meta)} on the same cluster in the same run:\n\n"
        f"    {meta['command']}\n\n"
        "The Python peers get the rows chunked by hand as their users would: nodes x cpus_per_node "
        "contiguous chunks (as many as slurm_apply's processes), one 1-CPU array task (submitit) or "
        "worker (dask-jobqueue, its start-up counted) per chunk, `f(**row)` over each chunk "
        "(bench/peers.py). `--no-rslurm` and `--no-python-peers` leave them out.\n\n"
        "Every benchmark, these and the big jobs' S1-S4 below, runs with one command, one part "
        "after another (about 50 minutes): `python bench/all.py --readme`.\n\n"
        f"Run of {meta['started']} on slurm_apply {lib.get('commit', '?')}, {meta['repetitions']} "
        f"repetitions (5 for W1 up to 100,000 rows), medians; seconds unless stated.{_load_note(meta)} End-to-end is "
        "from the call, with the table in memory, to the result table in memory. What each figure "
        "means and how it is measured: [bench/README.md](bench/README.md).\n\n"
        f"{res['markdown']}\n{PERF_END}\n")
    text = readme.read_text() if readme.exists() else ""
    if PERF_START in text and PERF_END in text:
        head, rest = text.split(PERF_START, 1)
        text = head + block + rest.split(PERF_END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    readme.write_text(text)


def _load_note(meta: Dict[str, Any]) -> str:
    start, end = meta.get("load_average_start"), meta.get("load_average_end")
    if not start or not end:
        return ""
    cores = (meta.get("machine") or {}).get("cores")
    return (f" The machine was shared with other work: load average {start[0]:.1f} at the start and "
            f"{end[0]:.1f} at the end on {cores} cores, {meta.get('other_slurmctld_at_start', 0)} other "
            "private clusters running at the start; ratios within the run are the figures to compare.")


def _versions_line(meta: Dict[str, Any]) -> str:
    r, p = meta.get("rslurm") or {}, meta.get("python_peers") or {}
    v = p.get("versions") or {}
    return (f"Peers: rslurm {r.get('version') or 'not run (' + str(r.get('why')) + ')'}; "
            + (", ".join(f"{k} {v[k]}" for k in ("submitit", "dask-jobqueue", "distributed", "dask") if k in v)
               + f" in {p.get('venv')}" if v else f"Python peers not run ({p.get('why')})") + ".")


def _peer_versions(meta: Dict[str, Any]) -> str:
    v = (meta.get("python_peers") or {}).get("versions")
    if not v:
        return ""
    return (f", submitit {v.get('submitit')} and dask-jobqueue {v.get('dask-jobqueue')} (distributed "
            f"{v.get('distributed')}; pip-installed into .venvs/bench, pinned in bench/peers.py)")


METHODS = {
    "timing": "time.perf_counter from the slurm_apply() call (table already in memory) to get_output() "
              "returning the table; rslurm's from its slurm_apply() call to get_slurm_out() returning, "
              "timed inside Rscript after library(rslurm) and the data.frame are ready.",
    "submit_s": "the slurm_apply() call returning (validation, files, preflight, sbatch).",
    "collect_s": "get_output() alone, after wait() returned.",
    "rslurm_modes": "rslurm_user: get_slurm_out(outtype='table', wait=TRUE), which submits a dummy "
                    "dependent job (sbatch --dependency=singleton --wait) and waits on it, as a user does. "
                    "rslurm_poll: polls for every results_<i>.RDS at 50 ms, then get_slurm_out(wait=FALSE).",
    "bare_array": "sbatch --array=0-(T-1) with the same T and --cpus-per-task, each task touching a file; "
                  "from sbatch until every file exists, polled every 50 ms.",
    "python_peers": "bench/peers.py, in their own venv (.venvs/bench, versions in meta.python_peers), timed "
                    "inside their process from the table in memory (their modules imported) to the table "
                    "with a result column: the rows split into nodes x cpus_per_node contiguous chunks "
                    "(slurm_apply's processes for the same arguments), one 1-CPU task per chunk running "
                    "f(**row) over its rows. submitit: executor.map_array, one array job; 'job.result()' "
                    "waits as its users do (submitit looks for the result file every second), 'polls "
                    "done()' checks every 50 ms. dask-jobqueue: SLURMCluster(cores=1, processes=1) scaled "
                    "to one worker per chunk, client.map over the chunks, client.gather; end-to-end "
                    "includes the cluster's start and its workers' (workers_up_s), after_workers_up_s is "
                    "the rest; the teardown (cluster.close) is not counted.",
    "call_breakdown": "W1: the steps of slurm_apply() (slurm_apply/_submit/api.py) wrapped with timers for "
                      "the call (harness.CallBreakdown); the pre-flight's wait is its handle's result(); "
                      "the rest is the call minus the steps.",
    "pool": "multiprocessing.Pool(slots).starmap over the same rows on this machine (W2: chunksize=1), "
            "from the table to a table with a result column.",
    "task_figures": "from each task's done marker: loop_s/rows (its processes' row loops), "
                    "first_row_at - started; launch_to_started from slurmd's 'Launching batch job' log "
                    "line (ms) to the marker's started: slurmstepd, bash and the interpreter start.",
    "makespan": "slurm_apply: last done marker's ended - first done marker's started. rslurm (no markers): "
                "first task launch to last task completion in slurmd/slurmctld logs (ms); that figure "
                "is also given for slurm_apply as makespan_sched_s. ideal = max(longest row, total work / "
                "CPUs Slurm granted (sacct AllocCPUS summed over the tasks)).",
    "peak_rss": "a thread polls /proc every 20 ms for the job's task processes (SLURM_JOB_NAME and "
                "SLURM_ARRAY_TASK_ID in their environment) and reads VmHWM, the kernel's high-water "
                "mark of each process's resident set, so peaks between samples are not missed. "
                "peak_rss_mb = the largest process of any task (the worker: python, or R); "
                "peak_rss_sum_mb adds a task's processes (bash included). sacct's MaxRSS of the "
                ".batch step (1 s sampling) is kept beside it as a cross-check.",
    "overhead_per_row": "raw = median over W1 1e6 tasks of loop_s/rows from the done markers (tasks "
                        "run concurrently on an oversubscribed machine); overhead = raw - f_call_us, "
                        "the cost of calling f itself (f(*row) over prebuilt rows, plain loop, best of "
                        "3, in the benchmark process). loop_s leaves out claiming, decoding and the "
                        "per-chunk flush+fsync: after_first_row_us_per_row ((ended - first_row_at) / "
                        "rows) includes them.",
}


if __name__ == "__main__":
    sys.exit(main())
