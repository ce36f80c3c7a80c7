"""The throw-away Slurm cluster of testbed.py, checked against real Slurm daemons.

Two clusters run side by side, one with accounting (slurmdbd + MariaDB) and one without, as
real sites differ in that.  Needs root and Debian's Slurm packages: without them the tests skip
(or, with CI=true, fail) and say how to install; SLURM_APPLY_INSTALL=1 installs them first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

import testbed  # noqa: E402  (needs the path above under any pytest import mode)

JOB_TIMEOUT_S = 60

pytestmark = pytest.mark.slurm  # real Slurm daemons: not part of the fast, no-cluster loop


def _require_slurm() -> None:
    """Skip, or fail on CI, when this machine cannot run the testbed."""
    problem = None
    if os.geteuid() != 0:
        problem = "the Slurm testbed must run as root"
    else:
        missing = testbed.slurm_packages_missing()
        if missing and os.environ.get("SLURM_APPLY_INSTALL") == "1":
            testbed.install_slurm_packages()
            missing = testbed.slurm_packages_missing()
        if missing:
            problem = (
                f"Slurm executables missing: {', '.join(missing)}. Install them with "
                f"`apt-get install -y --no-install-recommends {' '.join(testbed.DEBIAN_PACKAGES)}` "
                "(as root), or rerun with SLURM_APPLY_INSTALL=1 to let the tests do it"
            )
    if problem is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{problem}; CI must run the Slurm tests", pytrace=False)
    pytest.skip(problem)


@pytest.fixture(scope="module")
def clusters(tmp_path_factory):
    """One cluster with accounting and one without, both running for the whole module."""
    _require_slurm()
    with_accounting = testbed.SlurmCluster(
        tmp_path_factory.mktemp("acct"), nodes=2, accounting=True
    )
    without_accounting = testbed.SlurmCluster(
        tmp_path_factory.mktemp("plain"), nodes=2, accounting=False
    )
    with with_accounting, without_accounting:
        yield with_accounting, without_accounting


@pytest.fixture
def accounting_cluster(clusters):
    return clusters[0]


@pytest.fixture
def plain_cluster(clusters):
    return clusters[1]


def _run(
    cluster: testbed.SlurmCluster, *command: str, cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, env={**os.environ, **cluster.env()}, cwd=cwd, capture_output=True, text=True,
        timeout=60, check=False,
    )


def _sbatch(cluster: testbed.SlurmCluster, tmp_path: Path, *args: str) -> str:
    result = _run(
        cluster, "sbatch", "--parsable", f"--output={tmp_path}/slurm-%j.out", *args, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(";")[0]


def _job_state(cluster: testbed.SlurmCluster, job_id: str) -> str:
    # MinJobAge=600 keeps finished jobs in squeue, so this works without accounting too.
    result = _run(cluster, "squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _wait_for_state(cluster: testbed.SlurmCluster, job_id: str, wanted: str) -> None:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while (state := _job_state(cluster, job_id)) != wanted:
        assert state in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"), (
            f"job {job_id} is {state}, expected {wanted}"
        )
        assert time.monotonic() < deadline, f"job {job_id} still {state} after {JOB_TIMEOUT_S} s"
        time.sleep(0.2)


def _sacct_state(cluster: testbed.SlurmCluster, job_id: str) -> subprocess.CompletedProcess:
    return _run(cluster, "sacct", "-X", "-n", "-P", "-j", job_id, "-o", "JobID,State,ExitCode")


def _start_sleeper(cluster: testbed.SlurmCluster, name: str, *sbatch_args: str) -> int:
    """Submit a job that sleeps for 5 minutes, wait until it runs, return its process id."""
    pid_file = cluster.root / f"{name}.pid"
    job_id = _sbatch(
        cluster, cluster.root, *sbatch_args, "--wrap", f"echo $$ > {pid_file}; exec sleep 300",
    )
    _wait_for_state(cluster, job_id, "RUNNING")
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline, f"job {job_id} runs but never wrote {pid_file}"
        time.sleep(0.05)
    return int(pid_file.read_text())


def _running(pid: int) -> bool:
    # Daemons are reparented to PID 1, which here may leave them as zombies: those have exited.
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line[stat_line.rfind(")") + 2] not in "ZX"


def test_both_clusters_run_at_the_same_time(clusters, tmp_path):
    with_accounting, without_accounting = clusters
    expected = {"slurmctld", "munged", "slurmd-n1", "slurmd-n2"}
    assert set(with_accounting.pids()) == expected | {"slurmdbd", "mariadbd"}
    assert set(without_accounting.pids()) == expected
    assert not set(with_accounting.pids().values()) & set(without_accounting.pids().values())
    assert with_accounting.cluster_name != without_accounting.cluster_name

    job_ids = {
        cluster: _sbatch(cluster, tmp_path, "-J", cluster.cluster_name, "--wrap", "echo hi")
        for cluster in clusters
    }
    for cluster, job_id in job_ids.items():
        _wait_for_state(cluster, job_id, "COMPLETED")
        assert (tmp_path / f"slurm-{job_id}.out").read_text() == "hi\n"
    # Each cluster sees its own job only (both number their jobs from 1).
    for cluster in clusters:
        names = _run(cluster, "squeue", "-h", "-t", "all", "-o", "%j").stdout.split()
        assert cluster.cluster_name in names
        assert not {c.cluster_name for c in clusters if c is not cluster} & set(names)


def test_squeue_and_sinfo_work_on_both(clusters):
    for cluster in clusters:
        result = _run(cluster, "squeue")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[:2] == ["JOBID", "PARTITION"]
        sinfo = _run(cluster, "sinfo", "-h", "-N", "-o", "%N %P")
        assert sinfo.stdout.splitlines() == ["n1 debug*", "n2 debug*"]


def test_side_partition_names_are_checked(tmp_path):
    """A side partition's node is its first letter and 1: it must not clash with n1, n2, ..."""
    for bad in (("nightly",), ("long", "large"), ("debug",), ("Long",)):
        with pytest.raises(ValueError, match="side partition names"):
            testbed.SlurmCluster(tmp_path, side_partitions=bad)
    cluster = testbed.SlurmCluster(tmp_path, nodes=2, side_partitions=("long",))
    assert (cluster.node_names, cluster.all_nodes, cluster.side_nodes) == (
        ["n1", "n2"], ["n1", "n2", "l1"], {"long": "l1"})


