"""Bad input is refused with a specific error before anything is written or run.

Every case runs against a fake Slurm on PATH (``backend="slurm"``) whose commands log each call,
so a test shows both halves of the promise: the job_dir parent is empty afterwards and no Slurm
command ran. Also here: the pre-flight load in a fresh interpreter, the payload size, and what
happens when sbatch refuses a job.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, Callable, Dict

import pandas as pd
import pytest

import slurm_apply
from slurm_apply import (
    InputError,
    JobDirExistsError,
    PreflightError,
    SlurmApplyError,
    SlurmJob,
    SubmissionError,
    UnpicklableError,
    slurm_apply as run,
)
from slurm_apply._submit import api as _api
from slurm_apply._store import layout as jd

SBATCH_REFUSAL = "sbatch: error: Batch job submission failed: Invalid partition name specified"


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Executables named like Slurm's, first on PATH; each appends its argv to the returned log.

    sbatch refuses every job the way a real one does (message on stderr, exit 1); scontrol
    answers ``show config`` with the default MaxArraySize.
    """
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    log = tmp_path / "slurm-calls.log"
    bodies = {
        "sbatch": f'echo "{SBATCH_REFUSAL}" >&2\nexit 1',
        "scontrol": 'echo "MaxArraySize = 1001"',
        "squeue": "exit 1",
        "sacct": "exit 1",
        "scancel": "exit 1",
    }
    for name, body in bodies.items():
        exe = bin_dir / name
        exe.write_text(f'#!/bin/sh\necho "$(basename "$0") $*" >> "{log}"\n{body}\n')
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    # Slurm's config is cached per SLURM_CONF; a name of our own makes this fake's answer the one read.
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "fake-slurm.conf"))
    return log


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    """The job_dir parent; a refused call must leave it empty."""
    d = tmp_path / "jobs"
    d.mkdir()
    return d


def _calls(log: Path) -> str:
    return log.read_text() if log.exists() else ""


# ---------------------------------------------------------------------------------------------
# The catalogue. Each builder returns the arguments that differ from a valid call; functions are
# defined inside them so that cloudpickle pickles them by value.


def _base() -> Dict[str, Any]:
    def f(x):
        return x

    return {"f": f, "params_df": pd.DataFrame({"x": [1, 2, 3]})}


def _f_takes_x_and_y() -> Dict[str, Any]:
    def f(x, y):
        return x + y

    return {"f": f}


def _f_with_unpicklable_closure() -> Dict[str, Any]:
    lock = threading.Lock()

    def f(x):
        with lock:
            return x

    return {"f": f}


def _f_accepting_anything() -> Dict[str, Any]:
    def f(**kwargs):
        return kwargs

    return {"f": f, "params_df": pd.DataFrame({"x y": [1]})}


OWNED_MESSAGE = "the keys it owns are array, job-name, output, error, cpus-per-task"

