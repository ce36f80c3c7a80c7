"""Sets of rows as runs of consecutive positions, with NumPy: how the login side holds a job's
outcome in memory and time that grow with its record frames, not its rows.

A :class:`RowSet` is sorted, disjoint ``[start, stop)`` runs. It behaves as a read-only list of
row positions (``len``, indexing, iteration, ``==`` with a list, ``+`` giving a list), so a
status's ``failed_rows`` and ``missing_rows`` read as before, while a finished job with ten
million rows done holds one run, not ten million integers.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Sequence, Tuple, Union, overload

import numpy as np

from .merge import distinct

Runs = Tuple[np.ndarray, np.ndarray]  # (starts, stops), int64


def _coalesce(uniq: np.ndarray, inside: np.ndarray) -> Runs:
    """The runs where ``inside[i]`` holds on ``[uniq[i], uniq[i + 1])``, adjacent ones joined."""
    inside = inside[:-1] if len(inside) else inside
    if not inside.any():
        return np.empty(0, np.int64), np.empty(0, np.int64)
    edge = np.diff(np.concatenate(([False], inside, [False])).astype(np.int8))
    return uniq[np.flatnonzero(edge == 1)], uniq[np.flatnonzero(edge == -1)]


def combine(parts: Sequence[Runs], need: int) -> Runs:
    """Rows covered by at least ``need`` of the runs in ``parts`` (each part's runs must not
    overlap each other when ``need > 1``): 1 gives the union, ``len(parts)`` the intersection."""
    starts = [np.asarray(s, np.int64) for s, _ in parts]
    stops = [np.asarray(e, np.int64) for _, e in parts]
    pos = np.concatenate(starts + stops) if parts else np.empty(0, np.int64)
    if not len(pos):
        return pos, pos.copy()
    delta = np.concatenate([np.ones(len(s), np.int64) for s in starts]
                           + [-np.ones(len(e), np.int64) for e in stops])
    order = np.argsort(pos, kind="stable")
    pos, delta = pos[order], delta[order]
    first = np.flatnonzero(np.r_[True, pos[1:] != pos[:-1]])
    uniq = pos[first]
    cover = np.cumsum(np.add.reduceat(delta, first))
    return _coalesce(uniq, cover >= need)


class RowSet(Sequence[int]):
    """Row positions as sorted, disjoint runs; a read-only list of ints to its users.

    Build with :meth:`from_runs` (any runs, overlapping or not), :meth:`from_rows` or
    :meth:`from_mask`. Set algebra (``|``, ``&``, ``-``, :meth:`complement`) stays in runs.
    """

    __slots__ = ("starts", "stops", "_ends")

    def __init__(self, starts: Any = (), stops: Any = (), *, _normal: bool = False) -> None:
        s, e = np.asarray(starts, np.int64).ravel(), np.asarray(stops, np.int64).ravel()
        if not _normal:
            keep = e > s
            s, e = combine([(s[keep], e[keep])], 1)
        self.starts, self.stops = s, e
        self._ends = np.cumsum(e - s)  # rows up to the end of each run

    @classmethod
    def from_runs(cls, starts: Any, stops: Any) -> "RowSet":
        return cls(starts, stops)

    @classmethod
    def from_rows(cls, rows: Any) -> "RowSet":
        r = distinct(np.asarray(rows, np.int64).ravel())
        if not len(r):
            return cls()
        cut = np.flatnonzero(np.diff(r) != 1) + 1
        return cls(r[np.r_[0, cut]], r[np.r_[cut - 1, len(r) - 1]] + 1, _normal=True)

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> "RowSet":
        m = np.asarray(mask, bool)
        edge = np.diff(np.concatenate(([False], m, [False])).astype(np.int8))
        return cls(np.flatnonzero(edge == 1), np.flatnonzero(edge == -1), _normal=True)

    # -- as a set of rows ---------------------------------------------------------------------

    @property
    def runs(self) -> Runs:
        return self.starts, self.stops

    def __or__(self, other: "RowSet") -> "RowSet":
        s, e = combine([self.runs, other.runs], 1)
        return RowSet(s, e, _normal=True)

    def __and__(self, other: "RowSet") -> "RowSet":
        s, e = combine([self.runs, other.runs], 2)
        return RowSet(s, e, _normal=True)

    def __sub__(self, other: "RowSet") -> "RowSet":
        return self & other.complement(int(max(self.stops[-1] if len(self) else 0,
                                               other.stops[-1] if len(other) else 0)))

    def complement(self, n_rows: int) -> "RowSet":
        """The rows of ``0 .. n_rows - 1`` not in this set."""
        s, e = combine([(np.array([0]), np.array([n_rows])), self.runs], 2)  # clipped to [0, n)
        return RowSet(np.concatenate(([0], e)), np.concatenate((s, [n_rows])))

    def mask(self, n_rows: int) -> np.ndarray:
        out = np.zeros(n_rows, bool)
        for a, b in zip(self.starts.tolist(), self.stops.tolist()):
            out[a:b] = True
        return out

    def rows(self) -> np.ndarray:
        """Every row, ascending, as an int64 array."""
        if not len(self.starts):
            return np.empty(0, np.int64)
        lengths = self.stops - self.starts
        return np.repeat(self.starts - (self._ends - lengths), lengths) + np.arange(self._ends[-1])

    def head(self, k: int) -> np.ndarray:
        """The first ``k`` rows, without expanding the rest."""
        n = int(np.searchsorted(self._ends, k)) + 1
        return RowSet(self.starts[:n], self.stops[:n], _normal=True).rows()[:k]

    def contains(self, rows: np.ndarray) -> np.ndarray:
        """Bool per row of ``rows``: in the set."""
        rows = np.asarray(rows, np.int64)
        i = np.searchsorted(self.starts, rows, side="right") - 1
        ok = i >= 0
        return ok & (rows < self.stops[np.where(ok, i, 0)]) if len(self.starts) else ok & False

    # -- as a read-only list ------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __bool__(self) -> bool:
        return bool(len(self.starts))

    @overload
    def __getitem__(self, i: int) -> int: ...

    @overload
    def __getitem__(self, i: slice) -> List[int]: ...

    def __getitem__(self, i: Union[int, slice]) -> Union[int, List[int]]:
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step == 1:  # the first rows only: nothing past ``stop`` is expanded
                return self.head(stop).tolist()[start:]
            return self.tolist()[i]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("RowSet index out of range")
        run = int(np.searchsorted(self._ends, i, side="right"))
        before = int(self._ends[run - 1]) if run else 0
        return int(self.starts[run]) + i - before

    def __iter__(self) -> Iterator[int]:
        for a, b in zip(self.starts.tolist(), self.stops.tolist()):
            yield from range(a, b)

    def __contains__(self, row: object) -> bool:
        if not isinstance(row, (int, np.integer)):
            return False
        return bool(self.contains(np.array([row]))[0])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RowSet):
            return bool(np.array_equal(self.starts, other.starts)
                        and np.array_equal(self.stops, other.stops))
        if isinstance(other, (list, tuple)):
            return len(other) == len(self) and list(other) == self.tolist()
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __add__(self, other: Sequence[int]) -> List[int]:
        return self.tolist() + list(other)

    def __radd__(self, other: Sequence[int]) -> List[int]:
        return list(other) + self.tolist()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        rows = self.rows()
        return rows.astype(dtype) if dtype is not None else rows

    def tolist(self) -> List[int]:
        return self.rows().tolist()

    def __repr__(self) -> str:
        if len(self) <= 20:
            return repr(self.tolist())
        from .render import compress_runs

        return f"RowSet({compress_runs(self.starts, self.stops)}; {len(self)} rows)"

    def __reduce__(self) -> Any:
        return (RowSet, (self.starts, self.stops))

    def __deepcopy__(self, memo: Any) -> "RowSet":
        return self  # immutable


class RowReasons(Mapping[int, str]):
    """Why each of some rows is missing, held as runs of rows that share a reason; a read-only
    dict ``{row: reason}`` to its users."""

    def __init__(self) -> None:
        self._texts: List[str] = []
        self._parts: List[Tuple[np.ndarray, np.ndarray, int]] = []
        self._single: Dict[int, str] = {}  # rows whose reason differs from their run's
        self._index: Any = None  # (starts, stops, text of each run), sorted, once asked

    def add(self, rows: RowSet, text: str) -> None:
        """Give ``rows`` (not given a reason yet) this reason."""
        if rows:
            self._parts.append((rows.starts, rows.stops, len(self._texts)))
            self._texts.append(text)
            self._index = None

    def set_row(self, row: int, text: str) -> None:
        """One row's own reason, over its run's."""
        self._single[int(row)] = text

    def _runs(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._index is None:
            if self._parts:
                s = np.concatenate([p[0] for p in self._parts])
                e = np.concatenate([p[1] for p in self._parts])
                t = np.concatenate([np.full(len(p[0]), p[2]) for p in self._parts])
                order = np.argsort(s, kind="stable")
                self._index = (s[order], e[order], t[order])
            else:
                empty = np.empty(0, np.int64)
                self._index = (empty, empty, empty)
        return self._index

    @property
    def runs(self) -> Runs:
        s, e, _ = self._runs()
        return s, e

    def __getitem__(self, row: int) -> str:
        if row in self._single:
            return self._single[row]
        s, e, t = self._runs()
        i = int(np.searchsorted(s, row, side="right")) - 1
        if i < 0 or row >= e[i]:
            raise KeyError(row)
        return self._texts[int(t[i])]

    def __iter__(self) -> Iterator[int]:
        s, e, _ = self._runs()
        for a, b in zip(s.tolist(), e.tolist()):
            yield from range(a, b)

    def __len__(self) -> int:
        s, e, _ = self._runs()
        return int((e - s).sum())

    def by_reason(self, rows: RowSet) -> Dict[str, RowSet]:
        """``rows`` grouped by reason (rows without one left out), reasons in row order."""
        s, e, t = self._runs()
        out: Dict[str, RowSet] = {}
        singles = RowSet.from_rows(list(self._single))
        for code, text in enumerate(self._texts):
            got = RowSet(s[t == code], e[t == code]) & rows
            out[text] = (got - singles) | out.get(text, RowSet())
        for r, text in self._single.items():
            if r in rows:
                out[text] = out.get(text, RowSet()) | RowSet([r], [r + 1])
        groups = [(g[0], text, g) for text, g in out.items() if g]
        return {text: g for _, text, g in sorted(groups, key=lambda x: x[0])}

    def __repr__(self) -> str:
        if len(self) <= 20:
            return repr(dict(self.items()))
        return f"RowReasons({len(self)} rows, {len(set(self._texts))} reasons)"

    def __deepcopy__(self, memo: Any) -> "RowReasons":
        return self  # not changed once built