def test_sacct_reports_completed_job(accounting_cluster, tmp_path):
    job_id = _sbatch(accounting_cluster, tmp_path, "--wrap", "echo hi")
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        result = _sacct_state(accounting_cluster, job_id)
        assert result.returncode == 0, result.stderr
        if result.stdout.strip() == f"{job_id}|COMPLETED|0:0":
            break
        assert time.monotonic() < deadline, f"sacct still says {result.stdout!r}"
        time.sleep(0.2)
    assert (tmp_path / f"slurm-{job_id}.out").read_text() == "hi\n"


def test_sacct_without_accounting_says_disabled(plain_cluster, tmp_path):
    job_id = _sbatch(plain_cluster, tmp_path, "--wrap", "echo hi")
    _wait_for_state(plain_cluster, job_id, "COMPLETED")
    result = _sacct_state(plain_cluster, job_id)
    assert result.returncode != 0
    assert "accounting storage is disabled" in result.stdout + result.stderr


@pytest.mark.parametrize("accounting", [True, False], ids=["accounting", "plain"])
def test_stop_leaves_no_daemon_or_job_running(tmp_path_factory, accounting):
    _require_slurm()
    root = tmp_path_factory.mktemp("stop")
    cluster = testbed.SlurmCluster(root, nodes=1, accounting=accounting)
    cluster.start()
    try:
        pids = cluster.pids()
        pids["job"] = _start_sleeper(cluster, "sleeper")
    finally:
        cluster.stop()
    assert {name: pid for name, pid in pids.items() if _running(pid)} == {}
    assert cluster.pids() == {}
    cluster.stop()  # idempotent


