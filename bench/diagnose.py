"""Profiles behind the benchmark's figures, each run in a fresh process by ``bench/run.py``:

    python bench/diagnose.py worker-loop tiny|wide N_ROWS  # the node's row loop, in this process
    python bench/diagnose.py startup                       # interpreter and import costs of a task
    python bench/diagnose.py submit tiny|wide JOBS_DIR     # cProfile of slurm_apply() on W1/W3
    python bench/diagnose.py task N_ROWS seeded|unseeded   # cProfile of one whole array task

Each prints one JSON object. ``worker-loop`` calls slurm_apply's private row loop directly (on a
job written with ``submit=False``): ``_node.rows.run_process`` (the process writes each row it
starts into its slot, which the task's parent reads if it dies), or ``_worker._run_process`` in
a checkout from before ``_node``, so one script measures both (put either first on PYTHONPATH).
It runs in its own process because the row loop installs a SIGTERM handler.
"""

from __future__ import annotations

import cProfile
import dataclasses
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import workloads

def _own_time(stats: pstats.Stats, limit: int) -> List[Dict[str, Any]]:
    """The functions that took the most time of their own."""
    rows = []
    for (path, line, func), (cc, nc, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{os.path.basename(path)}:{line}({func})", "calls": nc,
                     "own_s": round(tt, 4), "cumulative_s": round(ct, 4)})
    rows.sort(key=lambda r: r["own_s"], reverse=True)
    return rows[:limit]


def _library_time(stats: pstats.Stats, min_s: float = 0.002,
                  also: Tuple[str, ...] = ()) -> Dict[str, Dict[str, Any]]:
    """Cumulative time of every slurm_apply function (and of the named others) that took at least
    ``min_s``: where the library's time went, whatever its functions are called this week."""
    out: Dict[str, Dict[str, Any]] = {}
    for (path, line, func), (cc, nc, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        mine = f"{os.sep}slurm_apply{os.sep}" in path
        if (mine or func in also) and ct >= min_s:
            key = f"{os.path.basename(path)}:{func}"
            prev = out.get(key, {"calls": 0, "cumulative_s": 0.0})
            out[key] = {"calls": prev["calls"] + nc, "cumulative_s": round(prev["cumulative_s"] + ct, 4)}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["cumulative_s"]))


