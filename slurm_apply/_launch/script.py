"""The sbatch array script: text built from data, every value quoted.

Two readers parse the one file, so a value is quoted for the one that reads its line:

* ``#SBATCH`` lines are read by sbatch itself, not by a shell (``_get_argument`` in Slurm's
  ``src/sbatch/opt.c``, checked against Slurm 22.05's ``sbatch -v``): whitespace ends an argument
  unless it is inside single or double quotes, a backslash makes the next character literal
  (inside quotes too), an unquoted ``#`` starts a comment, and a newline ends the line. Nothing
  is expanded. So a value is bare when it is plainly safe, and otherwise put in double quotes
  with ``\\`` and ``"`` escaped.
* the lines after them are bash, and every value there goes through ``shlex.quote``.

A value with a newline or another control character is refused: it would end an ``#SBATCH``
line early and the rest would become a line of the script.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Union

from .._errors import InputError

OptionValue = Union[str, int, float, bool]

# Keys slurm_apply sets itself; a user's value for one of them would break the job's layout.
OWNED_OPTIONS = ("array", "job-name", "output", "error", "cpus-per-task")
_SHORT_FORMS = {"a": "array", "J": "job-name", "o": "output", "e": "error", "c": "cpus-per-task"}

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


def control_characters(value: str) -> List[str]:
    """The newlines and other control characters in ``value``, as their reprs."""
    return sorted({repr(ch) for ch in value if ord(ch) < 32 or 127 <= ord(ch) < 160
                   or ch in "\u2028\u2029"})


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


def _sbatch_path(path: Path) -> str:
    # In --output, sbatch expands %x patterns; a literal % in the directory name must be %%,
    # while the file name keeps its own pattern (%a, the array task id).
    return str(path.parent).replace("%", "%%") + "/" + path.name


def render(*, jobname: str, n_tasks: int, cpus_per_task: int, log_pattern: Path,
           options: Mapping[str, OptionValue], python: str, job_dir: Path, sub: int, token: str,
           workdir: Path, pythonpath: Optional[str], max_concurrent: Optional[int],
           setup: Sequence[str] = ()) -> str:
    array = f"0-{n_tasks - 1}" + (f"%{max_concurrent}" if max_concurrent else "")
    lines: List[str] = [
        "#!/bin/bash",
        f"# slurm_apply array job: submission {sub} of {directive_value(jobname)}",
        f"#SBATCH --array={array}",
        f"#SBATCH --job-name={directive_value(jobname)}",
        f"#SBATCH --cpus-per-task={int(cpus_per_task)}",
        f"#SBATCH --output={directive_value(_sbatch_path(log_pattern))}",
        # A requeued task appends to its log instead of wiping the first attempt's lines.
        "#SBATCH --open-mode=append",
    ]
    for key, value in options.items():
        line = option_line(key, value)
        if line is not None:
            lines.append(line)
    lines.append("")
    lines.append("set -e")
    # Run where the caller was, so relative paths in f mean the same on the node.
    lines.append(f"cd {shlex.quote(str(workdir))}")
    if pythonpath:
        lines.append(f"export PYTHONPATH={shlex.quote(pythonpath)}${{PYTHONPATH:+:$PYTHONPATH}}")
    if setup:
        lines.append("# setup lines, as given")
        lines.extend(setup)  # the user's own shell, verbatim (checked: one line each)
    lines.append(
        # The job's token: a task of a job that was replaced in this directory does nothing.
        f"exec {shlex.quote(python)} -m slurm_apply._node {shlex.quote(str(job_dir))} {int(sub)} "
        f"{shlex.quote(token)}"
    )
    return "\n".join(lines) + "\n"


# The options a follow-up shares with its array: where the user may run and what is charged.
FOLLOWUP_OPTIONS = ("partition", "p", "account", "A", "qos", "q", "reservation", "wckey")


def render_followup(*, jobname: str, log: Path, options: Mapping[str, OptionValue], python: str,
                    job_dir: Path, sub: int, token: str, workdir: Path, pythonpath: Optional[str],
                    setup: Sequence[str], mem: str, time: str) -> str:
    """The follow-up of submission ``sub``: a one-CPU job, started once the array has ended,
    that runs again the rows whose task died (``python -m slurm_apply._job.followup``). It goes where
    the array went (partition, account, qos) and runs the same setup lines, so it finds the
    same Python."""
    lines: List[str] = [
        "#!/bin/bash",
        f"# slurm_apply follow-up of submission {sub} of {directive_value(jobname)}: "
        "retries the rows whose task died",
        f"#SBATCH --job-name={directive_value(jobname + '.retry')}",
        "#SBATCH --cpus-per-task=1",
        f"#SBATCH --mem={directive_value(mem)}",
        f"#SBATCH --time={directive_value(time)}",
        f"#SBATCH --output={directive_value(_sbatch_path(log))}",
        "#SBATCH --open-mode=append",
    ]
    for key, value in options.items():
        line = option_line(key, value) if key in FOLLOWUP_OPTIONS else None
        if line is not None:
            lines.append(line)
    lines += ["", "set -e", f"cd {shlex.quote(str(workdir))}"]
    if pythonpath:
        lines.append(f"export PYTHONPATH={shlex.quote(pythonpath)}${{PYTHONPATH:+:$PYTHONPATH}}")
    if setup:
        lines.append("# setup lines, as given")
        lines.extend(setup)
    lines.append(f"exec {shlex.quote(python)} -m slurm_apply._job.followup {shlex.quote(str(job_dir))} "
                 f"{int(sub)} {shlex.quote(token)}")
    return "\n".join(lines) + "\n"
