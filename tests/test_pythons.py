"""The oldest and newest Python the package claims (3.9, with the oldest releases its
requirements allow, and 3.13, with the newest), each in a venv of its own that tests/run.sh
builds (.venvs/oldest, .venvs/py313): a local-backend round trip on each."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

ROUND_TRIP = r'''
import sys
import pandas as pd
from slurm_apply import slurm_apply

def f(x, y):
    return {"sum": x + y, "python": sys.version_info[:2]}

df = pd.DataFrame({"x": range(20), "y": [0.5 * i for i in range(20)]})
job = slurm_apply(f, df, backend="local", nodes=2, cpus_per_node=2, job_dir=sys.argv[1], jobname="rt")
status = job.wait(timeout_s=120, progress=False)
assert status.completed, str(status)
out = job.get_output()
assert list(out["sum"]) == [x + y for x, y in zip(df.x, df.y)], out
assert {tuple(v) for v in out["python"]} == {tuple(sys.version_info[:2])}
job.cleanup_files()
print("round trip on", sys.version.split()[0], "pandas", pd.__version__)
'''


@pytest.mark.parametrize("venv, version", [(".venvs/oldest", (3, 9)), (".venvs/py313", (3, 13))],
                         ids=["3.9-oldest", "3.13-newest"])
def test_a_local_round_trip_on_the_oldest_and_newest_python(venv, version, tmp_path):
    python = REPO / venv / "bin" / "python"
    if not python.exists():
        why = (f"{python} is missing: `bash tests/run.sh` builds it (it needs Python "
               f"{version[0]}.{version[1]}, e.g. from pyenv)")
        if IN_CI:
            pytest.fail(why)
        pytest.skip(why)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(python), "-c", ROUND_TRIP, str(tmp_path)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"round trip on {version[0]}.{version[1]}." in proc.stdout
