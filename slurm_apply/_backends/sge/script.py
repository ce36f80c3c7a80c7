"""The ``#$`` header of a Grid Engine job script, and the lines of its body that are Grid
Engine's: the task's variables, its log, and an exit status Grid Engine will not act on.

qsub reads ``#$`` lines itself and splits them at whitespace; a value with whitespace or a
control character is refused (:func:`directive_value`). Task ids are 1-based (``-t 1-N``); the
package's are 0-based, so a task's index is ``SGE_TASK_ID - 1``. Grid Engine cannot name a file
after that index, so the header sends the job's own output to /dev/null and the body's first
lines send everything to the task's log (``exec >>LOG 2>&1``), appending as a rerun would.

Grid Engine reschedules a job whose script exits 99 and holds one that exits 100 in error
state (``Eqw``) until someone deletes it. Rows run in processes of their own, so no row can
make the task exit so; a user's setup line (``set -e``) or import could. An EXIT trap turns
those two statuses into 1, and the task's command is not ``exec``'d, so the trap runs.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Callable, List, Mapping, Optional

from ..._errors import InputError
from ..._node import taskenv
from ..base import ArrayHeader, FollowupHeader, OptionValue, control_characters
from . import commands, options, resources

# A follow-up goes where its array went: queue and project (and the portable names of those).
FOLLOWUP_OPTIONS = ("partition", "account", "q", "P", "A")
# The job's variables a process that submits another job from inside one must forget.
JOB_ENV_PREFIXES = ("SGE_TASK_", "SGE_ARRAY", "JOB_ID", "JOB_NAME", "RESTARTED", "PE_HOSTFILE", "NSLOTS")
JOB_ENV_KEPT: tuple = ()
# What a stand-in runner sets for a task, as sge_execd would.
STAND_IN = {"SGE_TASK_ID": "{task1}", "JOB_ID": "{job_id}"}
# Statuses Grid Engine acts on: 99 reschedules the job, 100 puts it in error state (Eqw).
ACTED_ON = (99, 100)


def directive_value(value: str) -> str:
    """``value`` for a ``#$`` line, which qsub reads back exactly: one word of text."""
    bad = control_characters(value)
    if bad:
        raise InputError(f"the value {value!r} contains {', '.join(bad)} (a newline or other control "
                         "character), which would end its #$ line early and could add lines to the "
                         "job script; give a one-line value")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"the value {value!r} is not valid text (it cannot be written as UTF-8)") from None
    if any(ch.isspace() for ch in value) or not value:
        raise InputError(f"the value {value!r} has whitespace (or is empty): qsub splits a #$ line at "
                         "whitespace, so it would become several arguments; give one word")
    return value


def normalize_key(key: str) -> str:
    """``-l`` and ``l`` are one option; Grid Engine's names are case-sensitive (-P, -p) and keep
    their underscores (-hold_jid)."""
    return key.lstrip("-")


def owns(key: str) -> bool:
    return key in options.OWNED


def _line(key: str, value: OptionValue) -> Optional[str]:
    if value is False or value is None:
        return None
    if value is True:
        return f"#$ -{key}"
    return f"#$ -{key} {directive_value(str(value))}"


def _user_options(opts: Mapping[str, OptionValue], cpus: int, only: Optional[tuple] = None) -> List[str]:
    """The user's options: the portable ones translated, the others as given."""
    lines: List[str] = []
    for key, value in opts.items():
        if only is not None and key not in only:
            continue
        if value is None or value is False or key == options.PE:
            continue
        if key == options.TIME:
            line: Optional[str] = f"#$ -l h_rt={directive_value(str(value))}"
        elif key == options.MEM:
            line = f"#$ -l h_vmem={directive_value(resources.per_slot(value, cpus))}"
        elif key == options.PARTITION:
            line = f"#$ -q {directive_value(str(value))}"
        elif key == options.ACCOUNT:
            line = f"#$ -P {directive_value(str(value))}"
        elif key == options.GPUS:
            line = f"#$ -l gpu={directive_value(str(value))}"
        else:
            line = _line(key, value)
        if line is not None:
            lines.append(line)
    return lines


