"""Slurm's dialect: what the generic layers write and read through ``Dialect`` (base.py), from
the parts of this folder that know sbatch (``options.py``: names and value forms; ``script.py``:
the ``#SBATCH`` header and the task's variables; ``resources.py``: time and memory forms)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Mapping, Optional, Tuple

from ..base import ArrayHeader, Dialect, FollowupHeader
from . import options, resources, script


class SlurmDialect:
    """sbatch's options and ``#SBATCH`` header."""

    SHORT: Mapping[str, str] = options.SHORT
    OWNED: Tuple[str, ...] = script.OWNED_OPTIONS
    JOB_ENV_PREFIXES: Tuple[str, ...] = script.JOB_ENV_PREFIXES
    JOB_ENV_KEPT: Tuple[str, ...] = script.JOB_ENV_KEPT
    STAND_IN: Mapping[str, str] = script.STAND_IN
    TIME_KEYS: Tuple[str, ...] = ("time", "t")
    MEM_KEYS: Tuple[str, ...] = ("mem", "mem-per-cpu")
    MEM_PER_CPU = "mem-per-cpu"

    def unknown_name(self, key: str) -> Optional[str]:
        return options.unknown_name(key)

    def bad_value(self, key: str, value: object) -> Optional[str]:
        return options.bad_value(key, value)

    def normalize_key(self, key: str) -> str:
        return script.normalize_key(key)

    def bad_key(self, key: str) -> Optional[str]:
        if script.is_option_key(key):
            return None
        return ("is not an sbatch option name (letters, digits and '-' or '_', e.g. 'time', 'mem', "
                "'partition', or one letter like 'p')")

    def owns(self, key: str) -> bool:
        # getopt takes any unambiguous abbreviation, so --outp would still be --output.
        return key in self.OWNED or (len(key) > 1 and any(o.startswith(key) for o in self.OWNED))

    def header_value(self, value: str) -> str:
        return script.directive_value(value)

    def array_header(self, spec: ArrayHeader) -> List[str]:
        return script.array_header(spec)

    def followup_header(self, spec: FollowupHeader) -> List[str]:
        return script.followup_header(spec)

    def task_environment(self, log: Optional[Callable[[str], Path]] = None) -> List[str]:
        return script.task_environment()  # the header names each task's log (%a)

    def run_lines(self, command: str) -> List[str]:
        return [f"exec {command}"]

    def time_s(self, text: object) -> Optional[float]:
        return resources.time_s(text)

    def time_text(self, seconds: float) -> str:
        return resources.time_text(seconds)

    def mem_mb(self, text: object) -> Optional[float]:
        return resources.mem_mb(text)

    def mem_text(self, mb: float, like: object = "") -> str:
        return resources.mem_text(mb, like)

    def mem_is_per_cpu(self, text: object) -> bool:
        return resources.mem_per(text) == "c"


DIALECT: Dialect = SlurmDialect()
