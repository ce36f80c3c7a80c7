"""Checks on the caller's arguments, all made before a file is written or a command is run.

Each message says what was expected, what came, and what to do. Every failure is an
``InputError`` (a ``ValueError``), or its subclass ``UnpicklableError``.
"""

from __future__ import annotations

import importlib
import inspect
import keyword
import numbers
import re
import types
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .._backends import Dialect, control_characters
from .._errors import InputError, UnpicklableError

if TYPE_CHECKING:
    from .._store.manifest import RetryPolicy
    from .._store.payload import PayloadSize

_JOBNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_JOBNAME_CHARS = re.compile(r"[A-Za-z0-9_.-]")
_JOBNAME_MAX = 100


def _is_name(name: Any) -> bool:
    """A Python identifier (any that ``str.isidentifier`` accepts, ``größe`` and ``名前``
    included) that is not a keyword: what can be an argument name or a global of f."""
    return isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)


_NAME_RULE = "a Python identifier that is not a keyword (e.g. x, größe; not 'a b', '1x' or 'class')"


def check_function(f: Any) -> None:
    if not callable(f):
        raise InputError(
            f"f must be a function (callable); got {type(f).__name__} {f!r:.60}. "
            "Pass the function itself, e.g. slurm_apply(my_func, df), not my_func(...)."
        )


def check_positive_int(name: str, value: Any) -> int:
    # numbers.Integral takes NumPy's integers too; bool is an int but never meant as a count.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{name} must be a positive integer (1 or more); got {value!r} ({type(value).__name__})")
    return int(value)


def check_optional_positive_int(name: str, value: Optional[Any]) -> Optional[int]:
    return None if value is None else check_positive_int(name, value)


def check_max_failures(value: Any) -> Any:
    """None, a number of rows (an integer >= 1) or a fraction of the rows (0 < x < 1)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"max_failures must be a number of rows (e.g. 100) or a fraction of the "
                         f"rows (e.g. 0.01); got {value!r} ({type(value).__name__})")
    if isinstance(value, numbers.Integral) and int(value) >= 1:
        return int(value)
    if value < 1 and not value <= 0:  # 0 < value < 1: numbers.Real is typed with < and <= only
        return float(value)
    raise InputError(f"max_failures must be an integer >= 1 (rows) or a fraction between 0 and 1 "
                     f"(of the rows); got {value!r}")


def check_seed(seed: Any) -> Any:
    """None (draw one), False (no seeding) or a non-negative integer, NumPy's included."""
    if seed is None or seed is False:
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, None (draw one) or False (do not "
                         f"seed rows); got {seed!r} ({type(seed).__name__})")
    return int(seed)


def check_retry_policy(retries: Any, retry_errors: Any, max_mem: Any, max_time: Any,
                       rules: Dialect) -> "RetryPolicy":
    """The job's automatic retries, checked: a count, a flag and two ceilings in the form of the
    scheduler's memory and time options (``rules``, its dialect)."""
    from .._store.manifest import RetryPolicy

    if isinstance(retries, bool) or not isinstance(retries, numbers.Integral) or retries < 0:
        raise InputError(f"retries must be a whole number, 0 or more (0 turns automatic retries "
                         f"off); got {retries!r} ({type(retries).__name__})")
    if not isinstance(retry_errors, bool):
        raise InputError(f"retry_errors must be True or False; got {retry_errors!r}")
    for name, value, key in (("max_mem", max_mem, rules.MEM_KEYS[0]), ("max_time", max_time, rules.TIME_KEYS[0])):
        typed = value is None or (isinstance(value, (str, int)) and not isinstance(value, bool))
        problem = rules.bad_value(key, str(value)) if typed and value is not None else None
        if not typed or problem:
            raise InputError(f"{name} must be in the form the scheduler takes for its {key!r} option; "
                             f"got {value!r}" + (f" ({problem})" if problem else ""))
    return RetryPolicy(retries=int(retries), retry_errors=retry_errors,
                       max_mem=None if max_mem is None else str(max_mem),
                       max_time=None if max_time is None else str(max_time))


