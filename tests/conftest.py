"""Fixtures: the suite starts its own private Slurm clusters (see testbed.py) and a private Grid
Engine cell (see sgebed.py), and tears them down.

Tests marked ``slurm`` need the clusters, tests marked ``sge`` the cell. When one cannot be started:
under CI (``CI=true``) such a test FAILS, saying why; elsewhere it is skipped with the reason and the
command that installs the scheduler (``bash tests/run.sh`` does it all as root).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Tuple

import pytest

# The tests start about 1,300 Python interpreters (array tasks, follow-ups, pre-flights, local
# runners), each importing the package. A pip-installed package has its bytecode written at install
# time; this checkout is installed editable, so under PYTHONDONTWRITEBYTECODE=1 (set on some
# machines, this one included) each of them compiled the package from source again: ~45 ms each,
# 22 of the no-cluster tests' 234 CPU-seconds. Let the first one write the bytecode, as an
# installation would, and pytest cache its rewritten test modules.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

sys.path.insert(0, str(Path(__file__).parent))
import early  # noqa: E402
import sgebed  # noqa: E402
import testbed  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(why: str) -> None:
    message = (
        f"this test needs the private Slurm test cluster, which could not be started: {why}\n"
        "Run the whole suite with `bash tests/run.sh` (as root it installs Debian's Slurm packages), "
        "or install them: apt-get install slurmctld slurmd slurm-client munge slurmdbd mariadb-server"
    )
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class _ClusterBox:
    """Starts a cluster on first use and remembers a failure so each test reports it quickly."""

    def __init__(self, *, accounting: bool, nodes: int) -> None:
        self.accounting = accounting
        self.nodes = nodes
        self.cluster: Optional[testbed.SlurmCluster] = None
        self.error: Optional[str] = None

    def get(self) -> testbed.SlurmCluster:
        if self.cluster is None and self.error is None:
            missing = testbed.slurm_packages_missing(accounting=self.accounting)
            if missing:
                self.error = f"missing executables: {', '.join(missing)}"
            else:
                root = tempfile.mkdtemp(prefix="sa-cluster-")
                os.chmod(root, 0o755)
                cluster = testbed.SlurmCluster(root, nodes=self.nodes, accounting=self.accounting,
                                               name="acct" if self.accounting else "noacct",
                                               side_partitions=("long",))
                try:
                    cluster.start()
                except Exception as exc:  # report it on every test that needs this cluster
                    self.error = f"{type(exc).__name__}: {exc}"
                else:
                    self.cluster = cluster
        if self.error is not None:
            _unavailable(self.error)
        assert self.cluster is not None
        return self.cluster

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()


@pytest.fixture(scope="session")
def _acct_box() -> Iterator[_ClusterBox]:
    box = _ClusterBox(accounting=True, nodes=3)
    yield box
    box.stop()


@pytest.fixture(scope="session")
def _noacct_box() -> Iterator[_ClusterBox]:
    box = _ClusterBox(accounting=False, nodes=2)
    yield box
    box.stop()


def _use(cluster: testbed.SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> testbed.SlurmCluster:
    for key, value in cluster.env().items():
        monkeypatch.setenv(key, value)
    return cluster


@pytest.fixture
def cluster(_acct_box: _ClusterBox, monkeypatch: pytest.MonkeyPatch) -> testbed.SlurmCluster:
    """A 3-node cluster with accounting (sacct works); SLURM_CONF points at it for this test.
    Both clusters also have a partition ``long`` of one node of 4 CPUs (``l1``), for jobs that
    wait out a time limit while other tests run (tests/test_retries_cluster.py)."""
    return _use(_acct_box.get(), monkeypatch)


@pytest.fixture
def cluster_noacct(_noacct_box: _ClusterBox, monkeypatch: pytest.MonkeyPatch) -> testbed.SlurmCluster:
    """A 2-node cluster without accounting (sacct says it is disabled)."""
    return _use(_noacct_box.get(), monkeypatch)


@pytest.fixture(params=["acct", "noacct"])
def any_cluster(request: pytest.FixtureRequest, _acct_box: _ClusterBox, _noacct_box: _ClusterBox,
                monkeypatch: pytest.MonkeyPatch) -> testbed.SlurmCluster:
    """Each test using it runs on both kinds of cluster."""
    box = _acct_box if request.param == "acct" else _noacct_box
    return _use(box.get(), monkeypatch)


@pytest.fixture(scope="session", autouse=True)
def _early_jobs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Start the early jobs (tests/early.py) of the modules whose selected tests want them."""
    wanted = {item.module.__name__ for item in request.session.items
              if "early_jobs" in getattr(item, "fixturenames", ())}
    for module, name in sorted(k for k in early.STARTERS if k[0] in wanted):
        kind = early.STARTERS[(module, name)][0]
        box = request.getfixturevalue(f"_{kind}_box")
        parent = tmp_path_factory.mktemp(f"early_{name}")
        os.chmod(parent, 0o755)
        with pytest.MonkeyPatch.context() as mp:
            try:
                cluster = box.get()
            except (Exception, pytest.skip.Exception, pytest.fail.Exception) as exc:
                # No cluster: the test that owns the job says so (it fails in CI, else skips).
                early.STARTED[(module, name)] = (RuntimeError(f"no {kind} cluster: {exc}"), 0.0)
                continue
            for key, value in cluster.env().items():
                mp.setenv(key, value)
            early.start(module, name, parent)


