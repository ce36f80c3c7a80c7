"""Automatic retries without a cluster: the decision (which rows, which limits, ceilings,
retry_errors, the retry budget), what the follow-up records, what the status says, cancel(), and
the whole loop on the local backend, which runs the same follow-up code as Slurm. The real
clusters: tests/test_retries_cluster.py; what Slurm prints about a follow-up: test_parsers.py
and test_slurm_backend.py; the follow-up's script: test_script.py."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from slurm_apply._job import stopping
from slurm_apply import InputError, SlurmJob, slurm_apply
from slurm_apply._backends.slurm import resources as res
from slurm_apply._job import followup as _retry
from slurm_apply._backends import Limits, TaskRecord, Unknown
from slurm_apply._status.retries import RetryLine, retries
from slurm_apply._job.retry_plan import ERROR, Facts, decide
from slurm_apply._status.rowsets import RowSet
from slurm_apply._status.model import JobStatus, TaskStatus
from slurm_apply._store.manifest import GAVE_UP, RETRIED, STOPPED, Decision, Manifest, RetryPolicy, Submission
from rowfns import flaky  # a light module: tasks import it (tests/rowfns.py)

# --- limits in Slurm's forms ---------------------------------------------------------------------


@pytest.mark.parametrize("text, mb", [("200M", 200), ("4G", 4096), (4000, 4000), ("1.5G", 1536),
                                      ("512K", 0.5), ("1T", 2**20), ("500Mc", 500), ("2GB", 2048),
                                      ("lots", None), ("", None)])
def test_memory_sizes_are_read_as_sbatch_reads_them(text, mb):
    assert res.mem_mb(text) == mb


def test_a_raised_memory_keeps_the_users_unit():
    assert [res.mem_text(400, "200M"), res.mem_text(8192, "4G"), res.mem_text(3072, "1.5G"),
            res.mem_text(8000, "4000"), res.mem_text(1536, "1G")] == ["400M", "8G", "3G", "8000M", "1536M"]


@pytest.mark.parametrize("text, seconds", [
    ("90", 5400), ("1:30", 90), ("00:01:00", 60), ("2:00:00", 7200), ("1-00", 86400),
    ("1-2:30", 95400), ("2-00:00:00", 172800), ("UNLIMITED", math.inf), ("soon", None),
    ("1:2:3:4", None)])
def test_time_limits_are_read_in_every_form_sbatch_takes(text, seconds):
    assert res.time_s(text) == seconds


def test_a_raised_time_is_whole_minutes():
    assert [res.time_text(s) for s in (60, 120, 90, 172800, 90000)] == [
        "00:01:00", "00:02:00", "00:02:00", "2-00:00:00", "1-01:00:00"]


# --- the decision --------------------------------------------------------------------------------


def submission(index=0, attempt=0, options=None, cpus=1, rows=((0, 20),), **kw):
    return Submission(index=index, script="submit.sh", rows=rows, n_rows=20, n_tasks=2,
                      cpus_per_task=cpus, n_chunks=20, nodes=2, backend="slurm",
                      slurm_options=dict(options or {}), attempt=attempt, state="submitted",
                      job_id=str(10 + index), **kw)


POLICY = RetryPolicy(retries=2)
DIED = {1: "NODE_FAIL", 2: "PREEMPTED", 3: "LOST", 4: "CANCELLED", 5: "FAILED", 6: ERROR,
        7: "OUT_OF_MEMORY", 8: "TIMEOUT", 9: "NOT_STARTED"}


def test_rows_whose_task_died_are_retried_and_the_rest_are_not():
    plan = decide(POLICY, submission(options={"mem": "200M", "time": "00:01:00"}), Facts(DIED))
    assert plan.retry == {"NODE_FAIL": [1], "PREEMPTED": [2], "LOST": [3], "OUT_OF_MEMORY": [7],
                          "TIMEOUT": [8]}
    assert plan.options == {"mem": "400M", "time": "00:02:00"}
    assert plan.raised == {"mem": ("200M", "400M"), "time": ("00:01:00", "00:02:00")}
    assert plan.given_up == {}


def test_rows_that_raised_are_retried_only_when_asked_and_unchanged():
    plan = decide(RetryPolicy(retries=2, retry_errors=True), submission(options={"mem": "1G"}),
                  Facts({6: ERROR, 1: "NODE_FAIL"}))
    assert plan.retry == {"ERROR": [6], "NODE_FAIL": [1]} and plan.options == {"mem": "1G"}
    assert decide(POLICY, submission(), Facts({6: ERROR})).retry == {}


@pytest.mark.parametrize("options, cpus, policy, limits, expected", [
    ({"mem": "200M"}, 1, dict(max_mem="300M"), Limits(), "300M"),
    ({"mem": "4G"}, 1, {}, Limits(max_mem_mb=6000, partition="big"), "6000M"),
    ({"mem": "4G"}, 1, {}, Limits(max_mem_per_cpu_mb=1000, partition="big"), None),
    ({"mem-per-cpu": "1G"}, 4, {}, Limits(max_mem_per_cpu_mb=1536), "1536M"),
    ({"mem-per-cpu": "1G"}, 4, dict(max_mem="4G"), Limits(), None),
    ({"mem": "300M"}, 1, dict(max_mem="300M"), Limits(), None),
])
def test_more_memory_within_the_users_and_the_partitions_ceilings(options, cpus, policy, limits, expected):
    plan = decide(RetryPolicy(retries=2, **policy), submission(options=options, cpus=cpus),
                  Facts({7: "OUT_OF_MEMORY"}, limits=limits))
    key = next(iter(options))
    if expected is None:
        (why, rows), = plan.given_up.items()
        assert rows == [7] and f"OUT_OF_MEMORY at {options[key]}: no more allowed" in why
    else:
        assert plan.retry == {"OUT_OF_MEMORY": [7]} and plan.options[key] == expected


def test_memory_not_given_is_learned_from_the_scheduler_or_given_up():
    plan = decide(POLICY, submission(), Facts({7: "OUT_OF_MEMORY"}, mem_mb=500))
    assert plan.options == {"mem": "1000M"} and plan.raised == {"mem": ("500M", "1000M")}
    plan = decide(POLICY, submission(), Facts({7: "OUT_OF_MEMORY", 1: "NODE_FAIL"}))
    assert plan.retry == {"NODE_FAIL": [1]}
    assert list(plan.given_up.values()) == [[7]] and "not known" in next(iter(plan.given_up))


@pytest.mark.parametrize("options, policy, limits, facts_s, expected", [
    ({"time": "00:01:00"}, {}, Limits(), None, ("time", "00:02:00")),
    ({"t": "16:00:00"}, dict(max_time="1-00:00:00"), Limits(), None, ("t", "1-00:00:00")),
    ({"time": "1:00:00"}, {}, Limits(max_time_s=3600, partition="short"), None, None),
    ({}, {}, Limits(), 60.0, ("time", "00:02:00")),
    ({}, {}, Limits(), None, None),
])
def test_more_time_within_the_ceilings(options, policy, limits, facts_s, expected):
    plan = decide(RetryPolicy(retries=2, **policy), submission(options=options),
                  Facts({8: "TIMEOUT"}, time_s=facts_s, limits=limits))
    if expected is None:
        assert plan.retry == {} and list(plan.given_up.values()) == [[8]]
    else:
        assert plan.options[expected[0]] == expected[1]


def test_no_row_is_retried_more_than_retries_times():
    plan = decide(POLICY, submission(attempt=2), Facts({1: "NODE_FAIL"}))
    assert plan.retry == {} and plan.given_up == {"NODE_FAIL: all 2 retries used": [1]}


# --- the manifest and the status -------------------------------------------------------------


def manifest(subs, retries_=2, **kw):
    return Manifest(jobname="fit", job_dir="/jobs/_rslurm_fit", token="abc", created="now",
                    n_rows=20, columns=["x"], function="m.f", python="/usr/bin/python3",
                    python_version="3.11", workdir="/jobs", retry=RetryPolicy(retries=retries_),
                    submissions=list(subs), **kw)


def chain():
    """Rows 7 and 9 out of memory at 200M; 7 done at 400M, 9 out of memory again."""
    return [submission(0, options={"mem": "200M"}, followup="retry_s0.sh",
                       decision=Decision(RETRIED, 1.0, retry=1)),
            submission(1, attempt=1, options={"mem": "400M"}, retry_of=0, followup="retry_s1.sh",
                       retried_for={"OUT_OF_MEMORY": ((7, 8), (9, 10))}, raised={"mem": ("200M", "400M")},
                       decision=Decision(RETRIED, 2.0, retry=2)),
            submission(2, attempt=2, options={"mem": "800M"}, retry_of=1,
                       retried_for={"OUT_OF_MEMORY": ((9, 10),)}, raised={"mem": ("400M", "800M")})]


def test_a_retry_round_trips_through_the_manifest():
    m = manifest(chain(), retries_stopped="stopped by cancel() at now")
    back = Manifest.from_json(json.loads(json.dumps(m.to_json())))
    assert back == m
    old = m.to_json()
    del old["retry"], old["retries_stopped"]
    for s in old["submissions"]:
        for key in ("attempt", "retry_of", "retried_for", "raised", "followup", "decision"):
            del s[key]
    assert Manifest.from_json(old).retry == RetryPolicy()  # a directory written before retries


def test_a_retry_derives_from_its_submission_without_its_follow_up():
    nxt = chain()[1].derive(index=3)
    assert (nxt.followup, nxt.followup_id, nxt.decision, nxt.attempt, nxt.retry_of) == ("", None, None, 0, None)
    assert nxt.slurm_options == {"mem": "400M"}


def outcomes(done=(), failed=(), n=20):
    """The rows by outcome as the status has them (runs); rows neither done nor failed are missing."""
    done, failed = RowSet.from_rows(sorted(done)), RowSet.from_rows(sorted(failed))
    return {"failed": failed, "missing": (done | failed).complement(n), "pending": RowSet()}


def no_work(sub):
    return False


def test_each_retried_rows_history_is_grouped_and_shown_in_text_and_html():
    r = retries(manifest(chain()[:2]), [], {}, outcomes(done=range(20)), 0.0, no_work)
    assert r.lines == [RetryLine([(7, 8), (9, 10)], 2, [("OUT_OF_MEMORY", "200M")], ("done", "400M"))]
    r = retries(manifest(chain()), [], {}, outcomes(done=[7]), 0.0, no_work)
    assert r.lines == [RetryLine([(7, 8)], 1, [("OUT_OF_MEMORY", "200M")], ("done", "400M")),
                       RetryLine([(9, 10)], 1, [("OUT_OF_MEMORY", "200M"), ("OUT_OF_MEMORY", "400M")],
                                 ("missing", "800M"))]
    assert (r.state, r.busy) == ("used up", False)
    st = JobStatus(jobname="fit", job_dir="/jobs/_rslurm_fit", state="INCOMPLETE", completed=False,
                   ended=True, rows_total=20, rows_done=19, rows_failed=0, rows_missing=1, tasks={},
                   reasons={}, missing_rows=[9], retries=r)
    text = str(st)
    assert "retried: row 7: OUT_OF_MEMORY at 200M, done at 400M" in text
    assert "retried: row 9: OUT_OF_MEMORY at 200M, OUT_OF_MEMORY at 400M, missing at 800M" in text
    assert "automatic retries: all 2 retries used" in text
    assert "row 9: OUT_OF_MEMORY at 200M, OUT_OF_MEMORY at 400M, missing at 800M" in st._repr_html_()


def test_a_retry_of_millions_of_rows_costs_a_few_set_operations_on_runs():
    n = 5_000_000
    subs = [submission(0, rows=((0, n),)),
            submission(1, attempt=1, retry_of=0, rows=((0, n),), retried_for={"PREEMPTED": ((0, n),)})]
    m = manifest(subs)
    m.n_rows = n
    rows = outcomes(done=[], n=n)
    rows["missing"] = RowSet.from_rows([5, 6, 7, 100])
    t0 = time.perf_counter()
    r = retries(m, [], {}, rows, 0.0, no_work)
    assert time.perf_counter() - t0 < 2.0
    assert [(line.rows[:2], line.n_rows, line.outcome[0]) for line in r.lines] == [
        ([(0, 5), (8, 100)], n - 4, "done"), ([(5, 8), (100, 101)], 4, "missing")]


def test_retried_rows_are_named_by_params_df_labels(tmp_path):
    calls = tmp_path / "calls"
    calls.mkdir()
    params = pd.DataFrame({"x": range(4)}, index=[f"run{i}" for i in range(4)])
    job = slurm_apply(flaky, params, add_objects={"CALLS": str(calls), "SLEEP": 0}, jobname="named",
                      job_dir=tmp_path, backend="local", nodes=1, cpus_per_node=1, retry_errors=True)
    status = job.wait(timeout_s=60, progress=False)
    assert "retried: rows 'run1', 'run3': raised, done" in str(status), str(status)


def follow(answer, now=1000.0, **kw):
    sub = submission(0, followup="retry_s0.sh", followup_id="11")
    tasks = [TaskStatus(0, 0, "COMPLETED"), TaskStatus(0, 1, "OUT_OF_MEMORY")]
    return retries(manifest([sub], **kw), tasks, {0: answer}, outcomes(), now, lambda s: True)


def test_the_job_has_not_ended_while_its_follow_up_may_still_retry():
    pending = TaskRecord("11", None, "PENDING", reason="Dependency")
    assert (follow(pending).state, follow(pending).busy) == ("deciding", True)
    assert (follow(Unknown("squeue failed")).state, follow(Unknown("x")).busy) == ("unknown", True)
    just = TaskRecord("11", None, "COMPLETED", end_time=995.0)
    assert follow(just).busy  # its decision may not be visible yet
    gone = TaskRecord("11", None, "TIMEOUT", end_time=100.0)
    assert (follow(gone).state, follow(gone).busy) == ("lost", False)
    assert "ended without deciding (TIMEOUT)" in follow(gone).detail
    assert (follow(pending, retries_stopped="stopped by cancel()").state,
            follow(pending, retries_stopped="x").busy) == ("stopped", False)


def test_a_submission_with_every_row_accounted_for_does_not_wait_for_its_follow_up():
    sub = submission(0, followup="retry_s0.sh", followup_id="11")
    r = retries(manifest([sub]), [TaskStatus(0, 0, "COMPLETED")], {0: TaskRecord("11", None, "PENDING")},
                outcomes(done=range(20)), 0.0, no_work)
    assert (r.state, r.busy) == ("", False)


# --- the follow-up itself, on job directories ------------------------------------------------------


def runs(calls: Path) -> dict:
    out: dict = {}
    for name in os.listdir(calls):
        out[int(name.split(".")[0])] = out.get(int(name.split(".")[0]), 0) + 1
    return out


def local_job(tmp_path, name, n=8, sleep=0.0, **kw):
    calls = tmp_path / f"{name}-calls"
    calls.mkdir()
    job = slurm_apply(flaky, pd.DataFrame({"x": range(n)}), add_objects={"CALLS": str(calls), "SLEEP": sleep},
                      jobname=name, job_dir=tmp_path, backend="local", nodes=2, cpus_per_node=1, **kw)
    return job, calls


def test_rows_that_raised_are_retried_locally_with_retry_errors(tmp_path):
    job, calls = local_job(tmp_path, "again", retry_errors=True)
    status = job.wait(timeout_s=60, progress=False)
    assert status.completed and status.rows_failed == 0, str(status)
    assert job.get_output().result.tolist() == [x * 10 for x in range(8)]
    assert runs(calls) == {0: 1, 1: 2, 2: 1, 3: 2, 4: 1, 5: 2, 6: 1, 7: 1}
    assert "retried: rows 1, 3, 5: raised, done" in str(status)
    first, retry = job.manifest.submissions
    assert first.decision.action == RETRIED and first.decision.retry == 1
    assert (retry.attempt, retry.retry_of, retry.retried_for) == (1, 0, {"ERROR": ((1, 2), (3, 4), (5, 6))})


def test_rows_that_raised_are_not_retried_by_default_and_retries_0_writes_no_follow_up(tmp_path):
    job, calls = local_job(tmp_path, "errors")
    status = job.wait(timeout_s=60, progress=False)
    assert status.failed_rows == [1, 3, 5] and len(job.manifest.submissions) == 1
    assert "retried" not in str(status)
    job, calls = local_job(tmp_path, "noretry", retries=0)
    job.wait(timeout_s=60, progress=False)
    assert job.manifest.latest.followup == "" and not (job.job_dir / "retry_s0.sh").exists()


def test_the_follow_up_names_a_failed_row_without_importing_pandas(tmp_path):
    """The follow-up is a small job of its own: with params_df's default index, naming the first
    failed row needs no pandas (its import was most of a follow-up's CPU); labels still need it."""
    import subprocess
    import sys

    job, calls = local_job(tmp_path, "light", retries=0)
    job.wait(timeout_s=60, progress=False)
    code = ("import sys; from slurm_apply import SlurmJob\n"
            f"s = SlurmJob.from_dir({str(job.job_dir)!r}).get_job_status()\n"
            "print(repr(s.first_error[:6]), 'pandas' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "'row 1:' False", out
    named = slurm_apply(lambda x: 1 / x, pd.DataFrame({"x": [1, 0]}, index=["a", "b"]), backend="local",
                        job_dir=tmp_path, jobname="named", retries=0, nodes=1, cpus_per_node=1)
    named.wait(timeout_s=60, progress=False)
    out = subprocess.run([sys.executable, "-c", code.replace(str(job.job_dir), str(named.job_dir))],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "\"row 'b\" True", out


def test_cancel_during_a_retry_stops_further_retries_locally(tmp_path):
    job, calls = local_job(tmp_path, "stop", retry_errors=True, sleep=60)
    deadline = time.monotonic() + 30
    # The retry has run rows 1 and 5, and runs row 3, which now sleeps.
    while runs(calls).get(3, 0) < 2 or job.get_job_status().rows_done < 7:
        assert time.monotonic() < deadline, runs(calls)
        time.sleep(0.1)
    job.cancel()
    status = job.wait(timeout_s=60, progress=False)
    assert status.retries.state == "stopped" and "stopped by cancel()" in str(status), str(status)
    # Row 3 keeps the error of its first run; its retry was cancelled before it had a result.
    assert status.failed_rows == [3] and status.rows_done == 7 and status.ended
    time.sleep(1.5)
    assert len(SlurmJob(job.job_dir).manifest.submissions) == 2 and max(runs(calls).values()) == 2


class _Stub:
    """A job whose status never says its tasks have ended (the scheduler cannot be asked)."""

    def __init__(self, job_dir):
        self.job_dir, self.jobname = job_dir, "u"
        self.manifest = SlurmJob(job_dir).manifest

    def _unfinished_tasks(self):
        return [(0, 0)]

    def log_path(self, k, t):
        return self.job_dir / "no-such.log"

    def get_job_status(self):
        st = JobStatus(jobname="u", job_dir=str(self.job_dir), state="UNKNOWN", completed=False,
                       ended=False, rows_total=4, rows_done=0, rows_failed=0, rows_missing=0, tasks={},
                       reasons={})
        st.task_details = [TaskStatus(0, 0, "UNKNOWN", reason="squeue failed: connect failure")]
        return st


def written(tmp_path, name):
    return slurm_apply(flaky, pd.DataFrame({"x": range(4)}), add_objects={"CALLS": "", "SLEEP": 0},
                       jobname=name, job_dir=tmp_path, backend="local", submit=False, preflight=False)


def test_tasks_the_scheduler_cannot_tell_about_are_never_retried_blindly(tmp_path):
    job = written(tmp_path, "unknown")
    status, why = _retry.settled(_Stub(job.job_dir), 0, settle_s=0.0)
    assert status is None and "still UNKNOWN (squeue failed: connect failure)" in why
    decision = _retry._decide(_Stub(job.job_dir), 0, status, why)
    assert decision.action == GAVE_UP and decision.detail == why
    assert SlurmJob(job.job_dir).manifest.submissions[0].decision == decision


def test_cancel_stops_a_follow_up_that_has_not_yet_decided(tmp_path):
    job = written(tmp_path, "cancelled")
    stopping.stop_retries(job.job_dir, "cancel()")
    decision = _retry._decide(_Stub(job.job_dir), 0, None, "")
    assert decision.action == STOPPED and decision.detail.startswith("stopped by cancel() at ")
    done, _ = local_job(tmp_path, "rearmed", n=1)
    done.wait(timeout_s=60, progress=False)
    stopping.stop_retries(done.job_dir, "cancel()")
    done.resubmit(rows=[0], submit=False)  # a resubmission by hand is retried as the first run
    assert done.manifest.retries_stopped == "" and done.manifest.latest.followup == "retry_s1.sh"


@pytest.mark.parametrize("kw", [dict(retries=-1), dict(retries=True), dict(retries=1.5),
                                dict(retry_errors="yes"), dict(max_mem="lots"), dict(max_time="soon"),
                                dict(max_mem=True)])
def test_retry_arguments_are_checked_before_anything_is_written(tmp_path, kw):
    with pytest.raises(InputError):
        slurm_apply(flaky, pd.DataFrame({"x": [1]}), jobname="bad", job_dir=tmp_path, backend="local",
                    submit=False, **kw)
    assert not (tmp_path / "_rslurm_bad").exists()


def test_a_status_with_retries_given_up_is_plain_json():
    """to_dict() (the CLI's --json) holds the rows not retried and the missing rows' task
    states as plain lists and dicts, though the status keeps them as runs."""
    from slurm_apply._status.retries import Retries
    from slurm_apply._status.rowsets import RowReasons

    states = RowReasons()
    states.add(RowSet.from_rows([3, 4]), "OUT_OF_MEMORY")
    st = JobStatus(jobname="fit", job_dir="/jobs/_rslurm_fit", state="INCOMPLETE", completed=False,
                   ended=True, rows_total=20, rows_done=18, rows_failed=0, rows_missing=2, tasks={},
                   reasons={}, missing_rows=RowSet.from_rows([3, 4]), missing_states=states,
                   retries=Retries(state="gave up", given_up={"OUT_OF_MEMORY: all 2 retries used":
                                                              RowSet.from_rows([3, 4])}))
    out = json.loads(json.dumps(st.to_dict()))
    assert out["retries"]["given_up"] == {"OUT_OF_MEMORY: all 2 retries used": [3, 4]}
    assert out["missing_states"] == {"3": "OUT_OF_MEMORY", "4": "OUT_OF_MEMORY"}
    assert out["missing_rows"] == [3, 4]