def check_accepts(f: Callable[..., Any], name: str, what: str) -> None:
    """f must take the keyword argument ``name`` (or **kwargs)."""
    f = getattr(f, "f", f) if type(f).__name__ in ("_MapAdapter", "_NoArgs") else f  # slurm_map's
    try:
        params = inspect.signature(f).parameters.values()
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    if not any(p.name == name and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params):
        raise InputError(f"{what} passes {name!r} to {_name(f)} as a keyword argument, which "
                         f"{_name(f)} does not take; add it to f's arguments or leave it out of {what}")


def check_setup(setup: Any) -> List[str]:
    """Shell lines for the script: a list of one-line strings."""
    if setup is None:
        return []
    if isinstance(setup, str) or not isinstance(setup, (list, tuple)) or not all(isinstance(x, str) for x in setup):
        raise InputError(f"setup must be a list of shell lines, e.g. ['module load cuda/12.1']; "
                         f"got {setup!r:.80}")
    for line in setup:
        bad = control_characters(line.replace("\t", " "))
        if bad:
            raise InputError(f"setup line {line!r} contains {', '.join(bad)}; give one line per "
                             "list item (a newline would split it into lines slurm_apply did not check)")
    return list(setup)


def check_seed_arg(seed_arg: Any, seed: Any, df: Any) -> None:
    if seed_arg is None:
        return
    if seed is False:
        raise InputError("seed_arg needs row seeds, but seed=False turns them off")
    if not _is_name(seed_arg):
        raise InputError(f"seed_arg must be an argument name of f; got {seed_arg!r} (it must be {_NAME_RULE})")
    if seed_arg in getattr(df, "columns", ()):
        raise InputError(f"seed_arg {seed_arg!r} is also a column of params_df; choose another name")


