"""Issue 16's bugs 4-7, each pinned by a test that failed before its fix.

4: a record damaged on disk is not a result. 5: test_row() leaves the session as it found it.
6: every save of the manifest is a read-modify-write under its lock. 7: a job directory whose
file system refuses locks is refused at submission, before anything is written.
"""

from __future__ import annotations

import builtins
import random
import struct
from pathlib import Path

import numpy as np

import pandas as pd
import pytest

from slurm_apply._job import stopping
from slurm_apply import RowsMissingError, SlurmJob, slurm_apply as apply
from slurm_apply._store import records
from rowfns import _square  # a light module: tasks import it (tests/rowfns.py)


def _run_local(tmp_path: Path, n: int = 8, **kw) -> SlurmJob:
    job = apply(_square, pd.DataFrame({"x": range(n)}), backend="local", job_dir=tmp_path,
                jobname="house", nodes=1, cpus_per_node=1, retries=0, **kw)
    status = job.wait(timeout_s=120, progress=False)
    assert status.completed and status.rows_done == n
    return job


def _flip_a_value_bit(path: Path) -> range:
    """Flip one bit in the values part of the first frame of a record file; its done rows."""
    data = bytearray(path.read_bytes())
    magic, meta_len, val_len, _, _ = records.HEAD.unpack_from(data)
    assert magic in (records.MAGIC, records.MAGIC_COLUMNS) and val_len > 0
    values_at = records.HEAD.size + meta_len
    data[values_at + val_len // 2] ^= 0x10
    path.write_bytes(bytes(data))
    n_done = struct.unpack_from("<I", data, records.HEAD.size)[0]
    first = records.RecordReader(path).read_new()[0]
    assert len(first.done) == n_done
    return range(int(first.done[0]), int(first.done[-1]) + 1)


# -- 4: a damaged record ----------------------------------------------------------------------

def test_a_damaged_record_is_not_done_and_is_run_again(tmp_path):
    # A fresh handle checks each frame as it first reads it; this one had read them intact.
    job = _run_local(tmp_path, n=8, rows_per_chunk=4)
    [path, *_] = sorted(job.job_dir.glob("s0/results/*.rec"))
    damaged = list(_flip_a_value_bit(path))
    assert damaged

    status = SlurmJob.from_dir(job.job_dir).get_job_status()
    assert status.state == "INCOMPLETE" and not status.completed
    assert status.rows_done == 8 - len(damaged)
    assert status.missing_rows == damaged
    why = status.missing_reasons[damaged[0]]
    assert "damaged" in why and path.name in why, why

    for handle in (SlurmJob.from_dir(job.job_dir), job):
        with pytest.raises(RowsMissingError) as err:  # naming the rows and why
            handle.get_output()
        assert "record is damaged" in str(err.value) and path.name in str(err.value)
        assert err.value.rows == damaged
    kept = job.get_output(errors="keep")
    assert list(kept.state[damaged]) == ["missing"] * len(damaged)
    assert kept.result.notna().sum() == 8 - len(damaged)

    job.resubmit()  # reruns exactly the damaged rows
    status = job.wait(timeout_s=120, progress=False)
    assert status.completed and status.rows_done == 8
    assert job.manifest.latest.n_rows == len(damaged)
    assert list(job.get_output().result) == [x * x for x in range(8)]


def test_a_damaged_frame_is_set_apart_and_kept(tmp_path):
    """The store's rule: the frames after a damaged one are read, its errors count, its done rows
    are handed apart, and nothing is cut from the file (a requeued writer appends after it)."""
    from slurm_apply._node.rows import saved_rows

    path = tmp_path / "t0000_p00.rec"
    with open(path, "wb") as fh:
        fh.write(records.encode_frame([0, 1], ["a", "b"], {}))
        fh.write(records.encode_frame([2, 3], ["c", "d"], {4: ("ValueError", "no", "tb")}))
        fh.write(records.encode_frame([5], ["e"], {}))
    frames = records.RecordReader(path).read_new()
    second = frames[1]
    data = bytearray(path.read_bytes())
    data[second.values_offset + 3] ^= 0x01
    path.write_bytes(bytes(data))
    size = len(data)

    batch = records.RecordReader(path, ids=records.array_ids).read_new_batch()
    assert len(batch.starts) == 3 and list(batch.damaged) == [1]
    assert list(records.array_ids(batch.done)) == [0, 1, 5]
    assert list(records.array_ids(batch.err)) == [4]
    assert list(records.rowruns.expand(records.rowruns.from_le(batch.damaged_pairs))) == [2, 3]
    assert [f.damaged for f in records.RecordReader(path).read_new()] == [False, True, False]
    unchecked = records.RecordReader(path, verify=False).read_new_batch()
    assert list(records.array_ids(unchecked.done)) == [0, 1, 2, 3, 5] and not unchecked.damaged
    assert saved_rows(path) == {0, 1, 4, 5}  # a requeued process runs 2 and 3 again
    records.open_for_append(path).close()
    assert path.stat().st_size == size


# -- 5: test_row() leaves the session as it found it ----------------------------------------------

TABLE = "the caller's own"  # a global of this module that add_objects also names


def uses_objects(x):
    return (x * SCALE, TABLE, random.random(), float(np.random.random()))  # noqa: F821


class Offset:
    """A callable object: its add_objects become builtins while it runs."""

    def __call__(self, x):
        return x + OFFSET  # noqa: F821


def _written(tmp_path, f, objects, name, **kw):
    return apply(f, pd.DataFrame({"x": range(3)}), add_objects=objects, backend="local",
                 job_dir=tmp_path, jobname=name, nodes=1, cpus_per_node=1, submit=False, **kw)


def test_test_row_leaves_globals_builtins_and_generators_as_they_were(tmp_path):
    job = _written(tmp_path, uses_objects, {"SCALE": 10, "TABLE": "the job's"}, "glb", seed=3)
    other = _written(tmp_path, Offset(), {"OFFSET": 100}, "bi")
    random.seed(12345)
    np.random.seed(54321)
    py_state, np_state = random.getstate(), np.random.get_state()

    value = job.test_row(1)
    assert value[:2] == (10, "the job's")  # the row saw the job's objects and its row seed...
    assert value == job.test_row(1)
    assert other.test_row(2) == 102

    assert "SCALE" not in globals() and TABLE == "the caller's own"  # ...the caller still has its own
    assert not hasattr(builtins, "OFFSET")
    assert random.getstate() == py_state
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]


