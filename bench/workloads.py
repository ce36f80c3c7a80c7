"""The benchmark's row functions and tables.

The functions live in this small module, not in ``run.py``'s ``__main__``, so the nodes import them
by name (slurm_apply puts this directory on the tasks' PYTHONPATH, as it is ``sys.path[0]`` of
``bench/run.py``). The module imports nothing at load time: a task that loads the payload pays for
this file only. ``bench/rslurm_bench.R`` defines the same functions in R.
"""

from __future__ import annotations

import time

SKEW_LONG_S = 3.0  # rows 0-3 of W2
SKEW_SHORT_S = 0.05  # every other row of W2
SKEW_ROWS = 64
SKEW_LONG_ROWS = 4
FAIL_ROWS = 100
FAIL_ROW = 37
WIDE_COLUMNS = 10


def add(a, b):
    """W1: as trivial as a row can be."""
    return a + b


def skewed(i):
    """W2: four long rows among sixty short ones."""
    time.sleep(SKEW_LONG_S if i < SKEW_LONG_ROWS else SKEW_SHORT_S)
    return i


def wide(c0, c1, c2, c3, c4, c5, c6, c7, c8, c9):
    """W3: ten numeric arguments, trivial work."""
    return c0 + c9


def failing(i):
    """W4: one row raises."""
    if i == FAIL_ROW:
        raise ValueError(f"row {FAIL_ROW} fails on purpose")
    return i


def sleeper(i, sleep_s):
    """The waiting test: rows that just take time."""
    time.sleep(sleep_s)
    return i


def split_rows(df, k: int):
    """The table in ``k`` contiguous, nearly equal chunks: rows chunked by hand, as a user of the
    Python peers (bench/peers.py) would chunk them."""
    base, extra = divmod(len(df), k)
    bounds = [0]
    for c in range(k):
        bounds.append(bounds[-1] + base + (c < extra))
    return [df.iloc[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def apply_chunk(f, chunk):
    """One chunk's task for the Python peers: ``f(**row)`` over its rows, in order."""
    cols = [str(c) for c in chunk.columns]
    return [f(**dict(zip(cols, values))) for values in zip(*(chunk[c].tolist() for c in chunk.columns))]


def skew_work_s() -> float:
    """Total seconds of work in W2 (what an ideal schedule spreads over the CPUs)."""
    return SKEW_LONG_ROWS * SKEW_LONG_S + (SKEW_ROWS - SKEW_LONG_ROWS) * SKEW_SHORT_S


def tiny_table(n: int):
    import numpy as np
    import pandas as pd

    return pd.DataFrame({"a": np.arange(n), "b": np.arange(n)})


def skewed_table():
    import pandas as pd

    return pd.DataFrame({"i": range(SKEW_ROWS)})


def wide_table(n: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    return pd.DataFrame({f"c{k}": rng.random(n) for k in range(WIDE_COLUMNS)})


def failing_table():
    import pandas as pd

    return pd.DataFrame({"i": range(FAIL_ROWS)})
