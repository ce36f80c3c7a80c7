"""The payload: big arrays and DataFrames travel as out-of-band buffers in a file of their own,
are written without a copy in memory, and are memory-mapped read-only where they are loaded; the
pre-flight check loads them without reading them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slurm_apply import RowsFailedError, UnpicklableError, slurm_apply
from slurm_apply._store import payload

MB = 2**20
# Fresh interpreters import this module by name when they unpickle ``add``.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p)}


def add(x):
    return x + 1


def _load_and_describe(where: Path, code: str) -> dict:
    """Load the payload in a fresh interpreter, as a node does, and run ``code`` there; it sets
    ``out`` (a dict) from ``objects`` and helper ``mapped(array)``."""
    script = textwrap.dedent("""
        import json, sys
        import numpy as np
        from slurm_apply._store.payload import BUFFERS, load
        f = load(sys.argv[1])
        objects = f.__globals__
        maps = [line.split() for line in open("/proc/self/maps")]
        spans = [tuple(int(a, 16) for a in m[0].split("-")) for m in maps
                 if len(m) > 5 and m[5].endswith(BUFFERS)]

        def mapped(a):
            start = a.__array_interface__["data"][0]
            return any(lo <= start and start + a.nbytes <= hi for lo, hi in spans)

        out = {}
    """) + textwrap.dedent(code) + "\nprint(json.dumps(out))\n"
    proc = subprocess.run([sys.executable, "-c", script, str(where)], capture_output=True,
                          text=True, timeout=120, env=ENV)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_big_array_is_mapped_read_only_not_copied(tmp_path: Path) -> None:
    X = np.arange(50 * MB // 8, dtype=np.float64)  # 50 MB
    small = np.arange(10, dtype=np.int32)

    def f(i):
        return X[i] + small[0]

    written = payload.write_payload(tmp_path, f, {"X": X, "small": small, "note": "hi"})
    pkl, bufs = tmp_path / payload.PAYLOAD, tmp_path / payload.BUFFERS
    assert pkl.stat().st_size < 100_000 < 50 * MB <= bufs.stat().st_size
    assert written == pkl.stat().st_size + bufs.stat().st_size
    out = _load_and_describe(tmp_path, """
        X = objects["X"]
        out = {"mapped": mapped(X), "writeable": X.flags.writeable, "sum": float(X.sum()),
               "small_mapped": mapped(objects["small"]), "small": objects["small"].tolist(),
               "note": objects["note"], "f": float(f(3))}
        try:
            X[0] = 1.0
        except ValueError as exc:
            out["write"] = str(exc)
    """)
    assert out["mapped"] and not out["writeable"]
    assert out["write"] == "assignment destination is read-only"
    assert out["sum"] == float(X.sum()) and out["f"] == 3.0
    assert out["small"] == small.tolist() and not out["small_mapped"]  # small: in the pickle
    assert out["note"] == "hi"


def test_a_dataframe_is_mapped_too(tmp_path: Path) -> None:
    n = 1_000_000
    df = pd.DataFrame({"a": np.arange(n, dtype=np.float64), "b": np.arange(n, dtype=np.int64),
                       "c": np.arange(n, dtype=np.float64) * 2})
    payload.write_payload(tmp_path, add, {"df": df})
    out = _load_and_describe(tmp_path, """
        import pandas as pd
        df = objects["df"]
        cols = {c: df[c].to_numpy() for c in df.columns}
        out = {"mapped": {c: mapped(a) for c, a in cols.items()},
               "writeable": any(a.flags.writeable for a in cols.values()),
               "dtypes": {c: str(t) for c, t in df.dtypes.items()},
               "sums": {c: float(a.sum()) for c, a in cols.items()}}
    """)
    assert out["mapped"] == {"a": True, "b": True, "c": True} and not out["writeable"]
    assert out["dtypes"] == {"a": "float64", "b": "int64", "c": "float64"}
    assert out["sums"] == {c: float(df[c].sum()) for c in df.columns}


def test_odd_layouts_still_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Non-contiguous arrays stay in the pickle; Fortran order and many buffers are mapped."""
    monkeypatch.setattr(payload, "OUT_OF_BAND_MIN_BYTES", 1000)  # the real threshold is 1 MB
    rng = np.random.default_rng(0)
    objs = {"strided": rng.random(4000)[::3], "fortran": np.asfortranarray(rng.random((50, 40))),
            "many": [np.full(600 + i, i, dtype=np.int16) for i in range(5)], "tiny": np.ones(3)}
    payload.write_payload(tmp_path, add, objs)
    f = payload.load(tmp_path)
    for name, obj in objs.items():
        got = f.__globals__[name]
        for a, b in zip(got if name == "many" else [got], obj if name == "many" else [obj]):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype
    fortran = f.__globals__["fortran"]
    assert fortran.flags.f_contiguous and not fortran.flags.c_contiguous
    assert not fortran.flags.writeable and not f.__globals__["many"][0].flags.writeable
    assert f.__globals__["strided"].flags.writeable  # it came out of the pickle: a private copy


