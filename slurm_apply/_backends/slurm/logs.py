"""What slurmstepd writes into a task's output when it kills the task, read back.

Pure functions over a log's text (tests/test_parsers.py holds literal lines from Slurm 22.05);
the backend offers them as ``death_in_log`` and ``memory_limit_in_log``.
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

from .. import states as st

_TIME_LIMIT = re.compile(r"\*\*\* JOB \S+ ON (\S+) CANCELLED AT (\S+) DUE TO TIME LIMIT")
_MEMORY = re.compile(r"exceeded memory limit \((\d+) > (\d+)\)")
_OOM_CGROUP = re.compile(r"oom[-_ ]kill", re.I)
_NODE_FAIL = re.compile(r"\*\*\* JOB \S+ ON (\S+) CANCELLED AT (\S+) DUE TO NODE FAILURE")
_PREEMPT = re.compile(r"\*\*\* JOB \S+ ON (\S+) CANCELLED AT (\S+) DUE TO PREEMPTION")
_CANCELLED = re.compile(r"\*\*\* JOB \S+ ON (\S+) CANCELLED AT (\S+)(?: \*\*\*)?\s*$", re.M)
# In every kill notice of slurmstepd's: what a wait looks for in the bytes a log gained.
KILL_MARKS = ("slurmstepd", "*** JOB")
# A memory kill is followed by a plain CANCELLED line for the same kill, this close.
_SAME_KILL_CHARS = 2000


def _mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.0f}M"


def death(text: str) -> Optional[Tuple[str, str]]:
    """The death a task's log tells of, as (state, detail), or None.

    The last kill line wins: a requeued task appends a new attempt after the old one's lines.
    """
    found: List[Tuple[int, str, str]] = []
    for m in _TIME_LIMIT.finditer(text):
        found.append((m.start(), st.TIMEOUT, f"killed at its time limit on {m.group(1)}"))
    for m in _MEMORY.finditer(text):
        used, limit = int(m.group(1)), int(m.group(2))
        found.append((m.start(), st.OUT_OF_MEMORY, f"used {_mib(used)} of {_mib(limit)} allowed"))
    for m in _OOM_CGROUP.finditer(text):
        found.append((m.start(), st.OUT_OF_MEMORY, "killed by the out-of-memory handler"))
    for m in _NODE_FAIL.finditer(text):
        found.append((m.start(), st.NODE_FAIL, f"node {m.group(1)} failed"))
    for m in _PREEMPT.finditer(text):
        found.append((m.start(), st.PREEMPTED, f"preempted on {m.group(1)}"))
    for m in _CANCELLED.finditer(text):
        if "DUE TO" not in m.group(0):
            found.append((m.start(), st.CANCELLED, f"cancelled on {m.group(1)}"))
    if not found:
        return None
    found.sort()
    last_pos = found[-1][0]
    # Report the cause of a memory kill, not the CANCELLED line that follows it.
    for pos, state, detail in reversed(found):
        if state == st.OUT_OF_MEMORY and last_pos - pos < _SAME_KILL_CHARS:
            return state, detail
    return found[-1][1], found[-1][2]


def memory_limit_mb(text: str) -> Optional[float]:
    """The memory limit slurmstepd enforced, from the last kill line of a task's log (MiB)."""
    found = _MEMORY.findall(text)
    return int(found[-1][1]) / 2**20 if found else None
