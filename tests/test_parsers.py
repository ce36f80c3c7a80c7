"""The pure parsers of the Slurm backend and _status, on literal output seen from Slurm 22.05."""

from __future__ import annotations

import pytest

from slurm_apply._backends.slurm import parse as sp
from slurm_apply._backends.base import TaskRecord
from slurm_apply._errors import SchedulerError
from slurm_apply._backends import Unknown, get
from slurm_apply._status.classify import MARKER_GRACE_S, classify, last_error_line, mem_text
from slurm_apply._status.render import compress_rows
from slurm_apply._store.markers import End

SACCT = """\
5_0|COMPLETED|0:0|00:00:03||200M|n1|00:01:00
5_0.batch|COMPLETED|0:0|00:00:03|3096K||n1|
5_0.extern|COMPLETED|0:0|00:00:03|0||n1|
5_1|FAILED|0:9|00:00:09||200M|n2|00:01:00
5_1.batch|FAILED|0:9|00:00:09|420968K||n2|
5_[2-4,7]|PENDING|0:0|00:00:00||200M|None assigned|00:01:00
9_3|CANCELLED by 0|0:15|00:00:04||500M|n3|UNLIMITED
"""


def test_parse_sacct_allocation_and_batch_step():
    recs = {(r.array_job_id, r.task): r for r in sp.parse_sacct(SACCT)}
    assert recs["5", 0].state == "COMPLETED" and recs["5", 0].max_rss == "3096K"
    failed = recs["5", 1]
    assert (failed.state, failed.exit_code, failed.max_rss, failed.req_mem, failed.node_list) == (
        "FAILED", "0:9", "420968K", "200M", "n2")
    assert failed.time_limit == "00:01:00"
    pending = recs["5", None]
    assert pending.state == "PENDING" and pending.pending_tasks == (2, 3, 4, 7)
    assert recs["9", 3].state == "CANCELLED"  # "CANCELLED by 0" -> first word


# Slurm's states that are not the package's own, as sacct and squeue print them.
SACCT_SLURM_NAMES = """\
3_0|CONFIGURING|0:0|00:00:01||1G|n1|1:00|Unknown
3_1|COMPLETING|0:0|00:00:09||1G|n1|1:00|1795255140
3_2|REVOKED|0:0|00:00:00||1G|n1|1:00|1795255140
3_3|SPECIAL_EXIT|1:0|00:00:02||1G|n1|1:00|1795255140
3_4|REQUEUE_HOLD|0:0|00:00:00||1G|n1|1:00|Unknown
3_5|RESV_DEL_HOLD|0:0|00:00:00||1G|n1|1:00|Unknown
3_6|STOPPED|0:0|00:00:04||1G|n1|1:00|Unknown
3_7|OUT_OF_MEMORY|0:125|00:00:04||1G|n1|1:00|1795255140
8|REQUEUE_FED|0:0|00:00:00||1G|n1|1:00|Unknown
"""
OURS = {0: "RUNNING", 1: "RUNNING", 2: "CANCELLED", 3: "FAILED", 4: "REQUEUED", 5: "PENDING",
        6: "RUNNING", 7: "OUT_OF_MEMORY"}


def test_the_parsers_answer_in_the_package_own_state_names():
    from slurm_apply._backends import states

    by = {r.task: r for r in sp.parse_sacct(SACCT_SLURM_NAMES)}
    assert {t: r.state for t, r in by.items()} == OURS
    assert by[1].end_time == 1795255140.0  # Slurm's COMPLETING has ended: its end time is kept
    squeue = "".join(f"3|{t}|{line.split('|')[1]}|None|n1|0:01|1:00|1G|N/A\n"
                     for t, line in enumerate(SACCT_SLURM_NAMES.splitlines()[:8]))
    assert {r.task: r.state for r in sp.parse_squeue(squeue)} == OURS
    assert sp.parse_sacct_jobs(SACCT_SLURM_NAMES)["8"].state == "REQUEUED"
    assert sp.parse_squeue_jobs("8|N/A|CONFIGURING|None|n1|0:01|1:00|1G|N/A\n")["8"].state == "RUNNING"
    assert set(OURS.values()) <= set(states.ACTIVE + states.ENDED)