def worker_loop(workload: str, n_rows: int) -> Dict[str, Any]:
    """Per-row time of the node's row loop (W1's or W3's table) with the job's seed as written
    (the default: every row seeds ``random``) and with no seed, and a profile of the default."""
    import slurm_apply as package
    from slurm_apply._store import layout as jd
    from slurm_apply import slurm_apply

    run_process = _row_loop()

    f = {"tiny": workloads.add, "wide": workloads.wide}[workload]
    df = workloads.tiny_table(n_rows) if workload == "tiny" else workloads.wide_table(n_rows)
    parent = Path(tempfile.mkdtemp(prefix="sa-diag-"))
    try:
        job = slurm_apply(f, df, nodes=1, cpus_per_node=1, job_dir=parent,
                          jobname="diag", submit=False, backend="local")
        manifest = jd.load_manifest(job.job_dir)

        def once(seed: Any, prof: Optional[cProfile.Profile] = None) -> Tuple[float, float]:
            for d in (jd.claims_dir(job.job_dir, 0), jd.results_dir(job.job_dir, 0)):
                shutil.rmtree(d)
                d.mkdir()
            m = dataclasses.replace(manifest, seed=seed)
            if prof:
                prof.enable()
            t = time.perf_counter()
            stats = run_process(job.job_dir, m, f)
            wall = time.perf_counter() - t
            if prof:
                prof.disable()
            loop_s, n = (stats["loop_s"], stats["rows"]) if isinstance(stats, dict) else (stats.loop_s, stats.rows)
            return 1e6 * loop_s / n, 1e6 * wall / n

        rows = list(zip(*(df[c].tolist() for c in df.columns)))
        t = time.perf_counter()
        for row in rows:
            f(*row)
        f_call_us = 1e6 * (time.perf_counter() - t) / n_rows
        seeded, unseeded = [], []
        for _ in range(3):
            seeded.append(once(manifest.seed))
            unseeded.append(once(None))
        prof = cProfile.Profile()
        once(manifest.seed, prof)
        loop_s = statistics.median(x[0] for x in seeded)
        loop_u = statistics.median(x[0] for x in unseeded)
        return {
            "workload": workload,
            "rows": n_rows,
            "f_call_us": round(f_call_us, 3),
            "loop_us_per_row_seeded": round(loop_s, 3),
            "loop_us_per_row_unseeded": round(loop_u, 3),
            "seeding_us_per_row": round(loop_s - loop_u, 3),
            "whole_process_us_per_row_seeded": round(statistics.median(x[1] for x in seeded), 3),
            "whole_process_us_per_row_unseeded": round(statistics.median(x[1] for x in unseeded), 3),
            "profile_seeded_top": _own_time(pstats.Stats(prof), 10),
            "slurm_apply": os.path.dirname(package.__file__),
            "row_loop": run_process.__doc__,
            "method": ("the row loop of one process (see row_loop) on the workload's job written with "
                       "submit=False, in one process (no Slurm, no other task); 'unseeded' passes a "
                       "copy of the manifest with seed=None (what seed=False writes). "
                       "loop = the process's own loop_s; whole_process = its wall time, claims, "
                       "chunk decoding and per-chunk fsync included. f_call_us = f(*row) over "
                       "prebuilt row tuples in a plain loop."),
        }
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def _row_loop() -> Any:
    """(job_dir, manifest, f) -> stats of one process's pass over every chunk, for the
    slurm_apply on the path: the node package's, or the old single-module worker's."""
    try:
        from slurm_apply._node import rows
    except ImportError:
        from slurm_apply import _worker

        def old(job_dir: Path, m: Any, f: Any) -> Dict[str, Any]:
            """slurm_apply._worker._run_process (no slot: nobody knows which row it runs)"""
            return _worker._run_process(job_dir, m, 0, 0, 0, f)

        return old

    def new(job_dir: Path, m: Any, f: Any) -> Dict[str, Any]:
        """slurm_apply._node.rows.run_process (each row's id stored into its slot first)"""
        at = memoryview(bytearray(8 * rows.SLOT_WIDTH)).cast("q")
        return rows.run_process(rows.Context(job_dir, m, 0, 0, f=f), rows.Work(0), at)

    return new


def _node_module() -> str:
    """What submit.sh runs: ``slurm_apply._node``, or ``slurm_apply._worker`` before it."""
    import importlib.util

    return "slurm_apply._node" if importlib.util.find_spec("slurm_apply._node") else "slurm_apply._worker"


def _wall(args: List[str], reps: int = 5) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        subprocess.run(args, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _import_us(args: List[str], module: str) -> int:
    """Cumulative import time of ``module`` (microseconds) from ``-X importtime``."""
    proc = subprocess.run(args, capture_output=True, text=True)
    for line in proc.stderr.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1])
    return -1


def startup() -> Dict[str, Any]:
    """What a task pays before and around its first row, outside Slurm on this machine."""
    py = sys.executable
    return {
        "python_bare_s": round(_wall([py, "-c", "pass"]), 4),
        "python_no_site_s": round(_wall([py, "-S", "-c", "pass"]), 4),
        "worker_module_s": round(_wall([py, "-m", _node_module()]), 4),
        "import_slurm_apply_package_ms": _import_us([py, "-X", "importtime", "-m", _node_module()],
                                                    "slurm_apply") / 1000,
        "import_site_ms": _import_us([py, "-X", "importtime", "-c", "pass"], "site") / 1000,
        "import_numpy_ms": _import_us([py, "-X", "importtime", "-c", "import numpy"], "numpy") / 1000,
        "method": ("median wall time of 5 runs of each command; import times from python -X importtime. "
                   "`python -m slurm_apply._node` without arguments imports the package and prints "
                   "its usage: the interpreter start every task pays before its 'started' stamp."),
    }


