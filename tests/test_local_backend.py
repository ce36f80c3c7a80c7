"""The local backend on its own: who its supervisor is (pid, start time, host), what a query
answers when it cannot know, how many tasks run at once, one writer of the state file, cancel."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from slurm_apply import SchedulerError, slurm_apply as apply
from slurm_apply._store import layout as jd
from slurm_apply._backends import TaskRecord, Unknown
from slurm_apply._backends.local import backend as local
from slurm_apply._backends.local import procs
from slurm_apply._store.manifest import Submission

HOST = socket.gethostname()


def make_job(tmp_path: Path, script: str = "exit 0\n", n_tasks: int = 1, cpus: int = 1):
    job_dir = tmp_path / "job"
    (job_dir / "logs").mkdir(parents=True)
    (job_dir / "submit.sh").write_text(script)
    sub = Submission(index=0, script="submit.sh", rows=((0, n_tasks),), n_rows=n_tasks, n_tasks=n_tasks,
                     cpus_per_task=cpus, n_chunks=n_tasks, nodes=n_tasks, backend="local")
    return job_dir, sub


def write_files(job_dir: Path, pid: int, start, tasks, host: str = HOST) -> None:
    """A state file and a supervisor identity as a submit would leave them."""
    local.local_dir(job_dir).mkdir(exist_ok=True)
    jd.write_json(local.runner_path(job_dir, 0), {"pid": pid, "start": start, "host": host,
                                                   "job_id": f"local-{pid}"})
    jd.write_json(local.state_path(job_dir, 0), {"format": 1, "script": "submit.sh", "cpus_per_task": 1,
                                                  "parallel": 1, "tasks": tasks})


def answers(job_dir: Path, sub: Submission):
    q = local.LocalBackend().query(job_dir, [sub])
    return [q.answers[(0, t)] for t in range(sub.n_tasks)]


def wait_for(cond, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def sleeper():
    """A live process in its own process group, as a supervisor would be."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def test_a_live_process_with_the_recorded_start_time_is_the_supervisor(tmp_path, sleeper):
    job_dir, sub = make_job(tmp_path)
    start = procs._proc_stat(sleeper.pid)[1]
    write_files(job_dir, sleeper.pid, start, {"0": {"state": "RUNNING"}})
    [rec] = answers(job_dir, sub)
    assert isinstance(rec, TaskRecord) and rec.state == "RUNNING" and rec.node_list == HOST
    local.LocalBackend().cancel(job_dir, [sub])
    assert sleeper.wait(timeout=5) == -signal.SIGTERM  # it was signalled...
    [rec] = answers(job_dir, sub)
    assert rec.state == "CANCELLED"  # ...and, as it could not record that, the cancel did


def test_a_reused_pid_is_not_the_supervisor(tmp_path, sleeper):
    job_dir, sub = make_job(tmp_path)
    start = procs._proc_stat(sleeper.pid)[1]
    # The pid now belongs to a process that started at another time: the supervisor is gone.
    write_files(job_dir, sleeper.pid, start - 1, {"0": {"state": "RUNNING"}, "1": {"state": "PENDING"}})
    sub = dataclasses.replace(sub, n_tasks=2)
    recs = answers(job_dir, sub)
    assert [r.state for r in recs] == ["LOST", "LOST"]
    assert f"the local runner (pid {sleeper.pid} on {HOST}) is gone" in recs[0].reason
    local.LocalBackend().cancel(job_dir, [sub])
    time.sleep(0.2)
    assert sleeper.poll() is None  # not signalled
    assert [r.state for r in answers(job_dir, sub)] == ["LOST", "LOST"]  # nothing was cancelled


def test_our_own_pid_with_another_start_time_is_lost_not_running(tmp_path):
    job_dir, sub = make_job(tmp_path)
    start = procs._proc_stat(os.getpid())[1]
    write_files(job_dir, os.getpid(), start + 12345, {"0": {"state": "RUNNING"}})
    assert answers(job_dir, sub)[0].state == "LOST"


def test_another_host_is_unknown(tmp_path, sleeper):
    job_dir, sub = make_job(tmp_path)
    write_files(job_dir, sleeper.pid, procs._proc_stat(sleeper.pid)[1], {"0": {"state": "RUNNING"}},
                host="elsewhere.example")
    [ans] = answers(job_dir, sub)
    assert isinstance(ans, Unknown)
    assert ans.why == "the local runner of submission 0 runs on host elsewhere.example; look from there"
    with pytest.raises(SchedulerError, match="elsewhere.example"):
        local.LocalBackend().cancel(job_dir, [sub])
    assert sleeper.poll() is None


