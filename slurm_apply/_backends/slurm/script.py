"""The ``#SBATCH`` header of a job script: Slurm's option names, short forms and quoting.

sbatch reads ``#SBATCH`` lines itself, not through a shell (``_get_argument`` in Slurm's
``src/sbatch/opt.c``, checked against Slurm 22.05's ``sbatch -v``): whitespace ends an argument
unless it is inside single or double quotes, a backslash makes the next character literal
(inside quotes too), an unquoted ``#`` starts a comment, and a newline ends the line. Nothing is
expanded. So a value is bare when it is plainly safe, and otherwise put in double quotes with
``\\`` and ``"`` escaped. A value with a newline or another control character is refused: it
would end an ``#SBATCH`` line early and the rest would become a line of the script.

The bash body after the header is the package's own (``_launch/script.py``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Mapping, Optional

from ..._errors import InputError
from ..._node import taskenv
from ..base import ArrayHeader, FollowupHeader, OptionValue, control_characters

# Keys slurm_apply sets itself; a user's value for one of them would break the job's layout.
OWNED_OPTIONS = ("array", "job-name", "output", "error", "cpus-per-task")
_SHORT_FORMS = {"a": "array", "J": "job-name", "o": "output", "e": "error", "c": "cpus-per-task"}
# The options a follow-up shares with its array: where the user may run and what is charged.
FOLLOWUP_OPTIONS = ("partition", "p", "account", "A", "qos", "q", "reservation", "wckey")

# Characters sbatch reads literally outside quotes; anything else puts the value in quotes.
_BARE = re.compile(r"[A-Za-z0-9_.,:/=+@%^\[\]-]+")
# An option name once normalized: one letter (a short option) or a long name.
_KEY = re.compile(r"[A-Za-z]|[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*")


def normalize_key(key: str) -> str:
    """``--job_name``, ``job_name`` and ``J`` all mean ``job-name``; other letters stay short options."""
    key = key.lstrip("-")
    if len(key) == 1:
        return _SHORT_FORMS.get(key, key)
    return key.replace("_", "-")


def is_option_key(key: str) -> bool:
    """True for a normalized key that renders as exactly one sbatch option."""
    return bool(_KEY.fullmatch(key))


def directive_value(value: str) -> str:
    """Quote a value for an ``#SBATCH`` line so that sbatch reads back exactly ``value``."""
    bad = control_characters(value)
    if bad:
        raise InputError(
            f"the value {value!r} contains {', '.join(bad)} (a newline or other control character), "
            "which would end its #SBATCH line early and could add lines to the job script; "
            "give a one-line value"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"the value {value!r} is not valid text (it cannot be written as UTF-8)") from None
    if _BARE.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def option_line(key: str, value: OptionValue) -> Optional[str]:
    """One ``#SBATCH`` line: ``True`` gives a bare flag, ``False`` or ``None`` no line at all.

    A one-letter key is a short option (``-p debug``): as ``--p=debug`` getopt would read an
    ambiguous abbreviation of the long options starting with p.
    """
    if not is_option_key(key):
        raise InputError(f"{key!r} is not an sbatch option name (letters, digits and '-')")
    if value is False or value is None:
        return None
    flag = f"-{key}" if len(key) == 1 else f"--{key}"
    if value is True:
        return f"#SBATCH {flag}"
    quoted = directive_value(str(value))
    return f"#SBATCH {flag} {quoted}" if len(key) == 1 else f"#SBATCH {flag}={quoted}"


def _output_path(path: Path) -> str:
    # In --output, sbatch expands %x patterns; a literal % in the directory name must be %%,
    # while the file name keeps its own pattern (%a, the array task id).
    return str(path.parent).replace("%", "%%") + "/" + path.name


def _options(options: Mapping[str, OptionValue], only: Optional[tuple] = None) -> List[str]:
    lines = []
    for key, value in options.items():
        line = option_line(key, value) if only is None or key in only else None
        if line is not None:
            lines.append(line)
    return lines


def array_header(spec: ArrayHeader) -> List[str]:
    """``--array=0-N[%M]``, the job name, the CPUs, one log per task (``%a``), then the user's options."""
    array = f"0-{spec.n_tasks - 1}" + (f"%{spec.max_concurrent}" if spec.max_concurrent else "")
    return [
        f"#SBATCH --array={array}",
        f"#SBATCH --job-name={directive_value(spec.jobname)}",
        f"#SBATCH --cpus-per-task={int(spec.cpus_per_task)}",
        f"#SBATCH --output={directive_value(_output_path(spec.log('%a')))}",
        # A requeued task appends to its log instead of wiping the first attempt's lines.
        "#SBATCH --open-mode=append",
        *_options(spec.options),
    ]


def followup_header(spec: FollowupHeader) -> List[str]:
    """A one-CPU job named ``<jobname>.retry`` that goes where the array went (partition,
    account, qos, ...)."""
    return [
        f"#SBATCH --job-name={directive_value(spec.jobname + '.' + spec.kind)}",
        "#SBATCH --cpus-per-task=1",
        f"#SBATCH --mem={directive_value(spec.mem)}",
        f"#SBATCH --time={directive_value(spec.time)}",
        f"#SBATCH --output={directive_value(_output_path(spec.log))}",
        "#SBATCH --open-mode=append",
        *_options(spec.options, FOLLOWUP_OPTIONS),
    ]


# The neutral task variables, from what Slurm sets in an array task (SLURM_RESTART_COUNT only
# once the task has been requeued).
_TASK_ENV = ((taskenv.TASK, "SLURM_ARRAY_TASK_ID"), (taskenv.JOB_ID, "SLURM_JOB_ID"),
             (taskenv.ARRAY_JOB_ID, "SLURM_ARRAY_JOB_ID"), (taskenv.RESTARTS, "SLURM_RESTART_COUNT"),
             (taskenv.NODE, "SLURMD_NODENAME"))
# What the local runner sets for a task, standing in for slurmd (SLURM_ARRAY_TASK_ID is the one
# the README promises a row function).
STAND_IN = {"SLURM_ARRAY_TASK_ID": "{task}", "SLURM_ARRAY_JOB_ID": "{job_id}",
            "SLURM_JOB_ID": "{job_id}_{task}", "SLURMD_NODENAME": "{node}"}
# A follow-up forgets its own job's variables (sbatch would pass them on to the retry's tasks,
# whose job they do not describe); SLURM_CONF says which cluster, so it stays.
JOB_ENV_PREFIXES = ("SLURM",)
JOB_ENV_KEPT = ("SLURM_CONF",)


def task_environment() -> List[str]:
    """``export SLURM_APPLY_TASK="${SLURM_ARRAY_TASK_ID-}"``, ... one line per variable."""
    return [f'export {neutral}="${{{slurm}-}}"' for neutral, slurm in _TASK_ENV]
