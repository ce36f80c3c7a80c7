"""The Grid Engine parsers (slurm_apply/_backends/sge/parse.py) on what the real commands printed.

The literal outputs below were captured from the private cell (tests/sgebed.py, Son of Grid
Engine 8.1.9) and trimmed to the fields read (one qacct record is kept whole). The last test, marked
sge, parses the live outputs of real jobs on the session's cell.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurm_apply._backends import states as st
from slurm_apply._backends.sge import parse
from slurm_apply._errors import SchedulerError

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

import sgebed  # noqa: E402

QACCT_OK = """\
==============================================================
qname        all.q
hostname     vm
jobname      ok
jobnumber    1
taskid       1
qsub_time    Mon Dec  7 15:01:46 2026
start_time   Mon Dec  7 15:01:46 2026
end_time     Mon Dec  7 15:01:47 2026
granted_pe   NONE
slots        1
failed       0
exit_status  0
ru_wallclock 1s
maxvmem      0.000B
==============================================================
qname        all.q
hostname     vm
jobname      ok
jobnumber    1
taskid       2
qsub_time    Mon Dec  7 15:01:46 2026
start_time   Mon Dec  7 15:01:46 2026
end_time     Mon Dec  7 15:01:47 2026
granted_pe   NONE
slots        1
failed       0
exit_status  0
ru_wallclock 1s
maxvmem      6.531MB
"""

QACCT_EXIT_7 = """\
==============================================================
qname        all.q
hostname     vm
jobname      e7
jobnumber    2
taskid       2
qsub_time    Mon Dec  7 15:01:46 2026
start_time   Mon Dec  7 15:01:46 2026
end_time     Mon Dec  7 15:01:47 2026
granted_pe   NONE
slots        1
failed       0
exit_status  7
ru_wallclock 1s
maxvmem      8.020MB
"""

QACCT_SEGV_EXEC = """\
==============================================================
qname        all.q
hostname     vm
jobname      segv_exec
jobnumber    4
taskid       1
qsub_time    Mon Dec  7 15:01:46 2026
start_time   Mon Dec  7 15:01:47 2026
end_time     Mon Dec  7 15:01:47 2026
granted_pe   NONE
slots        1
failed       100 : assumedly after job
exit_status  139                  (Segmentation fault)
ru_wallclock 0s
maxvmem      0.000B
"""

QACCT_SEGV_CHILD = """\
==============================================================
qname        all.q
hostname     vm
jobname      segv_child
jobnumber    5
taskid       1
qsub_time    Mon Dec  7 15:01:47 2026
start_time   Mon Dec  7 15:01:47 2026
end_time     Mon Dec  7 15:01:48 2026
granted_pe   NONE
slots        1
failed       0
exit_status  139                  (Segmentation fault)
ru_wallclock 1s
maxvmem      0.000B
"""

QACCT_SIGKILL = """\
==============================================================
qname        all.q
hostname     vm
jobname      sigkill
jobnumber    6
taskid       1
qsub_time    Mon Dec  7 15:01:47 2026
start_time   Mon Dec  7 15:01:47 2026
end_time     Mon Dec  7 15:01:47 2026
granted_pe   NONE
slots        1
failed       100 : assumedly after job
exit_status  137                  (Killed)
ru_wallclock 0s
maxvmem      0.000B
"""

QACCT_QDEL = """\
==============================================================
qname        all.q
hostname     vm
jobname      del
jobnumber    11
taskid       1
qsub_time    Mon Dec  7 15:01:50 2026
start_time   Mon Dec  7 15:01:50 2026
end_time     Mon Dec  7 15:01:55 2026
granted_pe   NONE
slots        1
failed       100 : assumedly after job
exit_status  137                  (Killed)
ru_wallclock 5s
maxvmem      5.051MB
==============================================================
qname        all.q
hostname     vm
jobname      del
jobnumber    11
taskid       2
qsub_time    Mon Dec  7 15:01:50 2026
start_time   Mon Dec  7 15:01:50 2026
end_time     Mon Dec  7 15:01:55 2026
granted_pe   NONE
slots        1
failed       100 : assumedly after job
exit_status  137                  (Killed)
ru_wallclock 5s
maxvmem      5.078MB
"""

QACCT_EXIT_99 = """\
==============================================================
qname        all.q
hostname     vm
jobname      e99
jobnumber    7
taskid       1
qsub_time    Mon Dec  7 15:01:47 2026
start_time   Mon Dec  7 15:01:47 2026
end_time     Mon Dec  7 15:01:48 2026
granted_pe   NONE
slots        1
failed       25  : rescheduling
exit_status  99
ru_wallclock 1s
maxvmem      0.000B
==============================================================
qname        all.q
hostname     vm
jobname      e99
jobnumber    7
taskid       1
qsub_time    Mon Dec  7 15:01:48 2026
start_time   Mon Dec  7 15:01:50 2026
end_time     Mon Dec  7 15:01:50 2026
granted_pe   NONE
slots        1
failed       0
exit_status  0
ru_wallclock 0s
maxvmem      0.000B
"""

QACCT_EXIT_100 = """\
==============================================================
qname        all.q
hostname     vm
jobname      e100
jobnumber    8
taskid       1
qsub_time    Mon Dec  7 15:01:47 2026
start_time   Mon Dec  7 15:01:48 2026
end_time     Mon Dec  7 15:01:48 2026
granted_pe   NONE
slots        1
failed       30  : application error returned
exit_status  100
ru_wallclock 0s
maxvmem      0.000B
"""

QACCT_MEMORY = """\
==============================================================
qname        all.q
hostname     vm
jobname      mem
jobnumber    9
taskid       1
qsub_time    Mon Dec  7 15:01:47 2026
start_time   Mon Dec  7 15:01:48 2026
end_time     Mon Dec  7 15:01:49 2026
granted_pe   NONE
slots        1
failed       0
exit_status  1
ru_wallclock 1s
maxvmem      0.000B
"""

QACCT_PLAIN = """\
==============================================================
qname        all.q
hostname     vm
jobname      plain
jobnumber    10
taskid       undefined
qsub_time    Mon Dec  7 15:01:47 2026
start_time   Mon Dec  7 15:01:48 2026
end_time     Mon Dec  7 15:01:48 2026
granted_pe   NONE
slots        1
failed       0
exit_status  3
ru_wallclock 0s
maxvmem      0.000B
"""

# Untrimmed: every field, the trailing blanks kept by a "$" at each line's end (removed below).
QACCT_H_RT = """\
==============================================================$
qname        all.q               $
hostname     vm                  $
group        root                $
owner        root                $
project      NONE                $
department   defaultdepartment   $
jobname      hrt                 $
jobnumber    3                   $
taskid       1                   $
account      sge                 $
priority     0                   $
qsub_time    Mon Dec  7 15:01:46 2026$
start_time   Mon Dec  7 15:01:47 2026$
end_time     Mon Dec  7 15:01:49 2026$
granted_pe   NONE                $
slots        1                   $
failed       37  : qmaster enforced h_rt, h_cpu, or h_vmem limit$
exit_status  137                  (Killed)$
ru_wallclock 2s$
ru_utime     0.095s$
ru_stime     0.025s$
ru_maxrss    4.266KB$
ru_ixrss     0.000B$
ru_ismrss    0.000B$
ru_idrss     0.000B$
ru_isrss     0.000B$
ru_minflt    18706               $
ru_majflt    0                   $
ru_nswap     0                   $
ru_inblock   0                   $
ru_oublock   32                  $
ru_msgsnd    0                   $
ru_msgrcv    0                   $
ru_nsignals  0                   $
ru_nvcsw     334                 $
ru_nivcsw    118                 $
cpu          0.121s$
mem          0.000Bs$
io           749.732KB$
iow          0.000s$
maxvmem      10.137MB$
arid         undefined$
ar_sub_time  undefined$
category     -l h_rt=2$
""".replace("$\n", "\n")

QSTAT_MIXED = """\
<?xml version='1.0'?>
<job_info  xmlns:xsd="http://arc.liv.ac.uk/repos/darcs/sge/source/dist/util/resources/schemas/qstat/qstat.xsd">
  <queue_info>
    <job_list state="running">
      <JB_job_number>11</JB_job_number>
      <JB_name>del</JB_name>
      <state>r</state>
      <queue_name>all.q@vm</queue_name>
      <tasks>1</tasks>
    </job_list>
    <job_list state="running">
      <JB_job_number>11</JB_job_number>
      <JB_name>del</JB_name>
      <state>r</state>
      <queue_name>all.q@vm</queue_name>
      <tasks>2</tasks>
    </job_list>
    <job_list state="running">
      <JB_job_number>14</JB_job_number>
      <JB_name>susp</JB_name>
      <state>s</state>
      <queue_name>all.q@vm</queue_name>
      <tasks>1</tasks>
    </job_list>
    <job_list state="running">
      <JB_job_number>14</JB_job_number>
      <JB_name>susp</JB_name>
      <state>s</state>
      <queue_name>all.q@vm</queue_name>
      <tasks>2</tasks>
    </job_list>
    <job_list state="running">
      <JB_job_number>15</JB_job_number>
      <JB_name>pe</JB_name>
      <state>r</state>
      <queue_name>all.q@vm</queue_name>
    </job_list>
  </queue_info>
  <job_info>
    <job_list state="pending">
      <JB_job_number>8</JB_job_number>
      <JB_name>e100</JB_name>
      <state>Eqw</state>
      <queue_name></queue_name>
      <tasks>1,2</tasks>
    </job_list>
    <job_list state="pending">
      <JB_job_number>16</JB_job_number>
      <JB_name>toobig</JB_name>
      <state>qw</state>
      <queue_name></queue_name>
      <tasks>1,2</tasks>
    </job_list>
    <job_list state="pending">
      <JB_job_number>11</JB_job_number>
      <JB_name>del</JB_name>
      <state>qw</state>
      <queue_name></queue_name>
      <tasks>3-6:1</tasks>
    </job_list>
    <job_list state="pending">
      <JB_job_number>12</JB_job_number>
      <JB_name>held</JB_name>
      <state>hqw</state>
      <queue_name></queue_name>
      <tasks>1-3:1</tasks>
    </job_list>
    <job_list state="pending">
      <JB_job_number>13</JB_job_number>
      <JB_name>after</JB_name>
      <state>hqw</state>
      <queue_name></queue_name>
      <tasks>1,2</tasks>
    </job_list>
  </job_info>
