"""What per-row seeding costs in a task's row loop (issue 17), without a cluster:

    python bench/seeding.py                    # 100,000 rows, 5 repetitions, best of them
    python bench/seeding.py --rows 20000 --reps 3

Each repetition runs the same trivial row (``a + b``) as one task with one process on the local
backend (the array script Slurm would run, on this machine), once per variant, interleaved:

- ``unseeded``: ``seed=False``;
- ``seeded``: the default (every row seeded from the job's seed and its index);
- ``seeded, numpy.random loaded``: the default, with ``pkgs=["numpy.random"]``, as when f's
  module imports pandas (or NumPy 1.x): NumPy's global generator is then seeded every row too.
  (``import numpy`` alone does not load numpy.random on NumPy 2.)

Figures, from the task's end marker (the task's own clocks): the row loop's µs per row
(``loop_s / rows``), the ratio to ``unseeded``, and the time from the task's start to its first row.
Then the floors: what the seeding calls alone cost in this interpreter (``timeit`` in CPU time,
best of 5), the public ones and the C-level ones underneath them.

Each figure is the best (the lowest) of the repetitions: the machine this was written on is
shared, and the best run is the one least slowed by other work. The medians are printed too.

The library is whatever ``import slurm_apply`` finds (set PYTHONPATH to compare two checkouts),
in the tasks too, provided the working directory holds no ``slurm_apply``: a task runs
``python -m slurm_apply._node`` in the caller's working directory, which comes first on its path.
So, to compare: ``cd /tmp && PYTHONPATH=/path/to/checkout python /path/to/bench/seeding.py``.
The machine's load matters: run it on a quiet machine, or read the figures as ratios.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any, Dict, List

VARIANTS = {
    "unseeded": {"seed": False},
    "seeded": {},
    "seeded, numpy.random loaded": {"pkgs": ["numpy.random"]},
}


def add(a, b):
    return a + b


def one_run(parent: Path, name: str, df: Any, options: Dict[str, Any]) -> Dict[str, float]:
    from slurm_apply import slurm_apply
    from slurm_apply._store import markers

    job = slurm_apply(add, df, backend="local", nodes=1, cpus_per_node=1, job_dir=parent,
                      jobname=name, **options)
    job.wait(progress=False)
    out = job.get_output(outtype="raw")
    assert len(out) == len(df), (len(out), len(df))
    (m,) = [mk.end.to_json() for mk in markers.read(job.job_dir, 0).values() if mk.end]
    return {"us_per_row": 1e6 * m["loop_s"] / m["rows"],
            "first_row_s": m["first_row_at"] - m["started"]}


def floors(number: int = 100_000) -> Dict[str, float]:
    """µs per call of each seeding step alone, best of 5."""
    import _random
    import random

    env: Dict[str, Any] = {"random": random, "inst": random._inst, "cseed": _random.Random.seed,
                           "s": 2891336453}
    stmts = {
        "random.seed(s)": "random.seed(s)",
        "_random.Random.seed(inst, s); inst.gauss_next = None": "cseed(inst, s); inst.gauss_next = None",
    }
    try:
        import numpy as np
    except ImportError:
        pass
    else:
        env.update(np=np, rs=np.random.mtrand._rand)
        stmts["numpy.random.seed(s)"] = "np.random.seed(s)"
        stmts["numpy.random.mtrand._rand.seed(s)"] = "rs.seed(s)"
    from slurm_apply._node import rows

    env["row_seed"] = rows.row_seed
    stmts["row_seed(seed, row)"] = "row_seed(12345, 678)"
    try:
        from slurm_apply._node.seeding import row_seeds
    except ImportError:  # before issue 17's change
        pass
    else:
        env.update(row_seeds=row_seeds, chunk=list(range(1000)))
        stmts["row_seeds(seed, rows) / 1000 (a chunk of 1000 rows)"] = "row_seeds(12345, chunk)"
    out = {label: 1e6 * min(timeit.repeat(stmt, timer=time.process_time, globals=env,
                                          number=number, repeat=5)) / number
           for label, stmt in stmts.items() if not stmt.startswith("row_seeds")}
    for label, stmt in stmts.items():
        if stmt.startswith("row_seeds"):
            out[label] = 1e6 * min(timeit.repeat(stmt, timer=time.process_time, globals=env,
                                                 number=number // 1000, repeat=5)) / number
    return out


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)

    import pandas as pd

    import slurm_apply

    df = pd.DataFrame({"a": range(args.rows), "b": range(args.rows)})
    runs: Dict[str, List[Dict[str, float]]] = {v: [] for v in VARIANTS}
    parent = Path(tempfile.mkdtemp(prefix="seeding-"))
    try:
        for rep in range(args.reps):
            for i, (variant, options) in enumerate(VARIANTS.items()):
                runs[variant].append(one_run(parent, f"seed{rep}v{i}", df, options))
    finally:
        shutil.rmtree(parent, ignore_errors=True)

    print(f"slurm_apply {Path(slurm_apply.__file__).parent}, Python {sys.version.split()[0]}, "
          f"{args.rows} rows, {args.reps} repetitions: best (median)")
    base = min(r["us_per_row"] for r in runs["unseeded"])
    base_med = statistics.median(r["us_per_row"] for r in runs["unseeded"])
    print("| variant | loop µs/row | ratio to unseeded | first row after task start s |")
    print("|---|---|---|---|")
    for variant, rs in runs.items():
        us = [r["us_per_row"] for r in rs]
        first = [r["first_row_s"] for r in rs]
        print(f"| {variant} | {min(us):.2f} ({statistics.median(us):.2f}) | {min(us) / base:.2f} "
              f"({statistics.median(us) / base_med:.2f}) | {min(first):.3f} ({statistics.median(first):.3f}) |")
    print()
    print("| seeding step alone | µs per call |")
    print("|---|---|")
    for label, us in floors().items():
        print(f"| `{label}` | {us:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
