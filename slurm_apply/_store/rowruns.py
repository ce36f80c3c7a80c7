"""Row ids as runs: ``[5, 6, 7, 9]`` is stored as the pairs ``(5, 8), (9, 10)``.

A frame's rows are mostly one stretch of a chunk, so a frame records its ids in a few bytes
whatever its number of rows, and the login side reads a job's outcome in time and memory that
grow with its frames, not its rows. Runs keep the order of the ids (they are not sorted), so
values stay aligned with them. Pure Python: the node imports this without NumPy.
"""

from __future__ import annotations

import sys
from array import array
from typing import Any, Callable, Sequence, Union


def runs_of(rows: Sequence[int]) -> "array[int]":
    """Flat ``array('q')`` of (start, stop) pairs, one per stretch of consecutive ids."""
    out = array("q")
    n = len(rows)
    if not n:
        return out
    rows = rows if isinstance(rows, list) else list(rows)
    first = rows[0]
    # The usual frame is one stretch: checked at C speed (a list compare), not row by row.
    if rows[-1] - first == n - 1 and rows == list(range(first, first + n)):
        out.extend((first, first + n))
        return out
    start = prev = first
    for r in rows[1:]:
        if r != prev + 1:
            out.extend((start, prev + 1))
            start = r
        prev = r
    out.extend((start, prev + 1))
    return out


def runs_bytes(rows: Sequence[int]) -> bytes:
    """:func:`runs_of` as little-endian int64 bytes."""
    return to_le(runs_of(rows))


def to_le(values: "array[int]") -> bytes:
    if sys.byteorder == "big":
        values = array("q", values)
        values.byteswap()
    return values.tobytes()


def from_le(buf: "memoryview | bytes") -> "array[int]":
    out = array("q")
    out.frombytes(buf)
    if sys.byteorder == "big":
        out.byteswap()
    return out


def expand(runs: "array[int]") -> "array[int]":
    """The ids of flat (start, stop) pairs, in order."""
    out = array("q")
    for i in range(0, len(runs), 2):
        out.extend(range(runs[i], runs[i + 1]))
    return out


# -- turning ids into arrays: NumPy on the login side, array.array on the nodes ------------------

IdsFrom = Callable[[Union[memoryview, bytes]], Any]  # little-endian int64 ids -> an array


def numpy_ids(buf: "memoryview | bytes") -> Any:
    """Row ids as a read-only NumPy int64 array over ``buf`` (no copy)."""
    import numpy as np

    return np.frombuffer(buf, dtype="<i8")


def _numpy_from_runs(runs: "memoryview | bytes") -> Any:
    import numpy as np

    pairs = np.frombuffer(runs, dtype="<i8").reshape(-1, 2).astype(np.int64)
    lengths = pairs[:, 1] - pairs[:, 0]
    # Each id is its run's start plus its place in the run.
    ends = np.cumsum(lengths)
    return np.repeat(pairs[:, 0] - (ends - lengths), lengths) + np.arange(ends[-1] if len(ends) else 0)


def array_ids(buf: "memoryview | bytes") -> "array[int]":
    """Row ids as an ``array.array('q')``: what the node uses, without NumPy."""
    return from_le(buf)


numpy_ids.from_runs = _numpy_from_runs  # type: ignore[attr-defined]
array_ids.from_runs = lambda runs: expand(from_le(runs))  # type: ignore[attr-defined]


def ids_from_runs(ids: IdsFrom, runs: "memoryview | bytes") -> Any:
    """The ids of little-endian (start, stop) pairs, made by ``ids`` (expanded its own way)."""
    from_runs = getattr(ids, "from_runs", None)
    if from_runs is not None:
        return from_runs(runs)
    return ids(to_le(expand(from_le(runs))))
