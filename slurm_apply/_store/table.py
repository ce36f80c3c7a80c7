"""The caller's table, stored once: its rows are the first submission's chunks (``s0/params.bin``,
which the nodes read), and ``params_meta.pkl`` holds only what those chunks cannot give back.

The chunks carry each column either as raw numbers (``array.array``) or as a list of Python
values (``encode_chunks``). The table is rebuilt from them column by column:

    array   numbers, back into an array of the column's own dtype (byte order included);
    values  a list of values, turned back into the column's dtype by pandas: object, bool,
            complex, float16, datetimes (with or without a time zone), durations, periods,
            categoricals (categories and order from the meta), strings, nullable ints and
            bools. Each of these comes back exactly from the values its ``tolist()`` gives;
    kept    any other dtype (e.g. nullable floats, whose NaN and NA the values do not tell
            apart, or long doubles, which Python floats round): the column itself, in the meta.

The meta also holds the column labels (with their name) and the table's ``attrs``; the index is
``index.pkl``. A directory of format 2 has the whole table in ``params.pkl`` instead, and is read
from it.

Rows added by ``extend()`` are the chunks of the submission that runs them (the manifest's
``table_parts``), encoded the same way after being cast to the table's dtypes (``conform``); the
meta's kept columns and the index grow with them (``append``). The manifest's ``n_rows`` says
how many rows the table has: what the index or the meta hold beyond it (an extension that did
not finish) is not read.
"""

from __future__ import annotations

import array
import bisect
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from .._errors import JobDirError
from . import layout as jd
from .params import ParamsReader, chunk_bounds, decode_chunk
from .records import dumps
from .._errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from .manifest import Manifest

TYPECODES = {("i", 1): "b", ("i", 2): "h", ("i", 4): "i", ("i", 8): "q",
             ("u", 1): "B", ("u", 2): "H", ("u", 4): "I", ("u", 8): "Q",
             ("f", 4): "f", ("f", 8): "d"}
_NUMPY_BY_VALUES = ("b", "O", "M", "m")  # kinds whose values give the column back
_EXACT_BY_VALUES = ("float16", "complex64", "complex128")
_MASKED_BY_VALUES = {"Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64",
                     "boolean"}


def typecode(dtype: Any) -> Any:
    """The ``array.array`` type code a column of this dtype travels as, or None (as values)."""
    import numpy as np

    if not isinstance(dtype, np.dtype):
        return None
    code = TYPECODES.get((dtype.kind, dtype.itemsize))
    return code if code is not None and array.array(code).itemsize == dtype.itemsize else None


def _by_values(dtype: Any) -> bool:
    import numpy as np
    import pandas as pd

    if isinstance(dtype, np.dtype):
        return dtype.kind in _NUMPY_BY_VALUES or dtype.name in _EXACT_BY_VALUES
    if isinstance(dtype, (pd.CategoricalDtype, pd.DatetimeTZDtype, pd.PeriodDtype, pd.StringDtype)):
        return True
    return dtype.name in _MASKED_BY_VALUES


def describe_columns(df: "pd.DataFrame") -> List[Tuple[str, Any]]:
    """How each column comes back: ("array", dtype), ("values", dtype) or ("kept", column)."""
    out: List[Tuple[str, Any]] = []
    for i in range(df.shape[1]):
        col = df.iloc[:, i]
        if typecode(col.dtype) is not None:
            out.append(("array", col.dtype))
        elif _by_values(col.dtype):
            out.append(("values", col.dtype))
        else:
            out.append(("kept", col.reset_index(drop=True)))
    return out


def write(job_dir: Path, df: "pd.DataFrame") -> None:
    """Write what the chunks of ``s0/params.bin`` cannot give back of ``df`` (and its index)."""
    meta = {"columns": df.columns, "attrs": dict(df.attrs), "how": describe_columns(df)}
    with jd.atomic_open(job_dir / jd.PARAMS_META) as fh:
        pickle.dump(meta, fh, protocol=pickle.HIGHEST_PROTOCOL)
    jd.write_index(job_dir, df.index)


def _read_meta(job_dir: Path) -> Dict[str, Any]:
    try:
        with open(job_dir / jd.PARAMS_META, "rb") as fh:
            meta = pickle.load(fh)
        meta["columns"], meta["how"]  # noqa: B018 (present, or the file is not ours)
        return meta
    except FileNotFoundError:
        raise JobDirError(f"{job_dir} has neither {jd.PARAMS_META} nor {jd.PARAMS}: its parameter "
                          "table is gone") from None
    except Exception as exc:
        raise JobDirError(f"{job_dir / jd.PARAMS_META} is damaged ({type(exc).__name__}: {exc}); "
                          "the parameter table cannot be rebuilt") from None


