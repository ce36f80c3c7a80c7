"""The user's code keeps its file names and lines wherever the payload is loaded.

A function that cloudpickle pickles by value (one defined in a notebook cell, in a script's
``__main__``, inside another function) is rebuilt from its code on the node. cloudpickle 3.1 and
later rename the file of every such code object ``<dynamic-code>``, and a notebook cell's file
exists only in the kernel's memory, so a row's traceback, ``test_row(fresh=True)`` and
``slurm-apply test --pdb`` would show neither the file nor the line. So the payload is pickled with
:class:`Pickler` (cloudpickle's, plus two things):

- every code object travels inside a call of :func:`named_code`, which gives the rebuilt code
  (and so every function made from it, nested ones too) its original file name back;
- the source lines of each function pickled by value, with their file name and first line, are
  kept (:attr:`Pickler.sources`); the payload writes them after the pickle of f and the objects,
  as a second pickle (of strings only), and :func:`add_sources` puts them in ``linecache`` where
  the payload is loaded. ``traceback``, ``pdb`` and ``inspect`` read lines from there.

The lines are the ones submitted, even where the file exists but was changed since. A function
whose source cannot be found (made by ``exec``, typed at a bare ``python`` prompt) still runs;
:attr:`Pickler.missing` names it, and writing the payload says so once.

The node imports this module when it unpickles: no cloudpickle at import time.
"""

from __future__ import annotations

import functools
import linecache
import types
from typing import Any, Dict, List, Optional, Tuple

# {file name: {first line (1-based): [the lines, each ending in a newline]}}
Sources = Dict[str, Dict[int, List[str]]]


def named_code(code: types.CodeType, filename: str) -> types.CodeType:
    """``code`` as it was submitted: under its own file name (called as the payload is loaded)."""
    return code if code.co_filename == filename else code.replace(co_filename=filename)


def add_sources(sources: Sources) -> None:
    """Put the submitted lines in ``linecache`` (called as the payload is loaded).

    Whatever linecache already has for a file (its lines read from disk, a notebook cell the
    kernel registered) is kept, with the submitted lines laid over it at their own line numbers:
    the file's other lines stay readable in the submitting process. The entry has no modification
    time, so linecache never replaces it by the file's current contents.
    """
    for filename, pieces in sources.items():
        lines = list(linecache.getlines(filename))
        before = list(lines)
        for first, piece in sorted(pieces.items()):
            end = first - 1 + len(piece)
            if len(lines) < end:
                lines.extend(["\n"] * (end - len(lines)))
            lines[first - 1:end] = piece
        if lines != before or filename not in linecache.cache:
            linecache.cache[filename] = (sum(len(line) for line in lines), None, lines, filename)


def _source_lines(code: types.CodeType) -> Optional[Tuple[List[str], int]]:
    """The lines of ``code`` and the first one's number, or None when they cannot be found.

    From the code object, not the function: ``inspect`` would follow a wrapper's ``__wrapped__``
    to another function's lines."""
    import inspect

    try:
        lines, first = inspect.getsourcelines(code)
    except (OSError, TypeError):
        return None
    if first < 1 or not lines:
        return None
    return [line if line.endswith("\n") else line + "\n" for line in lines], first


@functools.lru_cache(maxsize=1)
def pickler_class() -> type:
    """cloudpickle's Pickler with the file names and sources kept (made on first use: the node
    never pickles a payload, so it never imports cloudpickle for this)."""
    import cloudpickle

    base = getattr(cloudpickle, "Pickler", None) or cloudpickle.CloudPickler

    class Pickler(base):  # type: ignore[misc, valid-type]
        def __init__(self, file: Any, protocol: int, buffer_callback: Any = None) -> None:
            super().__init__(file, protocol=protocol, buffer_callback=buffer_callback)
            self.sources: Sources = {}
            self.missing: List[Tuple[str, str]] = []  # (qualified name, file name)
            self._plain: Dict[int, types.CodeType] = {}  # copies cloudpickle itself reduces
            self._seen: set = set()  # ids of the code objects whose source was looked up

        def reducer_override(self, obj: Any) -> Any:
            if type(obj) is types.CodeType:
                if id(obj) in self._plain:
                    return super().reducer_override(obj)
                # A copy (a new object, so its id is new) goes through cloudpickle's own
                # reduction; it is kept here until the end, so that id is not reused.
                copy = obj.replace()
                self._plain[id(copy)] = copy
                return named_code, (copy, obj.co_filename)
            reduced = super().reducer_override(obj)
            if reduced is not NotImplemented and isinstance(obj, types.FunctionType):
                self._keep_source(obj)
            return reduced

        def _keep_source(self, func: types.FunctionType) -> None:
            code = func.__code__
            if id(code) in self._seen:
                return
            self._seen.add(id(code))
            found = _source_lines(code)
            if found is None:
                self.missing.append((getattr(func, "__qualname__", code.co_name), code.co_filename))
                return
            lines, first = found
            self.sources.setdefault(code.co_filename, {})[first] = lines

    return Pickler


def dump(obj: Any, fh: Any, protocol: int, buffer_callback: Any, *, with_sources: bool) -> Any:
    """Pickle ``obj`` into ``fh``; with ``with_sources``, then the sources of the functions it
    pickled by value, as a second pickle. The pickler, for its ``missing``."""
    import pickle

    pickler = pickler_class()(fh, protocol, buffer_callback)
    pickler.dump(obj)
    if with_sources:
        pickle.dump(pickler.sources, fh, protocol=protocol)
    return pickler


def read_sources(fh: Any) -> Sources:
    """The sources pickled after the payload (``fh`` just past its first pickle); none in a
    payload written before they were."""
    import pickle

    try:
        sources = pickle.load(fh)
    except EOFError:
        return {}
    if not isinstance(sources, dict):
        raise ValueError(f"{getattr(fh, 'name', 'the payload')} ends in something other than the "
                         "sources of its functions: write the job again")
    return sources


def missing_message(missing: List[Tuple[str, str]]) -> Optional[str]:
    """What to log once about functions whose source was not found, or None.

    Code made by ``exec`` from a string (file ``<string>``: a dataclass's ``__init__``, a
    namedtuple's ``__new__``) is left out: it is no one's own code to read."""
    named = [(name, file) for name, file in missing if file != "<string>"]
    if not named:
        return None
    shown = ", ".join(f"{name} ({file})" for name, file in named[:5])
    more = f" and {len(named) - 5} more" if len(named) > 5 else ""
    return (f"the source of {shown}{more} cannot be found: it runs, but a row's traceback will "
            f"show no lines of it (define it in a file or a notebook cell to see them)")