CATALOGUE = [
    # (id, arguments, exception, fragment of the message)
    ("f-not-callable", lambda: {"f": 42}, InputError, "f must be a function (callable); got int 42"),
    ("f-none", lambda: {"f": None}, InputError, "f must be a function (callable); got NoneType"),
    ("params-a-list", lambda: {"params_df": [{"x": 1}]}, InputError,
     "params_df must be a pandas DataFrame with one row per call; got list"),
    ("params-a-series", lambda: {"params_df": pd.Series([1, 2])}, InputError,
     "params_df must be a pandas DataFrame with one row per call; got Series"),
    ("params-empty", lambda: {"params_df": pd.DataFrame({"x": []})}, InputError, "params_df has no rows"),
    ("params-no-columns", lambda: {"params_df": pd.DataFrame(index=[0, 1])}, InputError,
     "params_df has rows but no columns"),
    ("params-duplicate-columns", lambda: {"params_df": pd.DataFrame([[1, 2]], columns=["x", "x"])},
     InputError, "params_df has duplicate column names ['x']"),
    ("params-column-not-accepted", lambda: {"params_df": pd.DataFrame({"x": [1], "z": [2]})},
     InputError, "params_df has column(s) ['z'] that"),
    ("params-argument-missing", _f_takes_x_and_y, InputError, "requires argument(s) ['y'] that params_df has no column for"),
    ("params-column-not-a-name", _f_accepting_anything, InputError,
     "params_df's column names must be valid argument names of f; got ['x y']"),
    ("object-unpicklable-lock", lambda: {"add_objects": {"lock": threading.Lock()}}, UnpicklableError,
     "add_objects['lock'] (lock) cannot be pickled: TypeError"),
    ("object-unpicklable-generator", lambda: {"add_objects": {"gen": (i for i in range(3))}},
     UnpicklableError, "add_objects['gen'] (generator) cannot be pickled: TypeError"),
    ("f-unpicklable", _f_with_unpicklable_closure, UnpicklableError,
     "closure variable 'lock' (lock) of the function"),
    ("add-objects-undefined", lambda: {"add_objects": ["no_such_global_in_this_module"]}, InputError,
     "add_objects names ['no_such_global_in_this_module'], which are not defined in the caller's global scope"),
    ("add-objects-a-string", lambda: {"add_objects": "pd"}, InputError, "For one name write ['pd']"),
    ("pkgs-not-installed", lambda: {"pkgs": ["no_such_module_for_slurm_apply"]}, InputError,
     "module 'no_such_module_for_slurm_apply' in pkgs cannot be imported here (ModuleNotFoundError"),
    ("pkgs-a-string", lambda: {"pkgs": "numpy"}, InputError, "pkgs must be a list of module names"),
    ("nodes-zero", lambda: {"nodes": 0}, InputError, "nodes must be a positive integer (1 or more); got 0 (int)"),
    ("nodes-negative", lambda: {"nodes": -2}, InputError, "nodes must be a positive integer"),
    ("nodes-float", lambda: {"nodes": 2.5}, InputError, "nodes must be a positive integer (1 or more); got 2.5 (float)"),
    ("nodes-string", lambda: {"nodes": "2"}, InputError, "nodes must be a positive integer (1 or more); got '2' (str)"),
    ("nodes-bool", lambda: {"nodes": True}, InputError, "nodes must be a positive integer (1 or more); got True (bool)"),
    ("cpus-zero", lambda: {"cpus_per_node": 0}, InputError, "cpus_per_node must be a positive integer"),
    ("cpus-str", lambda: {"cpus_per_node": "2"}, InputError, "cpus_per_node must be a positive integer"),
    *[(f"option-owned-{key}", (lambda key=key: {"slurm_options": {key: "1"}}), InputError, OWNED_MESSAGE)
      for key in ("array", "job-name", "job_name", "--job-name", "J", "output", "o", "error", "e",
                  "cpus-per-task", "cpus_per_task", "c", "a", "outp", "arr", "err")],
    *[(f"option-key-{i}", (lambda key=key: {"slurm_options": {key: "1"}}), InputError,
       "is not an sbatch option name")
      for i, key in enumerate(("time\n#SBATCH --array=0-99", "time\n", "mem mem", "mem=4G", "x;y", "",
                               "$(touch pwned)", "t'x", 5))],
    ("option-value-newline", lambda: {"slurm_options": {"comment": "ok\n#SBATCH --array=0-99999"}},
     InputError, "contains '\\n' (a newline or other control character)"),
    ("option-value-carriage-return", lambda: {"slurm_options": {"comment": "ok\rno"}}, InputError,
     "contains '\\r' (a newline or other control character)"),
    ("option-value-nul", lambda: {"slurm_options": {"comment": "ok\x00no"}}, InputError,
     "a newline or other control character"),
    ("option-value-list", lambda: {"slurm_options": {"mem": ["4G"]}}, InputError,
     "slurm_options['mem'] must be a string, a number, True (a bare flag) or None/False (left out); got list"),
    ("option-value-dict", lambda: {"slurm_options": {"gres": {"gpu": 1}}}, InputError,
     "slurm_options['gres'] must be a string, a number"),
    ("option-value-empty", lambda: {"slurm_options": {"time": "  "}}, InputError, "slurm_options['time'] is empty"),
    ("options-not-a-dict", lambda: {"slurm_options": ["time=1:00"]}, InputError, "slurm_options must be a dict"),
    ("jobname-space", lambda: {"jobname": "my job"}, InputError, "jobname 'my job' cannot be used: it contains whitespace"),
    ("jobname-separator", lambda: {"jobname": "a/b"}, InputError, "cannot be used: it contains a path separator"),
    ("jobname-dotdot", lambda: {"jobname": "a..b"}, InputError, "cannot be used: it contains '..'"),
    ("jobname-shell", lambda: {"jobname": "x;$(touch pwned)"}, InputError, "cannot be used: it contains whitespace and '$', '(', ')', ';'"),
    ("jobname-trailing-newline", lambda: {"jobname": "abc\n"}, InputError, "cannot be used: it contains whitespace"),
    ("backend-unknown", lambda: {"backend": "pbs"}, InputError, "backend must be one of ['auto', 'slurm', 'sge', 'local']; got 'pbs'"),
]


