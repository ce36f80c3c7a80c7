"""A submission's rows in ``s<k>/params.bin``: pickled chunks behind an index of offsets, so a
task reads only the chunks it runs and never the whole table. How rows are cut into chunks, and
how a chunk is decoded, live here too (``table.encode_chunks`` encodes them)."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from typing import Any, List, Sequence, Tuple

from .._errors import JobDirError
from .layout import atomic_open


_PARAMS_MAGIC = b"SAPARAM1"


def write_params_bin(path: Path, chunks: Sequence[bytes]) -> None:
    offsets: List[Tuple[int, int]] = []
    pos = 0
    for blob in chunks:
        offsets.append((pos, len(blob)))
        pos += len(blob)
    index = pickle.dumps(offsets, protocol=pickle.HIGHEST_PROTOCOL)
    with atomic_open(path) as fh:
        fh.write(_PARAMS_MAGIC + struct.pack("<Q", len(index)))
        fh.write(index)
        for blob in chunks:
            fh.write(blob)


class ParamsReader:
    """Random access to the chunks of a ``params.bin``."""

    def __init__(self, path: Path) -> None:
        self._fh = open(path, "rb")
        head = self._fh.read(16)
        if head[:8] != _PARAMS_MAGIC:
            raise JobDirError(f"{path} is not a slurm_apply parameter file")
        (n,) = struct.unpack("<Q", head[8:])
        self.offsets: List[Tuple[int, int]] = pickle.loads(self._fh.read(n))
        self._base = 16 + n

    def __len__(self) -> int:
        return len(self.offsets)

    def chunk(self, i: int) -> Any:
        off, size = self.offsets[i]
        self._fh.seek(self._base + off)
        return pickle.loads(self._fh.read(size))

    def close(self) -> None:
        self._fh.close()



def chunk_bounds(n_rows: int, n_chunks: int) -> List[Tuple[int, int]]:
    """Split positions 0..n_rows into n_chunks contiguous, nearly equal ranges."""
    base, extra = divmod(n_rows, n_chunks)
    out = []
    start = 0
    for c in range(n_chunks):
        stop = start + base + (1 if c < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def decode_chunk(blob: Any) -> Tuple[List[int], List[str], List[Sequence[Any]]]:
    """A chunk as (row indices, column names, column values as plain Python lists)."""
    rows = blob["rows"]
    if isinstance(rows, tuple):
        rows = list(range(rows[0], rows[1]))
    cols = [c.tolist() if hasattr(c, "tolist") else c for c in blob["data"]]
    return rows, blob["columns"], cols
