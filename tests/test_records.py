"""The job directory's formats: result records (format 2) and the one merge rule, chunked
parameters, planning."""

from __future__ import annotations

import itertools
import os
import pickle
import random
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from slurm_apply import JobDirError, ResultsError, slurm_apply
from slurm_apply._store import layout as jd
from slurm_apply._store import params
from slurm_apply._launch import write as _submit
from slurm_apply._store.manifest import ranges
from slurm_apply._status.merge import ERROR, NO_RECORD, SUCCESS, make_key, merge, split_key
from slurm_apply._status.results import Results, list_record_files
from slurm_apply._store import claims, records
from slurm_apply._node.rows import row_seed
from slurm_apply._store.params import chunk_bounds, decode_chunk
from slurm_apply._store.table import encode_chunks


def frame(rows, values, errors=None):
    return records.encode_frame(rows, values, errors or {})


def read_all(path, ids=records.numpy_ids):
    reader = records.RecordReader(path, ids=ids)
    return reader, reader.read_new()


def _refuse(*args):
    raise ModuleNotFoundError("No module named 'nowhere'")


class Unloadable:
    """Pickles fine; unpickling it fails, as an object of a module not importable here would."""

    def __reduce__(self):
        return (_refuse, ())


# -- record files --------------------------------------------------------------------------------


def test_frames_round_trip(tmp_path):
    path = tmp_path / "t.rec"
    errors = {3: ("E", "m\udcff", "tb")}  # a lone surrogate (from a file name, say) survives
    path.write_bytes(frame([0, 1], ["a", {"b": 2}]) + frame([7], [None], errors))
    reader, frames = read_all(path)
    assert [f.number for f in frames] == [0, 1] and reader.offset == path.stat().st_size
    assert frames[0].done.tolist() == [0, 1] and frames[0].err.tolist() == []
    assert frames[1].done.tolist() == [7] and frames[1].err.tolist() == [3]
    assert records.read_values(frames[0]) == ["a", {"b": 2}]
    assert records.parse_errors(frames[1]) == errors
    assert records.parse_errors(frames[0]) == {}


def test_a_torn_tail_is_ignored_until_it_is_complete(tmp_path):
    path = tmp_path / "t.rec"
    whole = frame([0, 1], ["a", "b"])
    last = frame([4, 5], ["d", "e"], {6: ("E", "m", "tb")})
    for cut in (3, records.HEAD.size + 5, len(last) - 1):  # in the head, the meta, the values
        path.write_bytes(whole + last[:cut])
        reader, frames = read_all(path)
        assert len(frames) == 1 and reader.offset == len(whole)
        assert reader.read_new() == []
        with open(path, "ab") as fh:
            fh.write(last[cut:])
        (new,) = reader.read_new()
        assert new.number == 1 and new.done.tolist() == [4, 5]
        assert reader.offset == len(whole + last)
        assert records.read_values(new) == ["d", "e"]


def test_a_corrupt_meta_stops_reading(tmp_path):
    path = tmp_path / "t.rec"
    good = frame([0], [1])
    bad = bytearray(frame([1], [2]))
    bad[records.HEAD.size + 9] ^= 0xFF  # a row id: the meta no longer matches its CRC
    path.write_bytes(good + bytes(bad) + frame([2], [3]))
    reader, frames = read_all(path)
    assert [f.done.tolist() for f in frames] == [[0]] and reader.offset == len(good)


def test_corrupt_values_are_found_only_when_read(tmp_path):
    path = tmp_path / "t.rec"
    data = bytearray(frame([0, 1], ["a", "b"], {2: ("E", "m", "tb")}))
    data[-2] ^= 0xFF
    path.write_bytes(bytes(data))
    _, (only,) = read_all(path)
    assert only.done.tolist() == [0, 1]  # the index does not read the values
    with pytest.raises(JobDirError, match="checksum"):
        records.read_values(only)


def test_batches_index_the_same_frames_as_read_new(tmp_path):
    path = tmp_path / "t.rec"
    data = (frame([0, 1], ["a", "b"], {2: ("E", "m", "tb")}) + frame([], [], {9: ("E", "m", "tb")})
            + frame([3], ["c"]))
    path.write_bytes(data + frame([4], ["d"])[:-1])
    _, frames = read_all(path)
    reader = records.RecordReader(path)
    batch = reader.read_new_batch()
    assert reader.offset == len(data) and reader.frames == 3 and batch.first == 0
    assert list(batch.starts) == [f.offset for f in frames]
    assert list(batch.meta_crcs) == [f.meta_crc for f in frames]
    assert list(batch.n_done) == [2, 0, 1] and list(batch.n_err) == [1, 1, 0]
    assert np.frombuffer(batch.done, "<i8").tolist() == [0, 1, 3]
    assert np.frombuffer(batch.err, "<i8").tolist() == [2, 9]
    assert reader.read_new_batch().first == 3 and reader.offset == len(data)
    with records.RecordFile(path) as rf:
        again = rf.frame(frames[2].offset, 2)
        assert again.done.tolist() == [3] and rf.values(again) == ["c"]
        with pytest.raises(JobDirError, match="no valid record frame"):
            rf.frame(frames[2].offset + 1, 2)