def test_parse_sacct_ignores_junk():
    assert sp.parse_sacct("garbage\n\n12|COMPLETED|0:0|x|y|z|w|v\n") == []


SQUEUE = """\
12|0|RUNNING|None|n1|0:05|1:00:00|500M
12|1|COMPLETED|None|n2|0:03|1:00:00|500M
12|[2-3]|PENDING|Resources||0:00|1:00:00|500M
12|4|NODE_FAIL|NodeDown|n3|1:02|1:00:00|500M
"""


def test_parse_squeue():
    recs = sp.parse_squeue(SQUEUE)
    by = {r.task: r for r in recs}
    assert by[0].state == "RUNNING" and by[0].node_list == "n1"
    assert by[None].pending_tasks == (2, 3) and by[None].reason == "Resources"
    assert by[4].state == "NODE_FAIL" and by[4].time_limit == "1:00:00"


# The same array seen with the End / %e field, as Slurm 22.05 printed it on the testbed: with
# SLURM_TIME_FORMAT=%s (what the runner sets) and in the default form (local time, here UTC).
SACCT_END = """\
1_0|COMPLETED|0:0|00:00:03||500M|n1|00:05:00|1795255140
1_0.batch|COMPLETED|0:0|00:00:03|3180K||n1||1795255140
1_1|RUNNING|0:0|00:00:04||500M|n1|00:05:00|Unknown
1_1.batch|RUNNING|0:0|00:00:04|||n1||Unknown
1_2|CANCELLED by 0|0:0|00:00:03||500M|n2|00:05:00|2026-11-21T09:59:26
1_3|FAILED|1:0|00:00:01||500M|n2|00:05:00|None
2_[0-3]|PENDING|0:0|00:00:00||500M|None assigned|Partition_Limit|Unknown
"""

SQUEUE_END = """\
1|0|COMPLETED|None|n1|0:03|5:00|500M|1795255140
1|1|RUNNING|None|n1|0:04|5:00|500M|1795255424
1|2|CANCELLED|None|n2|0:03|5:00|500M|2026-11-21T09:59:26
1|3|FAILED|None|n2|0:01|5:00|500M|None
1|4|TIMEOUT|None|n2|5:01|5:00|500M|Unknown
2|[0-3]|PENDING|JobHeldUser||0:00|UNLIMITED|500M|N/A
"""


@pytest.fixture
def utc(monkeypatch):
    """Slurm's default time stamps are local time: read them as UTC here."""
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_parse_sacct_end_time(utc):
    recs = {(r.array_job_id, r.task): r for r in sp.parse_sacct(SACCT_END)}
    assert recs["1", 0].end_time == 1795255140.0 and recs["1", 0].max_rss == "3180K"
    assert recs["1", 1].end_time is None  # Unknown: still running
    assert recs["1", 2].end_time == 1795255166.0 and recs["1", 2].state == "CANCELLED"
    assert recs["1", 3].end_time is None  # None
    assert recs["2", None].end_time is None and recs["2", None].time_limit == "Partition_Limit"


def test_parse_squeue_end_time(utc):
    by = {(r.array_job_id, r.task): r for r in sp.parse_squeue(SQUEUE_END)}
    assert by["1", 0].end_time == 1795255140.0
    assert by["1", 1].end_time is None  # a running task's %e is start + time limit: a forecast
    assert by["1", 2].end_time == 1795255166.0
    assert by["1", 3].end_time is None and by["1", 4].end_time is None  # None, Unknown
    assert by["2", None].end_time is None and by["2", None].pending_tasks == (0, 1, 2, 3)


@pytest.mark.parametrize("value, expected", [
    ("1795255140", 1795255140.0), ("2026-11-21T09:59:00", 1795255140.0), ("Unknown", None),
    ("None", None), ("N/A", None), ("", None), ("2026-11-21", None),
])
def test_parse_time(utc, value, expected):
    assert sp.parse_time(value) == expected


def test_parsers_skip_ranges_they_cannot_read():
    assert sp.parse_sacct("7_[1-]|PENDING|0:0|00:00:00||1G|None assigned|1:00|Unknown\n") == []
    assert sp.parse_squeue("7|[x]|PENDING|None||0:00|1:00|1G|N/A\n") == []


