"""The typed model of a job directory, and the status built from it (no cluster needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from slurm_apply import JobDirError
from slurm_apply._backends import TaskRecord, Unknown
from slurm_apply._status.rowsets import RowSet
from slurm_apply._store.markers import of_files
from slurm_apply._status.model import Snapshot, build
from slurm_apply._store.manifest import FORMAT_VERSION, Manifest, Submission, ranges


def submission(index=0, **kw):
    base = dict(index=index, script="submit.sh", rows=((0, 10),), n_rows=10, n_tasks=2,
                cpus_per_task=2, n_chunks=4, nodes=2, backend="slurm",
                slurm_options={"time": "1:00:00"}, max_concurrent=3, state="submitted",
                job_id=str(100 + index), submitted_at=1000.0)
    base.update(kw)
    return Submission(**base)


def manifest(subs=None, n_rows=10):
    return Manifest(jobname="fit", job_dir="/jobs/_rslurm_fit", token="abc", created="now",
                    n_rows=n_rows, columns=["x"], function="m.f", python="/usr/bin/python3",
                    python_version="3.11", workdir="/jobs", seed=7,
                    submissions=list(subs or [submission()]))


def test_manifest_has_one_json_form_that_round_trips():
    m = manifest([submission(0), submission(1, rows=((3, 4), (7, 9)), n_rows=3)])
    text = json.dumps(m.to_json())
    back = Manifest.from_json(json.loads(text))
    assert back == m and back.format == FORMAT_VERSION
    assert back.submissions[1].row_positions() == [3, 7, 8]


@pytest.mark.parametrize("fmt, words", [(1, "slurm_apply 0.1"), (99, "newer slurm_apply")])
def test_other_formats_are_refused_with_a_clear_message(fmt, words):
    data = manifest().to_json()
    data["format"] = fmt
    with pytest.raises(JobDirError, match=words):
        Manifest.from_json(data)


def test_a_corrupt_manifest_is_a_job_dir_error():
    data = manifest().to_json()
    del data["submissions"][0]["rows"]
    with pytest.raises(JobDirError, match="corrupt"):
        Manifest.from_json(data)


def test_a_resubmission_inherits_everything_not_overridden():
    prev = submission(0, state="failed", error="sbatch refused", submitted_by="hand")
    nxt = prev.derive(index=1, rows=ranges([2, 3, 4, 8]), n_rows=4, cpus_per_task=4)
    assert nxt.rows == ((2, 5), (8, 9)) and nxt.cpus_per_task == 4
    assert (nxt.nodes, nxt.max_concurrent, nxt.slurm_options, nxt.backend) == (
        prev.nodes, prev.max_concurrent, prev.slurm_options, prev.backend)
    assert (nxt.state, nxt.job_id, nxt.error, nxt.submitted_by) == ("written", None, "", "")


# --- status built from a snapshot ------------------------------------------------------------


class FakeResults:
    """Per-row outcomes as the status reads them: kinds (0 none, 1 error, 2 success) and which
    submission recorded what."""

    def __init__(self, n, records):
        self.n, self.records = n, records  # records: {row: (kind, sub)}

    def _mask(self, kind):
        m = np.zeros(self.n, dtype=bool)
        for r, (k, _) in self.records.items():
            m[r] = k == kind
        return m

    def done_mask(self):
        return self._mask(2)

    def failed_mask(self):
        return self._mask(1)

    def recorded_in(self, sub):
        m = np.zeros(self.n, dtype=bool)
        for r, (_, s) in self.records.items():
            m[r] = s == sub
        return m

    def done_rows(self):
        return RowSet.from_mask(self.done_mask())

    def failed_rows(self):
        return RowSet.from_mask(self.failed_mask())

    def damaged(self, rows=None):
        return []  # no record is damaged here (tests/test_house_bugs.py has those)

    def recorded_rows(self, sub):
        return RowSet.from_mask(self.recorded_in(sub))

    def errors(self, rows):
        return {r: ("ValueError", f"row {r}", "tb") for r in rows}


def typed_markers(files):
    """{sub: {(task, kind): the marker file's JSON}} -> {sub: {task: TaskMarkers}}, as read from disk."""
    out = {}
    for sub, by_file in (files or {}).items():
        per_task = {}
        for (task, kind), content in by_file.items():
            per_task.setdefault(task, {})[kind] = content
        out[sub] = {task: of_files(kinds) for task, kinds in per_task.items()}
    return out


def snapshot(m, answers, records, markers=None, now=2000.0, log_mtime=None, chains=None,
             chunk_bounds=lambda n, c: [(0, n)], log=""):
    return Snapshot(
        manifest=m, markers=typed_markers(markers), answers=answers, results=FakeResults(m.n_rows, records),
        read_log=lambda k, t: log, log_path=lambda k, t: f"/logs/s{k}_t{t}.out",
        log_mtime=lambda k, t: log_mtime, claims=lambda k: chains or {},
        chunk_bounds=chunk_bounds, now=now)


def done_markers(sub_tasks):
    return {k: {(t, "done"): {"ok": True, "started": 0, "ended": 1} for t in tasks}
            for k, tasks in sub_tasks.items()}


def test_unknown_tasks_keep_the_job_unended_and_their_rows_pending():
    m = manifest()
    answers = {(0, 0): TaskRecord("100", 0, "RUNNING"), (0, 1): Unknown("squeue is not on PATH")}
    st = build(snapshot(m, answers, {r: (2, 0) for r in range(4)}))
    assert [t.state for t in st.task_details] == ["RUNNING", "UNKNOWN"]
    assert st.task_details[1].reason == "squeue is not on PATH"
    assert not st.ended and st.state == "RUNNING"
    assert (st.rows_done, st.rows_pending, st.rows_missing) == (4, 6, 0)
    only_unknown = {(0, t): Unknown("controller down") for t in range(2)}
    st = build(snapshot(m, only_unknown, {}))
    assert st.state == "UNKNOWN" and not st.ended and st.rows_missing == 0


def test_rows_being_rerun_count_as_pending_not_done_or_failed():
    first = submission(0)
    rerun = submission(1, rows=((3, 5),), n_rows=2, n_tasks=1)
    m = manifest([first, rerun])
    records = {r: (2, 0) for r in range(10) if r not in (3, 4)}
    records.update({3: (1, 0), 4: (1, 0)})  # both failed in the first run
    markers = done_markers({0: [0, 1]})
    st = build(snapshot(m, {(1, 0): TaskRecord("101", 0, "RUNNING")}, records, markers))
    assert (st.rows_done, st.rows_failed, st.rows_pending) == (8, 0, 2) and not st.ended
    records[3] = (2, 1)  # the rerun has done row 3
    st = build(snapshot(m, {(1, 0): TaskRecord("101", 0, "RUNNING")}, records, markers))
    assert (st.rows_done, st.rows_failed, st.rows_pending) == (9, 0, 1)


def test_a_finished_task_without_a_visible_marker_is_completing_then_failed():
    m = manifest()
    answers = {(0, t): TaskRecord("100", t, "COMPLETED", end_time=1990.0) for t in range(2)}
    markers = done_markers({0: [0]})
    st = build(snapshot(m, answers, {r: (2, 0) for r in range(5)}, markers, now=2000.0))
    assert st.tasks == {0: "COMPLETED", 1: "COMPLETING"} and not st.ended
    st = build(snapshot(m, answers, {r: (2, 0) for r in range(5)}, markers, now=2100.0))
    assert st.tasks == {0: "COMPLETED", 1: "FAILED"} and st.ended and st.state == "INCOMPLETE"


KILLED_AT_ITS_LIMIT = ("slurmstepd-n2: error: *** JOB 100 ON n2 CANCELLED AT 2026-11-21T05:31:23 "
                      "DUE TO TIME LIMIT ***\n")


@pytest.mark.parametrize("backend, state", [("slurm", "TIMEOUT"), ("local", "LOST")])
def test_a_forgotten_tasks_log_is_read_by_its_own_backend(backend, state):
    # Gone from the scheduler: the kill line in its log says why, where its backend writes such lines.
    m = manifest([submission(backend=backend)])
    st = build(snapshot(m, {(0, t): None for t in range(2)}, {}, {0: {(t, "start"): {"starts": [{}]}
                                                                     for t in range(2)}},
                        log=KILLED_AT_ITS_LIMIT))
    assert [t.state for t in st.task_details] == [state, state]


def test_a_requeued_tasks_old_end_marker_does_not_count():
    m = manifest()
    markers = {0: {(0, "done"): {"ok": True, "started": 10.0, "ended": 20.0},
                   (0, "start"): {"starts": [{"time": 10.0}, {"time": 30.0}]}}}
    answers = {(0, 0): TaskRecord("100", 0, "RUNNING"), (0, 1): TaskRecord("100", 1, "RUNNING")}
    st = build(snapshot(m, answers, {}, markers))
    assert st.tasks[0] == "RUNNING" and not st.ended


def test_a_dead_worker_marker_is_failed_whatever_the_scheduler_lists():
    m = manifest()
    markers = {0: {(t, "done"): {"ok": False, "started": 0, "failures": ["process 1 killed by SIGKILL"]}
                   for t in range(2)}}
    answers = {(0, t): TaskRecord("100", t, "RUNNING") for t in range(2)}
    st = build(snapshot(m, answers, {r: (2, 0) for r in range(8)}, markers))
    assert st.ended and set(st.tasks.values()) == {"FAILED"} and st.state == "INCOMPLETE"


def test_a_row_lost_in_a_chunk_taken_over_is_blamed_on_the_task_it_was_in_flight_in():
    from slurm_apply._store.claims import Chain

    m = manifest()
    # Task 1 died in row 7 of chunk 1 (rows 5-9); task 0 took the chunk over and ran 8 and 9.
    chains = {0: Chain(0, [(0, 0)]), 1: Chain(1, [(1, 0), (0, 1)], lost={7: (1, 0)})}
    markers = done_markers({0: [0]})
    answers = {(0, 1): TaskRecord("100", 1, "NODE_FAIL", node_list="n2")}
    records = {r: (2, 0) for r in range(10) if r != 7}
    st = build(snapshot(m, answers, records, markers, chains=chains,
                        chunk_bounds=lambda n, c: [(0, 5), (5, 10)]))
    assert st.missing_rows == [7] and st.tasks == {0: "COMPLETED", 1: "NODE_FAIL"}
    assert st.missing_reasons == {7: "task 1: NODE_FAIL (node n2 stopped answering)"}


def test_the_timing_constants_keep_their_relations():
    from slurm_apply import _timing

    broken = [name for name, holds in _timing.relations().items() if not holds]
    assert broken == []