def array_header(spec: ArrayHeader) -> List[str]:
    """``-t 1-N``, ``-tc``, the job name, ``-pe <pe> <cpus>``, bash, the output (sent to the
    task's log by the body), then the user's options."""
    cpus = int(spec.cpus_per_task)
    given_pe = spec.options.get(options.PE)
    pe = str(given_pe) if given_pe not in (None, False, True) else commands.pe_for(cpus)
    lines = [f"#$ -N {directive_value(spec.jobname)}", f"#$ -t 1-{int(spec.n_tasks)}"]
    if spec.max_concurrent:
        lines.append(f"#$ -tc {int(spec.max_concurrent)}")
    if pe:
        lines.append(f"#$ -pe {directive_value(pe)} {cpus}")
    # -V: the task sees the submitting shell's environment (PATH, PYTHONPATH, the cell's
    # variables), as sbatch's default --export=ALL does.
    lines += ["#$ -S /bin/bash", "#$ -cwd", "#$ -V", "#$ -o /dev/null", "#$ -j y",
              *_user_options(spec.options, cpus)]
    return lines


def followup_header(spec: FollowupHeader) -> List[str]:
    """A one-slot job named ``<jobname>.retry``, with this time and memory, that goes where the
    array went (its queue and project)."""
    mem_mb = resources.mem_mb(spec.mem)
    return [
        f"#$ -N {directive_value(spec.jobname + '.' + spec.kind)}",
        f"#$ -l h_rt={directive_value(spec.time)}",
        f"#$ -l h_vmem={directive_value(resources.mem_text(mem_mb) if mem_mb else spec.mem)}",
        "#$ -S /bin/bash", "#$ -cwd", "#$ -V",
        f"#$ -o {directive_value(str(spec.log))}", "#$ -j y",
        *_user_options(spec.options, 1, FOLLOWUP_OPTIONS),
    ]


def task_environment(log: Optional[Callable[[str], Path]] = None) -> List[str]:
    """The neutral task variables from Grid Engine's (``SGE_TASK_ID`` is 1-based), the task's
    output sent to its log, and the trap that keeps the script's status off 99 and 100."""
    lines = [
        f"case \"${{SGE_TASK_ID-}}\" in ''|*[!0-9]*) {taskenv.TASK}= ;; "
        f"*) {taskenv.TASK}=$((SGE_TASK_ID - 1)) ;; esac",
        f"export {taskenv.TASK}",
        f'export {taskenv.JOB_ID}="${{JOB_ID-}}${{SGE_TASK_ID:+.$SGE_TASK_ID}}"',
        f'export {taskenv.ARRAY_JOB_ID}="${{JOB_ID-}}"',
        f'export {taskenv.RESTARTS}="${{RESTARTED-}}"',
        # The host's own name: with -V, HOSTNAME may be the submitting host's.
        f'export {taskenv.NODE}="$(uname -n)"',
    ]
    if log is not None:
        before, _, after = str(log("\0")).partition("\0")
        lines.append(f'exec >>{shlex.quote(before)}"${{{taskenv.TASK}}}"{shlex.quote(after)} 2>&1')
    lines += exit_guard()
    return lines


def exit_guard() -> List[str]:
    """An EXIT trap: a status Grid Engine would act on (99: run the job again; 100: hold it in
    error state) leaves the script as 1, and says so."""
    codes = " || ".join(f'[ "$_sa_status" = {c} ]' for c in ACTED_ON)
    return [
        "# Grid Engine reruns a job whose script exits 99 and holds one that exits 100 (Eqw).",
        f"trap '_sa_status=$?; if {codes}; then echo \"slurm_apply: the task ended with status "
        f"$_sa_status, which Grid Engine would act on (99: rerun, 100: hold in error state); it "
        f"exits 1 instead\" >&2; exit 1; fi' EXIT",
    ]


def run_lines(command: str) -> List[str]:
    """The task's command, not ``exec``'d: the EXIT trap must see its status (set again here
    for a follow-up, whose body has no task variables)."""
    return [*exit_guard(), command]
