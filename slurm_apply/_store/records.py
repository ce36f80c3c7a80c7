"""Result records: one append-only file per task process, a frame per batch of rows.

A frame is::

    head   magic b"SAR3" (values by row) or b"SAC3" (by column) | meta length (u64) |
           values length (u64) | CRC32 of meta (u32) | CRC32 of values (u32)  (LE, 28 bytes)
    meta   n_done (u32) | n_err (u32) | done runs (u32) | error runs (u32) |
           done row ids as runs, (start, stop) int64 LE pairs, in order (``rowruns.py``) |
           error row ids, the same | errors: UTF-8 JSON, each distinct traceback once, aligned
           with the error ids (``errtab.py``)
    values pickle of the list of returned values, aligned with the done ids; or, in a b"SAC3"
           frame, of (keys, tags, columns) when the rows returned numbers (or strings) of one
           shape (see ``columns.py``): one array per column, no Python object per value

Frames of format 2 (b"SAR2", b"SAC2": every row id as an int64, a traceback per error) are
still read. Row ids and errors sit in the meta, apart from the values, so the login side learns
which rows finished or failed by reading heads and metas and seeking over the values: status
never unpickles a result (cheap on big jobs, and it works where the module of a result cannot
be imported), and as ids are runs, the meta of a frame is a few bytes whatever its rows. Values
are unpickled only by :func:`read_values`, for output.

A frame is accepted when its head is sane, its meta matches its CRC and its whole values part
is on disk. A writer killed half-way leaves a torn last frame: readers stop there and take it up
again once it is complete, and :func:`open_for_append` cuts it off before a requeued process
appends. The same rule serves both, so a writer never cuts a frame a reader has accepted.

An accepted frame whose values fail their CRC is *damaged* (a bit flipped on disk or on the
wire): its errors still count (they sit in the checked meta) but its done rows are no result.
Readers check the values CRC once, when they first index a frame (``verify``, on by default),
and hand a damaged frame's done rows apart (``Batch.damaged_*``, ``Frame.damaged``), so every
reader of "which rows are done" (status, output, resubmission, a takeover, a requeued task's
resume) sees the same thing: the row is not done, and why. The frame stays in the file (the
frames after it are good), so nothing is cut. Only the task's parent, which reads what its own
workers just wrote, leaves the check out (``verify=False``): it only counts rows.

The node imports this module, so it must not import NumPy at module level: ids are converted by
a function the caller chooses (:func:`numpy_ids` on the login side, :func:`array_ids` on nodes).
"""

from __future__ import annotations

import os
import pickle
import re
import struct
import zlib
from array import array
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from .._errors import JobDirError, ResultsError
from . import errtab, rowruns
from .columns import Columns, decode as decode_columns, encode as encode_columns
from .rowruns import IdsFrom, array_ids, ids_from_runs, numpy_ids

MAGIC, MAGIC_COLUMNS = b"SAR3", b"SAC3"
OLD_MAGIC, OLD_MAGIC_COLUMNS = b"SAR2", b"SAC2"  # format 2: one int64 per row id
_COLUMNAR = {MAGIC: False, MAGIC_COLUMNS: True, OLD_MAGIC: False, OLD_MAGIC_COLUMNS: True}
HEAD = struct.Struct("<4sQQII")
COUNTS = struct.Struct("<IIII")
OLD_COUNTS = struct.Struct("<II")
ID_SIZE = 8
PAIR_SIZE = 16
# Reads go through a buffer this big, so the heads and metas of small frames cost no system call
# each (a seek inside the buffer moves a pointer); a big values part is skipped with one lseek.
_READ_BUFFER = 1 << 16
_NAME = re.compile(r"t(\d+)_p(\d+)\.rec")

ErrorInfo = errtab.ErrorInfo  # (exception type, message, traceback text)
TracebackCache = errtab.TracebackCache


class Frame(NamedTuple):
    """The index entry of one frame: where it is and which rows it records (values not read).

    ``done`` and ``err`` are row ids, as the reader's ``ids`` function made them (a NumPy int64
    array by default). ``errors_json`` is the raw JSON of the errors; see :func:`parse_errors`.
    """

    path: Path
    number: int  # position in its file, from 0
    offset: int  # where the frame starts in its file
    done: Any
    err: Any
    errors_json: bytes
    meta_crc: int
    values_offset: int
    values_length: int
    values_crc: int
    columnar: bool = False  # the values are stored by column
    damaged: bool = False  # checked and its values fail their CRC: its done rows are no result