@pytest.mark.parametrize("line, name", [
    ("#SBATCH --job-name=tune", "tune"),
    ('#SBATCH --job-name="my job \\"x\\""', 'my job "x"'),
])
def test_parse_job_name(line, name):
    assert sp.parse_job_name(f"#!/bin/bash\n#SBATCH --array=0-3\n{line}\n#SBATCH -p debug\n") == name
    assert sp.parse_job_name("#!/bin/bash\necho hi\n") is None


@pytest.mark.parametrize("name", ["tune", "a b", 'q"uo\\te', "ünï"])
def test_parse_job_name_reads_what_the_script_writer_quoted(name):
    from slurm_apply._backends.slurm.script import directive_value

    assert sp.parse_job_name(f"#SBATCH --job-name={directive_value(name)}\n") == name


@pytest.mark.parametrize("spec, expected", [
    ("[0-3]", [0, 1, 2, 3]), ("[1,5-6]", [1, 5, 6]), ("[0-9%2]", list(range(10))),
    ("[0-6:3]", [0, 3, 6]), ("4", [4]),
])
def test_expand_task_ranges(spec, expected):
    assert sp.expand_task_ranges(spec) == expected


def test_parse_sbatch():
    assert sp.parse_sbatch("1234\n") == "1234"
    assert sp.parse_sbatch("1234;cluster\n") == "1234"
    with pytest.raises(SchedulerError, match="could not read a job id"):
        sp.parse_sbatch("sbatch: error: nope")


def test_parse_scontrol_config():
    text = ("Configuration data as of 2026-11-21T05:30:00\n"
            "AccountingStorageType   = accounting_storage/slurmdbd\n"
            "MaxArraySize            = 1001\n"
            "SchedulerParameters     = batch_sched_delay=0,sched_min_interval=0\n")
    conf = sp.parse_scontrol_config(text)
    assert conf["MaxArraySize"] == "1001"
    assert conf["SchedulerParameters"] == "batch_sched_delay=0,sched_min_interval=0"


def test_find_array_job_matches_the_script_path():
    text = "41|/home/a/_rslurm_x/submit.sh\n42|/home/b/_rslurm_x/submit.sh\n"
    assert sp.parse_find_array_job(text, "/home/b/_rslurm_x/submit.sh") == "42"
    assert sp.parse_find_array_job(text, "/elsewhere/submit.sh") is None


# --- logs and classification -----------------------------------------------------------------

OOM_LOG = """slurm_apply: submission 0 task 1 on n1: 1 process(es), start 1
slurmstepd-n1: error: Job 5 exceeded memory limit (420968448 > 209715200), being killed
slurmstepd-n1: error: Exceeded job memory limit
slurmstepd-n1: error: *** JOB 5 ON n1 CANCELLED AT 2026-11-21T05:30:01 ***
"""
TIMEOUT_LOG = "x\nslurmstepd-n2: error: *** JOB 2 ON n2 CANCELLED AT 2026-11-21T05:31:23 DUE TO TIME LIMIT ***\n"
CANCEL_LOG = "slurmstepd-n1: error: *** JOB 8 ON n1 CANCELLED AT 2026-11-21T05:32:00 ***\n"


NODE_FAIL_LOG = "slurmstepd-n3: error: *** JOB 4 ON n3 CANCELLED AT 2026-11-21T05:33:00 DUE TO NODE FAILURE ***\n"
PREEMPT_LOG = "slurmstepd-n1: error: *** JOB 6 ON n1 CANCELLED AT 2026-11-21T05:34:00 DUE TO PREEMPTION ***\n"
SLURM, LOCAL = get("slurm"), get("local")


