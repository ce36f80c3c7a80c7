"""The sbatch array script: text built from data, every value quoted."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Union

from ._errors import InputError

OptionValue = Union[str, int, float, bool]

# Keys slurm_apply sets itself; a user's value for one of them would break the job's layout.
OWNED_OPTIONS = ("array", "job-name", "output", "error", "cpus-per-task")
_SHORT_FORMS = {"a": "array", "J": "job-name", "o": "output", "e": "error", "c": "cpus-per-task"}


def normalize_key(key: str) -> str:
    """``job_name`` and ``J`` both mean ``job-name``."""
    key = key.lstrip("-")
    return _SHORT_FORMS.get(key, key.replace("_", "-"))


def directive_value(value: str) -> str:
    """Quote a value for an ``#SBATCH`` line.

    sbatch splits these lines itself (not a shell): it honours single or double quotes and has no
    escape character, so a value is wrapped in whichever quote it does not contain.
    """
    if not any(ch in value for ch in " \t'\"#\\"):
        return value
    if '"' not in value:
        return f'"{value}"'
    if "'" not in value:
        return f"'{value}'"
    raise InputError(
        f"the value {value!r} contains both ' and \", which an #SBATCH line cannot carry; "
        "rename the path or value without one of them"
    )


def _sbatch_path(path: Path) -> str:
    # In --output, sbatch expands %x patterns; a literal % in the directory name must be %%,
    # while the file name keeps its own pattern (%a, the array task id).
    return str(path.parent).replace("%", "%%") + "/" + path.name


def render(*, jobname: str, n_tasks: int, cpus_per_task: int, log_pattern: Path,
           options: Mapping[str, OptionValue], python: str, job_dir: Path, sub: int,
           workdir: Path, pythonpath: Optional[str], max_concurrent: Optional[int]) -> str:
    array = f"0-{n_tasks - 1}" + (f"%{max_concurrent}" if max_concurrent else "")
    lines: List[str] = [
        "#!/bin/bash",
        f"# slurm_apply array job: submission {sub} of {directive_value(jobname)}",
        f"#SBATCH --array={array}",
        f"#SBATCH --job-name={directive_value(jobname)}",
        f"#SBATCH --cpus-per-task={cpus_per_task}",
        f"#SBATCH --output={directive_value(_sbatch_path(log_pattern))}",
        # A requeued task appends to its log instead of wiping the first attempt's lines.
        "#SBATCH --open-mode=append",
    ]
    for key, value in options.items():
        if value is True:
            lines.append(f"#SBATCH --{key}")
        elif value is False or value is None:
            continue
        else:
            lines.append(f"#SBATCH --{key}={directive_value(str(value))}")
    lines.append("")
    lines.append("set -e")
    # Run where the caller was, so relative paths in f mean the same on the node.
    lines.append(f"cd {shlex.quote(str(workdir))}")
    if pythonpath:
        lines.append(f"export PYTHONPATH={shlex.quote(pythonpath)}${{PYTHONPATH:+:$PYTHONPATH}}")
    lines.append(
        f"exec {shlex.quote(python)} -m slurm_apply._worker {shlex.quote(str(job_dir))} {sub}"
    )
    return "\n".join(lines) + "\n"


def options_to_dict(options: Optional[Mapping[str, OptionValue]]) -> Dict[str, OptionValue]:
    return {normalize_key(k): v for k, v in (options or {}).items()}