def check_more_args(f: Callable[..., Any], more_args: Any, df: Any, seed_arg: Optional[str]) -> Dict[str, Any]:
    """Constant keyword arguments: a dict of argument names f takes, none of them a column."""
    if more_args is None:
        return {}
    if not isinstance(more_args, Mapping):
        raise InputError(f"more_args must be a dict {{argument name: value}}; got {type(more_args).__name__}")
    bad = [k for k in more_args if not _is_name(k)]
    if bad:
        raise InputError(f"more_args keys must be argument names of f; got {bad!r} (each must be {_NAME_RULE})")
    columns = set(getattr(df, "columns", ()))
    both = sorted((set(more_args) & columns) | (set(more_args) & {seed_arg}))
    if both:
        raise InputError(f"more_args gives {both}, which params_df (or seed_arg) also gives; each "
                         "argument must come from one place: drop it from more_args or from the table")
    for name in more_args:
        check_accepts(f, name, "more_args")
    return dict(more_args)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise InputError(f"{name} must be one of {list(choices)}; got {value!r}")


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
        raise InputError(
            f"params_df has duplicate column names {dups}; each column must name one argument of f. "
            "Rename or drop the copies, e.g. df.loc[:, ~df.columns.duplicated()]."
        )
    if not df.index.is_unique:
        dup_labels = list(dict.fromkeys(df.index[df.index.duplicated(keep=False)]))
        raise InputError(
            f"params_df's index has duplicate labels {dup_labels[:10]!r}"
            f"{' ...' if len(dup_labels) > 10 else ''}; rows are named by their index labels "
            "(status, get_errors(), resubmit(rows=...), test_row()), so each label must be unique. "
            "Number the rows instead with params_df.reset_index(drop=True) (reset_index() without "
            "drop=True keeps the old labels as a column, which f then must accept)."
        )
    bad = [c for c in cols if not _is_name(c)]
    if bad:
        raise InputError(
            f"params_df's column names must be valid argument names of f; got {bad!r} (each must be {_NAME_RULE}). "
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
    if isinstance(add_objects, str):
        raise InputError(
            f"add_objects must be a list of global names or a dict {{name: object}}; got the string "
            f"{add_objects!r}. For one name write [{add_objects!r}]."
        )
    if isinstance(add_objects, Mapping):
        objects = dict(add_objects)
    elif isinstance(add_objects, (list, tuple, set, frozenset)) and all(isinstance(n, str) for n in add_objects):
        missing = [n for n in add_objects if n not in caller_globals]
        if missing:
            raise InputError(
                f"add_objects names {missing}, which are not defined in the caller's global scope "
                "(names local to a function are not seen). Define them first, or pass a dict "
                "{name: object}."
            )
        objects = {n: caller_globals[n] for n in add_objects}
    else:
        raise InputError(
            "add_objects must be a dict {name: object} or a list of global names; "
            f"got {type(add_objects).__name__}"
        )
    bad = [k for k in objects if not _is_name(k)]
    if bad:
        raise InputError(f"add_objects keys must be valid Python names (they become globals of f); "
                         f"got {bad!r} (each must be {_NAME_RULE})")
    return objects


def check_pkgs(pkgs: Any) -> List[str]:
    """Import each module here: the nodes run this same Python, so what fails here fails there."""
    if pkgs is None:
        return []
    if isinstance(pkgs, str) or not isinstance(pkgs, (list, tuple)) or not all(isinstance(p, str) for p in pkgs):
        raise InputError(f"pkgs must be a list of module names, e.g. ['numpy']; got {pkgs!r}")
    out = list(pkgs)
    for name in out:
        if not name or not all(part.isidentifier() for part in name.split(".")):
            raise InputError(f"pkgs entry {name!r} is not a module name (like 'numpy' or 'scipy.stats')")
        try:
            importlib.import_module(name)
        except (Exception, SystemExit) as exc:  # a module may raise anything, even exit
            raise InputError(
                f"module {name!r} in pkgs cannot be imported here ({type(exc).__name__}: {exc}), so "
                "it would not import on the nodes either (they run this Python). Install it, or "
                "fix the name."
            ) from exc
    return out


def check_options(options: Any, rules: Dialect) -> Dict[str, Any]:
    """The scheduler's options as {normalized key: value}, checked against its ``rules`` (the
    dialect of the backend that will run them); refuses anything that could change the script."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InputError(f"slurm_options must be a dict like {{'time': '1:00:00'}}; got {type(options).__name__}")
    owned = ", ".join(rules.OWNED)
    out: Dict[str, Any] = {}
    for raw_key, value in options.items():
        key = rules.normalize_key(raw_key) if isinstance(raw_key, str) else ""
        problem = rules.bad_key(key)
        if problem:
            raise InputError(f"slurm_options key {raw_key!r} {problem}")
        if rules.owns(key):
            raise InputError(
                f"slurm_options sets {raw_key!r}, which slurm_apply sets itself; the keys it owns "
                f"are {owned}. Use nodes=, cpus_per_node= and jobname= instead; logs go to the "
                "job directory's logs/."
            )
        if key in out:
            raise InputError(f"slurm_options gives {key!r} twice (as {raw_key!r} and an earlier spelling)")
        problem = rules.unknown_name(key)
        if problem:
            raise InputError(f"slurm_options[{raw_key!r}]: {problem}")
        if type(value).__module__ == "numpy" and hasattr(value, "item"):
            value = value.item()  # a NumPy scalar, e.g. from a DataFrame cell
        if value is None or isinstance(value, bool) or isinstance(value, numbers.Real):
            pass
        elif isinstance(value, str):
            if not value.strip():
                raise InputError(
                    f"slurm_options[{raw_key!r}] is empty; give a value, True for a bare flag, or "
                    "leave the key out"
                )
            try:
                rules.header_value(value)
            except InputError as exc:
                raise InputError(f"slurm_options[{raw_key!r}]: {exc}") from None
        else:
            raise InputError(
                f"slurm_options[{raw_key!r}] must be a string, a number, True (a bare flag) or "
                f"None/False (left out); got {type(value).__name__} {value!r:.60}"
            )
        problem = rules.bad_value(key, value)
        if problem:
            raise InputError(f"slurm_options[{raw_key!r}]: {problem}")
        out[key] = value
    return out


def check_jobname(jobname: Any) -> str:
    if not isinstance(jobname, str):
        raise InputError(f"jobname must be a string; got {type(jobname).__name__} {jobname!r:.60}")
    if _JOBNAME.fullmatch(jobname) and ".." not in jobname and len(jobname) <= _JOBNAME_MAX:
        return jobname
    found = []
    if "/" in jobname or "\\" in jobname:
        found.append("a path separator")
    if ".." in jobname:
        found.append("'..'")
    if any(ch.isspace() for ch in jobname):
        found.append("whitespace")
    odd = sorted({ch for ch in jobname if not _JOBNAME_CHARS.fullmatch(ch)
                  and not ch.isspace() and ch not in "/\\"})
    if odd:
        found.append(", ".join(repr(ch) for ch in odd))
    if found:
        problem = "it contains " + " and ".join(found)
    elif not jobname:
        problem = "it is empty"
    elif len(jobname) > _JOBNAME_MAX:
        problem = f"it is {len(jobname)} characters long"
    else:
        problem = f"it starts with {jobname[0]!r}"
    raise InputError(
        f"jobname {jobname!r} cannot be used: {problem}. It names a directory and a Slurm job, so "
        f"it must be letters, digits, '_', '-' and '.', start with a letter or digit, have no '..' "
        f"and be at most {_JOBNAME_MAX} characters, e.g. 'fit_models-2'."
    )


def default_jobname(f: Any) -> str:
    import time

    import secrets

    # The time says when; the random suffix keeps calls within one second apart.
    import functools

    while isinstance(f, functools.partial):
        f = f.func
    base = re.sub(r"[^A-Za-z0-9_]", "", getattr(f, "__name__", "") or "") or "job"
    return f"{base[:40]}_{time.strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(2)}"


def check_payload(f: Any, objects: Dict[str, Any]) -> "PayloadSize":
    """Pickle f and the objects into nothing (no copy of a big array is made): what they will
    take on disk; on failure, say which one cannot be pickled and why."""
    from .._store import payload

    try:
        return payload.measure(f, objects)
    except Exception as exc:
        culprit, why = _find_unpicklable(f, objects, exc)
        raise UnpicklableError(
            f"{culprit} cannot be pickled: {why}. Objects sent to the nodes must be picklable: "
            "pass data instead of open files, locks, connections or generators, and create those "
            "inside f."
        ) from exc


def _find_unpicklable(f: Any, objects: Dict[str, Any], exc: Exception) -> Tuple[str, str]:
    """Name the first object that will not pickle: an added object, or a name f refers to."""
    from .._store.payload import pickles as fails

    for name, obj in objects.items():
        why = fails(obj)
        if why:
            return f"add_objects[{name!r}] ({type(obj).__name__})", why
    why_f = fails(f)
    if why_f is None:
        return "the payload", f"{type(exc).__name__}: {exc}"
    # slurm_map and slurm_call wrap the caller's function as .f
    inner = f if inspect.isfunction(f) else getattr(f, "f", None)
    if inspect.isfunction(inner):
        try:
            refs = inspect.getclosurevars(inner)
        except (TypeError, ValueError):
            refs = None
        if refs is not None:
            for kind, names in (("closure variable", refs.nonlocals), ("global", refs.globals)):
                for name, obj in names.items():
                    if isinstance(obj, types.ModuleType):
                        continue
                    why = fails(obj)
                    if why:
                        return (f"{kind} {name!r} ({type(obj).__name__}) of the function "
                                f"{_name(inner)}", why)
    return f"the function {_name(f)} (or something it refers to)", why_f
