"""What a record frame holds beyond its row ids: its errors and its values (``records.py``).

Values are unpickled here only, one frame at a time, for output; status reads errors alone.
"""

from __future__ import annotations

import pickle
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Dict, List, Optional

from .._errors import JobDirError, ResultsError
from . import errtab
from .columns import Columns, decode as decode_columns
from .records import ErrorInfo, Frame, RecordReader
from .rowruns import array_ids


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
    def earlier(number: int) -> List[str]:
        reader = RecordReader(path, ids=array_ids, verify=False)  # errors only
        while reader.frames <= number:
            frames = reader.read_new()
            if not frames:
                raise JobDirError(f"{path}: an error refers to record frame {number}, which is "
                                  "not there (was the file cut or replaced?)")
            for f in frames:
                if f.number == number:
                    return errtab.stacks(f.errors_json)
        raise AssertionError("unreachable")
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
