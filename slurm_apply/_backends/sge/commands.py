"""Grid Engine's commands (qsub, qstat, qacct, qdel, qconf), run with an argument list (never a
shell); what they print is read by :mod:`.parse`.

A runner that gets no answer raises SchedulerError naming the command and what went wrong; a
qmaster that cannot be reached says so in words :func:`.parse.qmaster_unreachable` knows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Dict, List, Optional, Sequence

from ..._errors import InputError, SchedulerError
from ..commands import run as run_command
from .parse import parse_conf

# qsub, qdel, qconf: rare calls that act, so worth waiting for.
COMMAND_TIMEOUT_S = 60
# qstat, qacct: a wait asks again later. A qmaster that is down is refused at once (0.1 s).
QUERY_TIMEOUT_S = 30

NOT_ON_PATH = ("{} is not on PATH; is Grid Engine set up in this shell (source "
               "$SGE_ROOT/$SGE_CELL/common/settings.sh, or `module load sge`)?")


def run(args: Sequence[str], timeout_s: float = QUERY_TIMEOUT_S) -> subprocess.CompletedProcess:
    return run_command(args, timeout_s, NOT_ON_PATH)


def said(proc: subprocess.CompletedProcess) -> str:
    """What a failed command said, on one line, or its exit status."""
    text = " ".join((proc.stderr + " " + proc.stdout).split())
    return text or f"exit status {proc.returncode}"


def have_qsub() -> bool:
    return shutil.which("qsub") is not None


def cell_available() -> bool:
    """True when this shell is set up for a Grid Engine cell: qsub on PATH and SGE_ROOT set."""
    return have_qsub() and bool(os.environ.get("SGE_ROOT"))


def qconf_show(*args: str) -> Dict[str, str]:
    """A ``qconf -s...`` object as {name: value}. Raises SchedulerError when qconf fails."""
    proc = run(["qconf", *args], COMMAND_TIMEOUT_S)
    if proc.returncode != 0:
        raise SchedulerError(f"qconf {' '.join(args)} failed: {said(proc)}")
    return parse_conf(proc.stdout)


def qconf_list(*args: str) -> List[str]:
    """A ``qconf -s..l`` list (queues, parallel environments); [] for "no ... defined"."""
    proc = run(["qconf", *args], COMMAND_TIMEOUT_S)
    if proc.returncode != 0:
        if "no " in proc.stderr and "defined" in proc.stderr:
            return []
        raise SchedulerError(f"qconf {' '.join(args)} failed: {said(proc)}")
    return proc.stdout.split()


_pe_cache: Dict[str, Optional[str]] = {}


def one_host_pe() -> Optional[str]:
    """A parallel environment that puts all of a job's slots on one host (``allocation_rule
    $pe_slots``), as ``qconf -spl`` and ``qconf -sp`` show them; None when there is none.
    Cached per cell for this process."""
    key = "\0".join(os.environ.get(k, "") for k in ("SGE_ROOT", "SGE_CELL", "SGE_QMASTER_PORT"))
    if key not in _pe_cache:
        found = None
        for name in qconf_list("-spl"):
            if qconf_show("-sp", name).get("allocation_rule") == "$pe_slots":
                found = name
                break
        _pe_cache[key] = found
    return _pe_cache[key]


def pe_for(cpus: int) -> Optional[str]:
    """The parallel environment a task of ``cpus`` slots asks for (None for one slot). Raises
    InputError when there is none to ask for."""
    if cpus <= 1:
        return None
    try:
        name = one_host_pe()
    except SchedulerError as exc:
        raise InputError(f"cpus_per_node={cpus} needs a parallel environment, and the cell's could "
                         f"not be listed ({exc}); name one with slurm_options={{'pe': 'NAME'}}") from None
    if name is None:
        raise InputError(f"cpus_per_node={cpus} needs a parallel environment whose allocation_rule "
                         "is $pe_slots (all slots on one host), and `qconf -spl` lists none; ask "
                         "your administrators which one to use and give slurm_options={'pe': 'NAME'} "
                         "(or put pe in the site defaults file), or use cpus_per_node=1")
    return name