def test_small_objects_stay_in_the_pickle(tmp_path: Path) -> None:
    objs = {"a": np.arange(1000), "table": pd.DataFrame({"x": range(100)}), "d": {"k": [1, 2]}}
    size = payload.measure(add, objs)
    written = payload.write_payload(tmp_path, add, objs)
    assert not (tmp_path / payload.BUFFERS).exists()
    assert size == (written, 0)
    f = payload.load(tmp_path / payload.PAYLOAD)
    assert f.__globals__["d"] == {"k": [1, 2]} and f.__globals__["a"].flags.writeable


def test_writing_makes_no_copy_of_a_big_array_in_memory(tmp_path: Path) -> None:
    X = np.ones(40 * MB // 8)
    size = payload.measure(add, {"X": X})
    assert size.shared == X.nbytes and size.pickled < 10_000
    tracemalloc.start()
    try:
        payload.write_payload(tmp_path, add, {"X": X})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * MB, f"writing allocated {peak / MB:.1f} MB for a {X.nbytes / MB:.0f} MB array"


# Waits for the command and prints the kernel's peak resident memory of it. It runs in a small
# launcher: a child's peak starts at its parent's resident memory at fork, and pytest's is big.
_LAUNCHER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(proc.pid, 0)
proc.returncode = os.waitstatus_to_exitcode(status)
print(usage.ru_maxrss if proc.returncode == 0 else -1)
"""


def _peak_rss_kb(argv: list) -> int:
    """Run a command; its peak resident memory (KiB) from wait4's rusage of the child."""
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *argv], capture_output=True,
                          text=True, timeout=120, env=ENV)
    assert proc.returncode == 0 and proc.stdout.strip() != "-1", proc.stderr
    return int(proc.stdout)


def test_the_preflight_does_not_read_the_buffers(tmp_path: Path) -> None:
    big, small = tmp_path / "big", tmp_path / "small"
    big.mkdir()
    small.mkdir()
    n = 100 * MB // 8
    objs = {"X": np.arange(n, dtype=np.float64),
            "df": pd.DataFrame({"a": np.zeros(n // 2), "b": np.ones(n // 2, dtype=np.int64)})}
    payload.write_payload(big, add, objs)  # 200 MB of buffers
    payload.write_payload(small, add, {"X": np.ones(2), "df": pd.DataFrame({"a": [1.0]})})
    peaks = {name: _peak_rss_kb([sys.executable, "-m", "slurm_apply._node", "--preflight",
                                 str(d / payload.PAYLOAD)]) for name, d in (("big", big), ("small", small))}
    # The same imports either way: what the big payload adds must be far below its 200 MB.
    assert peaks["big"] - peaks["small"] < 10 * 1024, peaks


def test_an_unpicklable_object_beside_a_big_array_is_named(tmp_path: Path) -> None:
    old = slurm_apply(add, pd.DataFrame({"x": [1]}), jobname="keep", job_dir=tmp_path,
                      backend="local", submit=False)
    X = np.ones(2 * MB // 8)
    with pytest.raises(UnpicklableError, match=r"add_objects\['lock'\] \(lock\) cannot be pickled"):
        slurm_apply(add, pd.DataFrame({"x": [1]}), add_objects={"X": X, "lock": threading.Lock()},
                    jobname="keep", job_dir=tmp_path, backend="local", submit=False, overwrite=True)
    assert (old.job_dir / "manifest.json").exists()  # refused before the old job was replaced


def test_only_the_pickled_part_is_warned_about(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from slurm_apply._submit import api as _api

    monkeypatch.setattr(_api, "PAYLOAD_WARN_MB", 1)
    X = np.ones(8 * MB // 8)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        job = slurm_apply(add, pd.DataFrame({"x": [1]}), add_objects={"X": X}, jobname="shared",
                          job_dir=tmp_path, backend="local", submit=False)
    assert job.manifest.payload_bytes >= X.nbytes
    with pytest.warns(UserWarning, match="each of its processes holds its own copy"):
        slurm_apply(add, pd.DataFrame({"x": [1]}), add_objects={"L": list(range(300_000))},
                    jobname="private", job_dir=tmp_path, backend="local", submit=False)


def test_a_row_writing_into_a_mapped_array_fails_with_a_hint(tmp_path: Path) -> None:
    X = np.zeros(2 * MB // 8)

    def scale(i):
        X[i] = i  # in place: the node's X is a read-only mapping
        return float(X[i])

    job = slurm_apply(scale, pd.DataFrame({"i": range(3)}), add_objects={"X": X}, jobname="ro",
                      job_dir=tmp_path, backend="local", nodes=1, cpus_per_node=1)
    job.wait(timeout_s=120, progress=False)
    with pytest.raises(RowsFailedError, match=r"read-only \(NumPy arrays and DataFrames given in "
                                              r"add_objects are memory-mapped read-only"):
        job.get_output()