# -- 6: every save of the manifest is a read-modify-write under its lock --------------------------

def _slow(x):
    import time

    time.sleep(30)  # the test cancels it: the real follow-up must not decide before the test has read the manifest
    return x


def test_the_first_launch_loses_no_change_made_meanwhile(tmp_path, monkeypatch):
    """A cancel()'s first step (stop_retries) and a follow-up's decision, each made by another
    thread (so under the lock as another process would take it) while the first launch is
    between its steps, are still in the manifest once slurm_apply() returns."""
    import threading

    from slurm_apply._backends.local.backend import LocalBackend
    from slurm_apply._job import followup
    from slurm_apply._store import layout as jd
    from slurm_apply._store.manifest import NOTHING, Decision

    others = []

    def meanwhile(action):
        t = threading.Thread(target=action)
        t.start()
        t.join(timeout=2)  # without the lock held it is done by now; with it, it waits its turn
        others.append(t)

    real_submit, real_followup = LocalBackend.submit, LocalBackend.submit_followup

    def submit(self, job_dir, sub):
        job_id = real_submit(self, job_dir, sub)
        meanwhile(lambda: stopping.stop_retries(job_dir, "cancel()"))
        return job_id

    def submit_followup(self, job_dir, sub):
        job_id = real_followup(self, job_dir, sub)
        meanwhile(lambda: followup._record(job_dir, 0, Decision(NOTHING, 1.0, "decided meanwhile")))
        return job_id

    monkeypatch.setattr(LocalBackend, "submit", submit)
    monkeypatch.setattr(LocalBackend, "submit_followup", submit_followup)
    job = apply(_slow, pd.DataFrame({"x": range(2)}), backend="local", job_dir=tmp_path,
                jobname="race", nodes=1, cpus_per_node=2, retries=1)
    for t in others:
        t.join(timeout=30)
        assert not t.is_alive()
    m = jd.load_manifest(job.job_dir)
    s0 = m.submissions[0]
    assert s0.job_id and s0.state == "submitted"  # what the launch recorded...
    assert "cancel()" in m.retries_stopped  # ...and what was decided meanwhile
    assert s0.decision is not None and s0.decision.detail == "decided meanwhile"
    job.cancel()


# -- 7: a file system that refuses locks is refused at submission --------------------------------

def _refuse_locks(monkeypatch):
    import errno
    import fcntl
    import os

    def flock(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", flock)


def test_a_job_dir_without_locks_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    from slurm_apply import JobDirError
    from slurm_apply._backends.local.backend import LocalBackend

    submitted = []
    monkeypatch.setattr(LocalBackend, "submit", lambda self, job_dir, sub: submitted.append(sub))
    _refuse_locks(monkeypatch)
    with pytest.raises(JobDirError) as err:
        apply(_square, pd.DataFrame({"x": range(3)}), backend="local", job_dir=tmp_path,
              jobname="nolocks", nodes=1, cpus_per_node=1)
    said = str(err.value)
    assert str(tmp_path) in said and "ENOLCK" in said  # where, and the cause...
    assert "flock" in said and "nothing was written" in said  # ...what it means
    assert "Lustre" in said and "-o flock" in said and "job_dir=" in said  # ...and the fix
    assert list(tmp_path.iterdir()) == [] and submitted == []


def test_a_written_job_says_the_same_when_its_file_system_refuses_locks(tmp_path, monkeypatch):
    from slurm_apply import JobDirError

    job = _written(tmp_path, _square, {}, "later")
    _refuse_locks(monkeypatch)
    with pytest.raises(JobDirError, match=r"refuses file locks: .*ENOLCK"):
        job.submit()
    assert not job.manifest.latest.launched
