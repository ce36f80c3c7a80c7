"""A private, throw-away Son of Grid Engine cell started from Python.

The Grid Engine counterpart of :mod:`testbed` (which starts private Slurm clusters), in the same
shape: standard library only, importable on its own::

    sys.path.insert(0, "tests")
    import sgebed

    with sgebed.SgeCell(tmp_dir) as cell:
        env = {**os.environ, **cell.env()}
        subprocess.run(["qsub", "-b", "y", "hostname"], env=env, check=True)

One qmaster and one execd (this machine is the cell's only execution host) run from the command
line with a private ``SGE_ROOT``: symlinks to the packaged binaries plus the cell's own
``bootstrap``, ``act_qmaster`` and ``host_aliases``, a Berkeley DB spool, spool directories,
logs and pid files, all under one root directory, on TCP ports picked free at start.  Several
cells can run side by side (the clients find theirs through :meth:`SgeCell.env`).  Daemons are
stopped through their pid files, never by name: Debian's init scripts kill by executable name
and would hit every cell on the machine, so they are not used.

Needs root (the daemons run as root, ``admin_user none``) and Debian's packages
``gridengine-master gridengine-exec gridengine-client`` (Son of Grid Engine 8.1.9); see
:func:`install_sge_packages`.  What the configuration does and why follows the facts checked on
this machine in ``../shared/sge-testbed.md``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from testbed import (
    TestbedError,
    _all_pids,
    _free_ports,
    _is_running,
    _listens,
    _proc_read,
    _signal,
    _tail,
    _wait_gone,
    start_retrying,
)

__all__ = [
    "SgeCell",
    "TestbedError",
    "install_sge_packages",
    "sge_packages_missing",
]

DEBIAN_PACKAGES = ("gridengine-master", "gridengine-exec", "gridengine-client")
INSTALL_HINT = (
    "as root, preseed debconf (gridengine-common shared/gridengineconfig boolean true, "
    "shared/gridenginecell string default, shared/gridenginemaster string <this host>; as "
    "tests/run.sh does), then run apt-get install -y --no-install-recommends " + " ".join(DEBIAN_PACKAGES)
)

# What the packages install (Debian 12, Son of Grid Engine 8.1.9).
QMASTER = "/usr/sbin/sge_qmaster"
EXECD = "/usr/sbin/sge_execd"
SPOOLINIT = "/usr/lib/gridengine/spoolinit"
SPOOLDEFAULTS = "/usr/lib/gridengine/spooldefaults"
PACKAGED_ROOT = Path("/var/lib/gridengine")  # bin, lib, utilbin: per-architecture symlinks
PACKAGED_UTIL = Path("/usr/share/gridengine/util")
DEFAULT_CONFIGURATION = Path("/usr/share/gridengine/default-configuration")
CLIENTS = ("qsub", "qstat", "qacct", "qdel", "qconf", "qmod", "qhost")
CELL = "default"

# The qmaster takes about 7 s to stop on SIGTERM, the execd about 1 s.
_DAEMON_STOP_TIMEOUT_S = 20.0


def sge_packages_missing() -> list[str]:
    """Return the programs and files the cell needs that are not installed (empty when all are)."""
    missing = [name for name in CLIENTS if shutil.which(name) is None]
    for path in (QMASTER, EXECD, SPOOLINIT, SPOOLDEFAULTS):
        if not os.access(path, os.X_OK):
            missing.append(path)
    for path in (PACKAGED_ROOT / "bin", PACKAGED_UTIL / "resources" / "centry", DEFAULT_CONFIGURATION):
        if not path.exists():
            missing.append(str(path))
    return missing


def install_sge_packages() -> None:
    """Install Debian's Son of Grid Engine packages with apt-get, debconf preseeded.

    Without the preseeding the packages ask which cell and master to configure.  The packages
    start no daemon (and the cell here uses none of their configuration).

    Raises
    ------
    TestbedError
        When not root, when apt-get or debconf-set-selections is missing, or when a step fails
        (with the tail of its output).
    """
    if os.geteuid() != 0:
        raise TestbedError(f"installing Grid Engine needs root; {INSTALL_HINT}")
    apt_get, debconf = shutil.which("apt-get"), shutil.which("debconf-set-selections")
    if apt_get is None or debconf is None:
        raise TestbedError(
            "apt-get or debconf-set-selections was not found, so Grid Engine cannot be installed "
            f"automatically; install the equivalents of Debian's {' '.join(DEBIAN_PACKAGES)}"
        )
    host = socket.gethostname()
    selections = "".join(
        f"gridengine-common {key} {kind} {value}\n"
        for key, kind, value in (
            ("shared/gridengineconfig", "boolean", "true"),
            ("shared/gridenginecell", "string", CELL),
            ("shared/gridenginemaster", "string", host),
        )
    )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = [
        ([debconf], selections),
        ([apt_get, "update"], None),
        ([apt_get, "install", "-y", "--no-install-recommends", *DEBIAN_PACKAGES], None),
    ]
    for command, stdin_text in steps:
        result = subprocess.run(
            command, env=env, input=stdin_text if stdin_text is not None else "",
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
            check=False,
        )
        if result.returncode != 0:
            tail = "\n".join(result.stdout.splitlines()[-30:])
            raise TestbedError(f"`{' '.join(command)}` failed with exit code {result.returncode}:\n{tail}")


def _environ_has(pid: int, item: bytes) -> bool:
    return b"\0" + item + b"\0" in b"\0" + _proc_read(pid, "environ")


class SgeCell:
    """A private Grid Engine cell whose files all live under one directory.

    Parameters
    ----------
    root : str or os.PathLike
        Directory for ``SGE_ROOT``, the spools, the queue's ``tmpdir`` and the daemons' output.
        Created if needed.
    slots : int
        Slots of queue ``all.q`` on this machine's one execution host (may exceed its cores).
    h_vmem : str
        The host's ``complex_values h_vmem=``: a job asking for more per slot waits forever
        (``qsub -w e`` refuses it).

    The cell has a parallel environment ``smp`` (``allocation_rule $pe_slots``: all slots of a
    job on one host), queue ``all.q`` (``shell /bin/bash``, ``pe_list smp``, no load
    thresholds), ``min_uid 0`` (root's jobs run), accounting flushed every second (``qacct``
    sees a task a second after it ends) and a scheduler that runs every second.
    """

    def __init__(self, root: str | os.PathLike, *, slots: int = 4, h_vmem: str = "4G") -> None:
        if not isinstance(slots, int) or slots < 1:
            raise ValueError(f"slots must be a positive integer, got {slots!r}")
        if not re.fullmatch(r"\d+(\.\d+)?[KMGT]?", h_vmem):
            raise ValueError(f"h_vmem must be a Grid Engine memory value such as 4G or 500M, got {h_vmem!r}")
        self.root = Path(root).absolute()
        self.slots = slots
        self.h_vmem = h_vmem
        self.host = socket.gethostname()
        self.sge_root = self.root / "sge"
        self.common_dir = self.sge_root / CELL / "common"
        self.accounting_file = self.common_dir / "accounting"
        self.qmaster_spool = self.root / "spool" / "qmaster"
        self.execd_spool = self.root / "spool" / "execd"
        self._db_dir = self.root / "spool" / "db"
        self.tmp_dir = self.root / "tmp"  # the queue's tmpdir: each job's $TMP is under it
        self._conf_dir = self.root / "conf"
        self.log_dir = self.root / "log"
        self.qmaster_port = 0
        self.execd_port = 0
        self._started = False

    def __repr__(self) -> str:
        state = "started" if self._started else "stopped"
        return f"SgeCell({str(self.root)!r}, qmaster_port={self.qmaster_port}, {state})"

    # ------------------------------------------------------------------ public API

    def env(self) -> dict[str, str]:
        """Return the environment variables a Grid Engine client needs to reach this cell.

        Use it as ``env={**os.environ, **cell.env()}``.
        """
        return {
            "SGE_ROOT": str(self.sge_root),
            "SGE_CELL": CELL,
            "SGE_QMASTER_PORT": str(self.qmaster_port),
            "SGE_EXECD_PORT": str(self.execd_port),
        }

    def start(self, timeout_s: float = 60) -> None:
        """Write the cell, start its qmaster and execd, and wait until a job can run.

        Raises
        ------
        TestbedError
            When not root, when Grid Engine is not installed, or when something does not start
            in time (with the tail of the daemon's messages); whatever had started is stopped.
        """
        if self._started:
            raise TestbedError(f"{self!r} is already started")
        if os.geteuid() != 0:
            raise TestbedError("the Grid Engine testbed must run as root (its daemons run as root)")
        missing = sge_packages_missing()
        if missing:
            raise TestbedError(f"Grid Engine is not installed (missing: {', '.join(missing)}); {INSTALL_HINT}")
        start_retrying(self, time.monotonic() + timeout_s, "listening on port")

    def stop(self) -> None:
        """Stop the cell: kill its jobs' processes, stop the execd, kill the qmaster.

        Processes are found by pid files and by ``SGE_ROOT=<this cell's root>`` in their
        environment (every job and ``sge_shepherd`` of the cell carries it), never by name.  The
        qmaster is killed rather than asked to stop: it takes about 7 s to stop on SIGTERM, and
        the cell is thrown away (a killed qmaster restarted on the same spool recovers its jobs
        all the same).  Idempotent; no process of the cell is left.
        """
        self._terminate([(self._execd_pid_path(), "sge_execd")], signal.SIGTERM)
        self._kill_jobs()
        self._terminate([(self._qmaster_pid_path(), "sge_qmaster")], signal.SIGKILL)
        self._kill_jobs()  # any that forked while the execd stopped
        self._started = False

    def stop_qmaster(self, *, kill: bool = False) -> None:
        """Stop the qmaster (SIGTERM; SIGKILL with ``kill=True``) and wait until it has exited.

        A clean stop takes about 7 s.  Meanwhile the execd and running jobs go on; clients
        (``qstat``, ``qsub``, ``qdel``, ``qconf``) fail at once, exit code 1, with
        ``error: commlib error: got select error (Connection refused)`` and ``unable to send
        message to qmaster using port <port> on host "<host>": got send error``.  ``qacct`` still
        answers (it reads the accounting file), and says ``error: job id N not found`` for a job
        that has not ended.

        Raises
        ------
        TestbedError
            When the qmaster is not running.
        """
        signum = signal.SIGKILL if kill else signal.SIGTERM
        if not self._terminate([(self._qmaster_pid_path(), "sge_qmaster")], signum):
            raise TestbedError("the qmaster of this cell is not running")

    def start_qmaster(self, timeout_s: float = 60, *, wait_for_execd: bool = True) -> None:
        """Start the qmaster again after :meth:`stop_qmaster`, keeping the spooled jobs.

        Waits until it answers (about 0.2 s) and, with ``wait_for_execd``, until the execd has
        reported to it again.  That takes about 3 s when the execd had not talked to the old
        qmaster since its own start, and about 31 s when it had (it ran a job): after a lost
        connection the execd retries registering only that often.  Until then ``qstat`` shows
        the queue instance in state ``u`` and running jobs as running (they go on; the ends of
        those that finish are reported once the execd is back), and no new job starts.

        Raises
        ------
        TestbedError
            When the qmaster is already running, or does not come back in time.
        """
        if self._daemon_pid(self._qmaster_pid_path(), "sge_qmaster") is not None:
            raise TestbedError("the qmaster of this cell is still running")
        deadline = time.monotonic() + timeout_s
        self._start_qmaster(deadline)
        if wait_for_execd:
            self._wait_until(self._queue_ready, deadline, "the execd reporting to the restarted qmaster",
                             self.qmaster_spool / "messages")

    def pids(self) -> dict[str, int]:
        """The pids of this cell's running daemons, keyed ``sge_qmaster`` and ``sge_execd``."""
        found = {}
        for pid_path, comm in ((self._qmaster_pid_path(), "sge_qmaster"), (self._execd_pid_path(), "sge_execd")):
            pid = self._daemon_pid(pid_path, comm)
            if pid is not None:
                found[comm] = pid
        return found

    def processes(self) -> set[int]:
        """Every running process of this cell: daemons, shepherds and jobs."""
        marker = f"SGE_ROOT={self.sge_root}".encode()
        return {pid for pid in _all_pids()
                if pid != os.getpid() and _is_running(pid) and _environ_has(pid, marker)}

    def run(self, args: list[str], timeout_s: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        """Run a client command against this cell; with ``check`` a failure raises TestbedError."""
        result = self._run(args, timeout_s)
        if check and result.returncode != 0:
            raise TestbedError(
                f"`{' '.join(args)}` failed with exit code {result.returncode}:\n"
                f"{result.stdout}{result.stderr}"
            )
        return result

    def __enter__(self) -> SgeCell:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ start-up steps

    def _start_all(self, deadline: float) -> None:
        self.qmaster_port, self.execd_port = _free_ports(2)
        self._write_root()
        self._make_spool()
        self._start_qmaster(deadline)
        self._configure()
        self._start_execd(deadline)

    def _write_root(self) -> None:
        for directory in (self.common_dir, self.qmaster_spool, self.execd_spool, self._db_dir,
                          self.tmp_dir, self._conf_dir, self.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
        # Jobs of other users (none here, but the queue is shared) write below $TMP.
        os.chmod(self.tmp_dir, 0o1777)
        for name, target in (("bin", PACKAGED_ROOT / "bin"), ("lib", PACKAGED_ROOT / "lib"),
                             ("utilbin", PACKAGED_ROOT / "utilbin"), ("util", PACKAGED_UTIL)):
            link = self.sge_root / name
            if not link.is_symlink():
                link.symlink_to(target)
        (self.common_dir / "bootstrap").write_text(_lines(
            ("admin_user", "none"),  # the daemons stay root
            ("default_domain", "none"),
            ("ignore_fqdn", "true"),
            ("spooling_method", "berkeleydb"),
            ("spooling_lib", "libspoolb"),
            ("spooling_params", self._db_dir),
            ("binary_path", "/usr/sbin"),
            ("qmaster_spool_dir", self.qmaster_spool),
            ("security_mode", "none"),
            ("listener_threads", 2),
            ("worker_threads", 2),
            ("scheduler_threads", 1),
        ))
        (self.common_dir / "act_qmaster").write_text(self.host + "\n")
        # 127.0.0.1 resolves to "localhost" first here, and the qmaster refuses a client whose
        # address resolves to another name than the one it calls itself.
        (self.common_dir / "host_aliases").write_text(f"{self.host} localhost\n")

    def _make_spool(self) -> None:
        if (self._db_dir / "sge").exists():
            return  # spooled before (a restart on the same root keeps its jobs)
        global_conf = self._conf_dir / "global"
        values = {
            "execd_spool_dir": str(self.execd_spool),
            "mailer": "/bin/true",
            "min_uid": "0",  # the default 1000 refuses root's jobs
            "min_gid": "0",
            # The execd reports to a restarted qmaster with its next load report (default 40 s);
            # until then the queue instance is in state u and gets no jobs.
            "load_report_time": "00:00:02",
            # The default flush_time 15 s delays qacct's answer by as much.
            "reporting_params": "accounting=true reporting=false flush_time=00:00:01 "
                                "joblog=false sharelog=00:00:00",
            # Jobs' bash is not a login shell: root's profile here runs `pyenv rehash`, which
            # waits up to 60 s on a lock other sessions on this machine hold.
            "login_shells": "sh",
        }
        lines = []
        for line in DEFAULT_CONFIGURATION.read_text().splitlines():
            key = line.split(None, 1)[0] if line.strip() and not line.startswith("#") else ""
            lines.append(f"{key} {values.pop(key)}" if key in values else line)
        lines += [f"{key} {value}" for key, value in values.items()]
        global_conf.write_text("\n".join(lines) + "\n")

        objects = self._conf_dir / "objects"
        for kind, name, text in (
            ("pes", "smp", _lines(
                ("pe_name", "smp"), ("slots", 9999), ("user_lists", "NONE"), ("xuser_lists", "NONE"),
                ("start_proc_args", "NONE"), ("stop_proc_args", "NONE"),
                ("allocation_rule", "$pe_slots"), ("control_slaves", "FALSE"),
                ("job_is_first_task", "TRUE"), ("urgency_slots", "min"),
                ("accounting_summary", "FALSE"), ("qsort_args", "NONE"))),
            ("exechosts", self.host, _lines(
                ("hostname", self.host), ("load_scaling", "NONE"),
                ("complex_values", f"h_vmem={self.h_vmem}"), ("user_lists", "NONE"),
                ("xuser_lists", "NONE"), ("projects", "NONE"), ("xprojects", "NONE"),
                ("usage_scaling", "NONE"), ("report_variables", "NONE"))),
            ("submithosts", self.host, _lines(("hostname", self.host))),
            ("adminhosts", self.host, _lines(("hostname", self.host))),
        ):
            (objects / kind).mkdir(parents=True, exist_ok=True)
            (objects / kind / name).write_text(text)

        resources = PACKAGED_UTIL / "resources"
        steps = [
            [SPOOLINIT, "berkeleydb", "libspoolb", str(self._db_dir), "init"],
            [SPOOLDEFAULTS, "configuration", str(global_conf)],
            [SPOOLDEFAULTS, "complexes", str(resources / "centry")],
            [SPOOLDEFAULTS, "usersets", str(resources / "usersets")],
            [SPOOLDEFAULTS, "managers", "root"],
        ] + [[SPOOLDEFAULTS, kind, str(objects / kind)]
             for kind in ("adminhosts", "submithosts", "exechosts", "pes")]
        for command in steps:
            self.run(command)

    def _queue_text(self) -> str:
        limits = [(f"{kind}_{what}", "INFINITY") for what in
                  ("rt", "cpu", "fsize", "data", "stack", "core", "rss", "vmem") for kind in "sh"]
        return _lines(
            ("qname", "all.q"), ("hostlist", self.host), ("seq_no", 0),
            # The default np_load_avg=1.75 puts the queue in alarm state on a busy 2-core machine.
            ("load_thresholds", "NONE"), ("suspend_thresholds", "NONE"), ("nsuspend", 1),
            ("suspend_interval", "00:05:00"), ("priority", 0), ("min_cpu_interval", "00:05:00"),
            ("processors", "UNDEFINED"), ("qtype", "BATCH INTERACTIVE"), ("ckpt_list", "NONE"),
            ("pe_list", "smp"), ("rerun", "FALSE"), ("slots", self.slots),
            ("tmpdir", self.tmp_dir), ("shell", "/bin/bash"), ("prolog", "NONE"),
            ("epilog", "NONE"), ("shell_start_mode", "posix_compliant"),
            ("starter_method", "NONE"), ("suspend_method", "NONE"), ("resume_method", "NONE"),
            ("terminate_method", "NONE"), ("notify", "00:00:60"), ("owner_list", "NONE"),
            ("user_lists", "NONE"), ("xuser_lists", "NONE"), ("subordinate_list", "NONE"),
            ("complex_values", "NONE"), ("projects", "NONE"), ("xprojects", "NONE"),
            ("calendar", "NONE"), ("initial_state", "default"), *limits,
        )

    def _start_qmaster(self, deadline: float) -> None:
        messages = self.qmaster_spool / "messages"
        self._run_daemon([QMASTER], "sge_qmaster")
        pid_path = self._qmaster_pid_path()
        self._wait_until(lambda: self._daemon_pid(pid_path, "sge_qmaster") is not None, deadline,
                         f"sge_qmaster to write {pid_path}", messages)
        what = f"sge_qmaster listening on port {self.qmaster_port}"

        def listening() -> bool:
            pid = self._daemon_pid(pid_path, "sge_qmaster")
            if pid is None:  # it exited: most likely someone else took the port
                raise TestbedError(f"{what}: it exited; tail of {messages}:\n{_tail(messages)}")
            return _listens(pid, self.qmaster_port)

        self._wait_until(listening, deadline, what, messages)
        self._wait_until(lambda: self._run(["qconf", "-sh"], 10).returncode == 0, deadline,
                         "the qmaster answering `qconf -sh`", messages)

    def _configure(self) -> None:
        # The scheduler is configured through the qmaster only; the default 15 s interval leaves
        # jobs in qw that long.
        current = self.run(["qconf", "-ssconf"]).stdout
        wanted = {"schedule_interval": "0:0:1", "flush_submit_sec": "1", "flush_finish_sec": "1",
                  "job_load_adjustments": "NONE", "load_adjustment_decay_time": "0:0:0"}
        lines = []
        for line in current.splitlines():
            key = line.split(None, 1)[0] if line.strip() else ""
            lines.append(f"{key} {wanted[key]}" if key in wanted else line)
        path = self._conf_dir / "sconf"
        path.write_text("\n".join(lines) + "\n")
        self.run(["qconf", "-Msconf", str(path)])
        # A queue spooled before the start gets no queue instance: add it through the qmaster.
        if "all.q" not in self._run(["qconf", "-sql"], 10).stdout.split():
            path = self._conf_dir / "all.q"
            path.write_text(self._queue_text())
            self.run(["qconf", "-Aq", str(path)])

    def _start_execd(self, deadline: float) -> None:
        self._run_daemon([EXECD], "sge_execd")
        self._wait_until(lambda: self._daemon_pid(self._execd_pid_path(), "sge_execd") is not None,
                         deadline, "sge_execd to write its pid file", self.qmaster_spool / "messages")
        self._wait_until(self._queue_ready, deadline, "the execd reporting its load",
                         self.qmaster_spool / "messages")

    def _queue_ready(self) -> bool:
        """Whether qstat shows all.q on this host with a load value and no state letter (no
        ``u``nknown, ``a``larm, ``d``isabled, ``E``rror...)."""
        result = self._run(["qstat", "-f", "-q", "all.q"], 10)
        for line in result.stdout.splitlines():
            fields = line.split()
            if fields and fields[0].startswith("all.q@"):
                return len(fields) == 5 and fields[3] != "-NA-"
        return False

    # ------------------------------------------------------------------ helpers

    def _qmaster_pid_path(self) -> Path:
        return self.qmaster_spool / "qmaster.pid"

    def _execd_pid_path(self) -> Path:
        # The execd names its spool subdirectory after the name it resolves for itself
        # ("localhost" here, through host_aliases), which need not be gethostname().
        found = sorted(self.execd_spool.glob("*/execd.pid"))
        return found[0] if found else self.execd_spool / self.host / "execd.pid"

    def _full_env(self) -> dict[str, str]:
        return {**os.environ, **self.env()}

    def _run(self, command: list[str], timeout_s: float) -> subprocess.CompletedProcess:
        """Run a command in the cell's environment; a timeout counts as a failure (exit code -1)."""
        try:
            return subprocess.run(
                command, env=self._full_env(), stdin=subprocess.DEVNULL, capture_output=True,
                text=True, errors="replace", timeout=timeout_s, check=False,
            )
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(command, -1, "", f"timed out after {timeout_s} s")

    def _run_daemon(self, command: list[str], label: str) -> None:
        """Run a self-daemonizing daemon; its first process exits once the daemon has forked."""
        out_path = self.log_dir / f"{label}.out"
        with open(out_path, "ab") as out:
            try:
                result = subprocess.run(
                    command, env=self._full_env(), cwd=self.root, stdin=subprocess.DEVNULL,
                    stdout=out, stderr=subprocess.STDOUT, timeout=60, start_new_session=True,
                    check=False,
                )
            except subprocess.TimeoutExpired as error:
                raise TestbedError(f"`{' '.join(command)}` did not return within 60 s") from error
        if result.returncode != 0:
            raise TestbedError(
                f"`{' '.join(command)}` exited with code {result.returncode}; its output:\n"
                f"{_tail(out_path)}\ntail of the qmaster's messages:\n{_tail(self.qmaster_spool / 'messages')}"
            )

    def _wait_until(self, predicate, deadline: float, what: str, log: Path) -> None:
        delay = 0.02
        while not predicate():
            if time.monotonic() >= deadline:
                raise TestbedError(f"timed out waiting for {what}; tail of {log}:\n{_tail(log)}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def _daemon_pid(self, pid_path: Path, comm: str) -> int | None:
        """The pid in pid_path if that process runs, is a ``comm`` and belongs to this cell."""
        try:
            pid = int(pid_path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if not _is_running(pid) or _proc_read(pid, "comm").strip() != comm.encode()[:15]:
            return None
        if not _environ_has(pid, f"SGE_ROOT={self.sge_root}".encode()):
            return None  # a reused pid
        return pid

    def _terminate(self, daemons: list[tuple[Path, str]], signum: int) -> list[int]:
        """Signal the running daemons among (pid file, comm) pairs, SIGKILL any still running at
        the timeout, remove their pid files; return the pids that were running."""
        pids = {}
        for pid_path, comm in daemons:
            pid = self._daemon_pid(pid_path, comm)
            if pid is not None:
                pids[pid] = pid_path
                _signal(pid, signum)
        still = _wait_gone(set(pids), _DAEMON_STOP_TIMEOUT_S)
        for pid in still:
            _signal(pid, signal.SIGKILL)
        _wait_gone(still, 5.0)
        for pid_path in pids.values():
            pid_path.unlink(missing_ok=True)
        return list(pids)

    def _kill_jobs(self) -> None:
        """SIGKILL every process of the cell but its daemons (shepherds, jobs) until none is left."""
        daemons = set(self.pids().values())
        for _ in range(5):  # a job may fork while we look: look again
            victims = self.processes() - daemons
            if not victims:
                return
            for pid in victims:  # freeze first, so none sees another die and reacts
                _signal(pid, signal.SIGSTOP)
            for pid in victims:
                _signal(pid, signal.SIGKILL)
            still = _wait_gone(victims, 10.0)
            if still:
                raise TestbedError(f"processes {sorted(still)} of the cell survived SIGKILL")


def _lines(*pairs: tuple[str, object]) -> str:
    return "".join(f"{key} {value}\n" for key, value in pairs)
