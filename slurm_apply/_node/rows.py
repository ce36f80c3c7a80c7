"""The row loop of one process of an array task: claim chunks, run rows, append records.

Imports only what the node needs (no pandas, no NumPy: seeded rows seed NumPy only once something
else has loaded it, see ``seeding.py``).

A process takes chunks by claiming them (``_store/claims.py``): first the chunks it is told to
resume (a predecessor's, or one taken over from a dead task), then the chunks dealt to it
round-robin, then chunks nobody has taken yet (found with one listing, not by trying each).
Finished rows are appended to the process's own record file in small batches.

The task's parent must know which row a process runs, to blame that row alone if the process
dies. Each process writes where it is into its *slot*, three int64 words in memory shared with
the parent (CHUNK, ROW, POS below): one store into a memoryview per row, no system call.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

from .._store import layout as jd
from .._store.params import ParamsReader, decode_chunk
from .._store import claims, records
from .._store.manifest import Manifest
from .._store.markers import ProcStats
from .._store.taskfiles import TaskFiles
from .budget import Budget
from . import calls, seeding
from .seeding import row_seed  # noqa: F401 (the seed of a row, named here for its callers)

# Finished rows are handed to the OS (a write, which survives the process being killed) at the
# end of every chunk and at least every WRITE_INTERVAL_S inside one, so a SIGKILL loses at most
# that much of a process's work and never a row slower than it; SIGTERM loses nothing. They are
# forced to disk (fsync, which also makes them visible over NFS) at most every FSYNC_INTERVAL_S.
from .._timing import RECORD_FSYNC_S as FSYNC_INTERVAL_S, RECORD_WRITE_S as WRITE_INTERVAL_S
FLUSH_ROWS = 100_000  # and the most rows held in memory before a write
# A process prints its first LOG_ERRORS row errors to the task's log, then says it stops
# printing them: a bug that makes every row raise must not write millions of lines.
LOG_ERRORS = 10

# A process's slot: the chunk it works on (or is about to claim), the row it runs (set before
# the row starts, left after it ends) and its position in its order of chunks.
CHUNK, ROW, POS = 0, 1, 2
SLOT_WIDTH = 3
NO_ROW = -1


def load_payload(job_dir: Path, manifest: Manifest) -> Callable[..., Any]:
    if manifest.seed is not None:
        # Rows are seeded: the hook that seeds NumPy's global generator when numpy.random is
        # loaded during a row goes in before anything of the user's is imported. NumPy itself is
        # not imported for it, and ``random`` is seeded at a process's first draw (see seeding.py).
        seeding.seeder().seed_random_lazily()
    return load(jd.payload_path(job_dir), manifest.pkgs)


def load(payload: Path, pkgs: Sequence[str]) -> Callable[..., Any]:
    """Import ``pkgs``, unpickle f and the objects (big arrays memory-mapped, shared by every
    process on the node) and make the objects globals of f."""
    from .._store.payload import load as load_payload_file

    return load_payload_file(payload, pkgs)


# A chunk to resume (already claimed for the process): (chunk, rows to skip, how many of its
# first rows to write one by one). A replacement runs again the rows its predecessor finished
# but had not written yet when it died; writing each of those at once means that a second death
# cannot lose them again, so no row runs more than twice.
Resume = Tuple[int, FrozenSet[int], int]


@dataclass(frozen=True)
class Work:
    """What one process of a task is told to do."""

    proc: int
    resume: Tuple[Resume, ...] = ()
    start: int = 0  # where to begin in its own share of chunks (see claims.Claimer)
    read_own: bool = True  # skip rows already in its record file (a requeued task's)


@dataclass
class Context:
    """Everything a process of a task shares with the others."""

    job_dir: Path
    manifest: Manifest
    sub: int
    task: int
    f: Optional[Callable[..., Any]] = None
    node: str = ""
    started: float = 0.0  # when the task started (time.time())
    loaded: float = 0.0  # when its payload was loaded

    @property
    def files(self) -> TaskFiles:
        """Where the task writes, each write behind the job's token."""
        return TaskFiles(self.job_dir, self.sub, self.task, self.manifest.token)