@pytest.mark.parametrize("content", [None, b"{not json", b'{"tasks": 3}'])
@pytest.mark.parametrize("runner_alive", [True, False])
def test_unreadable_state_is_unknown_never_lost(tmp_path, sleeper, content, runner_alive):
    job_dir, sub = make_job(tmp_path)
    start = procs._proc_stat(sleeper.pid)[1]
    write_files(job_dir, sleeper.pid, start if runner_alive else start - 1, {"0": {"state": "RUNNING"}})
    path = local.state_path(job_dir, 0)
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    [ans] = answers(job_dir, sub)
    assert isinstance(ans, Unknown) and "cannot read the local runner's states" in ans.why


def test_unreadable_identity_is_unknown(tmp_path):
    job_dir, sub = make_job(tmp_path)
    write_files(job_dir, 1, 1, {"0": {"state": "RUNNING"}})
    local.runner_path(job_dir, 0).write_text("garbage")
    [ans] = answers(job_dir, sub)
    assert isinstance(ans, Unknown) and "identity" in ans.why


def test_parallelism_follows_the_cpus_this_process_may_use(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert local.parallel_tasks(2) == 4 and local.parallel_tasks(3) == 2 and local.parallel_tasks(16) == 1
    sub = Submission(index=0, script="submit.sh", rows=((0, 100),), n_rows=100, n_tasks=10, cpus_per_task=2,
                     n_chunks=10, nodes=10, backend="local")
    notice = local.LocalBackend().launch_notice(sub)
    assert notice == "running the 10 array task(s) on this machine, 4 at a time"
    # An array throttle (%M) holds too.
    throttled = dataclasses.replace(sub, max_concurrent=3)
    assert local.LocalBackend().launch_notice(throttled).endswith(", 3 at a time")
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    assert local.parallel_tasks(2) == 32


def test_the_submitter_never_writes_the_state_after_the_supervisor(tmp_path, monkeypatch):
    job_dir, sub = make_job(tmp_path, script="exit 0\n")
    real_popen = subprocess.Popen

    def slow_popen(*args, **kwargs):
        # Let the supervisor run its only task to the end before the submitter goes on: a
        # submitter that writes the state file after starting it would set it back to PENDING.
        proc = real_popen(*args, **kwargs)
        wait_for(lambda: local.read_state(job_dir, 0).tasks[0].state == "COMPLETED")
        return proc

    monkeypatch.setattr(local.subprocess, "Popen", slow_popen)
    job_id = local.LocalBackend().submit(job_dir, sub)
    monkeypatch.undo()
    assert local.read_state(job_dir, 0).tasks[0].state == "COMPLETED"
    sub = dataclasses.replace(sub, job_id=job_id)
    [rec] = answers(job_dir, sub)
    assert rec.state == "COMPLETED" and rec.exit_code == "0:0" and rec.end_time and rec.array_job_id == job_id


def test_a_failing_task_and_the_supervisor_identity(tmp_path):
    job_dir, sub = make_job(tmp_path, script="exit 3\n", n_tasks=2)
    job_id = local.LocalBackend().submit(job_dir, sub)
    ident = jd.read_json(local.runner_path(job_dir, 0))
    assert job_id == f"local-{ident['pid']}" and ident["host"] == HOST and isinstance(ident["start"], int)
    sub = dataclasses.replace(sub, job_id=job_id)
    wait_for(lambda: all(isinstance(a, TaskRecord) and a.state == "FAILED" for a in answers(job_dir, sub)))
    assert [a.exit_code for a in answers(job_dir, sub)] == ["3:0", "3:0"]


def test_a_dead_supervisors_running_task_is_running_and_cancel_stops_it(tmp_path):
    # Issue 16, bug 2: the runner's death says nothing of its task processes; their own identity
    # (pid and start time) does.
    job_dir, sub = make_job(tmp_path, script="exec sleep 60\n")
    sub = dataclasses.replace(sub, job_id=local.LocalBackend().submit(job_dir, sub))
    wait_for(lambda: local.read_state(job_dir, 0).tasks[0].state == "RUNNING")
    task_pid = local.read_state(job_dir, 0).tasks[0].proc.pid
    runner = jd.read_json(local.runner_path(job_dir, 0))["pid"]
    os.kill(runner, signal.SIGKILL)
    wait_for(lambda: procs._proc_stat(runner) is None or procs._proc_stat(runner)[0] == "Z")
    answer = answers(job_dir, sub)[0]
    assert answer.state == "RUNNING" and "is gone; the task still runs" in answer.reason
    local.LocalBackend().cancel(job_dir, [sub])
    assert answers(job_dir, sub)[0].state == "CANCELLED"
    wait_for(lambda: procs._proc_stat(task_pid) is None or procs._proc_stat(task_pid)[0] == "Z")


def test_a_dead_supervisors_task_that_is_gone_too_is_lost(tmp_path):
    job_dir, sub = make_job(tmp_path, script="exec sleep 60\n")
    sub = dataclasses.replace(sub, job_id=local.LocalBackend().submit(job_dir, sub))
    wait_for(lambda: local.read_state(job_dir, 0).tasks[0].state == "RUNNING")
    task_pid = local.read_state(job_dir, 0).tasks[0].proc.pid
    os.kill(jd.read_json(local.runner_path(job_dir, 0))["pid"], signal.SIGKILL)
    os.kill(task_pid, signal.SIGKILL)
    wait_for(lambda: answers(job_dir, sub)[0].state == "LOST")
    assert "is gone" in answers(job_dir, sub)[0].reason


def test_cancel_of_a_running_job_saves_its_rows(tmp_path):
    seen = tmp_path / "seen"

    def quick(x):
        import time

        time.sleep(0.002)
        with open(SEEN, "a") as fh:  # noqa: F821 - a global on the node (add_objects)
            fh.write(f"{x}\n")
        return x

    job = apply(quick, pd.DataFrame({"x": range(100_000)}), backend="local", job_dir=tmp_path, jobname="stop",
                nodes=1, cpus_per_node=2, add_objects={"SEEN": str(seen)})
    wait_for(lambda: job.get_job_status().rows_done >= 100)
    job.cancel()
    status = job.get_job_status()
    assert status.tasks == {0: "CANCELLED"} and status.ended, str(status)
    ran = {int(line) for line in seen.read_text().split()}
    log = jd.log_path(job.job_dir, 0, 0).read_text()
    # Each of the task's two processes got SIGTERM and saved what it held in memory: at most the
    # row each was finishing when the signal came is missing.
    assert log.count("got SIGTERM; saved its finished rows") == 2, log
    assert len(ran) - 2 <= status.rows_done <= len(ran) and status.rows_done >= 100


def test_without_proc_ps_tells_who_a_process_is(monkeypatch, tmp_path, sleeper):
    monkeypatch.setattr(procs, "PROC", tmp_path / "no-proc")
    state, start = procs._proc_stat(sleeper.pid)
    assert state in ("R", "S") and start  # R: a loaded machine may not have put `sleep` to sleep yet
    assert procs.is_alive(procs.identity(sleeper.pid))
    sleeper.kill()
    sleeper.wait()
    assert procs._proc_stat(sleeper.pid) is None


def test_a_job_whose_runner_cannot_be_asked_is_unknown_not_over(tmp_path):
    def slow(x):
        import time

        time.sleep(30)

    job = apply(slow, pd.DataFrame({"x": range(2)}), backend="local", job_dir=tmp_path, jobname="unknown",
                nodes=1, cpus_per_node=1)
    path = local.runner_path(job.job_dir, 0)
    good = path.read_text()
    path.write_text(good.replace(f'"{HOST}"', '"elsewhere.example"'))
    status = job.get_job_status()
    assert status.state == "UNKNOWN" and not status.ended and status.tasks == {0: "UNKNOWN"}
    assert "runs on host elsewhere.example; look from there" in status.reasons[0]
    with pytest.raises(SchedulerError):
        job.cancel()
    path.write_text(good)
    job.cancel()
    assert job.get_job_status().tasks == {0: "CANCELLED"}


def test_the_runner_files_are_typed_records_in_the_json_earlier_versions_wrote(tmp_path):
    from slurm_apply._store import localrun

    job_dir = tmp_path / "_rslurm_typed"
    local.local_dir(job_dir).mkdir(parents=True)
    old = {"format": 1, "script": "submit.sh", "cpus_per_task": 2, "parallel": 2,
           "tasks": {"0": {"state": "RUNNING", "started": 1.5, "proc": {"pid": 42, "start": 991, "host": "vm"}},
                     "1": {"state": "FAILED", "started": 1.0, "ended": 2.0, "exit_code": 3,
                           "proc": {"pid": 43, "start": "Mon Dec  7 14:00:00 2026", "host": "vm"}}},
           "followup": "retry.s0.sh", "followup_run": {"state": "PENDING"}}
    jd.write_json(local.state_path(job_dir, 0), old)
    state = local.read_state(job_dir, 0)
    assert state.tasks[0].proc == localrun.Proc(42, 991, "vm") and state.tasks[1].exit_code == 3
    assert state.tasks[1].proc.start == "Mon Dec  7 14:00:00 2026" and state.followup == "retry.s0.sh"
    localrun.write_state(job_dir, 0, state)
    assert jd.read_json(local.state_path(job_dir, 0)) == dict(old, env={})
    jd.write_json(local.runner_path(job_dir, 0), {"pid": 40, "start": 990, "host": "vm", "job_id": "local-40",
                                                   "started_at": 1.0})
    ident = local.read_identity(job_dir, 0)
    assert ident.proc.pid == 40 and ident.job_id == "local-40"
    for bad in ({"tasks": {"0": {"started": 1}}}, {"tasks": {"x": {"state": "PENDING"}}}, [1]):
        jd.write_json(local.state_path(job_dir, 0), bad)
        with pytest.raises(ValueError):
            local.read_state(job_dir, 0)
