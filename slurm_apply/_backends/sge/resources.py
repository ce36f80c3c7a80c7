"""Time and memory limits in Grid Engine's forms (``h_rt``, ``h_vmem``), read and written back.

Pure functions; the generic layers reach them through the dialect (``dialect.py``), in seconds
and MiB. Grid Engine reads a bare number as seconds (``h_rt``) or bytes (``h_vmem``), where
Slurm reads minutes and megabytes: the portable options ``time`` and ``mem`` therefore take only
the forms both read alike (``H:MM:SS``; a whole number with a unit), and refuse a bare number.
"""

from __future__ import annotations

import math
import re
from typing import Optional

# h_rt: seconds, or [[h:]m:]s (Grid Engine's own forms, as qconf and qstat print them).
_RT = re.compile(r"^\s*(\d+)(?::(\d+))?(?::(\d+))?\s*$")
# h_vmem: a number with K, M, G, T (powers of 1024) or k, m, g, t (powers of 1000); bare: bytes.
_VMEM = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTkmgt]?)\s*$")
_MB = {"": 1 / 2**20, "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2,
       "k": 1000 / 2**20, "m": 1000**2 / 2**20, "g": 1000**3 / 2**20, "t": 1000**4 / 2**20}
_UNLIMITED = ("INFINITY", "UNLIMITED")

# The portable forms (what ``time`` and ``mem`` take on this backend).
PORTABLE_TIME = re.compile(r"\d+:\d{1,2}:\d{1,2}")
PORTABLE_MEM = re.compile(r"\d+[KMGT]")
TIME_FORM = ("hours:minutes:seconds, e.g. '2:00:00' or '0:30:00' (a bare number would be seconds to "
             "Grid Engine and minutes to Slurm, so it is not taken)")
MEM_FORM = ("a whole number with a unit K, M, G or T, e.g. '4G' or '500M' (a bare number would be "
            "bytes to Grid Engine and megabytes to Slurm, so it is not taken)")


def time_s(text: object) -> Optional[float]:
    """Seconds of an ``h_rt`` (``"3600"``, ``"1:00:00"``, ``"90:00"``); ``math.inf`` for
    INFINITY; None when ``text`` is not a time."""
    value = str(text).strip()
    if value.upper() in _UNLIMITED:
        return math.inf
    m = _RT.match(value)
    if not m:
        return None
    parts = [int(p) for p in m.groups() if p is not None]
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + part
    return float(seconds)


def time_text(seconds: float) -> str:
    """Seconds as ``h_rt`` takes them, ``H:MM:SS``, rounded up to a whole second."""
    s = max(1, math.ceil(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def mem_mb(text: object) -> Optional[float]:
    """MiB of an ``h_vmem`` (``"4G"`` -> 4096; ``"1000000000"``: bytes); None when not a size
    (INFINITY included: no limit to raise)."""
    m = _VMEM.match(str(text))
    return float(m.group(1)) * _MB[m.group(2)] if m else None


def mem_text(mb: float, like: object = "") -> str:
    """MiB as ``h_vmem`` takes them, in the unit of ``like`` when whole in it: ``(8192, "4G")``
    -> ``"8G"``; otherwise whole MiB, ``"400M"``."""
    m = _VMEM.match(str(like))
    unit = m.group(2) if m and m.group(2) in ("K", "M", "G", "T") else "M"
    value = mb / _MB[unit]
    if abs(value - round(value)) < 1e-9 and round(value) > 0:
        return f"{round(value)}{unit}"
    return f"{math.ceil(mb)}M"


def per_slot(mem: object, slots: int) -> str:
    """A task's memory divided among its slots, as ``h_vmem`` takes it: Grid Engine applies
    ``h_vmem`` to each slot of a parallel job (the task gets slots times as much)."""
    mb = mem_mb(mem)
    if mb is None:
        raise ValueError(f"expected a memory size such as 4G, got {mem!r}")
    if slots <= 1:
        return str(mem).strip()
    return f"{math.ceil(mb / slots)}M"