</job_info>
"""

QSTAT_DELETING = """\
<?xml version='1.0'?>
<job_info>
  <queue_info>
    <job_list state="running">
      <JB_job_number>11</JB_job_number>
      <JB_name>del</JB_name>
      <state>dr</state>
      <queue_name>all.q@vm</queue_name>
      <tasks>2</tasks>
    </job_list>
  </queue_info>
  <job_info>
  </job_info>
</job_info>
"""

QSUB_HELP = """\
SGE 8.1.9
usage: qsub [options]
   [-a date_time]                           request a start time
   [-ac context_list]                       add context variable(s)
   [-Ap fname]                              add a new parallel environment from file
   [-astnode node_shares_list]              add sharetree node(s)
   [-at thread_name]                        add/start qmaster thread
   [-A account_string]                      account string in accounting record
   [-b y[es]|n[o]]                          handle command as binary
   [-binding [env|pe|set] exp|lin|str]      binds job to processor cores
   [-c ckpt_selector]                       define type of checkpointing for job
   [-cwd]                                   use current working directory
   [-C directive_prefix]                    define command prefix for job script
   [-dc simple_context_list]                delete context variable(s)
   [-dul listname_list]                     delete userset list(s) completely
   [-e path_list]                           specify standard error stream path(s)
   [-h]                                     place user hold on job
   [-hard]                                  consider following requests "hard"
   [-he  y[es]|n[o]]                        enable/disable hard error handling
   [-help]                                  print this help
   [-hold_jid job_identifier_list]          define jobnet interdependencies
   [-hold_jid_ad job_identifier_list]       define jobnet array interdependencies
   [-i file_list]                           specify standard input stream file(s)
   [-j y[es]|n[o]]                          merge stdout and stderr stream of job
   [-js job_share]                          share tree or functional job share
   [-jsv jsv_url]                           job submission verification script to be used
   [-l resource_list]                       request the given resources
   [-M mail_list]                           notify these e-mail addresses
   [-m mail_options]                        define mail notification events
   [-masterq wc_queue_list]                 bind master task to queue(s)
   [-mattr obj_nm attr_nm val obj_id_list]  modify an attribute (or element in a sublist) of an object
   [-N name]                                specify job name
   [-notify]                                notify job before killing/suspending it
   [-now y[es]|n[o]]                        start job immediately or not at all
   [-o path_list]                           specify standard output stream path(s)
   [-ot tickets]                            set job's override tickets
   [-P project_name]                        set job's project
   [-p priority]                            define job's relative priority
   [-pe wc_pe_name slot_range]              request slot range for parallel jobs
   [-q wc_queue_list]                       bind job to queue(s)
   [-r y[es]|n[o]]                          define job as (not) restartable
   [-sc context_list]                       set job context (replaces old context)
   [-shell y[es]|n[o]]                      start command with or without wrapping <loginshell> -c
   [-soft]                                  consider following requests as soft
   [-srqs [rqs_list]]                       show resource quota set(s)
   [-sync y[es]|n[o]]                       wait for job to end and return exit code
   [-S path_list]                           command interpreter to be used
   [-t task_id_range]                       create a job-array with these tasks
   [-v variable_list]                       export these environment variables
   [-verify]                                do not submit, just verify
   [-V]                                     export all environment variables
   [-wd working_directory]                  use working_directory
   [-@ file]                                read commandline input from file
   [{command|-} [command_args]]
