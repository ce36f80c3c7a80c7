"""W1 and W2 on a private Grid Engine cell: ``python bench/run.py --scheduler sge [--quick]``.

The Slurm run's figures for slurm_apply with ``backend="sge"``: end to end (the call, with the
table in memory, to the result table in memory), submit (the call until it returns), the row loop
in µs per row (each task's own loop time over its rows, from its end marker), and W2's makespan
(first task start to last task end, from the markers) over the ideal (max(longest row, total
work / granted slots)). The baselines are measured in the same run, interleaved: a bare array
job (``qsub -t 1-T`` whose tasks only touch a file: the scheduler's floor) and a process pool on
this machine (the compute floor). No rslurm: it runs on Slurm only.

The cell (tests/sgebed.py: one execution host, 4 slots, the scheduler run every second) is
started here and stopped at the end; this needs root and Debian's gridengine packages.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import harness
import probes
import workloads

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(1, str(REPO / "tests"))

import sgebed  # noqa: E402

SA, BARE, POOL = "slurm_apply", "bare_array", "pool"


def log(msg: str) -> None:
    print(f"[bench sge {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def wait_idle(timeout_s: float = 120.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        proc = subprocess.run(["qstat", "-u", "*"], capture_output=True, text=True)
        if proc.returncode == 0 and not proc.stdout.strip():
            return
        time.sleep(0.1)
    raise RuntimeError("the cell still has jobs after the measurement")


def run_slurm_apply(ctx: harness.Context, tag: str, f: Callable[..., Any], df: Any, *, nodes: int,
                    cpus_per_node: int, check: Optional[Callable[[Any], bool]] = None) -> Dict[str, Any]:
    from slurm_apply import slurm_apply

    parent = ctx.scratch(tag)
    try:
        t0 = time.perf_counter()
        job = slurm_apply(f, df, nodes=nodes, cpus_per_node=cpus_per_node, job_dir=parent,
                          jobname=f"{tag}_{os.getpid()}", backend="sge")
        t1 = time.perf_counter()
        status = job.wait(progress=False)
        t2 = time.perf_counter()
        out = job.get_output()
        t3 = time.perf_counter()
        if not status.completed:
            raise RuntimeError(f"the benchmark job did not complete:\n{status}")
        markers = probes.task_markers(job.job_dir)
        res: Dict[str, Any] = {"submit_s": t1 - t0, "wait_s": t2 - t1, "collect_s": t3 - t2,
                               "end_to_end_s": t3 - t0, "scheduler_queries": job.scheduler_queries,
                               "rows_out": len(out), "n_tasks": len(markers)}
        if check is not None:
            res["correct"] = bool(check(out))
        loops = [1e6 * m["loop_s"] / m["rows"] for m in markers.values() if m["rows"]]
        res["loop_us_per_row"] = statistics.median(loops) if loops else None
        if markers:
            res["makespan_s"] = (max(m["ended"] for m in markers.values())
                                 - min(m["started"] for m in markers.values()))
        wait_idle()
        return res
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def run_bare_array(ctx: harness.Context, tag: str, n_tasks: int, slots: int) -> Dict[str, Any]:
    """``qsub -t 1-T`` whose tasks touch a file, from the call until every file exists."""
    parent = ctx.scratch(tag)
    try:
        pe = ["-pe", "smp", str(slots)] if slots > 1 else []
        t0 = time.perf_counter()
        subprocess.run(["qsub", "-terse", "-t", f"1-{n_tasks}", *pe, "-o", "/dev/null", "-j", "y", "-b", "y",
                        "-N", tag, "touch", f"{parent}/t$SGE_TASK_ID"],
                       capture_output=True, text=True, check=True)
        t1 = time.perf_counter()
        files = [parent / f"t{i}" for i in range(1, n_tasks + 1)]
        while not all(p.exists() for p in files):
            time.sleep(0.05)
            if time.perf_counter() - t0 > 300:
                raise RuntimeError("the bare array job did not finish within 300 s")
        t2 = time.perf_counter()
        wait_idle()
        return {"submit_s": t1 - t0, "end_to_end_s": t2 - t0}
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def summarize(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    keys = sorted({k for r in runs for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    out: Dict[str, Any] = {"n": len(runs)}
    for k in keys:
        values = [r[k] for r in runs if isinstance(r.get(k), (int, float))]
        if values:
            out[k] = statistics.median(values)
    return out


def measure(reps: int, contenders: Dict[str, Callable[[], Dict[str, Any]]]) -> Dict[str, Any]:
    runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name in contenders}
    for rep in range(reps):
        for name, fn in contenders.items():
            log(f"  rep {rep + 1}/{reps}: {name}")
            runs[name].append(fn())
    return {name: {"runs": rs, "summary": summarize(rs)} for name, rs in runs.items()}


def w1(ctx: harness.Context, n: int, reps: int) -> Dict[str, Any]:
    df = workloads.tiny_table(n)

    def check(table: Any) -> bool:
        return bool((table["result"].to_numpy() == 2 * table["a"].to_numpy()).all())

    return measure(reps, {
        SA: lambda: run_slurm_apply(ctx, "w1", workloads.add, df, nodes=2, cpus_per_node=1, check=check),
        BARE: lambda: run_bare_array(ctx, "w1b", 2, 1),
        POOL: lambda: harness.run_pool(workloads.add, df, 2),
    })


def w2(ctx: harness.Context, reps: int) -> Dict[str, Any]:
    df = workloads.skewed_table()
    ideal = max(workloads.SKEW_LONG_S, workloads.skew_work_s() / 4)  # 2 tasks x 2 slots

    def sa() -> Dict[str, Any]:
        res = run_slurm_apply(ctx, "w2", workloads.skewed, df, nodes=2, cpus_per_node=2)
        res["ideal_s"] = ideal
        res["makespan_over_ideal"] = res["makespan_s"] / ideal
        return res

    def pool() -> Dict[str, Any]:
        res = harness.run_pool_makespan(workloads.skewed, df, 4)
        res["makespan_over_ideal"] = res["makespan_s"] / ideal
        return res

    return measure(reps, {SA: sa, BARE: lambda: run_bare_array(ctx, "w2b", 2, 2), POOL: pool})


def _f(v: Any, fmt: str = "{:.3f}") -> str:
    return fmt.format(v) if isinstance(v, (int, float)) else "-"


def table(res: Dict[str, Any]) -> str:
    lines = ["| workload | figure | slurm_apply (sge) | bare qsub array | process pool |",
             "|---|---|---|---|---|"]
    for name, w in res["workloads"].items():
        s = {k: v["summary"] for k, v in w.items()}
        lines.append(f"| {name} | end to end (s) | {_f(s[SA].get('end_to_end_s'))} | "
                     f"{_f(s[BARE].get('end_to_end_s'))} | {_f(s[POOL].get('end_to_end_s'))} |")
        lines.append(f"| {name} | submit (s) | {_f(s[SA].get('submit_s'))} | {_f(s[BARE].get('submit_s'))} | - |")
        if name.startswith("W1"):
            lines.append(f"| {name} | loop µs/row (median task) | {_f(s[SA].get('loop_us_per_row'), '{:.2f}')} "
                         "| - | - |")
        else:
            lines.append(f"| {name} | makespan / ideal | {_f(s[SA].get('makespan_over_ideal'), '{:.2f}')} | - | "
                         f"{_f(s[POOL].get('makespan_over_ideal'), '{:.2f}')} |")
    return "\n".join(lines)


def main(quick: bool, reps: Optional[int], out: Path) -> int:
    missing = sgebed.sge_packages_missing()
    if missing:
        log(f"Grid Engine is not installed (missing {', '.join(missing)}); {sgebed.INSTALL_HINT}")
        return 2
    reps = reps or (1 if quick else 3)
    sizes = [100_000] if quick else [100_000, 1_000_000]
    root = Path(tempfile.mkdtemp(prefix="bench-sge-"))
    os.chmod(root, 0o755)
    cell = sgebed.SgeCell(root / "cell", slots=4)
    t0 = time.time()
    log(f"starting a private Grid Engine cell in {root}")
    cell.start()
    try:
        os.environ.update(cell.env())
        jobs = root / "jobs"
        jobs.mkdir()
        os.chmod(jobs, 0o755)
        ctx = harness.Context(jobs, root)
        res: Dict[str, Any] = {"scheduler": "sge (Son of Grid Engine 8.1.9, private cell, 4 slots)",
                               "reps": reps, "quick": quick, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                               "machine": f"{os.cpu_count()} CPUs", "workloads": {}}
        for n in sizes:
            log(f"W1 n={n:g}")
            res["workloads"][f"W1 n={n:g}"] = w1(ctx, n, reps)
        log("W2")
        res["workloads"]["W2"] = w2(ctx, reps)
    finally:
        cell.stop()
        shutil.rmtree(root, ignore_errors=True)
    res["wall_s"] = time.time() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str))
    text = table(res)
    out.with_suffix(".md").write_text(text + "\n")
    print(text)
    log(f"done in {res['wall_s']:.0f} s; {out}")
    return 0
