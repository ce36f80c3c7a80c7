"""Every row's outcome across all submissions, with one merge rule for rows recorded twice.

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
``best = max(best, key)`` per row (:func:`merge`): the outcome cannot depend on the order in
which files or frames are read, nor on how reads are split into refreshes.

Per-row state is NumPy arrays (8 bytes a row for the winning key, 1 byte a row for each
submission that has records); per frame only its offset and meta checksum are kept. Status-side
queries never unpickle a value: only :meth:`Results.values` does, one frame at a time.
"""

from __future__ import annotations

import json
import os
from array import array
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ._store import layout as jd
from ._errors import JobDirError
from ._store.records import ErrorInfo, Frame, RecordFile, RecordReader, array_ids, parse_name

NO_RECORD = -1
ERROR, SUCCESS = 0, 1
KIND_SHIFT, SUB_SHIFT, TASK_SHIFT, PROC_SHIFT = 62, 54, 32, 23
SUB_BITS, TASK_BITS, PROC_BITS, FRAME_BITS = 8, 22, 9, 23
SUCCESS_BIT = 1 << KIND_SHIFT

FileEntry = Tuple[int, int, int, Path]  # (submission, task, process, path)


def make_key(kind: int, sub: int, task: int, proc: int, frame: int) -> int:
    """The merge key of a record; raises ValueError when a field does not fit its bits."""
    for name, value, bits in (("submission", sub, SUB_BITS), ("task", task, TASK_BITS),
                              ("process", proc, PROC_BITS), ("frame", frame, FRAME_BITS)):
        if not 0 <= value < 1 << bits:
            raise ValueError(f"record {name} {value} is outside 0..{(1 << bits) - 1}: the merge "
                             f"key keeps {bits} bits for it (see slurm_apply._results)")
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


def list_record_files(job_dir: "os.PathLike[str] | str", subs: Iterable[int]) -> List[FileEntry]:
    """Every record file of the given submissions, as (submission, task, process, path)."""
    out: List[FileEntry] = []
    for sub in subs:
        for path in jd.list_result_files(Path(job_dir), sub):
            parsed = parse_name(path.name)
            if parsed is not None:
                out.append((sub, parsed[0], parsed[1], path))
    return out