def test_kill_node_kills_that_nodes_slurmd_and_jobs_only(tmp_path_factory):
    _require_slurm()
    root = tmp_path_factory.mktemp("kill")
    with testbed.SlurmCluster(root, nodes=2, accounting=False) as cluster:
        jobs = {node: _start_sleeper(cluster, node, f"--nodelist={node}") for node in ("n1", "n2")}
        daemons = cluster.pids()

        cluster.kill_node("n1")

        assert not _running(daemons["slurmd-n1"])
        assert not _running(jobs["n1"])
        assert _running(daemons["slurmd-n2"])
        assert _running(jobs["n2"])
        cluster.restart_node("n1")
        assert "slurmd-n1" in cluster.pids()
    assert not _running(jobs["n2"])


def _timed(cluster: testbed.SlurmCluster, *command: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = _run(cluster, *command)
    return result, time.monotonic() - started


def _wait_for_sacct(cluster: testbed.SlurmCluster, job_id: str, wanted: str) -> None:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while (result := _sacct_state(cluster, job_id)).stdout.strip() != f"{job_id}|{wanted}":
        assert time.monotonic() < deadline, f"sacct still says {result.stdout!r} {result.stderr!r}"
        time.sleep(0.3)


def test_jobs_survive_a_controller_restart(accounting_cluster, tmp_path):
    cluster = accounting_cluster
    running = _sbatch(cluster, tmp_path, "--wrap", "sleep 10; echo ran")
    _wait_for_state(cluster, running, "RUNNING")
    queued = _sbatch(cluster, tmp_path, f"--dependency=afterok:{running}", "--wrap", "echo queued")
    assert _job_state(cluster, queued) == "PENDING"
    daemons = cluster.pids()

    cluster.stop_controller()
    try:
        assert not _running(daemons["slurmctld"])
        assert set(cluster.pids()) == set(daemons) - {"slurmctld"}
        result, took = _timed(cluster, "squeue", "-h", "-j", running)
        assert result.returncode == 1
        assert "Unable to contact slurm controller (connect failure)" in result.stderr
        assert took < 8, f"squeue took {took:.1f} s to fail (MessageTimeout)"
        assert "DOWN" in _run(cluster, "scontrol", "ping").stdout
        assert _sacct_state(cluster, running).returncode == 0  # slurmdbd answers without it
        with pytest.raises(testbed.TestbedError, match="not running"):
            cluster.stop_controller()
    finally:
        cluster.start_controller()

    assert _job_state(cluster, running) in ("RUNNING", "COMPLETING", "COMPLETED")
    _wait_for_state(cluster, queued, "COMPLETED")
    _wait_for_state(cluster, running, "COMPLETED")
    assert (tmp_path / f"slurm-{running}.out").read_text() == "ran\n"
    assert (tmp_path / f"slurm-{queued}.out").read_text() == "queued\n"
    with pytest.raises(testbed.TestbedError, match="still running"):
        cluster.start_controller()


def test_sacct_fails_while_dbd_is_stopped(accounting_cluster, tmp_path):
    cluster = accounting_cluster
    before = _sbatch(cluster, tmp_path, "--wrap", "echo before")
    _wait_for_sacct(cluster, before, "COMPLETED|0:0")

    cluster.stop_dbd()
    try:
        assert "slurmdbd" not in cluster.pids()
        result, took = _timed(cluster, "sacct", "-X", "-n", "-P", "-j", before)
        assert result.returncode == 1 and result.stdout == ""
        assert "sacct: error: Problem talking to the database: Connection refused" in result.stderr
        assert took < 5
        # slurmctld goes on without slurmdbd: squeue answers and jobs run.
        during = _sbatch(cluster, tmp_path, "--wrap", "echo during")
        _wait_for_state(cluster, during, "COMPLETED")
    finally:
        cluster.start_dbd()

    assert "slurmdbd" in cluster.pids()
    _wait_for_sacct(cluster, before, "COMPLETED|0:0")
    _wait_for_sacct(cluster, during, "COMPLETED|0:0")  # slurmctld sent what it kept


def test_dbd_controls_need_accounting(plain_cluster):
    for method in (plain_cluster.stop_dbd, plain_cluster.start_dbd):
        with pytest.raises(testbed.TestbedError, match="without accounting"):
            method()
