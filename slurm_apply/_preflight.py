"""The pre-flight: the payload loaded as the nodes will load it, before anything is submitted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from . import _submit
from ._errors import PreflightError


class Preflight:
    """Load the payload with the interpreter the nodes will run, as they will, in a fresh process.

    Started as soon as the payload is written, so it runs while the rows are being written.
    """

    def __init__(self, payload: Path, pkgs: Sequence[str]) -> None:
        env = dict(os.environ)
        pp = _submit.caller_pythonpath()
        if pp:
            env["PYTHONPATH"] = pp + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.python = sys.executable
        self.proc = subprocess.Popen(
            [self.python, "-m", "slurm_apply._node", "--preflight", str(payload), *pkgs],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=env, cwd=os.getcwd())

    def result(self) -> None:
        _, stderr = self.proc.communicate()
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
            self.proc.communicate()
