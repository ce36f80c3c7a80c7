"""Big jobs stay cheap, part 2 (issue 12): status, claims and errors at scale, each figure beside
a baseline measured in the same run.

    python bench/scale2.py                    # S1, S2, S4 here (local backend): about 6 minutes
    python bench/scale2.py --only S2,S4       # a subset
    python bench/scale2.py --rows 1000000     # a smaller S1
    python bench/scale2.py --cluster          # S1 and S4 on the private Slurm cluster

S1  10,000,000 rows of ``f(x) = {"a": x * 0.5, "b": x + 0.25}``, nodes=4, cpus_per_node=2,
    seed=False: submit, wait, collect (bench/scale_steps.py's s1_run), get_output() and its
    peak RSS in a fresh process (s1_collect), then ``slurm-apply status DIR`` from fresh
    processes (wall, peak RSS by wait4) beside ``python -c pass``, ``python -c "import numpy"``
    (the floor: status needs NumPy) and the same status by the code before this work
    (c8f063e, main before it, or --before REF) on the same job built by that code.
S2  1,000,000 rows over 500 array tasks of one process each (local backend: the test cluster's
    MaxArraySize is 1001, but its 6 CPUs on 2 cores would take long to start 500 tasks). From
    the tasks' end markers: time spent claiming per task as a fraction of its wall (claim_s, the
    creates and listings its processes made), against the old scheme (every process tries every
    chunk), projected from the cost of one O_EXCL create measured on the same file system; files
    and bytes in the job directory; the handle's scheduler queries while waiting.
S4  f raises on every row of 1,000,000 (its message carries time.time()), nodes=4,
    cpus_per_node=2, max_failures=100: from the 100th error (the 100th smallest time in the
    messages) to the last row that raised and to the last task's end; the job directory's size,
    split into the inputs written before any row ran and what the run wrote. Baselines: the same
    job without max_failures (it runs to the end), by this code and by the code before.

Steps that measure a process run in a fresh interpreter (``--step NAME JSON``), one at a time,
with copies of the libraries taken at the start. Results: bench/results/scale2-<time>.json and
the table, with PASS/FAIL against the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from scale import log, render  # noqa: E402

MB = 2**20
BEFORE = "c8f063e"  # main before issue 12 (big jobs): the baseline of "the code before"
INPUTS = ("params.pkl", "params_meta.pkl", "index.pkl", "payload.pkl", "payload.buffers", "params.bin",
          "manifest.json")


# -- steps: each runs in a fresh interpreter --------------------------------------------------------


def trivial(x):
    return x


def raise_with_time(x):
    import time

    raise ValueError(f"row {x} at {time.time():.6f}")


def s2_run(jobs: str, rows: int, tasks: int, backend: str) -> Dict[str, Any]:
    import pandas as pd

    from slurm_apply import slurm_apply

    t0 = time.perf_counter()
    job = slurm_apply(trivial, pd.DataFrame({"x": range(rows)}), backend=backend, nodes=tasks,
                      cpus_per_node=1, seed=False, jobname="s2", job_dir=jobs)
    t1 = time.perf_counter()
    st = job.wait(progress=False, max_poll_s=1.0)
    t2 = time.perf_counter()
    assert st.completed, str(st)
    sub = job.manifest.submissions[0]
    per_task = []
    for t in range(sub.n_tasks):
        m = json.loads((job.job_dir / "s0" / "tasks" / f"t{t:04d}.done").read_text())
        procs = m["procs"]
        per_task.append({"wall_s": m["ended"] - m["started"],
                         "claim_s": sum(p["claim_s"] for p in procs),
                         "creates": sum(p["claim_creates"] for p in procs),
                         "listings": sum(p["claim_listings"] for p in procs)})
    return {"submit_s": t1 - t0, "wait_s": t2 - t1, "n_tasks": sub.n_tasks, "n_chunks": sub.n_chunks,
            "scheduler_queries": job.scheduler_queries, "tasks": per_task,
            "files": tree_size(job.job_dir), "create_s": create_cost(Path(jobs))}


def s4_run(jobs: str, rows: int, backend: str, max_failures: Optional[int]) -> Dict[str, Any]:
    import pandas as pd

    from slurm_apply import slurm_apply

    kw = {"max_failures": max_failures} if max_failures else {}
    t0 = time.perf_counter()
    job = slurm_apply(raise_with_time, pd.DataFrame({"x": range(rows)}), backend=backend, nodes=4,
                      cpus_per_node=2, seed=False, jobname=f"s4_{max_failures or 'all'}",
                      job_dir=jobs, slurm_options={"time": "30:00"} if backend == "slurm" else None,
                      **kw)
    st = job.wait(progress=False)
    wall = time.perf_counter() - t0
    out: Dict[str, Any] = {"wall_s": wall, "rows_failed": st.rows_failed,
                           "rows_missing": st.rows_missing, "state": st.state,
                           "notes": st.notes, "files": tree_size(job.job_dir)}
    ends = [json.loads(p.read_text())["ended"] for p in (job.job_dir / "s0" / "tasks").glob("*.done")]
    out["last_task_end"] = max(ends)
    if max_failures:  # few errors: read them all, each with the time it was raised at
        times = sorted(float(m.rsplit(" at ", 1)[1]) for _, m, _ in job.get_errors().values())
        out.update(t_limit=times[max_failures - 1], t_last_error=times[-1])
    return out


def tree_size(root: Path) -> Dict[str, Any]:
    """Files and bytes under a job directory: inputs (written before any row ran) and the rest."""
    files = [p for p in Path(root).rglob("*") if p.is_file()]
    inputs = [p for p in files if p.name in INPUTS or p.name.startswith("submit")]
    by_dir: Dict[str, List[int]] = {}
    for p in files:
        top = p.relative_to(root).parts
        key = "/".join(top[:2]) if top[0].startswith("s") and len(top) > 2 else top[0]
        by_dir.setdefault(key, [0, 0])
        by_dir[key][0] += 1
        by_dir[key][1] += p.stat().st_size
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files),
            "input_bytes": sum(p.stat().st_size for p in inputs), "by_dir": by_dir}


def create_cost(where: Path, n: int = 2000) -> float:
    """Seconds per O_EXCL create (and write) of a claim-sized file on this file system."""
    d = Path(tempfile.mkdtemp(dir=where))
    t0 = time.perf_counter()
    for i in range(n):
        fd = os.open(d / f"c{i:06d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"3.1")
        os.close(fd)
    out = (time.perf_counter() - t0) / n
    shutil.rmtree(d)
    return out


STEPS = {f.__name__: f for f in (s2_run, s4_run)}


# -- the driver -----------------------------------------------------------------------------------


def step(name: str, lib: Path, **kwargs: Any) -> Dict[str, Any]:
    """A step of this file, or of scale_steps.py (``scale:NAME``), with ``lib`` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(lib)}
    if name.startswith("scale:"):
        cmd = [sys.executable, str(HERE / "scale_steps.py"), name[6:], json.dumps(kwargs)]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--step", name, json.dumps(kwargs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"step {name} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(cmd: List[str], lib: Optional[Path]) -> Dict[str, Any]:
    """A command from a fresh process: wall, peak RSS (wait4), exit code, first lines."""
    env = {**os.environ, "PYTHONPATH": str(lib) if lib else ""}
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        out.seek(0)
        return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024,
                "exit": os.waitstatus_to_exitcode(status),
                "head": out.read().decode(errors="replace").splitlines()[:6]}


