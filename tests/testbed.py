"""A private, throw-away Slurm cluster started from Python.

Used by the test suite (through fixtures) and by the benchmark script, so it depends on the
standard library only and can be imported on its own::

    sys.path.insert(0, "tests")
    import testbed

    with testbed.SlurmCluster(tmp_dir, nodes=3) as cluster:
        env = {**os.environ, **cluster.env()}
        subprocess.run(["sbatch", "--wrap", "hostname"], env=env, check=True)

Every daemon (munged, mariadbd, slurmdbd, slurmctld and one slurmd per node) runs from the
command line with its configuration, state, logs, sockets and pid files under one root
directory, on TCP ports picked free at start.  Several clusters can therefore run side by side
on one machine, next to a developer's own Slurm.  Daemons are stopped through their pid files,
never by name.

Needs root (every daemon, MariaDB included, runs as root, SlurmUser=root) and
Debian's packages ``slurmctld slurmd slurm-client munge`` (plus ``slurmdbd mariadb-server`` for
accounting); see :func:`install_slurm_packages`.  The configuration follows the facts checked
on this machine kind in ``slurm-testbed.md`` (no cgroups, no systemd).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = [
    "SlurmCluster",
    "TestbedError",
    "install_slurm_packages",
    "slurm_packages_missing",
]

SBIN = "/usr/sbin"
DEBIAN_PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server")
CORE_EXECUTABLES = (
    "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "sacct", "scontrol", "scancel", "munged",
)
ACCOUNTING_EXECUTABLES = ("slurmdbd", "mariadbd", "mariadb-install-db", "mariadb", "sacctmgr")

# sun_path holds 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107
# slurmstepd names its socket "<SlurmdSpoolDir>/<node>_<jobid>.<stepid>", both ids up to 10 digits.
_STEPD_SOCKET_SUFFIX = len("/_4294967295.4294967295")
_DAEMON_STOP_TIMEOUT_S = 15.0


class TestbedError(RuntimeError):
    """The testbed could not install, start or control its cluster; the message says why."""

    __test__ = False  # not a pytest test class, despite the name


def _find_executable(name: str) -> str | None:
    # Debian puts the daemons in /usr/sbin, which a non-login PATH may lack.
    found = shutil.which(name)
    if found:
        return found
    candidate = Path(SBIN) / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return None


def slurm_packages_missing(*, accounting: bool = True) -> list[str]:
    """Return the executables the testbed needs that are found neither on PATH nor in /usr/sbin.

    Parameters
    ----------
    accounting : bool
        Also check what a cluster with accounting needs (slurmdbd, MariaDB, sacctmgr).

    Returns
    -------
    list of str
        Executable names, empty when everything is installed.
    """
    needed = CORE_EXECUTABLES + (ACCOUNTING_EXECUTABLES if accounting else ())
    return [name for name in needed if _find_executable(name) is None]


def install_slurm_packages() -> None:
    """Install Debian's Slurm, munge and MariaDB packages with apt-get.

    Runs ``apt-get update`` then ``apt-get install -y --no-install-recommends`` for
    ``slurmctld slurmd slurm-client munge slurmdbd mariadb-server``.

    Raises
    ------
    TestbedError
        When not root, when apt-get is not available, or when apt-get fails (with the tail of
        its output).
    """
    manual = "apt-get install -y --no-install-recommends " + " ".join(DEBIAN_PACKAGES)
    if os.geteuid() != 0:
        raise TestbedError(f"installing the Slurm packages needs root; as root run: {manual}")
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        raise TestbedError(
            "apt-get was not found, so the Slurm packages cannot be installed automatically; "
            f"install the equivalents of Debian's: {' '.join(DEBIAN_PACKAGES)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["update"], ["install", "-y", "--no-install-recommends", *DEBIAN_PACKAGES]):
        command = [apt_get, *args]
        result = subprocess.run(
            command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace", check=False,
        )
        if result.returncode != 0:
            tail = "\n".join(result.stdout.splitlines()[-30:])
            raise TestbedError(
                f"`{' '.join(command)}` failed with exit code {result.returncode}:\n{tail}"
            )


def _free_ports(count: int) -> list[int]:
    # Hold every socket open until all are bound, so the ports differ from each other.
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"(cannot read {path}: {error.strerror})"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} is empty)"


def _proc_read(pid: int, name: str) -> bytes:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as file:
            return file.read()
    except OSError:
        return b""


def _is_running(pid: int) -> bool:
    # A zombie has exited; in this sandbox PID 1 may never reap the daemons' zombies.
    stat_line = _proc_read(pid, "stat")
    if not stat_line:
        return False
    state = stat_line[stat_line.rfind(b")") + 2:][:1]
    return state not in (b"Z", b"X", b"")


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        stat_line = _proc_read(pid, "stat")
        if not stat_line:
            continue
        fields = stat_line[stat_line.rfind(b")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(pid)
    return children


def _descendants(roots: set[int]) -> set[int]:
    children = _children_map()
    found: set[int] = set()
    pending = list(roots)
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _wait_gone(pids: set[int], timeout_s: float) -> set[int]:
    """Wait until none of pids runs; return those still running at the deadline."""
    deadline = time.monotonic() + timeout_s
    alive = {pid for pid in pids if _is_running(pid)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = {pid for pid in alive if _is_running(pid)}
    return alive


def _listens(pid: int | None, port: int) -> bool:
    """Whether process pid holds a TCP socket listening on port."""
    if pid is None:
        return False
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as file:
                next(file)
                for line in file:
                    fields = line.split()
                    # fields: sl local_address rem_address st ... inode; 0A is LISTEN
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{fields[9]}]")
        except (OSError, StopIteration):
            continue
    return bool(inodes) and bool(_fd_targets(pid) & inodes)


def _fd_targets(pid: int) -> set[str]:
    targets = set()
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return targets
    for descriptor in descriptors:
        try:
            targets.add(os.readlink(f"/proc/{pid}/fd/{descriptor}"))
        except OSError:
            continue
    return targets


def _responding(node_state: str) -> bool:
    """Whether an sinfo ``%T`` node state shows a node that has registered and answers."""
    # "unknown" until its slurmd registers; a trailing "*" means not responding.
    if not node_state or node_state.endswith("*"):
        return False
    return not node_state.startswith(("unknown", "down"))


def _logged_fatal(log: Path, offset: int) -> bool:
    # Slurm daemons log "fatal: ..." just before they exit (munged reports its start-up errors
    # through the exit code of the command that launched it).
    try:
        with open(log, "rb") as file:
            file.seek(offset)
            text = file.read()
    except OSError:
        return False
    return b"fatal:" in text


def start_retrying(bed, deadline: float, port_taken: str) -> None:
    """``bed._start_all(deadline)``, stopping what it started on any error; once more when the
    error says a port was taken (``port_taken``): a port picked free can be taken by someone
    else before the daemon binds it."""
    for attempt in (1, 2):
        bed._started = True
        try:
            bed._start_all(deadline)
            return
        except TestbedError as error:
            bed.stop()
            if attempt == 2 or port_taken not in str(error):
                raise
        except BaseException:
            bed.stop()
            raise


class SlurmCluster:
    """A private Slurm cluster whose files all live under one directory.

    Parameters
    ----------
    root : str or os.PathLike
        Directory for configuration, state, logs, pid files, the munge socket and MariaDB's
        data.  Created if needed.  Must be short enough for unix sockets (about 70 characters).
    nodes : int
        Number of nodes, named ``n1``, ``n2``, ...; each is one slurmd on this machine.
    cpus_per_node : int
        ``CPUs=`` of each node (may exceed the machine's cores).
    real_memory_mb : int
        ``RealMemory=`` of each node, in MB.
    accounting : bool
        Run slurmdbd with a private MariaDB so that ``sacct`` works.  Without it ``sacct``
        says ``Slurm accounting storage is disabled``, like many real sites.
    name : str
        Prefix of the ClusterName; a random suffix makes each instance's name unique.
    side_partitions : tuple of str
        Extra partitions, not the default, of one node each (``l1`` for ``"long"``: its first
        letter and 1) with twice ``cpus_per_node``: jobs sent there (``-p long``) never share a
        node with the default partition's, e.g. a job that waits out a time limit while other
        tests run. ``node_names`` lists the default partition's nodes only.

    Examples
    --------
    >>> with SlurmCluster(tmp_path / "slurm", nodes=2) as cluster:     # doctest: +SKIP
    ...     env = {**os.environ, **cluster.env()}
    ...     subprocess.run(["sbatch", "--wrap", "echo hi"], env=env, check=True)
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        nodes: int = 3,
        cpus_per_node: int = 2,
        real_memory_mb: int = 4000,
        accounting: bool = True,
        name: str = "sa",
        side_partitions: tuple[str, ...] = (),
    ) -> None:
        if not isinstance(nodes, int) or nodes < 1:
            raise ValueError(f"nodes must be a positive integer, got {nodes!r}")
        if not isinstance(cpus_per_node, int) or cpus_per_node < 1:
            raise ValueError(f"cpus_per_node must be a positive integer, got {cpus_per_node!r}")
        if not isinstance(real_memory_mb, int) or real_memory_mb < 1:
            raise ValueError(f"real_memory_mb must be a positive integer, got {real_memory_mb!r}")
        if not re.fullmatch(r"[a-z][a-z0-9]{0,19}", name):
            raise ValueError(
                f"name must be 1 to 20 lowercase letters or digits, starting with a letter "
                f"(it becomes the ClusterName and MariaDB table names), got {name!r}"
            )
        for part in side_partitions:
            if not re.fullmatch(r"[a-mo-z][a-z]{0,15}", part) or part == "debug" or \
                    [p[0] for p in side_partitions].count(part[0]) > 1:
                raise ValueError(f"side partition names must be lowercase words with distinct first "
                                 f"letters other than n (their node is <letter>1), got {part!r}")
        self.root = Path(root).absolute()
        self.nodes = nodes
        self.cpus_per_node = cpus_per_node
        self.real_memory_mb = real_memory_mb
        self.accounting = accounting
        self.cluster_name = name + secrets.token_hex(3)
        self.node_names = [f"n{index}" for index in range(1, nodes + 1)]
        # One node of twice the CPUs per side partition, for jobs kept off the default partition's
        # nodes (e.g. a long wait run beside other tests); node_names are the default's only.
        self.side_nodes = {part: f"{part[0]}1" for part in side_partitions}
        self.all_nodes = self.node_names + list(self.side_nodes.values())

        self.conf_path = self.root / "etc" / "slurm.conf"
        self.dbd_conf_path = self.root / "etc" / "slurmdbd.conf"
        self._munge_dir = self.root / "munge"
        self.munge_socket = self._munge_dir / "munge.sock"
        self._state_dir = self.root / "state"
        self._spool_dir = self.root / "spool"
        self._run_dir = self.root / "run"
        self.log_dir = self.root / "log"
        self._mysql_dir = self.root / "mysql"
        self._mysql_socket = self._mysql_dir / "mysql.sock"

        longest_node = max(self.all_nodes, key=len)
        longest = len(f"{self._spool_dir / longest_node}{longest_node}") + _STEPD_SOCKET_SUFFIX
        if accounting:
            longest = max(longest, len(str(self._mysql_socket)))
        if longest > _MAX_SOCKET_PATH:
            shortest_needed = len(str(self.root)) - (longest - _MAX_SOCKET_PATH)
            raise ValueError(
                f"root {str(self.root)!r} is too long: unix socket paths under it would reach "
                f"{longest} characters, more than the {_MAX_SOCKET_PATH} Linux allows; "
                f"use a root of at most {shortest_needed} characters"
            )

        self.ctld_port = 0
        self.node_ports: dict[str, int] = {}
        self.dbd_port = 0
        self.mysql_port = 0
        self._storage_password = ""
        self._mysql_process: subprocess.Popen | None = None
        self._started = False

    def __repr__(self) -> str:
        state = "started" if self._started else "stopped"
        return (
            f"SlurmCluster({str(self.root)!r}, nodes={self.nodes}, "
            f"accounting={self.accounting}, cluster_name={self.cluster_name!r}, {state})"
        )

    # ------------------------------------------------------------------ public API

    def env(self) -> dict[str, str]:
        """Return the environment variables a Slurm client needs to reach this cluster.

        Use it as ``env={**os.environ, **cluster.env()}``; ``PATH`` gains ``/usr/sbin`` when it
        lacks it.
        """
        path = os.environ.get("PATH", os.defpath)
        parts = [part for part in path.split(os.pathsep) if part]
        if SBIN not in parts:
            parts.append(SBIN)
        return {"SLURM_CONF": str(self.conf_path), "PATH": os.pathsep.join(parts)}

    def start(self, timeout_s: float = 60) -> None:
        """Start every daemon and wait until all nodes are idle.

        With accounting, also wait until slurmctld has registered with slurmdbd, so that
        every job from then on reaches ``sacct``.

        Raises
        ------
        TestbedError
            When something does not start in time, with the tail of the relevant log; whatever
            had started is stopped again.
        """
        if self._started:
            raise TestbedError(f"{self!r} is already started")
        if os.geteuid() != 0:
            raise TestbedError("the Slurm testbed must run as root (its daemons run as root)")
        missing = slurm_packages_missing(accounting=self.accounting)
        if missing:
            raise TestbedError(
                f"missing executables: {', '.join(missing)}; install Debian's packages "
                f"({' '.join(DEBIAN_PACKAGES)}), e.g. with testbed.install_slurm_packages()"
            )
        start_retrying(self, time.monotonic() + timeout_s, "Address already in use")

    def stop(self) -> None:
        """Stop this cluster's daemons through their pid files and wait until they have exited.

        Processes of jobs still running on this cluster's nodes are killed too (found through
        the nodes' spool dirs and the job environment, never by name).  Idempotent.
        """
        for node in self.all_nodes:
            self._kill_processes_of(node, slurmd=False)
        groups = [
            [(self._slurmd_pid_path(node), "slurmd") for node in self.all_nodes],
            [(self._run_dir / "slurmctld.pid", "slurmctld")],
            [(self._run_dir / "slurmdbd.pid", "slurmdbd")],
            [(self._mysql_dir / "mariadbd.pid", "mariadbd")],
            [(self._munge_dir / "munged.pid", "munged")],
        ]
        for group in groups:
            self._terminate(group)
        if self._mysql_process is not None:
            if self._mysql_process.poll() is None:
                self._mysql_process.kill()
            self._mysql_process.wait()
            self._mysql_process = None
        self._started = False

    def kill_node(self, node: str) -> None:
        """Kill -9 a node's slurmd and every process of the jobs running on it.

        slurmctld then marks the node DOWN and its running jobs NODE_FAIL, about 30 s later
        with SlurmdTimeout=10 (27 to 32 s measured).  Slurm requeues a failed batch job unless
        it was submitted with ``--no-requeue`` (JobRequeue=1 is Slurm's default): then
        ``sacct -X`` shows NODE_FAIL for only a moment before the job is PENDING again.
        :meth:`restart_node` brings the node back.
        """
        self._check_node(node)
        self._kill_processes_of(node, slurmd=True)

    def restart_node(self, node: str, timeout_s: float = 30) -> None:
        """Start a node's slurmd again and wait until slurmctld has heard from it.

        With ReturnToService=2 a node that went DOWN for not responding comes back by itself.
        """
        self._check_node(node)
        if self._daemon_pid(self._slurmd_pid_path(node), "slurmd") is not None:
            raise TestbedError(f"slurmd of node {node} is still running")
        deadline = time.monotonic() + timeout_s
        started_s = int(time.time())  # SlurmdStartTime has a resolution of one second
        self._start_slurmd(node, deadline)

        def registered() -> bool:
            fields = self._node_fields(node)
            try:
                since = time.strptime(fields.get("SlurmdStartTime", ""), "%Y-%m-%dT%H:%M:%S")
            except ValueError:
                return False
            state = fields.get("State", "")
            return (
                time.mktime(since) >= started_s
                and "NOT_RESPONDING" not in state
                and not state.startswith(("DOWN", "UNKNOWN"))
            )

        self._wait_until(
            registered, deadline, f"node {node} registered after restart",
            self.log_dir / "slurmctld.log",
        )

    def stop_controller(self) -> None:
        """Stop slurmctld with SIGTERM and wait until it has exited.

        slurmctld saves its state (queued and running jobs) to StateSaveLocation as it exits;
        :meth:`start_controller` recovers it.  Meanwhile running array tasks go on on the
        slurmds, and a task that ends reports to slurmctld once it is back (slurmstepd retries).
        The other daemons keep running.

        While it is stopped, commands that need the controller fail (exit code 1, and 8 for
        ``scancel``) with ``... Unable to contact slurm controller (connect failure)``, e.g.
        ``slurm_load_jobs error: ...`` from ``squeue`` and ``scontrol show job``: within about
        4 s (2 s for ``sinfo``, ``sbatch``, ``scancel``), see MessageTimeout in slurm.conf.
        ``scontrol ping`` says ``Slurmctld(primary) at <host> is DOWN`` at once.  ``sacct``
        still answers: it asks slurmdbd.

        Raises
        ------
        TestbedError
            When slurmctld is not running.
        """
        self._stop_one(self._run_dir / "slurmctld.pid", "slurmctld")

    def start_controller(self, timeout_s: float = 30) -> None:
        """Start slurmctld again after :meth:`stop_controller`, keeping the saved jobs.

        Waits until slurmctld listens and every node whose slurmd runs has registered again
        (until then ``sinfo`` shows it ``unknown`` and nothing is scheduled on it).

        Raises
        ------
        TestbedError
            When slurmctld is already running, or does not come back in time.
        """
        if self._daemon_pid(self._run_dir / "slurmctld.pid", "slurmctld") is not None:
            raise TestbedError("slurmctld is still running")
        deadline = time.monotonic() + timeout_s
        # Started as at first, without -c: slurmctld recovers its jobs from StateSaveLocation.
        self._start_slurmctld(deadline)
        live = [node for node in self.all_nodes
                if self._daemon_pid(self._slurmd_pid_path(node), "slurmd") is not None]
        self._wait_until(
            lambda: all(_responding(self._node_states().get(node, "")) for node in live),
            deadline, "nodes registered after the slurmctld restart",
            self.log_dir / "slurmctld.log",
        )

    def stop_dbd(self) -> None:
        """Stop slurmdbd (accounting clusters only) with SIGTERM and wait until it has exited.

        ``sacct`` then fails at once with exit code 1, printing to stderr::

            sacct: error: slurm_persist_conn_open_without_init: failed to open persistent
            connection to host:localhost:<DbdPort>: Connection refused
            sacct: error: Sending PersistInit msg: Connection refused
            sacct: error: Problem talking to the database: Connection refused

        (the first message is one line).  ``squeue`` and everything else that asks slurmctld
        still work; slurmctld keeps the accounting records of jobs that end meanwhile and sends
        them once slurmdbd is back.

        Raises
        ------
        TestbedError
            When the cluster has no accounting, or slurmdbd is not running.
        """
        self._check_accounting()
        self._stop_one(self._run_dir / "slurmdbd.pid", "slurmdbd")

    def start_dbd(self, timeout_s: float = 30) -> None:
        """Start slurmdbd again after :meth:`stop_dbd` and wait until ``sacctmgr`` gets answers.

        Raises
        ------
        TestbedError
            When the cluster has no accounting, slurmdbd is already running, or it does not
            come back in time.
        """
        self._check_accounting()
        if self._daemon_pid(self._run_dir / "slurmdbd.pid", "slurmdbd") is not None:
            raise TestbedError("slurmdbd is still running")
        self._start_slurmdbd(time.monotonic() + timeout_s)

    def pids(self) -> dict[str, int]:
        """Return the pids of this cluster's running daemons, keyed ``slurmd-n1``, ``munged``..."""
        found = {}
        candidates = [
            (f"slurmd-{node}", self._slurmd_pid_path(node), "slurmd") for node in self.all_nodes
        ]
        candidates += [
            ("slurmctld", self._run_dir / "slurmctld.pid", "slurmctld"),
            ("slurmdbd", self._run_dir / "slurmdbd.pid", "slurmdbd"),
            ("mariadbd", self._mysql_dir / "mariadbd.pid", "mariadbd"),
            ("munged", self._munge_dir / "munged.pid", "munged"),
        ]
        for key, pid_path, comm in candidates:
            pid = self._daemon_pid(pid_path, comm)
            if pid is not None:
                found[key] = pid
        return found

    def __enter__(self) -> SlurmCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ start-up steps

    def _start_all(self, deadline: float) -> None:
        self._prepare_dirs()
        ports = _free_ports(len(self.all_nodes) + 3)
        self.ctld_port, self.dbd_port, self.mysql_port = ports[:3]
        self.node_ports = dict(zip(self.all_nodes, ports[3:]))
        self._write_slurm_conf()
        self._start_munge(deadline)
        if self.accounting:
            self._start_mariadb(deadline)
            self._write_slurmdbd_conf()
            self._start_slurmdbd(deadline)
        self._start_slurmctld(deadline)
        for node in self.all_nodes:
            self._start_slurmd(node, deadline)
        self._wait_until(
            lambda: all(self._node_states().get(node) == "idle" for node in self.all_nodes),
            deadline, "all nodes idle", self.log_dir / "slurmctld.log",
        )
        if self.accounting:
            self._wait_until(
                self._ctld_registered_with_dbd, deadline,
                "slurmctld registered with slurmdbd", self.log_dir / "slurmdbd.log",
            )

    def _prepare_dirs(self) -> None:
        for directory in (self.conf_path.parent, self._state_dir, self._run_dir, self.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
        for node in self.all_nodes:
            (self._spool_dir / node).mkdir(parents=True, exist_ok=True)

    def _write_slurm_conf(self) -> None:
        host = socket.gethostname().split(".")[0]
        # Without a private plugstack.conf, slurmd would load the system's spank plugins.
        plugstack = self.conf_path.parent / "plugstack.conf"
        plugstack.write_text("")
        lines = [
            f"ClusterName={self.cluster_name}",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={self.ctld_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={self._state_dir}",
            f"SlurmdSpoolDir={self._spool_dir}/%n",
            f"SlurmctldPidFile={self._run_dir}/slurmctld.pid",
            f"SlurmdPidFile={self._run_dir}/slurmd-%n.pid",
            f"SlurmctldLogFile={self.log_dir}/slurmctld.log",
            f"SlurmdLogFile={self.log_dir}/slurmd-%n.log",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"PlugStackConfig={plugstack}",
            "MailProg=/bin/true",
            "MpiDefault=none",
            # No cgroups in this sandbox.
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            # Without it a job takes a whole node's memory and the next one waits on Resources.
            "DefMemPerCPU=500",
            # Trust CPUs= and RealMemory= below rather than this machine's hardware.
            "SlurmdParameters=config_overrides",
            "JobAcctGatherType=jobacct_gather/linux",
            "JobAcctGatherFrequency=1",
            "JobAcctGatherParams=OverMemoryKill",
            "JobCompType=jobcomp/none",
            "ReturnToService=2",
            "SlurmdTimeout=10",
            # Clients retry connecting to a stopped slurmctld about once a second for
            # MessageTimeout - 1 seconds, and squeue and scontrol connect twice: with the
            # default 10 s, squeue fails only after 18 s (sinfo, sbatch, scancel after 9 s).
            # With 3 s a query of a stopped controller fails within about 4 s.
            "MessageTimeout=3",
            "InactiveLimit=0",
            "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0",
            "MinJobAge=600",
        ]
        if self.accounting:
            lines += [
                "AccountingStorageType=accounting_storage/slurmdbd",
                "AccountingStorageHost=localhost",
                f"AccountingStoragePort={self.dbd_port}",
                # sacct and sacctmgr find the munge socket through this, not through AuthInfo.
                f"AccountingStoragePass={self.munge_socket}",
            ]
        else:
            lines.append("AccountingStorageType=accounting_storage/none")
        for node in self.all_nodes:
            cpus = self.cpus_per_node * (2 if node not in self.node_names else 1)
            lines.append(
                f"NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 "
                f"Port={self.node_ports[node]} CPUs={cpus} "
                f"RealMemory={self.real_memory_mb} State=UNKNOWN"
            )
        lines.append(
            f"PartitionName=debug Nodes={','.join(self.node_names)} Default=YES "
            "MaxTime=INFINITE State=UP"
        )
        for part, node in self.side_nodes.items():
            lines.append(f"PartitionName={part} Nodes={node} Default=NO MaxTime=INFINITE State=UP")
        self.conf_path.write_text("\n".join(lines) + "\n")

    def _start_munge(self, deadline: float) -> None:
        self._munge_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self._munge_dir, 0o700)
        key = self._munge_dir / "munge.key"
        if not key.exists():
            descriptor = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(descriptor, "wb") as file:
                file.write(os.urandom(1024))
        os.chmod(key, 0o400)
        pid_path = self._munge_dir / "munged.pid"
        log = self._munge_dir / "munged.log"
        log_offset = self._run_daemon(
            [
                "munged", "--force", f"--key-file={key}", f"--socket={self.munge_socket}",
                f"--pid-file={pid_path}", f"--log-file={log}",
                f"--seed-file={self._munge_dir / 'munged.seed'}",
            ],
            "munged", log,
        )
        self._wait_for_pid_file(pid_path, "munged", deadline, log, log_offset)
        self._wait_until(self.munge_socket.exists, deadline, "munge socket", log, log_offset)

    def _start_mariadb(self, deadline: float) -> None:
        datadir = self._mysql_dir
        log = datadir / "mariadbd.err"
        fresh = not (datadir / "mysql").is_dir()
        # mariadbd runs as root, not as user mysql: mysql would need to search every directory
        # above its data dir, and pytest resets its base temporary directory to mode 0700
        # whenever another pytest session starts, which cut a running mariadbd off its files.
        datadir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if fresh:
            self._run_checked(
                [
                    "mariadb-install-db", "--no-defaults", "--user=root", f"--datadir={datadir}",
                    "--auth-root-authentication-method=normal", "--skip-test-db",
                    "--skip-name-resolve",
                ],
                "mariadb-install-db", timeout_s=max(deadline - time.monotonic(), 1),
            )
        pid_path = datadir / "mariadbd.pid"
        # mariadbd stays in the foreground; it is the one daemon this object is the parent of.
        with open(self.log_dir / "mariadbd.out", "ab") as out:
            self._mysql_process = subprocess.Popen(
                [
                    _find_executable("mariadbd") or "mariadbd", "--no-defaults", "--user=root",
                    f"--datadir={datadir}", f"--socket={self._mysql_socket}",
                    "--bind-address=127.0.0.1", f"--port={self.mysql_port}",
                    f"--pid-file={pid_path}", f"--log-error={log}", "--skip-name-resolve",
                    "--innodb-buffer-pool-size=64M",
                ],
                env=self._full_env(), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        self._storage_password = password = secrets.token_hex(12)
        # StorageHost=127.0.0.1 connects over TCP, which 'slurm'@'127.0.0.1' matches.
        sql = "".join(
            f"CREATE OR REPLACE USER 'slurm'@'{host}' IDENTIFIED BY '{password}';"
            f"GRANT ALL ON slurm_acct_db.* TO 'slurm'@'{host}';"
            for host in ("127.0.0.1", "localhost")
        )
        command = [
            _find_executable("mariadb") or "mariadb", "--no-defaults",
            f"--socket={self._mysql_socket}", "--user=root", "-e", sql,
        ]

        last_error = ["(mariadb client not run yet)"]

        def accepts_sql() -> bool:
            if self._mysql_process is not None and self._mysql_process.poll() is not None:
                raise TestbedError(
                    f"mariadbd exited with code {self._mysql_process.returncode}; "
                    f"tail of {log}:\n{_tail(log)}"
                )
            if not self._mysql_socket.exists():
                return False
            result = self._run(command, timeout_s=30)
            last_error[0] = result.stderr.strip()
            return result.returncode == 0

        try:
            self._wait_until(accepts_sql, deadline, "mariadbd accepting SQL", log)
        except TestbedError as error:
            message = f"{error}\nlast error of the mariadb client: {last_error[0]}"
            raise TestbedError(message) from None

    def _write_slurmdbd_conf(self) -> None:
        lines = [
            "AuthType=auth/munge",
            f"AuthInfo=socket={self.munge_socket}",
            "DbdHost=localhost",
            f"DbdPort={self.dbd_port}",
            "SlurmUser=root",
            f"PidFile={self._run_dir}/slurmdbd.pid",
            f"LogFile={self.log_dir}/slurmdbd.log",
            "DebugLevel=info",
            "StorageType=accounting_storage/mysql",
            # Not "localhost": the client library would use its default unix socket.
            "StorageHost=127.0.0.1",
            f"StoragePort={self.mysql_port}",
            "StorageUser=slurm",
            f"StoragePass={self._storage_password}",
            "StorageLoc=slurm_acct_db",
        ]
        # slurmdbd refuses a slurmdbd.conf that others can read (it holds the password).
        self.dbd_conf_path.unlink(missing_ok=True)
        descriptor = os.open(self.dbd_conf_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write("\n".join(lines) + "\n")

    def _start_slurmdbd(self, deadline: float) -> None:
        log = self.log_dir / "slurmdbd.log"
        pid_path = self._run_dir / "slurmdbd.pid"
        # slurmdbd has no -f: it reads slurmdbd.conf next to $SLURM_CONF.
        log_offset = self._run_daemon(["slurmdbd"], "slurmdbd", log)
        self._wait_for_pid_file(pid_path, "slurmdbd", deadline, log, log_offset)
        # Until slurmdbd listens, sacctmgr could talk to whoever else took the port.
        self._wait_until(
            lambda: _listens(self._daemon_pid(pid_path, "slurmdbd"), self.dbd_port), deadline,
            f"slurmdbd listening on port {self.dbd_port}", log, log_offset,
        )
        command = ["sacctmgr", "-i", "add", "cluster", self.cluster_name]

        def cluster_added() -> bool:
            if self._daemon_pid(pid_path, "slurmdbd") is None:
                raise TestbedError(f"slurmdbd exited; tail of {log}:\n{_tail(log)}")
            result = self._run(command, timeout_s=30)
            return result.returncode == 0 or "already exists" in result.stdout + result.stderr

        self._wait_until(cluster_added, deadline, f"`{' '.join(command)}`", log, log_offset)

    def _start_slurmctld(self, deadline: float) -> None:
        log = self.log_dir / "slurmctld.log"
        log_offset = self._run_daemon(["slurmctld", "-f", str(self.conf_path)], "slurmctld", log)
        pid_path = self._run_dir / "slurmctld.pid"
        self._wait_for_pid_file(pid_path, "slurmctld", deadline, log, log_offset)

        # slurmctld writes its pid file before it binds its port, which someone else may hold.
        self._wait_until(
            lambda: _listens(self._daemon_pid(pid_path, "slurmctld"), self.ctld_port), deadline,
            f"slurmctld listening on port {self.ctld_port}", log, log_offset,
        )

    def _start_slurmd(self, node: str, deadline: float) -> None:
        log = self.log_dir / f"slurmd-{node}.log"
        pid_path = self._slurmd_pid_path(node)
        pid_path.unlink(missing_ok=True)  # a stale one is left behind by kill_node
        command = ["slurmd", "-f", str(self.conf_path), "-N", node]
        log_offset = self._run_daemon(command, f"slurmd-{node}", log)
        # slurmd writes its pid file once it has registered with slurmctld.
        self._wait_for_pid_file(pid_path, "slurmd", deadline, log, log_offset)

    def _ctld_registered_with_dbd(self) -> bool:
        result = self._run(
            ["sacctmgr", "-n", "-P", "show", "cluster", self.cluster_name,
             "format=Cluster,ControlPort"],
            timeout_s=30,
        )
        return result.returncode == 0 and f"{self.cluster_name}|{self.ctld_port}" in result.stdout

    # ------------------------------------------------------------------ helpers

    def _full_env(self) -> dict[str, str]:
        return {**os.environ, **self.env()}

    def _run(self, command: list[str], timeout_s: float) -> subprocess.CompletedProcess:
        """Run a client command; a timeout counts as a failure (exit code -1)."""
        try:
            return subprocess.run(
                command, env=self._full_env(), stdin=subprocess.DEVNULL, capture_output=True,
                text=True, errors="replace", timeout=timeout_s, check=False,
            )
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(command, -1, "", f"timed out after {timeout_s} s")

    def _run_checked(self, command: list[str], what: str, timeout_s: float) -> None:
        result = self._run(command, timeout_s)
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
            raise TestbedError(f"{what} failed with exit code {result.returncode}:\n{output}")

    def _run_daemon(self, command: list[str], label: str, log: Path) -> int:
        """Run a self-daemonizing command; return the size its log had before, for _wait_until."""
        # The daemon forks into the background and its first process exits.  Its output goes
        # to a file, not a pipe, which the background process would keep open.
        log_offset = log.stat().st_size if log.exists() else 0
        out_path = self.log_dir / f"{label}.out"
        with open(out_path, "ab") as out:
            try:
                result = subprocess.run(
                    command, env=self._full_env(), stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, timeout=60, start_new_session=True, check=False,
                )
            except subprocess.TimeoutExpired as error:
                raise TestbedError(f"`{' '.join(command)}` did not return within 60 s") from error
        if result.returncode != 0:
            raise TestbedError(
                f"`{' '.join(command)}` exited with code {result.returncode}; "
                f"its output:\n{_tail(out_path)}\ntail of {log}:\n{_tail(log)}"
            )
        return log_offset

    def _wait_until(
        self, predicate, deadline: float, what: str, log: Path, log_offset: int | None = None,
    ) -> None:
        """Poll predicate until true; give up at the deadline or, when log_offset is given, as
        soon as the daemon logs a fatal error after that offset (it is about to exit)."""
        delay = 0.02
        while True:
            if log_offset is not None and _logged_fatal(log, log_offset):
                raise TestbedError(f"{what} failed; tail of {log}:\n{_tail(log)}")
            if predicate():
                return
            if time.monotonic() >= deadline:
                raise TestbedError(f"timed out waiting for {what}; tail of {log}:\n{_tail(log)}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def _wait_for_pid_file(
        self, pid_path: Path, comm: str, deadline: float, log: Path, log_offset: int,
    ) -> None:
        self._wait_until(
            lambda: self._daemon_pid(pid_path, comm) is not None, deadline,
            f"{comm} to write {pid_path}", log, log_offset,
        )

    def _daemon_pid(self, pid_path: Path, comm: str) -> int | None:
        """The pid in pid_path if that process runs, is a `comm` and belongs to this cluster."""
        try:
            pid = int(pid_path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if not _is_running(pid) or _proc_read(pid, "comm").strip() != comm.encode()[:15]:
            return None
        # Guard against a reused pid: our daemons name the root in their command line or
        # inherit SLURM_CONF from us.
        root = str(self.root).encode()
        marker = f"SLURM_CONF={self.conf_path}".encode() + b"\0"
        if root in _proc_read(pid, "cmdline") or marker in _proc_read(pid, "environ"):
            return pid
        return None

    def _terminate(self, daemons: list[tuple[Path, str]]) -> list[int]:
        """SIGTERM the running daemons among (pid file, comm) pairs, SIGKILL any that outlive
        the stop timeout, remove their pid files; return the pids that were running."""
        pids = {}
        for pid_path, comm in daemons:
            pid = self._daemon_pid(pid_path, comm)
            if pid is not None:
                pids[pid] = pid_path
                _signal(pid, signal.SIGTERM)
        still = _wait_gone(set(pids), _DAEMON_STOP_TIMEOUT_S)
        for pid in still:
            _signal(pid, signal.SIGKILL)
        _wait_gone(still, 5.0)
        for pid_path in pids.values():
            pid_path.unlink(missing_ok=True)
        return list(pids)

    def _stop_one(self, pid_path: Path, comm: str) -> None:
        if not self._terminate([(pid_path, comm)]):
            raise TestbedError(f"{comm} of {self.cluster_name} is not running")

    def _check_accounting(self) -> None:
        if not self.accounting:
            raise TestbedError(f"{self.cluster_name} was started without accounting: no slurmdbd")

    def _slurmd_pid_path(self, node: str) -> Path:
        return self._run_dir / f"slurmd-{node}.pid"

    def _check_node(self, node: str) -> None:
        if node not in self.all_nodes:
            raise ValueError(f"unknown node {node!r}; this cluster has {self.all_nodes}")

    def _node_states(self) -> dict[str, str]:
        result = self._run(["sinfo", "-h", "-N", "-o", "%N %T"], timeout_s=30)
        if result.returncode != 0:
            return {}
        states = {}
        for line in result.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2:
                states[parts[0]] = parts[1]
        return states

    def _node_fields(self, node: str) -> dict[str, str]:
        result = self._run(["scontrol", "-o", "show", "node", node], timeout_s=30)
        if result.returncode != 0:
            return {}
        return dict(item.split("=", 1) for item in result.stdout.split() if "=" in item)

    def _job_processes(self, node: str) -> set[int]:
        """slurmstepd processes of node, their descendants, and any process of its jobs."""
        stepds = self._stepd_pids(node)
        found = stepds | _descendants(stepds)
        # Tasks that left the slurmstepd tree still carry the job environment.
        wanted = (
            f"SLURMD_NODENAME={node}".encode() + b"\0",
            f"SLURM_CLUSTER_NAME={self.cluster_name}".encode() + b"\0",
        )
        for pid in _all_pids():
            if pid == os.getpid() or pid in found:
                continue
            environ = b"\0" + _proc_read(pid, "environ")
            if all(b"\0" + item in environ for item in wanted):
                found.add(pid)
        found.discard(os.getpid())
        return {pid for pid in found if _is_running(pid)}

    def _stepd_pids(self, node: str) -> set[int]:
        # Each slurmstepd listens on a unix socket in its node's spool dir; match the socket
        # inodes from /proc/net/unix to the processes holding them.
        prefix = f"{self._spool_dir / node}/"
        inodes = set()
        try:
            with open("/proc/net/unix") as file:
                next(file)
                for line in file:
                    fields = line.split()
                    if len(fields) >= 8 and fields[7].startswith(prefix):
                        inodes.add(f"socket:[{fields[6]}]")
        except OSError:
            return set()
        if not inodes:
            return set()
        pids = set()
        for pid in _all_pids():
            if _proc_read(pid, "comm").strip() == b"slurmstepd" and _fd_targets(pid) & inodes:
                pids.add(pid)
        return pids

    def _kill_processes_of(self, node: str, *, slurmd: bool) -> None:
        """SIGKILL the processes of jobs on node, and its slurmd if asked, until none is left."""
        for _ in range(5):  # a task may fork while we look: look again
            victims = self._job_processes(node)
            slurmd_pid = self._daemon_pid(self._slurmd_pid_path(node), "slurmd") if slurmd else None
            if slurmd_pid is not None:
                victims.add(slurmd_pid)
            if not victims:
                return
            # Freeze first, so no slurmstepd sees its task die and reports an ordinary job end.
            for pid in victims:
                _signal(pid, signal.SIGSTOP)
            for pid in victims:
                _signal(pid, signal.SIGKILL)
            still = _wait_gone(victims, 10.0)
            if still:
                raise TestbedError(f"processes {sorted(still)} of node {node} survived SIGKILL")