def submit_profile(workload: str, jobs_dir: str) -> Dict[str, Any]:
    """cProfile of one slurm_apply() call on W1's table (100,000 rows) or W3's (1,000,000 x 10),
    submitted for real and cancelled at once."""
    from slurm_apply import slurm_apply

    if workload == "wide":
        f, df, nodes = workloads.wide, workloads.wide_table(1_000_000), 4
    else:
        f, df, nodes = workloads.add, workloads.tiny_table(100_000), 2
    parent = Path(tempfile.mkdtemp(prefix="sa-diag-", dir=jobs_dir))
    os.chmod(parent, 0o755)
    try:
        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.enable()
        job = slurm_apply(f, df, nodes=nodes, cpus_per_node=1, job_dir=parent, jobname="diag")
        prof.disable()
        total = time.perf_counter() - t
        job.cancel()
        tables = [job.job_dir / "params_meta.pkl", job.job_dir / "params.pkl", job.job_dir / "s0" / "params.bin"]
        sizes = {p.name: p.stat().st_size for p in tables if p.exists()}
        stats = pstats.Stats(prof)
        return {"submit_s": round(total, 4),
                "library_cumulative": _library_time(stats, 0.002, also=("to_pickle", "fsync")),
                "top_own_time": _own_time(stats, 12), "file_bytes": sizes}
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def task_profile(n_rows: int, seeded: bool) -> Dict[str, Any]:
    """One array task of a W1 job run as submit.sh runs it, outside Slurm, under cProfile:
    ``python -m cProfile -m slurm_apply._node JOB 0`` with SLURM_APPLY_TASK=0. The job has
    2 tasks; task 0 takes its own chunks and then, as task 1 never comes, all the others."""
    from slurm_apply import slurm_apply

    parent = Path(tempfile.mkdtemp(prefix="sa-diag-"))
    try:
        job = slurm_apply(workloads.add, workloads.tiny_table(n_rows), nodes=2, cpus_per_node=1,
                          job_dir=parent, jobname="diag", submit=False, backend="local",
                          **({} if seeded else {"seed": False}))
        out = parent / "task.prof"
        env = dict(os.environ, SLURM_APPLY_TASK="0",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])))
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", _node_module(),
                               str(job.job_dir), "0", job.manifest.token], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            return {"unavailable": proc.stderr[-2000:]}
        stats = pstats.Stats(str(out))
        # The same task again without the profiler, with -X importtime: what it imports, and when.
        for d in (job.job_dir / "s0" / "claims", job.job_dir / "s0" / "results"):
            shutil.rmtree(d)
            d.mkdir()
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", _node_module(),
                               str(job.job_dir), "0", job.manifest.token], env=env, capture_output=True, text=True)
        wall_plain = time.perf_counter() - t
        top: List[Tuple[str, float]] = []
        for line in proc.stderr.splitlines():
            parts = line.split("|")
            if line.startswith("import time:") and len(parts) == 3 and not parts[2].startswith("  "):
                try:
                    top.append((parts[2].strip(), int(parts[1]) / 1000))
                except ValueError:
                    continue
        top.sort(key=lambda x: x[1], reverse=True)
        return {"rows": n_rows, "seeded": seeded, "wall_s_profiled": round(wall, 4),
                "wall_s": round(wall_plain, 4),
                "library_cumulative": _library_time(stats, 0.002, also=("seed", "fsync")),
                "imports_numpy": any(name == "numpy" or name.startswith("numpy.") for name, _ in top),
                "top_level_imports_ms": {name: round(ms, 1) for name, ms in top[:10]},
                "top_own_time": _own_time(stats, 12)}
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def main(argv: List[str]) -> int:
    if argv[:1] == ["worker-loop"]:
        out = worker_loop(argv[1], int(argv[2]))
    elif argv[:1] == ["startup"]:
        out = startup()
    elif argv[:1] == ["task"]:
        out = task_profile(int(argv[1]), argv[2] == "seeded")
    elif argv[:1] == ["submit"]:
        out = submit_profile(argv[1], argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
