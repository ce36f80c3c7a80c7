"""Grid Engine's dialect: what the generic layers write and read through ``Dialect`` (base.py),
from the parts of this folder that know qsub (``options.py``: names and value forms;
``script.py``: the ``#$`` header and the task's variables; ``resources.py``: h_rt and h_vmem).

The portable options ``time``, ``mem``, ``partition``, ``account`` and ``gpus`` are kept under
those names (so a job moves between backends) and written as ``-l h_rt``, ``-l h_vmem`` (per
slot: ``mem`` divided by ``cpus_per_node``), ``-q``, ``-P`` and ``-l gpu=``; ``pe`` names the
parallel environment. Any other key is qsub's own option (``{"l": "scratch=10G"}``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Mapping, Optional, Tuple

from ..base import ArrayHeader, Dialect, FollowupHeader
from . import options, resources, script


class SgeDialect:
    """qsub's options and ``#$`` header."""

    SHORT: Mapping[str, str] = {}  # Grid Engine's one-letter options are names of their own
    OWNED: Tuple[str, ...] = options.OWNED
    JOB_ENV_PREFIXES: Tuple[str, ...] = script.JOB_ENV_PREFIXES
    JOB_ENV_KEPT: Tuple[str, ...] = script.JOB_ENV_KEPT
    STAND_IN: Mapping[str, str] = script.STAND_IN
    TIME_KEYS: Tuple[str, ...] = (options.TIME,)
    MEM_KEYS: Tuple[str, ...] = (options.MEM,)
    MEM_PER_CPU = ""  # no per-slot key of its own: mem is per task, and divided among its slots

    def unknown_name(self, key: str) -> Optional[str]:
        return options.unknown_name(key)

    def bad_value(self, key: str, value: object) -> Optional[str]:
        return options.bad_value(key, value)

    def normalize_key(self, key: str) -> str:
        return script.normalize_key(key)

    def bad_key(self, key: str) -> Optional[str]:
        if options.is_option_key(key):
            return None
        return ("is not a qsub option name (letters, digits and '_', e.g. 'l', 'q', 'P', "
                "'hold_jid'), nor a portable one (" + ", ".join(options.PORTABLE) + ")")

    def owns(self, key: str) -> bool:
        return script.owns(key)

    def header_value(self, value: str) -> str:
        return script.directive_value(value)

    def array_header(self, spec: ArrayHeader) -> List[str]:
        return script.array_header(spec)

    def followup_header(self, spec: FollowupHeader) -> List[str]:
        return script.followup_header(spec)

    def task_environment(self, log: Optional[Callable[[str], Path]] = None) -> List[str]:
        return script.task_environment(log)

    def run_lines(self, command: str) -> List[str]:
        return script.run_lines(command)

    def time_s(self, text: object) -> Optional[float]:
        return resources.time_s(text)

    def time_text(self, seconds: float) -> str:
        return resources.time_text(seconds)

    def mem_mb(self, text: object) -> Optional[float]:
        return resources.mem_mb(text)

    def mem_text(self, mb: float, like: object = "") -> str:
        return resources.mem_text(mb, like)

    def mem_is_per_cpu(self, text: object) -> bool:
        return False


DIALECT: Dialect = SgeDialect()
