"""Results stored by column: a batch of rows that returned numbers (or strings) of one shape is
kept as arrays, and the output table is built from them without a Python object per number;
it must be exactly the table the row-by-row path gives, dtypes included."""

from __future__ import annotations

import random
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from slurm_apply._job import output as _output
from slurm_apply._status.results import Results
from slurm_apply._store import columns, records


@pytest.mark.parametrize("values", [
    [1.5, 2.0, float("nan")], [1, -2, 2**63 - 1], [True, False], ["a", "", "é"],
    [np.float64(1.5), np.float64(2)], [np.int64(7), np.int64(-1)],
    [{"a": 1.0, "b": 2}, {"a": 3.5, "b": -4}], [{"s": "x", "t": True}],
    [{"m": np.float64(0.5)}, {"m": np.float64(2)}],
])
def test_values_of_one_shape_go_by_column_and_come_back_exactly(values: List[Any]) -> None:
    encoded = columns.encode(values)
    assert encoded is not None
    back = columns.decode(encoded)
    assert [repr(v) for v in back] == [repr(v) for v in values]  # types too, not just equality
    assert [type(v) for v in back] == [type(v) for v in values]


@pytest.mark.parametrize("values", [
    [], [1, 2.5], [1.0, None], [True, 1], [np.float32(1)], [np.bool_(True)], [2**63],
    [[1, 2]], [{"a": 1}, {"a": 1, "b": 2}], [{"a": 1, "b": 2}, {"b": 2, "a": 1}], [{}],
    [{1: 2.0}], [OrderedDict(a=1.0)], [{"a": 1.0}, 2.0], [{"a": [1]}], [{"a": None}],
])
def test_other_values_stay_a_pickled_list(values: List[Any]) -> None:
    assert columns.encode(values) is None


def test_a_frame_says_in_its_head_how_its_values_are_stored(tmp_path: Path) -> None:
    path = tmp_path / "t.rec"
    path.write_bytes(records.encode_frame([0, 1], [{"a": 1.0}, {"a": 2.0}], {5: ("E", "m", "tb")})
                     + records.encode_frame([2], [None], {}))
    by_col, by_row = records.RecordReader(path).read_new()
    assert by_col.columnar and not by_row.columnar
    assert by_col.done.tolist() == [0, 1] and by_col.err.tolist() == [5]  # ids still in the meta
    assert records.read_values(by_col) == [{"a": 1.0}, {"a": 2.0}]
    keys, tags, cols = records.read_columns(by_col)
    assert keys == ["a"] and tags == ["float"] and list(cols[0]) == [1.0, 2.0]
    assert records.RecordReader(path).read_new_batch().columnar.tolist() == [1, 0]


