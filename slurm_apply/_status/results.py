"""Every row's outcome across all submissions, read incrementally from the record files.

Rows recorded more than once count once, by the merge rule of ``_merge.py`` (a success beats an
error; then the later submission wins). Records name their rows as runs
(``_store/rowruns.py``), so the state is runs too: the winning key of each stretch of rows, and
per submission the rows it recorded (a :class:`~slurm_apply._status.rowsets.RowSet`); per frame only its
offset and meta checksum are kept. Memory and time grow with frames, not rows: a finished
ten-million-row job is a few thousand runs. Per-row arrays are made only when asked for
(output, masks). Status-side queries never unpickle a value: only :meth:`Results.values` does,
one frame at a time.

Each frame's values are checked against their CRC once, when the frame is first read
(``_store/records.py``); a damaged frame's done rows are no result, here as everywhere: they
count as recorded by their submission (it will not run them again) but neither done nor failed,
so they are missing, and :meth:`Results.damaged` says where their record is.
"""

from __future__ import annotations

import os
from array import array
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .._store import layout as jd
from .._errors import JobDirError
# The rule's names are re-exported: callers and tests import them from here.
from .merge import (
    ERROR,
    FRAME_BITS,
    NO_RECORD,
    PROC_SHIFT,
    SUCCESS_BIT,
    distinct,
    envelope,
    make_key,
    split_key,
)
from .rowsets import RowSet, combine
from .._store import errtab
from .._store.records import ErrorInfo, Frame, RecordFile, RecordReader, array_ids, numpy_ids, parse_name

FileEntry = Tuple[int, int, int, Path]  # (submission, task, process, path)


def list_record_files(job_dir: "os.PathLike[str] | str", subs: Iterable[int]) -> List[FileEntry]:
    """Every record file of the given submissions, as (submission, task, process, path)."""
    out: List[FileEntry] = []
    for sub in subs:
        for path in jd.list_result_files(Path(job_dir), sub):
            parsed = parse_name(path.name)
            if parsed is not None:
                out.append((sub, parsed[0], parsed[1], path))
    return out


class _File:
    """What is kept of one record file: its reader and, per frame, where it starts."""

    def __init__(self, path: Path, sub: int, task: int, proc: int) -> None:
        make_key(ERROR, sub, task, proc, 0)  # refuse a file whose key would not fit, up front
        self.path, self.sub, self.task, self.proc = path, sub, task, proc
        self.reader = RecordReader(path)  # read as batches: its ids function is not used
        self.starts = array("q")
        self.meta_crcs = array("q")
        self.by_column = array("b")  # per frame: its values are stored by column
        self.stacks: Dict[int, List[str]] = {}  # frame -> its table of tracebacks, once read
        self.damaged: List[Tuple[int, RowSet]] = []  # (frame, its done rows) of damaged frames

    def stacks_of(self, number: int) -> List[str]:
        """The tracebacks frame ``number`` stored, which later frames of the file refer to."""
        if number not in self.stacks:
            with RecordFile(self.path) as rf:
                frame = rf.frame(self.starts[number], number, ids=array_ids, done=False)
            self.stacks[number] = errtab.stacks(frame.errors_json)
        return self.stacks[number]


