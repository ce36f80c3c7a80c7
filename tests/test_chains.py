"""Chains and reduce (issue 19, items 3-5): ``slurm_apply(g, df, after=job)``, ``job.reduce(fn)``,
and what a status says of them; on the local backend, then on the private Slurm cluster and
the Grid Engine cell (marked tests at the end).

The functions the jobs run are made inside helpers: cloudpickle then stores them by value, so
the node never imports this test module.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Dict

import pandas as pd
import pytest
from click.testing import CliRunner

from queued import queued
from rowfns import fails_while, flaky_once, stamped  # a light module: tasks import it (tests/rowfns.py)

from slurm_apply import InputError, JobActiveError, cli, slurm_apply, slurm_call, slurm_map

LOCAL = dict(backend="local", nodes=2, cpus_per_node=1)


def ran(marks: Path) -> Dict[str, tuple]:
    return {p.name: tuple(float(v) for v in p.read_text().split()) for p in marks.iterdir()}


def dirs(tmp_path: Path, *names: str) -> list:
    out = []
    for name in names:
        (tmp_path / name).mkdir()
        out.append(tmp_path / name)
    return out


def test_after_starts_the_rows_only_once_every_upstream_row_has_ended(tmp_path):
    up_marks, down_marks = dirs(tmp_path, "up", "down")
    up = slurm_apply(stamped(up_marks, sleep_s=2.0), pd.DataFrame({"x": range(4)}), jobname="up",
                     job_dir=tmp_path, **LOCAL)
    down = slurm_apply(stamped(down_marks), pd.DataFrame({"x": range(3)}), jobname="down",
                       job_dir=tmp_path, after=up, **LOCAL)
    # Queued at once, and waiting: no row of it has run while the upstream runs.
    early = down.get_job_status()
    assert early.state == "PENDING" and not list(down_marks.iterdir())
    assert {t.reason for t in early.task_details} == {"Dependency"}
    said = CliRunner().invoke(cli.main, ["status", str(down.job_dir)], prog_name="slurm-apply")
    assert f"waits for: job up ({up.job_dir})" in said.output
    assert "<b>waits for</b>: job up" in down._repr_html_()
    final = down.wait(timeout_s=120, progress=False)
    assert final.completed and final.rows_done == 3
    up_end = max(end for _, end in ran(up_marks).values())
    down_start = min(start for start, _ in ran(down_marks).values())
    assert len(ran(up_marks)) == 4 and down_start >= up_end
    assert up.get_job_status().completed


def test_after_waits_for_the_upstreams_automatic_retries(tmp_path):
    up_marks, down_marks = dirs(tmp_path, "up", "down")
    up = slurm_apply(flaky_once(up_marks), pd.DataFrame({"x": range(3)}), jobname="flaky",
                     job_dir=tmp_path, retries=1, retry_errors=True, **LOCAL)
    down = slurm_apply(stamped(down_marks), pd.DataFrame({"x": range(2)}), jobname="after_flaky",
                       job_dir=tmp_path, after=up, **LOCAL)
    assert down.wait(timeout_s=120, progress=False).completed
    up_status = up.get_job_status()
    assert up_status.completed and len(up.manifest.submissions) == 2  # the retry ran row 1
    retried_end = float((up_marks / "1").read_text().split()[0])
    assert min(start for start, _ in ran(down_marks).values()) >= retried_end
    assert "ran after: job flaky" in str(down.get_job_status())
    assert "waited for by: job after_flaky" in str(up_status)
    # The command line and the notebook say it too.
    said = CliRunner().invoke(cli.main, ["status", str(up.job_dir)], prog_name="slurm-apply")
    assert said.exit_code == 0 and f"waited for by: job after_flaky ({down.job_dir})" in said.output
    assert "<b>ran after</b>: job flaky" in down.get_job_status()._repr_html_()


def test_after_a_list_of_jobs_and_slurm_map_and_a_directory(tmp_path):
    a_marks, b_marks, c_marks = dirs(tmp_path, "a", "b", "c")
    a = slurm_apply(stamped(a_marks, sleep_s=1.0), pd.DataFrame({"x": range(2)}), jobname="a",
                    job_dir=tmp_path, **LOCAL)
    b = slurm_map(stamped(b_marks, sleep_s=2.0), range(2), jobname="b", job_dir=tmp_path, **LOCAL)
    c = slurm_call(stamped(c_marks), x=7, jobname="c", job_dir=tmp_path, after=[a, str(b.job_dir)],
                   backend="local")
    assert c.wait(timeout_s=120, progress=False).completed
    upstream_end = max(end for m in (a_marks, b_marks) for _, end in ran(m).values())
    assert ran(c_marks)["7"][0] >= upstream_end


def test_a_failed_upstream_row_means_the_dependent_never_runs_and_says_why(tmp_path):
    up_marks, down_marks = dirs(tmp_path, "up", "down")
    up = slurm_apply(stamped(up_marks, sleep_s=1.0, fail=2), pd.DataFrame({"x": range(4)}),
                     jobname="bad", job_dir=tmp_path, **LOCAL)
    down = slurm_apply(stamped(down_marks), pd.DataFrame({"x": range(3)}), jobname="never",
                       job_dir=tmp_path, after=up, **LOCAL)
    final = down.wait(timeout_s=120, progress=False)
    assert final.ended and not final.completed and final.rows_done == 0
    assert not list(down_marks.iterdir())  # no row of it ran
    assert not [t for t in final.task_details if t.active]  # nothing left queued
    text = str(final)
    assert "job bad" in text and str(up.job_dir) in text and "rows 2 raised" in text
    assert "ValueError: row 2 fails on purpose" in text


def test_cancelling_the_upstream_ends_the_dependent_without_running_it(tmp_path):
    up_marks, down_marks = dirs(tmp_path, "up", "down")
    up = slurm_apply(stamped(up_marks, sleep_s=30.0), pd.DataFrame({"x": range(2)}),
                     jobname="slow", job_dir=tmp_path, **LOCAL)
    down = slurm_apply(stamped(down_marks), pd.DataFrame({"x": range(2)}), jobname="after_slow",
                       job_dir=tmp_path, after=up, **LOCAL)
    time.sleep(1.0)
    up.cancel()
    final = down.wait(timeout_s=60, progress=False)
    assert final.ended and final.rows_done == 0 and not list(down_marks.iterdir())
    assert "job slow" in str(final) and "CANCELLED" in str(final)


def test_cancelling_the_dependent_while_it_waits_stops_its_gate(tmp_path):
    up_marks, down_marks = dirs(tmp_path, "up", "down")
    up = slurm_apply(stamped(up_marks, sleep_s=3.0), pd.DataFrame({"x": range(2)}),
                     jobname="long", job_dir=tmp_path, **LOCAL)
    down = slurm_apply(stamped(down_marks), pd.DataFrame({"x": range(2)}), jobname="waiting",
                       job_dir=tmp_path, after=up, **LOCAL)
    # Rows added while it waits would run before the upstream is done: refused, saying why.
    with pytest.raises(JobActiveError, match="waits for job long"):
        down.extend(pd.DataFrame({"x": [5]}))
    down.cancel()
    final = down.wait(timeout_s=30, progress=False)
    assert final.ended and final.rows_done == 0
    assert up.wait(timeout_s=60, progress=False).completed
    time.sleep(0.5)
    assert not list(down_marks.iterdir())


def test_resubmitting_a_dependent_refuses_a_failed_upstream_and_waits_for_a_running_one(tmp_path):
    up_marks, down_marks = dirs(tmp_path, "up", "down")
    flag = tmp_path / "flag"
    flag.touch()
    up = slurm_apply(fails_while(up_marks, flag, sleep_s=1.0), pd.DataFrame({"x": range(3)}),
                     jobname="mend", job_dir=tmp_path, **LOCAL)
    down = slurm_apply(stamped(down_marks), pd.DataFrame({"x": range(2)}), jobname="after_mend",
                       job_dir=tmp_path, after=up, **LOCAL)
    assert down.wait(timeout_s=60, progress=False).rows_done == 0
    # The upstream ended with a row failed: running the dependent's rows now would break after=.
    subs = len(down.manifest.submissions)
    with pytest.raises(InputError, match=r"runs after job mend .*rows 1 raised.*"
                                         r"resubmit it with failed=True.*then resubmit this one"):
        down.resubmit()
    assert len(down.manifest.submissions) == subs and not list(down_marks.iterdir())
    # Mended and run again: the dependent's resubmission waits for it, behind a new gate.
    flag.unlink()
    up.resubmit(failed=True)
    down.resubmit()
    assert "waits for: job mend" in str(down.get_job_status())
    final = down.wait(timeout_s=60, progress=False)
    assert final.completed, str(final)
    assert min(s for s, _ in ran(down_marks).values()) >= float((up_marks / "1").read_text().split()[1])
    assert "ran after: job mend" in str(final)


def test_resubmitting_a_dependent_cancelled_while_it_waited_still_waits(tmp_path):
    up_marks, down_marks = dirs(tmp_path, "up", "down")
    up = slurm_apply(stamped(up_marks, sleep_s=3.0), pd.DataFrame({"x": range(2)}),
                     jobname="still", job_dir=tmp_path, **LOCAL)
    down = slurm_apply(stamped(down_marks), pd.DataFrame({"x": range(2)}), jobname="again",
                       job_dir=tmp_path, after=up, **LOCAL)
    down.cancel()
    down.wait(timeout_s=30, progress=False)
    down.resubmit()
    assert down.wait(timeout_s=60, progress=False).completed
    up_end = max(end for _, end in ran(up_marks).values())
    assert min(start for start, _ in ran(down_marks).values()) >= up_end
    # Once the upstream is done, a resubmission needs no gate, and its status says it ran after.
    down.resubmit(rows=[0])
    final = down.wait(timeout_s=60, progress=False)
    assert final.completed and "ran after: job still" in str(final) and not down.manifest.latest.gate


def test_cleanup_of_an_upstream_a_dependent_still_needs_is_refused(tmp_path):
    a_marks, b_marks, c_marks = dirs(tmp_path, "a", "b", "c")
    a = slurm_apply(stamped(a_marks), pd.DataFrame({"x": range(2)}), jobname="first",
                    job_dir=tmp_path, **LOCAL)
    a.wait(timeout_s=60, progress=False)
    b = slurm_apply(stamped(b_marks, sleep_s=4.0), pd.DataFrame({"x": range(2)}), jobname="second",
                    job_dir=tmp_path, **LOCAL)
    c = slurm_apply(stamped(c_marks), pd.DataFrame({"x": range(2)}), jobname="third",
                    job_dir=tmp_path, after=[a, b], **LOCAL)
    with pytest.raises(JobActiveError, match=r"refusing to delete .*_rslurm_first: job third \(.*"
                                             r"_rslurm_third, PENDING\) runs after it.*cancel it first"
                                             r".*force=True"):
        a.cleanup_files()
    from click.testing import CliRunner

    from slurm_apply.cli import main as cli

    said = CliRunner().invoke(cli, ["cleanup", str(a.job_dir)], prog_name="slurm-apply", catch_exceptions=False)
    assert said.exit_code == 1 and "pass --force (then" in said.output, said.output
    assert "force=True" not in said.output, said.output
    assert f"`slurm-apply cancel {c.job_dir}`" in said.output
    assert a.job_dir.is_dir()
    assert c.wait(timeout_s=60, progress=False).completed  # it read the job it runs after
    a.cleanup_files()  # nothing waits for it any more
    assert not a.job_dir.exists()
    # force=True deletes it all the same; the dependent's gate then finds it gone, and says so.
    d = slurm_apply(stamped(c_marks), pd.DataFrame({"x": range(2)}), jobname="fourth",
                    job_dir=tmp_path, after=b, **LOCAL)
    b.cleanup_files(force=True)
    final = d.wait(timeout_s=60, progress=False)
    assert final.ended and final.rows_done == 0 and "deleted" in str(final), str(final)


def test_a_gate_killed_before_it_decides_leaves_the_job_ended_and_says_so(tmp_path):
    from slurm_apply._store import localrun

    up_marks, down_marks = dirs(tmp_path, "up", "down")
    up = slurm_apply(stamped(up_marks, sleep_s=5.0), pd.DataFrame({"x": range(2)}),
                     jobname="slowup", job_dir=tmp_path, **LOCAL)
    down = slurm_apply(stamped(down_marks), pd.DataFrame({"x": range(2)}), jobname="orphan",
                       job_dir=tmp_path, after=up, **LOCAL)
    deadline = time.time() + 20
    gate = None
    while gate is None and time.time() < deadline:
        run = localrun.read_state(down.job_dir, 0).gate_run
        gate = run.proc if run is not None and run.proc is not None else None
        time.sleep(0.1)
    assert gate is not None
    os.killpg(gate.pid, 9)
    final = down.wait(timeout_s=30, progress=False)
    assert final.ended and final.rows_done == 0
    assert "never runs: its gate ended without deciding" in str(final)
    assert up.wait(timeout_s=60, progress=False).completed
    assert not list(down_marks.iterdir())


def test_reduce_runs_fn_on_the_output_table_after_the_job(tmp_path):
    (marks,) = dirs(tmp_path, "m")
    job = slurm_apply(stamped(marks, sleep_s=1.0), pd.DataFrame({"x": range(5)}), jobname="parts",
                      job_dir=tmp_path, **LOCAL)

    def total(out: pd.DataFrame) -> float:
        return float(out["x"].sum()) + float((out["end"] >= out["start"]).all())

    reduced = job.reduce(total, jobname="total")  # on the job's backend
    assert reduced.job_dir.parent == job.job_dir.parent
    assert reduced.wait(timeout_s=120, progress=False).completed
    assert reduced.get_output() == 11.0  # 0+1+2+3+4, and every row had ended


def test_after_is_checked_before_anything_is_written(tmp_path):
    (marks,) = dirs(tmp_path, "m")
    f = stamped(marks)
    df = pd.DataFrame({"x": range(2)})
    done = slurm_apply(f, df, jobname="done", job_dir=tmp_path, **LOCAL)
    done.wait(timeout_s=60, progress=False)
    unsent = slurm_apply(f, df, jobname="unsent", job_dir=tmp_path, submit=False, **LOCAL)
    failed = slurm_apply(stamped(marks, fail=1), df, jobname="failed", job_dir=tmp_path, **LOCAL)
    failed.wait(timeout_s=60, progress=False)
    before = sorted(p.name for p in tmp_path.iterdir())

    cases = [
        (dict(after=str(tmp_path / "_rslurm_nope")), "not a job directory"),
        (dict(after=42), "got int"),
        (dict(after=unsent), "never submitted"),
        (dict(after=failed), "rows 1 raised"),
        (dict(after=done, submit=False), "needs submit=True"),
        (dict(after=done, backend="slurm", nodes=1, cpus_per_node=1), "runs on the local backend"),
    ]
    for extra, words in cases:
        kw = {**LOCAL, **extra}
        with pytest.raises(InputError, match=words):
            slurm_apply(f, df, jobname="chained", job_dir=tmp_path, **kw)
    with pytest.raises(InputError, match="runs after its own job"):
        done.reduce(sum, after=done, backend="local")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (done.job_dir / "dependents").exists()


# -- on the real schedulers: the private Slurm cluster and the Grid Engine cell --------------------
# (the fixture ``scheduler`` runs each test on both, marked slurm and sge)

def nothing_queued(backend: str, sub, within_s: float = 30.0) -> bool:
    """The array, the gate and the follow-up of ``sub`` leave the queue within ``within_s``: no
    task waits for ever on a dependency never satisfied."""
    ids = [sub.job_id, sub.gate_id, sub.followup_id]
    deadline = time.time() + within_s
    while queued(backend, ids) and time.time() < deadline:
        time.sleep(1.0)
    return queued(backend, ids) == []


def test_after_on_a_scheduler_starts_the_rows_after_the_upstreams_last_row_and_reduces(scheduler):
    backend, parent = scheduler
    on = dict(backend=backend, nodes=2, cpus_per_node=1)
    up_marks, down_marks = dirs(parent, "up_marks", "down_marks")
    up = slurm_apply(stamped(up_marks, sleep_s=3.0), pd.DataFrame({"x": range(4)}), jobname="chain_up",
                     job_dir=parent, **on)
    down = slurm_apply(stamped(down_marks), pd.DataFrame({"x": range(3)}), jobname="chain_down",
                       job_dir=parent, after=up, **on)
    sub = down.manifest.submissions[0]
    assert sub.gate_id and sub.job_id  # queued at once, with its gate
    early = down.get_job_status()
    assert early.state == "PENDING" and not list(down_marks.iterdir()), str(early)
    assert "waits for: job chain_up" in str(early)

    def total(out: pd.DataFrame) -> float:
        return float(out["x"].sum())

    reduced = down.reduce(total, jobname="chain_total")
    assert down.wait(timeout_s=180, progress=False).completed
    up_end = max(end for _, end in ran(up_marks).values())
    assert len(ran(up_marks)) == 4 and min(start for start, _ in ran(down_marks).values()) >= up_end
    assert reduced.wait(timeout_s=180, progress=False).completed
    assert reduced.get_output() == 3.0
    assert "waited for by: job chain_total" in str(down.get_job_status())


def test_a_failed_or_cancelled_upstream_on_a_scheduler_ends_the_dependent_with_nothing_queued(scheduler):
    backend, parent = scheduler
    on = dict(backend=backend, nodes=2, cpus_per_node=1)
    bad_marks, never_marks, slow_marks, cut_marks = dirs(parent, "bad", "never", "slow", "cut")
    flag = parent / "flag"
    flag.touch()
    bad = slurm_apply(fails_while(bad_marks, flag, sleep_s=1.0), pd.DataFrame({"x": range(3)}),
                      jobname="chain_bad", job_dir=parent, **on)
    never = slurm_apply(stamped(never_marks), pd.DataFrame({"x": range(2)}), jobname="chain_never",
                        job_dir=parent, after=bad, **on)
    slow = slurm_apply(stamped(slow_marks, sleep_s=120.0), pd.DataFrame({"x": range(2)}),
                       jobname="chain_slow", job_dir=parent, **on)
    cut = slurm_apply(stamped(cut_marks), pd.DataFrame({"x": range(2)}), jobname="chain_cut",
                      job_dir=parent, after=slow, **on)
    assert queued(backend, [never.manifest.submissions[0].job_id])  # waits in the queue, for now
    # A row of the upstream failed: the dependent never runs, leaves nothing queued, says why.
    final = never.wait(timeout_s=180, progress=False)
    assert final.ended and final.rows_done == 0 and not list(never_marks.iterdir())
    assert "never runs: job chain_bad" in str(final) and "rows 1 raised" in str(final), str(final)
    assert nothing_queued(backend, never.manifest.submissions[0])
    # The upstream cancelled while it runs: the same.
    slow.cancel()
    final = cut.wait(timeout_s=180, progress=False)
    assert final.ended and final.rows_done == 0 and not list(cut_marks.iterdir())
    assert "never runs: job chain_slow" in str(final) and "CANCELLED" in str(final), str(final)
    assert nothing_queued(backend, cut.manifest.submissions[0])
    # Resubmitted, the dependent still runs only after its upstream: refused while that has a
    # row failed; once it runs again, queued behind a new gate that waits for it.
    with pytest.raises(InputError, match="runs after job chain_bad"):
        never.resubmit()
    flag.unlink()
    bad.resubmit(failed=True)
    never.resubmit()
    assert never.manifest.latest.gate_id
    assert never.wait(timeout_s=180, progress=False).completed
    mended_end = float((bad_marks / "1").read_text().split()[1])
    assert min(start for start, _ in ran(never_marks).values()) >= mended_end


# -- on the private Slurm cluster (marked slurm by its fixture) -----------------------------------

def test_after_on_slurm_waits_for_a_retry_submitted_after_it_was_queued(cluster, job_parent):
    up_marks, down_marks = dirs(job_parent, "flaky_marks", "later_marks")
    up = slurm_apply(flaky_once(up_marks), pd.DataFrame({"x": range(3)}), jobname="chain_flaky",
                     job_dir=job_parent, retries=1, retry_errors=True, nodes=2, cpus_per_node=1)
    down = slurm_apply(stamped(down_marks), pd.DataFrame({"x": range(2)}), jobname="chain_later",
                       job_dir=job_parent, after=up, nodes=1, cpus_per_node=1)
    assert down.wait(timeout_s=240, progress=False).completed
    assert up.get_job_status().completed and len(up.manifest.submissions) == 2  # a retry ran row 1
    retried_end = float((up_marks / "1").read_text().split()[0])
    assert min(start for start, _ in ran(down_marks).values()) >= retried_end


def test_a_refused_array_takes_its_gate_back():
    """submit_after, which both schedulers' submit_gated use: the gate is taken back when the
    array is refused, and the refusal is what the caller sees."""
    from slurm_apply._backends.base import submit_after
    from slurm_apply._errors import SchedulerError, SubmissionError

    undone = []

    def refused(gate):
        raise SubmissionError(f"array after {gate} refused")

    def undo(gate):
        undone.append(gate)
        raise SchedulerError("the cancel failed too")  # best effort: the refusal still comes

    assert submit_after(lambda: "7", lambda gate: f"8 after {gate}", undone.append) == ("7", "8 after 7")
    assert undone == []
    with pytest.raises(SubmissionError, match="array after 7 refused"):
        submit_after(lambda: "7", refused, undo)
    assert undone == ["7"]
