"""Seeded rows draw exactly what ``random.seed(row_seed(seed, row))`` and
``numpy.random.seed(row_seed(seed, row))`` give, whichever way f reaches the generators and
whenever it loads NumPy; the fast paths in ``_node/seeding.py`` must give the same states as those
public calls. No cluster: jobs run on the local backend (the array script, on this machine)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slurm_apply import slurm_apply
from slurm_apply._node import seeding
from slurm_apply._node.rows import row_seed

ROOT = Path(__file__).resolve().parent.parent
N_ROWS = 8
SEED = 20240917


def expected_draws(seed: int, n: int = N_ROWS):
    """Each row's draws by the plain public calls: the same calls the rows below make."""
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        out = []
        for r in range(n):
            s = row_seed(seed, r)
            random.seed(s)
            np.random.seed(s)
            out.append((random.random(), random.gauss(0, 1), random.randint(0, 10**9),
                        float(np.random.rand()), float(np.random.normal()),
                        int(np.random.mtrand._rand.randint(0, 2**31 - 1))))
        return out
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def run_rows(f, tmp_path, name, **kw):
    """All rows in one process, in chunks of 3 (unless told otherwise): the gauss caches a row
    leaves meet the next row."""
    kw.setdefault("seed", SEED)
    kw.setdefault("nodes", 1)
    kw.setdefault("cpus_per_node", 1)
    kw.setdefault("rows_per_chunk", 3)
    job = slurm_apply(f, pd.DataFrame({"x": range(N_ROWS)}), backend="local", job_dir=tmp_path,
                      jobname=name, **kw)
    status = job.wait(timeout_s=120, progress=False)
    assert status.completed, job.get_errors()
    return job.get_output(outtype="raw")


def loaded_before_rows(x):
    """Travels by reference: the task imports this module (pandas, NumPy) before any row."""
    import random
    import sys

    loaded = "numpy.random" in sys.modules
    return (loaded, random.random(), random.gauss(0, 1), random.randint(0, 10**9),
            float(np.random.rand()), float(np.random.normal()),
            int(np.random.mtrand._rand.randint(0, 2**31 - 1)))


def test_rows_draw_what_the_public_seeding_calls_give_numpy_loaded_before_the_rows(tmp_path):
    out = run_rows(loaded_before_rows, tmp_path, "before")
    assert all(row[0] for row in out)
    assert [tuple(row[1:]) for row in out] == expected_draws(SEED)


@pytest.mark.parametrize("layout", [{}, {"nodes": 2, "cpus_per_node": 2, "rows_per_chunk": 2}],
                         ids=["one process", "two tasks of two processes"])
def test_rows_draw_the_same_when_f_imports_numpy_inside_its_body(tmp_path, layout):
    def imports_in_body(x):
        import random
        import sys

        loaded = "numpy.random" in sys.modules
        import numpy

        return (loaded, random.random(), random.gauss(0, 1), random.randint(0, 10**9),
                float(numpy.random.rand()), float(numpy.random.normal()),
                int(numpy.random.mtrand._rand.randint(0, 2**31 - 1)))

    out = run_rows(imports_in_body, tmp_path, "inbody", **layout)
    # The first row of each process loaded NumPy itself (the task did not, for seeding), the
    # later ones found it.
    if not layout:
        assert [row[0] for row in out] == [False] + [True] * (N_ROWS - 1)
    else:
        assert 1 <= [row[0] for row in out].count(False) <= 4
    assert [tuple(row[1:]) for row in out] == expected_draws(SEED)


MODULE_LEVEL = """
import random
import sys

import numpy as np


def f(x):
    loaded = "numpy.random" in sys.modules
    return (loaded, random.random(), random.gauss(0, 1), random.randint(0, 10**9),
            float(np.random.rand()), float(np.random.normal()),
            int(np.random.mtrand._rand.randint(0, 2**31 - 1)))
"""


def test_rows_draw_the_same_when_f_uses_numpy_imported_at_module_level(tmp_path, monkeypatch):
    """f in a module that does ``import numpy`` (travels by reference: the task imports the
    module, and NumPy, with the payload). NumPy 2 loads numpy.random only at the first use of
    ``np.random``: in the first row."""
    import importlib

    (tmp_path / "seeding_modlevel.py").write_text(MODULE_LEVEL)
    monkeypatch.syspath_prepend(str(tmp_path))  # sys.path[0]: the tasks' PYTHONPATH too
    monkeypatch.delitem(sys.modules, "seeding_modlevel", raising=False)
    f = importlib.import_module("seeding_modlevel").f
    try:
        out = run_rows(f, tmp_path, "modlevel")
    finally:
        sys.modules.pop("seeding_modlevel", None)
    numpy2 = int(np.__version__.split(".")[0]) >= 2
    assert [row[0] for row in out] == [not numpy2] + [True] * (N_ROWS - 1)
    assert [tuple(row[1:]) for row in out] == expected_draws(SEED)


