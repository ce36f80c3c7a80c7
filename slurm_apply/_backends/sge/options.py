"""Which qsub options exist, which of them the package writes itself, and the forms of the
portable options (``time``, ``mem``, ``partition``, ``account``, ``gpus``, ``pe``).

The names come from this machine's own ``qsub -help`` (run once per PATH and ``SGE_ROOT``, and
corrected by :func:`.parse.parse_qsub_help` for what 8.1.9's help gets wrong); without a qsub
that answers, from the list Son of Grid Engine 8.1.9 prints. A typo is refused before anything
is written, not after the job has waited in a queue.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
from typing import Dict, Optional

from ..._errors import SchedulerError
from . import resources as res
from .parse import parse_qsub_help

# `qsub -help` of Son of Grid Engine 8.1.9 (Debian 12), corrected: name -> its argument.
HELP_8_1_9 = {
    "a": "date_time", "ac": "context_list", "A": "account_string", "ar": "ar_id", "b": "y[es]|n[o]",
    "binding": "[env|pe|set] exp|lin|str", "c": "ckpt_selector", "ckpt": "ckpt_name", "clear": "",
    "cwd": "", "C": "directive_prefix", "dc": "simple_context_list", "dl": "date_time",
    "e": "path_list", "h": "", "hard": "", "he": "y[es]|n[o]", "help": "",
    "hold_jid": "job_identifier_list", "hold_jid_ad": "job_identifier_list", "i": "file_list",
    "j": "y[es]|n[o]", "js": "job_share", "jsv": "jsv_url", "l": "resource_list", "M": "mail_list",
    "m": "mail_options", "masterq": "wc_queue_list", "N": "name", "notify": "", "now": "y[es]|n[o]",
    "o": "path_list", "ot": "tickets", "P": "project_name", "p": "priority",
    "pe": "wc_pe_name slot_range", "pty": "y[es]|n[o]", "q": "wc_queue_list", "R": "y[es]|n[o]",
    "r": "y[es]|n[o]", "sc": "context_list", "shell": "y[es]|n[o]", "soft": "", "sync": "y[es]|n[o]",
    "S": "path_list", "t": "task_id_range", "tc": "max_running_tasks", "terse": "",
    "v": "variable_list", "verify": "", "V": "", "w": "e|w|n|v|p", "wd": "working_directory",
}

# Options the package sets itself: a user's value for one would break the job's layout (its
# tasks, their logs, the shell that reads the script, where it runs), or is not a job's option.
OWNED = ("t", "tc", "N", "o", "e", "j", "S", "cwd", "wd", "terse", "sync", "b", "shell", "C",
         "help", "verify", "clear", "@")

# The portable options: the same key means the same on every backend. Grid Engine has no
# option of these names, so a key is never both.
TIME, MEM, PARTITION, ACCOUNT, GPUS, PE = "time", "mem", "partition", "account", "gpus", "pe"
PORTABLE = (TIME, MEM, PARTITION, ACCOUNT, GPUS)

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_QUEUE = re.compile(r"[A-Za-z0-9_.*@,-]+")
_PE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.*-]*")
_cache: Dict[str, Dict[str, str]] = {}


def qsub_options() -> Dict[str, str]:
    """Every option qsub takes here -> its argument ("" for a flag); cached per PATH and SGE_ROOT."""
    key = os.environ.get("PATH", "") + "\0" + os.environ.get("SGE_ROOT", "")
    if key not in _cache:
        found: Dict[str, str] = {}
        if shutil.which("qsub"):
            try:
                proc = subprocess.run(["qsub", "-help"], capture_output=True, text=True, timeout=10,
                                      stdin=subprocess.DEVNULL)
                found = parse_qsub_help(proc.stdout + proc.stderr)
            except (OSError, subprocess.TimeoutExpired, SchedulerError):
                found = {}
        _cache[key] = found or dict(HELP_8_1_9)
    return _cache[key]


def is_option_key(key: str) -> bool:
    return bool(_NAME.fullmatch(key))


def unknown_name(key: str) -> Optional[str]:
    """Why ``key`` (without its dash) is neither a portable option nor one qsub takes, or None."""
    if key in PORTABLE or key == PE:
        return None
    names = qsub_options()
    if key in names:
        return None
    close = difflib.get_close_matches(key, sorted([*names, *PORTABLE]), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return (f"qsub has no option -{key}{hint} (checked against `qsub -help`; the portable options "
            f"are {', '.join(PORTABLE)})")


def bad_value(key: str, value: object) -> Optional[str]:
    """Why ``value`` is not a form this backend takes for ``key``, or None."""
    if value is None or value is False:
        return None
    text = str(value).strip()
    if key in PORTABLE or key == PE:
        if value is True:
            return f"{key} needs a value, not True"
        forms = {
            TIME: (res.PORTABLE_TIME, res.TIME_FORM),
            MEM: (res.PORTABLE_MEM, res.MEM_FORM),
            PARTITION: (_QUEUE, "a queue name (or a list, wildcards allowed), e.g. 'all.q'; it becomes -q"),
            ACCOUNT: (_NAME, "a project name, e.g. 'lab'; it becomes -P"),
            GPUS: (re.compile(r"[1-9]\d*"), "a whole number of GPUs, e.g. 1; it becomes -l gpu=N"),
            PE: (_PE_NAME, "the name of a parallel environment only, e.g. 'smp': slurm_apply asks for "
                           "cpus_per_node slots of it"),
        }
        pattern, form = forms[key]
        if pattern.fullmatch(text):
            return None
        return f"{key}={value!r} is not a form this backend takes: expected {form}"
    argument = qsub_options().get(key)
    if argument == "" and value is not True:
        return f"-{key} is a flag: give True, or leave it out (got {value!r})"
    if argument and value is True:
        return f"-{key} needs a value ({argument}), not True"
    if value is not True and any(ch.isspace() for ch in text):
        return (f"{key}={value!r} has whitespace, which would split it into several arguments "
                "of its #$ line; give one word")
    if key == "l" and re.search(r"(^|,)\s*(h_rt|h_vmem)\s*=", text):
        return (f"l={value!r} sets h_rt or h_vmem, which the portable options set (and retries "
                "raise): use {'time': 'H:MM:SS'} or {'mem': '4G'} instead")
    return None
