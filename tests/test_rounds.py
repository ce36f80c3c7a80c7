"""Growing a job in rounds (issue 19, items 1 and 2): ``job.extend(new_rows)`` and adaptive rounds
through ``as_completed()``, on the local backend (no cluster), and once on the private Slurm
cluster (the last test).

The functions the jobs run are made inside the helpers below: cloudpickle then stores them by
value, so the node never imports this test module.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from rowfns import draws, once  # a light module: tasks import it (tests/rowfns.py)
from slurm_apply import InputError, JobActiveError, JobDirError, SlurmJob, cli, slurm_apply
from slurm_apply._store import layout as jd
from slurm_apply._store import table
from slurm_apply._store.manifest import EXTENDED_FORMAT, RETRIED

LOCAL = dict(backend="local", nodes=1, cpus_per_node=1)


def grid(a: int, b: int) -> pd.DataFrame:
    return pd.DataFrame({"x": range(a, b), "y": [0.25 * i for i in range(a, b)]})


def tree(path: Path) -> Dict[str, float]:
    """Every file below ``path`` with its modification time (what a refused call must not touch),
    but the logs and the local runner's state, which the job's runner and follow-up write."""
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in sorted(path.rglob("*"))
            if p.relative_to(path).parts[0] not in (jd.LOGS, jd.LOCAL)}


# --- item 1: extend() ---------------------------------------------------------------------------


def test_a_job_grown_in_rounds_draws_what_the_same_rows_draw_in_one_call(tmp_path):
    df = grid(0, 11)
    whole = slurm_apply(draws(), df, seed=17, jobname="whole", job_dir=tmp_path, **LOCAL)
    rounds = slurm_apply(draws(), df.iloc[:4], seed=17, jobname="rounds", job_dir=tmp_path, **LOCAL)
    rounds.wait(timeout_s=60, progress=False)
    rounds.extend(df.iloc[4:6].reset_index(drop=True))  # after the first round ended
    rounds.extend(df.iloc[6:].reset_index(drop=True))  # while the second may still run
    assert rounds.wait(timeout_s=60, progress=False).completed
    whole.wait(timeout_s=60, progress=False)
    one, grown = whole.get_output(), rounds.get_output()
    pd.testing.assert_frame_equal(grown, one, check_exact=True)
    assert grown.r.nunique() == 11 and grown.n.nunique() == 11  # the rows drew numbers of their own
    assert list(grown.index) == list(range(11)) and list(grown.x) == list(range(11))
    # test_row runs an added row with its own seed and arguments, as its task did.
    assert rounds.test_row(9) == one.loc[9, ["r", "n", "s"]].to_dict()
    m = rounds.manifest
    assert (m.n_rows, m.format, [s.added for s in m.submissions]) == (11, EXTENDED_FORMAT, [False, True, True])
    assert [s.rows for s in m.submissions] == [((0, 4),), ((4, 6),), ((6, 11),)]
    assert isinstance(rounds.index, pd.RangeIndex) and len(rounds.index) == 11


def test_rows_added_while_the_job_runs_each_run_once_and_come_back_in_the_order_added(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    job = slurm_apply(once(marks, sleep_first=2.0), pd.DataFrame({"x": range(4)}), jobname="busy",
                      job_dir=tmp_path, backend="local", nodes=2, cpus_per_node=1)
    deadline = time.monotonic() + 30
    while not (marks / "0").exists():  # row 0 runs (and sleeps)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not job.get_job_status().ended
    job.extend(pd.DataFrame({"x": range(4, 9)}))
    status = job.get_job_status()
    assert status.rows_total == 9 and not status.ended
    status = job.wait(timeout_s=60, progress=False)
    assert status.completed and status.rows_done == 9, str(status)
    assert sorted(int(p.name) for p in marks.iterdir()) == list(range(9))  # a second run would raise
    out = job.get_output()
    assert list(out.index) == list(range(9)) and out.result.tolist() == [x * 10 for x in range(9)]


def test_a_handle_made_before_rows_were_added_sees_them(tmp_path):
    job = slurm_apply(draws(), grid(0, 3), seed=1, jobname="other", job_dir=tmp_path, **LOCAL)
    job.wait(timeout_s=60, progress=False)
    before = SlurmJob.from_dir(job.job_dir)
    assert len(before.get_output()) == 3
    job.extend(grid(3, 5).reset_index(drop=True))
    job.wait(timeout_s=60, progress=False)
    out = before.get_output()
    assert list(out.x) == [0, 1, 2, 3, 4] and before.n_rows == 5 and len(before.index) == 5
    assert before.get_job_status().rows_done == 5


def test_added_labels_continue_and_must_not_clash(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    params = pd.DataFrame({"x": [1, 2, 3]}, index=pd.Index(["a", "b", "c"], name="run"))
    job = slurm_apply(once(marks), params, jobname="named", job_dir=tmp_path, **LOCAL)
    job.wait(timeout_s=60, progress=False)
    before = tree(job.job_dir)
    with pytest.raises(InputError, match=r"new_rows' labels 'b', 'c' already name rows of the job.*"
                                         r"new_rows.index = \[") as err:
        job.extend(pd.DataFrame({"x": [4, 5, 6]}, index=["b", "c", "d"]))
    assert err.value.argument == "new_rows"
    with pytest.raises(InputError, match=r"labelled by (object|str) \(e.g. 'a'\), new_rows' by int64"):
        job.extend(pd.DataFrame({"x": [4]}))
    with pytest.raises(InputError, match=r"duplicate labels \('e'\)"):
        job.extend(pd.DataFrame({"x": [4, 5]}, index=["e", "e"]))
    assert tree(job.job_dir) == before  # refused before anything was written
    job.extend(pd.DataFrame({"x": [4, 5]}, index=["d", "e"]))
    job.wait(timeout_s=60, progress=False)
    out = job.get_output()
    assert list(out.index) == ["a", "b", "c", "d", "e"] and out.index.name == "run"
    assert out.result.tolist() == [10, 20, 30, 40, 50]
    (marks / "5").unlink()  # test_row runs it again, here
    assert job.test_row("e") == 50 and job.position("e") == 4


def test_a_default_index_continues_and_a_clash_with_it_says_to_renumber(tmp_path):
    job = slurm_apply(draws(), grid(0, 3), jobname="numbered", job_dir=tmp_path, **LOCAL)
    job.wait(timeout_s=60, progress=False)
    with pytest.raises(InputError, match=r"new_rows' labels 2 already name rows of the job.*"
                                         r"new_rows.reset_index\(drop=True\) numbers them after"):
        job.extend(grid(0, 5).iloc[2:])
    job.extend(grid(0, 5).iloc[3:])  # labelled 3 and 4 already: the next positions, no clash
    job.extend(grid(5, 7).reset_index(drop=True))  # the default index: numbered 5 and 6
    job.wait(timeout_s=60, progress=False)
    assert isinstance(job.index, pd.RangeIndex) and list(job.get_output().x) == list(range(7))


def test_wrong_rows_are_refused_before_anything_is_written(tmp_path):
    df = pd.DataFrame({"x": [1, 2], "flag": [True, False], "w": [0.5, 1.5],
                       "kind": pd.Categorical(["u", "v"])})

    def f(x, flag, w, kind):
        return x

    job = slurm_apply(f, df, jobname="strict", job_dir=tmp_path, **LOCAL)
    job.wait(timeout_s=60, progress=False)
    before = tree(job.job_dir)
    good = pd.DataFrame({"x": [3], "flag": [True], "w": [2.0], "kind": pd.Categorical(["v"])})
    cases = [
        ([3], r"new_rows must be a pandas DataFrame with the job's columns; got list"),
        (good.iloc[:0], r"new_rows has no rows: nothing to add"),
        (good.drop(columns="w"), r"must have the job's columns, \['x', 'flag', 'w', 'kind'\].*missing \['w'\]"),
        (good.assign(z=1), r"not the job's \['z'\]"),
        (good.assign(x=[3.5]), r"'x': the job's rows have int64, new_rows float64.*new_rows.astype\(\{'x': 'int64'\}\)"),
        (good.assign(flag=[1]), r"'flag': the job's rows have bool, new_rows int64"),
        (good.assign(kind=["other"]), r"'kind': the job's rows have category, new_rows (object|str)"),
        (pd.concat([good, good], axis=1), r"more than one column named"),
    ]
    for rows, message in cases:
        with pytest.raises(InputError, match=message):
            job.extend(rows)
    assert tree(job.job_dir) == before and len(SlurmJob.from_dir(job.job_dir).manifest.submissions) == 1
    # Dtypes that convert without changing a value are taken, in the job's dtypes; any column order.
    job.extend(pd.DataFrame({"kind": ["u"], "w": np.array([3], dtype="int32"),
                             "flag": [False], "x": np.array([4], dtype="int8")}))
    job.wait(timeout_s=60, progress=False)
    out = job.get_output()
    assert out.dtypes.to_dict() == {**df.dtypes.to_dict(), "result": np.dtype("int64")}
    assert out.x.tolist() == [1, 2, 4] and out.w.tolist() == [0.5, 1.5, 3.0]
    assert out.kind.tolist() == ["u", "v", "u"] and list(out.kind.cat.categories) == ["u", "v"]


def test_columns_kept_whole_in_the_meta_grow_too(tmp_path):
    # Nullable floats travel as the column itself (the meta's "kept"): NaN and NA stay apart.
    df = pd.DataFrame({"v": pd.array([1.5, None], dtype="Float64"), "t": ["a", "b"]})

    def f(v, t):
        return t

    job = slurm_apply(f, df, jobname="kept", job_dir=tmp_path, **LOCAL)
    job.wait(timeout_s=60, progress=False)
    job.extend(pd.DataFrame({"v": pd.array([None, 2.5], dtype="Float64"), "t": ["c", "d"]}))
    job.wait(timeout_s=60, progress=False)
    back = table.read(job.job_dir)
    expected = pd.DataFrame({"v": pd.array([1.5, None, None, 2.5], dtype="Float64"), "t": list("abcd")})
    pd.testing.assert_frame_equal(back, expected, check_exact=True)
    assert job.get_output().result.tolist() == list("abcd")


def test_a_job_that_cannot_grow_says_why(tmp_path):
    unsent = slurm_apply(draws(), grid(0, 2), jobname="unsent", job_dir=tmp_path, submit=False, **LOCAL)
    with pytest.raises(JobActiveError, match=r"written but never submitted.*job.submit\(\)"):
        unsent.extend(grid(2, 3).reset_index(drop=True))
    job = slurm_apply(draws(), grid(0, 2), jobname="gone", job_dir=tmp_path, **LOCAL)
    job.wait(timeout_s=60, progress=False)
    job.cleanup_files()
    with pytest.raises(JobDirError, match="no longer exists"):
        job.extend(grid(2, 3).reset_index(drop=True))
    assert not job.job_dir.exists()


def test_resubmit_and_retries_cover_the_added_rows(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()

    def flaky(x: int) -> int:
        """Raises the first time it runs a row above 5; sleeps on row 0."""
        import os
        import time

        path = os.path.join(MARKS, str(x))
        first = not os.path.exists(path)
        with open(path, "a") as fh:
            fh.write("run\n")
        if x == 0:
            time.sleep(2.0)
        if x == 1 and first:
            raise ValueError("row 1 fails once")
        if x > 5 and first:
            raise ValueError(f"row {x} fails once")
        return x

    job = slurm_apply(flaky, pd.DataFrame({"x": range(4)}), add_objects={"MARKS": str(marks)},
                      jobname="retried", job_dir=tmp_path, backend="local", nodes=2, cpus_per_node=1,
                      retry_errors=True)
    # Rows added while the first submission runs: its follow-up still retries its own row 1
    # (the added rows are not a resubmission of it), and the wait waits for that retry.
    job.extend(pd.DataFrame({"x": range(4, 8)}))
    status = job.wait(timeout_s=90, progress=False)
    assert status.completed and status.rows_failed == 0, str(status)
    first = job.manifest.submissions[0]
    assert first.decision is not None and first.decision.action == RETRIED, first.decision
    assert job.get_output().result.tolist() == list(range(8))
    runs = {int(p.name): len(p.read_text().split()) for p in marks.iterdir()}
    assert runs == {0: 1, 1: 2, 2: 1, 3: 1, 4: 1, 5: 1, 6: 2, 7: 2}
    # resubmit() takes added rows by label like any other, and reads them from where they are.
    job.resubmit(rows=[7, 2])
    job.wait(timeout_s=60, progress=False)
    assert (marks / "7").read_text().split() == ["run"] * 3 and job.manifest.latest.rows == ((2, 3), (7, 8))
    assert job.get_output().result.tolist() == list(range(8))


def test_extend_never_reads_the_rows_the_job_has(tmp_path, monkeypatch):
    """Adding rows costs what writing them costs, whatever the job's size."""
    job = slurm_apply(draws(), grid(0, 50_000), seed=False, jobname="big", job_dir=tmp_path,
                      submit=False, preflight=False, **LOCAL)
    job.submit()
    job.wait(timeout_s=120, progress=False)

    def refuse(*args, **kwargs):
        raise AssertionError("extend() read the whole table")

    monkeypatch.setattr(table, "read", refuse)
    monkeypatch.setattr(table, "_Filler", refuse)
    job.extend(grid(50_000, 150_000))
    monkeypatch.undo()
    assert job.wait(timeout_s=240, progress=False).completed
    out = job.get_output()
    assert len(out) == 150_000 and out.index.equals(pd.RangeIndex(150_000))
    assert out.s.iloc[-1] == 149_999 * 0.25 * 149_999