def s1(root: Path, libs: Dict[str, Path], rows: int, backend: str, reps: int) -> Dict[str, Any]:
    out: Dict[str, Any] = {"status": {}}
    for who, lib in libs.items():
        jobs = root / f"s1-{who}"
        jobs.mkdir()
        log(f"S1 ({who}): {rows:,} rows end to end")
        run = step("scale:s1_run", lib, jobs=str(jobs), rows=rows, backend=backend)
        if who == "now":
            out["run"] = run
            out["collect"] = [step("scale:s1_collect", lib, job_dir=run["job_dir"], by_column=True)
                              for _ in range(reps)]
        out.setdefault("job_dirs", {})[who] = run["job_dir"]
    log("S1: slurm-apply status from fresh processes, interleaved with the floors")
    floors = {"python -c pass": [sys.executable, "-c", "pass"],
              "python -c 'import numpy'": [sys.executable, "-c", "import numpy"]}
    for _ in range(reps):
        for name, cmd in floors.items():
            out["status"].setdefault(name, []).append(measure(cmd, None))
        for who, lib in libs.items():
            cmd = [sys.executable, "-m", "slurm_apply", "status", out["job_dirs"][who]]
            out["status"].setdefault(f"status ({who})", []).append(measure(cmd, lib))
    for d in out["job_dirs"].values():
        shutil.rmtree(d, ignore_errors=True)
    return out