class Writer:
    """Batches finished rows and appends them as one framed record at a time.

    On SIGTERM (Slurm's warning before a kill: time limit, scancel, preemption, requeue) the rows
    held in memory are written before the process exits, unless a write is under way, in which
    case the process exits as soon as that write ends. The row loop appends a value before its
    row id, so a signal between the two leaves one value too many, which is dropped: that row
    was in flight. The process also ends when its parent (the task) has died.
    """

    def __init__(self, fh: BinaryIO, on_errors: Callable[[int, str], None] = lambda n, first: None) -> None:
        self.fh = fh  # from TaskFiles.open_records
        self.on_errors = on_errors  # told how many rows raised in each frame written
        # Stacks already written, so a traceback repeated row after row is stored once.
        self.tracebacks = records.TracebackCache(self.fh.frames)  # type: ignore[attr-defined]
        self.rows: List[int] = []
        self.values: List[Any] = []
        self.errors: Dict[int, Tuple[str, str, str]] = {}
        self.last = self.synced = time.monotonic()
        self.writing = False
        self.terminate = False
        self.parent = os.getppid()
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        # Slurm signals every process of the task and the task's parent forwards the signal
        # too: the first one is enough. Nothing may raise from here, or the row loop would
        # take the exception for the row's own.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.writing:
            self.terminate = True
            return
        try:
            del self.values[len(self.rows):]
            self.flush(sync=True)
            print(f"slurm_apply: process {os.getpid()} got SIGTERM; saved its finished rows",
                  flush=True)
        except BaseException:
            pass
        os._exit(128 + signum)

    def flush(self, sync: bool = False) -> None:
        """Write the rows held in memory as one frame; fsync if asked or if a second has passed."""
        self.writing = True
        if self.rows or self.errors:
            try:
                frame = records.encode_frame(self.rows, self.values, self.errors, self.tracebacks)
            except Exception:
                frame = self._encode_row_by_row()
            self.fh.write(frame)
            self.fh.flush()
            self.tracebacks.written()
            errors = self.errors
            self.rows, self.values, self.errors = [], [], {}
            if errors:
                etype, message, _ = next(iter(errors.values()))
                self.on_errors(len(errors), f"{etype}: {message}")
        now = self.last = time.monotonic()
        if sync or now - self.synced >= FSYNC_INTERVAL_S:
            os.fsync(self.fh.fileno())
            self.synced = now
        self.writing = False
        if self.terminate:
            os._exit(128 + signal.SIGTERM)
        if os.getppid() != self.parent:  # the task is gone: nobody would watch or replace us
            os.fsync(self.fh.fileno())
            print(f"slurm_apply: process {os.getpid()} lost its task process; saved its rows "
                  "and stops", flush=True)
            os._exit(1)

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
        return records.encode_frame(rows, values, self.errors, self.tracebacks)

    def close(self) -> None:
        self.flush(sync=True)
        self.fh.close()


def saved_rows(path: Path) -> Set[int]:
    """Row ids recorded in a record file, read without unpickling any value."""
    batch = records.RecordReader(path).read_new_batch()
    return set(records.array_ids(batch.done)) | set(records.array_ids(batch.err))