def _distinct(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values. Winning keys come in runs (a frame holds neighbouring rows), so
    runs are collapsed before sorting; np.unique hashes, which is slow for many values."""
    runs = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys.copy()
    runs.sort()
    return runs[np.r_[True, runs[1:] != runs[:-1]]] if len(runs) else runs


class _File:
    """What is kept of one record file: its reader and, per frame, where it starts."""

    def __init__(self, path: Path, sub: int, task: int, proc: int) -> None:
        make_key(ERROR, sub, task, proc, 0)  # refuse a file whose key would not fit, up front
        self.path, self.sub, self.task, self.proc = path, sub, task, proc
        self.reader = RecordReader(path)  # read as batches: its ids function is not used
        self.starts = array("q")
        self.meta_crcs = array("q")
        self.by_column = array("b")  # per frame: its values are stored by column


class Results:
    """Per-row outcome of a job across every submission, read incrementally from its records.

    Parameters
    ----------
    job_dir : path-like
        The job directory.
    n_rows : int
        Rows in the job; every recorded row id must be below it.
    """

    def __init__(self, job_dir: "os.PathLike[str] | str", n_rows: int) -> None:
        self.job_dir = Path(job_dir)
        self.n_rows = int(n_rows)
        self._best = np.full(self.n_rows, NO_RECORD, dtype=np.int64)
        self._seen: Dict[int, np.ndarray] = {}
        self._files: Dict[Tuple[int, int, int], _File] = {}
        self._counts: Optional[Tuple[int, int, int]] = None

    # -- reading -------------------------------------------------------------------------------

    def refresh(self, files: Sequence[FileEntry]) -> int:
        """Read what was appended to ``files`` since the last refresh and merge it.

        Parameters
        ----------
        files : sequence of (submission, task, process, path)
            The record files to look at, e.g. from :func:`list_record_files`; any order.

        Returns
        -------
        int
            Number of new frames read.

        Raises
        ------
        JobDirError
            If a file records a row the job does not have, or its key would not fit the bits
            above. Every other file is still merged; the bad file is read again (and refused
            again) next time.
        """
        n_frames = 0
        bad: List[str] = []
        for sub, task, proc, path in files:
            try:
                f = self._files.get((sub, task, proc))
                if f is None:
                    f = _File(Path(path), sub, task, proc)
                    self._files[(sub, task, proc)] = f
                new = self._read(f)
            except ValueError as exc:  # a key would not fit, or a row the job does not have
                bad.append(f"{path}: {exc}")
                continue
            if new is not None:
                # File by file: the rule does not care about order, and the peak memory
                # is one file's records, not the whole job's.
                merge(self._best, new[0], new[1], out=self._best)
                self._counts = None
                n_frames += new[2]
        if bad:
            raise JobDirError("; ".join(bad))
        return n_frames

    def _read(self, f: "_File") -> Optional[Tuple[np.ndarray, np.ndarray, int]]:
        """A file's new records as (rows, keys, frames), or None. On ValueError the file is left
        as it was, to be read (and refused) again: nothing of it is half taken in."""
        start = (f.reader.offset, f.reader.frames)
        batch = f.reader.read_new_batch()
        k = len(batch.starts)
        if not k:
            return None
        try:
            last = batch.first + k - 1
            base = make_key(ERROR, f.sub, f.task, f.proc, last) - last  # checks the last frame
            numbers = np.arange(batch.first, last + 1, dtype=np.int64)
            rows = np.concatenate((np.frombuffer(batch.done, "<i8"),
                                   np.frombuffer(batch.err, "<i8")))
            keys = np.concatenate((np.repeat(base | SUCCESS_BIT | numbers, batch.n_done),
                                   np.repeat(base | numbers, batch.n_err)))
            if len(rows) and (rows.min() < 0 or rows.max() >= self.n_rows):
                raise ValueError(f"it records row {int(rows.max())} (or a negative one) but the "
                                 f"job has {self.n_rows} rows: it does not belong to this job")
        except ValueError:
            f.reader.offset, f.reader.frames = start
            raise
        f.starts.extend(batch.starts)
        f.meta_crcs.extend(batch.meta_crcs)
        f.by_column.extend(batch.columnar)
        self._seen_in(f.sub)[rows] = True
        return rows, keys, k

    def _seen_in(self, sub: int) -> np.ndarray:
        if sub not in self._seen:
            self._seen[sub] = np.zeros(self.n_rows, dtype=bool)
        return self._seen[sub]

    def _frames(self, keys: np.ndarray) -> Iterator[Tuple[int, Frame, RecordFile]]:
        """(key, frame, its open file) for each frame named by ``keys`` (distinct, ascending:
        so grouped by file, in file order), indexed again; each file opened once."""
        files = keys >> PROC_SHIFT  # kind, submission, task, process: one file (and one kind)
        cuts = np.flatnonzero(files[1:] != files[:-1]) + 1
        for group in np.split(keys, cuts) if len(keys) else []:
            _, sub, task, proc, _ = split_key(int(group[0]))
            f = self._files[(sub, task, proc)]
            with RecordFile(f.path) as rf:
                for key, number in zip(group.tolist(), (group & (1 << FRAME_BITS) - 1).tolist()):
                    frame = rf.frame(f.starts[number], number, ids=array_ids)
                    if frame.meta_crc != f.meta_crcs[number]:
                        raise JobDirError(f"{f.path} changed since it was read (frame {number} "
                                          "differs); was the job directory replaced?")
                    yield key, frame, rf

    # -- status-side queries: none of them unpickles a value ------------------------------------

    @property
    def keys(self) -> np.ndarray:
        """The winning key of every row (``NO_RECORD`` where none), read-only."""
        view = self._best.view()
        view.flags.writeable = False
        return view

    def failed_mask(self) -> np.ndarray:
        """Bool per row: its winning record is an error."""
        return (self._best >= 0) & (self._best < SUCCESS_BIT)

    def done_mask(self) -> np.ndarray:
        """Bool per row: its winning record is a success."""
        return self._best >= SUCCESS_BIT

    def counts(self) -> Tuple[int, int, int]:
        """(done, failed, no record): rows whose winning record is a success, an error, none."""
        if self._counts is None:
            done = int(np.count_nonzero(self._best >= SUCCESS_BIT))
            none = int(np.count_nonzero(self._best < 0))
            self._counts = (done, self.n_rows - done - none, none)
        return self._counts

    @property
    def n_done(self) -> int:
        """Rows whose winning record is a success."""
        return self.counts()[0]

    @property
    def n_failed(self) -> int:
        """Rows whose winning record is an error."""
        return self.counts()[1]

    def done(self) -> np.ndarray:
        """Rows whose winning record is a success, ascending."""
        return np.flatnonzero(self._best >= SUCCESS_BIT)

    def failed(self) -> np.ndarray:
        """Rows whose winning record is an error, ascending."""
        return np.flatnonzero(self.failed_mask())

    def unrecorded(self) -> np.ndarray:
        """Rows no submission has recorded yet, ascending."""
        return np.flatnonzero(self._best < 0)

    def recorded_in(self, sub: int) -> np.ndarray:
        """Bool per row: submission ``sub`` has some record of it (winning or not), read-only."""
        seen = self._seen.get(sub)
        if seen is None:
            return np.zeros(self.n_rows, dtype=bool)
        view = seen.view()
        view.flags.writeable = False
        return view

    def errors(self, rows: Optional[Iterable[int]] = None) -> Dict[int, ErrorInfo]:
        """{row: (type, message, traceback)} of rows whose winning record is an error.

        Parameters
        ----------
        rows : iterable of int, optional
            Only these rows (the others are left out); default every failed row. Only the JSON
            of the frames holding the wanted errors is parsed.
        """
        if rows is None:
            return self._errors_at(np.flatnonzero(self.failed_mask()), restrict=False)
        idx = rows if isinstance(rows, np.ndarray) else np.fromiter(rows, dtype=np.int64)
        won = self._best[idx]
        return self._errors_at(_distinct(idx[(won >= 0) & (won < SUCCESS_BIT)]), restrict=True)

    def _errors_at(self, rows: np.ndarray, restrict: bool) -> Dict[int, ErrorInfo]:
        """The winning errors of ``rows`` (all failed, ascending), reading each frame once."""
        best = memoryview(self._best)  # Python ints at C speed, for the per-row checks below
        wanted = set(rows.tolist()) if restrict else None
        out: Dict[int, ErrorInfo] = {}
        for key, frame, _ in self._frames(_distinct(self._best[rows])):
            info = json.loads(frame.errors_json)
            for r, (t, m, tb) in zip(frame.err, info):
                if best[r] == key and (wanted is None or r in wanted):
                    out[r] = (str(t), str(m), str(tb))
        return dict(sorted(out.items()))

    def first_error(self) -> Optional[Tuple[int, ErrorInfo]]:
        """(row, (type, message, traceback)) of the lowest failed row, or None."""
        mask = self.failed_mask()
        if not mask.any():
            return None
        row = int(np.argmax(mask))
        return row, self.errors([row])[row]

    # -- output --------------------------------------------------------------------------------

    def _winners(self) -> np.ndarray:
        """The distinct keys of winning successes: each names one frame."""
        return _distinct(self._best[self._best >= SUCCESS_BIT])

    def values(self) -> List[Any]:
        """Every row's returned value (None where its winning record is not a success).

        Unpickles only the frames holding winning successes, each once.

        Raises
        ------
        ResultsError
            If some values cannot be unpickled in this Python (see ``read_values``).
        """
        out: List[Any] = [None] * self.n_rows
        best = memoryview(self._best)
        for key, frame, rf in self._frames(self._winners()):
            for r, v in zip(frame.done, rf.values(frame)):
                if best[r] == key:
                    out[r] = v
        return out

    def values_at(self, rows: np.ndarray) -> Dict[int, Any]:
        """{row: value} for these rows whose winning record is a success, unpickling only the
        frames that hold them (for results read as they come in)."""
        rows = np.asarray(rows, dtype=np.int64)
        keys = self._best[rows]
        wanted = set(rows[keys >= SUCCESS_BIT].tolist())
        out: Dict[int, Any] = {}
        best = memoryview(self._best)
        for key, frame, rf in self._frames(_distinct(keys[keys >= SUCCESS_BIT])):
            for r, v in zip(frame.done, rf.values(frame)):
                if r in wanted and best[r] == key:
                    out[r] = v
        return out

    def all_by_column(self) -> bool:
        """True when some row succeeded and every frame holding a winning success stores its
        values by column (read from the frames' heads: nothing is unpickled)."""
        winners = self._winners()
        return len(winners) > 0 and all(
            self._files[(sub, task, proc)].by_column[number]
            for _, sub, task, proc, number in map(split_key, winners.tolist()))

    def winning_frames(self) -> Iterator[Tuple[Frame, RecordFile, np.ndarray]]:
        """(frame, its open file, the positions in ``frame.done`` of the rows it wins) for every
        frame holding winning successes, each once, in file order."""
        for key, frame, rf in self._frames(self._winners()):
            done = np.frombuffer(frame.done, dtype=np.int64)
            yield frame, rf, np.flatnonzero(self._best[done] == key)
