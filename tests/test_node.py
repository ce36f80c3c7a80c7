"""The node side without Slurm: a crash costs one row, signals never lose a row, and a dead
task's chunks are taken over. Array tasks run here as ``python -m slurm_apply._node``, as
submit.sh runs them; the crash tests on the real cluster are in test_crash.py."""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pandas as pd
import pytest

from slurm_apply._store import layout as jd
from slurm_apply import slurm_apply
from slurm_apply._store.taskfiles import TaskFiles
from slurm_apply._node import lease
from slurm_apply._node.task import describe_exit
from slurm_apply._store import claims, records
from rowfns import logged, dies, segfaults_from_3  # a light module: tasks import it (tests/rowfns.py)


def write_job(parent: Path, name: str, n: int, delay: float, **kw) -> Tuple[object, Path]:
    runs = parent / f"{name}.runs"
    runs.mkdir()
    kw.setdefault("nodes", 1)
    kw.setdefault("cpus_per_node", 2)
    job = slurm_apply(logged, pd.DataFrame({"x": range(n)}), add_objects={"RUNS": str(runs), "DELAY": delay},
                      backend="local", submit=False, jobname=name, job_dir=parent, seed=False, **kw)
    return job, runs


def start_task(job, task: int) -> subprocess.Popen:
    """Run an array task as submit.sh would (this module's functions travel by reference)."""
    env = dict(os.environ, SLURM_APPLY_TASK=str(task))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [job.manifest.pythonpath, env.get("PYTHONPATH")]))
    log = open(jd.log_path(job.job_dir, 0, task), "ab")
    return subprocess.Popen([sys.executable, "-m", "slurm_apply._node", str(job.job_dir), "0", job.manifest.token],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def recorded(job) -> Tuple[collections.Counter, Dict[int, Tuple[str, str, str]]]:
    """How many times each row is recorded (done or failed), and the errors."""
    seen: collections.Counter = collections.Counter()
    errors: Dict[int, Tuple[str, str, str]] = {}
    for path in sorted(jd.results_dir(job.job_dir, 0).glob("*.rec")):
        for frame in records.RecordReader(path).read_new():
            seen.update(int(r) for r in frame.done)
            seen.update(int(r) for r in frame.err)
            errors.update(records.parse_errors(frame))
    return seen, errors


def runs_by_pid(runs: Path, task: Optional[int] = None) -> Dict[str, List[int]]:
    """{"<task>.<pid>": rows that process started, in order} (of one task, if given)."""
    return {p.name: [int(x) for x in p.read_text().split()] for p in runs.iterdir()
            if task is None or p.name.startswith(f"{task}.")}


# --- signals never lose a row -------------------------------------------------------------------


@pytest.mark.parametrize("to_group", [True, False], ids=["whole-task", "parent-only"])
def test_sigterm_at_random_moments_loses_no_row(tmp_path, to_group):
    """SIGTERM a task at a random moment (as Slurm does at a time limit or scancel: to every
    process of the task; or to its parent only, which forwards it), then start it again (a
    requeue). Exactly: each process loses at most the one row it had in flight, every row
    finished before the signal is recorded, and after the restart every row is recorded
    exactly once; the rows run twice are rows that were in flight."""
    rng = random.Random(1234)
    moments = 6  # one random moment in each sixth of the first half second: spread, not clustered
    for i in range(moments):
        job, runs = write_job(tmp_path, f"term{i}", n=160, delay=0.001, rows_per_chunk=7)
        proc = start_task(job, 0)
        time.sleep(rng.uniform(i / moments, (i + 1) / moments) * 0.5)
        (os.killpg if to_group else os.kill)(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) in (-signal.SIGTERM, 0), proc.returncode
        seen, _ = recorded(job)
        first = runs_by_pid(runs)
        in_flight = set()
        for pid, started in first.items():
            lost = [r for r in started if r not in seen]
            assert len(lost) <= 1, (pid, lost)  # at most its row in flight, nothing finished
            in_flight.update(lost)
        assert all(n == 1 for n in seen.values()), seen.most_common(3)

        assert start_task(job, 0).wait(timeout=60) == 0  # the requeued task
        seen, errors = recorded(job)
        assert sorted(seen) == list(range(160)) and set(seen.values()) == {1} and not errors
        started = collections.Counter(r for rs in runs_by_pid(runs).values() for r in rs)
        twice = {r for r, n in started.items() if n > 1}
        assert twice <= in_flight and max(started.values()) <= 2, (twice, in_flight)
        assert job.get_output(outtype="raw") == [x * 10 for x in range(160)]


# --- whatever a row does, it costs that row ----------------------------------------------------


@pytest.mark.parametrize("mode, etype, message", [
    ("segfault", "WorkerDied", "the process running row 5 was killed by SIGSEGV (a crash in compiled code)"),
    ("abort", "WorkerDied", "the process running row 5 was killed by SIGABRT (an abort in compiled code"),
    ("sys.exit", "SystemExit", "bad input for row 5"),
    ("KeyboardInterrupt", "KeyboardInterrupt", "interrupted in row 5"),
    ("os._exit", "WorkerDied", "the process running row 5 exited with code 3 before the row returned"),
    ("SIGKILL", "WorkerDied", "the process running row 5 was killed by SIGKILL (the kernel's out-of-memory"),
])
def test_a_dying_row_costs_only_that_row(tmp_path, mode, etype, message):
    job = slurm_apply(dies, pd.DataFrame({"x": range(40)}), add_objects={"MODE": mode}, backend="local",
                      nodes=2, cpus_per_node=2, rows_per_chunk=10, jobname="dies", job_dir=tmp_path)
    status = job.wait(timeout_s=60, progress=False)
    assert status.ended and status.failed_rows == [5] and status.rows_done == 39, str(status)
    assert set(status.tasks.values()) == {"COMPLETED"}, str(status)
    err = job.get_errors()[5]
    assert err[0] == etype and err[1].startswith(message), err
    assert f"row 5: {etype}: {message}" in str(status)
    kept = job.get_output(errors="keep")
    assert list(kept.result.drop(5)) == [x for x in range(40) if x != 5]
    assert len(job.manifest.submissions) == 1  # no resubmission


def test_a_task_whose_processes_keep_dying_gives_up_and_says_so(tmp_path):
    job = slurm_apply(segfaults_from_3, pd.DataFrame({"x": range(30)}), backend="local", nodes=1,
                      cpus_per_node=2, rows_per_chunk=5, jobname="crashy", job_dir=tmp_path)
    status = job.wait(timeout_s=60, progress=False)
    assert status.tasks == {0: "FAILED"}, str(status)
    assert "gave up replacing processes" in status.reasons[0]
    assert "3 in a row without finishing a row" in status.reasons[0]
    done = json.loads(jd.task_marker(job.job_dir, 0, 0, "done").read_text())
    assert not done["ok"] and done["failures"] == [status.reasons[0]]
    assert status.rows_done == 3 and 3 <= status.rows_failed <= 3 + 8  # bounded: no endless forks
    chains = claims.ClaimReader(job.job_dir, 0).chains()
    for r in status.missing_rows:  # in a chunk it had taken, or in one nobody took
        why = status.missing_reasons[r]
        assert ("gave up" in why) if r // 5 in chains else why.startswith("never started"), (r, why)
    log = jd.log_path(job.job_dir, 0, 0).read_text()
    assert "slurm_apply: gave up replacing processes" in log


@pytest.mark.parametrize("code, text", [
    (-11, "was killed by SIGSEGV (a crash in compiled code)"),
    (-9, "was killed by SIGKILL (the kernel's out-of-memory killer, or a kill by hand)"),
    (-200, "was killed by signal 200"), (2, "exited with code 2 before the row returned"),
    (143, "was stopped by a SIGTERM sent to it alone"),
])
def test_deaths_are_described(code, text):
    assert describe_exit(code).startswith(text)


# --- a dead task's chunks are taken over ---------------------------------------------------------


def wait_for(pred, timeout_s: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("death", ["SIGTERM", "silent"])
def test_live_tasks_finish_a_dead_tasks_chunks(tmp_path, death):
    """Task 1 dies a quarter of the way in: stopped by SIGTERM (it notes its rows in flight), or
    silently (SIGKILL, like a lost node: its heartbeat just gets old). Task 0 finishes its
    chunks; only task 1's row in flight is missing, blamed on task 1."""
    job, runs = write_job(tmp_path, death, n=120, delay=0.02, nodes=2, cpus_per_node=1, rows_per_chunk=6)
    t0, t1 = start_task(job, 0), start_task(job, 1)
    wait_for(lambda: sum(recorded(job)[0].values()) >= 30, what="rows")
    os.killpg(t1.pid, signal.SIGTERM if death == "SIGTERM" else signal.SIGKILL)
    t1.wait(timeout=30)
    if death == "silent":  # as if LEASE_S had passed since its last heartbeat
        old = time.time() - lease.LEASE_S - 5
        os.utime(lease.heartbeat_path(job.job_dir, 0, 1), (old, old))
    assert t0.wait(timeout=90) == 0
    seen, errors = recorded(job)
    missing = set(range(120)) - set(seen)
    assert set(seen.values()) == {1} and not errors
    started_by_1 = {r for rows in runs_by_pid(runs, task=1).values() for r in rows}
    in_flight = started_by_1 - set(seen)
    assert len(in_flight) <= 1 and in_flight <= missing, (in_flight, missing)
    # A silent death leaves no note: the first row of its chunk without a record is taken to be
    # the one in flight, which is one it had not begun if it died between two rows.
    assert missing == in_flight or (death == "silent" and len(missing) == 1), (missing, in_flight)
    lost = claims.read_lost(job.job_dir, 0)
    assert set(lost) <= missing and all(who == (1, 0) for who in lost.values())
    chains = claims.ClaimReader(job.job_dir, 0).chains()
    c = max((r for r in started_by_1), default=0) // 6  # the chunk task 1 was in
    if missing and min(missing) % 6 != 5:  # rows were left after its row in flight
        assert chains[c].owners == [(1, 0), (0, 0)] and chains[c].lost == {min(missing): (1, 0)}
        assert f"took over chunk {c} from task 1" in jd.log_path(job.job_dir, 0, 0).read_text()
    started = collections.Counter(r for rs in runs_by_pid(runs).values() for r in rs)
    assert max(started.values()) == 1  # the lost row is not run again


# --- claims and the takeover plan ----------------------------------------------------------------


def test_claim_generations_are_exclusive_and_keep_the_lost_row(tmp_path):
    jd.make_submission_dirs(tmp_path, 0)
    assert claims.try_claim(tmp_path, 0, 7, 1, 0)
    assert claims.try_take_over(tmp_path, 0, 7, 1, (0, 1), lost=(70, (1, 0)))
    assert not claims.try_take_over(tmp_path, 0, 7, 1, (2, 0))
    (jd.claims_dir(tmp_path, 0) / "c000008").write_text("")  # a writer SIGKILLed half-way
    chains = claims.ClaimReader(tmp_path, 0).chains()
    assert chains[7].owners == [(1, 0), (0, 1)] and chains[7].lost == {70: (1, 0)}
    assert chains[8].owner == claims.UNKNOWN_OWNER and chains[7].next_gen == 2
    assert claims.read_claims(tmp_path, 0) == {7: (0, 1), 8: (-1, -1)}
    assert claims.latest(tmp_path, 0, 7).owner == (0, 1) and claims.latest(tmp_path, 0, 9) is None


def _frames(path: Path, done: List[int], failed: List[int] = ()) -> None:
    with records.open_for_append(path) as fh:
        fh.write(records.encode_frame(done, [0] * len(done), {r: ("E", "m", "tb") for r in failed}))


def test_the_plan_skips_recorded_rows_and_the_row_in_flight(tmp_path):
    jd.make_submission_dirs(tmp_path, 0)
    for c, owner in ((0, (1, 0)), (1, (1, 0)), (2, (1, 1)), (3, (2, 0)), (4, (1, 0))):
        claims.try_claim(tmp_path, 0, c, *owner)
    _frames(jd.results_path(tmp_path, 0, 1, 0), [0, 1, 2, 3], [10])  # chunk 0 whole, 1 begun
    _frames(jd.results_path(tmp_path, 0, 1, 1), [20])
    rows = {c: list(range(10 * c, 10 * c + 4)) for c in range(5)}
    plan = lease.plan_takeovers(claims.ClaimReader(tmp_path, 0).chains(), {1: None},
                                lease.Recorded(tmp_path, 0), rows.__getitem__)
    # Silent death: the first row without a record was in flight; chunk 0 is finished.
    assert [(o.chunk, o.lost, sorted(o.skip)) for o in plan] == [
        (1, 11, [10, 11]), (2, 21, [20, 21]), (4, 40, [40])]
    # Stopped on SIGTERM: its note says process 0 was in row 12, process 1 had finished row 20
    # (recorded: nothing lost there), and process 0 was not in chunk 4 (so it lost nothing).
    note = {0: (1, 12), 1: (2, 20)}
    plan = lease.plan_takeovers(claims.ClaimReader(tmp_path, 0).chains(), {1: note},
                                lease.Recorded(tmp_path, 0), rows.__getitem__)
    assert [(o.chunk, o.lost, sorted(o.skip)) for o in plan] == [
        (1, 12, [10, 12]), (2, None, [20]), (4, 40, [40])]
    back = lease.plan_takeovers(claims.ClaimReader(tmp_path, 0).chains(), {1: None},
                                lease.Recorded(tmp_path, 0), rows.__getitem__, keep_in_flight=True)
    assert [(o.chunk, sorted(o.skip)) for o in back] == [(1, [10]), (2, [20]), (4, [])]


def test_a_stale_heartbeat_is_dead_a_fresh_one_alive_and_a_stop_note_dead_at_once(tmp_path):
    jd.make_submission_dirs(tmp_path, 0)
    jd.write_token(tmp_path, "tok")
    beats = {t: lease.Heartbeat(TaskFiles(tmp_path, 0, t, "tok")) for t in range(4)}
    now = beats[0].renew()
    old = now - lease.LEASE_S - 1
    os.utime(beats[1].path, (old, old))
    beats[2].stop({0: (3, 31)})
    jd.write_json(jd.task_marker(tmp_path, 0, 3, "done"), {"ok": True})  # ended: not watched
    dead, running = lease.dead_tasks(tmp_path, 0, 0, now)
    assert dead == {1: None, 2: {0: (3, 31)}} and running == set()
    beats[1].renew()
    dead, running = lease.dead_tasks(tmp_path, 0, 0, beats[1].now)
    assert set(dead) == {2} and running == {1}


def test_a_task_reads_only_the_neutral_variables(tmp_path):
    """Slurm's own task id is not enough: the task is told by submit.sh, in SLURM_APPLY_TASK."""
    job, _ = write_job(tmp_path, "neutral", 2, 0.0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_APPLY_")}
    env["SLURM_ARRAY_TASK_ID"] = "0"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [job.manifest.pythonpath, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "slurm_apply._node", str(job.job_dir), "0", job.manifest.token],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "SLURM_APPLY_TASK is not set" in proc.stderr, proc.stderr