def _pairs(buf: bytes) -> np.ndarray:
    return np.frombuffer(buf, dtype="<i8").reshape(-1, 2)


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
        empty = np.empty(0, dtype=np.int64)
        self._s, self._e, self._k = empty, empty, empty  # the winning key of each run of rows
        self._new: List[Tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # runs not merged yet
        self._seen: Dict[int, RowSet] = {}
        self._seen_new: Dict[int, List[Tuple[np.ndarray, np.ndarray]]] = {}
        self._files: Dict[Tuple[int, int, int], _File] = {}
        self._damaged = RowSet()  # done rows of damaged frames, whatever else recorded them

    def grow(self, n_rows: int) -> None:
        """The job has gained rows (``extend()``): records may name them from now on. What was
        read stays (rows are only ever added after the others)."""
        self.n_rows = max(self.n_rows, int(n_rows))

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
                n_frames += self._read(f)
            except ValueError as exc:  # a key would not fit, or a row the job does not have
                bad.append(f"{path}: {exc}")
        if bad:
            raise JobDirError("; ".join(bad))
        return n_frames

    def _read(self, f: "_File") -> int:
        """Take in a file's new frames; their number. On ValueError the file is left as it
        was, to be read (and refused) again: nothing of it is half taken in."""
        start = (f.reader.offset, f.reader.frames)
        batch = f.reader.read_new_batch()
        k = len(batch.starts)
        if not k:
            return 0
        try:
            last = batch.first + k - 1
            base = make_key(ERROR, f.sub, f.task, f.proc, last) - last  # checks the last frame
            numbers = np.arange(batch.first, last + 1, dtype=np.int64)
            pairs = np.concatenate((_pairs(batch.done_pairs), _pairs(batch.err_pairs)))
            keys = np.concatenate((np.repeat(base | SUCCESS_BIT | numbers, batch.done_runs),
                                   np.repeat(base | numbers, batch.err_runs)))
            bad = _pairs(batch.damaged_pairs)
            for p in (pairs, bad):
                if len(p) and (p.min() < 0 or p[:, 1].max() > self.n_rows or np.any(p[:, 1] <= p[:, 0])):
                    raise ValueError(f"it records row {int(p[:, 1].max()) - 1} (or a negative one) "
                                     f"but the job has {self.n_rows} rows: it does not belong to this job")
        except ValueError:
            f.reader.offset, f.reader.frames = start
            raise
        f.starts.extend(batch.starts)
        f.meta_crcs.extend(batch.meta_crcs)
        f.by_column.extend(batch.columnar)
        starts, stops = pairs[:, 0].copy(), pairs[:, 1].copy()
        self._new.append((starts, stops, keys))
        self._seen_new.setdefault(f.sub, []).append((starts, stops))
        if len(bad):
            cuts = np.cumsum(batch.damaged_runs)[:-1]
            for number, runs in zip(batch.damaged, np.split(bad, cuts)):
                rows = RowSet.from_runs(runs[:, 0], runs[:, 1])
                f.damaged.append((int(number), rows))
                self._damaged = self._damaged | rows
            self._seen_new[f.sub].append((bad[:, 0].copy(), bad[:, 1].copy()))
        return k

    def _merged(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The winning runs, with every record read so far merged in."""
        if self._new:
            parts = [(self._s, self._e, self._k)] + self._new
            self._s, self._e, self._k = envelope(*(np.concatenate(p) for p in zip(*parts)))
            self._new = []
        return self._s, self._e, self._k

    def _where(self, kind: str) -> RowSet:
        s, e, k = self._merged()
        pick = k >= SUCCESS_BIT if kind == "done" else k < SUCCESS_BIT
        return RowSet(s[pick], e[pick], _normal=False)

    def damaged(self, rows: Optional[RowSet] = None) -> List[Tuple[Path, int, RowSet]]:
        """(record file, frame number, its rows) of each damaged frame (its values fail their
        CRC) holding some of ``rows`` (default: any), in file and frame order. Its rows are no
        result of it, whatever other records say of them."""
        out: List[Tuple[Path, int, RowSet]] = []
        if not self._damaged or (rows is not None and not rows & self._damaged):
            return out
        for key in sorted(self._files):
            f = self._files[key]
            for number, held in f.damaged:
                here = held if rows is None else held & rows
                if here:
                    out.append((f.path, number, here))
        return out

    def key_of(self, rows: np.ndarray) -> np.ndarray:
        """The winning key of each of ``rows`` (``NO_RECORD`` where none)."""
        s, e, k = self._merged()
        rows = np.asarray(rows, dtype=np.int64)
        i = np.searchsorted(s, rows, side="right") - 1
        j = np.where(i >= 0, i, 0)
        hit = (i >= 0) & (rows < e[j]) if len(s) else np.zeros(len(rows), bool)
        return np.where(hit, k[j] if len(s) else NO_RECORD, NO_RECORD)

    # -- status-side queries: none of them unpickles a value ------------------------------------

    def done_rows(self) -> RowSet:
        """Rows whose winning record is a success, as runs."""
        return self._where("done")

    def failed_rows(self) -> RowSet:
        """Rows whose winning record is an error, as runs."""
        return self._where("failed")

    def recorded_rows(self, sub: int) -> RowSet:
        """Rows submission ``sub`` has some record of (winning or not), as runs."""
        new = self._seen_new.pop(sub, None)
        if new:
            old = self._seen.get(sub, RowSet())
            s, e = combine([old.runs] + new, 1)
            self._seen[sub] = RowSet(s, e, _normal=True)
        return self._seen.get(sub, RowSet())

    def counts(self) -> Tuple[int, int, int]:
        """(done, failed, no record): rows whose winning record is a success, an error, none."""
        s, e, k = self._merged()
        length = e - s
        done = int(length[k >= SUCCESS_BIT].sum())
        failed = int(length[k < SUCCESS_BIT].sum())
        return done, failed, self.n_rows - done - failed

    @property
    def n_done(self) -> int:
        """Rows whose winning record is a success."""
        return self.counts()[0]

    @property
    def n_failed(self) -> int:
        """Rows whose winning record is an error."""
        return self.counts()[1]

    @property
    def keys(self) -> np.ndarray:
        """The winning key of every row (``NO_RECORD`` where none), one per row (made on demand)."""
        s, e, k = self._merged()
        out = np.full(self.n_rows, NO_RECORD, dtype=np.int64)
        out[RowSet(s, e, _normal=True).rows()] = np.repeat(k, e - s)
        return out

    def failed_mask(self) -> np.ndarray:
        """Bool per row: its winning record is an error."""
        return self.failed_rows().mask(self.n_rows)

    def done_mask(self) -> np.ndarray:
        """Bool per row: its winning record is a success."""
        return self.done_rows().mask(self.n_rows)

    def done(self) -> np.ndarray:
        """Rows whose winning record is a success, ascending."""
        return self.done_rows().rows()

    def failed(self) -> np.ndarray:
        """Rows whose winning record is an error, ascending."""
        return self.failed_rows().rows()

    def unrecorded(self) -> np.ndarray:
        """Rows no submission has recorded yet, ascending."""
        s, e, _ = self._merged()
        return RowSet(s, e).complement(self.n_rows).rows()

    def recorded_in(self, sub: int) -> np.ndarray:
        """Bool per row: submission ``sub`` has some record of it (winning or not)."""
        return self.recorded_rows(sub).mask(self.n_rows)

    def errors(self, rows: Optional[Iterable[int]] = None) -> Dict[int, ErrorInfo]:
        """{row: (type, message, traceback)} of rows whose winning record is an error.

        Parameters
        ----------
        rows : iterable of int, optional
            Only these rows (the others are left out); default every failed row. Only the JSON
            of the frames holding the wanted errors is parsed.
        """
        if rows is None:
            s, e, k = self._merged()
            keys = distinct(k[k < SUCCESS_BIT])
            wanted = None
        else:
            idx = np.asarray(rows if isinstance(rows, (np.ndarray, RowSet)) else list(rows),
                             dtype=np.int64).ravel()
            won = self.key_of(idx)
            keys = distinct(won[(won >= 0) & (won < SUCCESS_BIT)])
            wanted = set(idx.tolist())
        out: Dict[int, ErrorInfo] = {}
        for key, frame, _ in self._frames(keys, done=False):
            f = self._files[split_key(key)[1:4]]
            err = np.asarray(frame.err, dtype=np.int64)
            wins = self.key_of(err) == key
            for i, info in enumerate(errtab.decode(frame.errors_json, f.stacks_of)):
                r = int(err[i])
                if wins[i] and (wanted is None or r in wanted):
                    out[r] = info
        return dict(sorted(out.items()))

    def first_error(self) -> Optional[Tuple[int, ErrorInfo]]:
        """(row, (type, message, traceback)) of the lowest failed row, or None."""
        failed = self.failed_rows()
        if not failed:
            return None
        row = failed[0]
        return row, self.errors([row])[row]

    # -- output --------------------------------------------------------------------------------

    def _frames(self, keys: np.ndarray, done: bool = True) -> Iterator[Tuple[int, Frame, RecordFile]]:
        """(key, frame, its open file) for each frame named by ``keys`` (distinct, ascending:
        so grouped by file, in file order), indexed again; each file opened once. With
        ``done=False`` the frames come without their done ids (for their errors)."""
        files = keys >> PROC_SHIFT  # kind, submission, task, process: one file (and one kind)
        cuts = np.flatnonzero(files[1:] != files[:-1]) + 1
        for group in np.split(keys, cuts) if len(keys) else []:
            _, sub, task, proc, _ = split_key(int(group[0]))
            f = self._files[(sub, task, proc)]
            with RecordFile(f.path) as rf:
                for key, number in zip(group.tolist(), (group & (1 << FRAME_BITS) - 1).tolist()):
                    frame = rf.frame(f.starts[number], number, ids=numpy_ids, done=done)
                    if frame.meta_crc != f.meta_crcs[number]:
                        raise JobDirError(f"{f.path} changed since it was read (frame {number} "
                                          "differs); was the job directory replaced?")
                    yield key, frame, rf

    def _winners(self) -> np.ndarray:
        """The distinct keys of winning successes: each names one frame."""
        _, _, k = self._merged()
        return distinct(k[k >= SUCCESS_BIT])

    def values(self) -> List[Any]:
        """Every row's returned value (None where its winning record is not a success).

        Unpickles only the frames holding winning successes, each once.

        Raises
        ------
        ResultsError
            If some values cannot be unpickled in this Python (see ``read_values``).
        """
        out: List[Any] = [None] * self.n_rows
        for frame, rf, won in self.winning_frames():
            values = rf.values(frame)
            for r, i in zip(np.asarray(frame.done)[won].tolist(), won.tolist()):
                out[r] = values[i]
        return out

    def values_at(self, rows: np.ndarray) -> Dict[int, Any]:
        """{row: value} for these rows whose winning record is a success, unpickling only the
        frames that hold them (for results read as they come in)."""
        rows = np.asarray(rows, dtype=np.int64)
        keys = self.key_of(rows)
        wanted = set(rows[keys >= SUCCESS_BIT].tolist())
        out: Dict[int, Any] = {}
        for key, frame, rf in self._frames(distinct(keys[keys >= SUCCESS_BIT])):
            done = np.asarray(frame.done, dtype=np.int64)
            wins = self.key_of(done) == key
            for r, v, w in zip(done.tolist(), rf.values(frame), wins.tolist()):
                if w and r in wanted:
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
            done = np.asarray(frame.done, dtype=np.int64)
            yield frame, rf, np.flatnonzero(self.key_of(done) == key)
