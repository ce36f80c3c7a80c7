"""Writing an output table to a file whose suffix says the format, atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from .._errors import InputError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".pkl": "pickle", ".pickle": "pickle",
           ".parquet": "parquet", ".pq": "parquet"}
# Compression pandas infers from the file name, for the text and pickle formats.
COMPRESSIONS = (".gz", ".bz2", ".xz")


def format_of(path: Path) -> str:
    """The format a file name's suffix names (csv, tsv, pickle or parquet)."""
    suffixes = [s.lower() for s in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in COMPRESSIONS and FORMATS.get(suffixes[-2]) != "parquet":
        suffixes.pop()
    fmt = FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise InputError(
            f"cannot tell the format of {str(path)!r} from its suffix; use one of "
            f"{', '.join(sorted(FORMATS))} (a .csv, .tsv or .pkl may end in {', '.join(COMPRESSIONS)})",
            argument="path")
    if fmt == "parquet" and not have_pyarrow():
        raise InputError("writing Parquet needs pyarrow, which is not installed here: `pip install pyarrow`, "
                         "or write .csv or .pkl instead.")
    return fmt


def have_pyarrow() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyarrow") is not None


def keeps_index(table: Any) -> bool:
    """Write the index only when it says something (not the default 0..n-1)."""
    import pandas as pd

    idx = table.index
    default = isinstance(idx, pd.RangeIndex) and idx.start == 0 and idx.step == 1 and idx.name is None
    return not default


def write_table(table: Any, path: Path, fmt: str) -> None:
    """Write under a temporary name beside ``path``, then rename: a reader never sees half."""
    directory = path.parent if str(path.parent) else Path(".")
    # The temporary name ends with the real one, so pandas infers the same compression.
    fd, tmp = tempfile.mkstemp(prefix=".", suffix="." + path.name, dir=directory)
    os.close(fd)
    try:
        if fmt == "csv":
            table.to_csv(tmp, index=keeps_index(table))
        elif fmt == "tsv":
            table.to_csv(tmp, sep="\t", index=keeps_index(table))
        elif fmt == "pickle":
            table.to_pickle(tmp)
        else:
            try:
                table.to_parquet(tmp, engine="pyarrow")
            except Exception as exc:  # pyarrow's own error types; the message says which column
                raise InputError(
                    f"could not write Parquet: {type(exc).__name__}: {exc}. Parquet needs one type "
                    "per column and string column names; .pkl keeps any Python object.") from exc
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it private; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