def test_the_slurm_backend_reads_slurmstepd_kill_lines():
    death = SLURM.death_in_log
    assert death(OOM_LOG) == ("OUT_OF_MEMORY", "used 401M of 200M allowed")
    assert death(TIMEOUT_LOG) == ("TIMEOUT", "killed at its time limit on n2")
    assert death(CANCEL_LOG) == ("CANCELLED", "cancelled on n1")
    assert death(NODE_FAIL_LOG) == ("NODE_FAIL", "node n3 failed")
    assert death(PREEMPT_LOG) == ("PREEMPTED", "preempted on n1")
    assert death("slurmstepd: error: Detected 1 oom-kill event(s) in StepId=5.batch.\n") == (
        "OUT_OF_MEMORY", "killed by the out-of-memory handler")
    assert death("slurm_apply: task 0 finished 3 row(s)\n") is None
    # A requeued task appends a new attempt: the last kill wins.
    assert death(OOM_LOG + "\n" * 3 + "A" * 3000 + "\n" + TIMEOUT_LOG)[0] == "TIMEOUT"
    assert SLURM.memory_limit_in_log(OOM_LOG) == 200.0
    assert SLURM.memory_limit_in_log(TIMEOUT_LOG) is None


def test_the_local_backend_finds_no_scheduler_kill_in_a_log():
    # Its runner runs the same script without slurmstepd: no line in a log is a kill notice.
    for log in (OOM_LOG, TIMEOUT_LOG, CANCEL_LOG, ""):
        assert LOCAL.death_in_log(log) is None and LOCAL.memory_limit_in_log(log) is None


def test_last_error_line():
    log = "Traceback (most recent call last):\n  File ...\nModuleNotFoundError: No module named 'x'\n"
    assert last_error_line(log) == "ModuleNotFoundError: No module named 'x'"
    assert last_error_line("slurm_apply: row 3 raised ValueError: no\n") == ""


def rec(state, **kw):
    return TaskRecord("5", 1, state, **kw)


@pytest.mark.parametrize("record, log, expected", [
    (rec("RUNNING"), "", ("RUNNING", "")),
    (rec("PENDING", reason="Resources"), "", ("PENDING", "Resources")),
    (rec("FAILED", exit_code="0:9", max_rss="420968K", req_mem="200M"), OOM_LOG,
     ("OUT_OF_MEMORY", "MaxRSS 411M of 200M requested; used 401M of 200M allowed")),
    (rec("TIMEOUT", elapsed="00:01:23", time_limit="00:01:00"), TIMEOUT_LOG,
     ("TIMEOUT", "ran 00:01:23 of its 00:01:00 limit; killed at its time limit on n2")),
    (rec("NODE_FAIL", node_list="n3"), "", ("NODE_FAIL", "node n3 stopped answering")),
    (rec("CANCELLED"), CANCEL_LOG, ("CANCELLED", "cancelled on n1")),
    (rec("FAILED", exit_code="1:0"), "ImportError: no module named foo\n",
     ("FAILED", "exit code 1:0; ImportError: no module named foo")),
    (rec("COMPLETED"), "", ("FAILED", "the task ended without finishing its rows")),
    (None, TIMEOUT_LOG, ("TIMEOUT", "killed at its time limit on n2")),
    (None, OOM_LOG, ("OUT_OF_MEMORY", "used 401M of 200M allowed")),
])
def test_classify_started_task(record, log, expected):
    assert classify(started=True, done=None, answer=record, log_text=log, submitted=True,
                    death=SLURM.death_in_log(log)) == expected


def test_classify_reads_no_log_itself():
    # The death a log tells of is the backend's to read: the local runner's logs tell of none.
    assert classify(started=True, done=None, answer=None, log_text=OOM_LOG, submitted=True,
                    death=LOCAL.death_in_log(OOM_LOG))[0] == "LOST"


def test_classify_trusts_the_end_marker_first():
    assert classify(started=True, done=End(ok=True), answer=rec("RUNNING"), log_text="", submitted=True) == (
        "COMPLETED", "")
    # A dead worker process is a failure whatever the scheduler still lists.
    for answer in (rec("FAILED"), rec("RUNNING"), Unknown("squeue is not on PATH")):
        state, reason = classify(started=True, done=End(ok=False, failures=["process 1 killed by SIGKILL"]),
                                 answer=answer, log_text="", submitted=True)
        assert (state, reason) == ("FAILED", "process 1 killed by SIGKILL")


def test_classify_lost_and_unsubmitted():
    assert classify(started=False, done=None, answer=None, log_text="", submitted=False)[0] == "NOT_SUBMITTED"
    assert classify(started=False, done=None, answer=None, log_text="", submitted=True) == (
        "LOST", "never started and no longer queued")
    assert classify(started=True, done=None, answer=None, log_text="", submitted=True)[0] == "LOST"


