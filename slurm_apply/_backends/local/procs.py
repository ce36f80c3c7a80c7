"""Who a process is, on this host: pid, start time and host, so that a pid reused by another
process is never taken for the one recorded; and signals to a process group."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from typing import Any, Optional, Tuple

from ..._store.localrun import Proc

PROC = Path("/proc")


class CannotTell(Exception):
    """This machine cannot say whether a process is the one recorded."""


def _proc_stat(pid: int) -> Optional[Tuple[str, Any]]:
    """(state letter, start time) of process ``pid``; None if there is no such process; raises
    CannotTell when neither /proc nor ps can say."""
    try:
        data = (PROC / str(pid) / "stat").read_bytes()
    except FileNotFoundError:
        if (PROC / "self" / "stat").exists():
            return None  # /proc works here, so the process does not exist
        return _ps_stat(pid)
    except OSError as exc:  # e.g. /proc mounted with hidepid
        raise CannotTell(f"cannot read {PROC / str(pid) / 'stat'}: {exc}") from None
    # The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
    fields = data[data.rindex(b")") + 2:].split()
    return fields[0].decode(), int(fields[22 - 3])


def _ps_stat(pid: int) -> Optional[Tuple[str, Any]]:
    """What /proc would say, from ps, on systems without /proc (start time to the second)."""
    try:
        out = subprocess.run(["ps", "-o", "stat=,lstart=", "-p", str(pid)], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        raise CannotTell(f"no /proc, and ps did not answer: {exc}") from None
    line = out.stdout.strip()
    if not line:
        if out.returncode != 0 and out.stderr.strip():
            raise CannotTell(f"no /proc, and ps failed: {out.stderr.strip()}")
        return None
    stat, _, start = line.partition(" ")
    return stat[:1], start.strip()


def identity(pid: int) -> Proc:
    """Who process ``pid`` is: to be recorded right after starting it (a child not yet reaped
    keeps its pid, so this is the child's start time, not another process's)."""
    try:
        stat = _proc_stat(pid)
    except CannotTell:
        stat = None
    return Proc(pid, stat[1] if stat else None, socket.gethostname())


def is_alive(ident: Proc) -> bool:
    """Whether the process ``ident`` records still runs (on this host). Raises CannotTell."""
    if ident.host != socket.gethostname():
        return False
    stat = _proc_stat(ident.pid)
    # A zombie has exited (it only waits for its parent to reap it).
    return stat is not None and stat[0] != "Z" and ident.start is not None and stat[1] == ident.start


def _signal_group(pgid: int, sig: int) -> bool:
    """Signal a process group; False if it has no process left (signal 0 only asks)."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal: the group is not empty
        pass
    return True


def _exit_code(code: Optional[int]) -> str:
    # Slurm's form, exit:signal ("0:15" for a task killed by SIGTERM).
    return "" if code is None else f"{code}:0" if code >= 0 else f"0:{-code}"