class _Loop:
    """One process's pass over its chunks; ``run`` returns its own timing and counts."""

    def __init__(self, ctx: Context, work: Work, at: Any) -> None:
        self.ctx, self.work, self.at = ctx, work, at
        info = ctx.manifest.submissions[ctx.sub]
        self.claimer = claims.Claimer(
            ctx.job_dir, ctx.sub, info.n_chunks, info.n_tasks * info.cpus_per_task,
            ctx.task * info.cpus_per_task + work.proc, ctx.task, work.proc, start=work.start,
            may_claim=self.may_claim)
        self.budget = Budget(ctx, f"task {ctx.task} process {work.proc}")
        self.n_rows = self.n_err = 0
        self.loop_s = 0.0
        self.first_row_at: Optional[float] = None

    def run(self) -> ProcStats:
        ctx, work, at = self.ctx, self.work, self.at
        rec = jd.results_path(ctx.job_dir, ctx.sub, ctx.task, work.proc)
        # After a requeue: skip the rows this process saved before (ids only: nothing unpickled).
        own: Set[int] = saved_rows(rec) if work.read_own and rec.exists() else set()
        params = ParamsReader(jd.params_bin(ctx.job_dir, ctx.sub))
        writer = Writer(self.ctx.files.open_records(rec), self.budget.add)
        # The task starts us with SIGTERM blocked, so that no signal came before the handler
        # that saves our rows; a signal that came meanwhile is handled now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        for c, skip, one_by_one in work.resume:
            if self.budget.stopped():
                break  # stopped early: what is left of these chunks stays unrun
            at[CHUNK] = c
            self.chunk(params, writer, c, (skip | own) if own else skip, one_by_one)
        while True:
            claimed = self.claimer.next_chunk(self.before_claim)
            if claimed is None:
                break
            self.chunk(params, writer, claimed, own)
        writer.close()
        self.budget.flush()
        params.close()
        cl = self.claimer
        return ProcStats(proc=work.proc, rows=self.n_rows, errors=self.n_err, loop_s=self.loop_s,
                         first_row_at=self.first_row_at, claim_s=cl.seconds,
                         claim_creates=cl.creates, claim_listings=cl.listings)

    def before_claim(self, c: int) -> None:
        # Before the create: if we die just after it, the parent still knows the chunk is ours.
        self.at[POS] = self.claimer.pos
        self.at[CHUNK] = c

    def may_claim(self) -> bool:
        # The directory may hold another job now: claim nothing of it. Nor once the job was
        # stopped early (max_failures).
        return not (self.ctx.files.replaced()
                    or self.budget.stopped())

    def chunk(self, params: ParamsReader, writer: Writer, c: int, skip: Any,
              one_by_one: int = 0) -> None:
        """Run one chunk's rows but those in ``skip`` (its first ``one_by_one`` rows each
        written as soon as it ends); hand them to the OS at its end."""
        rows, names, cols = decode_chunk(params.chunk(c))
        if self.first_row_at is None:
            self.first_row_at = time.time()
        m = self.ctx.manifest
        k = min(one_by_one, len(rows))
        stopped = k and self.rows_loop(writer, rows[:k], names, [col[:k] for col in cols], skip,
                                       m.seed, m.seed_arg, -1.0)
        if not stopped:
            self.rows_loop(writer, rows[k:], names, [col[k:] for col in cols] if k else cols,
                           skip, m.seed, m.seed_arg, WRITE_INTERVAL_S)
        writer.flush()  # the chunk's rows go to the OS before the next chunk is taken

    def rows_loop(self, writer: Writer, rows: List[int], names: List[str],
                  cols: List[Sequence[Any]], skip: Any, seed: Optional[int],
                  seed_arg: Optional[str], interval: float) -> bool:
        """Run these rows; True if the job was stopped early meanwhile (the rest not run)."""
        f, at, slot_row = self.ctx.f, self.at, ROW
        assert f is not None
        seeds: Any = itertools.repeat(None)
        if seed is not None:
            seeds = seeding.row_seeds(seed, rows)
            seeder = seeding.seeder()
            py_seed, py_inst = seeding.python_seeding()
            lazy = seeder.lazy or seeding.NEVER_LAZY  # armed: no row of this process drew from random yet
            np_seed = seeding.numpy_seeding()
            np_loaded = sys.modules.get
        # f(*values) when that binds what f(**row) binds (calls.py): the columns in its order.
        order = calls.positional_order(f, names) if seed_arg is None else None
        by_position = order is not None
        if order is not None and order != list(range(len(names))):
            cols = [cols[i] for i in order]
        n_rows = n_err = 0
        stopped = False
        monotonic, perf = time.monotonic, time.perf_counter
        t0 = perf()
        w_rows, w_values, w_errors = writer.rows, writer.values, writer.errors
        flush_at = writer.last + interval
        # The hot loop: a few hundred nanoseconds of our own per row, and the seeding's.
        for row, s, vals in zip(rows, seeds, zip(*cols)):
            if skip and row in skip:
                continue
            at[slot_row] = row  # what the parent blames if this process dies now
            if s is not None:
                # What random.seed(s) and numpy.random.seed(s) do (seeding.py), cheaper.
                seeder.current = s
                if not lazy.armed:
                    py_seed(py_inst, s)
                    py_inst.gauss_next = None
                if np_seed is None and np_loaded("numpy.random") is not None:
                    seeder.unhooked(row)  # loaded by an earlier row, but not through the hook
                    np_seed = seeding.numpy_seeding()
                if np_seed is not None:
                    try:
                        np_seed(s)
                    except TypeError:  # f switched the global generator's bit generator
                        np_seed = seeding.numpy_seeding()
                        np_seed(s)  # type: ignore[misc]
            try:
                if by_position:
                    value = f(*vals)
                else:
                    kwargs = dict(zip(names, vals))
                    if seed_arg is not None and s is not None:
                        kwargs[seed_arg] = s
                    value = f(**kwargs)
            except BaseException as exc:  # SystemExit and KeyboardInterrupt from f cost its row only
                w_errors[row] = (type(exc).__qualname__, str(exc), traceback.format_exc())
                self.log_error(row, exc, self.n_err + n_err)
                n_err += 1
            else:
                w_values.append(value)  # value first: see Writer
                w_rows.append(row)
            n_rows += 1
            # Rows persist at least once a second (and a chunk's end does not force a write:
            # fsync per chunk would cost more than tiny rows do).
            if monotonic() > flush_at or len(w_rows) >= FLUSH_ROWS:
                self.loop_s += perf() - t0
                writer.flush()
                if self.budget.stop_now():  # max_failures: leave the rest of the chunk
                    stopped = True
                    break
                t0 = perf()
                w_rows, w_values, w_errors = writer.rows, writer.values, writer.errors
                flush_at = writer.last + interval
        else:
            self.loop_s += perf() - t0
        self.n_rows += n_rows
        self.n_err += n_err
        return stopped

    def log_error(self, row: int, exc: BaseException, before: int) -> None:
        """Print a row's error to the task's log, while this process has printed few."""
        if before < LOG_ERRORS:
            print(f"slurm_apply: row {row} raised {type(exc).__qualname__}: {exc}", flush=True)
        elif before == LOG_ERRORS:
            print(f"slurm_apply: process {self.work.proc} stops printing row errors after "
                  f"{LOG_ERRORS}; the task's last line counts them, get_errors() has them all",
                  flush=True)


def run_process(ctx: Context, work: Work, at: Any) -> ProcStats:
    """The row loop of one process (SIGTERM may be blocked on entry; it is unblocked once the
    handler that saves rows is set: see ``Writer``).

    Parameters
    ----------
    ctx : Context
        The job, submission, task and function.
    work : Work
        Which chunks to resume and where to start claiming.
    at : memoryview
        This process's slot (``SLOT_WIDTH`` int64 words shared with the task's parent).

    Returns
    -------
    dict
        The process's counts and timings, for the task's end marker.
    """
    return _Loop(ctx, work, at).run()
