"""The Python peers, as their users would run them, on the benchmark's private Slurm cluster.

Two peers, each given the same rows, the same cluster and the same CPUs as slurm_apply:

- **submitit, rows chunked by hand**: the table split into contiguous chunks, one per CPU that
  slurm_apply's job uses (``nodes x cpus_per_node``), ``executor.map_array`` submits one array
  task of 1 CPU per chunk, each task runs ``f(**row)`` over its chunk, and the caller gathers the
  results into the table. Two ways of waiting, as for rslurm: ``job.result()`` as its users wait
  (submitit looks for the result file once a second), and a loop over ``job.done()`` every
  50 ms (submitit without its waiting scheme).
- **dask-jobqueue, batched**: one ``SLURMCluster`` whose workers (1 core, 1 process each) are Slurm
  jobs, scaled to as many workers as there are chunks; ``client.map`` over the same chunks,
  ``client.gather``. End to end counts the workers' start-up (what a user pays); the time from
  the workers being up to the table is kept as well.

Both are pip-installed, at the versions pinned below, into a venv of their own
(``.venvs/bench`` in the checkout, made by ``ensure_venv()`` when missing): never into the
interpreter that runs the benchmark. pandas and NumPy there follow the benchmark's own
versions, so both sides build and read the same tables.

``bench/run.py`` (in its own interpreter) calls ``ensure_venv()``; ``bench/harness.py`` runs one
measurement as ``.venvs/bench/bin/python bench/peers.py PEER WORKLOAD ROWS NODES CPUS JOBNAME
FOLDER``, which prints one line of JSON. The table is built before the clock starts and the peer's
modules are imported, as rslurm's timing starts after ``library(rslurm)``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
VENV = HERE.parent / ".venvs" / "bench"
# The one place the peers' versions are pinned.
PINS = {
    "submitit": "1.5.4",
    "dask-jobqueue": "0.9.0",
    "dask": "2026.8.0",
    "distributed": "2026.8.0",
}
PEERS = ("submitit", "submitit_poll", "dask")
POLL_S = 0.05


def venv_python() -> Path:
    return VENV / "bin" / "python"


def requirements() -> List[str]:
    """The pins, and this interpreter's pandas and NumPy (the tables must be the same)."""
    import numpy
    import pandas

    return [f"{k}=={v}" for k, v in PINS.items()] + [f"pandas=={pandas.__version__}",
                                                    f"numpy=={numpy.__version__}"]


def ensure_venv(log: Callable[[str], None]) -> Dict[str, Any]:
    """Make ``.venvs/bench`` with the pinned peers when it is missing or holds other versions;
    return the versions it has, or why it cannot be had."""
    wanted = requirements()
    stamp = VENV / "bench-requirements.txt"
    if not (venv_python().exists() and stamp.exists() and stamp.read_text().split() == wanted):
        log(f"installing the Python peers into {VENV}: {' '.join(wanted)}")
        if not venv_python().exists():
            proc = subprocess.run([sys.executable, "-m", "venv", str(VENV)], capture_output=True, text=True)
            if proc.returncode != 0:
                return {"available": False, "why": f"python -m venv {VENV} failed: {proc.stderr[-500:]}"}
        proc = subprocess.run([str(venv_python()), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                               *wanted], capture_output=True, text=True)
        if proc.returncode != 0:
            return {"available": False, "why": f"pip install into {VENV} failed ({proc.returncode}): "
                                               f"{proc.stderr[-800:]}; install them by hand or run with "
                                               "--no-python-peers"}
        stamp.write_text("\n".join(wanted) + "\n")
    proc = subprocess.run([str(venv_python()), str(Path(__file__)), "versions"], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"available": False, "why": f"the peers do not import in {VENV}: {proc.stderr[-800:]}"}
    return {"available": True, "venv": str(VENV), "versions": json.loads(proc.stdout.strip().splitlines()[-1])}


# -- in the peers' interpreter -------------------------------------------------------------------


def _versions() -> Dict[str, str]:
    from importlib import metadata

    return {name: metadata.version(name) for name in [*PINS, "pandas", "numpy", "cloudpickle"]}