def test_a_seeded_task_does_not_import_numpy_to_seed_it(tmp_path):
    def modules(x):
        import sys

        return sorted(m for m in ("numpy", "numpy.random") if m in sys.modules)

    assert run_rows(modules, tmp_path, "nonumpy") == [[]] * N_ROWS


def test_seed_false_rows_are_not_seeded_even_when_they_load_numpy(tmp_path):
    def draws(x):
        import random

        import numpy

        return (random.random(), float(numpy.random.rand()))

    a = run_rows(draws, tmp_path, "nos_a", seed=False)
    b = run_rows(draws, tmp_path, "nos_b", seed=False)
    seeded = [(row[0], row[3]) for row in expected_draws(SEED)]
    for col in (0, 1):
        assert len({row[col] for row in a + b}) == 2 * N_ROWS  # no two rows, nor runs, alike
        assert not {row[col] for row in a} & {row[col] for row in seeded}


def test_numpy_loaded_by_an_import_hook_ahead_of_ours_is_said_and_seeded_from_the_next_row(tmp_path):
    """Another import hook, put first on sys.meta_path during a row, loads numpy.random without
    ours: that row's NumPy draws are not seeded (nothing can be done about them) and the task's
    log says so; the next rows are seeded."""
    from slurm_apply._store import layout as jd

    def ahead(x):
        import importlib.machinery
        import sys

        class Ahead:
            def find_spec(self, name, path=None, target=None):
                if name == "numpy.random":
                    return importlib.machinery.PathFinder.find_spec(name, path)
                return None

        if "numpy.random" not in sys.modules:
            sys.meta_path.insert(0, Ahead())
        import numpy

        return float(numpy.random.rand())

    out = run_rows(ahead, tmp_path, "ahead")
    want = [row[3] for row in expected_draws(SEED)]
    assert out[0] != want[0] and out[1:] == want[1:]
    job_dir = next(tmp_path.glob("*ahead*"))
    log = jd.log_path(job_dir, 0, 0).read_text()
    assert "numpy.random was loaded in the row before row 1 of this process by an import hook" in log


def test_row_seeds_of_a_chunk_are_row_seed_of_each_row():
    rows_cases = [[], [0], list(range(7)), list(range(8)), list(range(1000, 1300)),
                  [5, 3, 900, 2**40, 7], list(range(2**63 - 20, 2**63 - 1))]
    for job_seed in (0, 1, SEED, 2**64 - 1, 2**64 + 12345, 2**80 + 3, -1, -(2**70)):
        for rows in rows_cases:
            assert seeding.row_seeds(job_seed, rows) == [row_seed(job_seed, r) for r in rows], (
                job_seed, rows[:3])


def test_the_fast_seeding_calls_leave_the_states_the_public_calls_leave():
    """Compared on the whole state, caches included, after a Gaussian left one cached."""
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        py_seed, py_inst = seeding.python_seeding()
        assert py_inst is random._inst  # the fast path, not the fallback
        np_seed = seeding.numpy_seeding()
        assert np_seed is not None
        for s in (0, 1, 12345, 2**31, 2**32 - 1):
            random.gauss(0, 1)
            np.random.normal()
            assert random._inst.gauss_next is not None and np.random.get_state()[3] == 1
            py_seed(py_inst, s)
            py_inst.gauss_next = None
            np_seed(s)
            fast = (random.getstate(), np.random.get_state())
            random.gauss(0, 1)
            np.random.normal()
            random.seed(s)
            np.random.seed(s)
            public = (random.getstate(), np.random.get_state())
            assert fast[0] == public[0]
            assert fast[1][0] == public[1][0] and (fast[1][1] == public[1][1]).all()
            assert fast[1][2:] == public[1][2:]  # position, has_gauss, cached gaussian
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def test_the_public_seed_is_used_when_random_seed_was_replaced(monkeypatch):
    calls = []
    monkeypatch.setattr(random, "seed", lambda s=None, version=2: calls.append(s))
    py_seed, py_inst = seeding.python_seeding()
    py_seed(py_inst, 7)
    py_inst.gauss_next = None
    assert calls == [7] and py_inst is not random._inst