@pytest.mark.parametrize("make, exc_type, fragment", [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE])
def test_bad_input_is_refused_before_anything_is_written_or_run(
        make: Callable[[], Dict[str, Any]], exc_type: type, fragment: str, jobs: Path, fake_slurm: Path) -> None:
    kwargs: Dict[str, Any] = {**_base(), "jobname": "catalogue", "job_dir": jobs, "backend": "slurm"}
    kwargs.update(make())
    f, df = kwargs.pop("f"), kwargs.pop("params_df")
    with pytest.raises(exc_type) as info:
        run(f, df, **kwargs)
    assert fragment in str(info.value)
    # One exception base; every input error is also the ValueError callers already catch.
    assert isinstance(info.value, SlurmApplyError) and isinstance(info.value, ValueError)
    assert list(jobs.iterdir()) == []
    # Nothing submitted or changed; `sbatch --help` may be asked which options exist.
    assert set(_calls(fake_slurm).splitlines()) <= {"sbatch --help"}


def test_a_module_in_pkgs_that_fails_on_import_is_refused(
        tmp_path: Path, jobs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "sa_broken_pkg.py").write_text("raise RuntimeError('boom: needs a licence server')\n")
    monkeypatch.syspath_prepend(str(mods))

    def f(x):
        return x

    with pytest.raises(InputError, match=re.escape(
            "module 'sa_broken_pkg' in pkgs cannot be imported here (RuntimeError: boom: needs a licence server)")):
        run(f, pd.DataFrame({"x": [1]}), pkgs=["sa_broken_pkg"], jobname="broken", job_dir=jobs, backend="local")
    assert list(jobs.iterdir()) == []


def test_numpy_integers_are_accepted_as_counts(jobs: Path) -> None:
    np = pytest.importorskip("numpy")

    def f(x):
        return x

    job = run(f, pd.DataFrame({"x": [1, 2, 3]}), nodes=np.int64(2), cpus_per_node=np.int32(1),
              slurm_options={"mem": np.int64(100)}, jobname="npint", job_dir=jobs, backend="local",
              submit=False, preflight=False)
    sub = job.manifest.submissions[0]
    assert (sub.n_tasks, sub.cpus_per_task, sub.slurm_options) == (2, 1, {"mem": 100})


def test_an_existing_job_directory_is_refused_and_left_alone(jobs: Path, fake_slurm: Path) -> None:
    old = jobs / "_rslurm_taken"
    old.mkdir()
    (old / "keep.txt").write_text("precious")

    def f(x):
        return x

    with pytest.raises(JobDirExistsError, match=re.escape(f"job directory {old} already exists")) as info:
        run(f, pd.DataFrame({"x": [1]}), jobname="taken", job_dir=jobs, backend="slurm")
    assert "overwrite=True" in str(info.value)
    assert isinstance(info.value, InputError) and isinstance(info.value, ValueError)
    assert sorted(p.name for p in old.iterdir()) == ["keep.txt"]
    assert (old / "keep.txt").read_text() == "precious"
    assert _calls(fake_slurm) == ""


def test_a_missing_job_dir_parent_is_refused(tmp_path: Path) -> None:
    def f(x):
        return x

    with pytest.raises(InputError, match="is not an existing directory; create it first"):
        run(f, pd.DataFrame({"x": [1]}), jobname="nowhere", job_dir=tmp_path / "absent", backend="local")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Pre-flight: the payload must load in a fresh interpreter, as it will on the nodes.


@pytest.fixture
def module_only_this_process_can_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A module imported here from a directory added at the END of sys.path: the fresh interpreter
    gets only the caller's sys.path[0] as PYTHONPATH, so it cannot import it."""
    mods = tmp_path / "private-mods"
    mods.mkdir()
    name = "sa_private_helper_mod"
    (mods / f"{name}.py").write_text("def add_one(x):\n    return x + 1\n")
    monkeypatch.setattr(sys, "path", [*sys.path, str(mods)])
    import importlib

    module = importlib.import_module(name)
    yield module
    sys.modules.pop(name, None)


def test_preflight_refuses_a_function_the_nodes_cannot_import(
        module_only_this_process_can_import: Any, jobs: Path) -> None:
    with pytest.raises(PreflightError) as info:
        run(module_only_this_process_can_import.add_one, pd.DataFrame({"x": [1, 2]}),
            jobname="preflight", job_dir=jobs, backend="local", submit=False)
    message = str(info.value)
    assert message.startswith("the pickled function and objects do not load in a fresh Python")
    assert "No module named 'sa_private_helper_mod'" in message
    assert isinstance(info.value, SlurmApplyError)
    assert list(jobs.iterdir()) == []


