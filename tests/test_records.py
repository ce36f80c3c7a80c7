"""The job directory's formats: framed result records, chunked parameters, planning."""

from __future__ import annotations

import pickle

import pandas as pd
import pytest

from slurm_apply import _jobdir as jd
from slurm_apply import _submit
from slurm_apply._worker import decode_chunk, row_seed


def frame(rows, values, errors=None):
    return jd.encode_frame(pickle.dumps((rows, values, errors or {})))


def test_frames_round_trip_and_torn_tail_is_ignored(tmp_path):
    path = tmp_path / "t.rec"
    whole = frame([0, 1], ["a", "b"]) + frame([2], ["c"], {3: ("E", "m", "tb")})
    torn = frame([4, 5], ["d", "e"])[:-3]
    path.write_bytes(whole + torn)
    end, batches = jd.read_batches(path)
    assert end == len(whole)
    assert batches == [([0, 1], ["a", "b"], {}), ([2], ["c"], {3: ("E", "m", "tb")})]
    # Reading on from the offset finds nothing new until the frame is complete.
    assert jd.read_batches(path, end) == (end, [])


def test_a_corrupt_frame_stops_reading(tmp_path):
    path = tmp_path / "t.rec"
    good = frame([0], [1])
    bad = bytearray(frame([1], [2]))
    bad[-1] ^= 0xFF  # the CRC no longer matches
    path.write_bytes(good + bytes(bad) + frame([2], [3]))
    end, batches = jd.read_batches(path)
    assert batches == [([0], [1], {})] and end == len(good)


def test_append_after_a_torn_tail_cuts_it_off(tmp_path):
    path = tmp_path / "t.rec"
    path.write_bytes(frame([0], [1]) + b"SAR1\x10\x00")
    with jd.open_records_for_append(path) as fh:
        fh.write(frame([1], [2]))
    _, batches = jd.read_batches(path)
    assert [b[0] for b in batches] == [[0], [1]]


def test_atomic_write_leaves_no_partial_file(tmp_path):
    path = tmp_path / "x.json"
    jd.write_json(path, {"a": 1})
    with pytest.raises(RuntimeError):
        with jd.atomic_open(path) as fh:
            fh.write(b"{broken")
            raise RuntimeError("killed half-way")
    assert jd.read_json(path) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_claims_are_exclusive(tmp_path):
    jd.make_submission_dirs(tmp_path, 0)
    assert jd.try_claim(tmp_path, 0, 3, task=1, proc=0)
    assert not jd.try_claim(tmp_path, 0, 3, task=2, proc=1)
    assert jd.read_claims(tmp_path, 0) == {3: (1, 0)}


def test_params_chunks_are_read_one_at_a_time(tmp_path):
    df = pd.DataFrame({"a": range(10), "b": [f"s{i}" for i in range(10)], "c": [0.5] * 10})
    blobs = _submit.encode_chunks(df, None, 3)
    jd.write_params_bin(tmp_path / "p.bin", blobs)
    reader = jd.ParamsReader(tmp_path / "p.bin")
    assert len(reader) == 3
    rows, names, cols = decode_chunk(reader.chunk(1))
    assert rows == [4, 5, 6] and names == ["a", "b", "c"]
    assert cols[0] == [4, 5, 6] and type(cols[0][0]) is int  # plain Python numbers on the node
    assert cols[1] == ["s4", "s5", "s6"] and cols[2] == [0.5] * 3
    reader.close()


def test_resubmission_chunks_carry_their_row_numbers(tmp_path):
    df = pd.DataFrame({"a": range(10)})
    blobs = _submit.encode_chunks(df, [2, 7, 9], 2)
    rows, _, cols = decode_chunk(pickle.loads(blobs[1]))
    assert rows == [9] and cols == [[9]]
    assert _submit.row_ranges([0, 1, 2, 5, 6, 9]) == [[0, 3], [5, 7], [9, 10]]


@pytest.mark.parametrize("n_rows, nodes, cpus, max_array, expected", [
    (30, 3, 2, None, (3, 30)),
    (3, 4, 2, None, (2, 3)),          # no more tasks than rows need
    (100_000, 2, 1, None, (2, 32)),   # 16 chunks per process
    (10_000, 50, 1, 20, (20, 320)),   # never more tasks than MaxArraySize
    (64, 2, 2, None, (2, 64)),        # one row per chunk for a small table
    (5, 1, 1, None, (1, 5)),
])
def test_plan(n_rows, nodes, cpus, max_array, expected):
    assert _submit.plan(n_rows, nodes, cpus, max_array) == expected


def test_chunk_bounds_cover_every_row_once():
    bounds = _submit.chunk_bounds(10, 3)
    assert bounds == [(0, 4), (4, 7), (7, 10)]


def test_row_seed_depends_only_on_job_seed_and_row():
    seeds = [row_seed(42, r) for r in range(1000)]
    assert len(set(seeds)) == 1000
    assert row_seed(42, 5) == row_seed(42, 5) != row_seed(43, 5)
    assert all(0 <= s < 2**32 for s in seeds)
