"""Which rows to run again after a submission has ended, and with what limits: a pure decision.

A row is retried when its task died of something another run may survive: its node failed
(NODE_FAIL), it was preempted (PREEMPTED), the scheduler lost it (LOST), it ran out of memory
(OUT_OF_MEMORY: the retry asks for twice the memory) or out of time (TIMEOUT: twice the time),
or it was killed from outside by something its scheduler cannot name (KILLED).
A raised limit stays within the user's ceiling (``max_mem``, ``max_time``) and the partition's
(MaxMemPerNode or MaxMemPerCPU, MaxTime). Rows that raised are retried only with
``retry_errors=True``; a cancelled or crashed task's rows are not retried.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .. import _backends as backends
from .._backends import Dialect, Limits
from .._backends.states import KILLED, LOST, NODE_FAIL, OUT_OF_MEMORY, PREEMPTED, TIMEOUT
from .._store.manifest import RetryPolicy, Submission

RETRYABLE = (NODE_FAIL, PREEMPTED, OUT_OF_MEMORY, TIMEOUT, LOST, KILLED)
ERROR = "ERROR"  # a row that raised (retried only with retry_errors=True)
MEMORY, TIME = OUT_OF_MEMORY, TIMEOUT


@dataclass
class Facts:
    """What the decision needs of an ended submission (gathered by :mod:`._retry`)."""

    rows: Dict[int, str]  # row without a result -> why: a task state, or ERROR
    mem_mb: Optional[float] = None  # the memory its tasks were allowed, as the scheduler said
    time_s: Optional[float] = None  # their time limit
    limits: Limits = field(default_factory=Limits)


@dataclass
class Plan:
    """Rows to run again by why, the new submission's sbatch options, the limits raised
    ({"mem": ("200M", "400M")}), and the rows given up on by why."""

    retry: Dict[str, List[int]] = field(default_factory=dict)
    options: Dict[str, Any] = field(default_factory=dict)
    raised: Dict[str, Tuple[str, str]] = field(default_factory=dict)
    given_up: Dict[str, List[int]] = field(default_factory=dict)
    capped: Dict[str, str] = field(default_factory=dict)  # key -> the ceiling that kept it under twice


def decide(policy: RetryPolicy, sub: Submission, facts: Facts) -> Plan:
    """What to run again after ``sub`` has ended; its limits are read and written in the forms
    of its backend's dialect."""
    dialect = backends.dialect(sub.backend)
    plan = Plan(options=dict(sub.slurm_options))
    for row, why in sorted(facts.rows.items()):
        if why == ERROR and not policy.retry_errors:
            continue
        if why != ERROR and why not in RETRYABLE:
            continue
        if sub.attempt >= policy.retries:
            plan.given_up.setdefault(f"{why}: all {policy.retries} retries used", []).append(row)
        else:
            plan.retry.setdefault(why, []).append(row)
    if MEMORY in plan.retry:
        _raise(plan, MEMORY, _more_memory(dialect, policy, sub, facts))
    if TIME in plan.retry:
        _raise(plan, TIME, _more_time(dialect, policy, sub, facts))
    return plan


def _raise(plan: Plan, why: str, raised: Tuple[str, str, str, str]) -> None:
    """Apply a raised limit (key, old, new, the ceiling that capped it or ""), or give those rows
    up (key "", reason in old)."""
    key, old, new, capped = raised
    if not key:
        plan.given_up.setdefault(old, []).extend(plan.retry.pop(why))
        return
    plan.options[key] = new
    plan.raised[key] = (old, new)
    if capped:
        plan.capped[key] = capped


def _option(options: Dict[str, Any], *keys: str) -> Tuple[str, Any]:
    for key in keys:
        if key in options and options[key] not in (None, False, True):
            return key, options[key]
    return "", None


def _more_memory(d: Dialect, policy: RetryPolicy, sub: Submission, facts: Facts) -> Tuple[str, str, str, str]:
    key, value = _option(sub.slurm_options, *d.MEM_KEYS)
    current = d.mem_mb(value) if key else facts.mem_mb
    if current is None or current <= 0:
        return ("", f"{MEMORY}: the memory its tasks had is not known, so a retry cannot ask for "
                    "more; give slurm_options={'mem': ...}", "", "")
    shown = str(value) if key else d.mem_text(current)
    # Ceilings are per task (max_mem, MaxMemPerNode) or per CPU (MaxMemPerCPU); with a per-CPU
    # option (--mem-per-cpu) the value raised is per CPU, so each is brought to that unit.
    cpus = max(1, sub.cpus_per_task)
    scale = cpus if key and key == d.MEM_PER_CPU else 1
    part = facts.limits
    ceiling, source = lowest(
        (_over(d.mem_mb(policy.max_mem or ""), scale), f"max_mem={policy.max_mem}"),
        (_over(part.max_mem_mb, scale), part.max_mem_from or f"partition {part.partition}'s MaxMemPerNode"),
        (_over(part.max_mem_per_cpu_mb, scale / cpus),
         part.max_mem_per_cpu_from or f"partition {part.partition}'s MaxMemPerCPU"))
    new = doubled(current, ceiling)
    if new is None:
        return "", f"{MEMORY} at {shown}: no more allowed ({source})", "", ""
    return key or d.MEM_KEYS[0], shown, d.mem_text(new, like=shown), source if new < 2 * current else ""


def _over(mb: Optional[float], scale: float) -> Optional[float]:
    return None if mb is None else mb / scale


def _more_time(d: Dialect, policy: RetryPolicy, sub: Submission, facts: Facts) -> Tuple[str, str, str, str]:
    key, value = _option(sub.slurm_options, *d.TIME_KEYS)
    current = d.time_s(value) if key else facts.time_s
    if current is None or current <= 0 or current == float("inf"):
        return ("", f"{TIME}: the time limit its tasks had is not known, so a retry cannot ask "
                    "for more; give slurm_options={'time': ...}", "", "")
    shown = str(value) if key else d.time_text(current)
    ceiling, source = lowest(
        (d.time_s(policy.max_time) if policy.max_time else None, f"max_time={policy.max_time}"),
        (facts.limits.max_time_s, facts.limits.max_time_from or f"partition {facts.limits.partition}'s MaxTime"))
    new = doubled(current, ceiling)
    if new is None:
        return "", f"{TIME} at {shown}: no more allowed ({source})", "", ""
    return key or d.TIME_KEYS[0], shown, d.time_text(new), source if new < 2 * current else ""


def doubled(current: float, ceiling: Optional[float]) -> Optional[float]:
    """Twice ``current``, at most ``ceiling``; None when it cannot grow (at the ceiling already)."""
    if ceiling is not None and current >= ceiling:
        return None
    return min(current * 2, ceiling) if ceiling is not None else current * 2


def lowest(*bounds: Tuple[Optional[float], str]) -> Tuple[Optional[float], str]:
    """The tightest of several (ceiling, where it comes from); (None, "") when there is none."""
    known = [(v, why) for v, why in bounds if v is not None and v != math.inf]
    return min(known, key=lambda b: b[0]) if known else (None, "")
