"""What slurm_apply() waits for while it writes a job: the pre-flight interpreter starts before
the payload is written, and the big buffer file is fsynced by a thread after the call, once the
small files (each fsynced in the call) are on disk."""

from __future__ import annotations

import functools
import importlib
import os
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pandas as pd
import pytest

from slurm_apply import PreflightError, slurm_apply
from slurm_apply._submit import api as _api
from slurm_apply._store import payload

MB = 2**20


def total(i):
    return float(X[i].sum())  # noqa: F821 (X comes from add_objects)


def _record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> List[Tuple[str, str, bool]]:
    """Every fsync from now on: (file name, thread name, daemon thread?)."""
    calls: List[Tuple[str, str, bool]] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        t = threading.current_thread()
        calls.append((name, t.name, t.daemon))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def _final_name(name: str) -> str:
    """A file's name from the temporary name an atomic write gives it (.NAME.XXXX.tmp)."""
    return name[1:].rsplit(".", 2)[0] if name.startswith(".") and name.endswith(".tmp") else name


def test_the_buffers_are_fsynced_after_the_call_by_a_thread_the_interpreter_waits_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _record_fsyncs(monkeypatch)
    started = []
    real_start = payload.sync_buffers_later

    def sync_buffers_later(job_dir: Any) -> Any:
        started.append(len(calls))  # how many fsyncs the call had made by then
        thread = real_start(job_dir)
        thread.join()
        return thread

    monkeypatch.setattr(_api, "sync_buffers_later", sync_buffers_later)
    X = np.arange(4 * MB // 8, dtype=np.float64).reshape(4, -1)
    job = slurm_apply(total, pd.DataFrame({"i": range(4)}), add_objects={"X": X}, backend="local",
                      nodes=1, cpus_per_node=1, submit=False, jobname="sync", job_dir=tmp_path)
    in_call = [(_final_name(name), thread) for name, thread, _ in calls[:started[0]]]
    assert {name for name, _ in in_call} >= {"payload.pkl", "params_meta.pkl", "index.pkl",
                                             "params.bin", "submit.sh", "manifest.json"}
    assert "payload.buffers" not in {name for name, _ in in_call}
    assert {thread for _, thread in in_call} == {threading.main_thread().name}
    after = calls[started[0]:]
    assert [(name, daemon) for name, _, daemon in after] == [("payload.buffers", False)]
    assert after[0][1].startswith("slurm_apply fsync")
    assert job.manifest.payload_bytes > 4 * MB


def test_no_thread_without_a_buffer_file(tmp_path: Path) -> None:
    slurm_apply(total, pd.DataFrame({"i": [0]}), add_objects={"X": np.ones((1, 3))}, backend="local",
                nodes=1, cpus_per_node=1, submit=False, jobname="small", job_dir=tmp_path)
    assert payload.sync_buffers_later(tmp_path / "_rslurm_small") is None


@pytest.mark.parametrize("warm", ["1", "0"])
def test_the_preflight_interpreter_is_up_before_the_payload_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warm: str) -> None:
    """Cold, its interpreter has started; warm, the kept one is up (started now or before)."""
    from slurm_apply._submit import preflight

    monkeypatch.setenv("SLURM_APPLY_WARM_PREFLIGHT", warm)
    seen = []
    real_write = _api.write_payload
    real_start = _api.start_preflight

    def start(*args: Any) -> Any:
        check = real_start(*args)
        pid = check.proc.pid if isinstance(check, preflight.Preflight) else preflight.warm_pid()
        assert pid is not None and os.path.exists(f"/proc/{pid}")
        assert isinstance(check, preflight.WarmPreflight) == (warm == "1")
        seen.append(("preflight", pid, args[2]))
        return check

    def write(*args: Any, **kwargs: Any) -> int:
        seen.append(("write", len(seen)))
        return real_write(*args, **kwargs)

    monkeypatch.setattr(_api, "start_preflight", start)
    monkeypatch.setattr(_api, "write_payload", write)
    slurm_apply(total, pd.DataFrame({"i": [0]}), add_objects={"X": np.ones((1, 3))}, backend="local",
                nodes=1, cpus_per_node=1, submit=False, jobname="early", job_dir=tmp_path)
    assert [s[0] for s in seen] == ["preflight", "write"]
    assert "numpy" in seen[0][2] and __name__ in seen[0][2]  # what loading it will import


