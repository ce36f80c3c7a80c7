"""The parent process of an array task: it runs no rows itself, it keeps its processes going.

It starts ``cpus_per_task`` processes (forked: the payload is loaded once, here) and watches
them. Each writes the row it is running into a slot of shared memory (``rows.py``), so when one
dies (a segfault, ``os._exit``, the kernel's OOM killer) the parent records that row, and only
that row, as failed with what killed it, and starts a replacement that finishes the chunk. After
MAX_DEATHS_IN_A_ROW deaths without a row finished in between, or MAX_DEATHS in all, it stops
replacing them and says so in its end marker and log.

On SIGTERM (Slurm's warning before a time-limit kill, a cancel or a requeue) it forwards the
signal to its processes, which save their finished rows and exit; it waits for them (well within
Slurm's KillWait), notes in its heartbeat which rows were in flight, and dies of the signal.

It keeps a heartbeat, and when a process has run out of chunks it looks for tasks that died and
takes over their unfinished chunks (``lease.py``). A task out of rows stays up to LINGER_S for
that: it says so with an idle marker (so the tasks it watches do not wait for it in turn), and
writes its end marker only when it goes. The end marker is a task's last write: once it is
there the task will do nothing more, which is what "finished" means to the status.
"""

from __future__ import annotations

import mmap
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, cast

from .._store import layout as jd
from .._store.params import ParamsReader, decode_chunk
from .._store import claims, records
from .._store.markers import End, ProcStats
from . import lease
from .budget import Budget
from . import rows as rowloop
from .._timing import STOP_WAIT_S, linger_poll_s

MAX_DEATHS_IN_A_ROW = 3  # processes dying one after another without finishing a row
MAX_DEATHS = 100  # per task start: past this a replacement costs more than it saves

_HINTS = {
    signal.SIGSEGV: "a crash in compiled code", signal.SIGBUS: "a crash in compiled code",
    signal.SIGILL: "a crash in compiled code", signal.SIGFPE: "a crash in compiled code",
    signal.SIGABRT: "an abort in compiled code, e.g. a failed C assertion",
    signal.SIGKILL: "the kernel's out-of-memory killer, or a kill by hand",
}


def describe_exit(code: Optional[int]) -> str:
    """How a process ended, for a person: "was killed by SIGSEGV (a crash in compiled code)"."""
    if code is None:
        return "did not exit"
    if code == 128 + signal.SIGTERM:
        return "was stopped by a SIGTERM sent to it alone (not to its task)"
    if code < 0:
        try:
            sig = signal.Signals(-code)
        except ValueError:
            return f"was killed by signal {-code}"
        hint = _HINTS.get(sig)
        return f"was killed by {sig.name}" + (f" ({hint})" if hint else "")
    return (f"exited with code {code} before the row returned (os._exit, or exit() in "
            "compiled code)")


@dataclass
class _Child:
    work: rowloop.Work
    process: Any
    conn: Any


@dataclass
class _Tally:
    """What the task's processes did, for its end marker."""

    procs: List[ProcStats] = field(default_factory=list)
    rows: int = 0
    errors: int = 0
    deaths: List[str] = field(default_factory=list)
    in_a_row: int = 0
    gave_up: str = ""
    took_over: List[int] = field(default_factory=list)

    def end(self, *, node: str, started: float, payload_loaded: Optional[float], ended: float) -> End:
        firsts = [p.first_row_at for p in self.procs if p.first_row_at]
        return End(ok=not self.gave_up, failures=[self.gave_up] if self.gave_up else [],
                   rows=self.rows, errors=self.errors, loop_s=sum(p.loop_s for p in self.procs),
                   procs=list(self.procs), first_row_at=min(firsts) if firsts else None,
                   deaths=list(self.deaths), took_over=list(self.took_over), node=node,
                   started=started, payload_loaded=payload_loaded, ended=ended)


