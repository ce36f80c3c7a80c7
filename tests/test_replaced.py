"""A task of a replaced job writes nothing into the new one (issue 16, bug 3).

``overwrite=True`` replaces a job directory; a task of the old job that nobody could stop (here:
one started by hand, so no scheduler knows it) must not write into the new job: its heartbeat,
stop note, markers, takeovers and death records are all checked against the job's token.
"""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from slurm_apply import slurm_apply
from slurm_apply._store import layout as jd
from slurm_apply._store.markers import End, Start
from slurm_apply._store.taskfiles import JobReplaced, TaskFiles
from rowfns import _slow  # a light module: tasks import it (tests/rowfns.py)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start_task_by_hand(job):
    env = dict(os.environ, SLURM_APPLY_TASK="0",  # as submit.sh sets it
               PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.path.join(REPO, "tests"),
                                                     os.environ.get("PYTHONPATH")])))
    return subprocess.Popen([sys.executable, "-m", "slurm_apply._node", str(job.job_dir), "0",
                             job.manifest.token], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_an_old_task_writes_nothing_into_the_job_that_replaced_its_directory(tmp_path):
    df = pd.DataFrame({"x": range(40)})
    old = slurm_apply(_slow, df, backend="local", submit=False, job_dir=tmp_path, jobname="re",
                      nodes=1, cpus_per_node=1)
    proc = _start_task_by_hand(old)
    deadline = time.monotonic() + 60
    # A claim is made by a worker, after the task has set its SIGTERM handler (the start marker
    # comes before it: a SIGTERM then would end the task by default, without a word).
    while not any(jd.claims_dir(old.job_dir, 0).iterdir()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGSTOP)  # frozen: it cannot notice that its directory goes
    new = slurm_apply(_slow, df, backend="local", job_dir=tmp_path, jobname="re", nodes=1,
                      cpus_per_node=1, overwrite=True)
    try:
        assert new.job_dir == old.job_dir and new.manifest.token != old.manifest.token
        beat = jd.task_marker(new.job_dir, 0, 0, "live")
        while not beat.exists():  # the new job's task 0 runs, with the same file names
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGTERM)  # the old task stops: it would write a stop note
        os.kill(proc.pid, signal.SIGCONT)
        out, _ = proc.communicate(timeout=30)
        assert beat.stat().st_size == 0, f"the old task wrote into the new job: {beat.read_text()}\n{out}"
        assert "now holds another job" in out, out
    finally:
        new.cancel()


def test_every_write_by_path_checks_the_token(tmp_path):
    jd.make_submission_dirs(tmp_path, 0)
    jd.write_token(tmp_path, "new")
    files = TaskFiles(tmp_path, 0, 0, "old")
    for write in (files.start_heartbeat, files.renew_heartbeat, lambda: files.write_stop_note({}),
                  lambda: files.record_start(Start()), files.mark_idle, lambda: files.unmark("done"),
                  lambda: files.mark_done(End()), lambda: files.open_records(tmp_path / "x.rec"),
                  lambda: files.take_over(0, 1, (0, 0)), lambda: files.publish_count("t0000-p1", 0, 1),
                  lambda: files.write_stop({})):
        with pytest.raises(JobReplaced):
            write()
    assert sorted(p.name for p in jd.tasks_dir(tmp_path, 0).iterdir()) == []
    assert not (tmp_path / "x.rec").exists()


def test_force_does_not_go_on_when_the_cancel_fails(tmp_path, monkeypatch):
    from slurm_apply import SchedulerError
    from slurm_apply._backends.local.backend import LocalBackend

    df = pd.DataFrame({"x": range(40)})
    job = slurm_apply(_slow, df, backend="local", job_dir=tmp_path, jobname="force", nodes=1,
                      cpus_per_node=1)
    cancel = LocalBackend.cancel

    def refuse(self, job_dir, subs):
        raise SchedulerError("the runner's host does not answer")

    monkeypatch.setattr(LocalBackend, "cancel", refuse)
    try:
        with pytest.raises(SchedulerError, match="did not delete"):
            job.cleanup_files(force=True)
        assert (job.job_dir / jd.MANIFEST).exists()
        with pytest.raises(SchedulerError, match="did not replace"):
            slurm_apply(_slow, df, backend="local", job_dir=tmp_path, jobname="force", nodes=1,
                        cpus_per_node=1, overwrite=True, force=True)
        assert jd.load_manifest(job.job_dir).token == job.manifest.token
    finally:
        monkeypatch.setattr(LocalBackend, "cancel", cancel)
        job.cancel()
