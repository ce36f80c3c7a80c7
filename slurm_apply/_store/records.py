"""Result records, format 2: one append-only file per task process, a frame per batch of rows.

A frame is::

    head   magic b"SAR2" (values by row) or b"SAC2" (by column) | meta length (u64) |
           values length (u64) | CRC32 of meta (u32) | CRC32 of values (u32)  (LE, 28 bytes)
    meta   n_done (u32) | n_err (u32) | done row ids (int64 LE, n_done) |
           error row ids (int64 LE, n_err) | errors: UTF-8 JSON list, aligned with the error
           ids, of [exception type, message, traceback text]
    values pickle of the list of returned values, aligned with the done ids; or, in a b"SAC2"
           frame, of (keys, tags, columns) when the rows returned numbers (or strings) of one
           shape (see ``columns.py``): one array per column, no Python object per value

Row ids and errors sit in the meta, apart from the values, so the login side learns which rows
finished or failed by reading heads and metas and seeking over the values: status never
unpickles a result (cheap on big jobs, and it works where the module of a result cannot be
imported). Values are unpickled only by :func:`read_values`, for output.

A frame is accepted when its head is sane, its meta matches its CRC and its whole values part
is on disk. A writer killed half-way leaves a torn last frame: readers stop there and take it up
again once it is complete, and :func:`open_for_append` cuts it off before a requeued process
appends. The same rule serves both, so a writer never cuts a frame a reader has accepted.

The node imports this module, so it must not import NumPy at module level: ids are converted by
a function the caller chooses (:func:`numpy_ids` on the login side, :func:`array_ids` on nodes).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import sys
import zlib
from array import array
from pathlib import Path
from typing import (Any, BinaryIO, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional,
                    Sequence, Tuple)

from .._errors import JobDirError, ResultsError
from .columns import Columns, decode as decode_columns, encode as encode_columns

MAGIC, MAGIC_COLUMNS = b"SAR2", b"SAC2"
HEAD = struct.Struct("<4sQQII")
COUNTS = struct.Struct("<II")
ID_SIZE = 8
# Reads go through a buffer this big, so the heads and metas of small frames cost no system call
# each (a seek inside the buffer moves a pointer); a big values part is skipped with one lseek.
_READ_BUFFER = 1 << 16
_NAME = re.compile(r"t(\d+)_p(\d+)\.rec")

ErrorInfo = Tuple[str, str, str]  # (exception type, message, traceback text)
IdsFrom = Callable[[memoryview], Any]  # little-endian int64 ids -> an array


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


def numpy_ids(buf: "memoryview | bytes") -> Any:
    """Row ids as a read-only NumPy int64 array over ``buf`` (no copy)."""
    import numpy as np

    return np.frombuffer(buf, dtype="<i8")


def array_ids(buf: "memoryview | bytes") -> "array[int]":
    """Row ids as an ``array.array('q')``: what the node uses, without NumPy."""
    out = array("q")
    out.frombytes(buf)
    if sys.byteorder == "big":
        out.byteswap()
    return out


def dumps(obj: Any) -> bytes:
    """Pickle with the standard pickler, falling back to cloudpickle (lambdas and the like)."""
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        import cloudpickle

        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _id_bytes(rows: Sequence[int]) -> bytes:
    ids = array("q", rows)
    if sys.byteorder == "big":
        ids.byteswap()
    return ids.tobytes()


def encode_frame(done_rows: Sequence[int], values: Sequence[Any],
                 errors: Mapping[int, ErrorInfo]) -> bytes:
    """One frame, to be appended with a single write, recording ``done_rows`` (aligned with
    the ``values`` they returned; stored by column when they have one shape) and ``errors``,
    {row: (type, message, traceback)} of rows that raised.

    Raises
    ------
    Exception
        Whatever pickling raised when a value cannot be pickled even by cloudpickle; the
        caller decides what to do with such rows.
    """
    if len(done_rows) != len(values):
        raise ValueError(f"{len(done_rows)} rows but {len(values)} values")
    err_rows = list(errors)
    info = [list(errors[r]) for r in err_rows]
    # ASCII-only JSON: a message holding a lone surrogate still encodes, and reads back equal.
    meta = b"".join((COUNTS.pack(len(done_rows), len(err_rows)), _id_bytes(done_rows),
                     _id_bytes(err_rows), json.dumps(info, separators=(",", ":")).encode()))
    cols = encode_columns(values)
    if cols is None:
        vals, magic = dumps(values if isinstance(values, list) else list(values)), MAGIC
    else:
        vals, magic = pickle.dumps(cols, protocol=pickle.HIGHEST_PROTOCOL), MAGIC_COLUMNS
    head = HEAD.pack(magic, len(meta), len(vals), zlib.crc32(meta), zlib.crc32(vals))
    return b"".join((head, meta, vals))


class Batch(NamedTuple):
    """The index of a run of new frames of one file, column by column: no object per frame.

    Row ids are int64 little-endian bytes, frame after frame (done ids of frame k are the
    ``n_done[k]`` ids after those of frames before it); the arrays are ``array('q')``.
    """

    first: int  # number of the first frame
    starts: "array[int]"  # where each frame starts
    meta_crcs: "array[int]"
    n_done: "array[int]"
    n_err: "array[int]"
    done: bytes
    err: bytes
    columnar: "array[int]"  # 1 where the frame's values are stored by column


_Meta = Tuple[int, bytes, int, int, int, int, int, int, bool]


def _metas(fh: BinaryIO, pos: int, size: int, limit: int = -1) -> Iterator[_Meta]:
    """(start, meta, meta CRC, n_done, n_err, values offset, values length, values CRC, by
    column) of each accepted frame from ``pos`` up to ``size``, reading heads and metas only."""
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
        if magic not in (MAGIC, MAGIC_COLUMNS) or meta_len < COUNTS.size or values_at + val_len > size:
            return  # torn (still being written, or cut by a kill) or not a frame at all
        meta = read(meta_len)
        if len(meta) != meta_len or crc32(meta) != meta_crc:
            return
        n_done, n_err = COUNTS.unpack_from(meta)
        if COUNTS.size + ID_SIZE * (n_done + n_err) > meta_len:
            return
        yield pos, meta, meta_crc, n_done, n_err, values_at, val_len, val_crc, magic == MAGIC_COLUMNS
        pos = values_at + val_len
        limit -= 1


def _frame(path: Path, number: int, m: _Meta, ids: IdsFrom) -> Frame:
    pos, meta, meta_crc, n_done, n_err, values_at, val_len, val_crc, by_column = m
    mid = COUNTS.size + ID_SIZE * n_done
    end = mid + ID_SIZE * n_err
    view = memoryview(meta)
    return Frame(path, number, pos, ids(view[COUNTS.size:mid]), ids(view[mid:end]), meta[end:],
                 meta_crc, values_at, val_len, val_crc, by_column)


class RecordReader:
    """Indexes one record file incrementally: each call reads only what was appended since.

    Parameters
    ----------
    path : path-like
        The record file (it need not exist yet).
    ids : callable, optional
        Turns a buffer of little-endian int64 row ids into an array: :func:`numpy_ids`
        (default) or :func:`array_ids`.

    Attributes
    ----------
    offset : int
        End of the last accepted frame: where the next read starts.
    frames : int
        Number of frames accepted so far (the next frame's number).
    """

    def __init__(self, path: "os.PathLike[str] | str", ids: IdsFrom = numpy_ids) -> None:
        self.path = Path(path)
        self.offset = 0
        self.frames = 0
        self._ids = ids

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
            for m in _metas(fh, self.offset, os.fstat(fh.fileno()).st_size):
                out.append(_frame(self.path, self.frames, m, self._ids))
                self.offset = m[5] + m[6]
                self.frames += 1
        return out

    def read_new_batch(self) -> Batch:
        """Like :meth:`read_new`, as columns: what a big job's status reads, cheaply."""
        starts, crcs, n_done, n_err, by_column = array("q"), array("q"), array("q"), array("q"), array("b")
        done: List[bytes] = []
        err: List[bytes] = []
        first = self.frames
        fh = self._open()
        if fh is not None:
            with fh:
                for pos, meta, meta_crc, nd, ne, values_at, val_len, _, cols in _metas(
                        fh, self.offset, os.fstat(fh.fileno()).st_size):
                    mid = COUNTS.size + ID_SIZE * nd
                    done.append(meta[COUNTS.size:mid])
                    if ne:
                        err.append(meta[mid:mid + ID_SIZE * ne])
                    starts.append(pos)
                    crcs.append(meta_crc)
                    n_done.append(nd)
                    n_err.append(ne)
                    by_column.append(cols)
                    self.offset = values_at + val_len
            self.frames += len(starts)
        return Batch(first, starts, crcs, n_done, n_err, b"".join(done), b"".join(err), by_column)


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

    def frame(self, offset: int, number: int, ids: IdsFrom = numpy_ids) -> Frame:
        """The frame starting at ``offset``; JobDirError if there is no valid frame there."""
        found = list(_metas(self._fh, offset, self._size, limit=1))
        if not found:
            raise JobDirError(f"{self.path} changed since it was read: no valid record frame at "
                              f"byte {offset} any more (was the job directory replaced?)")
        return _frame(self.path, number, found[0], ids)

    def values(self, frame: Frame) -> List[Any]:
        """:func:`read_values` through this open file."""
        return read_values(frame, self._fh)

    def columns(self, frame: Frame) -> Columns:
        """:func:`read_columns` through this open file."""
        return read_columns(frame, self._fh)


def parse_errors(frame: Frame) -> Dict[int, ErrorInfo]:
    """{row: (type, message, traceback)} of a frame's rows that raised."""
    info = json.loads(frame.errors_json)
    return {int(r): (str(t), str(m), str(tb)) for r, (t, m, tb) in zip(frame.err, info)}


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
        raise JobDirError(f"{frame.path}: the values of record frame {frame.number} are corrupt "
                          "(checksum mismatch); its rows can be run again with resubmit()")
    try:
        return pickle.loads(data)
    except Exception as exc:
        first = int(frame.done[0]) if len(frame.done) else -1
        raise ResultsError(
            f"the values returned by {len(frame.done)} row(s) (from row {first}; {frame.path}, "
            f"frame {frame.number}) cannot be unpickled in this Python: {type(exc).__name__}: "
            f"{exc}. Load them where the nodes' environment is importable (same packages and "
            "PYTHONPATH).", rows=[int(r) for r in frame.done]) from exc


def open_for_append(path: "os.PathLike[str] | str") -> BinaryIO:
    """Open a record file to add frames, first cutting off a torn tail left by a killed writer.

    Only what no reader can have accepted is cut (the rule of :class:`RecordReader`), so frame
    numbers that a reader has already seen keep their meaning.
    """
    reader = RecordReader(path)
    reader.read_new_batch()  # no ids function is called: NumPy stays unloaded on the node
    good = reader.offset
    fh = os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")
    if fh.tell() != good:
        fh.truncate(good)
        fh.seek(good)
    return fh


def parse_name(name: str) -> Optional[Tuple[int, int]]:
    """``t0003_p01.rec`` -> (task 3, process 1); anything else -> None."""
    m = _NAME.fullmatch(name)
    return (int(m.group(1)), int(m.group(2))) if m else None
