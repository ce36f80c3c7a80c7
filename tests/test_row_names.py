"""Rows are named as the user names them (params_df's labels), and partial results say each
row's state."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from slurm_apply import FailedRow, MissingRow, RowsFailedError, slurm_apply


def picky(x):
    if x in (3, 5):
        raise ValueError(f"no {x}")
    return None if x == 0 else x * 2


def run(f, df, tmp_path, **kw):
    return slurm_apply(f, df, backend="local", nodes=1, cpus_per_node=1, job_dir=tmp_path, **kw)


@pytest.fixture
def labelled(tmp_path):
    df = pd.DataFrame({"x": range(6)}, index=pd.Index([f"g{i}" for i in range(6)], name="gene"))
    job = run(picky, df, tmp_path, jobname="labels")
    job.wait(timeout_s=60, progress=False)
    return job


def test_status_errors_and_get_errors_name_rows_by_label(labelled):
    st = labelled.get_job_status()
    assert st.failed_rows == [3, 5]  # positions, for code
    text = str(st)
    assert "failed rows: 'g3', 'g5' (first: row 'g3': ValueError: no 3)" in text
    assert "g3" in st._repr_html_() and "row 3" not in st._repr_html_()
    assert list(labelled.get_errors()) == ["g3", "g5"]
    with pytest.raises(RowsFailedError, match=r"rows 'g3', 'g5'\. First, row 'g3'") as info:
        labelled.get_output()
    assert info.value.rows == ["g3", "g5"]


def test_raw_output_never_hides_a_failure_behind_none(labelled):
    raw = labelled.get_output(outtype="raw", errors="keep")
    assert raw[0] is None  # f really returned None for row 0
    assert raw[3] == FailedRow("g3", "ValueError", "no 3", raw[3].traceback)
    assert "ValueError: no 3" in raw[3].traceback
    assert raw[1] == 2 and isinstance(raw[5], FailedRow)


def slow(x):
    time.sleep(0.4)
    return x


def test_partial_results_while_running_say_each_rows_state_and_never_block(tmp_path):
    job = run(slow, pd.DataFrame({"x": range(12)}), tmp_path, jobname="partial")
    while job.get_job_status().rows_done < 2:
        time.sleep(0.1)
    t0 = time.monotonic()
    out = job.get_output(errors="keep")
    assert time.monotonic() - t0 < 5
    states = set(out.state)
    assert "done" in states and "pending" in states and len(out) == 12
    assert out.loc[out.state == "done", "result"].notna().all()
    raw = job.get_output(outtype="raw", errors="keep")
    assert any(isinstance(v, MissingRow) and v.reason.startswith("pending") for v in raw)
    job.cancel()
    st = job.wait(timeout_s=60, progress=False)
    out = job.get_output(errors="keep")
    assert set(out.state) <= {"done", "missing"} and (out.state == "missing").sum() == st.rows_missing
