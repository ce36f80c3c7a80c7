"""SlurmBackend's logic: which command is asked, and what a failure becomes.

Fake ``sacct``/``squeue``/``sbatch``/``scancel`` shell scripts, alone on PATH, stand in for
Slurm (they use shell builtins only, since nothing else is on PATH). The end of the file runs
``query()`` against the real private test cluster.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd
import pytest

from slurm_apply import JobActiveError, SchedulerError, SlurmJob, SubmissionError, slurm_apply
from slurm_apply._backends import Limits, Unknown, get
from slurm_apply._backends.slurm import backend as slurm
from slurm_apply._backends.base import TaskRecord
from slurm_apply._store.manifest import SUBMITTED, Submission

CONNECT_FAILURE = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"
DBD_DOWN = ("sacct: error: slurm_persist_conn_open_without_init: failed to open persistent connection "
            "to host:localhost:6819: Connection refused\n"
            "sacct: error: Sending PersistInit msg: Connection refused\n"
            "sacct: error: Problem talking to the database: Connection refused")


def sub(index: int, job_id: str, n_tasks: int, script: str = "submit.sh") -> Submission:
    return Submission(index=index, script=script, rows=((0, n_tasks),), n_rows=n_tasks,
                      n_tasks=n_tasks, cpus_per_task=1, n_chunks=n_tasks, nodes=n_tasks,
                      backend="slurm", state=SUBMITTED, job_id=job_id)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """fake(name=body, ...) writes those commands and makes them all that is on PATH; returns
    a function giving the command lines run so far."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    monkeypatch.setenv("PATH", str(bin_dir))

    def make(**bodies: str):
        for name, body in bodies.items():
            exe = bin_dir / name
            exe.write_text(f'#!/bin/sh\necho "${{0##*/}} $*" >> "{log}"\n{body}\n')
            exe.chmod(0o755)
        return lambda: log.read_text().splitlines() if log.exists() else []

    return make


def prints(text: str, rc: int = 0, to: str = "") -> str:
    """A fake's body: print ``text`` (to stderr with to=">&2") and exit ``rc``."""
    quoted = text.replace("'", "'\\''")
    return f"printf '%s\\n' '{quoted}' {to}\nexit {rc}"


SQUEUE_OUT = "7|0|RUNNING|None|n1|0:05|5:00|500M|1795255424\n7|1|COMPLETED|None|n2|0:03|5:00|500M|1795255140"


def test_sacct_answers_alone(fake, tmp_path):
    calls = fake(sacct=prints("7_0|RUNNING|0:0|00:00:05||500M|n1|00:05:00|Unknown\n"
                              "7_1|COMPLETED|0:0|00:00:03||500M|n2|00:05:00|1795255140"))
    q = get("slurm").query(tmp_path, [sub(0, "7", 2)])
    assert q.answers[0, 0].state == "RUNNING" and q.answers[0, 0].end_time is None
    assert q.answers[0, 1].end_time == 1795255140.0
    assert q.notes == [] and q.calls == 1
    assert calls() == [f"sacct --parsable2 --noheader -j 7 -o {slurm.SACCT_FIELDS}"]


def test_failed_sacct_falls_back_to_squeue_with_one_note(fake, tmp_path):
    calls = fake(sacct=prints(DBD_DOWN, rc=1, to=">&2"), squeue=prints(SQUEUE_OUT))
    q = get("slurm").query(tmp_path, [sub(0, "7", 2)])
    assert q.notes == ["sacct could not be used, so squeue was asked: sacct failed: "
                       "sacct: error: Problem talking to the database: Connection refused"]
    assert q.answers[0, 0].state == "RUNNING" and q.answers[0, 0].end_time is None  # a forecast
    assert q.answers[0, 1].state == "COMPLETED" and q.answers[0, 1].end_time == 1795255140.0
    assert q.calls == 2 and [c.split()[0] for c in calls()] == ["sacct", "squeue"]