def test_a_scheduler_that_could_not_be_asked_is_unknown_never_lost():
    why = "squeue is not on PATH; is Slurm loaded in this shell?"
    for started in (False, True):
        assert classify(started=started, done=None, answer=Unknown(why), log_text=CANCEL_LOG,
                        submitted=True, death=SLURM.death_in_log(CANCEL_LOG)) == ("UNKNOWN", why)


@pytest.mark.parametrize("answer", [rec("COMPLETED"), None])
def test_a_finished_task_without_its_end_marker_gets_a_grace_period(answer):
    state, reason = classify(started=True, done=None, answer=answer, log_text="",
                             submitted=True, since_end_s=2.0)
    assert state == "COMPLETING" and "end marker" in reason
    late = classify(started=True, done=None, answer=answer, log_text="", submitted=True,
                    since_end_s=MARKER_GRACE_S + 1)
    assert late[0] in ("FAILED", "LOST")
    # A kill the scheduler reports is not waited for.
    assert classify(started=True, done=None, answer=rec("TIMEOUT"), log_text="", submitted=True,
                    since_end_s=1.0)[0] == "TIMEOUT"


def test_compress_rows_and_mem_text():
    assert compress_rows([7, 1, 2, 3, 9, 10]) == "1-3, 7, 9-10"
    assert compress_rows(list(range(0, 40, 2)), limit=3).endswith("... (20 rows)")
    assert mem_text("420968K") == "411M" and mem_text("1.5G") == "1536M" and mem_text("200M") == "200M"


# --- a submission's follow-up (automatic retries) and its partition's limits -------------------


def test_follow_ups_are_read_from_the_same_sacct_and_squeue_output():
    sacct = ("7_0|COMPLETED|0:0|00:00:03||500M|n1|00:05:00|1795255140\n"
             "9|PENDING|0:0|00:00:00||768M|None assigned|00:15:00|Unknown\n9.batch|RUNNING|0:0|||||")
    assert len(sp.parse_sacct(sacct)) == 1
    (job_id, rec), = sp.parse_sacct_jobs(sacct).items()
    assert (job_id, rec.state, rec.task, rec.end_time) == ("9", "PENDING", None, None)
    squeue = "7|0|RUNNING|None|n1|0:05|5:00|500M|1795255424\n9|N/A|PENDING|Dependency||0:00|15:00|768M|N/A"
    assert sp.parse_squeue_jobs(squeue)["9"].reason == "Dependency" and len(sp.parse_squeue(squeue)) == 1


def test_a_partitions_limits_are_read_from_scontrol():
    out = ("PartitionName=debug Default=YES MaxTime=UNLIMITED DefMemPerNode=UNLIMITED "
           "MaxMemPerNode=UNLIMITED TRES=cpu=6,mem=12000M\n"
           "PartitionName=short Default=NO MaxTime=04:00:00 MaxMemPerCPU=2000\n")
    parts = sp.parse_partitions(out)
    assert [p["PartitionName"] for p in parts] == ["debug", "short"] and parts[0]["TRES"] == "cpu=6,mem=12000M"


def test_a_wait_notices_the_kill_lines_of_each_logs_own_backend(tmp_path):
    from slurm_apply._job.wait import LogWatch

    watch, slurm_log, local_log = LogWatch(), tmp_path / "s0_t0.out", tmp_path / "s1_t0.out"
    slurm_log.write_text("slurm_apply: task 0 started\n")
    local_log.write_text("slurm_apply: task 0 started\n")
    logs = [(slurm_log, SLURM.kill_marks), (local_log, LOCAL.kill_marks)]
    assert not watch.kill_seen(logs)
    with local_log.open("a") as fh:  # a local task's output that quotes a Slurm kill line
        fh.write(CANCEL_LOG)
    assert not watch.kill_seen(logs)
    with slurm_log.open("a") as fh:
        fh.write(CANCEL_LOG)
    assert watch.kill_seen(logs) and not watch.kill_seen(logs)  # only the new bytes count
    with local_log.open("a") as fh:
        fh.write("slurm_apply: task 0 got SIGTERM; its processes saved their finished rows\n")
    assert watch.kill_seen(logs)
