"""Writing a submission (rows in chunks, the array script) and handing it to Slurm or to this machine.

Shared by the first run and by every resubmission.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

from . import _jobdir as jd
from . import _script, _slurm
from ._errors import SubmissionError

if TYPE_CHECKING:
    import pandas as pd

MAX_CHUNKS = 10_000


def plan(n_rows: int, nodes: int, cpus: int, max_array_size: Optional[int],
         rows_per_chunk: Optional[int] = None) -> Tuple[int, int]:
    """(array tasks, chunks) for this many rows.

    No more tasks than rows need, nor than the cluster's MaxArraySize allows. Rows go in 16
    chunks per process (one row per chunk for small tables): small enough that idle processes
    can even out uneven rows, few enough that claiming them (a file create each, about half a
    millisecond on a busy file system) costs nothing next to the rows.
    """
    n_tasks = max(1, min(nodes, -(-n_rows // cpus)))
    if max_array_size is not None:
        n_tasks = min(n_tasks, max_array_size)
    if rows_per_chunk:
        n_chunks = -(-n_rows // rows_per_chunk)
    else:
        n_chunks = min(n_rows, 16 * n_tasks * cpus, MAX_CHUNKS)
    return n_tasks, max(1, n_chunks)


def chunk_bounds(n_rows: int, n_chunks: int) -> List[Tuple[int, int]]:
    """Split positions 0..n_rows into n_chunks contiguous, nearly equal ranges."""
    base, extra = divmod(n_rows, n_chunks)
    out = []
    start = 0
    for c in range(n_chunks):
        stop = start + base + (1 if c < extra else 0)
        out.append((start, stop))
        start = stop
    return out


_TYPECODES = {("i", 1): "b", ("i", 2): "h", ("i", 4): "i", ("i", 8): "q",
              ("u", 1): "B", ("u", 2): "H", ("u", 4): "I", ("u", 8): "Q",
              ("f", 4): "f", ("f", 8): "d"}


def _column_arrays(df: "pd.DataFrame") -> List[Any]:
    """Each column in the form that is fastest to slice, pickle and read back on the node.

    Plain numeric columns become the standard library's ``array.array`` (a copy of NumPy's
    buffer, pickled as raw bytes, turned into Python numbers with ``tolist()`` on the node
    without importing NumPy there); anything else becomes a list of Python objects.
    """
    import array

    import numpy as np

    out: List[Any] = []
    for i in range(df.shape[1]):
        col = df.iloc[:, i]
        dtype = col.dtype
        code = _TYPECODES.get((dtype.kind, dtype.itemsize)) if isinstance(dtype, np.dtype) else None
        if code is not None and array.array(code).itemsize == dtype.itemsize:
            values = np.ascontiguousarray(col.to_numpy(), dtype=dtype.newbyteorder("="))
            out.append(array.array(code, values.tobytes()))
        else:
            out.append(col.tolist())
    return out


def encode_chunks(df: "pd.DataFrame", rows: Optional[Sequence[int]], n_chunks: int) -> List[bytes]:
    """The rows of a submission as pickled chunks. ``rows`` None means all rows, in order."""
    if rows is not None:
        df = df.iloc[list(rows)]
    columns = [str(c) for c in df.columns]
    arrays = _column_arrays(df)
    blobs = []
    for start, stop in chunk_bounds(len(df), n_chunks):
        chunk_rows: Any = (start, stop) if rows is None else [int(r) for r in rows[start:stop]]
        blob = {"rows": chunk_rows, "columns": columns, "data": [a[start:stop] for a in arrays]}
        blobs.append(jd.dumps(blob))
    return blobs


def row_ranges(rows: Sequence[int]) -> List[List[int]]:
    """[0, 1, 2, 5, 6] -> [[0, 3], [5, 7]]: a compact record of which rows a submission runs."""
    out: List[List[int]] = []
    for r in rows:
        if out and out[-1][1] == r:
            out[-1][1] = r + 1
        else:
            out.append([r, r + 1])
    return out


def caller_pythonpath() -> Optional[str]:
    """The directory of the running script, which Python put first on sys.path; a node started
    with ``-m`` would not have it, and f may come from a module beside the script."""
    first = sys.path[0] if sys.path else ""
    if first and os.path.isdir(first):
        return os.path.abspath(first)
    return None


def write_submission(job_dir: Path, manifest: Dict[str, Any], df: "pd.DataFrame", *,
                     rows: Optional[Sequence[int]], nodes: int, cpus_per_task: int,
                     options: Mapping[str, Any], max_concurrent: Optional[int],
                     backend: str, rows_per_chunk: Optional[int] = None) -> Dict[str, Any]:
    """Write the rows and script of a new submission and add it to ``manifest`` (not yet saved)."""
    sub = len(manifest["submissions"])
    n_rows = len(df) if rows is None else len(rows)
    max_array = _slurm.max_array_size() if backend == "slurm" else None
    n_tasks, n_chunks = plan(n_rows, nodes, cpus_per_task, max_array, rows_per_chunk)
    jd.make_submission_dirs(job_dir, sub)
    jd.write_params_bin(jd.params_bin(job_dir, sub), encode_chunks(df, rows, n_chunks))
    script = _script.render(
        jobname=manifest["jobname"], n_tasks=n_tasks, cpus_per_task=cpus_per_task,
        log_pattern=jd.log_pattern(job_dir, sub), options=options,
        python=manifest["python"]["executable"], job_dir=job_dir, sub=sub,
        workdir=Path(manifest["workdir"]), pythonpath=manifest.get("pythonpath"),
        max_concurrent=max_concurrent,
    )
    jd.write_text(job_dir / jd.script_name(sub), script, mode=0o700)
    slots = n_tasks * cpus_per_task
    bounds = chunk_bounds(n_rows, n_chunks)
    # The chunks each task is dealt first (round-robin over its processes); idle processes then
    # take chunks nobody has started, so the claims files say who really ran what.
    tasks = []
    for t in range(n_tasks):
        chunks = [c for c in range(n_chunks) if (c % slots) // cpus_per_task == t]
        tasks.append({"task": t, "chunks": chunks,
                      "rows": sum(bounds[c][1] - bounds[c][0] for c in chunks)})
    info = {
        "index": sub,
        "script": jd.script_name(sub),
        "n_rows": n_rows,
        "rows": [[0, len(df)]] if rows is None else row_ranges([int(r) for r in rows]),
        "n_tasks": n_tasks,
        "cpus_per_task": cpus_per_task,
        "n_chunks": n_chunks,
        "tasks": tasks,
        "slurm_options": dict(options),
        "max_concurrent": max_concurrent,
        "backend": backend,
        "state": "written",
        "job_id": None,
        "written_at": time.time(),
    }
    manifest["submissions"].append(info)
    return info


def launch(job_dir: Path, manifest: Dict[str, Any], sub: int) -> None:
    """Hand a written submission to Slurm or to the local runner; record the outcome."""
    info = manifest["submissions"][sub]
    try:
        if info["backend"] == "slurm":
            info["job_id"] = _slurm.sbatch(job_dir / info["script"], cwd=job_dir)
        else:
            from . import _local

            info["job_id"] = _local.start(job_dir, sub, info["n_tasks"], info["cpus_per_task"])
    except SubmissionError as exc:
        info["state"] = "failed"
        info["error"] = str(exc)
        jd.write_json(job_dir / jd.MANIFEST, manifest)
        raise
    info["state"] = "submitted"
    info["submitted_at"] = time.time()
    jd.write_json(job_dir / jd.MANIFEST, manifest)
