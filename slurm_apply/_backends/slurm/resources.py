"""Memory and time limits in Slurm's own forms, read and written back.

Pure functions over the strings sbatch takes and sacct/squeue/scontrol print, so that a retry
after OUT_OF_MEMORY or TIMEOUT can ask for more, and say how much, in the user's own units. The
generic layers reach them through the dialect (``dialect.py``), in seconds and MiB.
"""

from __future__ import annotations

import math
import re
from typing import Optional

_MEM = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*([nc]?)\s*$", re.I)
_MB_PER_UNIT = {"K": 1 / 1024, "": 1.0, "M": 1.0, "G": 1024.0, "T": 1024.0 ** 2}
_UNLIMITED = ("UNLIMITED", "INFINITE")


def mem_mb(text: object) -> Optional[float]:
    """Megabytes of a Slurm memory size: ``"4G"`` -> 4096, ``4000`` -> 4000 (sbatch reads a bare
    number as megabytes); sacct's per-node/per-CPU suffix (``"500Mc"``) is ignored here (see
    :func:`mem_per`). None when ``text`` is not a size."""
    m = _MEM.match(str(text))
    return float(m.group(1)) * _MB_PER_UNIT[m.group(2).upper()] if m else None


def mem_per(text: object) -> str:
    """``"c"`` when sacct's ReqMem says per CPU (``"500Mc"``), ``"n"`` otherwise."""
    m = _MEM.match(str(text))
    return "c" if m and m.group(3).lower() == "c" else "n"


def mem_text(mb: float, like: object = "") -> str:
    """Megabytes in sbatch's form, in the unit of ``like`` when the value is whole in it:
    ``(8192, "4G")`` -> ``"8G"``; otherwise whole megabytes, ``"400M"``."""
    m = _MEM.match(str(like))
    unit = m.group(2).upper() if m and m.group(2) else "M"
    value = mb / _MB_PER_UNIT[unit]
    if abs(value - round(value)) < 1e-9 and round(value) > 0:
        return f"{round(value)}{unit}"
    return f"{math.ceil(mb)}M"


def time_s(text: object) -> Optional[float]:
    """Seconds of a Slurm time limit (``"90"`` minutes, ``"M:S"``, ``"H:M:S"``, ``"D-H"``,
    ``"D-H:M"``, ``"D-H:M:S"``); ``math.inf`` for UNLIMITED; None when not a time."""
    value = str(text).strip()
    if value.upper() in _UNLIMITED:
        return math.inf
    days, _, rest = value.rpartition("-")
    if days and not days.isdigit():
        return None
    parts = rest.split(":")
    if not all(p.isdigit() for p in parts) or len(parts) > 3:
        return None
    nums = [int(p) for p in parts]
    if days:  # D-H, D-H:M, D-H:M:S
        nums += [0] * (3 - len(nums))
        h, mi, s = nums
    elif len(nums) == 1:  # minutes
        h, mi, s = 0, nums[0], 0
    elif len(nums) == 2:  # minutes:seconds
        h, mi, s = 0, nums[0], nums[1]
    else:
        h, mi, s = nums
    return float(int(days or 0) * 86400 + h * 3600 + mi * 60 + s)


def time_text(seconds: float) -> str:
    """A time limit as sbatch takes it, in whole minutes (Slurm counts limits in minutes):
    ``"HH:MM:SS"``, or ``"D-HH:MM:SS"`` from a day up."""
    minutes = max(1, math.ceil(seconds / 60))
    days, minutes = divmod(minutes, 1440)
    hm = f"{minutes // 60:02d}:{minutes % 60:02d}:00"
    return f"{days}-{hm}" if days else hm