def _workload(name: str, n: int) -> Tuple[Callable[..., Any], Any, Callable[[Any], bool]]:
    import numpy as np
    import workloads

    if name == "tiny":
        return (workloads.add, workloads.tiny_table(n),
                lambda t: bool((t["result"].to_numpy() == 2 * t["a"].to_numpy()).all()))
    if name == "skewed":
        return (workloads.skewed, workloads.skewed_table(),
                lambda t: bool((t["result"].to_numpy() == t["i"].to_numpy()).all()))
    if name == "wide":
        return (workloads.wide, workloads.wide_table(n),
                lambda t: bool(np.allclose(t["result"].to_numpy(), t["c0"].to_numpy() + t["c9"].to_numpy())))
    raise SystemExit(f"peers.py: unknown workload {name!r}; expected tiny, skewed or wide")


def _submitit(f: Callable[..., Any], df: Any, slots: int, jobname: str, folder: Path, poll: bool) -> Dict[str, Any]:
    import submitit
    import workloads

    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    executor.update_parameters(name=jobname, nodes=1, tasks_per_node=1, cpus_per_task=1, timeout_min=60,
                               slurm_array_parallelism=slots)
    t0 = time.perf_counter()
    chunks = workloads.split_rows(df, slots)
    jobs = executor.map_array(workloads.apply_chunk, [f] * len(chunks), chunks)
    t1 = time.perf_counter()
    if poll:
        while not all(job.done() for job in jobs):
            time.sleep(POLL_S)
    values = [v for job in jobs for v in job.result()]
    out = df.assign(result=values)
    t2 = time.perf_counter()
    return {"table": out, "submit_s": t1 - t0, "end_to_end_s": t2 - t0, "n_tasks": len(jobs),
            "job_id": str(jobs[0].job_id).split("_")[0]}


def _dask(f: Callable[..., Any], df: Any, slots: int, jobname: str, folder: Path) -> Dict[str, Any]:
    import workloads
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    t0 = time.perf_counter()
    # Workers listen on the loopback: the cluster's nodes are this machine.
    # 450 MB was too little: a worker holding W1's 500,000-row chunk and its results was killed
    # by Slurm (and dask-jobqueue does not replace a worker whose job died). dask-jobqueue rounds
    # up to whole GB for --mem: 1500MB asked for 2G, and two of those do not fit a 4000 MB node.
    cluster = SLURMCluster(cores=1, processes=1, memory="1GB", walltime="01:00:00", job_name=jobname,
                           interface="lo", python=sys.executable, log_directory=str(folder),
                           scheduler_options={"dashboard_address": None})
    client = Client(cluster)
    cluster.scale(slots)
    client.wait_for_workers(slots)
    t1 = time.perf_counter()
    chunks = workloads.split_rows(df, slots)
    futures = client.map(workloads.apply_chunk, [f] * len(chunks), chunks, pure=False)
    values = [v for part in client.gather(futures) for v in part]
    out = df.assign(result=values)
    t2 = time.perf_counter()
    client.close()
    cluster.close()
    t3 = time.perf_counter()
    return {"table": out, "workers_up_s": t1 - t0, "after_workers_up_s": t2 - t1, "end_to_end_s": t2 - t0,
            "teardown_s": t3 - t2, "n_tasks": slots}


def measure(peer: str, workload: str, n: int, nodes: int, cpus: int, jobname: str, folder: Path) -> Dict[str, Any]:
    f, df, correct = _workload(workload, n)
    slots = nodes * cpus  # the processes slurm_apply runs for the same nodes and cpus_per_node
    if peer in ("submitit", "submitit_poll"):
        res = _submitit(f, df, slots, jobname, folder, poll=peer == "submitit_poll")
    elif peer == "dask":
        res = _dask(f, df, slots, jobname, folder)
    else:
        raise SystemExit(f"peers.py: unknown peer {peer!r}; expected one of {', '.join(PEERS)}")
    table = res.pop("table")
    res.update(rows_out=len(table), correct=correct(table), chunks=slots)
    return res


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["versions"]:
        print(json.dumps(_versions()))
        return 0
    if len(args) != 7:
        raise SystemExit("usage: peers.py versions | PEER WORKLOAD ROWS NODES CPUS JOBNAME FOLDER")
    peer, workload, n, nodes, cpus, jobname, folder = args
    os.makedirs(folder, exist_ok=True)
    res = measure(peer, workload, int(n), int(nodes), int(cpus), jobname, Path(folder))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
