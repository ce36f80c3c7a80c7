"""rslurm's other two verbs: ``slurm_map`` (one call per item) and ``slurm_call`` (one call).

Both are slurm_apply over a table they build, and take every keyword option of slurm_apply
(derived from its signature, so no second list is kept).
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict, FrozenSet, Iterable

from .._launch import validate as v
from .api import slurm_apply
from .._errors import InputError
from .._job.handle import SlurmJob


def _options() -> FrozenSet[str]:
    """The keyword options of slurm_apply: slurm_map and slurm_call take every one of them."""
    import inspect

    return frozenset(n for n, p in inspect.signature(slurm_apply).parameters.items()
                     if p.kind is p.KEYWORD_ONLY and not n.startswith("_"))


def slurm_map(f: Callable[[Any], Any], iterable: Iterable[Any], **kwargs: Any) -> SlurmJob:
    """Run ``f(x)`` for every ``x`` of ``iterable`` as one array job (rslurm's ``slurm_map``).

    Takes every keyword option of :func:`slurm_apply`. ``get_output(outtype="raw")`` gives the
    values in order.
    """
    import pandas as pd

    v.check_function(f)
    unknown = sorted(set(kwargs) - _options())
    if unknown:
        raise InputError(f"slurm_map got unknown option(s) {unknown}; it takes the options of "
                         f"slurm_apply: {sorted(_options())}")
    if kwargs.get("seed_arg"):
        v.check_accepts(f, kwargs["seed_arg"], "seed_arg")
    items = list(iterable)
    name = _first_arg_name(f)
    kwargs.setdefault("_caller_globals", sys._getframe(1).f_globals)
    return slurm_apply(_MapAdapter(f, name), pd.DataFrame({name: pd.Series(items, dtype=object)}), **kwargs)


def slurm_call(f: Callable[..., Any], **kwargs: Any) -> SlurmJob:
    """Run ``f(**kwargs)`` once as a single Slurm job (rslurm's ``slurm_call``).

    Every keyword option of :func:`slurm_apply` (``slurm_options``, ``cpus_per_node``,
    ``add_objects``, ...) is taken from ``kwargs`` by name; every other keyword is an argument
    of ``f``. A keyword that names both an option and an argument of ``f`` (``seed``,
    ``nodes``, ...) is refused as ambiguous unless ``more_args`` is given: ``more_args`` holds
    f's arguments, and beside it such a keyword is the option.
    """
    import pandas as pd

    v.check_function(f)
    _refuse_ambiguous(f, kwargs)
    opts = {k: kwargs.pop(k) for k in list(kwargs) if k in _options()}
    opts.setdefault("_caller_globals", sys._getframe(1).f_globals)
    opts.setdefault("nodes", 1)
    opts.setdefault("cpus_per_node", 1)
    if opts.get("seed_arg"):
        v.check_accepts(f, opts["seed_arg"], "seed_arg")
    df = pd.DataFrame({k: pd.Series([val], dtype=object) for k, val in kwargs.items()}) if kwargs \
        else pd.DataFrame({"_": [0]})
    target = f if kwargs else _NoArgs(f)
    return slurm_apply(target, df, **opts)


def _refuse_ambiguous(f: Callable[..., Any], kwargs: Dict[str, Any]) -> None:
    """slurm_call(f, seed=42) with ``def f(seed=0)``: f's seed or the job's? Refuse to guess."""
    import inspect

    if kwargs.get("more_args") is not None:
        return  # f's arguments are in more_args; the keywords beside it are options
    try:
        params = inspect.signature(f).parameters.values()
    except (TypeError, ValueError):
        return
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    both = [k for k in kwargs if k in _options() and k in named]
    if not both:
        return
    fname = getattr(f, "__name__", "f")
    given = ", ".join(f"{k}={kwargs[k]!r:.40}" for k in both)
    as_more = ", ".join(f"{k!r}: {kwargs[k]!r:.40}" for k in both)
    raise InputError(
        f"slurm_call({fname}, ..., {given}): {', '.join(repr(k) for k in both)} "
        f"{'is' if len(both) == 1 else 'are'} both an argument of {fname} and an option of "
        f"slurm_call (as of slurm_apply), so which one is meant is ambiguous. "
        f"To pass {fname} its own, use more_args={{{as_more}}}; beside more_args, a keyword "
        f"such as {both[0]}=... is the option (more_args={{}} to set only the option and "
        f"leave {fname}'s default).")


def _first_arg_name(f: Callable[..., Any]) -> str:
    import inspect

    try:
        params = [p for p in inspect.signature(f).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    name = params[0].name if params else "x"
    return name if name.isidentifier() else "x"


class _MapAdapter:
    """Calls ``f(x)`` positionally with the one column of slurm_map's table."""

    def __init__(self, f: Callable[[Any], Any], name: str) -> None:
        self.f, self.name = f, name
        self.__name__ = getattr(f, "__name__", "map")
        self.__qualname__ = getattr(f, "__qualname__", self.__name__)
        self.__module__ = getattr(f, "__module__", __name__)

    @property
    def __signature__(self) -> Any:
        import inspect

        return inspect.Signature([inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY)])

    def __call__(self, **kwargs: Any) -> Any:
        x = kwargs.pop(self.name)
        return self.f(x, **kwargs)  # kwargs: the row's seed, when seed_arg asks for it

    @property
    def __globals__(self) -> Dict[str, Any]:
        return getattr(self.f, "__globals__", {})


class _NoArgs:
    """Calls ``f()`` ignoring the placeholder column a DataFrame needs."""

    def __init__(self, f: Callable[[], Any]) -> None:
        self.f = f
        self.__name__ = getattr(f, "__name__", "call")
        self.__qualname__ = getattr(f, "__qualname__", self.__name__)
        self.__module__ = getattr(f, "__module__", __name__)

    @property
    def __signature__(self) -> Any:
        import inspect

        return inspect.Signature([inspect.Parameter("_", inspect.Parameter.KEYWORD_ONLY)])

    def __call__(self, _: Any = None, **kwargs: Any) -> Any:
        return self.f(**kwargs)  # kwargs: the row's seed, when seed_arg asks for it

    @property
    def __globals__(self) -> Dict[str, Any]:
        return getattr(self.f, "__globals__", {})

