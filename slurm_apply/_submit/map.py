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
    of ``f``.
    """
    import pandas as pd

    v.check_function(f)
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

