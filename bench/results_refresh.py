"""What reading a big finished job's records costs, each step in a fresh process.

    python bench/results_refresh.py build DIR [--rows 1000000]
    python bench/results_refresh.py measure DIR [--repeat 3]

``build`` runs ``f(x) = {"y": x * 0.5, "z": float(x)}`` over ``range(rows)`` with the local
backend (seed=False, nodes=2, cpus_per_node=1) into DIR/_rslurm_big. ``measure`` starts a fresh
interpreter for each of: NumPy imported only (the baseline), ``Results.refresh`` + ``counts``
(what status needs), and ``refresh`` + ``values()`` (what output needs), and prints the wall
time of the step (imports excluded) and the process's peak RSS (ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

STEP = r"""
import json, resource, sys, time
import numpy
from slurm_apply._status.results import Results, list_record_files
job, step = sys.argv[1], sys.argv[2]
manifest = json.load(open(job + "/manifest.json"))
t0 = time.perf_counter()
out = {}
if step != "baseline":
    res = Results(job, manifest["n_rows"])
    res.refresh(list_record_files(job, range(len(manifest["submissions"]))))
    out["counts"] = res.counts()
    if step == "values":
        values = res.values()
        out["sample"] = repr(values[12345])
out["wall_s"] = time.perf_counter() - t0
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def f(x):
    return {"y": x * 0.5, "z": float(x)}


def build(parent: Path, rows: int) -> None:
    import pandas as pd

    from slurm_apply import slurm_apply

    t0 = time.perf_counter()
    job = slurm_apply(f, pd.DataFrame({"x": range(rows)}), backend="local", seed=False, nodes=2,
                      cpus_per_node=1, job_dir=parent, jobname="big", overwrite=True)
    status = job.wait(progress=False)
    print(f"{job.job_dir}: {status.state}, {status.rows_done} rows, "
          f"{time.perf_counter() - t0:.2f} s end to end")


def measure(parent: Path, repeat: int) -> None:
    job = str(parent / "_rslurm_big")
    recs = sorted((Path(job) / "s0" / "results").glob("*.rec"))
    print(f"record files: {len(recs)}, {sum(p.stat().st_size for p in recs) / 1e6:.1f} MB")
    for step in ("baseline", "status", "values"):
        runs = []
        for _ in range(repeat):
            out = subprocess.run([sys.executable, "-c", STEP, job, step], capture_output=True,
                                 text=True, check=True)
            runs.append(json.loads(out.stdout))
        best = min(runs, key=lambda r: r["wall_s"])
        print(f"{step:9s} wall {best['wall_s']:.3f} s (of {[round(r['wall_s'], 3) for r in runs]}), "
              f"peak RSS {best['peak_rss_mb']:.0f} MB  {best.get('counts', '')} {best.get('sample', '')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("build", "measure"))
    ap.add_argument("dir", type=Path)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    build(args.dir, args.rows) if args.mode == "build" else measure(args.dir, args.repeat)


if __name__ == "__main__":
    main()