"""

QACCT_NO_FILE = ("no jobs running since startup\n",
                 "/tmp/sa-sge-60y9z4ii/sge/default/common/accounting: No such file or directory\n")
QACCT_MISSING = ("", "error: job id 999 not found\n")
QSTAT_DOWN = ('error: commlib error: got select error (Connection refused)\n'
              'error: unable to send message to qmaster using port 46211 on host "vm": got send error\n')
QDEL_DOWN_STDOUT = 'unable to send message to qmaster using port 46211 on host "vm": got send error\n'
QSUB_UNKNOWN_RESOURCE = 'Unable to run job: unknown resource "nonsense"\nExiting.\n'
QSUB_NO_SUITABLE_QUEUE = "Unable to run job: error: no suitable queues\nExiting.\n"
QCONF_SQ_PART = """\
qname                 all.q
hostlist              vm
pe_list               smp
slots                 4
tmpdir                /tmp/sa-sge-60y9z4ii/tmp
shell                 /bin/bash
s_rt                  INFINITY
h_rt                  INFINITY
h_vmem                INFINITY
"""


def _one(text: str) -> parse.AcctRecord:
    records = parse.parse_qacct(text)
    assert len(records) == 1, records
    return records[0]


def test_qsub_terse_gives_the_job_number_of_an_array_and_of_a_plain_job() -> None:
    assert parse.parse_qsub("3.1-4:1\n") == "3"
    assert parse.parse_qsub("10\n") == "10"
    with pytest.raises(SchedulerError, match="expected qsub -terse to print a job id"):
        parse.parse_qsub("Your job 3 (\"x\") has been submitted\n")


def test_task_lists_come_as_ranges_and_as_comma_lists() -> None:
    assert parse.expand_tasks("3-10:1") == list(range(3, 11))
    assert parse.expand_tasks("1,2") == [1, 2]
    assert parse.expand_tasks("1,4-8:2") == [1, 4, 6, 8]
    with pytest.raises(ValueError, match="expected a task list"):
        parse.expand_tasks("3-")


def test_qstat_xml_running_tasks_one_by_one_pending_ones_by_range_and_list() -> None:
    tasks, jobs = parse.parse_qstat_xml(QSTAT_MIXED)
    by = {(t.array_job_id, t.task, t.pending_tasks): t for t in tasks}
    assert by[("11", 1, ())].state == st.RUNNING and by[("11", 1, ())].node_list == "vm"
    assert by[("11", 2, ())].state == st.RUNNING
    assert by[("11", None, (3, 4, 5, 6))].state == st.PENDING and by[("11", None, (3, 4, 5, 6))].reason == ""
    assert {by[("14", n, ())].state for n in (1, 2)} == {st.SUSPENDED}
    assert "qmod -sj" in by[("14", 1, ())].reason
    held = by[("12", None, (1, 2, 3))]
    assert held.state == st.PENDING and held.reason.startswith("on hold (hqw)")
    assert by[("13", None, (1, 2))].state == st.PENDING  # waits for job 11 (-hold_jid)
    error = by[("8", None, (1, 2))]
    assert error.state == st.FAILED and "error state (Eqw)" in error.reason and "qmod -cj" in error.reason
    assert by[("16", None, (1, 2))].state == st.PENDING
    assert len(tasks) == 9
    # The plain job (a parallel one here) has no <tasks>: it is a job, not a task.
    assert set(jobs) == {"15"} and jobs["15"].state == st.RUNNING and jobs["15"].task is None


def test_qstat_xml_a_deleted_running_task_runs_until_it_is_killed() -> None:
    tasks, _ = parse.parse_qstat_xml(QSTAT_DELETING)
    assert [(t.task, t.state, t.reason) for t in tasks] == [(2, st.RUNNING, "being deleted (dr)")]


def test_qstat_xml_that_is_not_xml_is_an_error_that_quotes_it() -> None:
    with pytest.raises(SchedulerError, match="expected qstat -xml to print XML, got 'error: commlib"):
        parse.parse_qstat_xml(QSTAT_DOWN)


@pytest.mark.parametrize("letters, state", [
    ("r", st.RUNNING), ("t", st.RUNNING), ("Rr", st.RUNNING), ("qw", st.PENDING), ("hqw", st.PENDING),
    ("hRq", st.PENDING), ("Rq", st.REQUEUED), ("Eqw", st.FAILED), ("dr", st.RUNNING), ("dt", st.RUNNING),
    ("dqw", st.CANCELLED), ("s", st.SUSPENDED), ("S", st.SUSPENDED), ("T", st.SUSPENDED), ("z", "z"),
])
def test_every_qstat_state_has_ours(letters: str, state: str) -> None:
    assert parse.our_state(letters)[0] == state


def test_qacct_records_of_an_array_job_that_succeeded() -> None:
    records = parse.parse_qacct(QACCT_OK)
    assert [(r.job_id, r.task, r.failed, r.exit_status) for r in records] == [("1", 1, 0, 0), ("1", 2, 0, 0)]
    assert records[1].maxvmem == pytest.approx(6.531 * 2**20) and records[0].maxvmem == 0.0
    assert records[0].wallclock_s == 1.0 and records[0].hostname == "vm" and records[0].jobname == "ok"
    assert records[0].end_time == time.mktime((2026, 12, 7, 15, 1, 47, 0, 0, -1))
    assert records[0].end_time - records[0].start_time == 1.0
    assert [parse.outcome(r)[0] for r in records] == [st.COMPLETED, st.COMPLETED]
    rec = parse.acct_task_record(records[0])
    assert (rec.array_job_id, rec.task, rec.state, rec.exit_code, rec.elapsed) == ("1", 1, st.COMPLETED, "0:0", "00:00:01")


def test_qacct_exit_7_is_failed_with_its_code() -> None:
    assert parse.outcome(_one(QACCT_EXIT_7)) == (st.FAILED, "exit code 7", "7:0")


def test_qacct_h_rt_exceeded_is_timeout() -> None:
    record = _one(QACCT_H_RT)
    assert (record.failed, record.failed_reason) == (37, "qmaster enforced h_rt, h_cpu, or h_vmem limit")
    assert (record.exit_status, record.exit_word) == (137, "Killed")
    assert parse.outcome(record) == (st.TIMEOUT, "killed at its time limit (h_rt) after 2 s", "0:9")


def test_qacct_a_segfault_is_named_whether_the_script_or_its_child_died() -> None:
    script = _one(QACCT_SEGV_EXEC)
    assert (script.failed, script.exit_status, script.exit_word) == (100, 139, "Segmentation fault")
    assert parse.outcome(script) == (st.FAILED, "killed by SIGSEGV", "0:11")
    child = _one(QACCT_SEGV_CHILD)
    assert (child.failed, child.exit_status) == (0, 139)
    state, detail, code = parse.outcome(child)
    assert (state, code) == (st.FAILED, "139:0") and "SIGSEGV" in detail


def test_qacct_qdel_and_sigkill_look_alike_and_our_cancel_note_tells_them_apart() -> None:
    killed = _one(QACCT_SIGKILL)
    deleted = parse.parse_qacct(QACCT_QDEL)
    assert {(r.failed, r.exit_status) for r in deleted} == {(killed.failed, killed.exit_status)} == {(100, 137)}
    state, detail, code = parse.outcome(killed)
    # Not ours: KILLED (the kernel's out-of-memory killer looks the same), whose rows are retried.
    assert (state, code) == (st.KILLED, "0:9") and detail.startswith("killed by SIGKILL (qdel by someone")
    noted = deleted[0].end_time - 5  # cancel() wrote its note 5 s before the task ended
    assert [parse.outcome(r, cancelled_at=noted)[0] for r in deleted] == [st.CANCELLED, st.CANCELLED]
    # A note written after the task had ended does not make its kill ours.
    assert parse.outcome(deleted[0], cancelled_at=deleted[0].end_time + 60)[0] == st.KILLED
    # Only SIGKILL is qdel's: a segfault during a cancel stays a segfault.
    segv = _one(QACCT_SEGV_EXEC)
    assert parse.outcome(segv, cancelled_at=segv.end_time - 5)[0] == st.FAILED


def test_qacct_a_rescheduled_task_has_a_record_per_run_and_the_last_one_counts() -> None:
    records = parse.parse_qacct(QACCT_EXIT_99)
    assert [(r.task, r.failed, r.exit_status) for r in records] == [(1, 25, 99), (1, 0, 0)]
    assert parse.outcome(records[0])[0] == st.REQUEUED
    assert parse.last_runs(records) == {1: records[1]}
    # The rerun was submitted anew (qsub_time moved); since= keeps both runs of our job.
    assert len(parse.parse_qacct(QACCT_EXIT_99, since=records[0].qsub_time)) == 2
    assert parse.parse_qacct(QACCT_EXIT_99, since=records[1].qsub_time + 60) == []


def test_qacct_exit_100_is_failed_and_says_the_task_waits_in_error_state() -> None:
    state, detail, code = parse.outcome(_one(QACCT_EXIT_100))
    assert (state, code) == (st.FAILED, "100:0") and "error state (Eqw)" in detail


def test_qacct_memory_over_h_vmem_is_python_failing_on_its_own() -> None:
    # h_vmem is ulimit -v: Python raised MemoryError and exited 1; Grid Engine killed nothing.
    record = _one(QACCT_MEMORY)
    assert (record.failed, record.exit_status, record.maxvmem) == (0, 1, 0.0)
    assert parse.outcome(record)[0] == st.FAILED


def test_qacct_a_plain_job_has_no_task_id() -> None:
    record = _one(QACCT_PLAIN)
    assert (record.job_id, record.task, record.exit_status) == ("10", None, 3)


def test_qacct_without_records_says_why() -> None:
    assert parse.qacct_problem(1, *QACCT_NO_FILE) == parse.ACCT_NO_FILE
    assert parse.qacct_problem(1, *QACCT_MISSING) == parse.ACCT_NOT_FOUND
    assert parse.qacct_problem(0, QACCT_OK, "") is None
    assert parse.qacct_problem(2, "", "qacct: bad option\n") == "qacct: bad option"
    assert parse.parse_qacct(QACCT_NO_FILE[0]) == []


def test_a_qmaster_that_does_not_answer_is_recognised_on_stderr_and_on_stdout() -> None:
    assert parse.qmaster_unreachable(QSTAT_DOWN)
    assert parse.qmaster_unreachable(QDEL_DOWN_STDOUT)
    assert not parse.qmaster_unreachable(QACCT_MISSING[1])


def test_qsub_help_is_read_and_corrected() -> None:
    options = parse.parse_qsub_help(QSUB_HELP)
    assert options["N"] == "name" and options["l"] == "resource_list" and options["pe"] == "wc_pe_name slot_range"
    assert options["binding"] == "[env|pe|set] exp|lin|str" and options["cwd"] == "" and options["@"] == "file"
    assert options["hold_jid"] == "job_identifier_list" and options["V"] == ""
    # Listed by the help, refused by qsub (qconf's) ...
    assert not {"Ap", "astnode", "at", "dul", "mattr", "srqs"} & set(options)
    # ... and taken by qsub, missing from the help.
    assert {"tc", "terse", "w", "R", "clear", "pty", "ar", "ckpt", "dl"} <= set(options)
    assert len(options) == 51 - 6 + 9  # the help lists 51 options
    with pytest.raises(SchedulerError, match="expected qsub -help to list options"):
        parse.parse_qsub_help("error: commlib error: got select error (Connection refused)\n")


def test_qsub_refusals_in_its_own_words() -> None:
    assert parse.qsub_refusal("", QSUB_UNKNOWN_RESOURCE) == 'unknown resource "nonsense"'
    assert parse.qsub_refusal("", QSUB_NO_SUITABLE_QUEUE) == "error: no suitable queues"


def test_queue_configuration_and_its_values() -> None:
    conf = parse.parse_conf(QCONF_SQ_PART + "complex_values        gpu=2,\\\n                      scratch=10G\n")
    assert conf["slots"] == "4" and conf["pe_list"] == "smp" and conf["h_rt"] == "INFINITY"
    assert conf["complex_values"] == "gpu=2, scratch=10G"
    assert parse.seconds(conf["h_rt"]) is None and parse.memory_bytes(conf["h_vmem"]) is None
    assert parse.seconds("0:0:5") == 5 and parse.seconds("00:05:00") == 300 and parse.seconds("3s") == 3
    assert parse.memory_bytes("4G") == 4 * 2**30 and parse.memory_bytes("4g") == 4e9
    assert parse.memory_bytes("200M") == 200 * 2**20 and parse.memory_bytes("4.359KB") == pytest.approx(4463.6, abs=0.1)
    assert parse.parse_time("-/-") is None


@pytest.mark.sge
def test_live_outputs_of_real_jobs_parse_to_the_right_states(sge_cell: sgebed.SgeCell, tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    env = {**os.environ, **sge_cell.env()}

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    since = time.time()
    bodies = {
        "exit0": "exit 0", "exit7": "exit 7", "h_rt": "sleep 30",
        "segv": 'exec python3 -c "import ctypes; ctypes.string_at(0)"', "qdel": "sleep 30",
    }
    jobs = {}
    for name, body in bodies.items():
        script = tmp_path / f"{name}.sh"
        script.write_text(f"#!/bin/bash\n{body}\n")
        extra = ["-l", "h_rt=0:0:2"] if name == "h_rt" else []
        result = run("qsub", "-terse", "-t", "1", "-N", name, "-o", "/dev/null", "-j", "y", *extra, str(script))
        jobs[name] = parse.parse_qsub(result.stdout)

    deadline = time.monotonic() + 60
    while True:  # the task to delete must be running first
        tasks, _ = parse.parse_qstat_xml(run("qstat", "-xml").stdout)
        if any(t.array_job_id == jobs["qdel"] and t.task == 1 and t.state == st.RUNNING and not t.reason
               for t in tasks):
            break
        assert time.monotonic() < deadline, tasks
        time.sleep(0.2)
    cancelled_at = time.time()
    assert run("qdel", jobs["qdel"]).returncode == 0

    outcomes = {}
    while len(outcomes) < len(jobs):
        for name, job in jobs.items():
            result = run("qacct", "-j", job)
            records = parse.parse_qacct(result.stdout, since=since)
            if records:
                outcomes[name] = parse.outcome(parse.last_runs(records)[1], cancelled_at=cancelled_at)
            else:
                assert parse.qacct_problem(result.returncode, result.stdout, result.stderr) in (
                    parse.ACCT_NO_FILE, parse.ACCT_NOT_FOUND), result
        assert time.monotonic() < deadline, outcomes
        time.sleep(0.3)
    assert outcomes["exit0"] == (st.COMPLETED, "", "0:0")
    assert outcomes["exit7"] == (st.FAILED, "exit code 7", "7:0")
    assert outcomes["h_rt"][0] == st.TIMEOUT and outcomes["h_rt"][2] == "0:9"
    assert outcomes["segv"] == (st.FAILED, "killed by SIGSEGV", f"0:{int(signal.SIGSEGV)}")
    assert outcomes["qdel"] == (st.CANCELLED, "deleted (qdel) by cancel()", "0:9")
    assert {"tc", "terse", "N", "pe"} <= set(parse.parse_qsub_help(run("qsub", "-help").stdout))


def test_memory_death_reads_the_last_run_of_a_task_log_only() -> None:
    header = "slurm_apply: submission 0 task 0 on vm: 1 process(es), start {}\n"
    numpy = "ImportError: libscipy_openblas64_.so: failed to map segment from shared object\n"
    state, detail = parse.memory_death(header.format(1) + numpy)
    assert state == st.OUT_OF_MEMORY and "h_vmem" in detail and "failed to map segment" in detail
    assert parse.memory_death(header.format(1) + "MemoryError\n")[0] == st.OUT_OF_MEMORY
    assert parse.memory_death(header.format(1) + "OpenBLAS error: Memory allocation still failed after 10 retries, giving up.\n")
    # An earlier run's words do not speak for the last one; other errors are not memory.
    assert parse.memory_death(header.format(1) + numpy + header.format(2) + "ValueError: x\n") is None
    assert parse.memory_death("slurm_apply: row 3 raised MemoryError?\n") is None


QSTAT_J_TWO = """\
==============================================================
job_number:                 10
sge_o_workdir:              /tmp/x
job_name:                   my.job
script_file:                a.sh
==============================================================
job_number:                 11
sge_o_workdir:              /tmp/x
job_name:                   my.job
script_file:                /tmp/other/a.sh
==============================================================
job_number:                 12
sge_o_workdir:              /tmp
job_name:                   my.job
script_file:                x/a.sh
"""


def test_a_hand_submission_is_found_by_its_script_path() -> None:
    assert parse.parse_job_name("#!/bin/bash\n#$ -N sge_hand\n#$ -t 1-3\n") == "sge_hand"
    assert parse.parse_job_name("#!/bin/bash\n#SBATCH --job-name=x\n") is None
    assert parse.find_by_script(QSTAT_J_TWO, "/tmp/x/a.sh") == "12"  # the latest of 10 and 12
    assert parse.find_by_script(QSTAT_J_TWO, "/tmp/other/a.sh") == "11"
    assert parse.find_by_script(QSTAT_J_TWO, "/tmp/y/a.sh") is None
    assert parse.find_by_script("", "/tmp/x/a.sh") is None
