"""Run one row here, exactly as a node would: ``SlurmJob.test_row`` and ``slurm-apply test``.

Same payload (f, add_objects, more_args), same pkgs imported, same row seed, same working
directory and script directory on the path. In this process by default, so a debugger sees
the row's own exception; or in a fresh interpreter, as a node starts.

    python -m slurm_apply._job.testrow JOB_DIR POSITION OUT   (the fresh interpreter's side)
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import random
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Dict, Iterator

from .._errors import RemoteTraceback
from .._store import layout as jd
from .._store import payload


def row_kwargs(job_dir: Path, position: int) -> Dict[str, Any]:
    """The row's arguments as the node passes them: plain Python values by column name."""
    from .._store import table

    return table.row_kwargs(job_dir, jd.load_manifest(job_dir), position)


@contextlib.contextmanager
def as_on_the_node(job_dir: Path) -> Iterator[None]:
    """The working directory and import path a task has, for the length of the call."""
    m = jd.load_manifest(job_dir)
    old_cwd, old_path = os.getcwd(), list(sys.path)
    if m.pythonpath and m.pythonpath not in sys.path:
        sys.path.insert(0, m.pythonpath)
    os.chdir(m.workdir)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        sys.path[:] = old_path


@contextlib.contextmanager
def _objects_lent(namespace: Dict[str, Any], objects: Dict[str, Any]) -> Iterator[None]:
    """``objects`` in ``namespace`` (f's module globals, or builtins) for the length of the call,
    then the names as they were: those it had get their own values back, the others go."""
    had = {k: namespace[k] for k in objects if k in namespace}
    new = [k for k in objects if k not in namespace]
    namespace.update(objects)
    try:
        yield
    finally:
        for k in new:
            namespace.pop(k, None)
        namespace.update(had)


@contextlib.contextmanager
def _generators_kept(seeded: bool) -> Iterator[None]:
    """The caller's ``random`` and NumPy global generators as they were before the call, whoever
    drew from or reseeded them during it. NumPy is imported first when rows are seeded, so its
    generator is seeded even if f imports it late: a task gives the same draws without importing
    it (it seeds numpy.random when a row loads it, ``_node/seeding.py``)."""
    np: Any = sys.modules.get("numpy")
    if np is None and seeded:
        try:
            np = importlib.import_module("numpy")
        except ImportError:
            np = None
    py_state = random.getstate()
    np_state = np.random.get_state() if np is not None else None
    try:
        yield
    finally:
        random.setstate(py_state)
        if np is not None:
            np.random.set_state(np_state)


def run_here(job_dir: Path, position: int) -> Any:
    """Call f on the row in this process; its exception, if any, goes up as raised.

    The session is left as it was found: working directory, import path, the names
    add_objects gave (in f's module globals, or builtins) and the global generators of
    ``random`` and NumPy are put back, whether the row returned or raised. (Modules imported
    for ``pkgs`` or by f stay imported.)
    """
    from .._node.rows import row_seed

    m = jd.load_manifest(job_dir)
    kwargs = row_kwargs(job_dir, position)
    with as_on_the_node(job_dir), _generators_kept(m.seed is not None):
        f, objects = payload.unpickle(job_dir, m.pkgs)
        with _objects_lent(payload.namespace(f), objects):
            if m.seed is not None:
                s = row_seed(m.seed, position)
                random.seed(s)
                np = sys.modules.get("numpy")
                if np is not None:
                    np.random.seed(s)
                if m.seed_arg:
                    kwargs[m.seed_arg] = s
            return f(**kwargs)


def run_fresh(job_dir: Path, position: int) -> Any:
    """Call f on the row in a new interpreter (the one the nodes run); bring back its value,
    or raise its exception with the node-side traceback as the cause."""
    m = jd.load_manifest(job_dir)
    env = dict(os.environ)
    if m.pythonpath:
        env["PYTHONPATH"] = m.pythonpath + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryDirectory(prefix="sa-testrow-") as tmp:
        out = Path(tmp) / "out.pkl"
        proc = subprocess.run([m.python, "-m", "slurm_apply._job.testrow", str(job_dir), str(position),
                               str(out)], env=env, cwd=m.workdir, capture_output=True, text=True)
        if not out.exists():
            raise RuntimeError(f"the fresh interpreter ended (exit {proc.returncode}) before the "
                               f"row finished:\n{proc.stderr[-3000:]}")
        with open(out, "rb") as fh:
            ok, value, tb = pickle.load(fh)
    if ok:
        return value
    raise value from RemoteTraceback(tb)


def _main(argv: list) -> int:
    job_dir, position, out = Path(argv[0]), int(argv[1]), Path(argv[2])
    try:
        result: tuple = (True, run_here(job_dir, position), "")
    except BaseException as exc:  # the row's own exception, whatever it is, goes back
        result = (False, exc, traceback.format_exc())
    import cloudpickle

    try:
        data = cloudpickle.dumps(result)
    except Exception as exc:  # a value or exception that will not pickle: say so instead
        data = cloudpickle.dumps((False, RuntimeError(f"the row's outcome cannot be pickled: {exc}"),
                                  result[2] or traceback.format_exc()))
    out.write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
