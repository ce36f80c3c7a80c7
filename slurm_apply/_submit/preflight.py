"""The pre-flight: the payload loaded as the nodes will load it, before anything is submitted.

Its interpreter starts before the payload is written, imports the packages and the modules of f
and the objects while the buffers are written, and loads the payload when told to."""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, List, Mapping, Sequence

from .._launch import write as _submit
from .._errors import PreflightError


def warm_modules(f: Any, objects: Mapping[str, Any]) -> List[str]:
    """Modules that loading the payload will import, as far as one can tell without pickling:
    those of f and of the objects (add_objects, more_args). The pre-flight imports them while
    it waits for the payload; any that fails there is left for the load itself to report."""
    values = list(objects.values())
    while isinstance(f, functools.partial):
        values += list(f.keywords.values())
        f = f.func
    names = {getattr(f, "__module__", None)} | {type(v).__module__ for v in values}
    return sorted(n for n in names if isinstance(n, str) and n not in ("__main__", "builtins"))


class Preflight:
    """Load the payload with the interpreter the nodes will run, as they will, in a fresh process.

    Started before the payload is written: the interpreter starts and imports the packages
    while the buffers are being written, then loads the payload when told to (:meth:`go`),
    while the rows are being written.
    """

    def __init__(self, payload: Path, pkgs: Sequence[str], warm: Sequence[str] = ()) -> None:
        env = dict(os.environ)
        pp = _submit.caller_pythonpath()
        if pp:
            env["PYTHONPATH"] = pp + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.python = sys.executable
        self.proc = subprocess.Popen(
            [self.python, "-m", "slurm_apply._node", "--preflight-when-told", str(payload),
             ",".join(warm), *pkgs],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=env, cwd=os.getcwd())

    def go(self) -> None:
        """The payload is written: load it."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it failed already (a package would not import)
            self.proc.stdin.write("go\n")
            self.proc.stdin.close()

    def _ended(self) -> str:
        """Wait for the process; what it printed on stderr (its only pipe besides stdin)."""
        assert self.proc.stdin is not None and self.proc.stderr is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        with self.proc.stderr:
            stderr = self.proc.stderr.read()
        self.proc.wait()
        return stderr

    def result(self) -> None:
        stderr = self._ended()
        if self.proc.returncode == 0:
            return
        err = stderr.strip().splitlines()
        last = err[0] if err else f"exit code {self.proc.returncode}"
        raise PreflightError(
            f"the pickled function and objects do not load in a fresh Python ({self.python}), so "
            f"they would fail on every node: {last}. Typical causes: f or a class it uses is "
            "defined in a module the nodes cannot import (put it in an importable module or define "
            "it in the notebook/script itself), or pkgs names a module that fails to import. "
            "Full error:\n" + stderr.strip()[-3000:])

    def cancel(self) -> None:
        if self.proc.returncode is None:  # still running: an earlier step failed
            self.proc.kill()
            self._ended()