def test_the_node_stores_by_column_without_numpy() -> None:
    code = ("import sys; import slurm_apply._node.rows\n"
            "from slurm_apply._store import records\n"
            "blob = records.encode_frame([0, 1], [{'a': 1.5, 'n': 2}, {'a': 0.5, 'n': 3}], {})\n"
            "print(blob[:4].decode(), 'numpy' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["SAC3", "False"]


# -- the table ---------------------------------------------------------------------------------

Gen = Any  # a function (rows of a frame, rng) -> the values those rows return


def _job(tmp_path: Path, n_rows: int, gen: Gen, seed: int, *, fail_every: int = 0,
         skip: Sequence[int] = (), odd_frame: Optional[Dict[int, Any]] = None) -> Results:
    """Record files as a job's tasks would write them: rows dealt to 3 files in frames of random
    size, some rows raising (some of those rerun later, successfully, in submission 1), some
    rows never recorded, and ``odd_frame`` ({row: value}) as one more frame of its own."""
    rng = random.Random(seed)
    files = {k: tmp_path / f"t{k}.rec" for k in range(3)}
    blobs: Dict[int, List[bytes]] = {k: [] for k in files}
    rows = [r for r in range(n_rows) if r not in set(skip) and r not in (odd_frame or {})]
    rerun: List[int] = []
    pos = 0
    while pos < len(rows):
        batch = rows[pos:pos + rng.randint(1, 40)]
        pos += len(batch)
        failed = [r for r in batch if fail_every and r % fail_every == 3]
        done = [r for r in batch if r not in failed]
        errors = {r: ("ValueError", f"row {r}", "tb") for r in failed}
        blobs[rng.randrange(3)].append(records.encode_frame(done, gen(done, rng), errors))
        rerun += [r for r in failed if r % 2]
    if odd_frame:
        blobs[0].append(records.encode_frame(list(odd_frame), list(odd_frame.values()), {}))
    entries = [(0, k, 0, files[k]) for k in files]
    for k, parts in blobs.items():
        files[k].write_bytes(b"".join(parts))
    if rerun:
        later = tmp_path / "rerun.rec"
        later.write_bytes(records.encode_frame(rerun, gen(rerun, rng), {}))
        entries.append((1, 0, 0, later))
    results = Results(tmp_path, n_rows)
    results.refresh(entries)
    return results


def _row_by_row(results: Results) -> pd.DataFrame:
    done = results.done_mask()
    return _output.result_frame(results.values(), None if done.all() else done.tolist())


def _same_table(results: Results, by_column: bool) -> pd.DataFrame:
    fast = _output.column_frame(results)
    assert (fast is not None) == by_column
    slow = _row_by_row(results)
    if fast is not None:
        assert_frame_equal(fast, slow, check_exact=True)
        assert list(fast.dtypes) == list(slow.dtypes)
    return slow


def per_row(f: Any) -> Gen:
    return lambda rows, rng: [f(r, rng) for r in rows]


def ints_or_floats(rows: List[int], rng: random.Random) -> List[Any]:
    """One type in a frame (a frame mixing them is not stored by column), both in the job."""
    return [{"v": r} for r in rows] if rng.random() < 0.5 else [{"v": r + 0.5} for r in rows]


GENS: Dict[str, Gen] = {
    "floats": per_row(lambda r, rng: {"a": rng.random(), "b": float(r)}),
    "ints": per_row(lambda r, rng: {"n": r * 3 - 7, "k": rng.randrange(-5, 5)}),
    "bools": per_row(lambda r, rng: {"ok": r % 3 == 0}),
    "strings": per_row(lambda r, rng: {"name": f"r{r}", "x": r / 2}),
    "numpy": per_row(lambda r, rng: {"m": np.float64(r) / 3, "i": np.int64(r)}),
    "ints or floats by frame": ints_or_floats,
    "scalar floats": per_row(lambda r, rng: rng.random()),
    "scalar ints": per_row(lambda r, rng: r),
    "scalar bools": per_row(lambda r, rng: r % 2 == 0),
    "scalar strings": per_row(lambda r, rng: str(r)),
}


@pytest.mark.parametrize("name", list(GENS))
@pytest.mark.parametrize("holes", [False, True])
def test_the_table_by_column_is_the_row_by_row_table(tmp_path: Path, name: str, holes: bool) -> None:
    gen = GENS[name]
    kw: Dict[str, Any] = dict(fail_every=7, skip=[0, 55, 56, 299]) if holes else {}
    results = _job(tmp_path, 300, gen, seed=len(name), **kw)
    assert results.n_done == 300 - (len(kw.get("skip", [])) + _unrerun(kw))
    _same_table(results, by_column=True)


def _unrerun(kw: Dict[str, Any]) -> int:
    """Rows that raised and were not rerun (even rows with r % 7 == 3), outside the skipped."""
    if not kw:
        return 0
    return sum(1 for r in range(300) if r % 7 == 3 and not r % 2 and r not in kw["skip"])


def test_the_column_order_is_that_of_the_first_row(tmp_path: Path) -> None:
    def gen(rows: List[int], rng: random.Random) -> List[Any]:  # one key order per frame
        return [{"b": 1.0, "a": 2.0} if rows[0] < 3 else {"a": 0.5, "b": r * 1.0} for r in rows]

    results = _job(tmp_path, 120, gen, seed=1, skip=[0])
    assert list(_same_table(results, by_column=True).columns) == ["b", "a"]


@pytest.mark.parametrize("odd", [
    {40: {"a": 1.0, "c": 2.0}},  # other keys: from_records adds a column
    {40: None},                  # a row that returned None among dicts
    {40: {"a": [1, 2], "b": 0.0}},  # a value that is not a scalar
    {40: {"a": True, "b": 0.0}},    # bools beside floats: an object column
    {40: 7.0, 41: 8.0},             # scalars beside dicts
])
def test_other_shapes_fall_back_to_row_by_row(tmp_path: Path, odd: Dict[int, Any]) -> None:
    results = _job(tmp_path, 200, per_row(lambda r, rng: {"a": r * 0.5, "b": -1.0}), seed=3, fail_every=9,
                   skip=[5, 150], odd_frame=odd)
    table = _same_table(results, by_column=False)
    assert len(table) == 200


def test_a_job_of_dicts_with_errors_and_missing_rows(tmp_path: Path) -> None:
    """End to end on this machine: the table kept with errors, the raw values exact."""
    from slurm_apply import slurm_apply

    def f(x):
        if x % 10 == 4:
            raise ValueError("four")
        return {"half": x / 2, "x": x, "even": x % 2 == 0}

    job = slurm_apply(f, pd.DataFrame({"x": range(60)}), backend="local", job_dir=tmp_path,
                      jobname="cols", nodes=2, cpus_per_node=2)
    job.wait(timeout_s=120, progress=False)
    out = job.get_output(errors="keep")
    assert out.dtypes.drop(["error", "state"]).to_dict() == {"x": np.int64, "half": np.float64,
                                                  "x_result": np.float64, "even": object}
    assert out.loc[4, "error"] == "ValueError: four" and np.isnan(out.loc[4, "half"])
    assert out.loc[5, "half"] == 2.5 and out.loc[5, "even"] is False
    raw = job.get_output(outtype="raw", errors="keep")
    assert raw[6] == {"half": 3.0, "x": 6, "even": True} and type(raw[6]["x"]) is int
    assert raw[4].row == 4 and raw[4].message == "four"  # a FailedRow, not a bare None