@pytest.fixture
def early_jobs(request: pytest.FixtureRequest) -> early.Jobs:
    """This module's early jobs (tests/early.py), started when the clusters came up."""
    return early.Jobs(request.module.__name__)


@pytest.fixture
def job_parent(tmp_path: Path) -> Path:
    """A directory the cluster's daemons can reach (they run as root on this machine)."""
    os.chmod(tmp_path, 0o755)
    return tmp_path


def _sge_unavailable(why: str) -> None:
    message = (
        f"this test needs the private Grid Engine test cell, which could not be started: {why}\n"
        "Run the whole suite with `bash tests/run.sh` (as root it installs Debian's Grid Engine "
        f"packages), or install them {sgebed.INSTALL_HINT}"
    )
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class _CellBox:
    """Starts the Grid Engine cell on first use and remembers a failure, like _ClusterBox."""

    def __init__(self) -> None:
        self.cell: Optional[sgebed.SgeCell] = None
        self.error: Optional[str] = None

    def get(self) -> sgebed.SgeCell:
        if self.cell is None and self.error is None:
            missing = sgebed.sge_packages_missing()
            if missing:
                self.error = f"Grid Engine is not installed (missing: {', '.join(missing)})"
            else:
                root = tempfile.mkdtemp(prefix="sa-sge-")
                os.chmod(root, 0o755)
                cell = sgebed.SgeCell(root)
                try:
                    cell.start()
                except Exception as exc:  # report it on every test that needs the cell
                    self.error = f"{type(exc).__name__}: {exc}"
                else:
                    self.cell = cell
        if self.error is not None:
            _sge_unavailable(self.error)
        assert self.cell is not None
        return self.cell

    def stop(self) -> None:
        if self.cell is not None:
            self.cell.stop()


@pytest.fixture(scope="session")
def _sge_box() -> Iterator[_CellBox]:
    box = _CellBox()
    yield box
    box.stop()


@pytest.fixture(scope="session")
def sge_cell(_sge_box: _CellBox) -> sgebed.SgeCell:
    """The session's private Grid Engine cell (4 slots, parallel environment ``smp``); pass
    ``env={**os.environ, **sge_cell.env()}`` to the commands that should reach it."""
    return _sge_box.get()


@pytest.fixture(params=[pytest.param("slurm", marks=pytest.mark.slurm),
                        pytest.param("sge", marks=pytest.mark.sge)])
def scheduler(request: pytest.FixtureRequest, job_parent: Path,
              monkeypatch: pytest.MonkeyPatch) -> Tuple[str, Path]:
    """(backend name, job_parent): each test using it runs on the private Slurm cluster (with
    accounting) and on the Grid Engine cell, each reached as ``cluster`` and ``sge_cell`` are."""
    if request.param == "slurm":
        request.getfixturevalue("cluster")
    else:
        for key, value in request.getfixturevalue("sge_cell").env().items():
            monkeypatch.setenv(key, value)
    return request.param, job_parent


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if {"cluster", "cluster_noacct", "any_cluster", "early_jobs"} & fixtures:
            item.add_marker(pytest.mark.slurm)
        if "sge_cell" in fixtures:
            item.add_marker(pytest.mark.sge)


@pytest.fixture(autouse=True)
def _no_site_defaults(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own ~/.config/slurm_apply/config.toml must not change what tests submit."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.getbasetemp() / "no-config"))
    monkeypatch.delenv("SLURM_APPLY_CONFIG", raising=False)