def test_sacct_time_out_falls_back_to_squeue(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(slurm, "QUERY_TIMEOUT_S", 1)
    fake(sacct="exec /bin/sleep 10", squeue=prints(SQUEUE_OUT))
    t0 = time.monotonic()
    q = get("slurm").query(tmp_path, [sub(0, "7", 2)])
    assert time.monotonic() - t0 < 8
    assert q.notes == ["sacct could not be used, so squeue was asked: sacct did not answer within 1 s"]
    assert {k: a.state for k, a in q.answers.items()} == {(0, 0): "RUNNING", (0, 1): "COMPLETED"}


def test_no_accounting_is_no_failure(fake, tmp_path):
    fake(sacct=prints("Slurm accounting storage is disabled", rc=1, to=">&2"), squeue=prints(SQUEUE_OUT))
    q = get("slurm").query(tmp_path, [sub(0, "7", 2)])
    assert q.notes == [] and q.calls == 2 and q.answers[0, 1].state == "COMPLETED"


def test_both_failing_gives_unknown_for_every_task_never_none(fake, tmp_path):
    fake(sacct=prints(DBD_DOWN, rc=1, to=">&2"), squeue=prints(CONNECT_FAILURE, rc=1, to=">&2"))
    q = get("slurm").query(tmp_path, [sub(0, "7", 2), sub(1, "9", 3)])
    assert len(q.notes) == 1
    assert set(q.answers) == {(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)}
    assert set(q.answers.values()) == {Unknown(f"squeue failed: {CONNECT_FAILURE}")}


def test_squeue_failing_leaves_what_sacct_answered(fake, tmp_path, monkeypatch):
    """A held array has no accounting record yet: only it is asked of squeue."""
    monkeypatch.setattr(slurm, "QUERY_TIMEOUT_S", 1)
    calls = fake(sacct=prints("7_0|COMPLETED|0:0|00:00:03||500M|n1|00:05:00|1795255140\n"
                              "7_1|COMPLETED|0:0|00:00:03||500M|n1|00:05:00|1795255140"),
                 squeue="exec /bin/sleep 10")
    q = get("slurm").query(tmp_path, [sub(0, "7", 2), sub(1, "9", 2)])
    assert q.answers[0, 0].state == q.answers[0, 1].state == "COMPLETED"
    assert q.answers[1, 0] == q.answers[1, 1] == Unknown("squeue did not answer within 1 s")
    assert calls()[1] == f"squeue -h -r -t all -j 9 -o {slurm.SQUEUE_FORMAT}"


def test_commands_missing_from_path_give_unknown_naming_path(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    q = get("slurm").query(tmp_path, [sub(0, "7", 2)])
    why = "squeue is not on PATH; is Slurm loaded in this shell (module load slurm)?"
    assert q.answers == {(0, 0): Unknown(why), (0, 1): Unknown(why)}
    assert q.notes == ["sacct could not be used, so squeue was asked: "
                       "sacct is not on PATH; is Slurm loaded in this shell (module load slurm)?"]
    assert q.calls == 2


def test_forgotten_ids_are_none_not_unknown(fake, tmp_path):
    fake(sacct=prints("Slurm accounting storage is disabled", rc=1, to=">&2"),
         squeue=prints("slurm_load_jobs error: Invalid job id specified", rc=1, to=">&2"))
    q = get("slurm").query(tmp_path, [sub(0, "7", 2)])
    assert q.answers == {(0, 0): None, (0, 1): None} and q.notes == []


def test_unsubmitted_submissions_are_not_asked_about(fake, tmp_path):
    calls = fake()
    q = get("slurm").query(tmp_path, [sub(0, "", 2)])
    assert (q.answers, q.calls, calls()) == ({}, 0, [])


def test_a_collapsed_pending_line_answers_its_tasks_and_a_task_line_wins(fake, tmp_path):
    fake(sacct=prints("7_[0-2]|PENDING|0:0|00:00:00||500M|None assigned|00:05:00|Unknown\n"
                      "7_1|RUNNING|0:0|00:00:01||500M|n1|00:05:00|Unknown"))
    q = get("slurm").query(tmp_path, [sub(0, "7", 3)])
    assert [q.answers[0, t].state for t in range(3)] == ["PENDING", "RUNNING", "PENDING"]
    assert q.calls == 1


# --- sbatch, scancel, adopt --------------------------------------------------------------------


def test_submit_returns_the_job_id(fake, tmp_path):
    calls = fake(sbatch=prints("1234;cluster"))
    assert get("slurm").submit(tmp_path, sub(0, "", 2)) == "1234"
    assert calls() == [f"sbatch --parsable {tmp_path / 'submit.sh'}"]


def test_sbatch_time_out_is_a_submission_error_saying_the_job_may_be_queued(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(slurm, "COMMAND_TIMEOUT_S", 1)
    fake(sbatch="exec /bin/sleep 10")
    with pytest.raises(SubmissionError) as info:
        get("slurm").submit(tmp_path, sub(0, "", 2))
    assert str(info.value) == (
        "sbatch did not answer within 1 s. The job may have been queued anyway: before submitting "
        "again, look for it with `squeue --me -o '%F %o'` (its script is "
        f"{tmp_path / 'submit.sh'}) and cancel it with `scancel <id>` if it is there.")


@pytest.mark.parametrize("body, message", [
    (prints("sbatch: error: Batch job submission failed: Invalid partition name specified", 1, ">&2"),
     "sbatch refused the job: sbatch: error: Batch job submission failed: Invalid partition name specified"),
    ("exit 1", "sbatch refused the job: exit status 1"),
    (prints("Submitted batch job"), "could not read a job id from sbatch's output: 'Submitted batch job\\n'. "
                                    "The job may have been queued anyway"),
])
def test_sbatch_refusals_are_submission_errors(fake, tmp_path, body, message):
    fake(sbatch=body)
    with pytest.raises(SubmissionError) as info:
        get("slurm").submit(tmp_path, sub(0, "", 2))
    assert str(info.value).startswith(message)


def test_sbatch_missing_is_a_submission_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SubmissionError, match=r"^sbatch is not on PATH; is Slurm loaded in this shell"):
        get("slurm").submit(tmp_path, sub(0, "", 2))


def test_cancel(fake, tmp_path):
    calls = fake(scancel=prints("scancel: error: Kill job error on job id 9: Invalid job id specified",
                                1, ">&2"))
    get("slurm").cancel(tmp_path, [sub(0, "7", 2), sub(1, "9", 1), sub(2, "", 1)])
    assert calls() == ["scancel 7 9"]
    fake(scancel=prints("scancel: error: Kill job error on job id 7: Unable to contact slurm controller "
                        "(connect failure)", 1, ">&2"))
    with pytest.raises(SchedulerError, match=r"^scancel failed: .*Unable to contact slurm controller"):
        get("slurm").cancel(tmp_path, [sub(0, "7", 2)])


def test_adopt_finds_a_hand_submission_by_name_and_script(fake, tmp_path, monkeypatch):
    (tmp_path / "submit.sh").write_text('#!/bin/bash\n#SBATCH --array=0-1\n#SBATCH --job-name="my job"\n')
    calls = fake(squeue=prints(f"41|/elsewhere/submit.sh\n42|{tmp_path / 'submit.sh'}"))
    assert get("slurm").adopt(tmp_path, sub(0, "", 2)) == "42"
    assert calls() == ["squeue -h -t all -n my job -o %F|%o"]
    fake(squeue=prints(CONNECT_FAILURE, 1, ">&2"))
    assert get("slurm").adopt(tmp_path, sub(0, "", 2)) is None
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert get("slurm").adopt(tmp_path, sub(0, "", 2)) is None


# --- through SlurmJob --------------------------------------------------------------------------


def _submitted_job(tmp_path: Path, fake, monkeypatch: pytest.MonkeyPatch) -> SlurmJob:
    fake(sbatch=prints("77"), scontrol=prints("MaxArraySize = 1001"))
    # Slurm's config is cached per SLURM_CONF: a name of our own makes the fake's the one read.
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "fake-slurm.conf"))
    return slurm_apply(lambda x: x, pd.DataFrame({"x": [1, 2, 3, 4]}), jobname="fake", nodes=2,
                       cpus_per_node=1, job_dir=tmp_path, backend="slurm")


