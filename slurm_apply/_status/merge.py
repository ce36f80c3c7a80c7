"""The merge rule: which record of a row counts when a row is recorded more than once.

A row can be recorded more than once: it raised in one submission and was rerun, a requeued
task ran it again, or two processes wrote it. Each record gets a key; the greatest key wins::

    bit  63      always 0 (keys are non-negative; -1 means "no record")
    bit  62      kind: 1 success, 0 error           -> a success beats any error
    bits 54-61   submission (8 bits: 0..255)        -> then the later submission wins
    bits 32-53   array task (22 bits: 0..4,194,303; Slurm's MaxArraySize is at most 4,000,001)
    bits 23-31   process in the task (9 bits: 0..511)
    bits  0-22   frame number in the record file (23 bits: 0..8,388,607)

Task, process and frame only break ties between records of the same kind and submission (a
fixed, arbitrary order), and make a key name exactly one frame, so the winning frame of a row is
found from its key. :func:`make_key` refuses fields outside these widths. The merge is then
``best = max(best, key)`` per row (:func:`merge`), or per run of rows (:func:`envelope`): the
outcome cannot depend on the order in which files or frames are read, nor on how reads are
split into refreshes.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

NO_RECORD = -1
ERROR, SUCCESS = 0, 1
KIND_SHIFT, SUB_SHIFT, TASK_SHIFT, PROC_SHIFT = 62, 54, 32, 23
SUB_BITS, TASK_BITS, PROC_BITS, FRAME_BITS = 8, 22, 9, 23
SUCCESS_BIT = 1 << KIND_SHIFT

def make_key(kind: int, sub: int, task: int, proc: int, frame: int) -> int:
    """The merge key of a record; raises ValueError when a field does not fit its bits."""
    for name, value, bits in (("submission", sub, SUB_BITS), ("task", task, TASK_BITS),
                              ("process", proc, PROC_BITS), ("frame", frame, FRAME_BITS)):
        if not 0 <= value < 1 << bits:
            raise ValueError(f"record {name} {value} is outside 0..{(1 << bits) - 1}: the merge "
                             f"key keeps {bits} bits for it (see slurm_apply._status.results)")
    if kind not in (ERROR, SUCCESS):
        raise ValueError(f"record kind must be {ERROR} or {SUCCESS}; got {kind!r}")
    return (kind << KIND_SHIFT | sub << SUB_SHIFT | task << TASK_SHIFT | proc << PROC_SHIFT
            | frame)


def split_key(key: int) -> Tuple[int, int, int, int, int]:
    """(kind, submission, task, process, frame) of a key made by :func:`make_key`."""
    key = int(key)
    return (key >> KIND_SHIFT & 1, key >> SUB_SHIFT & (1 << SUB_BITS) - 1,
            key >> TASK_SHIFT & (1 << TASK_BITS) - 1, key >> PROC_SHIFT & (1 << PROC_BITS) - 1,
            key & (1 << FRAME_BITS) - 1)


def merge(best: np.ndarray, rows: np.ndarray, keys: np.ndarray,
          out: Optional[np.ndarray] = None) -> np.ndarray:
    """The merge rule: each row keeps the greatest key recorded for it.

    Parameters
    ----------
    best : ndarray of int64
        The winning key of every row so far (``NO_RECORD`` where none).
    rows, keys : ndarray of int64
        New records, in any order; a row may repeat.
    out : ndarray, optional
        Where to write the result; pass ``best`` to update it in place.

    Returns
    -------
    ndarray
        ``max(best, keys of each row)``. Without ``out`` a new array; ``best`` is untouched.
    """
    if out is None:
        out = best.copy()
    elif out is not best:
        out[...] = best
    np.maximum.at(out, rows, keys)
    return out


def distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values of a 1-d array. Not np.unique: it hashes, which is slow for many
    values, and NumPy 2 loads numpy.ma (10 ms) at its first call, in every status a process
    builds. Values often come in runs (a frame holds neighbouring rows): runs are collapsed first."""
    runs = values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values.copy()
    runs.sort()
    return runs[np.r_[True, runs[1:] != runs[:-1]]] if len(runs) else runs


def envelope(starts: np.ndarray, stops: np.ndarray, keys: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The merge rule over runs: (starts, stops, keys) of disjoint, sorted runs where each
    row has the greatest key of the runs ``[start, stop)`` that hold it (empty runs ignored)."""
    keep = stops > starts
    starts, stops, keys = starts[keep], stops[keep], keys[keep]
    order = np.argsort(starts, kind="stable")
    starts, stops, keys = starts[order], stops[order], keys[order]
    if np.all(stops[:-1] <= starts[1:]):  # the usual case: no row recorded twice
        return starts, stops, keys
    # Cut every run at every boundary; each piece keeps the greatest key of the runs over it.
    cuts = distinct(np.concatenate((starts, stops)))
    first, last = np.searchsorted(cuts, starts), np.searchsorted(cuts, stops)
    n = last - first
    piece = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n) + np.repeat(first, n)
    best = np.full(len(cuts) - 1, NO_RECORD, dtype=np.int64)
    np.maximum.at(best, piece, np.repeat(keys, n))
    s, e, k = cuts[:-1], cuts[1:], best
    # Join neighbouring pieces of one record again.
    join = np.r_[False, (s[1:] == e[:-1]) & (k[1:] == k[:-1])]
    head = np.flatnonzero(~join)
    s, k = s[head], k[head]
    e = e[np.r_[head[1:] - 1, len(e) - 1]] if len(head) else e[:0]
    keep = k >= 0
    return s[keep], e[keep], k[keep]