def test_modules_to_warm_come_from_f_its_partial_and_the_objects() -> None:
    f = functools.partial(total, frame=pd.DataFrame(), n=3)
    warm = _api.warm_modules(f, {"X": np.ones(2), "s": "text"})
    assert warm == sorted({__name__, "numpy", pd.DataFrame.__module__})


def test_a_package_the_fresh_interpreter_cannot_import_fails_the_preflight(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It fails while the payload is still being written: the call still says why."""
    mods = tmp_path / "private-mods"
    mods.mkdir()
    (mods / "sa_private_pkg_mod.py").write_text("VALUE = 1\n")
    monkeypatch.setattr(sys, "path", [*sys.path, str(mods)])
    importlib.import_module("sa_private_pkg_mod")
    monkeypatch.setitem(sys.modules, "sa_private_pkg_mod", sys.modules["sa_private_pkg_mod"])
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    X = np.zeros((4, 2 * MB // 8))
    with pytest.raises(PreflightError, match="No module named 'sa_private_pkg_mod'"):
        slurm_apply(total, pd.DataFrame({"i": range(4)}), add_objects={"X": X}, pkgs=["sa_private_pkg_mod"],
                    backend="local", nodes=1, cpus_per_node=1, submit=False, jobname="pkg", job_dir=jobs)
    assert list(jobs.iterdir()) == []


@pytest.mark.parametrize("keep", ["none", "8 bytes", "half", "all but 1"])
def test_a_buffer_file_cut_short_is_refused_not_read(tmp_path: Path, keep: str) -> None:
    """What a crash before the background fsync could leave: the index and mark come last."""
    payload.write_payload(tmp_path, total, {"X": np.ones((2, MB // 8))})
    path = tmp_path / payload.BUFFERS
    size = path.stat().st_size
    os.truncate(path, {"none": 0, "8 bytes": 8, "half": size // 2, "all but 1": size - 1}[keep])
    with pytest.raises(ValueError, match="cut short"):
        payload.map_buffers(path)


def test_each_buffer_s_blocks_are_reserved_where_it_goes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fallocate(KEEP_SIZE) before each write, over exactly the range the index gives it."""
    calls = []
    monkeypatch.setattr(payload, "_fallocate", lambda: lambda fd, mode, off, n: calls.append((mode, off, n)))
    objects = {"a": np.ones(3 * MB // 8 + 5), "b": np.arange(2 * MB, dtype=np.int8)}
    payload.write_payload(tmp_path, total, objects)
    second = -(-objects["a"].nbytes // payload.ALIGN) * payload.ALIGN  # aligned to a page
    assert calls == [(1, 0, objects["a"].nbytes), (1, second, objects["b"].nbytes)]
    size = (tmp_path / payload.BUFFERS).stat().st_size
    assert second + objects["b"].nbytes < size  # the index and its mark follow, not reserved
    views = payload.map_buffers(tmp_path / payload.BUFFERS)
    assert [v.nbytes for v in views] == [objects["a"].nbytes, objects["b"].nbytes]
    assert bytes(views[1][:5]) == bytes(range(5))


def test_modules_to_warm_include_those_a_function_by_value_names() -> None:
    """A notebook's f travels by value and takes the modules its code names by reference."""
    namespace: Dict[str, Any] = {"np": np, "pd": pd, "functools": functools, "__name__": "__main__"}
    exec("def f(x):\n    def inner():\n        return functools.reduce\n    return np.sum(x) + len(pd.DataFrame())\n",
         namespace)
    assert _api.warm_modules(namespace["f"], {}) == ["functools", "numpy", "pandas"]
