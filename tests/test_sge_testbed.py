"""The throw-away Grid Engine cell of sgebed.py, checked against the real daemons.

Needs root and Debian's Grid Engine packages: without them the tests skip (or, with CI=true,
fail) and say how to install; ``bash tests/run.sh`` installs them as root.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

import sgebed  # noqa: E402  (needs the path above under any pytest import mode)

# Tests that use the fixture sge_cell are marked sge by conftest; those that start a cell of
# their own carry the mark themselves.
REPO = Path(__file__).resolve().parent.parent
JOB_TIMEOUT_S = 60


def _run(cell: sgebed.SgeCell, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, env={**os.environ, **cell.env()}, capture_output=True,
                            text=True, timeout=60)
    if check:
        assert result.returncode == 0, f"{command} exited {result.returncode}: {result.stdout}{result.stderr}"
    return result


def _submit(cell: sgebed.SgeCell, job_dir: Path, script: str, *options: str) -> str:
    """qsub -terse a bash script; return the job number (qsub prints "3.1-4:1" for an array)."""
    path = _script(job_dir, script)
    out = _run(cell, "qsub", "-terse", "-S", "/bin/bash", *options, str(path)).stdout.strip()
    return out.split(".")[0]


def _qacct_tasks(cell: sgebed.SgeCell, job: str, count: int) -> list[dict[str, str]]:
    """qacct -j's records of job, once it holds count of them (the accounting file is flushed
    every second)."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        result = _run(cell, "qacct", "-j", job, check=False)
        records = [dict(line.split(None, 1) for line in block.splitlines() if len(line.split(None, 1)) == 2)
                   for block in result.stdout.split("=" * 62) if block.strip()]
        if len(records) >= count:
            return records
        assert time.monotonic() < deadline, f"qacct -j {job} has {len(records)} of {count} records: {result}"
        time.sleep(0.5)


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


def test_the_cell_runs_an_array_job_with_one_log_per_task(sge_cell: sgebed.SgeCell, tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    out = _run(sge_cell, "qsub", "-terse", "-t", "1-4", "-N", "four", "-j", "y",
               "-o", f"{tmp_path}/log.$TASK_ID", "-b", "n", "-S", "/bin/bash",
               str(_script(tmp_path, 'echo "task=$SGE_TASK_ID of $SGE_TASK_FIRST-$SGE_TASK_LAST job=$JOB_ID"'))
               ).stdout.strip()
    job, _, tasks = out.partition(".")
    assert job.isdigit() and tasks == "1-4:1", out
    records = _qacct_tasks(sge_cell, job, 4)
    assert sorted(r["taskid"].strip() for r in records) == ["1", "2", "3", "4"]
    assert {(r["failed"].strip(), r["exit_status"].strip()) for r in records} == {("0", "0")}
    assert {r["jobname"].strip() for r in records} == {"four"}
    for task in range(1, 5):
        assert (tmp_path / f"log.{task}").read_text() == f"task={task} of 1-4 job={job}\n"


def _script(job_dir: Path, body: str) -> Path:
    path = job_dir / "job.sh"
    path.write_text("#!/bin/bash\n" + body + "\n")
    return path


def test_qstat_xml_lists_running_tasks_one_by_one_and_pending_ones_as_a_range(
        sge_cell: sgebed.SgeCell, tmp_path: Path) -> None:
    job = _submit(sge_cell, tmp_path, "sleep 20", "-t", "1-10", "-tc", "2", "-o", "/dev/null", "-j", "y")
    try:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while True:
            root = ET.fromstring(_run(sge_cell, "qstat", "-xml").stdout)
            mine = [entry for entry in root.iter("job_list") if entry.findtext("JB_job_number") == job]
            running = sorted((entry.findtext("tasks"), entry.findtext("state"))
                             for entry in mine if entry.get("state") == "running")
            pending = [(entry.findtext("state"), entry.findtext("tasks"))
                       for entry in mine if entry.get("state") == "pending"]
            # A task being started is under "running" in state t (transferring) for a moment.
            if [state for _, state in running] == ["r", "r"]:
                break
            assert time.monotonic() < deadline, ET.tostring(root, encoding="unicode")
            time.sleep(0.3)
        assert running == [("1", "r"), ("2", "r")]
        assert pending == [("qw", "3-10:1")]
    finally:
        _run(sge_cell, "qdel", job)


@pytest.mark.sge
def test_a_cell_of_its_own_survives_a_qmaster_restart_and_stops_clean(tmp_path: Path) -> None:
    if sgebed.sge_packages_missing() or os.geteuid() != 0:
        why = "Grid Engine is not installed or this is not root (bash tests/run.sh, as root, installs it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(why)  # in CI every test runs: it may not skip where the fixture fails
        pytest.skip(why)
    os.chmod(tmp_path, 0o755)
    started = time.monotonic()
    cell = sgebed.SgeCell(tmp_path / "cell", slots=2)
    with cell:
        assert time.monotonic() - started < 15, "the cell should be usable within a few seconds"
        daemons = cell.pids()
        assert set(daemons) == {"sge_qmaster", "sge_execd"}
        job = _submit(cell, tmp_path, "sleep 60", "-o", "/dev/null", "-j", "y")
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while "<state>r</state>" not in _run(cell, "qstat", "-xml").stdout:
            assert time.monotonic() < deadline
            time.sleep(0.2)

        cell.stop_qmaster(kill=True)
        down = _run(cell, "qstat", "-xml", check=False)
        assert down.returncode == 1 and "unable to send message to qmaster" in down.stderr, down
        # qacct reads the accounting file, not the qmaster; no job has ended in this cell yet,
        # so there is no file (once there is one it says "error: job id N not found").
        acct = _run(cell, "qacct", "-j", job, check=False)
        assert acct.returncode == 1 and acct.stdout == "no jobs running since startup\n", acct
        assert acct.stderr == f"{cell.accounting_file}: No such file or directory\n", acct

        cell.start_qmaster(wait_for_execd=False)
        assert f"<JB_job_number>{job}</JB_job_number>" in _run(cell, "qstat", "-xml").stdout
        assert cell.pids()["sge_execd"] == daemons["sge_execd"]
        processes = cell.processes()
        assert len(processes) > 2  # the daemons, the job's shepherd, bash and sleep
    assert cell.processes() == set() and cell.pids() == {}
    assert all(not sgebed._is_running(pid) for pid in processes)
