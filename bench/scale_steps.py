"""The measured steps of ``bench/scale.py``, each run in a fresh interpreter:

    python bench/scale_steps.py STEP '{"json": "arguments"}'

prints one JSON object (the step's figures) as its last line of output. A fresh process per step
makes each peak resident memory (``VmHWM`` of ``/proc/self/status``, the kernel's high-water mark
since exec) that step's own. The row functions are defined here, in ``__main__``, so they travel
by value and the nodes need not import this file.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict

S3_ROWS = 16  # every row reads a strided 1/16 of X: every page of X, in every process
S3_HOLD_S = 0.5  # then holds still, so the memory sampler sees mappings that are not changing


def mem_kb(field: str = "VmHWM") -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def big_array(gb: float) -> Any:
    import numpy as np

    return np.arange(int(gb * 2**30) // 8, dtype=np.float64)


def touch(i):
    """S3's row: reads every page of the shared X (a strided slice), returns its sum."""
    import time

    total = float(X[i::S3_ROWS].sum())  # noqa: F821 (X comes from add_objects)
    time.sleep(S3_HOLD_S)
    return total


def half(x):
    """S1's row: a dict of two floats."""
    return {"a": x * 0.5, "b": x + 0.25}


def save_baseline(where: str, gb: float) -> Dict[str, Any]:
    """The floor for writing the payload: numpy.save of the same array to the same file system,
    from a process like the caller's (pandas and slurm_apply imported)."""
    import numpy as np
    import pandas  # noqa: F401

    import slurm_apply  # noqa: F401

    X = big_array(gb)
    path = Path(where) / "baseline.npy"
    t0 = time.perf_counter()
    np.save(path, X)
    saved = time.perf_counter() - t0
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)  # what it takes until the array is on disk
    os.close(fd)
    out = {"save_s": saved, "save_fsync_s": time.perf_counter() - t0, "bytes": path.stat().st_size}
    path.unlink()
    return out


def s3_call(jobs: str, gb: float, backend: str, jobname: str, mem_mb: int = 0) -> Dict[str, Any]:
    """slurm_apply() with the array in add_objects, as a caller runs it (submission deferred so
    the benchmark can evict the buffers from the page cache first)."""
    import pandas as pd

    from slurm_apply import slurm_apply

    X = big_array(gb)
    before_kb = mem_kb("VmRSS")
    t0 = time.perf_counter()
    job = slurm_apply(touch, pd.DataFrame({"i": range(S3_ROWS)}), add_objects={"X": X},
                      backend=backend, nodes=4, cpus_per_node=2, submit=False, jobname=jobname,
                      job_dir=jobs, seed=False,
                      slurm_options={"time": "30:00", **({"mem": f"{mem_mb}M"} if mem_mb else {})})
    call_s = time.perf_counter() - t0
    for thread in threading.enumerate():  # the buffers' fsync, which runs on after the call
        if thread.name.startswith("slurm_apply fsync"):
            thread.join()
    return {"call_s": call_s, "durable_s": time.perf_counter() - t0,
            "rss_before_call_kb": before_kb, "peak_rss_kb": mem_kb(),
            "array_bytes": X.nbytes, "payload_bytes": job.manifest.payload_bytes,
            "job_dir": str(job.job_dir), "expected": [float(X[i::S3_ROWS].sum()) for i in range(S3_ROWS)]}


def launch(job_dir: str, all_at_once: bool) -> Dict[str, Any]:
    from slurm_apply._store import layout as jd
    from slurm_apply._launch import write as _submit

    if all_at_once:
        # The local backend runs as many tasks at once as the CPUs allow (1 here: 2 cores, 2
        # CPUs a task); told of 8 CPUs it runs all 4 at once, as 4 tasks would share one node.
        os.sched_getaffinity = lambda pid: set(range(8))
    t0 = time.perf_counter()
    sub = _submit.launch(Path(job_dir), jd.load_manifest(Path(job_dir)), 0)
    return {"launch_s": time.perf_counter() - t0, "job_id": sub.job_id}


def s3_finish(job_dir: str) -> Dict[str, Any]:
    from slurm_apply import SlurmJob

    job = SlurmJob.from_dir(job_dir)
    job.wait(progress=False)
    out = job.get_output()
    markers = {}
    for p in sorted((Path(job_dir) / "s0" / "tasks").glob("*.done")):
        m = json.loads(p.read_text())
        markers[p.stem] = {"node": m["node"], "payload_load_s": m["payload_loaded"] - m["started"],
                           "task_s": m["ended"] - m["started"], "rows": m["rows"]}
    return {"results": out["result"].tolist(), "tasks": markers}


def s1_run(jobs: str, rows: int, backend: str) -> Dict[str, Any]:
    """End to end, as a user runs it: the table in memory to the result table in memory."""
    import numpy as np
    import pandas as pd

    from slurm_apply import slurm_apply

    df = pd.DataFrame({"x": np.arange(rows, dtype=np.float64)})
    t0 = time.perf_counter()
    job = slurm_apply(half, df, backend=backend, nodes=4, cpus_per_node=2, jobname="s1",
                      job_dir=jobs, seed=False, slurm_options={"time": "30:00"})
    t1 = time.perf_counter()
    job.wait(progress=False)
    t2 = time.perf_counter()
    out = job.get_output()
    t3 = time.perf_counter()
    assert len(out) == rows and out["b"].iloc[-1] == rows - 1 + 0.25
    return {"submit_s": t1 - t0, "wait_s": t2 - t1, "collect_s": t3 - t2, "end_to_end_s": t3 - t0,
            "job_dir": str(job.job_dir)}


def s1_collect(job_dir: str, by_column: bool) -> Dict[str, Any]:
    """get_output() of a finished job in a fresh process: time, and peak memory over the
    process's own before the call."""
    import pandas as pd  # noqa: F401 (imported before the baseline is taken)

    from slurm_apply import SlurmJob
    from slurm_apply._job import output as _output

    if not by_column:  # the path every table took before: one dict per row, from_records
        _output.column_frame = lambda results: None
    job = SlurmJob.from_dir(job_dir)
    base_kb = mem_kb("VmRSS")
    t0 = time.perf_counter()
    out = job.get_output()
    collect_s = time.perf_counter() - t0
    return {"collect_s": collect_s, "baseline_rss_kb": base_kb, "peak_rss_kb": mem_kb(),
            "table_bytes": int(out.memory_usage(deep=True).sum()), "shape": list(out.shape),
            "dtypes": {str(k): str(v) for k, v in out.dtypes.items()}}


def from_records(rows: int) -> Dict[str, Any]:
    """The baseline: pandas building the result table from the same dicts, already in memory."""
    import numpy as np
    import pandas as pd

    dicts = [half(x) for x in np.arange(rows, dtype=np.float64).tolist()]
    base_kb = mem_kb("VmRSS")
    t0 = time.perf_counter()
    out = pd.DataFrame.from_records(dicts)
    build_s = time.perf_counter() - t0
    return {"from_records_s": build_s, "baseline_rss_kb": base_kb, "peak_rss_kb": mem_kb(),
            "table_bytes": int(out.memory_usage(deep=True).sum())}


STEPS: Dict[str, Callable[..., Dict[str, Any]]] = {
    f.__name__: f for f in (save_baseline, s3_call, launch, s3_finish, s1_run, s1_collect, from_records)}

if __name__ == "__main__":
    result = STEPS[sys.argv[1]](**json.loads(sys.argv[2]))
    print(json.dumps(result))
