"""A submission's rows in chunks: ``s<k>/params.bin`` (its path: ``layout.params_bin``).

One file per submission, an index of offsets up front, so a worker reads only the chunks it
takes (a task never loads the whole table).
"""

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