def test_preflight_false_turns_the_check_off(module_only_this_process_can_import: Any, jobs: Path) -> None:
    job = run(module_only_this_process_can_import.add_one, pd.DataFrame({"x": [1, 2]}),
              jobname="nopreflight", job_dir=jobs, backend="local", submit=False, preflight=False)
    assert (job.job_dir / jd.PAYLOAD).exists()
    assert job.manifest.submissions[0].state == "written"


def test_preflight_catches_a_script_whose_function_uses_a_module_the_nodes_cannot_import(tmp_path: Path) -> None:
    """The classic case: f lives in the script's __main__ (pickled by value) and uses a class from
    a module the script found through a sys.path tweak the nodes do not have."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "sa_shapes_mod.py").write_text("class Square:\n    def __init__(self, s):\n        self.area = s * s\n")
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    script = scripts / "analysis.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.append({str(lib)!r})
        import pandas as pd
        import sa_shapes_mod
        from slurm_apply import PreflightError, slurm_apply

        def area(side):
            return sa_shapes_mod.Square(side).area

        try:
            slurm_apply(area, pd.DataFrame({{"side": [1, 2]}}), jobname="shapes",
                        job_dir={str(jobs)!r}, backend="local", submit=False)
        except PreflightError as exc:
            print(str(exc).splitlines()[0])
            sys.exit(3)
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "No module named 'sa_shapes_mod'" in proc.stdout
    assert list(jobs.iterdir()) == []


def test_payload_size_is_recorded_and_a_large_one_warned_about(
        jobs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = bytes(200_000)

    def f(x):
        return len(blob) + x

    job = run(f, pd.DataFrame({"x": [1]}), jobname="small", job_dir=jobs, backend="local", submit=False)
    size = (job.job_dir / jd.PAYLOAD).stat().st_size
    assert job.manifest.payload_bytes == size > 200_000

    monkeypatch.setattr(_api, "PAYLOAD_WARN_MB", 0.1)  # the real threshold is 100 MB
    with pytest.warns(UserWarning, match=r"the pickled function and objects take \d+ MB; every task reads them"):
        run(f, pd.DataFrame({"x": [1]}), jobname="big", job_dir=jobs, backend="local", submit=False)


# ---------------------------------------------------------------------------------------------
# sbatch refusing the job


def test_a_refused_submission_keeps_the_directory_marked_failed(jobs: Path, fake_slurm: Path) -> None:
    def f(x):
        return x

    with pytest.raises(SubmissionError) as info:
        run(f, pd.DataFrame({"x": [1, 2, 3]}), jobname="refused", job_dir=jobs, backend="slurm")
    path = jobs / "_rslurm_refused"
    assert str(info.value).splitlines()[0] == f"sbatch refused the job: {SBATCH_REFUSAL}"
    assert info.value.stderr == SBATCH_REFUSAL
    assert str(path) in str(info.value)

    calls = [c for c in _calls(fake_slurm).splitlines() if c != "sbatch --help"]
    assert calls == ["scontrol show config", f"sbatch --parsable {path / 'submit.sh'}"]

    manifest = json.loads((path / jd.MANIFEST).read_text())
    sub = manifest["submissions"][0]
    assert sub["state"] == "failed" and sub["job_id"] is None
    assert SBATCH_REFUSAL in sub["error"]

    status = SlurmJob.from_dir(path).get_job_status()
    assert status.state == "NOT_SUBMITTED"
    assert status.rows_missing == 3 and status.rows_done == 0
    assert any(SBATCH_REFUSAL in reason for reason in status.reasons.values())
    assert {d.state for d in status.task_details} == {"NOT_SUBMITTED"}


def test_submit_false_writes_the_script_without_calling_sbatch(jobs: Path, fake_slurm: Path) -> None:
    def f(x):
        return x

    job = run(f, pd.DataFrame({"x": [1, 2, 3]}), jobname="written", job_dir=jobs, backend="slurm", submit=False)
    assert [c for c in _calls(fake_slurm).splitlines() if c != "sbatch --help"] == ["scontrol show config"]
    assert job.manifest.submissions[0].state == "written"
    assert job.get_job_status().state == "NOT_SUBMITTED"


def test_public_errors_share_one_base() -> None:
    for name in slurm_apply.__all__:
        obj = getattr(slurm_apply, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and name != "RemoteTraceback":
            assert issubclass(obj, SlurmApplyError), name
    assert issubclass(InputError, ValueError) and issubclass(UnpicklableError, InputError)
    assert issubclass(JobDirExistsError, InputError)
