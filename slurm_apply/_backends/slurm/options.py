"""Which sbatch options exist, and the form of the common values: a typo in ``slurm_options``
is caught before the job waits in a queue, not after.

The names come from this machine's own ``sbatch --help`` when it answers (a site's newer Slurm
knows more), plus the options ``man sbatch`` documents that ``--help`` leaves out; without a
working sbatch, from the same lists as printed by Slurm 22.05.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
from typing import Dict, FrozenSet, Optional

# `sbatch --help` of Slurm 22.05 (Debian 12), the long option names.
HELP_22_05 = frozenset("""
account array bb bbf begin chdir cluster-constraint clusters comment constraint container
contiguous core-spec cores-per-socket cpu-freq cpus-per-gpu cpus-per-task deadline delay-boot
dependency distribution error exclude exclusive export export-file get-user-env gid gpu-bind
gpu-freq gpus gpus-per-node gpus-per-socket gpus-per-task gres gres-flags help hold ignore-pbs
input job-name licenses mail-type mail-user mcs-label mem mem-per-cpu mem-per-gpu mincpus nice
no-kill no-requeue nodefile nodelist nodes ntasks ntasks-per-core ntasks-per-node
ntasks-per-socket output overcommit oversubscribe parsable partition power priority profile
propagate qos quiet reboot requeue reservation signal sockets-per-node spread-job switches
thread-spec threads-per-core time time-min tmp uid usage use-min-nodes verbose version wait
wckey wrap
""".split())
# Documented in `man sbatch` (22.05 and later) but not listed by `--help`.
MAN_ONLY = frozenset("""
acctg-freq batch extra-node-info hint kill-on-invalid-dep mem-bind network open-mode test-only
tres-per-task
""".split())
SHORT = {"A": "account", "b": "begin", "d": "dependency", "D": "chdir", "H": "hold",
         "i": "input", "k": "no-kill", "L": "licenses", "M": "clusters", "m": "distribution",
         "n": "ntasks", "N": "nodes", "O": "overcommit", "p": "partition", "q": "qos",
         "Q": "quiet", "s": "oversubscribe", "S": "core-spec", "t": "time", "v": "verbose",
         "W": "wait", "C": "constraint", "F": "nodefile", "w": "nodelist", "x": "exclude",
         "G": "gpus", "B": "extra-node-info"}

_OPTION_LINE = re.compile(r"^\s+(?:-\w, )?--([a-z][a-z0-9-]*)", re.M)
_cache: Dict[str, FrozenSet[str]] = {}


def parse_help(text: str) -> FrozenSet[str]:
    """The long option names ``sbatch --help`` lists."""
    return frozenset(_OPTION_LINE.findall(text))


def known_names() -> FrozenSet[str]:
    """Every long option name sbatch takes here (cached per SLURM_CONF and PATH)."""
    key = os.environ.get("SLURM_CONF", "") + "\0" + os.environ.get("PATH", "")
    if key not in _cache:
        names: FrozenSet[str] = frozenset()
        if shutil.which("sbatch"):
            try:
                proc = subprocess.run(["sbatch", "--help"], capture_output=True, text=True, timeout=10)
                names = parse_help(proc.stdout) if proc.returncode == 0 else frozenset()
            except (OSError, subprocess.TimeoutExpired):
                pass
        _cache[key] = (names or HELP_22_05) | MAN_ONLY
    return _cache[key]


def unknown_name(key: str) -> Optional[str]:
    """Why ``key`` (normalized: long name or one letter) is not an sbatch option, or None."""
    if len(key) == 1:
        return None if key in SHORT else (f"-{key} is not a short sbatch option "
                                          f"(those taken are {', '.join(sorted(SHORT))})")
    names = known_names()
    if key in names:
        return None
    close = difflib.get_close_matches(key, sorted(names), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"sbatch has no option --{key}{hint} (checked against `sbatch --help` and `man sbatch`)"


# The value forms sbatch takes for the options people set most.
_TIME = re.compile(r"(\d+-)?\d+(:\d+){0,2}|UNLIMITED|INFINITE|unlimited|infinite")
# sbatch reads a size with strtoll, then one optional unit K, M, G or T (any case), which may be
# followed by B (Slurm's str_to_mbytes): a whole number, never a fraction like 1.5G.
_MEM = re.compile(r"\d+([KMGTkmgt][Bb]?)?")
_MEM_FORM = ("a whole number of megabytes, or a whole number with a unit K, M, G or T "
             "(e.g. 4000, '4G' or '512M'; sbatch takes no fractions)")
_COUNT = re.compile(r"\d+(-\d+)?")
_GRES = re.compile(r"[A-Za-z][\w.-]*(:[\w.-]+)*(,[A-Za-z][\w.-]*(:[\w.-]+)*)*")
_GPUS = re.compile(r"([\w.-]+:)?\d+(,([\w.-]+:)?\d+)*")
FORMS = {
    "time": (_TIME, "minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS, e.g. '2:00:00'"),
    "time-min": (_TIME, "a time like '30:00'"),
    "mem": (_MEM, _MEM_FORM),
    "mem-per-cpu": (_MEM, _MEM_FORM),
    "mem-per-gpu": (_MEM, _MEM_FORM),
    "nodes": (_COUNT, "a count or a range like '2-4'"),
    "ntasks": (_COUNT, "a count"),
    "gres": (_GRES, "name[:type]:count, comma-separated, e.g. 'gpu:a100:1'"),
    "gpus": (_GPUS, "[type:]count, e.g. 'a100:2' or 1"),
}


def bad_value(key: str, value: object) -> Optional[str]:
    """Why ``value`` is not of the form sbatch takes for ``key``, or None (only the common
    options are checked; any other value goes to sbatch as given)."""
    key = SHORT.get(key, key)
    if key not in FORMS or value is True or value is None or value is False:
        return None
    pattern, form = FORMS[key]
    if pattern.fullmatch(str(value).strip()):
        return None
    return f"{key}={value!r} is not a form sbatch takes for --{key}: expected {form}{_instead(key, value)}"


def _instead(key: str, value: object) -> str:
    """What to write instead of a size sbatch would refuse: ``1.5G`` -> ``1536M``."""
    import math

    from .resources import mem_mb

    if FORMS[key][0] is not _MEM:
        return ""
    mb = mem_mb(value)
    return f"; write '{math.ceil(mb)}M'" if mb is not None and mb > 0 else ""
