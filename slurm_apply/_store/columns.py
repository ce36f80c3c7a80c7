"""Record values column by column, when a batch of rows returned values of one shape.

A batch is stored by column when every value is a dict with the same string keys in the same
order, each key holding values of one type (a column), or when every value is itself of one
type (one column, no keys). Column types, by tag:

    float, numpy.float64    array('d')        int, numpy.int64    array('q')
    bool                    array('B')        str                 a list

Anything else (None, mixed types, NumPy's other scalars, ints beyond int64, nested values)
leaves the batch as a pickled list, as before. So a column is exactly one Python type, and
:func:`decode` gives back values equal to, and of the same type as, what the rows returned.

Why: a frame of numbers unpickles into arrays the output table takes as they are (no Python
object per cell: 10^7 rows of two floats are 160 MB, not 2 GB of dicts), and pickling arrays
costs the node less than pickling dicts. The node imports this module: no NumPy here.
"""

from __future__ import annotations

from array import array
from typing import Any, Dict, List, Optional, Sequence, Tuple

# Python type -> (tag, array typecode; None: kept as a list)
_PYTHON: Dict[type, Tuple[str, Optional[str]]] = {
    float: ("float", "d"), int: ("int", "q"), bool: ("bool", "B"), str: ("str", None)}
# NumPy scalar types by name, so that NumPy need not be imported to recognise them. (Its bool
# is left out: array() refuses it.)
_NUMPY: Dict[str, Tuple[str, str]] = {"float64": ("numpy.float64", "d"), "int64": ("numpy.int64", "q")}
_NUMPY_DTYPES = {"numpy.float64": "float64", "numpy.int64": "int64"}

Columns = Tuple[Optional[List[str]], List[str], List[Any]]  # (keys or None, tags, columns)


def _tag(t: type) -> Optional[Tuple[str, Optional[str]]]:
    found = _PYTHON.get(t)
    if found is None and t.__module__ == "numpy":
        return _NUMPY.get(t.__name__)
    return found


def _column(values: Sequence[Any]) -> Optional[Tuple[str, Any]]:
    """(tag, column) of values that all have one supported type, else None."""
    types = set(map(type, values))
    if len(types) != 1:
        return None
    found = _tag(types.pop())
    if found is None:
        return None
    tag, code = found
    if code is None:
        return tag, list(values)
    try:
        return tag, array(code, values)
    except OverflowError:  # an int beyond int64: pandas makes it uint64 or object, so keep it
        return None


def encode(values: Sequence[Any]) -> Optional[Columns]:
    """The values as (keys, tags, columns), or None when they do not all have one shape."""
    if not values:
        return None
    first = values[0]
    if type(first) is dict:
        keys = tuple(first)
        if not keys or not all(type(k) is str for k in keys):
            return None
        if not all(type(v) is dict and tuple(v) == keys for v in values):
            return None
        raw: List[Sequence[Any]] = list(zip(*map(dict.values, values)))
        names: Optional[List[str]] = list(keys)
    else:
        raw = [values]
        names = None
    tags, cols = [], []
    for col in raw:
        found = _column(col)
        if found is None:
            return None
        tags.append(found[0])
        cols.append(found[1])
    return names, tags, cols


def _values(tag: str, col: Any) -> List[Any]:
    if tag in _NUMPY_DTYPES:  # only on the login side: rows that returned NumPy scalars
        import numpy as np

        return list(np.frombuffer(col, dtype=_NUMPY_DTYPES[tag]))
    if tag == "bool":
        return [bool(x) for x in col]
    return list(col)


def decode(columns: Columns) -> List[Any]:
    """The values again, one per row, each of the type the row returned."""
    keys, tags, cols = columns
    as_lists = [_values(t, c) for t, c in zip(tags, cols)]
    if keys is None:
        return as_lists[0]
    return [dict(zip(keys, row)) for row in zip(*as_lists)]


def kind(col: Any) -> str:
    """A column's storage: 'd' float64, 'q' int64, 'B' bool, 's' strings."""
    return col.typecode if isinstance(col, array) else "s"
