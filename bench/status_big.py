"""`slurm-apply status` on a finished job of 1,000,000 rows, timed from a fresh process.

    python bench/status_big.py --pythonpath /work/wt/before --pythonpath /work/main
    python bench/status_big.py --pythonpath DIR --rows 100000 --repeat 5

For every checkout (a directory holding ``slurm_apply/``, put first on PYTHONPATH) it builds two
finished jobs with the local backend, ``f(x)`` over ``pd.DataFrame({"x": range(N)})``:
  dict          f returns {"y": x * 0.5, "z": float(x)}
  unimportable  f returns an instance of a class from a module that is on PYTHONPATH while the
                job runs but not when status runs (does status need to unpickle the values?)
then runs ``python -m slurm_apply status DIR`` in a fresh process ``--repeat`` times, interleaved
across checkouts, and reports each run's wall time, peak RSS (``os.wait4``; it includes any child
the command waited for), exit code and first lines of output. The interpreter's own baselines
(``python -c pass`` and ``python -c "import pandas"``) are measured the same way; "MB over bare"
is peak RSS minus that of ``python -c pass``. The table is printed; the figures go to
bench/results/status_big-<time>.json. Only public API is used (slurm_apply(), SlurmJob.wait(),
the CLI), so any checkout can be measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

HERE = Path(__file__).resolve().parent
VARIANTS = ("dict", "unimportable")
PAYLOAD_MODULE = "status_big_payload"  # importable only while the job runs
PAYLOAD_SOURCE = (
    "class Point:\n"
    "    def __init__(self, y, z):\n"
    "        self.y, self.z = y, z\n"
)


def env_with(pythonpath: List[str]) -> Dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}


def measure(cmd: List[str], env: Dict[str, str], cwd: Path) -> Dict[str, Any]:
    """Run ``cmd`` to its end: wall seconds, the child's peak RSS, exit code, output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
                "exit": proc.returncode, "stdout": out.read().decode(errors="replace"),
                "stderr": err.read().decode(errors="replace")}


# -- building a finished job (runs in a child process, with the checkout first on PYTHONPATH) -----


def row_function(variant: str) -> Any:
    if variant == "dict":
        def f(x):
            return {"y": x * 0.5, "z": float(x)}
        return f
    from status_big_payload import Point  # travels by reference: the nodes import the module

    def g(x):
        return Point(x * 0.5, float(x))
    return g


def build_here(variant: str, rows: int, job_dir: Path) -> None:
    """The --build mode: make the job, wait for it, print one JSON line."""
    import pandas as pd
    import slurm_apply
    from slurm_apply import slurm_apply as apply_rows

    jobname = f"status_big_{variant}"
    df = pd.DataFrame({"x": range(rows)})
    t0 = time.perf_counter()
    job = apply_rows(row_function(variant), df, nodes=2, cpus_per_node=1, backend="local",
                     seed=False, jobname=jobname, job_dir=job_dir)
    t1 = time.perf_counter()
    job.wait()
    t2 = time.perf_counter()
    print(json.dumps({"slurm_apply_file": slurm_apply.__file__, "submit_s": t1 - t0,
                      "wait_s": t2 - t1, "job_dir": str(job_dir / f"_rslurm_{jobname}")}))


def build_job(checkout: Path, variant: str, rows: int, scratch: Path) -> Dict[str, Any]:
    """A finished job of ``variant`` made with ``checkout``, in a fresh directory under scratch."""
    where = Path(tempfile.mkdtemp(prefix=f"{variant}-", dir=scratch))
    path = [str(checkout)]
    if variant == "unimportable":
        mod_dir = where / "payload_module"
        mod_dir.mkdir()
        (mod_dir / f"{PAYLOAD_MODULE}.py").write_text(PAYLOAD_SOURCE)
        path.append(str(mod_dir))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--build", variant, "--rows", str(rows),
           "--job-dir", str(where)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env_with(path), cwd=where, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building {variant} with {checkout} failed:\n{proc.stderr[-3000:]}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    if not Path(info["slurm_apply_file"]).is_relative_to(checkout):
        raise RuntimeError(f"the build imported {info['slurm_apply_file']}, not {checkout}")
    return {**info, "build_total_s": time.perf_counter() - t0}


# -- measuring -----------------------------------------------------------------------------------


def first_lines(run: Dict[str, Any], n: int = 8) -> List[str]:
    err = run["stderr"].splitlines()
    err = err if len(err) <= n else err[:2] + ["..."] + err[-(n - 2):]  # a traceback's end says why
    return run["stdout"].splitlines()[:n] + [f"stderr: {line}" for line in err]