def s2(root: Path, libs: Dict[str, Path], rows: int, tasks: int) -> Dict[str, Any]:
    jobs = root / "s2"
    jobs.mkdir()
    log(f"S2: {rows:,} rows over {tasks} tasks (local backend)")
    return step("s2_run", libs["now"], jobs=str(jobs), rows=rows, tasks=tasks, backend="local")


def s4(root: Path, libs: Dict[str, Path], rows: int, backend: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for who, limit in (("now", 100), ("now", None), ("before", None)):
        if who not in libs:
            continue
        jobs = root / f"s4-{who}-{limit}"
        jobs.mkdir()
        log(f"S4 ({who}): f raises on all {rows:,} rows, max_failures={limit}")
        out[f"{who} max_failures={limit}"] = step("s4_run", libs[who], jobs=str(jobs), rows=rows,
                                                  backend=backend, max_failures=limit)
        shutil.rmtree(jobs, ignore_errors=True)
    return out


class Table:
    """Rows of [workload, figure, value, baseline, baseline is, ratio, target, PASS/FAIL]."""

    def __init__(self) -> None:
        self.rows: List[List[Any]] = []

    def add(self, work: str, fig: str, value: float, base: Optional[float] = None,
            base_name: str = "", target: Optional[float] = None) -> None:
        ratio = value / base if base else None
        ok = "" if target is None else ("PASS" if value < target else "FAIL")
        self.rows.append([work, fig, value, base, base_name, ratio, target, ok])


def _med(runs: List[Dict[str, Any]], key: str) -> float:
    return statistics.median(x[key] for x in runs)


def s1_rows(t: Table, r: Dict[str, Any]) -> None:
    run, st = r["run"], r["status"]
    t.add("S1", "submit s", run["submit_s"])
    t.add("S1", "end to end s (submit, wait, get_output)", run["end_to_end_s"])
    t.add("S1", "get_output() s, fresh process", _med(r["collect"], "collect_s"))
    t.add("S1", "get_output(): peak RSS of that process MB", _med(r["collect"], "peak_rss_kb") / 1024)
    floor = st["python -c 'import numpy'"]
    for who in ("now", "before"):
        if f"status ({who})" in st:
            runs = st[f"status ({who})"]
            t.add("S1", f"`slurm-apply status` s ({who})", _med(runs, "wall_s"),
                  _med(floor, "wall_s"), "python -c 'import numpy' s", 0.3 if who == "now" else None)
            t.add("S1", f"`slurm-apply status` peak RSS MB ({who})", _med(runs, "peak_rss_mb"),
                  _med(floor, "peak_rss_mb"), "python -c 'import numpy' MB",
                  150 if who == "now" else None)
    if "status (before)" in st:
        t.add("S1", "status s: now / before", _med(st["status (now)"], "wall_s"),
              _med(st["status (before)"], "wall_s"), "status s (before)")


def s2_rows(t: Table, r: Dict[str, Any]) -> None:
    frac = [x["claim_s"] / x["wall_s"] for x in r["tasks"]]
    total = sum(x["claim_s"] for x in r["tasks"]) / sum(x["wall_s"] for x in r["tasks"])
    old = r["n_chunks"] * r["create_s"]  # per process, trying every chunk
    wall = statistics.median(x["wall_s"] for x in r["tasks"])
    t.add("S2", "claiming / task wall, median task", statistics.median(frac), old / wall,
          "old scheme, projected", 0.01)
    t.add("S2", "tasks claiming under 1% of their wall", sum(f < 0.01 for f in frac),
          r["n_tasks"], "tasks")
    t.add("S2", "claiming / task wall, worst task", max(frac))
    t.add("S2", "claiming / task wall, all tasks together", total)
    t.add("S2", f"O_EXCL creates in all ({r['n_chunks']} chunks)",
          sum(x["creates"] for x in r["tasks"]), r["n_chunks"] * r["n_tasks"],
          "old scheme: processes x chunks")
    t.add("S2", "directory listings in all", sum(x["listings"] for x in r["tasks"]))
    t.add("S2", "one create on this file system ms", r["create_s"] * 1000)
    f = r["files"]
    t.add("S2", "files in the job directory", f["files"], r["n_tasks"], "tasks")
    t.add("S2", "bytes in the job directory MB", f["bytes"] / MB, f["input_bytes"] / MB, "inputs MB")
    t.add("S2", "scheduler queries while waiting", r["scheduler_queries"], r["wait_s"], "wait s")


def s4_rows(t: Table, r: Dict[str, Any]) -> None:
    stop, base = r["now max_failures=100"], r["now max_failures=None"]
    t.add("S4", "100th error to the last row raised s", stop["t_last_error"] - stop["t_limit"],
          target=5.0)
    t.add("S4", "100th error to the last task's end s", stop["last_task_end"] - stop["t_limit"],
          target=5.0)
    t.add("S4", "rows that raised (limit 100)", stop["rows_failed"])
    for name, run in r.items():
        t.add("S4", f"wall s ({name})", run["wall_s"], base["wall_s"], "wall s, no limit")
        t.add("S4", f"job directory MB ({name})", run["files"]["bytes"] / MB,
              base["files"]["bytes"] / MB, "no limit MB", 10.0 if "=100" in name else None)
        t.add("S4", f"written by the run MB ({name})",
              (run["files"]["bytes"] - run["files"]["input_bytes"]) / MB)


def table(res: Dict[str, Any]) -> List[List[Any]]:
    t = Table()
    for name, rows in (("S1", s1_rows), ("S2", s2_rows), ("S4", s4_rows)):
        if name in res["workloads"]:
            rows(t, res["workloads"][name])
    return t.rows


def libraries(root: Path, before: str) -> Dict[str, Path]:
    """Copies of this checkout's slurm_apply and of ``before``'s (unless "none")."""
    libs = {"now": root / "lib"}
    shutil.copytree(REPO / "slurm_apply", libs["now"] / "slurm_apply",
                    ignore=shutil.ignore_patterns("__pycache__"))
    if before != "none":
        libs["before"] = root / "before"
        libs["before"].mkdir()
        subprocess.run(f"git -C {REPO} archive {before} slurm_apply | tar -x -C {libs['before']}",
                       shell=True, check=True)
    return libs


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--only", default="S1,S2,S4", help="comma-separated subset of S1,S2,S4")
    ap.add_argument("--rows", type=int, default=10_000_000, help="S1's rows")
    ap.add_argument("--s2-rows", type=int, default=1_000_000)
    ap.add_argument("--s2-tasks", type=int, default=500)
    ap.add_argument("--s4-rows", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=5, help="repetitions of the status runs")
    ap.add_argument("--before", default=BEFORE, help="git ref of the code before (default: "
                    f"{BEFORE}, main before issue 12's work); 'none' skips the before baselines")
    ap.add_argument("--cluster", action="store_true", help="S1 and S4 on tests/testbed.py's cluster")
    ap.add_argument("--step", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.step:
        print(json.dumps(STEPS[args.step[0]](**json.loads(args.step[1]))))
        return 0
    only = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    root = Path(tempfile.mkdtemp(prefix="sas2-", dir="/tmp"))
    os.chmod(root, 0o755)
    git = lambda *a: subprocess.run(["git", "-C", str(REPO), *a], capture_output=True,  # noqa: E731
                                    text=True, check=True).stdout.strip()
    before = args.before
    libs = libraries(root, before)
    res: Dict[str, Any] = {"meta": {
        "command": " ".join(["python bench/scale2.py", *(sys.argv[1:] if argv is None else argv)]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": git("rev-parse", "--short", "HEAD"),
        "before": before, "cores": os.cpu_count(), "load_average_start": os.getloadavg()},
        "workloads": {}}
    backend, cluster = ("slurm" if args.cluster else "local"), None
    try:
        if args.cluster:
            sys.path.insert(0, str(REPO / "tests"))
            import testbed

            cluster = testbed.SlurmCluster(root / "c", nodes=3, cpus_per_node=2, accounting=False,
                                           name="scale2")
            log(f"starting a private Slurm cluster under {root}")
            cluster.start()
            os.environ.update(cluster.env())
        os.chdir(root)
        for name, run in (("S1", lambda: s1(root, libs, args.rows, backend, args.reps)),
                          ("S2", lambda: s2(root, libs, args.s2_rows, args.s2_tasks)),
                          ("S4", lambda: s4(root, libs, args.s4_rows, backend))):
            if name in only:
                res["workloads"][name] = run()
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    res["meta"]["backend"] = backend
    res["meta"]["load_average_end"] = os.getloadavg()
    res["table"] = table(res)
    out = HERE / "results" / f"scale2-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    print(render(res["table"]))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