def read(job_dir: Path, manifest: Optional["Manifest"] = None) -> "pd.DataFrame":
    """The caller's table, as it was given (columns, dtypes, index, attrs), with the rows
    extend() added after it: the ``n_rows`` rows of ``manifest`` (read when not given)."""
    import pandas as pd

    if (job_dir / jd.PARAMS).exists():
        return pd.read_pickle(job_dir / jd.PARAMS)
    manifest = manifest if manifest is not None else jd.load_manifest(job_dir)
    n = manifest.n_rows
    meta = _read_meta(job_dir)
    how, index = meta["how"], jd.read_index(job_dir)[:n]
    columns = _Filler(how, n)
    for sub, _, _ in manifest.table_parts():
        reader = ParamsReader(jd.params_bin(job_dir, sub))
        try:
            for c in range(len(reader)):
                blob = reader.chunk(c)
                columns.put(blob["rows"], blob["data"])
        finally:
            reader.close()
    df = pd.DataFrame({i: columns.series(i, n) for i in range(len(how))}, copy=False)
    df.columns = meta["columns"]
    df.index = index
    df.attrs.update(meta["attrs"])
    return df


class _Filler:
    """One array per column, filled chunk by chunk (a chunk's pieces are dropped as they go)."""

    def __init__(self, how: List[Tuple[str, Any]], n: int) -> None:
        import numpy as np

        self.how = how
        self.out: List[Any] = []
        for kind, what in how:
            if kind == "array":
                self.out.append(np.empty(n, dtype=what.newbyteorder("=")))
            elif kind == "values":
                self.out.append(np.empty(n, dtype=object))
            else:
                self.out.append(None)

    def put(self, rows: Tuple[int, int], data: List[Any]) -> None:
        import numpy as np

        start, stop = rows
        for out, piece in zip(self.out, data):
            if out is None:
                continue
            if out.dtype == object:  # each value whole (a list stays a list)
                out[start:stop] = _object_array(piece, stop - start)
            else:
                out[start:stop] = np.frombuffer(piece, dtype=out.dtype)

    def series(self, i: int, n: int) -> "pd.Series":
        import pandas as pd

        kind, what = self.how[i]
        if kind == "kept":
            return what.iloc[:n]
        values = self.out[i]
        if kind == "array":
            return pd.Series(values.astype(what, copy=False), copy=False)
        if isinstance(what, pd.CategoricalDtype):
            return pd.Series(pd.Categorical(values, dtype=what), copy=False)
        return pd.Series(values, dtype=what, copy=False)


def row_kwargs(job_dir: Path, manifest: "Manifest", position: int) -> Dict[str, Any]:
    """One row's arguments as the node passes them, read from its chunk of ``s0/params.bin``
    (or of the submission that added it, for a row extend() added)."""
    sub, first, end = next(p for p in manifest.table_parts() if p[1] <= position < p[2])
    reader = ParamsReader(jd.params_bin(job_dir, sub))
    try:
        starts = [first + a for a, _ in chunk_bounds(end - first, len(reader))]
        rows, names, cols = decode_chunk(reader.chunk(bisect.bisect_right(starts, position) - 1))
    finally:
        reader.close()
    at = rows.index(position)
    return {name: col[at] for name, col in zip(names, cols)}


def _column_arrays(df: "pd.DataFrame") -> List[Any]:
    """Each column in the form that is fastest to slice, pickle and read back on the node.

    Plain numeric columns become the standard library's ``array.array`` (a copy of NumPy's
    buffer, pickled as raw bytes, turned into Python numbers with ``tolist()`` on the node
    without importing NumPy there); anything else becomes a list of Python objects.
    """
    import array

    import numpy as np

    out: List[Any] = []
    for i in range(df.shape[1]):
        col = df.iloc[:, i]
        dtype = col.dtype
        code = typecode(dtype)
        if code is not None:
            values = np.ascontiguousarray(col.to_numpy(), dtype=dtype.newbyteorder("="))
            out.append(array.array(code, values.tobytes()))
        else:
            out.append(col.tolist())
    return out


def encode_chunks(df: "pd.DataFrame", rows: Optional[Sequence[int]], n_chunks: int,
                  first: int = 0) -> List[bytes]:
    """The rows of a submission as pickled chunks. ``rows`` None means all rows, in order, the
    first being row ``first`` of the job (not 0 for the rows extend() adds)."""
    if rows is not None:
        df = df.iloc[list(rows)]
    columns = [str(c) for c in df.columns]
    arrays = _column_arrays(df)
    blobs = []
    for start, stop in chunk_bounds(len(df), n_chunks):
        chunk_rows: Any = ((first + start, first + stop) if rows is None
                           else [int(r) for r in rows[start:stop]])
        blob = {"rows": chunk_rows, "columns": columns, "data": [a[start:stop] for a in arrays]}
        blobs.append(dumps(blob))
    return blobs