def baselines(repeat: int, scratch: Path) -> Dict[str, Dict[str, Any]]:
    out = {}
    for name, code in (("python -c pass", "pass"), ("python -c 'import pandas'", "import pandas")):
        runs = [measure([sys.executable, "-c", code], env_with([]), scratch) for _ in range(repeat)]
        out[name] = {"runs": [{k: r[k] for k in ("wall_s", "peak_rss_mb", "exit")} for r in runs]}
    return out


def status_runs(jobs: Dict[str, Dict[str, Any]], repeat: int, scratch: Path) -> Dict[str, List]:
    """``python -m slurm_apply status DIR`` for every job, ``repeat`` rounds, interleaved."""
    runs: Dict[str, List[Dict[str, Any]]] = {key: [] for key in jobs}
    for _ in range(repeat):
        for key, job in jobs.items():
            cmd = [sys.executable, "-m", "slurm_apply", "status", job["job_dir"]]
            r = measure(cmd, env_with([job["checkout"]]), scratch)
            r["first_lines"] = first_lines(r)
            runs[key].append(r)
    return runs


def report(base: Dict[str, Any], jobs: Dict[str, Any], runs: Dict[str, List]) -> None:
    bare_mb = min(r["peak_rss_mb"] for r in base["python -c pass"]["runs"])
    print(f"\n{'what':58} {'wall s':>7} {'peak MB':>8} {'MB over bare':>12} {'exit':>4}")
    for name, b in base.items():
        for r in b["runs"]:
            print(f"{name:58} {r['wall_s']:7.3f} {r['peak_rss_mb']:8.1f} "
                  f"{r['peak_rss_mb'] - bare_mb:12.1f} {r['exit']:4}")
    for key, rs in runs.items():
        for r in rs:
            print(f"{'status ' + key:58} {r['wall_s']:7.3f} {r['peak_rss_mb']:8.1f} "
                  f"{r['peak_rss_mb'] - bare_mb:12.1f} {r['exit']:4}")
    for key, rs in runs.items():
        j = jobs[key]
        print(f"\n== {key}: built in {j['build_total_s']:.1f} s (submit {j['submit_s']:.1f} s, "
              f"wait {j['wait_s']:.1f} s); first run's output:")
        shown = [rs[0]] + [r for r in rs[1:] if r["exit"] != rs[0]["exit"]]
        for r in shown:
            print("   " + "\n   ".join(r["first_lines"]))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pythonpath", action="append", type=Path, metavar="DIR",
                   help="a checkout to measure (repeat the option for several)")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3, help="status runs per job")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    p.add_argument("--build", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--job-dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if not args.build and not args.pythonpath:
        p.error("give at least one --pythonpath DIR")
    return args


def main() -> None:
    args = parse_args()
    if args.build:
        return build_here(args.build, args.rows, args.job_dir)
    checkouts = [d.resolve() for d in args.pythonpath]
    load_before = os.getloadavg()
    scratch = Path(tempfile.mkdtemp(prefix="status_big-"))
    try:
        jobs: Dict[str, Dict[str, Any]] = {}
        failed: Dict[str, str] = {}
        for checkout in checkouts:
            for variant in args.variants.split(","):
                print(f"building {variant} ({args.rows:,} rows) with {checkout}", file=sys.stderr)
                key = f"{variant} @ {checkout}"
                try:
                    jobs[key] = {"checkout": str(checkout), "variant": variant,
                                 **build_job(checkout, variant, args.rows, scratch)}
                except RuntimeError as exc:  # one broken checkout must not lose the others' figures
                    print(exc, file=sys.stderr)
                    failed[key] = str(exc)
        base = baselines(args.repeat, scratch)
        runs = status_runs(jobs, args.repeat, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(base, jobs, runs)
    load = {"before": load_before, "after": os.getloadavg(), "cpus": os.cpu_count()}
    for key in failed:
        print(f"\n== {key}: the job could not be built (see above); no status figures")
    print(f"\nload average (1, 5, 15 min) before {load_before}, after {load['after']}")
    results = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": args.rows, "load": load,
               "python": sys.version, "checkouts": [str(c) for c in checkouts],
               "baselines": base, "jobs": jobs, "build_failed": failed, "status_runs": runs}
    out = HERE / "results" / f"status_big-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"figures: {out}")


if __name__ == "__main__":
    main()
