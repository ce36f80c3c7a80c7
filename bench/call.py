"""How long the call takes (issue 17): ``slurm_apply()`` with ``f`` in a module that imports
pandas, over a 100,000-row table, first in a session and then again.

    python bench/call.py                 # 5 sessions x (1 first call + 5 more), medians
    python bench/call.py --sessions 3 --calls 3 --rows 10000

Each session is a fresh interpreter started in a scratch directory that holds the script and the
user's module (``callmod.py``: ``import pandas`` and ``def f(a, b)``), as a user's script beside
its module would be. It imports pandas, slurm_apply and the module, builds the table, then times
``slurm_apply(f, df, backend="local", submit=False)`` (everything but handing the script to the
scheduler, which takes about 7 ms with sbatch on the private cluster) N+1 times, each into a new
job directory, removed after the call, outside the timing. Figures:

- first call: the first call of each session (the pre-flight interpreter starts and imports
  pandas and the module during it), median over the sessions;
- later calls: the median of the session's later calls, then the median over the sessions;
- ``import pandas`` alone in a fresh interpreter (``python -X importtime`` is not used: it is
  timed from a subprocess, start-up included, minus a bare interpreter's start-up), so that the
  first call can be read against "the import time of the user's modules + 0.15 s";
- the same session with ``preflight=False``: the floor, what the rest of the call costs;
- where each call's time goes, step by step (the first call's, and the later calls' medians), as
  ``bench/run.py`` times W1's calls (``harness.CallBreakdown``).

The library is whatever ``import slurm_apply`` finds (set PYTHONPATH to compare two checkouts).
Results are printed and written to bench/results/call-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

MODULE = '''\
import pandas as pd  # the user's module imports pandas, as most do


def f(a, b):
    return a + b
'''

SESSION = '''\
import json, shutil, sys, time
import pandas as pd
from slurm_apply import slurm_apply
import callmod

rows, calls, preflight = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "on"
sys.path.append(sys.argv[4])  # bench/, for the call's steps (harness.CallBreakdown)
import harness

df = pd.DataFrame({"a": range(rows), "b": range(rows)})
times, steps = [], []
for i in range(calls):
    parts = harness.CallBreakdown()
    t0 = time.perf_counter()
    with parts:
        job = slurm_apply(callmod.f, df, backend="local", submit=False, jobname=f"call{i}",
                          preflight=preflight)
    times.append(time.perf_counter() - t0)
    steps.append(parts.figures(times[-1]))
    shutil.rmtree(job.job_dir)
print(json.dumps({"times": times, "steps": steps}))
'''


def _session(work: Path, rows: int, calls: int, preflight: bool) -> dict:
    proc = subprocess.run([sys.executable, str(work / "session.py"), str(rows), str(calls),
                           "on" if preflight else "off", str(HERE)], cwd=work, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"a session failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _step_medians(calls: list) -> dict:
    return {key: statistics.median(c[key] for c in calls) for key in calls[0]}


def _startup(code: str, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=5)
    ap.add_argument("--calls", type=int, default=5, help="calls after the first, per session")
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args()
    import slurm_apply

    with tempfile.TemporaryDirectory(prefix="sa-call-") as tmp:
        work = Path(tmp)
        (work / "callmod.py").write_text(MODULE)
        (work / "session.py").write_text(SESSION)
        first, later, floor = [], [], []
        first_steps, later_steps = [], []
        for _ in range(args.sessions):
            on = _session(work, args.rows, args.calls + 1, True)
            times = on["times"]
            first.append(times[0])
            later.append(statistics.median(times[1:]))
            first_steps.append(on["steps"][0])
            later_steps.append(_step_medians(on["steps"][1:]))
            off = _session(work, args.rows, args.calls + 1, False)
            floor.append(statistics.median(off["times"][1:]))
    bare = _startup("pass", args.sessions)
    pandas = _startup("import pandas", args.sessions) - bare
    out = {
        "library": os.path.dirname(slurm_apply.__file__),
        "python": sys.executable,
        "rows": args.rows,
        "sessions": args.sessions,
        "calls_after_first": args.calls,
        "first_call_s": statistics.median(first),
        "later_call_s": statistics.median(later),
        "preflight_off_s": statistics.median(floor),
        "import_pandas_s": pandas,
        "first_call_steps_s": _step_medians(first_steps),
        "later_call_steps_s": _step_medians(later_steps),
        "raw": {"first": first, "later": later, "preflight_off": floor},
    }
    print(textwrap.dedent(f"""\
        library {out['library']}, {args.rows:,} rows, {args.sessions} sessions x (1 + {args.calls}) calls, medians
        first call of a session          {out['first_call_s']:.3f} s   (import pandas alone: {pandas:.3f} s)
        later calls                      {out['later_call_s']:.3f} s
        preflight=False (the floor)      {out['preflight_off_s']:.3f} s"""))
    import harness

    print("\nwhere the call's time goes (s; submit=False, so no sbatch)      first call   later calls")
    for key, label in harness.CALL_FIGURES:
        print(f"  {label:<62} {out['first_call_steps_s'][key]:.4f}       {out['later_call_steps_s'][key]:.4f}")
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    path = results / time.strftime("call-%Y%m%dT%H%M%S.json")
    path.write_text(json.dumps(out, indent=2))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
