"""Row functions that reach ``random`` the ways user code does, for tests/test_seeding.py: by
the module's functions, by functions taken from it at import, by a real function taken during a
row, after random.seed. Travels by reference: each task imports this module before any row."""

from __future__ import annotations

import random
from random import gauss
from random import random as taken_at_import

_kept = []


def three(draw=random.random):
    return (draw(), random.gauss(0, 1), random.randint(0, 10**9))


def every_other_row(x):
    """Odd rows draw nothing (their seeding is left out); even rows draw."""
    return None if x % 2 else three()


def through_functions_taken_at_import(x):
    return (taken_at_import(), gauss(0, 1), random.randint(0, 10**9))


def keeps_a_real_function(x):
    """Row 0 draws, then keeps random.random (the real function by then); later rows draw through
    the kept one first, before anything else of random's."""
    if _kept:
        return three(_kept[0])
    first = three(lambda: random.random())
    _kept.append(random.random)
    return first


def reseeds_row_2(x):
    if x == 2:
        random.seed(99)
    return three(lambda: random.random())


def stand_ins_until_a_draw(x):
    """Whether random.random is the standard library's own (a bound method) when the row starts;
    rows from 5 on draw."""
    real = hasattr(random.random, "__self__")
    return (real, three(lambda: random.random()) if x >= 5 else None)
