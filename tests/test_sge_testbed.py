"""The throw-away Grid Engine cell of sgebed.py, checked against the real daemons.

Needs root and Debian's Grid Engine packages: without them the tests skip (or, with CI=true,
fail) and say how to install; ``bash tests/run.sh`` installs them as root.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

import sgebed  # noqa: E402  (needs the path above under any pytest import mode)

# Tests that use the fixture sge_cell are marked sge by conftest; those that start a cell of
# their own carry the mark themselves.
REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("ci", ["true", ""])
def test_without_grid_engine_the_fixture_says_why_and_fails_under_ci(ci: str, tmp_path: Path) -> None:
    # No qsub on PATH: the fixture must not start anything, and must say what to install.
    env = {**os.environ, "PATH": str(tmp_path), "CI": ci, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-rs",
         f"{__file__}::test_the_session_cell_answers"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    out = result.stdout + result.stderr
    assert "could not be started: Grid Engine is not installed (missing: qsub" in out, out
    assert "apt-get install -y --no-install-recommends gridengine-master gridengine-exec gridengine-client" in out, out
    if ci:
        assert result.returncode == 1 and "1 error" in out, out  # pytest.fail in a fixture
    else:
        assert result.returncode == 0 and "1 skipped" in out, out


def test_the_session_cell_answers(sge_cell: sgebed.SgeCell) -> None:
    result = subprocess.run(["qconf", "-sql"], env={**os.environ, **sge_cell.env()},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.split() == ["all.q"], result
    assert set(sge_cell.pids()) == {"sge_qmaster", "sge_execd"}
