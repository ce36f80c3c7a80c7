"""A module that draws from ``random`` at import, before any row (tests/test_seeding.py)."""

from __future__ import annotations

import random

AT_IMPORT = random.random()


def draws(x):
    return (random.random(), random.gauss(0, 1), random.randint(0, 10**9))