def test_the_command_line_needs_nothing_new(tmp_path):
    job = slurm_apply(draws(), grid(0, 2), seed=3, jobname="cli", job_dir=tmp_path, **LOCAL)
    job.wait(timeout_s=60, progress=False)
    job.extend(grid(2, 4).reset_index(drop=True))
    job.wait(timeout_s=60, progress=False)
    result = CliRunner().invoke(cli.main, ["status", str(job.job_dir)], prog_name="slurm-apply")
    assert result.exit_code == 0 and "4/4 rows" in result.output, result.output
    target = tmp_path / "out.csv"
    result = CliRunner().invoke(cli.main, ["output", str(job.job_dir), "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert pd.read_csv(target).x.tolist() == [0, 1, 2, 3]
    result = CliRunner().invoke(cli.main, ["test", str(job.job_dir), "3"])
    assert result.exit_code == 0 and str(job.get_output().r[3])[:8] in result.output, result.output


# --- item 2: adaptive rounds through as_completed() ---------------------------------------------


def test_as_completed_yields_rows_added_in_its_loop_while_earlier_rows_run(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    job = slurm_apply(once(marks, sleep_first=1.5), pd.DataFrame({"x": range(4)}), jobname="adaptive",
                      job_dir=tmp_path, backend="local", nodes=2, cpus_per_node=1)
    seen: List[Any] = []
    rounds = 0
    for label, value in job.as_completed(timeout_s=120):
        seen.append((label, value))
        if rounds < 2 and len(seen) in (1, 5):  # two more rounds, each from what came back
            rounds += 1
            top = max(v for _, v in seen)
            job.extend(pd.DataFrame({"x": range(top + 100 * rounds, top + 100 * rounds + 3)}))
    assert rounds == 2 and len(seen) == 10, seen
    assert sorted(lab for lab, _ in seen) == list(range(10))  # each row once, added ones too
    assert all(v == x * 10 for (lab, v), x in zip(sorted(seen), job.get_output().x))
    assert len(list(marks.iterdir())) == 10


def test_as_completed_of_an_ended_job_goes_on_for_rows_added_in_its_loop(tmp_path):
    job = slurm_apply(draws(), grid(0, 1), seed=2, jobname="late", job_dir=tmp_path, **LOCAL)
    job.wait(timeout_s=60, progress=False)
    labels = []
    for label, _ in job.as_completed(timeout_s=60):  # its first status has ended already
        labels.append(label)
        if label == 0:
            job.extend(grid(1, 3).reset_index(drop=True))
    assert labels == [0, 1, 2]


# --- on the real schedulers: the private Slurm cluster and the Grid Engine cell ----------------
# (the fixture ``scheduler`` runs each test on both, marked slurm and sge)


def test_a_finished_job_grown_on_a_scheduler_draws_what_one_call_draws(scheduler):
    backend, parent = scheduler
    on = dict(backend=backend, nodes=2, cpus_per_node=1)
    df = grid(0, 6)
    whole = slurm_apply(draws(), df, seed=23, jobname="whole", job_dir=parent, **on)
    rounds = slurm_apply(draws(), df.iloc[:3], seed=23, jobname="rounds", job_dir=parent, **on)
    assert rounds.wait(timeout_s=180, progress=False).completed
    rounds.extend(df.iloc[3:].reset_index(drop=True))  # the job had ended: it grows all the same
    status = rounds.wait(timeout_s=180, progress=False)
    assert status.completed and status.rows_done == 6, str(status)
    assert whole.wait(timeout_s=180, progress=False).completed
    grown = rounds.get_output()
    pd.testing.assert_frame_equal(grown, whole.get_output(), check_exact=True)
    assert grown.r.nunique() == 6 and list(grown.x) == list(range(6))
    first, added = rounds.manifest.submissions
    assert added.added and added.rows == ((3, 6),) and added.job_id != first.job_id


def test_rows_added_in_an_as_completed_loop_on_a_scheduler_run_once_and_are_yielded(scheduler):
    """Adaptive rounds: each round added from the results so far, the first while rows still run."""
    backend, parent = scheduler
    marks = parent / "marks"
    marks.mkdir()
    os.chmod(marks, 0o777)
    # Row 1 sleeps: row 0 comes before it in its task's order if they share one, so a row comes
    # back while row 1 still runs. (Sleeping rows 0 and 1, the first of each task, made every
    # row come back at once, and the job could end before the loop saw its first row.)
    job = slurm_apply(once(marks, sleep_first=5.0, sleepers=(1,)), pd.DataFrame({"x": range(4)}),
                      jobname="adapt", job_dir=parent, backend=backend, nodes=2, cpus_per_node=1)
    seen: List[Any] = []
    ran_when_grown = []
    for label, value in job.as_completed(timeout_s=240):
        seen.append((label, value))
        if len(seen) in (1, 5):  # two more rounds, each from what came back
            ran_when_grown.append(job.get_job_status().ended)
            top = max(v for _, v in seen)
            job.extend(pd.DataFrame({"x": range(top + 100, top + 100 + (3 if len(seen) == 1 else 1))}))
    assert ran_when_grown[0] is False  # the first round was added while row 1 still ran
    assert sorted(lab for lab, _ in seen) == list(range(8)), seen  # each row once, added ones too
    status = job.get_job_status()
    assert status.completed and status.rows_failed == 0, str(status)  # a second run would raise
    out = job.get_output()
    assert len(list(marks.iterdir())) == 8 and list(out.index) == list(range(8))
    assert out.result.tolist() == [x * 10 for x in out.x] and dict(seen) == out.result.to_dict()
    assert [s.added for s in job.manifest.submissions] == [False, True, True]
