"""Tracebacks keep the user's code, whatever cloudpickle does with file names.

cloudpickle 3.1 names every function it pickles by value ``<dynamic-code>``; and a function
defined in a notebook cell has a file that exists only in the kernel's memory. The payload keeps
each such function's source, file name and first line; where it is loaded (a node, test_row,
``slurm-apply test --pdb``) the code gets its file name back and the source is in linecache. The
tests delete the user's script before anything is loaded, so the lines can only come from the job.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from slurm_apply import RowsFailedError, SlurmJob
from slurm_apply._store import payload

REPO = Path(__file__).resolve().parent.parent

SCRIPT = '''\
import sys

import pandas as pd

from slurm_apply import slurm_apply


class Scaler:
    def __init__(self, k):
        self.k = k

    def scale(self, x):
        if x == 3:
            raise ArithmeticError("three")  # the method's line
        return x * self.k


SCALER = Scaler(10)


def check(x):
    def inner(y):
        if y == 2:
            raise ValueError(f"bad row {y}")  # the nested function's line
        return y

    return SCALER.scale(inner(x))


if __name__ == "__main__":
    slurm_apply(check, pd.DataFrame({"x": range(5)}), backend="local", job_dir=sys.argv[1],
                jobname="tb", nodes=1, cpus_per_node=1, submit=False)
'''


def line_of(text: str, marker: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if marker in line)


def env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}


@pytest.fixture()
def script_job(tmp_path: Path):
    """A job written by a script run as ``__main__`` (so its functions and class travel by value),
    the script deleted afterwards: (job, the script's path)."""
    script = tmp_path / "user_script.py"
    script.write_text(SCRIPT)
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, env=env(),
                   cwd=tmp_path, capture_output=True, text=True, timeout=120)
    script.unlink()
    return SlurmJob.from_dir(tmp_path / "_rslurm_tb"), script


def assert_shows(tb: str, script: Path, marker: str, where: str) -> None:
    """``tb`` has the frame of ``where`` in the deleted script, at the right line, with its text."""
    n = line_of(SCRIPT, marker)
    expected = f'File "{script}", line {n}, in {where}\n    {SCRIPT.splitlines()[n - 1].strip()}'
    assert expected in tb, tb
    assert "<dynamic-code>" not in tb, tb


def test_rows_raising_in_a_main_script_show_its_lines(script_job):
    job, script = script_job
    job.submit()
    assert job.wait(timeout_s=120, progress=False).failed_rows == [2, 3]
    with pytest.raises(RowsFailedError) as err:
        job.get_output()
    tb = str(err.value.__cause__)
    assert_shows(tb, script, "the nested function's line", "inner")
    n = line_of(SCRIPT, "return SCALER.scale(inner(x))")
    assert f'File "{script}", line {n}, in check\n' in tb
    errors = job.get_errors()
    assert_shows(errors[3][2], script, "the method's line", "scale")


def test_test_row_fresh_shows_the_lines_too(script_job):
    job, script = script_job
    with pytest.raises(ValueError) as info:
        job.test_row(2, fresh=True)
    assert_shows(str(info.value.__cause__), script, "the nested function's line", "inner")
    with pytest.raises(ArithmeticError) as info:  # in this process too
        job.test_row(3)
    tb = "".join(__import__("traceback").format_exception(info.type, info.value, info.tb))
    assert_shows(tb, script, "the method's line", "scale")


def test_pdb_lists_the_users_source(script_job):
    job, script = script_job
    proc = subprocess.run([sys.executable, "-m", "slurm_apply", "test", str(job.job_dir), "2", "--pdb"],
                          input="ll\nq\n", env=env(), capture_output=True, text=True, timeout=120)
    n = line_of(SCRIPT, "the nested function's line")
    # pdb's longlist of the frame that raised: the nested function, numbered as in the script.
    assert re.search(rf"{n}\s+->\s+raise ValueError", proc.stdout), proc.stdout + proc.stderr
    assert re.search(rf"{n - 2}\s+def inner\(y\):", proc.stdout), proc.stdout


def test_a_function_without_source_still_runs_and_says_so_once(tmp_path, caplog):
    ns: dict = {}
    exec(compile("def made(x):\n    return x + 1\n\ndef twice(x):\n    return made(made(x))\n",
                 "<generated>", "exec"), ns)
    made, twice = ns["made"], ns["twice"]
    with caplog.at_level(logging.INFO, logger="slurm_apply"):
        payload.write_payload(tmp_path, twice, {})
    said = [r.getMessage() for r in caplog.records if "source" in r.getMessage()]
    assert len(said) == 1, said
    assert "twice" in said[0] and "made" in said[0] and "<generated>" in said[0]
    code = textwrap.dedent("""
        import sys
        from slurm_apply._store.payload import load
        print(load(sys.argv[1])(1))
    """)
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "3", proc.stderr
    assert made(1) == 2  # the caller's own function is left as it was


def test_loading_here_keeps_the_rest_of_a_file_in_linecache(tmp_path):
    """Loading in the submitting process (test_row does) adds the job's lines to what linecache
    has for the file: the file's other lines stay as they are."""
    import linecache

    def local(x):
        raise KeyError(x)

    payload.write_payload(tmp_path, local, {})
    whole = Path(__file__).read_text().splitlines(keepends=True)
    loaded = payload.load(tmp_path)
    assert loaded.__code__.co_filename == __file__
    assert loaded.__code__.co_firstlineno == local.__code__.co_firstlineno
    assert linecache.getlines(__file__) == whole


def test_the_payload_is_still_f_and_the_objects_first(tmp_path):
    """Whoever unpickles payload.pkl once gets (f, objects) as before; a payload written before
    the sources followed it loads too."""
    import pickle

    def g(x):
        return x * 2

    payload.write_payload(tmp_path, g, {"k": 1})
    with open(tmp_path / payload.PAYLOAD, "rb") as fh:
        f, objects = pickle.load(fh)
    assert f(2) == 4 and objects == {"k": 1}
    old = tmp_path / "old"
    old.mkdir()
    with open(old / payload.PAYLOAD, "wb") as fh:
        __import__("cloudpickle").dump((g, {}), fh, protocol=5)
    assert payload.load(old)(3) == 6