def test_a_job_slurm_cannot_be_asked_about_is_unknown_not_lost(fake, tmp_path, monkeypatch):
    job = _submitted_job(tmp_path, fake, monkeypatch)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    status = job.get_job_status()
    assert status.tasks == {0: "UNKNOWN", 1: "UNKNOWN"} and status.state == "UNKNOWN"
    assert not status.ended
    assert status.reasons[0] == "squeue is not on PATH; is Slurm loaded in this shell (module load slurm)?"
    assert "note: sacct could not be used, so squeue was asked: sacct is not on PATH" in str(status)
    with pytest.raises(JobActiveError):
        job.cleanup_files()
    assert job.job_dir.exists()


def test_a_failed_sacct_does_not_raise_out_of_status(fake, tmp_path, monkeypatch):
    job = _submitted_job(tmp_path, fake, monkeypatch)
    fake(sacct=prints(DBD_DOWN, 1, ">&2"),
         squeue=prints("77|0|RUNNING|None|n1|0:05|5:00|500M|N/A\n77|1|PENDING|Resources||0:00|5:00|500M|N/A"))
    status = job.get_job_status()
    assert status.tasks == {0: "RUNNING", 1: "PENDING"} and status.state == "RUNNING"
    assert len(status.notes) == 1 and "Problem talking to the database" in status.notes[0]
    assert job.scheduler_queries == 2


