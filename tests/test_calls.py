"""A row is f(**row); the node calls f(*values) instead where that binds the same (calls.py)."""

from __future__ import annotations

import functools

import pandas as pd

from rowfns import reordered  # a light module: tasks import it (tests/rowfns.py)
from slurm_apply import slurm_apply
from slurm_apply._node.calls import positional_order


def test_by_position_only_where_it_binds_what_the_keywords_bind():
    def f(a, b, c=1):
        return a, b, c

    def g(*, a, b):
        return a, b

    def h(a, /, b):
        return a, b

    def k(a, **rest):
        return a, rest

    def wrapped(*args, **kwargs):
        return f(*args, **kwargs)

    class Callable:
        def __call__(self, a, b):
            return a, b

    assert positional_order(f, ["a", "b"]) == [0, 1]
    assert positional_order(f, ["b", "a"]) == [1, 0]  # the values go in f's order
    assert positional_order(f, ["a", "b", "c"]) == [0, 1, 2]
    assert positional_order(f, ["a", "c"]) is None  # by position, c's value would land in b
    assert positional_order(f, ["a", "b", "x"]) is None
    assert positional_order(g, ["a", "b"]) is None  # keyword-only
    assert positional_order(h, ["a", "b"]) is None  # positional-only
    assert positional_order(k, ["a", "b"]) is None  # b goes to **rest
    assert positional_order(k, ["a"]) == [0]
    assert positional_order(wrapped, ["a", "b"]) is None
    assert positional_order(functools.wraps(f)(wrapped), ["a", "b"]) is None
    assert positional_order(Callable(), ["a", "b"]) is None
    assert positional_order(functools.partial(f, c=2), ["a", "b"]) is None
    assert positional_order(len, ["a"]) is None


def test_each_argument_is_the_column_of_its_name_whatever_the_parameters_order(tmp_path):
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    for seed in (None, False):  # seeded rows and not
        job = slurm_apply(reordered, df, backend="local", job_dir=tmp_path, jobname=f"order{seed is None}",
                          nodes=1, cpus_per_node=1, seed=seed)
        job.wait(progress=False)
        assert job.get_output(outtype="raw") == ["a=1 b=x c=5", "a=2 b=y c=5", "a=3 b=z c=5"]
