"""Checks on the caller's arguments, all made before a file is written or a command is run.

Each message says what was expected, what came, and what to do.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ._errors import InputError, UnpicklableError
from ._script import OWNED_OPTIONS, normalize_key

_JOBNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_OPTION_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_function(f: Any) -> None:
    if not callable(f):
        raise InputError(
            f"f must be a function (callable); got {type(f).__name__} {f!r:.60}. "
            "Pass the function itself, e.g. slurm_apply(my_func, df), not my_func(...)."
        )


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer; got {value!r} ({type(value).__name__})")
    return value


def check_params(f: Callable[..., Any], df: Any, *, extra_args: Sequence[str] = ()) -> None:
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise InputError(
            f"params_df must be a pandas DataFrame with one row per call; got {type(df).__name__}. "
            "Build one with pd.DataFrame(...), or use slurm_map for a plain list."
        )
    if len(df) == 0:
        raise InputError("params_df has no rows: there is nothing to run. Expected at least one row.")
    if len(df.columns) == 0:
        raise InputError("params_df has rows but no columns; each column becomes an argument of f.")
    cols = list(df.columns)
    dups = sorted({str(c) for c in cols if cols.count(c) > 1})
    if dups:
        raise InputError(f"params_df has duplicate column names {dups}; each column must name one argument of f.")
    bad = [c for c in cols if not isinstance(c, str) or not _IDENT.match(c)]
    if bad:
        raise InputError(
            f"params_df's column names must be valid argument names of f; got {bad!r}. "
            "Rename them, e.g. df.columns = ['x', 'y']."
        )
    try:
        sig = inspect.signature(f)
    except (TypeError, ValueError):
        return  # a builtin without a signature: let the node report a mismatch
    params = sig.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        accepted = None
    else:
        accepted = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    given = set(cols) | set(extra_args)
    if accepted is not None:
        unknown = [c for c in cols if c not in accepted]
        if unknown:
            raise InputError(
                f"params_df has column(s) {unknown} that {_name(f)} does not accept; it accepts "
                f"{sorted(accepted)}. Drop or rename those columns, or add **kwargs to f."
            )
    required = [
        p.name for p in params
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name not in given
    ]
    if required:
        raise InputError(
            f"{_name(f)} requires argument(s) {required} that params_df has no column for "
            f"(columns: {cols}). Add the column(s) or give those arguments defaults."
        )
    positional_only = [p.name for p in params if p.kind is p.POSITIONAL_ONLY and p.default is p.empty]
    if positional_only:
        raise InputError(
            f"{_name(f)} has positional-only argument(s) {positional_only}; rows are passed by "
            "keyword. Wrap f in a function that takes keyword arguments."
        )


def _name(f: Any) -> str:
    return getattr(f, "__qualname__", None) or type(f).__name__


def resolve_objects(add_objects: Any, caller_globals: Mapping[str, Any]) -> Dict[str, Any]:
    if add_objects is None:
        return {}
    if isinstance(add_objects, Mapping):
        objects = dict(add_objects)
    elif isinstance(add_objects, (list, tuple, set)) and all(isinstance(n, str) for n in add_objects):
        missing = [n for n in add_objects if n not in caller_globals]
        if missing:
            raise InputError(
                f"add_objects names {missing}, which are not defined in the caller's global scope. "
                "Define them first, or pass a dict {name: object}."
            )
        objects = {n: caller_globals[n] for n in add_objects}
    else:
        raise InputError(
            "add_objects must be a dict {name: object} or a list of global names; "
            f"got {type(add_objects).__name__}"
        )
    bad = [k for k in objects if not isinstance(k, str) or not _IDENT.match(k)]
    if bad:
        raise InputError(f"add_objects keys must be valid Python names (they become globals of f); got {bad!r}")
    return objects


def check_pkgs(pkgs: Any) -> List[str]:
    if pkgs is None:
        return []
    if isinstance(pkgs, str) or not all(isinstance(p, str) for p in pkgs):
        raise InputError(f"pkgs must be a list of module names, e.g. ['numpy']; got {pkgs!r}")
    out = list(pkgs)
    for name in out:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise InputError(
                f"module {name!r} in pkgs cannot be imported here, so it would not import on the "
                "nodes either (they use this Python). Install it, or fix the name."
            )
    return out


def check_options(options: Any) -> Dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InputError(f"slurm_options must be a dict like {{'time': '1:00:00'}}; got {type(options).__name__}")
    out: Dict[str, Any] = {}
    for raw_key, value in options.items():
        if not isinstance(raw_key, str) or not _OPTION_KEY.match(raw_key.lstrip("-")):
            raise InputError(
                f"slurm_options key {raw_key!r} is not a plain sbatch option name "
                "(letters, digits, '-' and '_'); e.g. 'time', 'mem', 'partition'"
            )
        key = normalize_key(raw_key)
        if key in OWNED_OPTIONS:
            raise InputError(
                f"slurm_options sets {raw_key!r}, which slurm_apply sets itself; the keys it owns "
                f"are {', '.join(OWNED_OPTIONS)}. Use nodes=, cpus_per_node=, jobname= instead."
            )
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise InputError(
                f"slurm_options[{raw_key!r}] must be a string, number or True; got "
                f"{type(value).__name__} {value!r:.60}"
            )
        if isinstance(value, str) and (any(ord(ch) < 32 or ord(ch) == 127 for ch in value) or value == ""):
            raise InputError(
                f"slurm_options[{raw_key!r}] = {value!r} is empty or has a newline or control "
                "character, which could change the job script; give a one-line value"
            )
        if isinstance(value, str) and "'" in value and '"' in value:
            raise InputError(
                f"slurm_options[{raw_key!r}] = {value!r} has both ' and \", which an #SBATCH line "
                "cannot carry; drop one of them"
            )
        out[key] = value
    return out


def check_jobname(jobname: Any) -> str:
    if not isinstance(jobname, str) or not _JOBNAME.match(jobname) or ".." in jobname or len(jobname) > 100:
        raise InputError(
            f"jobname must be letters, digits, '_', '-' and '.' (no spaces, path separators, '..' or "
            f"shell characters, at most 100 characters); got {jobname!r}"
        )
    return jobname


def default_jobname(f: Any) -> str:
    import time

    base = re.sub(r"[^A-Za-z0-9_]", "", getattr(f, "__name__", "") or "") or "job"
    return f"{base[:40]}_{time.strftime('%Y%m%d_%H%M%S')}"


def pickle_payload(f: Any, objects: Dict[str, Any]) -> bytes:
    """cloudpickle f and the objects together; on failure, say which one and why."""
    import cloudpickle

    try:
        return cloudpickle.dumps((f, objects), protocol=4)
    except Exception as exc:
        culprit, why = _find_unpicklable(f, objects, exc)
        raise UnpicklableError(
            f"{culprit} cannot be pickled: {why}. Objects sent to the nodes must be picklable: "
            "pass data instead of open files, locks, connections or generators, and create those "
            "inside f."
        ) from exc


def _find_unpicklable(f: Any, objects: Dict[str, Any], exc: Exception) -> Tuple[str, str]:
    import cloudpickle

    for name, obj in objects.items():
        try:
            cloudpickle.dumps(obj)
        except Exception as e:
            return f"add_objects[{name!r}] ({type(obj).__name__})", f"{type(e).__name__}: {e}"
    try:
        cloudpickle.dumps(f)
    except Exception as e:
        return (f"the function {_name(f)} (or a global it uses)", f"{type(e).__name__}: {e}")
    return "the payload", f"{type(exc).__name__}: {exc}"


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise InputError(f"{name} must be one of {list(choices)}; got {value!r}")


def check_optional_positive_int(name: str, value: Optional[Any]) -> Optional[int]:
    return None if value is None else check_positive_int(name, value)
