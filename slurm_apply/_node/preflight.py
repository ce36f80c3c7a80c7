"""The pre-flight's node side: the payload loaded as an array task will load it, in a fresh
interpreter, before anything is submitted (the submitting side is ``_submit/preflight.py``).

Three ways, each a mode of ``python -m slurm_apply._node`` (see ``__main__``): ``--preflight``
loads at once; ``--preflight-when-told`` imports first and loads when told; ``--preflight-warm``
imports once, then serves one call after another, each loaded in a process forked for it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .rows import load


def _failed(exc: BaseException) -> int:
    print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
    traceback.print_exc()
    return 1


def preflight(payload: Path, pkgs: Sequence[str]) -> int:
    try:
        load(payload, pkgs)
    except BaseException as exc:  # report anything, including SystemExit from a user's import
        return _failed(exc)
    return 0


def preflight_when_told(payload: Path, warm: Sequence[str], pkgs: Sequence[str]) -> int:
    import importlib

    try:
        for name in pkgs:  # as load() would, first
            importlib.import_module(name)
    except BaseException as exc:
        return _failed(exc)
    # Only to save time: the load below imports what it needs, and says why if it cannot.
    for name in ("cloudpickle", *warm):  # cloudpickle rebuilds functions pickled by value
        try:
            importlib.import_module(name)
        except BaseException:
            pass
    if sys.stdin.readline().strip() != "go":
        return 0  # the caller gave up before the payload was written
    return preflight(payload, ())


class _Imported:
    """The module files this interpreter imported, as they were: (mtime_ns, size) and the time
    just before their import. A file changed since, or written after that time (during or after
    its import), is not what a fresh interpreter would import now."""

    def __init__(self) -> None:
        self.files: Dict[str, Tuple[int, int, int]] = {}
        self.names: Dict[str, Optional[str]] = {}  # top-level module asked for -> where found

    def import_all(self, names: Sequence[str]) -> None:
        import importlib

        before = time.time_ns()
        for name in names:
            try:
                importlib.import_module(name)
            except BaseException:  # the load in the fork imports it again and says why
                pass
        for name in names:
            top = name.partition(".")[0]
            if top not in self.names:
                self.names[top] = _where(top)
        for module in list(sys.modules.values()):
            path = getattr(module, "__file__", None)
            if isinstance(path, str) and path not in self.files:
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                self.files[path] = (st.st_mtime_ns, st.st_size, before)

    def changed(self) -> Optional[str]:
        """Why this interpreter no longer imports what a fresh one would, or None."""
        for path, (mtime, size, before) in self.files.items():
            try:
                st = os.stat(path)
            except OSError:
                return f"{path} is gone"
            if (st.st_mtime_ns, st.st_size) != (mtime, size) or st.st_mtime_ns > before:
                return f"{path} changed"
        for top, where in self.names.items():  # a file added (or removed) that shadows it now
            now = _where(top)
            if now != where:
                return f"{top} would now be found at {now}, not {where}"
        return None


def _where(top: str) -> Optional[str]:
    """Where a search of sys.path finds module ``top`` now (whether or not it is imported)."""
    from importlib.machinery import PathFinder

    try:
        spec = PathFinder.find_spec(top, sys.path)
    except Exception:
        return None
    return None if spec is None else str(spec.origin or spec.submodule_search_locations)


_child = 0  # the process loading a payload now, if any


def _on_term(signum: int, frame: Any) -> None:
    """Told to go: the load under way goes too, and is reaped (no zombie left behind)."""
    if _child:
        with contextlib.suppress(OSError):
            os.kill(_child, signal.SIGKILL)
            os.waitpid(_child, 0)
    os._exit(1)


def _scratch() -> int:
    """An anonymous file (a descriptor) for what a forked load tells its parent."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("slurm_apply-preflight")
    import tempfile

    fd, name = tempfile.mkstemp(prefix="slurm_apply-preflight-")
    os.unlink(name)
    return fd


def _read_back(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks: List[bytes] = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks).decode("utf-8", "replace")
        chunks.append(chunk)


def _load_in_fork(payload: str, pkgs: Sequence[str]) -> Tuple[int, str, List[str]]:
    """Load the payload in a process forked for it: its exit code, what it printed on stderr,
    and the modules it imported that this process has not (by name, importable as such)."""
    import json

    global _child
    err, learned = _scratch(), _scratch()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: stdin and stdout are nobody's, stderr is the report
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                null = os.open(os.devnull, os.O_RDWR)
                os.dup2(null, 0)
                os.dup2(null, 1)
                os.dup2(err, 2)
                known = set(sys.modules)
                code = preflight(Path(payload), pkgs)
                sys.stderr.flush()
                if code == 0:
                    new = [name for name, module in list(sys.modules.items())
                           if name not in known and not name.startswith("__")
                           and getattr(getattr(module, "__spec__", None), "name", None) == name]
                    os.write(learned, json.dumps(new).encode())
            finally:
                os._exit(code)
        _child = pid
        _, status = os.waitpid(pid, 0)
        _child = 0
        names = _read_back(learned)
        return (os.waitstatus_to_exitcode(status), _read_back(err),
                json.loads(names) if names else [])
    finally:
        os.close(err)
        os.close(learned)


def preflight_server(warm: Sequence[str], pkgs: Sequence[str]) -> int:
    """Import the packages and WARM, then serve calls, one JSON line each way at a time:
    ``{"op": "call", "warm": [...]}`` is answered ``{"fresh": true}`` (the modules imported
    since are imported too), or ``{"fresh": false, "why": ...}`` and the interpreter ends; then
    ``{"op": "go", "payload": PATH}`` is answered ``{"code": N, "stderr": ...}``, the load done
    in a forked process, as ``--preflight`` would have done it (the modules it imported are then
    imported here too); ``{"op": "skip"}`` loads nothing.
    Ends when stdin closes (the caller ended), or on SIGTERM."""
    import json
    import warnings

    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller's Ctrl-C is the caller's
    # What this process forks only loads a pickle; the threads (OpenBLAS's) stay idle meanwhile.
    warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
    imported = _Imported()
    imported.import_all([*pkgs, "cloudpickle", *warm])

    def answer(reply: Dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()

    while True:
        line = sys.stdin.readline()
        if not line:
            return 0
        ask = json.loads(line)
        if ask.get("op") != "call":
            return 2
        why = imported.changed()
        answer({"fresh": why is None, "why": why})
        if why is not None:
            return 0
        imported.import_all(ask.get("warm", []))
        line = sys.stdin.readline()
        if not line:
            return 0
        ask = json.loads(line)
        if ask.get("op") == "go":
            code, stderr, learned = _load_in_fork(ask["payload"], pkgs)
            answer({"code": code, "stderr": stderr})
            # What that load imported (a module that f, pickled by value, uses): imported here
            # too, while the caller goes on, so that the next call's load need not.
            imported.import_all(learned)
        elif ask.get("op") != "skip":
            return 2
