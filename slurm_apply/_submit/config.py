"""A user's site defaults: ``slurm_options``, ``nodes``, ``cpus_per_node`` and ``setup`` kept in a
TOML file, so a partition, an account or a ``module load`` line need not be repeated in every
call. The call's own arguments win; what the file gave is recorded in the manifest.

The file is ``$SLURM_APPLY_CONFIG`` when set (it must exist), else
``$XDG_CONFIG_HOME/slurm_apply/config.toml`` (``~/.config/...``) when present::

    nodes = 4
    cpus_per_node = 8
    setup = ["module load python/3.11"]
    backend = "sge"          # what backend="auto" means here ($SLURM_APPLY_BACKEND wins over it)

    [slurm_options]
    partition = "short"
    account = "lab"
    time = "2:00:00"
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence, Tuple

from .._errors import InputError

if TYPE_CHECKING:
    from .._backends import Dialect

ENV_VAR = "SLURM_APPLY_CONFIG"
BACKEND_VAR = "SLURM_APPLY_BACKEND"
KEYS = {"slurm_options": dict, "nodes": int, "cpus_per_node": int, "setup": list, "backend": str}


def config_path() -> Optional[Path]:
    """The defaults file in force, or None."""
    named = os.environ.get(ENV_VAR)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise InputError(f"{ENV_VAR}={named!r} names no file; point it at a TOML file of "
                             "defaults, or unset it")
        return path
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    path = base / "slurm_apply" / "config.toml"
    return path if path.is_file() else None


def load() -> Tuple[Optional[Path], Dict[str, Any]]:
    """(the file, its defaults), checked: unknown keys and wrong types are InputErrors."""
    path = config_path()
    if path is None:
        return None, {}
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - the same parser, from PyPI, before Python 3.11
        import tomli as tomllib
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"the defaults file {path} cannot be read: {exc}") from None
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise InputError(f"the defaults file {path} has unknown key(s) {unknown}; it may set "
                         f"{sorted(KEYS)}")
    for key, kind in KEYS.items():
        if key in data and (not isinstance(data[key], kind) or isinstance(data[key], bool)):
            raise InputError(f"the defaults file {path}: {key} must be a {kind.__name__}; got "
                             f"{type(data[key]).__name__} {data[key]!r}")
    return path, data


def resolve(*, nodes: Optional[int], cpus_per_node: Optional[int], slurm_options: Any,
            setup: Any, rules: "Dialect") -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The call's settings with the site defaults filled in (built-in: 2 nodes, 2 CPUs), and a
    record of what the defaults file gave (for the manifest)."""
    def normalize_key(key: str) -> str:  # "t", "--time" and "time" are one option
        norm = rules.normalize_key(key)
        return rules.SHORT.get(norm, norm)

    path, site = load()
    given: Dict[str, Any] = {}
    out = {"nodes": nodes, "cpus_per_node": cpus_per_node, "setup": setup,
           "slurm_options": slurm_options}
    for key in ("nodes", "cpus_per_node", "setup"):
        if out[key] is None and key in site:
            out[key] = given[key] = site[key]
    out["nodes"] = 2 if out["nodes"] is None else out["nodes"]
    out["cpus_per_node"] = 2 if out["cpus_per_node"] is None else out["cpus_per_node"]
    if slurm_options is None or isinstance(slurm_options, Mapping):  # else the checks refuse it
        call = {normalize_key(k) if isinstance(k, str) else k: v for k, v in (slurm_options or {}).items()}
        taken = {normalize_key(k): v for k, v in site.get("slurm_options", {}).items()
                 if normalize_key(k) not in call}
        if taken:
            given["slurm_options"] = taken
            out["slurm_options"] = {**taken, **call}
    return out, ({"file": str(path), "applied": given} if given else {})


def backend(requested: str, choices: Sequence[str]) -> str:
    """What backend="auto" (the default) means here: ``$SLURM_APPLY_BACKEND`` when set, else
    the defaults file's ``backend``, else "auto" (the registry finds a scheduler). A backend
    named in the call wins over both."""
    if requested != "auto":
        return requested
    named = os.environ.get(BACKEND_VAR, "").strip()
    if named:
        if named not in choices:
            raise InputError(f"{BACKEND_VAR}={named!r} is not a backend; it may be one of "
                             f"{list(choices)}, or unset it")
        return named
    path, site = load()
    if "backend" in site:
        if site["backend"] not in choices:
            raise InputError(f"the defaults file {path}: backend must be one of {list(choices)}; "
                             f"got {site['backend']!r}")
        return str(site["backend"])
    return "auto"
