"""Row functions that tests run in real array tasks (local backend).

A task imports the module of a function pickled by reference, as it imports a user's: from a
test module that was pandas and pytest, about half a second of CPU in each of some sixty tasks
of the no-cluster tests. Here, a module that imports nothing, they cost what a small user
script's would. The globals they read (RUNS, DELAY, MODE, CALLS, SLEEP) are add_objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the module imports nothing at run time
    from pathlib import Path
    from typing import Callable, Dict


def busy(x):
    import time

    end = time.perf_counter() + x
    while time.perf_counter() < end:
        pass
    return x


def logged(x: int) -> int:
    """Notes in RUNS/<task>.<pid> that this process started row x, then works DELAY seconds."""
    import os
    import time

    name = f"{os.environ['SLURM_APPLY_TASK']}.{os.getpid()}"
    with open(os.path.join(RUNS, name), "a") as fh:
        fh.write(f"{x}\n")
    time.sleep(DELAY)
    return x * 10


def dies(x: int) -> int:
    """Row 5 dies in the way MODE says; the others take a little time."""
    import ctypes
    import os
    import sys
    import time

    time.sleep(0.005)
    if x == 5:
        if MODE == "segfault":
            ctypes.string_at(0)
        elif MODE == "abort":
            os.abort()
        elif MODE == "sys.exit":
            sys.exit("bad input for row 5")
        elif MODE == "KeyboardInterrupt":
            raise KeyboardInterrupt("interrupted in row 5")
        elif MODE == "os._exit":
            os._exit(3)
        elif MODE == "SIGKILL":
            os.kill(os.getpid(), 9)
    return x


def segfaults_from_3(x: int) -> int:
    import ctypes

    if x >= 3:
        ctypes.string_at(0)
    return x


def flaky(x):
    """Raises on rows 1 and 5 the first time each is run; sleeps on row 3 on its second run."""
    import os
    import time

    mark = os.path.join(CALLS, f"{x}.{os.getpid()}.{time.monotonic_ns()}")
    runs = len([n for n in os.listdir(CALLS) if n.split(".")[0] == str(x)])
    open(mark, "w").close()
    if x in (1, 5) and runs == 0:
        raise ValueError(f"row {x} fails once")
    if x == 3 and runs == 1:
        time.sleep(SLEEP)
    if x == 3 and runs == 0:
        raise ValueError("row 3 fails, then sleeps")
    return x * 10


def reports_error(x):
    return {"error": f"e{x}", "value": x}


def seeded(x, seed):
    return seed


def slow(x):
    import time

    time.sleep(0.3)
    return x


def flaky_score(x):
    return {"score": x / 10}


def _raise_every_row(x):
    raise ValueError(f"bad row {x}")


def _raise_slowly(x):
    import time

    time.sleep(0.002)
    raise ValueError(f"bad row {x}")


def ident(x):
    return x


def describe(**row):
    """What the node was given: each argument's type and value."""
    return repr(sorted((k, type(v).__name__, repr(v)) for k, v in row.items()))


def _square(x):
    return x * x


def _slow_second_half(x):
    import time

    time.sleep(1 if x >= 10 else 0.2)
    return x


def _slow(x):
    import time

    time.sleep(0.5)
    return x


def _double(x):  # noqa: ANN001, ANN202 - only the signature matters where this is used
    return 2 * x


# Factories of the rounds' and chains' tests (tests/test_rounds.py, tests/test_chains.py).


def draws() -> Callable[..., Dict[str, float]]:
    def f(x: int, y: float) -> Dict[str, float]:
        import random

        import numpy

        return {"r": random.random(), "n": float(numpy.random.random()), "s": x * y}

    return f


def once(marks: Path, sleep_first: float = 0.0, sleepers: tuple = (0, 1)) -> Callable[..., int]:
    """f(x): records that row x ran (a second run of it raises), sleeps on the rows ``sleepers``."""
    where = str(marks)

    def f(x: int) -> int:
        import os
        import time

        fd = os.open(os.path.join(where, str(x)), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.close(fd)
        if x in sleepers:
            time.sleep(sleep_first)
        return x * 10

    return f


def stamped(marks: Path, sleep_s: float = 0.0, fail: int = -1) -> Callable[..., Dict[str, float]]:
    """f(x): sleeps, records when row x started and ended (files in ``marks``), raises on row ``fail``."""
    where = str(marks)

    def f(x: int) -> Dict[str, float]:
        import os
        import time

        start = time.time()
        time.sleep(sleep_s)
        if x == fail:
            raise ValueError(f"row {x} fails on purpose")
        end = time.time()
        with open(os.path.join(where, f"{x}"), "w") as fh:
            fh.write(f"{start} {end}")
        return {"start": start, "end": end}

    return f


def flaky_once(marks: Path) -> Callable[..., Dict[str, float]]:
    """f(x): row 1 raises the first time it runs (an automatic retry with retry_errors runs it
    again, later, as another submission); every run records when it ended."""
    where = str(marks)

    def f(x: int) -> Dict[str, float]:
        import os
        import time

        time.sleep(1.0)
        first = os.path.join(where, f"tried{x}")
        if x == 1 and not os.path.exists(first):
            open(first, "w").close()
            raise RuntimeError("first try fails")
        end = time.time()
        with open(os.path.join(where, f"{x}"), "w") as fh:
            fh.write(f"{end} {end}")
        return {"end": end}

    return f


def fails_while(marks: Path, flag: Path, sleep_s: float = 0.0) -> Callable[..., Dict[str, float]]:
    """stamped(), but row 1 raises while the file ``flag`` exists (remove it to mend the job)."""
    where, bad = str(marks), str(flag)

    def f(x: int) -> Dict[str, float]:
        import os
        import time

        start = time.time()
        time.sleep(sleep_s)
        if x == 1 and os.path.exists(bad):
            raise ValueError("row 1 fails while the flag is there")
        end = time.time()
        with open(os.path.join(where, f"{x}"), "w") as fh:
            fh.write(f"{start} {end}")
        return {"start": start, "end": end}

    return f


def reordered(b, a, c=5):
    """Its parameters in another order than the table's columns (a, b), and one more with a
    default: each argument must still be the column of its name."""
    return f"a={a} b={b} c={c}"