def dumps(obj: Any) -> bytes:
    """Pickle with the standard pickler, falling back to cloudpickle (lambdas and the like)."""
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        import cloudpickle

        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def encode_frame(done_rows: Sequence[int], values: Sequence[Any],
                 errors: Mapping[int, ErrorInfo], tracebacks: Optional[TracebackCache] = None) -> bytes:
    """One frame, to be appended with a single write, recording ``done_rows`` (aligned with
    the ``values`` they returned; stored by column when they have one shape) and ``errors``,
    {row: (type, message, traceback)} of rows that raised. With ``tracebacks`` (the writing
    process's cache) a stack an earlier frame stored is referred to, not stored again; call
    its ``written()`` once the frame is written.

    Raises
    ------
    Exception
        Whatever pickling raised when a value cannot be pickled even by cloudpickle; the
        caller decides what to do with such rows.
    """
    if len(done_rows) != len(values):
        raise ValueError(f"{len(done_rows)} rows but {len(values)} values")
    err_rows = list(errors)
    done_runs, err_runs = rowruns.runs_bytes(done_rows), rowruns.runs_bytes(err_rows)
    meta = b"".join((COUNTS.pack(len(done_rows), len(err_rows), len(done_runs) // PAIR_SIZE,
                                 len(err_runs) // PAIR_SIZE), done_runs, err_runs,
                     errtab.encode([errors[r] for r in err_rows], tracebacks)))
    cols = encode_columns(values)
    if cols is None:
        vals, magic = dumps(values if isinstance(values, list) else list(values)), MAGIC
    else:
        vals, magic = pickle.dumps(cols, protocol=pickle.HIGHEST_PROTOCOL), MAGIC_COLUMNS
    head = HEAD.pack(magic, len(meta), len(vals), zlib.crc32(meta), zlib.crc32(vals))
    return b"".join((head, meta, vals))


class Batch(NamedTuple):
    """The index of a run of new frames of one file, column by column: no object per frame.

    Row ids are runs, (start, stop) int64 little-endian pairs, frame after frame (the done runs
    of frame k are the ``done_runs[k]`` pairs after those of frames before it); the arrays are
    ``array('q')``. ``done`` and ``err`` give the ids themselves, one int64 each.

    A damaged frame (see the module's doc) adds no done row: its ``n_done`` and ``done_runs``
    are 0, and its done runs are in ``damaged_pairs`` instead, ``damaged_runs[i]`` of them for
    frame number ``damaged[i]``.
    """

    first: int  # number of the first frame
    starts: "array[int]"  # where each frame starts
    meta_crcs: "array[int]"
    n_done: "array[int]"
    n_err: "array[int]"
    done_pairs: bytes
    err_pairs: bytes
    done_runs: "array[int]"  # per frame, how many pairs
    err_runs: "array[int]"
    columnar: "array[int]"  # 1 where the frame's values are stored by column
    damaged: "array[int]"  # numbers of the damaged frames
    damaged_pairs: bytes
    damaged_runs: "array[int]"  # per damaged frame, how many pairs

    @property
    def done(self) -> bytes:
        return rowruns.to_le(rowruns.expand(rowruns.from_le(self.done_pairs)))

    @property
    def err(self) -> bytes:
        return rowruns.to_le(rowruns.expand(rowruns.from_le(self.err_pairs)))


class _Meta(NamedTuple):
    pos: int
    meta_crc: int
    n_done: int
    n_err: int
    done_pairs: bytes
    err_pairs: bytes
    errors_json: bytes
    values_at: int
    values_length: int
    values_crc: int
    columnar: bool
    damaged: bool


# Values are read this much at a time to check their CRC: a big frame never sits whole in memory.
_CHECK_BLOCK = 1 << 20


def _values_crc(fh: BinaryIO, length: int) -> Optional[int]:
    """CRC32 of the next ``length`` bytes of ``fh``; None if fewer are there."""
    crc, left = 0, length
    while left:
        block = fh.read(min(left, _CHECK_BLOCK))
        if not block:
            return None
        crc = zlib.crc32(block, crc)
        left -= len(block)
    return crc


def _parse_meta(magic: bytes, meta: bytes) -> Optional[Tuple[int, int, bytes, bytes, bytes]]:
    """(n_done, n_err, done pairs, error pairs, errors JSON) of a meta, or None if it does not
    add up. Format 2's ids become runs here."""
    if magic in (MAGIC, MAGIC_COLUMNS):
        if len(meta) < COUNTS.size:
            return None
        n_done, n_err, r_done, r_err = COUNTS.unpack_from(meta)
        mid = COUNTS.size + PAIR_SIZE * r_done
        end = mid + PAIR_SIZE * r_err
        if end > len(meta):
            return None
        return n_done, n_err, meta[COUNTS.size:mid], meta[mid:end], meta[end:]
    if len(meta) < OLD_COUNTS.size:
        return None
    n_done, n_err = OLD_COUNTS.unpack_from(meta)
    mid = OLD_COUNTS.size + ID_SIZE * n_done
    end = mid + ID_SIZE * n_err
    if end > len(meta):
        return None
    return (n_done, n_err, rowruns.runs_bytes(array_ids(meta[OLD_COUNTS.size:mid])),
            rowruns.runs_bytes(array_ids(meta[mid:end])), meta[end:])


def _metas(fh: BinaryIO, pos: int, size: int, limit: int = -1, verify: bool = True) -> Iterator[_Meta]:
    """Each accepted frame from ``pos`` up to ``size``, reading heads and metas and, with
    ``verify``, the values too, to check their CRC (a frame that fails it is damaged)."""
    seek, read, unpack, crc32 = fh.seek, fh.read, HEAD.unpack, zlib.crc32
    while limit:
        meta_at = pos + HEAD.size
        if meta_at > size:
            return
        seek(pos)  # inside the read buffer for small frames: no system call
        head = read(HEAD.size)
        if len(head) != HEAD.size:  # the file was cut after its size was taken
            return
        magic, meta_len, val_len, meta_crc, val_crc = unpack(head)
        values_at = meta_at + meta_len
        if magic not in _COLUMNAR or values_at + val_len > size:
            return  # torn (still being written, or cut by a kill) or not a frame at all
        meta = read(meta_len)
        if len(meta) != meta_len or crc32(meta) != meta_crc:
            return
        parsed = _parse_meta(magic, meta)
        if parsed is None:
            return
        damaged = False
        if verify:
            crc = _values_crc(fh, val_len)
            if crc is None:  # the file was cut after its size was taken
                return
            damaged = crc != val_crc
        yield _Meta(pos, meta_crc, parsed[0], parsed[1], parsed[2], parsed[3], parsed[4],
                    values_at, val_len, val_crc, _COLUMNAR[magic], damaged)
        pos = values_at + val_len
        limit -= 1


def _frame(path: Path, number: int, m: _Meta, ids: IdsFrom, done: bool = True) -> Frame:
    """The frame's index entry; ``done=False`` leaves its done ids out (empty), for readers of
    its errors alone: a frame of a million rows then costs no million-id array."""
    return Frame(path, number, m.pos, ids_from_runs(ids, m.done_pairs if done else b""),
                 ids_from_runs(ids, m.err_pairs), m.errors_json, m.meta_crc, m.values_at,
                 m.values_length, m.values_crc, m.columnar, m.damaged)


class RecordReader:
    """Indexes one record file incrementally: each call reads only what was appended since.

    Parameters
    ----------
    path : path-like
        The record file (it need not exist yet).
    ids : callable, optional
        Turns a buffer of little-endian int64 row ids into an array: :func:`numpy_ids`
        (default) or :func:`array_ids`.
    verify : bool, default True
        Check each new frame's values against their CRC (reads them once); False reads heads
        and metas only, and no frame is found damaged.

    Attributes
    ----------
    offset : int
        End of the last accepted frame: where the next read starts.
    frames : int
        Number of frames accepted so far (the next frame's number).
    """

    def __init__(self, path: "os.PathLike[str] | str", ids: IdsFrom = numpy_ids,
                 verify: bool = True) -> None:
        self.path = Path(path)
        self.offset = 0
        self.frames = 0
        self._ids = ids
        self._verify = verify

    def _open(self) -> Optional[BinaryIO]:
        try:
            return open(self.path, "rb", buffering=_READ_BUFFER)
        except FileNotFoundError:
            return None

    def read_new(self) -> List[Frame]:
        """Index the frames completed since the last call (heads and metas only).

        Returns
        -------
        list of Frame
            In file order; empty if nothing new is complete (or the file does not exist).
        """
        out: List[Frame] = []
        fh = self._open()
        if fh is None:
            return out
        with fh:
            for m in _metas(fh, self.offset, os.fstat(fh.fileno()).st_size, verify=self._verify):
                out.append(_frame(self.path, self.frames, m, self._ids))
                self.offset = m.values_at + m.values_length
                self.frames += 1
        return out

    def read_new_batch(self) -> Batch:
        """Like :meth:`read_new`, as columns: what a big job's status reads, cheaply."""
        starts, crcs, n_done, n_err = array("q"), array("q"), array("q"), array("q")
        r_done, r_err, by_column = array("q"), array("q"), array("b")
        bad, r_bad = array("q"), array("q")
        done: List[bytes] = []
        err: List[bytes] = []
        bad_pairs: List[bytes] = []
        first = self.frames
        fh = self._open()
        if fh is not None:
            with fh:
                size = os.fstat(fh.fileno()).st_size
                for m in _metas(fh, self.offset, size, verify=self._verify):
                    if m.damaged:
                        bad.append(first + len(starts))
                        bad_pairs.append(m.done_pairs)
                        r_bad.append(len(m.done_pairs) // PAIR_SIZE)
                    else:
                        done.append(m.done_pairs)
                    if m.err_pairs:
                        err.append(m.err_pairs)
                    starts.append(m.pos)
                    crcs.append(m.meta_crc)
                    n_done.append(0 if m.damaged else m.n_done)
                    n_err.append(m.n_err)
                    r_done.append(0 if m.damaged else len(m.done_pairs) // PAIR_SIZE)
                    r_err.append(len(m.err_pairs) // PAIR_SIZE)
                    by_column.append(m.columnar)
                    self.offset = m.values_at + m.values_length
            self.frames += len(starts)
        return Batch(first, starts, crcs, n_done, n_err, b"".join(done), b"".join(err), r_done,
                     r_err, by_column, bad, b"".join(bad_pairs), r_bad)


class RecordFile:
    """A record file opened to read again frames a reader found (output, error details).

    Use as a context manager; frames are best read in increasing offset order.

    Raises
    ------
    JobDirError
        If the file is gone.
    """

    def __init__(self, path: "os.PathLike[str] | str") -> None:
        self.path = Path(path)
        try:
            self._fh = open(self.path, "rb", buffering=_READ_BUFFER)
        except FileNotFoundError:
            raise JobDirError(f"{self.path} is gone since it was read (was the job directory "
                              "removed or replaced?)") from None
        self._size = os.fstat(self._fh.fileno()).st_size

    def __enter__(self) -> "RecordFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._fh.close()

    def frame(self, offset: int, number: int, ids: IdsFrom = numpy_ids, done: bool = True) -> Frame:
        """The frame starting at ``offset``; JobDirError if there is no valid frame there.
        ``done=False``: without its done ids (see ``_frame``)."""
        # Not verified again: the values are checked as they are read (``read_values``).
        found = list(_metas(self._fh, offset, self._size, limit=1, verify=False))
        if not found:
            raise JobDirError(f"{self.path} changed since it was read: no valid record frame at "
                              f"byte {offset} any more (was the job directory replaced?)")
        return _frame(self.path, number, found[0], ids, done)

    def values(self, frame: Frame) -> List[Any]:
        """:func:`read_values` through this open file."""
        return read_values(frame, self._fh)

    def columns(self, frame: Frame) -> Columns:
        """:func:`read_columns` through this open file."""
        return read_columns(frame, self._fh)


def open_for_append(path: "os.PathLike[str] | str") -> BinaryIO:
    """Open a record file to add frames, first cutting off a torn tail left by a killed writer.

    Only what no reader can have accepted is cut (the rule of :class:`RecordReader`), so frame
    numbers that a reader has already seen keep their meaning. The file object's ``frames``
    is the number the next frame will have.
    """
    reader = RecordReader(path, verify=False)  # it looks for the torn tail only
    reader.read_new_batch()  # no ids function is called: NumPy stays unloaded on the node
    good = reader.offset
    fh = os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")
    if fh.tell() != good:
        fh.truncate(good)
        fh.seek(good)
    fh.frames = reader.frames  # type: ignore[attr-defined]
    return fh


def parse_name(name: str) -> Optional[Tuple[int, int]]:
    """``t0003_p01.rec`` -> (task 3, process 1); anything else -> None."""
    m = _NAME.fullmatch(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


# -- what a frame holds beyond its row ids: its errors and its values ---------------------------
# Values are unpickled here only, one frame at a time, for output; status reads errors alone.


class DamagedFrame(JobDirError):
    """A frame's values failed their CRC when read for output, though its reader had checked
    them when it indexed the frame: the file changed on disk since. Whoever holds that index
    reads the records again (checking every frame), after which the frame is known damaged."""

    def __init__(self, message: str, path: Path, number: int) -> None:
        super().__init__(message)
        self.path, self.number = path, number


def parse_errors(frame: Frame, earlier: Optional[errtab.Earlier] = None) -> Dict[int, ErrorInfo]:
    """{row: (type, message, traceback)} of a frame's rows that raised.

    ``earlier(n)`` gives the table of stacks of frame ``n`` of the same file, which this
    frame's errors may refer to; by default the file is read again to find it.
    """
    info = errtab.decode(frame.errors_json, earlier or _stacks_in(frame.path))
    return dict(zip((int(r) for r in frame.err), info))


def _stacks_in(path: Path) -> errtab.Earlier:
    """Reads the file once, on the first reference, and keeps every frame's table of stacks."""
    tables: Dict[int, List[str]] = {}

    def earlier(number: int) -> List[str]:
        if number not in tables:
            reader = RecordReader(path, ids=array_ids, verify=False)  # errors only
            for frames in iter(reader.read_new, []):
                tables.update((f.number, errtab.stacks(f.errors_json)) for f in frames)
        if number not in tables:
            raise JobDirError(f"{path}: an error refers to record frame {number}, which is "
                              "not there (was the file cut or replaced?)")
        return tables[number]
    return earlier


def read_values(frame: Frame, fh: Optional[BinaryIO] = None) -> List[Any]:
    """The values of a frame's done rows, aligned with ``frame.done``; the only unpickling here,
    with :func:`read_columns`. ``fh``, if given, is the frame's file open for reading.

    Raises
    ------
    JobDirError
        If the values part is missing or fails its checksum.
    ResultsError
        If the values cannot be unpickled in this Python (say, the module of a returned
        object is not importable here); the pickle error is the ``__cause__``.
    """
    values = _unpickle(frame, fh)
    if frame.columnar:
        values = decode_columns(values)
    if len(values) != len(frame.done):
        raise JobDirError(f"{frame.path}: record frame {frame.number} has {len(frame.done)} "
                          f"row ids but {len(values)} values")
    return values


def read_columns(frame: Frame, fh: Optional[BinaryIO] = None) -> Columns:
    """(keys, tags, columns) of a frame whose values are stored by column; errors as
    :func:`read_values`."""
    keys, tags, cols = _unpickle(frame, fh)
    if not frame.columnar or any(len(c) != len(frame.done) for c in cols):
        raise JobDirError(f"{frame.path}: record frame {frame.number} does not hold "
                          f"{len(frame.done)} values by column")
    return keys, tags, cols


def _unpickle(frame: Frame, fh: Optional[BinaryIO]) -> Any:
    if fh is None:
        with open(frame.path, "rb") as own:
            own.seek(frame.values_offset)
            data = own.read(frame.values_length)
    else:
        fh.seek(frame.values_offset)
        data = fh.read(frame.values_length)
    if len(data) != frame.values_length or zlib.crc32(data) != frame.values_crc:
        raise DamagedFrame(f"{frame.path}: the values of record frame {frame.number} are damaged "
                           "(they fail their checksum); its rows can be run again with resubmit()",
                           frame.path, frame.number)
    try:
        return pickle.loads(data)
    except Exception as exc:
        first = int(frame.done[0]) if len(frame.done) else -1
        raise ResultsError(
            f"the values returned by {len(frame.done)} row(s) (from row {first}; {frame.path}, "
            f"frame {frame.number}) cannot be unpickled in this Python: {type(exc).__name__}: "
            f"{exc}. Load them where the nodes' environment is importable (same packages and "
            "PYTHONPATH).", rows=[int(r) for r in frame.done]) from exc