def test_append_after_a_torn_tail_cuts_it_off(tmp_path):
    path = tmp_path / "t.rec"
    path.write_bytes(frame([0], [1]) + b"SAR2\x10\x00")
    with records.open_for_append(path) as fh:
        fh.write(frame([1], [2]))
    _, frames = read_all(path)
    assert [f.done.tolist() for f in frames] == [[0], [1]]
    assert [records.read_values(f) for f in frames] == [[1], [2]]


def test_the_node_reads_row_ids_without_numpy_or_unpickling(tmp_path):
    path = tmp_path / "t.rec"
    path.write_bytes(frame([5, 6], [Unloadable(), Unloadable()], {7: ("E", "m", "tb")}) + b"SAR2")
    code = ("import sys; import slurm_apply._node.task\n"
            "from slurm_apply._store import records as r\n"
            f"b = r.RecordReader({str(path)!r}).read_new_batch()\n"
            f"r.open_for_append({str(path)!r}).close()\n"
            "print(sorted(set(r.array_ids(b.done)) | set(r.array_ids(b.err))), "
            "'numpy' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[0] == "[5, 6, 7] False"


def test_a_requeued_process_skips_its_saved_rows_without_unpickling_them(tmp_path):
    def f(x):
        return x * 10

    job = slurm_apply(f, pd.DataFrame({"x": range(6)}), backend="local", submit=False, seed=False,
                      job_dir=tmp_path, jobname="requeue", nodes=1, cpus_per_node=1)
    rec = jd.results_path(job.job_dir, 0, 0, 0)
    # What the killed first run saved, and half a frame: the values would not even unpickle here.
    rec.write_bytes(frame([0, 1], [Unloadable(), Unloadable()], {2: ("E", "m", "tb")})
                    + frame([3], [30])[:-4])
    env = {**os.environ, "SLURM_APPLY_TASK": "0"}  # as submit.sh sets it
    run = subprocess.run([sys.executable, "-m", "slurm_apply._node", str(job.job_dir), "0", job.manifest.token],
                         env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "finished 3 row(s)" in run.stdout  # 3, 4 and 5 only
    res = Results(job.job_dir, 6)
    res.refresh(list_record_files(job.job_dir, [0]))
    assert res.counts() == (5, 1, 0) and res.errors() == {2: ("E", "m", "tb")}
    frames = [split_key(k)[4] for k in res.keys.tolist()]
    assert frames[:3] == [0, 0, 0] and min(frames[3:]) >= 1  # the saved records still stand


# -- the merge rule and Results ------------------------------------------------------------------


def test_merge_keys_pack_and_refuse_what_does_not_fit():
    key = make_key(SUCCESS, 255, 4_000_000, 511, (1 << 23) - 1)
    assert split_key(key) == (SUCCESS, 255, 4_000_000, 511, (1 << 23) - 1) and 0 < key < 2**63
    assert make_key(SUCCESS, 0, 0, 0, 0) > make_key(ERROR, 255, 4_000_000, 511, 5)
    assert make_key(ERROR, 2, 0, 0, 0) > make_key(ERROR, 1, 9, 9, 9)
    for bad in ((SUCCESS, 256, 0, 0, 0), (SUCCESS, 0, 1 << 22, 0, 0), (SUCCESS, 0, 0, 512, 0),
                (SUCCESS, 0, 0, 0, 1 << 23), (SUCCESS, -1, 0, 0, 0), (2, 0, 0, 0, 0)):
        with pytest.raises(ValueError):
            make_key(*bad)


E = "ValueError"
# (name, submission, task, proc, {row: value}, [rows that raise]); frames of one file in file order
FRAMES = [
    ("A", 0, 0, 0, {1: "A1", 3: "A3", 5: "A5"}, [0, 2]),
    ("B", 0, 0, 0, {5: "B5"}, [6]),
    ("C", 1, 0, 0, {0: "C0", 4: "C4"}, [1]),
    ("D", 1, 0, 0, {}, [3]),
    ("E", 1, 1, 0, {4: "E4"}, [2]),
    ("F", 2, 0, 1, {3: "F3", 8: "F8"}, []),
]
N_ROWS = 9
EXPECTED_VALUES = ["C0", "A1", None, "F3", "E4", "B5", None, None, "F8"]
EXPECTED_ERRORS = {2: (E, "E2", "tb E"), 6: (E, "B6", "tb B")}
EXPECTED_SEEN = {0: [0, 1, 2, 3, 5, 6], 1: [0, 1, 2, 3, 4], 2: [3, 8]}


def _frame_bytes(name, values, errs):
    errors = {r: (E, f"{name}{r}", f"tb {name}") for r in errs}
    return frame(list(values), list(values.values()), errors)


def _outcome(res):
    seen = {s: np.flatnonzero(res.recorded_in(s)).tolist() for s in range(3)}
    return (res.keys.tolist(), res.values(), res.errors(), res.counts(), res.first_error(),
            res.unrecorded().tolist(), seen)


def test_merge_is_independent_of_the_order_of_records():
    """The pure rule alone: every order of the frames' records gives the same winners."""
    recs = []
    numbers = {}
    for name, sub, task, proc, values, errs in FRAMES:
        n = numbers[(sub, task, proc)] = numbers.get((sub, task, proc), -1) + 1
        recs.append((np.array(list(values) + errs, dtype=np.int64),
                     np.array([make_key(SUCCESS, sub, task, proc, n)] * len(values)
                              + [make_key(ERROR, sub, task, proc, n)] * len(errs), dtype=np.int64)))
    seen = set()
    start = np.full(N_ROWS, NO_RECORD, dtype=np.int64)
    for order in itertools.permutations(recs):
        best = start
        for rows, keys in order:
            best = merge(best, rows, keys)
        seen.add(tuple(best.tolist()))
    assert len(seen) == 1 and start.tolist() == [NO_RECORD] * N_ROWS  # merge() is pure
    winners = [split_key(k) if k >= 0 else None for k in next(iter(seen))]
    assert winners[0] == (SUCCESS, 1, 0, 0, 0) and winners[1] == (SUCCESS, 0, 0, 0, 0)
    assert winners[2] == (ERROR, 1, 1, 0, 0) and winners[7] is None


def test_every_read_order_gives_the_same_outcome(tmp_path):
    """Frames become visible in every interleaving of the files; a long-lived Results refreshes
    between them at varying points and lists the files in varying orders, a fresh one reads
    everything at the end: all agree, with the rule's answer."""
    files = {}
    for i, (name, sub, task, proc, _, _) in enumerate(FRAMES):
        files.setdefault((sub, task, proc), []).append(i)
    # Frames of one file arrive in their order, so the interleavings are the distinct orders of
    # the files' names (180 of the 720 permutations); each is read twice, the long-lived Results
    # refreshing after complementary sets of steps (every step is a refresh point in one of them).
    interleavings = sorted({tuple(FRAMES[i][1:4] for i in perm)
                            for perm in itertools.permutations(range(len(FRAMES)))})
    assert len(interleavings) == 180
    runs = [(order, mask) for m, order in enumerate(interleavings)
            for mask in (m * 37 % 64, 63 - m * 37 % 64)]
    outcomes = set()
    for n, (order, mask) in enumerate(runs):
        job = tmp_path / f"p{n}"
        pending = {k: list(v) for k, v in files.items()}
        live = Results(job, N_ROWS)
        shuffle = random.Random(n).shuffle
        for step, file in enumerate(order):
            name, sub, task, proc, values, errs = FRAMES[pending[file].pop(0)]
            path = jd.results_path(job, sub, task, proc)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab") as fh:
                fh.write(_frame_bytes(name, values, errs))
            if mask >> step & 1:
                listed = list_record_files(job, range(3))
                shuffle(listed)
                live.refresh(listed)
        live.refresh(list_record_files(job, range(3))[::-1])
        fresh = Results(job, N_ROWS)
        fresh.refresh(list_record_files(job, range(3)))
        assert _outcome(live) == _outcome(fresh)
        outcomes.add(repr(_outcome(fresh)))
    assert len(outcomes) == 1
    keys, values, errors, counts, first, unrecorded, seen = _outcome(fresh)
    assert values == EXPECTED_VALUES and errors == EXPECTED_ERRORS
    assert counts == (6, 2, 1) and first == (2, EXPECTED_ERRORS[2]) and unrecorded == [7]
    assert seen == EXPECTED_SEEN


def test_refresh_reads_only_new_bytes(tmp_path):
    path = jd.results_path(tmp_path, 0, 0, 0)
    path.parent.mkdir(parents=True)
    first = frame([0, 1], ["a", "b"])
    path.write_bytes(first)
    res = Results(tmp_path, 4)
    assert res.refresh(list_record_files(tmp_path, [0])) == 1
    # Scribble over what was read, then append: a refresh that read from the start would stop
    # at the scribble; one that resumes at its offset finds the new frame.
    path.write_bytes(b"\xff" * len(first) + frame([2], ["c"], {3: ("E", "m", "tb")}))
    assert res.refresh(list_record_files(tmp_path, [0])) == 1
    assert res.counts() == (3, 1, 0) and res.errors() == {3: ("E", "m", "tb")}
    assert res.refresh(list_record_files(tmp_path, [0])) == 0
    assert Results(tmp_path, 4).refresh(list_record_files(tmp_path, [0])) == 0  # a fresh one


def test_status_queries_never_unpickle_values(tmp_path):
    path = jd.results_path(tmp_path, 0, 1, 0)
    path.parent.mkdir(parents=True)
    path.write_bytes(frame([0, 2], [Unloadable(), Unloadable()], {1: ("KeyError", "'x'", "tb")})
                     + frame([3], [Unloadable()]))
    res = Results(tmp_path, 5)
    res.refresh(list_record_files(tmp_path, [0]))
    assert res.counts() == (3, 1, 1) and res.n_done == 3 and res.n_failed == 1
    assert res.done().tolist() == [0, 2, 3] and res.failed().tolist() == [1]
    assert res.unrecorded().tolist() == [4] and res.recorded_in(0).tolist() == [True] * 4 + [False]
    assert res.errors() == {1: ("KeyError", "'x'", "tb")} and res.first_error()[0] == 1
    assert res.errors(rows=[0, 1]) == {1: ("KeyError", "'x'", "tb")} and res.errors(rows=[2]) == {}
    with pytest.raises(ResultsError, match="cannot be unpickled in this Python.*nowhere") as err:
        res.values()
    assert isinstance(err.value.__cause__, ModuleNotFoundError) and err.value.rows == [0, 2]


def test_a_row_outside_the_job_is_refused_and_other_files_still_read(tmp_path):
    for task, rows in ((0, [0]), (1, [9])):
        path = jd.results_path(tmp_path, 0, task, 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(frame(rows, ["v"]))
    res = Results(tmp_path, 3)
    with pytest.raises(JobDirError, match="does not belong to this job"):
        res.refresh(list_record_files(tmp_path, [0]))
    assert res.done().tolist() == [0]
    with pytest.raises(JobDirError):  # refused again, not skipped silently
        res.refresh(list_record_files(tmp_path, [0]))


# -- other formats -------------------------------------------------------------------------------


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
    assert claims.try_claim(tmp_path, 0, 3, task=1, proc=0)
    assert not claims.try_claim(tmp_path, 0, 3, task=2, proc=1)
    assert claims.read_claims(tmp_path, 0) == {3: (1, 0)}


def test_params_chunks_are_read_one_at_a_time(tmp_path):
    df = pd.DataFrame({"a": range(10), "b": [f"s{i}" for i in range(10)], "c": [0.5] * 10})
    blobs = encode_chunks(df, None, 3)
    params.write_params_bin(tmp_path / "p.bin", blobs)
    reader = params.ParamsReader(tmp_path / "p.bin")
    assert len(reader) == 3
    rows, names, cols = decode_chunk(reader.chunk(1))
    assert rows == [4, 5, 6] and names == ["a", "b", "c"]
    assert cols[0] == [4, 5, 6] and type(cols[0][0]) is int  # plain Python numbers on the node
    assert cols[1] == ["s4", "s5", "s6"] and cols[2] == [0.5] * 3
    reader.close()


def test_resubmission_chunks_carry_their_row_numbers(tmp_path):
    df = pd.DataFrame({"a": range(10)})
    blobs = encode_chunks(df, [2, 7, 9], 2)
    rows, _, cols = decode_chunk(pickle.loads(blobs[1]))
    assert rows == [9] and cols == [[9]]
    assert ranges([0, 1, 2, 5, 6, 9]) == ((0, 3), (5, 7), (9, 10))


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
    bounds = chunk_bounds(10, 3)
    assert bounds == [(0, 4), (4, 7), (7, 10)]


def test_row_seed_depends_only_on_job_seed_and_row():
    seeds = [row_seed(42, r) for r in range(1000)]
    assert len(set(seeds)) == 1000
    assert row_seed(42, 5) == row_seed(42, 5) != row_seed(43, 5)
    assert all(0 <= s < 2**32 for s in seeds)
