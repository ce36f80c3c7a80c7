"""Big jobs stay cheap (issue 12): claims that scale, bounded plans."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest

from slurm_apply import slurm_apply
from slurm_apply._launch import write as _submit
from slurm_apply._store import claims, layout as jd
from rowfns import _raise_every_row, _raise_slowly  # a light module: tasks import it (tests/rowfns.py)


# -- plan() bounds -------------------------------------------------------------------------------


@pytest.mark.parametrize("n_rows, nodes, cpus, rows_per_chunk, expected", [
    (10_000_000, 4, 2, 1, (4, _submit.MAX_CHUNKS)),   # one claim file per row: no
    (1_000_000, 1000, 2, None, (1000, _submit.MAX_CHUNKS)),  # 16 per process would be 32,000
    (50, 25, 2, 100, (1, 1)),        # no more tasks than chunks
    (100, 50, 1, 10, (10, 10)),
    (100, 3, 2, 10, (3, 10)),
])
def test_plan_bounds_chunks_and_tasks(n_rows, nodes, cpus, rows_per_chunk, expected):
    tasks, chunks = _submit.plan(n_rows, nodes, cpus, None, rows_per_chunk)
    assert (tasks, chunks) == expected and tasks <= chunks <= _submit.MAX_CHUNKS


def test_the_manifest_holds_no_per_chunk_lists(tmp_path):
    job = slurm_apply(lambda x: x, pd.DataFrame({"x": range(5000)}), backend="local", submit=False,
                      job_dir=tmp_path, jobname="m", nodes=3, rows_per_chunk=1)
    text = (job.job_dir / "manifest.json").read_text()
    sub = json.loads(text)["submissions"][0]
    assert sub["n_chunks"] == 5000 and sub["rows"] == [[0, 5000]] and len(text) < 4000


# -- claims without trying every chunk -------------------------------------------------------------


class _Counted:
    """Counts the creates and listings all Claimers make (they go through these two functions)."""

    def __init__(self, monkeypatch):
        self.creates = self.listings = 0
        real_try, real_list = claims.try_claim, claims.claimed_chunks

        def try_claim(*a, **k):
            self.creates += 1
            return real_try(*a, **k)

        def claimed_chunks(*a, **k):
            self.listings += 1
            return real_list(*a, **k)

        monkeypatch.setattr(claims, "try_claim", try_claim)
        monkeypatch.setattr(claims, "claimed_chunks", claimed_chunks)


@pytest.mark.parametrize("seed", range(3))
def test_processes_claim_every_chunk_once_with_about_one_create_each(tmp_path, monkeypatch, seed):
    """64 processes, 1,000 chunks, taking turns at random and some never showing up: every chunk
    is claimed exactly once and the creates stay near the chunk count, not processes x chunks."""
    counted = _Counted(monkeypatch)
    jd.make_submission_dirs(tmp_path, 0)
    n_chunks, slots = 1000, 64
    rng = random.Random(seed)
    absent = set(rng.sample(range(slots), 8))  # their shares must be taken by the others
    procs = {s: claims.Claimer(tmp_path, 0, n_chunks, slots, s, task=s // 2, proc=s % 2)
             for s in range(slots) if s not in absent}
    got = {}
    while procs:
        s = rng.choice(list(procs))
        c = procs[s].next_chunk()
        if c is None:
            del procs[s]
            continue
        assert c not in got
        got[c] = s
    assert sorted(got) == list(range(n_chunks))
    assert claims.read_claims(tmp_path, 0) == {c: (s // 2, s % 2) for c, s in got.items()}
    assert counted.creates < 1.3 * n_chunks, counted.creates  # trying every chunk: 56,000
    assert counted.listings < 4 * slots, counted.listings


def test_a_process_lists_instead_of_trying_claimed_chunks(tmp_path, monkeypatch):
    counted = _Counted(monkeypatch)
    jd.make_submission_dirs(tmp_path, 0)
    for c in range(100):
        if c != 57:
            assert claims.try_claim(tmp_path, 0, c, 0, 0)
    late = claims.Claimer(tmp_path, 0, 100, 10, 3, task=1, proc=1)
    counted.creates = 0
    assert late.next_chunk() == 57 and late.next_chunk() is None
    # One create in its own share finds it taken: it lists and skips the rest of its share;
    # then it lists the free chunks and makes one create; a last listing finds none left.
    assert counted.creates == 2 and counted.listings == 3 and late.creates == 2
    # That last listing found every chunk claimed and said so: a later process stops at once.
    later = claims.Claimer(tmp_path, 0, 100, 10, 4, task=2, proc=0)
    assert later.next_chunk() is None and later.creates == later.listings == 0


def test_a_stopped_claimer_claims_nothing(tmp_path):
    jd.make_submission_dirs(tmp_path, 0)
    stop = claims.Claimer(tmp_path, 0, 10, 2, 0, task=0, proc=0, may_claim=lambda: False)
    assert stop.next_chunk() is None and stop.creates == 0 and claims.read_claims(tmp_path, 0) == {}


def test_a_real_job_reports_its_claims(tmp_path):
    job = slurm_apply(lambda x: x, pd.DataFrame({"x": range(2000)}), backend="local", seed=False,
                      job_dir=tmp_path, jobname="claims", nodes=3, cpus_per_node=2, rows_per_chunk=10)
    job.wait(progress=False)
    assert job.get_job_status().completed
    procs = [p for t in range(3) for p in jd.read_json(jd.task_marker(job.job_dir, 0, t, "done"))["procs"]]
    creates = sum(p["claim_creates"] for p in procs)
    assert 200 <= creates < 260, creates  # 200 chunks; 6 processes trying all would make 1,200
    # Tasks run one after another here: the first takes nearly everything, the others find
    # their shares taken with one create and a listing.
    assert all(p["claim_s"] >= 0 for p in procs) and sum(p["claim_listings"] for p in procs) < 40


# -- errors at scale: each distinct traceback stored once; the log shows the first few ----------


def _error_info(x):
    import traceback

    try:
        _raise_every_row(x)
    except ValueError as exc:
        return ("ValueError", str(exc), traceback.format_exc())


def test_a_repeated_traceback_is_stored_once_per_file(tmp_path):
    """10,000 rows raising alike, in 10 frames of one process: each row keeps its message, the
    stack is stored once; every traceback reads back exactly."""
    from slurm_apply._store import records

    infos = {r: _error_info(r) for r in range(10_000)}
    cache = records.TracebackCache(0)
    path = tmp_path / "t.rec"
    with open(path, "wb") as fh:
        for k in range(10):
            rows = range(k * 1000, (k + 1) * 1000)
            fh.write(records.encode_frame([], [], {r: infos[r] for r in rows}, cache))
            cache.written()
    size = path.stat().st_size
    whole = sum(len(tb) for _, _, tb in infos.values())  # a traceback each: 2.7 MB
    assert size < 40 * 10_000 and 7 * size < whole, (size, whole)  # its type, message, a reference
    got = {}
    for frame in records.RecordReader(path).read_new():
        got.update(records.parse_errors(frame))
    assert got == infos


def test_tracebacks_that_do_not_end_with_their_message_are_stored_whole(tmp_path):
    from slurm_apply._store import records

    errors = {0: ("E", "m", "tb without the message\n"), 1: ("E", "", "E\n"), 2: ("E", "m", "")}
    path = tmp_path / "t.rec"
    path.write_bytes(records.encode_frame([], [], errors))
    (frame,) = records.RecordReader(path).read_new()
    assert records.parse_errors(frame) == errors


def test_a_systematic_bug_logs_the_first_errors_then_a_count_and_stores_little(tmp_path):
    n = 10_000
    job = slurm_apply(_raise_every_row, pd.DataFrame({"x": range(n)}), backend="local",
                      seed=False, job_dir=tmp_path, jobname="bug", nodes=1, cpus_per_node=2)
    st = job.wait(progress=False)
    assert st.rows_failed == n and st.first_error == "row 0: ValueError: bad row 0"
    log = jd.log_path(job.job_dir, 0, 0).read_text()
    lines = log.splitlines()
    assert sum("raised ValueError" in line for line in lines) == 2 * 10, log  # 10 per process
    assert sum("stops printing row errors after 10" in line for line in lines) == 2
    assert f"finished {n} row(s), {n} raised" in log
    records_bytes = sum(p.stat().st_size for p in (job.job_dir / "s0" / "results").iterdir())
    # A whole traceback per row would be ~600 bytes; here each frame (written every 20 ms) holds its
    # first traceback whole and refers to it after: about 38 bytes a row idle, 40 seen under load.
    assert records_bytes < 50 * n, records_bytes
    errors = job.get_errors()
    assert len(errors) == n and errors[1234] == _error_info(1234)[:2] + (errors[1234][2],)
    assert errors[1234][2].endswith("ValueError: bad row 1234\n")
    assert 'raise ValueError(f"bad row {x}")' in errors[1234][2]


# -- max_failures: stop claiming once N rows have raised -----------------------------------------


@pytest.mark.parametrize("bad", [0, -3, 1.5, 1.0, True, "10", float("nan")])
def test_max_failures_is_checked(tmp_path, bad):
    from slurm_apply import InputError

    with pytest.raises(InputError, match="max_failures"):
        slurm_apply(lambda x: x, pd.DataFrame({"x": [1]}), backend="local", submit=False,
                    job_dir=tmp_path, max_failures=bad)


def test_max_failures_is_recorded_and_a_fraction_counts_the_submissions_rows(tmp_path):
    job = slurm_apply(lambda x: x, pd.DataFrame({"x": range(20_000)}), backend="local",
                      submit=False, job_dir=tmp_path, jobname="frac", max_failures=0.01)
    sub = job.manifest.submissions[0]
    assert sub.max_failures == 0.01 and sub.failure_limit() == 200
    assert json.loads((job.job_dir / "manifest.json").read_text())["submissions"][0]["max_failures"] == 0.01
    assert (jd.stop_path(job.job_dir, 0)).read_bytes() == b""  # made empty, written in place


def test_the_budget_counts_every_process_and_stops_claims(tmp_path):
    from slurm_apply._node import budget
    from slurm_apply._store import stops
    from slurm_apply._node.rows import Context

    job = slurm_apply(lambda x: x, pd.DataFrame({"x": range(100)}), backend="local", submit=False,
                      job_dir=tmp_path, jobname="budget", max_failures=10, nodes=2)
    ctx = Context(job.job_dir, job.manifest, 0, 0)
    first, second = budget.Budget(ctx, "a"), budget.Budget(ctx, "b")
    second.stem = "t0001-p1"  # another process
    first.add(4, "ValueError: x")
    second.add(5, "ValueError: y")
    assert stops.total_failures(job.job_dir, 0) == 9 and not first.stopped()
    first.add(1)  # not published at once: the count has not doubled (a process's end does it)
    assert stops.total_failures(job.job_dir, 0) == 9
    first.flush()
    assert stops.total_failures(job.job_dir, 0) == 10 and second.stopped()
    note = stops.read_stop(job.job_dir, 0)
    assert note.failed == 10 and note.max_failures == 10 and note.first == "ValueError: x"
    late = claims.Claimer(job.job_dir, 0, 10, 2, 1, task=1, proc=0,
                          may_claim=lambda: not budget.Budget(ctx, "c").stopped())
    assert late.next_chunk() is None and late.creates == 0


def _assert_stopped_early(st, n, limit):
    assert st.ended and st.state == "FAILED", str(st)
    assert limit <= st.rows_failed < n // 4 and st.rows_missing == n - st.rows_failed
    assert st.notes[0].startswith("stopped early: ") and f"(max_failures={limit})" in st.notes[0]
    assert "; first: row " in st.notes[0] and ": ValueError: bad row " in st.notes[0]
    assert "note: stopped early" in str(st)
    (why,) = set(st.missing_by_reason())
    assert why.startswith("not run: the job stopped early")


def test_max_failures_stops_the_job_early(tmp_path):
    n = 40_000
    job = slurm_apply(_raise_every_row, pd.DataFrame({"x": range(n)}), backend="local", seed=False,
                      job_dir=tmp_path, jobname="stop", nodes=2, cpus_per_node=2, max_failures=100)
    st = job.wait(timeout_s=120, progress=False)
    _assert_stopped_early(st, n, 100)
    claimed = claims.read_claims(job.job_dir, 0)
    assert len(claimed) < job.manifest.submissions[0].n_chunks
    assert json.loads(json.dumps(st.to_dict()))["notes"][0].startswith("stopped early")
    again = job.resubmit()  # the missing rows, with the same limit: f still fails, so it stops again
    assert again.manifest.submissions[1].max_failures == 100
    st = again.wait(timeout_s=120, progress=False)
    assert st.state == "FAILED" and st.notes[0].startswith("stopped early")


def test_a_process_leaves_the_rest_of_its_chunk_when_the_job_stops(tmp_path):
    n = 4000  # one chunk per process: only leaving a chunk half-way stops this job early
    job = slurm_apply(_raise_slowly, pd.DataFrame({"x": range(n)}), backend="local", seed=False,
                      job_dir=tmp_path, jobname="mid", nodes=1, cpus_per_node=2,
                      rows_per_chunk=n // 2, max_failures=20)
    st = job.wait(timeout_s=120, progress=False)
    _assert_stopped_early(st, n, 20)
    assert len(claims.read_claims(job.job_dir, 0)) == 2


def test_max_failures_on_the_cluster(cluster, job_parent):
    n = 20_000
    job = slurm_apply(_raise_every_row, pd.DataFrame({"x": range(n)}), seed=False,
                      job_dir=job_parent, jobname="stop", nodes=3, cpus_per_node=2,
                      max_failures=50)
    st = job.wait(timeout_s=180, progress=False)
    _assert_stopped_early(st, n, 50)
    assert set(st.tasks.values()) == {"COMPLETED"}, str(st)