@pytest.mark.skipif(not hasattr(np.random, "set_bit_generator"), reason="NumPy < 1.25 has no set_bit_generator")
def test_numpy_seeding_follows_a_replaced_bit_generator():
    """With another bit generator in the global RandomState, numpy.random.seed does something
    else than RandomState.seed (which refuses): the rows then call numpy.random.seed itself."""
    old = np.random.get_bit_generator()
    np.random.set_bit_generator(np.random.PCG64(1))
    try:
        assert seeding.numpy_seeding() is np.random.seed
    finally:
        np.random.set_bit_generator(old)
    assert seeding.numpy_seeding() == np.random.mtrand._rand.seed


HOOK_CHECK = r"""
import json, random, sys
from slurm_apply._node import seeding
from slurm_apply._node.rows import row_seed
assert "numpy" not in sys.modules and "numpy.random" not in sys.modules
seeder = seeding.seeder()
seeder.current = s = row_seed(99, 3)
import numpy
numpy.random  # NumPy 2 loads it here
got = numpy.random.get_state()
numpy.random.seed(s)
want = numpy.random.get_state()
print(json.dumps({"same": bool((got[1] == want[1]).all()) and got[2:] == want[2:],
                  "loader": type(numpy.random.__loader__).__name__,
                  "spec_loader": type(numpy.random.__spec__.loader).__name__,
                  "hooked": seeder.hooked, "first": sys.meta_path[0] is seeder.finder}))
"""


def test_the_import_hook_seeds_numpy_random_from_the_running_rows_seed():
    out = subprocess.run([sys.executable, "-c", HOOK_CHECK], capture_output=True, text=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                         check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    # Seeded at import, and the module keeps its own loader (the hook's wrapper is gone).
    assert got == {"same": True, "loader": "SourceFileLoader", "spec_loader": "SourceFileLoader",
                   "hooked": True, "first": True}


# -- random is seeded at a process's first draw (seeding.LazyRandom) ------------------------------

def _public(rows_drawing, special=None):
    """What each row draws with random.seed(row_seed(SEED, row)) before it: the three draws of
    tests/rowfns_random.py, None for a row not in rows_drawing; special(row) first, if given."""
    state = random.getstate()
    try:
        out = []
        for r in range(N_ROWS):
            random.seed(row_seed(SEED, r))
            if special is not None:
                special(r)
            out.append((random.random(), random.gauss(0, 1), random.randint(0, 10**9))
                       if r in rows_drawing else None)
        return out
    finally:
        random.setstate(state)


def _as_tuples(values):
    return [tuple(v) if isinstance(v, list) else v for v in values]


@pytest.mark.parametrize("rows_per_chunk", [3, 8])
def test_rows_that_do_not_draw_leave_the_draws_of_the_others_as_seeded(tmp_path, rows_per_chunk):
    import rowfns_random

    got = run_rows(rowfns_random.every_other_row, tmp_path, "other", rows_per_chunk=rows_per_chunk)
    assert _as_tuples(got) == _public(range(0, N_ROWS, 2))


def test_functions_taken_from_random_at_import_draw_as_seeded(tmp_path):
    import rowfns_random

    got = run_rows(rowfns_random.through_functions_taken_at_import, tmp_path, "taken")
    assert _as_tuples(got) == _public(range(N_ROWS))


def test_a_real_function_kept_from_an_earlier_row_draws_as_seeded(tmp_path):
    import rowfns_random

    got = run_rows(rowfns_random.keeps_a_real_function, tmp_path, "kept")
    assert _as_tuples(got) == _public(range(N_ROWS))


def test_random_seed_in_a_row_wins_for_that_row_only(tmp_path):
    import rowfns_random

    got = run_rows(rowfns_random.reseeds_row_2, tmp_path, "reseed")
    assert _as_tuples(got) == _public(range(N_ROWS), lambda r: random.seed(99) if r == 2 else None)


def test_a_draw_at_import_of_fs_module_leaves_every_row_seeded(tmp_path):
    import rowfns_drawn_at_import

    got = run_rows(rowfns_drawn_at_import.draws, tmp_path, "atimport")
    assert _as_tuples(got) == _public(range(N_ROWS))


def test_random_has_stand_ins_until_the_first_draw_of_a_process(tmp_path):
    import rowfns_random

    got = run_rows(rowfns_random.stand_ins_until_a_draw, tmp_path, "stand")
    real = [r[0] for r in got]
    assert real == [False] * 6 + [True] * 2, real  # rows 0-5 start with the stand-ins
    draws = [tuple(r[1]) if r[1] is not None else None for r in got]
    assert draws == _public(range(5, N_ROWS))