def _object_array(values: Any, n: int) -> Any:
    """A 1-d object array of these values, each kept whole. NumPy 1.23 and later build it with
    ``fromiter``; older NumPy cannot make object arrays from an iterator, so fill one in a loop."""
    import numpy as np

    try:
        return np.fromiter(values, dtype=object, count=n)
    except ValueError:  # NumPy < 1.23: "cannot create object arrays from iterator"
        out = np.empty(n, dtype=object)
        for i, value in enumerate(values):
            out[i] = value
        return out


def conform(job_dir: Path, df: "pd.DataFrame") -> "pd.DataFrame":
    """Rows to add to the table (``extend()``) as its columns, in its order, of its dtypes.

    Each column must have the table's dtype, or one that converts to it without changing a
    value (int32 to int64, int to float, strings to a categorical that has them...); a column
    of the table's ``object`` dtype takes anything. Raises :class:`InputError` naming every
    column that differs, what was expected and what came. Reads only the meta, never the table.
    """
    meta = _read_meta(job_dir)
    columns, how = meta["columns"], meta["how"]
    if df.columns.has_duplicates:
        dup = sorted({repr(c) for c in df.columns[df.columns.duplicated()]})
        raise InputError(f"new_rows has more than one column named {', '.join(dup)}; the job's "
                         f"columns are {list(columns)}", argument="new_rows")
    missing = [c for c in columns if c not in df.columns]
    extra = [c for c in df.columns if c not in columns]
    if missing or extra:
        said = "; ".join(x for x in (f"missing {missing}" if missing else "",
                                     f"not the job's {extra}" if extra else "") if x)
        raise InputError(f"new_rows must have the job's columns, {list(columns)} (f takes them as "
                         f"arguments); got {list(df.columns)}: {said}", argument="new_rows")
    df = df.loc[:, columns]
    out, bad = {}, []
    for i, (kind, what) in enumerate(how):
        col = df.iloc[:, i]
        want = what.dtype if kind == "kept" else what
        cast = _cast(col, want)
        if cast is None:
            bad.append((columns[i], want, col.dtype))
        else:
            out[i] = cast.reset_index(drop=True)
    if bad:
        listed = "; ".join(f"{c!r}: the job's rows have {w}, new_rows {h}" for c, w, h in bad)
        hint = ", ".join(f"{c!r}: {str(w)!r}" for c, w, _ in bad)
        raise InputError(
            f"new_rows' columns must have the job's dtypes, or dtypes that convert to them without "
            f"changing a value; {listed}. Convert them (new_rows.astype({{{hint}}})) after checking "
            "the values survive it", argument="new_rows")
    import pandas as pd

    conformed = pd.DataFrame(out, copy=False)
    conformed.columns = columns
    conformed.index = df.index
    return conformed


def _cast(col: "pd.Series", want: Any) -> Optional["pd.Series"]:
    """``col`` as dtype ``want`` if that changes no value (it converts back to what it was)."""
    import warnings

    import numpy as np

    have = col.dtype
    if have == want:
        return col
    if isinstance(want, np.dtype) and want.kind == "O":
        return col.astype(object)
    if isinstance(have, np.dtype) and isinstance(want, np.dtype) and (have.kind == "b") != (want.kind == "b"):
        return None  # True is 1, but a flag is not a count: say so rather than convert
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cast = col.astype(want)
            back = cast.astype(have)
    except (TypeError, ValueError, OverflowError):
        return None
    return cast if back.reset_index(drop=True).equals(col.reset_index(drop=True)) else None


def append(job_dir: Path, n_rows: int, new: "pd.DataFrame", index: "pd.Index") -> None:
    """Grow what the meta keeps whole (``kept`` columns) by the rows ``new`` (``conform``ed),
    added after the first ``n_rows``, and write ``index``, the whole table's index.

    The rows themselves go in the chunks of the submission that runs them, and the manifest's
    ``n_rows`` grows last: until it does, readers take the first ``n_rows`` of both files."""
    import pandas as pd

    meta = _read_meta(job_dir)
    if any(kind == "kept" for kind, _ in meta["how"]):
        meta["how"] = [(kind, pd.concat([what.iloc[:n_rows], new.iloc[:, i].reset_index(drop=True)],
                                        ignore_index=True) if kind == "kept" else what)
                       for i, (kind, what) in enumerate(meta["how"])]
        with jd.atomic_open(job_dir / jd.PARAMS_META) as fh:
            pickle.dump(meta, fh, protocol=pickle.HIGHEST_PROTOCOL)
    jd.write_index(job_dir, index)
