"""The errors of a record frame, each distinct traceback stored once.

A systematic bug in ``f`` raises the same way on every row: the same stack, a message of its
own. A frame's errors JSON therefore holds a table of the distinct stacks and, per row, its
type, its message and a reference into the table::

    {"tb": ["Traceback (most recent call last):\\n  File ...\\nValueError"],
     "e": [["ValueError", "bad row 3", 0], ["ValueError", "bad row 4", 0]]}

A *stack* is the traceback text without its last ``": <message>\\n"``, which is rebuilt from
the row's own message. A reference is an index into the frame's table, or ``[frame, index]``
for a stack that an earlier frame of the same record file stored (a process remembers what
it wrote: :class:`TracebackCache`). A traceback that does not end with its message (an exotic
``__str__``, notes) is stored whole, flagged by a fourth item ``1``.

Frames of format 2 hold a plain list of ``[type, message, traceback]``; both are read.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

ErrorInfo = Tuple[str, str, str]  # (exception type, message, traceback text)
Earlier = Callable[[int], List[str]]  # frame number -> that frame's table of stacks


def _tail(message: str) -> str:
    return f": {message}\n" if message else "\n"


def split(message: str, tb: str) -> Tuple[str, bool]:
    """(stack, whole): the traceback without the tail its message gives, or all of it."""
    tail = _tail(message)
    if tb.endswith(tail):
        return tb[:len(tb) - len(tail)], False
    return tb, True


class TracebackCache:
    """The stacks one process has written to its record file, to refer to them again.

    ``frame`` is the number the next frame will have; :meth:`written` is called once that
    frame is on its way to disk, and only then are its new stacks remembered (a frame that
    failed to encode or write must not be referred to).
    """

    MAX_STACKS = 10_000  # distinct stacks remembered; beyond this they are stored again

    def __init__(self, frame: int) -> None:
        self.frame = frame
        self.known: Dict[str, Tuple[int, int]] = {}
        self.pending: Dict[str, int] = {}

    def written(self) -> None:
        room = self.MAX_STACKS - len(self.known)
        for stack, i in list(self.pending.items())[:max(room, 0)]:
            self.known[stack] = (self.frame, i)
        self.pending = {}
        self.frame += 1


def encode(infos: Sequence[ErrorInfo], cache: Optional[TracebackCache] = None) -> bytes:
    """The errors JSON of a frame (ASCII only: a lone surrogate still encodes, and reads
    back equal)."""
    table: List[str] = []
    local: Dict[str, int] = {}
    rows: List[List[Any]] = []
    known = cache.known if cache is not None else {}
    for etype, message, tb in infos:
        stack, whole = split(message, tb)
        ref: Any = local.get(stack)
        if ref is None:
            if stack in known:
                ref = list(known[stack])
            else:
                ref = local[stack] = len(table)
                table.append(stack)
        rows.append([etype, message, ref, 1] if whole else [etype, message, ref])
    if cache is not None:
        cache.pending = local
    return json.dumps({"tb": table, "e": rows}, separators=(",", ":")).encode()


def stacks(data: bytes) -> List[str]:
    """A frame's own table of stacks (what later frames refer to)."""
    obj = json.loads(data)
    return [str(s) for s in obj["tb"]] if isinstance(obj, dict) else []


def decode(data: bytes, earlier: Earlier) -> List[ErrorInfo]:
    """Every error of a frame, in the order of its error ids, tracebacks rebuilt."""
    obj = json.loads(data)
    if isinstance(obj, list):  # format 2
        return [(str(t), str(m), str(tb)) for t, m, tb in obj]
    table = obj["tb"]
    out: List[ErrorInfo] = []
    for item in obj["e"]:
        etype, message, ref = str(item[0]), str(item[1]), item[2]
        stack = table[ref] if isinstance(ref, int) else earlier(int(ref[0]))[int(ref[1])]
        out.append((etype, message, stack if len(item) > 3 else stack + _tail(message)))
    return out