class Task:
    """One start of one array task (see the module's docstring)."""

    def __init__(self, ctx: rowloop.Context, ncpu: int, heartbeat: lease.Heartbeat) -> None:
        import multiprocessing as mp
        import multiprocessing.connection

        self.ctx, self.ncpu, self.heartbeat = ctx, ncpu, heartbeat
        self.mp = mp.get_context("fork")
        self.wait_any = multiprocessing.connection.wait
        self.shared = mmap.mmap(-1, 8 * rowloop.SLOT_WIDTH * ncpu)  # inherited by the forks
        self.slots = memoryview(self.shared).cast("q")
        self.children: Dict[int, _Child] = {}
        # What its own workers just wrote, to count rows: values are not read back (``records``).
        self.readers = {p: records.RecordReader(self._rec(p), verify=False) for p in range(ncpu)}
        self.tally = _Tally()
        self.stopping = False
        self.pid = os.getpid()
        self.claims = claims.ClaimReader(ctx.job_dir, ctx.sub)
        self.recorded = lease.Recorded(ctx.job_dir, ctx.sub)
        self.watching: Set[int] = set()
        self.marked_done = False  # its end marker is written: it will do nothing more
        self.settled: Set[int] = set()
        self.finished: Set[int] = set()
        self._params: Optional[ParamsReader] = None
        self.budget = Budget(ctx, f"task {ctx.task}")  # its rows dying count as raising
        signal.signal(signal.SIGTERM, self._on_sigterm)

    # -- processes ------------------------------------------------------------------------------

    def _rec(self, p: int) -> Path:
        return jd.results_path(self.ctx.job_dir, self.ctx.sub, self.ctx.task, p)

    def slot(self, p: int) -> memoryview:
        return self.slots[p * rowloop.SLOT_WIDTH:(p + 1) * rowloop.SLOT_WIDTH]

    def start(self, work: rowloop.Work) -> None:
        if work.proc in self.finished:  # what its finished predecessor recorded is no news
            self.readers[work.proc].read_new_batch()
            self.finished.discard(work.proc)
        at = self.slot(work.proc)
        at[rowloop.CHUNK] = work.resume[0][0] if work.resume else -1
        at[rowloop.ROW] = rowloop.NO_ROW
        at[rowloop.POS] = work.start
        recv, send = self.mp.Pipe(duplex=False)
        process = self.mp.Process(target=_child_main, args=(self.ctx, work, at, send),
                                  name=f"slurm_apply-p{work.proc}")
        # Born with SIGTERM blocked: it must not die of a signal before it can save its rows.
        with claims.sigterm_deferred():
            process.start()
            self.children[work.proc] = _Child(work, process, recv)
        send.close()
        if self.stopping:  # the signal came while it was being started
            _kill(cast(int, process.pid))  # started: it has a pid

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if os.getpid() != self.pid:
            return
        self.stopping = True
        for child in list(self.children.values()):
            _kill(child.process.pid)

    def reap(self, p: int) -> None:
        child = self.children.pop(p)
        child.process.join()
        stats = None
        try:
            if child.conn.poll():
                stats = child.conn.recv()
        except (EOFError, OSError):
            pass
        child.conn.close()
        if stats is not None and child.process.exitcode == 0:
            self.finished.add(p)
            self.tally.procs.append(stats)
            self.tally.rows += stats.rows
            self.tally.errors += stats.errors
            return
        self._death(child, child.process.exitcode)

    # -- deaths ---------------------------------------------------------------------------------

    def chunk_rows(self, c: int) -> List[int]:
        if self._params is None:
            self._params = ParamsReader(jd.params_bin(self.ctx.job_dir, self.ctx.sub))
        return decode_chunk(self._params.chunk(c))[0]

    def _new_rows(self, p: int) -> Set[int]:
        batch = self.readers[p].read_new_batch()
        ids = set(records.array_ids(batch.done)) | set(records.array_ids(batch.err))
        self.tally.rows += sum(batch.n_done) + sum(batch.n_err)
        self.tally.errors += sum(batch.n_err)
        return ids

    def _death(self, child: _Child, code: Optional[int]) -> None:
        """Blame the row in flight alone, then let a replacement finish the chunk."""
        p, at = child.work.proc, self.slot(child.work.proc)
        c, r, pos = at[rowloop.CHUNK], at[rowloop.ROW], at[rowloop.POS]
        new = self._new_rows(p)
        chain = claims.latest(self.ctx.job_dir, self.ctx.sub, c) if c >= 0 else None
        resumed = [entry[0] for entry in child.work.resume]
        # Chunks it was told to resume are run in order: those after the one it died in remain.
        later = list(child.work.resume[resumed.index(c) + 1:]) if c in resumed else []
        blamed = None
        if chain is not None and chain.owner == (self.ctx.task, p):
            chunk = self.chunk_rows(c)
            before = child.work.resume[resumed.index(c)] if c in resumed else (c, frozenset(), 0)
            skip = set(before[1]) | (new & set(chunk))
            if r in chunk and r not in skip:
                blamed = r
                self._record_death(p, r, code)
                skip.add(r)
            if len(skip) < len(chunk):
                # Up to where it died, it may have run rows it had not written yet.
                upto = chunk.index(r) + 1 if r in chunk else 0
                later.insert(0, (c, frozenset(skip), max(upto, before[2])))
        what = f"process {p} {describe_exit(code)}"
        self.tally.deaths.append(what + (f" while running row {blamed}" if blamed is not None else ""))
        self.tally.in_a_row = 0 if new else self.tally.in_a_row + 1  # new: rows it recorded
        if self.tally.gave_up:
            return
        if self.tally.in_a_row >= MAX_DEATHS_IN_A_ROW or len(self.tally.deaths) >= MAX_DEATHS:
            self.tally.gave_up = (
                f"gave up replacing processes after {len(self.tally.deaths)} died"
                + (f", {self.tally.in_a_row} in a row without finishing a row"
                   if self.tally.in_a_row >= MAX_DEATHS_IN_A_ROW else "")
                + f" (last: {what})")
            self._say(self.tally.gave_up + "; the rest of its chunks is left for resubmit()")
            return
        self._say(f"{what}; a replacement goes on with its chunk")
        self.start(rowloop.Work(p, tuple(later), max(pos, 0), read_own=False))

    def _record_death(self, p: int, row: int, code: Optional[int]) -> None:
        message = f"the process running row {row} {describe_exit(code)}"
        log = jd.log_path(self.ctx.job_dir, self.ctx.sub, self.ctx.task)
        tb = (f"WorkerDied: {message}\n(the Python stack at the crash, if it was one, is in the "
              f"task's log: {log})\n")
        frame = records.encode_frame([], [], {row: ("WorkerDied", message, tb)})
        with claims.sigterm_deferred():
            with self.ctx.files.open_records(self._rec(p)) as fh:
                fh.write(frame)
                fh.flush()
                os.fsync(fh.fileno())
        self._new_rows(p)  # past our own frame: it is no progress of the process
        self._say(f"row {row} failed: WorkerDied: {message}")
        self.budget.add(1, f"WorkerDied: {message}")

    def _say(self, text: str) -> None:
        print(f"slurm_apply: {text}", flush=True)

    # -- taking over from dead tasks --------------------------------------------------------------

    def take_over(self, idle: List[int], now: float) -> bool:
        """Look for dead tasks; give their unfinished chunks to idle processes. True if any."""
        ctx = self.ctx
        if self.budget.stopped():  # stopped early (max_failures): nothing more is run
            self.watching = set()
            return False
        dead, running = lease.dead_tasks(ctx.job_dir, ctx.sub, ctx.task, now)
        self.settled -= running
        dead = {t: note for t, note in dead.items() if t not in self.settled}
        self.watching = running | set(dead)
        if not dead:
            return False
        orphans = lease.plan_takeovers(
            self.claims.chains(), dead, self.recorded, self.chunk_rows,
            unknown_dead=lambda c: lease.unknown_owner_is_dead(ctx.job_dir, ctx.sub, c, now))
        works: Dict[int, List[rowloop.Resume]] = {}
        for i, o in enumerate(orphans):
            p = idle[i % len(idle)]
            lost = (o.lost, o.owner) if o.lost is not None else None
            if ctx.files.take_over(o.chunk, o.gen, (ctx.task, p), lost):
                works.setdefault(p, []).append((o.chunk, o.skip, 0))
                self.tally.took_over.append(o.chunk)
                why = ("it stopped on SIGTERM" if dead.get(o.owner[0]) is not None
                       else f"its heartbeat is over {lease.LEASE_S:.0f} s old")
                self._say(f"took over chunk {o.chunk} from task {o.owner[0]} ({why})"
                          + (f"; its row {o.lost} was in flight there and is left missing"
                             if o.lost is not None else ""))
        self.settled |= set(dead)  # taken over here, by another task, or nothing left
        for p, resume in works.items():
            # A taker claims nothing new: every chunk was claimed before its owner died.
            self.start(rowloop.Work(p, tuple(resume), claims.Claimer.NO_MORE, read_own=False))
        return bool(works)

    def take_back(self) -> Dict[int, List[rowloop.Resume]]:
        """After a requeue: this task's unfinished chunks, claimed again, row in flight included."""
        ctx = self.ctx
        mine = {c: ch for c, ch in self.claims.chains().items() if ch.owner[0] == ctx.task}
        works: Dict[int, List[rowloop.Resume]] = {}
        for o in lease.plan_takeovers(mine, {ctx.task: None}, self.recorded, self.chunk_rows,
                                      keep_in_flight=True):
            p = o.owner[1] if 0 <= o.owner[1] < self.ncpu else 0
            if ctx.files.take_over(o.chunk, o.gen, (ctx.task, p)):
                works.setdefault(p, []).append((o.chunk, o.skip, 0))
        return works

    # -- the loop --------------------------------------------------------------------------------

    def run(self, restarted: bool) -> None:
        """Run until every process is done and nothing is left to take over (or SIGTERM)."""
        back = self.take_back() if restarted else {}
        for p in range(self.ncpu):
            self.start(rowloop.Work(p, tuple(back.get(p, ()))))
        linger_until: Optional[float] = None
        # A lingering task looks often, to end soon after the tasks it watches.
        poll = linger_poll_s(self.ctx.manifest.submissions[self.ctx.sub].n_tasks)
        next_scan = 0.0
        while not self.stopping:
            self._wait(poll if linger_until is not None else lease.HEARTBEAT_S)
            try:
                now = self.heartbeat.renew()
            except FileNotFoundError:  # the job directory was removed: nothing to do here
                return
            if self.stopping:
                return
            for p in [p for p, ch in self.children.items() if not ch.process.is_alive()]:
                self.reap(p)
            idle = [p for p in range(self.ncpu) if p not in self.children]
            if idle and not self.tally.gave_up and time.monotonic() >= next_scan:
                if self.take_over(idle, now) and linger_until is not None:
                    self.ctx.files.unmark("idle")  # working again
                    linger_until = None
                next_scan = time.monotonic() + (poll if linger_until is not None else lease.SCAN_S)
            if self.children:
                continue
            if linger_until is None:
                self.ctx.files.mark_idle()
                linger_until = time.monotonic() + lease.LINGER_S
                next_scan = time.monotonic() + poll
            if not self.watching or time.monotonic() > linger_until or self.tally.gave_up:
                break
        if not self.children:  # out of rows (also on SIGTERM while lingering): nothing more to do
            self.mark_done()

    def mark_done(self) -> None:
        """The end marker, this task's last write: it ran out of rows and takes over nothing more."""
        ctx = self.ctx
        end = self.tally.end(node=ctx.node, started=ctx.started, payload_loaded=ctx.loaded,
                             ended=time.time())
        ctx.files.mark_done(end)
        self.marked_done = True
        extra = end.failures + end.deaths
        print(f"slurm_apply: task {ctx.task} finished {end.rows} row(s), {end.errors} "
              f"raised, in {end.ended - ctx.started:.2f} s" + ("; " + "; ".join(extra) if extra else ""),
              flush=True)

    def kill_processes(self) -> None:
        """Stop every process of this task (its job was replaced: they write nothing more there)."""
        for child in self.children.values():
            if child.process.pid is not None:
                _kill(child.process.pid)

    def _wait(self, timeout_s: float) -> None:
        if self.children:
            self.wait_any([ch.process.sentinel for ch in self.children.values()], timeout=timeout_s)
            return
        deadline = time.monotonic() + timeout_s
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        """After SIGTERM: let the processes save, note what was in flight, and go."""
        if self.marked_done:
            return  # its end marker is its last write: nothing was in flight
        deadline = time.monotonic() + STOP_WAIT_S
        in_flight: lease.StopInfo = {}
        for p, child in list(self.children.items()):
            child.process.join(max(0.0, deadline - time.monotonic()))
            at = self.slot(p)
            in_flight[p] = (at[rowloop.CHUNK], at[rowloop.ROW])
        self.heartbeat.stop(in_flight)
        alive = [p for p, ch in self.children.items() if ch.process.is_alive()]
        self._say(f"task {self.ctx.task} got SIGTERM; its processes saved their finished rows"
                  + (f" (processes {alive} did not stop in {STOP_WAIT_S:.0f} s)" if alive else ""))




def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def _child_main(ctx: rowloop.Context, work: rowloop.Work, at: memoryview, conn: Any) -> None:
    import faulthandler

    faulthandler.enable()  # a crash in compiled code prints the Python stack into the task's log
    stats = rowloop.run_process(ctx, work, at)
    conn.send(stats)
    conn.close()