# --- the real test cluster ---------------------------------------------------------------------


def _sbatch_array(where: Path, n: int, body: str) -> Submission:
    script = where / "submit.sh"
    script.write_text(f"#!/bin/bash\n#SBATCH --array=0-{n - 1}\n#SBATCH --job-name=probe\n"
                      f"#SBATCH --output={where}/%a.out\n{body}\n")
    job_id = get("slurm").submit(where, sub(0, "", n))
    return sub(0, job_id, n)


def _query_until(where: Path, s: Submission, done, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while True:
        q = get("slurm").query(where, [s])
        if done(q) or time.monotonic() > deadline:
            return q
        time.sleep(1)


def _all_ended(q) -> bool:
    return all(isinstance(a, TaskRecord) and a.end_time is not None for a in q.answers.values())


def test_query_on_the_real_cluster(any_cluster, job_parent):
    s = _sbatch_array(job_parent, 2, "exit $SLURM_ARRAY_TASK_ID")
    t0 = time.time()
    # With accounting, squeue answers until slurmdbd has the records; then sacct alone does.
    calls = 1 if any_cluster.accounting else 2  # without: sacct says it is disabled, then squeue
    q = _query_until(job_parent, s, lambda q: _all_ended(q) and q.calls == calls)
    assert q.notes == [] and q.calls == calls
    states = {t: q.answers[0, t].state for t in range(2)}
    assert states == {0: "COMPLETED", 1: "FAILED"}
    for t in range(2):
        assert t0 - 5 <= q.answers[0, t].end_time <= time.time() + 1


def test_query_on_the_real_cluster_without_slurm_on_path(cluster_noacct, job_parent, monkeypatch):
    s = _sbatch_array(job_parent, 2, "sleep 30")
    q = get("slurm").query(job_parent, [s])
    assert all(isinstance(a, TaskRecord) for a in q.answers.values())
    monkeypatch.setenv("PATH", str(job_parent / "nowhere"))
    q = get("slurm").query(job_parent, [s])
    why = "squeue is not on PATH; is Slurm loaded in this shell (module load slurm)?"
    assert q.answers == {(0, 0): Unknown(why), (0, 1): Unknown(why)}
    monkeypatch.undo()
    for key, value in cluster_noacct.env().items():
        monkeypatch.setenv(key, value)
    get("slurm").cancel(job_parent, [s])


def test_held_array_is_asked_of_squeue_with_accounting(cluster, job_parent):
    script = job_parent / "held.sh"
    script.write_text("#!/bin/bash\n#SBATCH --array=0-2\n#SBATCH --hold\n"
                      f"#SBATCH --output={job_parent}/h%a.out\ntrue\n")
    s = sub(0, get("slurm").submit(job_parent, sub(0, "", 3, script="held.sh")), 3, script="held.sh")
    try:
        q = get("slurm").query(job_parent, [s])
        assert {q.answers[0, t].state for t in range(3)} == {"PENDING"}
        assert q.answers[0, 0].reason == "JobHeldUser" and q.answers[0, 0].end_time is None
    finally:
        get("slurm").cancel(job_parent, [s])
    q = _query_until(job_parent, s, _all_ended, timeout_s=30)
    assert {q.answers[0, t].state for t in range(3)} == {"CANCELLED"}


# --- a submission's follow-up (automatic retries) ------------------------------------------------


def with_followup(job_id: str = "7", followup_id: str = "9") -> Submission:
    return Submission(index=0, script="submit.sh", rows=((0, 1),), n_rows=1, n_tasks=1, cpus_per_task=1,
                      n_chunks=1, nodes=1, backend="slurm", state=SUBMITTED, job_id=job_id,
                      followup="retry_s0.sh", followup_id=followup_id)


def test_the_follow_up_is_asked_about_in_the_same_sacct_call(fake, tmp_path):
    calls = fake(sacct=prints("7_0|COMPLETED|0:0|00:00:03||500M|n1|00:05:00|1795255140\n"
                              "9|RUNNING|0:0|00:00:01||768M|n2|00:15:00|Unknown"))
    q = get("slurm").query(tmp_path, [with_followup()])
    assert q.answers[0, 0].state == "COMPLETED" and q.followups[0].state == "RUNNING"
    assert q.calls == 1 and calls() == [f"sacct --parsable2 --noheader -j 7,9 -o {slurm.SACCT_FIELDS}"]


def test_a_follow_up_sacct_does_not_know_is_asked_of_squeue_and_may_be_unknown(fake, tmp_path):
    fake(sacct=prints("7_0|COMPLETED|0:0|00:00:03||500M|n1|00:05:00|1795255140"),
         squeue=prints("9|N/A|PENDING|Dependency||0:00|15:00|768M|N/A"))
    assert get("slurm").query(tmp_path, [with_followup()]).followups[0].reason == "Dependency"
    fake(squeue=prints(CONNECT_FAILURE, rc=1, to=">&2"))
    assert get("slurm").query(tmp_path, [with_followup()]).followups[0] == Unknown(
        f"squeue failed: {CONNECT_FAILURE}")


def test_the_follow_up_depends_on_its_array_and_is_cancelled_with_it(fake, tmp_path):
    calls = fake(sbatch=prints("12"), scancel="exit 0")
    assert get("slurm").submit_followup(tmp_path, with_followup(followup_id=None)) == "12"
    get("slurm").cancel(tmp_path, [with_followup()])
    assert calls() == [f"sbatch --parsable --dependency=afterany:7 --kill-on-invalid-dep=yes "
                       f"{tmp_path}/retry_s0.sh", "scancel 7 9"]


def test_a_partitions_limits_come_from_scontrol(fake, tmp_path):
    debug = "PartitionName=debug Default=YES MaxTime=UNLIMITED MaxMemPerNode=UNLIMITED"
    short = "PartitionName=short Default=NO MaxTime=04:00:00 MaxMemPerCPU=2000"
    calls = fake(scontrol=f'case "$*" in *short) echo "{short}";; *) printf "%s\\n" "{debug}" "{short}";; esac')
    assert get("slurm").limits({}) == Limits(max_time_s=math.inf, partition="debug")
    assert get("slurm").limits({"partition": "short"}) == Limits(
        max_time_s=14400, max_mem_per_cpu_mb=2000, partition="short")
    assert calls() == ["scontrol -o show partition", "scontrol -o show partition short"]
    fake(scontrol=prints("slurm_load_partitions: Unable to contact slurm controller", rc=1, to=">&2"))
    assert get("slurm").limits({"p": "long"}) == Limits(partition="long")  # unknown: no ceiling
