"""The node side: ``python -m slurm_apply._worker JOB_DIR SUBMISSION``, run by every array task.

Imports only what the node needs (no pandas): a task should reach its first row quickly.

A task runs ``cpus_per_task`` processes. Each process takes chunks of rows by creating a claim file
with O_EXCL: first the chunks dealt to it round-robin, then any chunk nobody has taken yet, from
any task. So rows are handed out dynamically inside a task and across tasks, and a task that
starts late or a slow chunk does not hold up the whole job. Finished rows are appended to the
process's own record file in small batches, so a kill loses at most the batch in flight.

``python -m slurm_apply._worker --preflight PAYLOAD [PKG...]`` imports the packages and loads the
payload in this interpreter and exits 0, or prints why it cannot and exits 1: the check the
submitting side runs before sbatch.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import _jobdir as jd
from ._store import claims, records

# Finished rows are handed to the OS (a write, which survives the process being killed) at the
# end of every chunk and at least every WRITE_INTERVAL_S inside one, so a SIGKILL loses at most
# that much of a process's work and never a row slower than it; SIGTERM loses nothing. They are
# forced to disk (fsync, which also makes them visible over NFS) at most every FSYNC_INTERVAL_S.
WRITE_INTERVAL_S = 0.02
FSYNC_INTERVAL_S = 1.0
FLUSH_ROWS = 100_000  # and the most rows held in memory before a write


def row_seed(job_seed: int, row: int) -> int:
    """The seed of a row: splitmix64 of (job seed, row index), cut to 32 bits.

    It depends only on the job's seed and the row's index, never on how rows are split into tasks.
    """
    z = (job_seed + (row + 1) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & 0xFFFFFFFF


def load_payload(job_dir: Path, manifest: Dict[str, Any]) -> Callable[..., Any]:
    f = _load(job_dir / jd.PAYLOAD, manifest.pkgs)
    if manifest.seed is not None:
        # Rows are seeded: NumPy's global generator too, from the first row on, even when f
        # imports NumPy only inside its body. (With seed=False a task never loads NumPy itself.)
        try:
            import numpy  # noqa: F401
        except ImportError:
            pass
    return f


def _load(payload: Path, pkgs: Sequence[str]) -> Callable[..., Any]:
    """Import ``pkgs``, unpickle f and the objects, and make the objects globals of f."""
    import importlib

    for name in pkgs:
        importlib.import_module(name)
    with open(payload, "rb") as fh:
        f, objects = pickle.load(fh)
    if objects:
        glb = getattr(f, "__globals__", None)
        if glb is not None:
            glb.update(objects)
        else:  # a callable object: put the names in builtins so its code still finds them
            import builtins

            for k, v in objects.items():
                setattr(builtins, k, v)
    return f


def decode_chunk(blob: Any) -> Tuple[List[int], List[str], List[Sequence[Any]]]:
    """A chunk as (row indices, column names, column values as plain Python lists)."""
    rows = blob["rows"]
    if isinstance(rows, tuple):
        rows = list(range(rows[0], rows[1]))
    cols = [c.tolist() if hasattr(c, "tolist") else c for c in blob["data"]]
    return rows, blob["columns"], cols


class _Writer:
    """Batches finished rows and appends them as one framed record at a time.

    On SIGTERM (Slurm's warning before a kill: time limit, scancel, preemption, requeue) the rows
    held in memory are written before the process exits, unless a write is under way, in which
    case the process exits as soon as that write ends.
    """

    def __init__(self, path: Path) -> None:
        self.fh = records.open_for_append(path)
        self.rows: List[int] = []
        self.values: List[Any] = []
        self.errors: Dict[int, Tuple[str, str, str]] = {}
        self.last = self.synced = time.monotonic()
        self.writing = False
        self.terminate = False
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self.writing:
            self.terminate = True
            return
        self.flush(sync=True)
        print(f"slurm_apply: process {os.getpid()} got SIGTERM; saved its finished rows", flush=True)
        os._exit(128 + signum)

    def flush(self, sync: bool = False) -> None:
        """Write the rows held in memory as one frame; fsync if asked or if a second has passed."""
        self.writing = True
        if self.rows or self.errors:
            try:
                frame = records.encode_frame(self.rows, self.values, self.errors)
            except Exception:
                frame = self._encode_row_by_row()
            self.fh.write(frame)
            self.fh.flush()
            self.rows, self.values, self.errors = [], [], {}
        now = self.last = time.monotonic()
        if sync or now - self.synced >= FSYNC_INTERVAL_S:
            os.fsync(self.fh.fileno())
            self.synced = now
        self.writing = False
        if self.terminate:
            os._exit(128 + signal.SIGTERM)

    def _encode_row_by_row(self) -> bytes:
        """Some value will not pickle: keep the rows that do, turn the others into errors."""
        rows: List[int] = []
        values: List[Any] = []
        for r, v in zip(self.rows, self.values):
            try:
                records.dumps(v)
            except Exception as exc:
                self.errors[r] = (
                    "UnpicklableResult",
                    f"the value returned ({type(v).__name__}) could not be pickled: {exc}",
                    traceback.format_exc(),
                )
                continue
            rows.append(r)
            values.append(v)
        return records.encode_frame(rows, values, self.errors)

    def close(self) -> None:
        self.flush(sync=True)
        self.fh.close()


def _run_process(job_dir: Path, manifest: Dict[str, Any], sub: int, task: int, proc: int,
                 f: Callable[..., Any]) -> Dict[str, Any]:
    """The row loop of one process. Returns its own timing and counts."""
    info = manifest.submissions[sub]
    n_chunks = info.n_chunks
    slots = info.n_tasks * info.cpus_per_task
    slot = task * info.cpus_per_task + proc
    seed: Optional[int] = manifest.seed
    seed_arg: Optional[str] = manifest.seed_arg
    rec = jd.results_path(job_dir, sub, task, proc)

    # After a requeue: finish the chunks this process had taken, skipping the rows already saved.
    done: set = set()
    mine_before: List[int] = []
    if rec.exists():
        # Only row ids are read (heads and metas): nothing saved is unpickled again.
        saved = records.RecordReader(rec).read_new_batch()
        done.update(records.array_ids(saved.done))
        done.update(records.array_ids(saved.err))
        me = (task, proc)
        mine_before = sorted(c for c, who in claims.read_claims(job_dir, sub).items() if who == me)

    own = list(range(slot, n_chunks, slots))
    order = mine_before + own + [c for c in range(n_chunks) if c % slots != slot]
    claimed_again = set(mine_before)

    params = jd.ParamsReader(jd.params_bin(job_dir, sub))
    writer = _Writer(rec)
    import random

    np_random = None
    if seed is not None:
        np_mod = sys.modules.get("numpy")
        np_random = np_mod.random.seed if np_mod is not None else None

    n_rows = n_err = 0
    loop_s = 0.0
    first_row_at: Optional[float] = None
    monotonic = time.monotonic
    for c in order:
        if c in claimed_again:
            claimed_again.discard(c)
        elif jd.job_replaced(job_dir, manifest.token):
            break  # the directory holds another job now: claim nothing of it
        elif not claims.try_claim(job_dir, sub, c, task, proc):
            continue
        rows, names, cols = decode_chunk(params.chunk(c))
        if first_row_at is None:
            first_row_at = time.time()
        t0 = time.perf_counter()
        w_rows, w_values, w_errors = writer.rows, writer.values, writer.errors
        flush_at = writer.last + WRITE_INTERVAL_S
        # The hot loop: a few hundred nanoseconds of our own per row (without seeding).
        for row, vals in zip(rows, zip(*cols)):
            if done and row in done:
                continue
            kwargs = dict(zip(names, vals))
            if seed is not None:
                s = row_seed(seed, row)
                random.seed(s)
                if np_random is not None:
                    np_random(s)
                if seed_arg is not None:
                    kwargs[seed_arg] = s
            try:
                value = f(**kwargs)
            except Exception as exc:
                w_errors[row] = (type(exc).__qualname__, str(exc), traceback.format_exc())
                n_err += 1
                print(f"slurm_apply: row {row} raised {type(exc).__qualname__}: {exc}", flush=True)
            else:
                w_rows.append(row)
                w_values.append(value)
            n_rows += 1
            # Rows persist at least once a second (and a chunk's end does not force a write:
            # fsync per chunk would cost more than tiny rows do).
            if monotonic() > flush_at or len(w_rows) >= FLUSH_ROWS:
                loop_s += time.perf_counter() - t0
                writer.flush()
                t0 = time.perf_counter()
                w_rows, w_values, w_errors = writer.rows, writer.values, writer.errors
                flush_at = writer.last + WRITE_INTERVAL_S
        loop_s += time.perf_counter() - t0
        writer.flush()  # the chunk's rows go to the OS before the next chunk is taken
    writer.close()
    params.close()
    return {"proc": proc, "rows": n_rows, "errors": n_err, "loop_s": loop_s,
            "first_row_at": first_row_at}


def _child(job_dir: Path, manifest: Dict[str, Any], sub: int, task: int, proc: int,
           f: Optional[Callable[..., Any]], conn: Any) -> None:
    if f is None:  # started with spawn: load the payload in this process
        f = load_payload(job_dir, manifest)
    stats = _run_process(job_dir, manifest, sub, task, proc, f)
    conn.send(stats)
    conn.close()


def _describe_exit(code: Optional[int]) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the kernel's out-of-memory killer, or a kill by hand)" if -code == 9 else ""
        return f"killed by {name}{hint}"
    return f"exited with code {code}"


def run_task(job_dir: Path, sub: int, task: int, token: str) -> int:
    started = time.time()
    manifest = jd.load_manifest(job_dir)
    if manifest.token != token or jd.job_replaced(job_dir, token):
        print(f"slurm_apply: {job_dir} now holds another job (this task's job was replaced, "
              "e.g. by overwrite=True); this task does nothing", flush=True)
        return 1
    # A requeued task starts again: its previous end marker no longer says anything.
    try:
        os.unlink(jd.task_marker(job_dir, sub, task, "done"))
    except FileNotFoundError:
        pass
    ncpu = manifest.submissions[sub].cpus_per_task
    node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    start_marker = jd.task_marker(job_dir, sub, task, "start")
    starts: List[Dict[str, Any]] = []
    try:
        starts = jd.read_json(start_marker)["starts"]
    except (FileNotFoundError, ValueError, KeyError):
        pass
    starts.append({
        "time": started,
        "node": node,
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
        "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
        "pid": os.getpid(),
    })
    jd.write_json(start_marker, {"starts": starts})
    print(f"slurm_apply: submission {sub} task {task} on {node}: {ncpu} process(es), "
          f"start {len(starts)}", flush=True)

    f = load_payload(job_dir, manifest)
    loaded = time.time()
    procs: List[Dict[str, Any]] = []
    failures: List[str] = []
    if ncpu == 1:
        procs.append(_run_process(job_dir, manifest, sub, task, 0, f))
    else:
        import multiprocessing as mp

        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        ctx = mp.get_context(method)
        children = []
        for p in range(ncpu):
            recv, send = ctx.Pipe(duplex=False)
            child = ctx.Process(
                target=_child,
                args=(job_dir, manifest, sub, task, p, f if method == "fork" else None, send),
            )
            child.start()
            send.close()
            children.append((p, child, recv))
        for p, child, recv in children:
            try:
                procs.append(recv.recv())
            except EOFError:
                pass
            child.join()
            if child.exitcode != 0:
                failures.append(f"process {p} {_describe_exit(child.exitcode)}")
    ended = time.time()
    firsts = [p["first_row_at"] for p in procs if p.get("first_row_at")]
    summary = {
        "ok": not failures,
        "failures": failures,
        "node": node,
        "started": started,
        "payload_loaded": loaded,
        "first_row_at": min(firsts) if firsts else None,
        "ended": ended,
        "rows": sum(p["rows"] for p in procs),
        "errors": sum(p["errors"] for p in procs),
        "loop_s": sum(p["loop_s"] for p in procs),
        "procs": procs,
    }
    if jd.job_replaced(job_dir, manifest.token):
        print("slurm_apply: the job directory now holds another job; no end marker written", flush=True)
        return 1
    jd.write_json(jd.task_marker(job_dir, sub, task, "done"), summary)
    print(f"slurm_apply: task {task} finished {summary['rows']} row(s), {summary['errors']} raised, "
          f"in {ended - started:.2f} s" + ("" if not failures else "; " + "; ".join(failures)),
          flush=True)
    return 0 if not failures else 1


def preflight(payload: Path, pkgs: Sequence[str]) -> int:
    try:
        _load(payload, pkgs)
    except BaseException as exc:  # report anything, including SystemExit from a user's import
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        traceback.print_exc()
        return 1
    return 0


def main(argv: Sequence[str]) -> int:
    if len(argv) >= 2 and argv[0] == "--preflight":
        return preflight(Path(argv[1]), argv[2:])
    if len(argv) != 3:
        print("usage: python -m slurm_apply._worker JOB_DIR SUBMISSION TOKEN", file=sys.stderr)
        return 2
    task_id = os.environ.get("SLURM_ARRAY_TASK_ID")
    if task_id is None:
        print("slurm_apply: SLURM_ARRAY_TASK_ID is not set; this command is run by the array job "
              "script (submit.sh), not by hand", file=sys.stderr)
        return 2
    return run_task(Path(argv[0]), int(argv[1]), int(task_id), argv[2])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
