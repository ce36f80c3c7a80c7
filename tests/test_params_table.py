"""The caller's table is stored once, as the rows' chunks the nodes read; the output table, a
resubmission and test_row rebuild what they need from it, dtypes, index and all."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slurm_apply import SlurmJob, slurm_apply
from slurm_apply._store import layout as jd
from slurm_apply._store import table
from rowfns import ident, describe  # a light module: tasks import it (tests/rowfns.py)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_the_job_directory_holds_the_table_once(tmp_path: Path) -> None:
    n = 400_000
    df = pd.DataFrame({"x": np.arange(n, dtype=np.int64)})
    job = slurm_apply(ident, df, backend="local", nodes=2, cpus_per_node=2, submit=False,
                      jobname="once", job_dir=tmp_path, preflight=False)
    one_copy = n * 8
    assert _dir_bytes(job.job_dir) < 1.2 * one_copy, sorted(
        (p.stat().st_size, str(p.relative_to(job.job_dir))) for p in job.job_dir.rglob("*") if p.is_file())


# pandas 2 wants to be told that the strings mix ISO 8601 forms; pandas 1 reads them as they are.
ISO8601 = {"format": "ISO8601"} if int(pd.__version__.split(".")[0]) >= 2 else {}


def every_kind_of_column() -> pd.DataFrame:
    n = 6
    df = pd.DataFrame({
        "i32": np.arange(n, dtype=np.int32) - 3,
        "u8": np.arange(n, dtype=np.uint8) * 40,
        "f32": np.linspace(0, 1, n, dtype=np.float32),
        "big_endian": np.arange(n, dtype=">i8") * 10**12,
        "f16": np.arange(n, dtype=np.float16) / 3,
        "flag": [True, False] * 3,
        "z": np.arange(n) * (1 + 2j),
        "obj": [1, "a", None, [1, 2], (3,), {"k": 1}],
        "arrays": [np.arange(2) + i for i in range(n)],  # equal lengths: must stay objects
        "text": ["a", "b", None, "d", "e", "f"],
        "cat": pd.Categorical(["lo", "hi", None, "lo", "hi", "hi"], categories=["lo", "mid", "hi"],
                              ordered=True),
        "when": pd.to_datetime(["2024-01-01", None, "2024-03-01T12:00:00.000000001", "2024-04-01",
                                "2024-05-01", "2024-06-01"], **ISO8601),
        "when_tz": pd.date_range("2024-01-01", periods=n, freq="h", tz="Europe/Paris"),
        "dur": pd.to_timedelta(np.arange(n), unit="s"),
        "nint": pd.array([1, None, 3, 4, None, 6], dtype="Int64"),
        "nbool": pd.array([True, None, False, True, False, None], dtype="boolean"),
        "nfloat": pd.array([0.5, None, np.nan, 1.5, 2.5, 3.5], dtype="Float64"),
        "period": pd.period_range("2024-01", periods=n, freq="M"),
    }, index=pd.Index([f"g{i}" for i in range(n)], name="gene"))
    df.columns.name = "param"
    return df


def test_the_output_table_gives_back_every_column_as_it_was(tmp_path: Path) -> None:
    df = every_kind_of_column()
    job = slurm_apply(describe, df, backend="local", nodes=1, cpus_per_node=1, jobname="kinds",
                      job_dir=tmp_path, seed=False)
    assert job.wait(timeout_s=60, progress=False).completed
    out = job.get_output()
    # (the output's columns, the table's beside the results', have no name)
    pd.testing.assert_frame_equal(out[list(df.columns)], df.rename_axis(columns=None), check_exact=True)
    pd.testing.assert_frame_equal(table.read(job.job_dir), df, check_exact=True)
    assert job.labels([0, 5]) == ["g0", "g5"]

    # The nodes got each row as the caller's table has it; a resubmission's rows, built from
    # the stored table, and test_row, from the stored chunks, give every row the same values.
    first = out["result"].tolist()
    assert [job.test_row(f"g{i}") for i in range(len(df))] == first
    job.resubmit(rows=[0, 2, 5])
    assert job.wait(timeout_s=60, progress=False).completed
    assert job.get_output()["result"].tolist() == first
    assert sorted(json.loads(p.read_text())["rows"] for p in (job.job_dir / "s1" / "tasks").glob("*.done")) == [3]


def test_test_row_gives_the_node_s_types(tmp_path: Path) -> None:
    df = pd.DataFrame({"n": [1, 2], "x": [0.5, 1.5]})  # one row of these is a float Series
    job = slurm_apply(describe, df, backend="local", nodes=1, cpus_per_node=1, jobname="types",
                      job_dir=tmp_path, seed=False)
    assert job.wait(timeout_s=60, progress=False).completed
    on_node = job.get_output()["result"].tolist()
    assert "('n', 'int', '1')" in on_node[0]
    assert [job.test_row(0), job.test_row(1, fresh=True)] == on_node


def test_a_directory_written_with_the_whole_table_pickled_is_still_read(tmp_path: Path) -> None:
    """Format 2 kept params.pkl (the whole table) beside the chunks."""
    df = pd.DataFrame({"x": range(5), "y": list("abcde")}, index=list("vwxyz"))
    job = slurm_apply(describe, df, backend="local", nodes=1, cpus_per_node=1, jobname="old",
                      job_dir=tmp_path, seed=False)
    assert job.wait(timeout_s=60, progress=False).completed
    expected = job.get_output()
    (job.job_dir / jd.PARAMS_META).unlink()
    (job.job_dir / jd.INDEX).unlink()
    df.to_pickle(job.job_dir / "params.pkl")
    manifest = json.loads((job.job_dir / jd.MANIFEST).read_text())
    manifest["format"] = 2
    (job.job_dir / jd.MANIFEST).write_text(json.dumps(manifest))
    old = SlurmJob.from_dir(job.job_dir)
    pd.testing.assert_frame_equal(old.get_output(), expected)
    assert old.test_row("x") == expected["result"]["x"]
    old.resubmit(rows=pd.Index(["w"]))
    assert old.wait(timeout_s=60, progress=False).completed
    pd.testing.assert_frame_equal(old.get_output(), expected)


def test_a_column_pandas_cannot_rebuild_from_values_is_kept_whole(tmp_path: Path) -> None:
    df = every_kind_of_column()[["i32", "period", "nfloat", "obj"]]
    df = df.assign(long=np.arange(len(df), dtype=np.longdouble) / 3)  # Python floats would round it
    assert [m[0] for m in table.describe_columns(df)] == ["array", "values", "kept", "values", "kept"]
    job = slurm_apply(describe, df, backend="local", nodes=1, cpus_per_node=1, submit=False,
                      jobname="kept", job_dir=tmp_path, preflight=False)
    pd.testing.assert_frame_equal(table.read(job.job_dir), df, check_exact=True)


@pytest.mark.parametrize("bad", [b"", b"not a pickle"])
def test_a_damaged_table_file_is_a_job_dir_error(tmp_path: Path, bad: bytes) -> None:
    from slurm_apply import JobDirError

    job = slurm_apply(ident, pd.DataFrame({"x": range(3)}), backend="local", nodes=1,
                      cpus_per_node=1, submit=False, jobname="bad", job_dir=tmp_path, preflight=False)
    (job.job_dir / jd.PARAMS_META).write_bytes(bad)
    with pytest.raises(JobDirError, match=jd.PARAMS_META):
        table.read(job.job_dir)
