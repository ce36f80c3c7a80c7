"""Rows as runs: the set algebra, the merge rule over runs, and a status whose cost does not grow
with the rows."""

from __future__ import annotations

import random
import tracemalloc

import numpy as np
import pytest

from slurm_apply._status.merge import NO_RECORD, envelope, merge
from slurm_apply._status.results import Results, list_record_files
from slurm_apply._status.rowsets import RowReasons, RowSet
from slurm_apply._store import layout as jd
from slurm_apply._store import records
from slurm_apply._store.rowruns import expand, runs_of


def _random_rows(rng, n):
    return sorted(rng.sample(range(n), rng.randrange(n + 1)))


@pytest.mark.parametrize("seed", range(30))
def test_row_sets_agree_with_python_sets(seed):
    rng = random.Random(seed)
    n = rng.choice([1, 5, 40])
    a, b = _random_rows(rng, n), _random_rows(rng, n)
    ra, rb = RowSet.from_rows(a), RowSet.from_rows(b)
    assert ra == a and list(ra) == a and len(ra) == len(a) and bool(ra) == bool(a)
    assert (ra | rb) == sorted(set(a) | set(b)) and (ra & rb) == sorted(set(a) & set(b))
    assert (ra - rb) == sorted(set(a) - set(b))
    assert ra.complement(n) == sorted(set(range(n)) - set(a))
    assert ra.mask(n).nonzero()[0].tolist() == a and RowSet.from_mask(ra.mask(n)) == ra
    assert [ra[i] for i in range(len(a))] == a and ra[:3] == a[:3] and ra[1:] == a[1:]
    assert ra + [99] == a + [99] and np.asarray(ra).tolist() == a
    assert ra.contains(np.arange(n)).tolist() == [r in set(a) for r in range(n)]


@pytest.mark.parametrize("seed", range(30))
def test_the_merge_rule_over_runs_is_the_rule_per_row(seed):
    rng = random.Random(seed)
    n = 60
    starts, stops, keys = [], [], []
    for _ in range(rng.randrange(1, 12)):
        a = rng.randrange(n)
        starts.append(a)
        stops.append(rng.randrange(a, n + 1))
        keys.append(rng.randrange(1 << 40))
    s, e, k = (np.array(x, dtype=np.int64) for x in (starts, stops, keys))
    per_row = np.full(n, NO_RECORD, dtype=np.int64)
    for a, b, key in zip(starts, stops, keys):
        merge(per_row, np.arange(a, b), np.full(b - a, key), out=per_row)
    es, ee, ek = envelope(s, e, k)
    assert np.all(ee[:-1] <= es[1:]) and np.all(ee > es)  # disjoint, sorted, none empty
    got = np.full(n, NO_RECORD, dtype=np.int64)
    for a, b, key in zip(es.tolist(), ee.tolist(), ek.tolist()):
        got[a:b] = key
    assert got.tolist() == per_row.tolist()


def test_runs_keep_the_order_of_ids():
    for rows in ([], [5], [3, 4, 5, 9, 10, 2, 3], list(range(1000)), [7, 6, 5]):
        assert expand(runs_of(rows)).tolist() == rows
    assert runs_of(range(100, 200)).tolist() == [100, 200]  # one stretch: two numbers


def test_reasons_read_as_a_dict_held_as_runs():
    reasons = RowReasons()
    reasons.add(RowSet([0, 50], [10, 60]), "task 0: COMPLETED")
    reasons.add(RowSet([20], [30]), "task 1: NODE_FAIL")
    reasons.set_row(25, "lost in task 1")
    assert reasons[5] == "task 0: COMPLETED" and reasons[25] == "lost in task 1"
    assert reasons.get(40) is None and len(reasons) == 30 and 55 in reasons
    groups = reasons.by_reason(RowSet([0], [100]))
    assert list(groups) == ["task 0: COMPLETED", "task 1: NODE_FAIL", "lost in task 1"]
    assert groups["task 1: NODE_FAIL"] == [r for r in range(20, 30) if r != 25]
    assert dict(reasons.items()) == {**{r: "task 0: COMPLETED" for r in [*range(10), *range(50, 60)]},
                                     **{r: "task 1: NODE_FAIL" for r in range(20, 30)}, 25: "lost in task 1"}


def test_reading_ten_million_rows_takes_memory_by_frames_not_rows(tmp_path):
    """Status-side queries on 10,000,000 rows in 10 frames hold a few runs, not a number a row."""
    n, per = 10_000_000, 1_000_000
    path = jd.results_path(tmp_path, 0, 0, 0)
    path.parent.mkdir(parents=True)
    with open(path, "wb") as fh:
        for k in range(n // per):
            rows = range(k * per, (k + 1) * per)
            errors = {k * per: ("E", "m", "tb")} if k == 3 else {}
            done = rows[1:] if errors else rows
            fh.write(records.encode_frame(done, [None] * len(done), errors))
    res = Results(tmp_path, n)
    tracemalloc.start()
    res.refresh(list_record_files(tmp_path, [0]))
    counts = res.counts()
    done, failed, seen = res.done_rows(), res.failed_rows(), res.recorded_rows(0)
    first = res.first_error()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert counts == (n - 1, 1, 0) and failed == [3 * per] and len(done) == n - 1
    assert len(seen) == n and first == (3 * per, ("E", "m", "tb"))
    assert len(done.starts) == 2 and peak < 2 * 2**20, peak  # a number a row would be 80 MB
