"""The job directory: every file name and every atomic write (records: ``records.py`` beside it).

No other module builds a path inside a job directory or opens one of its files for writing.
The directory is the whole state of a job, so a handle can be rebuilt from it in any process.

Layout (``s<k>`` is submission k: the first run is s0, each resubmission adds one)::

    _rslurm_<jobname>/
        manifest.json            what was asked for and every submission made
        payload.pkl              cloudpickle of (f, {name: object}); pickled together so an
                                 object f also refers to as a global is stored once; then the
                                 source lines of what travels by value (_store/sources.py)
        payload.buffers          its big arrays, out of band, memory-mapped on the nodes
                                 (format and code: _store/payload.py)
        params_meta.pkl          the rest of the caller's table: labels, dtypes (_store/table.py)
        index.pkl                the table's index, to name rows without reading the table
        index_default.txt        how long its default prefix (0, 1, 2, ...) is: named without pandas
        submit.sh, submit_s1.sh  one sbatch array script per submission
        retry_s0.sh              its follow-up, when rows are retried automatically
        s0/params.bin            that submission's rows, in chunks a worker can seek to (s0's:
                                 the whole table, from which the output table is rebuilt)
        s0/claims/c000012        which task process took chunk 12 (created with O_EXCL;
                                 c000012.1, ... when live tasks took it over: _store/claims.py)
        s0/claims/all            made once every chunk is claimed (processes look no further)
        s0/results/t0003_p01.rec append-only framed records of finished rows (_store/records.py)
        s0/tasks/t0003.start     JSON written when a task starts (job id, node, restarts)
        s0/tasks/t0003.done      JSON written when a task has gone through every chunk
        s0/tasks/t0003.live      the task's heartbeat (its mtime), or its stop note (_node/lease.py)
        s0/failures/t0003-p812.17  rows that raised in process 812 of task 3 (max_failures only)
        s0/stop.json             written when the submission stopped early (max_failures)
        logs/s0_t3.out           Slurm's output for each array task
        logs/s0_retry.out        the follow-up's output: what it decided and why
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import pickle
import stat
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from .._errors import InputError, JobDirError, JobDirExistsError, UnsafeJobDirError
from .manifest import Manifest

if TYPE_CHECKING:
    from .manifest import Submission

DIR_PREFIX = "_rslurm_"

MANIFEST = "manifest.json"
PAYLOAD = "payload.pkl"
PARAMS_META = "params_meta.pkl"
PARAMS = "params.pkl"  # format 2 kept the whole table here too (still read)
INDEX = "index.pkl"  # params_df's index alone: rows are named by it without loading the table
# How many of its first labels are the positions 0, 1, 2, ...: up to there, rows are named without
# pandas (a follow-up or a status in a small process). Missing (older directories): 0.
INDEX_DEFAULT = "index_default.txt"
LOGS = "logs"
LOCAL = "local"


def default_dir(jobname: str, parent: "os.PathLike[str] | str | None" = None) -> Path:
    base = Path(parent) if parent is not None else Path.cwd()
    return (base / f"{DIR_PREFIX}{jobname}").absolute()


def manifest_path(job_dir: Path) -> Path:
    return Path(job_dir) / MANIFEST


def payload_path(job_dir: Path) -> Path:
    return Path(job_dir) / PAYLOAD


def table_paths(job_dir: Path) -> List[Path]:
    """The files that hold params_df (the first submission's chunks, the column kinds, and the
    whole table in directories of format 2)."""
    return [params_bin(job_dir, 0), Path(job_dir) / PARAMS_META, Path(job_dir) / PARAMS]


def script_path(job_dir: Path, name: str) -> Path:
    """A submission's script or its follow-up's (``name`` as the manifest records it)."""
    return Path(job_dir) / name


def script_name(sub: int) -> str:
    return "submit.sh" if sub == 0 else f"submit_s{sub}.sh"


def followup_script_name(sub: int) -> str:
    """The follow-up of submission ``sub``: it retries the rows whose task died."""
    return f"retry_s{sub}.sh"


def followup_log_path(job_dir: Path, sub: int) -> Path:
    return job_dir / LOGS / f"s{sub}_retry.out"


def sub_dir(job_dir: Path, sub: int) -> Path:
    return job_dir / f"s{sub}"


def params_bin(job_dir: Path, sub: int) -> Path:
    return sub_dir(job_dir, sub) / "params.bin"


def claims_dir(job_dir: Path, sub: int) -> Path:
    return sub_dir(job_dir, sub) / "claims"


def results_dir(job_dir: Path, sub: int) -> Path:
    return sub_dir(job_dir, sub) / "results"


def results_path(job_dir: Path, sub: int, task: int, proc: int) -> Path:
    return results_dir(job_dir, sub) / f"t{task:04d}_p{proc:02d}.rec"


def tasks_dir(job_dir: Path, sub: int) -> Path:
    return sub_dir(job_dir, sub) / "tasks"


def task_marker(job_dir: Path, sub: int, task: int, kind: str) -> Path:
    return tasks_dir(job_dir, sub) / f"t{task:04d}.{kind}"


def tasks_without_end_marker(job_dir: Path, subs: Sequence["Submission"]) -> List[Tuple[int, int]]:
    """(submission, task) of every task of these submissions without an end marker: one
    directory listing per submission."""
    out: List[Tuple[int, int]] = []
    for s in subs:
        try:
            names = set(os.listdir(tasks_dir(job_dir, s.index)))
        except FileNotFoundError:
            names = set()
        out.extend((s.index, t) for t in range(s.n_tasks) if task_marker(job_dir, s.index, t, "done").name not in names)
    return out


def log_pattern(job_dir: Path, sub: int, index: str) -> Path:
    """A task's log path with ``index`` in place of its index: the pattern a job script gives
    its scheduler, in the scheduler's own words for "this task's index"."""
    return job_dir / LOGS / f"s{sub}_t{index}.out"


def log_path(job_dir: Path, sub: int, task: int) -> Path:
    return job_dir / LOGS / f"s{sub}_t{task}.out"


def local_dir(job_dir: Path) -> Path:
    """Where the local backend keeps its state (without Slurm)."""
    return job_dir / LOCAL


def local_state_path(job_dir: Path, sub: int) -> Path:
    return local_dir(job_dir) / f"s{sub}.json"


def local_runner_path(job_dir: Path, sub: int) -> Path:
    return local_dir(job_dir) / f"s{sub}.runner.json"


def local_supervisor_log(job_dir: Path, sub: int) -> Path:
    return local_dir(job_dir) / f"s{sub}.supervisor.log"


def cancel_note_path(job_dir: Path, sub: int) -> Path:
    """The note a backend writes before it asks its scheduler to cancel submission ``sub``, for
    a scheduler that keeps no record of who killed a task."""
    return sub_dir(job_dir, sub) / "cancelled.json"


def write_cancel_note(job_dir: Path, sub: int, job_ids: Sequence[str], when: float) -> float:
    """Note that submission ``sub``'s jobs are about to be cancelled; the first note stands
    (a task killed after it was cancelled by it). Returns the time the note says."""
    path = cancel_note_path(job_dir, sub)
    earlier = read_cancel_note(job_dir, sub)
    if earlier is not None:
        return earlier
    write_json(path, {"time": when, "job_ids": [j for j in job_ids if j]})
    return when


def read_cancel_note(job_dir: Path, sub: int) -> Optional[float]:
    """When submission ``sub`` was noted cancelled (epoch seconds), or None."""
    try:
        found = read_json(cancel_note_path(job_dir, sub))
    except (OSError, ValueError):
        return None
    when = found.get("time") if isinstance(found, dict) else None
    return float(when) if isinstance(when, (int, float)) and not isinstance(when, bool) else None


def parse_task_file(name: str) -> Optional[Tuple[int, str]]:
    """``t0003.done`` -> (3, "done"), ``t0003.live`` -> (3, "live"); not a task's file -> None."""
    stem, _, kind = name.partition(".")
    if not stem.startswith("t") or not stem[1:].isdigit():
        return None
    return int(stem[1:]), kind


# ---------------------------------------------------------------------------------------------
# Atomic writes


@contextlib.contextmanager
def atomic_open(path: Path, fsync: bool = True) -> Iterator[BinaryIO]:
    """Write to a temporary name beside ``path``, fsync, then rename over it.

    A reader sees the old file or the whole new one, never a part; on error nothing is left.
    ``fsync=False`` leaves the fsync to the caller (who may overlap it with other work).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path) as fh:
        fh.write(data)


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode())


def write_text(path: Path, text: str, mode: int = 0o600) -> None:
    write_bytes(path, text.encode())
    os.chmod(path, mode)


def read_json(path: Path) -> Any:
    with open(path, "rb") as fh:
        return json.loads(fh.read())


# ---------------------------------------------------------------------------------------------
# Creating and opening a job directory


def create(job_dir: Path, *, overwrite: bool) -> None:
    """Make the directory (mode 0700). With ``overwrite`` an old job directory is replaced.

    ``os.mkdir`` is atomic, so of two callers racing for the same name exactly one wins.
    """
    if overwrite and job_dir.exists():
        if not (job_dir / MANIFEST).exists() and any(job_dir.iterdir()):
            raise JobDirExistsError(
                f"{job_dir} exists and is not a slurm_apply job directory (no {MANIFEST}); "
                "refusing to delete it. Remove it yourself or choose another jobname/job_dir."
            )
        remove_tree(job_dir)
    try:
        os.mkdir(job_dir, 0o700)
    except FileExistsError:
        raise exists_error(job_dir) from None
    os.chmod(job_dir, 0o700)  # mkdir's mode is masked by the umask
    (job_dir / LOGS).mkdir(mode=0o700)


def exists_error(job_dir: Path) -> JobDirExistsError:
    return JobDirExistsError(
        f"job directory {job_dir} already exists. Expected a new name; "
        "pass overwrite=True to replace it, or choose another jobname.")


def make_submission_dirs(job_dir: Path, sub: int) -> None:
    for d in (sub_dir(job_dir, sub), claims_dir(job_dir, sub), results_dir(job_dir, sub),
              tasks_dir(job_dir, sub)):
        d.mkdir(mode=0o700, exist_ok=True)


def check_safe(job_dir: Path) -> None:
    """Refuse a directory whose pickles someone else could have written: they would run as us."""
    try:
        st = os.stat(job_dir)
    except FileNotFoundError:
        raise JobDirError(f"job directory {job_dir} does not exist") from None
    if not stat.S_ISDIR(st.st_mode):
        raise JobDirError(f"{job_dir} is not a directory")
    if not os.path.lexists(job_dir / MANIFEST):
        # Not ours at all (/tmp, say): advice about its permissions would be wrong, even harmful.
        raise JobDirError(f"{job_dir} is not a slurm_apply job directory: {MANIFEST} is missing")
    if st.st_uid != os.getuid():
        raise UnsafeJobDirError(
            f"{job_dir} is owned by uid {st.st_uid}, not by you (uid {os.getuid()}); its pickles "
            "would run code as you, so it is not opened. Copy the results you need instead."
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeJobDirError(
            f"{job_dir} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o}); anyone "
            f"could replace its pickles. Run `chmod go-w {job_dir}` if you trust its contents."
        )
    # A safe directory can still hold a pickle someone else may rewrite in place (s<k>/params.bin too).
    with os.scandir(job_dir) as entries:
        paths = [e.path for e in entries]
    subs = [p for p in paths if os.path.basename(p)[:1] == "s" and os.path.basename(p)[1:].isdigit()]
    paths += [os.path.join(p, "params.bin") for p in subs]
    for p in paths:
        try:
            est = os.stat(p)
        except FileNotFoundError:
            continue
        if est.st_uid != os.getuid() or est.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UnsafeJobDirError(
                f"{p} is owned by uid {est.st_uid} with mode {stat.S_IMODE(est.st_mode):o}; "
                "only you may own and write the files of a job directory (its pickles would run "
                f"code as you), so it is not opened. Run `chmod -R go-w {job_dir}` if you trust it."
            )


def load_manifest(job_dir: Path) -> Manifest:
    path = job_dir / MANIFEST
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise JobDirError(f"{job_dir} is not a slurm_apply job directory: {MANIFEST} is missing") from None
    except ValueError as exc:
        raise JobDirError(f"{path} is corrupt: {exc}") from None
    return Manifest.from_json(data, where=str(path))


def update_manifest(job_dir: Path, change: Callable[[Manifest], Any]) -> Manifest:
    """Change the manifest: read it afresh under :func:`manifest_lock`, apply ``change`` to it
    (in place) and write it back atomically; the manifest as written.

    The only way to change a job's manifest: a whole in-memory copy is never written over the
    file, so a change another process made meanwhile (a cancel() stopping retries, a follow-up's
    decision, a resubmission) is never lost. Inside a locked section (re-entrant), the read
    sees what the section wrote.
    """
    with manifest_lock(job_dir):
        manifest = load_manifest(job_dir)
        change(manifest)
        write_json(job_dir / MANIFEST, manifest.to_json())
    return manifest


def create_manifest(job_dir: Path, manifest: Manifest) -> None:
    """Write the first manifest of a job directory just made (under the lock, as every write)."""
    with manifest_lock(job_dir):
        write_json(job_dir / MANIFEST, manifest.to_json())


def token_path(job_dir: Path, token: str) -> Path:
    """A file that exists as long as the job with this token owns the directory."""
    return job_dir / f".job-{token}"


def write_token(job_dir: Path, token: str) -> None:
    write_bytes(token_path(job_dir, token), b"")


def stop_path(job_dir: Path, sub: int) -> Path:
    """Written when a submission stopped early (``max_failures``): its tasks claim no more."""
    return sub_dir(job_dir, sub) / "stop.json"


def failures_dir(job_dir: Path, sub: int) -> Path:
    """Each task process's count of rows that raised, in its file's name (``_node/budget.py``)."""
    return sub_dir(job_dir, sub) / "failures"


def job_replaced(job_dir: Path, token: str) -> bool:
    """True when the directory no longer holds the job with this token (it was replaced)."""
    return not token_path(job_dir, token).exists()


LOCK_FIX = (
    "slurm_apply locks the job directory's manifest (fcntl.flock) so that retries, cancel() and "
    "resubmit(), which may run on different machines, never write over one another's changes. "
    "Put the job on a file system shared by the nodes that supports flock (pass job_dir=...): "
    "NFS with its lock service (NLM/lockd, not mounted with 'nolock'; NFSv4 locks by itself), "
    "Lustre mounted with '-o flock', GPFS (Spectrum Scale), BeeGFS, CephFS or a local disk for "
    "the local backend; or ask the administrators to enable locks there")


def _fs_type(path: Path) -> str:
    """The type of the file system holding ``path`` ("nfs", "lustre", ...), or "" if unknown."""
    try:
        with open("/proc/self/mounts") as fh:
            mounts = [line.split()[1:3] for line in fh if len(line.split()) > 2]
    except OSError:
        return ""
    real = os.path.realpath(path)
    best, kind = "", ""
    for point, fstype in mounts:
        point = point.replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fstype
    return kind


def _locks_refused(where: Path, exc: OSError, written: bool) -> JobDirError:
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    kind = _fs_type(where)
    return JobDirError(
        f"the file system of {where}{f' ({kind})' if kind else ''} refuses file locks: "
        f"fcntl.flock failed with {code} ({exc.strerror}). "
        + ("" if written else "Expected a file system with working locks; nothing was written. ")
        + LOCK_FIX + ".")


def check_locks(directory: Path) -> None:
    """Refuse, with the cause and the fix, a directory whose file system refuses ``flock``.

    Locks a scratch file made there (removed at once). Run before a job is written, on the
    directory that will hold it. A file system that only fakes locks on one machine (NFS mounted
    with 'nolock', Lustre with 'localflock') cannot be told from here; see the README.
    """
    try:
        fd, name = tempfile.mkstemp(prefix=".slurm_apply-lock-probe-", dir=directory)
    except OSError as exc:
        raise JobDirError(f"cannot create a file in {directory} ({exc}); expected a writable "
                          "directory for the job") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError:
        pass  # someone holds a lock on a file only we know: locks work
    except OSError as exc:
        raise _locks_refused(directory, exc, written=False) from None
    finally:
        os.close(fd)
        os.unlink(name)


_held = threading.local()  # per thread: {job directory: depth} of the manifest locks it holds


@contextlib.contextmanager
def manifest_lock(job_dir: Path) -> Iterator[None]:
    """Serialise read-modify-write of the manifest between processes (and threads): a whole
    decision (a resubmission, a follow-up's, a launch and its outcome) holds it throughout.

    Re-entrant within a thread, so :func:`update_manifest` can be called inside a locked
    section. Another thread opens a lock of its own (flock locks belong to an open file), so it
    waits as another process would. The descriptor is not inherited by subprocesses.
    """
    held: Dict[str, int] = _held.__dict__.setdefault("dirs", {})
    key = os.path.realpath(job_dir)
    if key in held:
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    fd = os.open(job_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise _locks_refused(job_dir, exc, written=True) from None
        held[key] = 1
        try:
            yield
        finally:
            del held[key]
    finally:
        os.close(fd)


def write_index(job_dir: Path, index: Any) -> None:
    """Write params_df's index, and how long its default prefix is (see INDEX_DEFAULT). A job only
    grows, and keeps the labels it has: a reader that sees either file before or after a growth
    reads true facts about the rows it knows."""
    default = (type(index).__name__ == "RangeIndex" and getattr(index, "start", None) == 0
               and getattr(index, "step", None) == 1)
    with atomic_open(job_dir / INDEX) as fh:
        pickle.dump(index, fh, protocol=pickle.HIGHEST_PROTOCOL)
    with atomic_open(job_dir / INDEX_DEFAULT) as fh:
        fh.write(b"%d\n" % (len(index) if default else 0))


def index_default_rows(job_dir: Path) -> int:
    """How many of params_df's first labels are known to be the positions 0, 1, 2, ... (0 when
    not known)."""
    try:
        return int((job_dir / INDEX_DEFAULT).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def read_index(job_dir: Path) -> Any:
    """params_df's index (from the whole table for a directory written without index.pkl)."""
    try:
        with open(job_dir / INDEX, "rb") as fh:
            return pickle.load(fh)
    except FileNotFoundError:
        import pandas as pd

        return pd.read_pickle(job_dir / PARAMS).index


def remove_tree(path: Path) -> None:
    """Delete a job directory whole. It is first renamed out of the way (one atomic step: its
    path then holds the whole job or nothing, never a job without its manifest), then deleted;
    a file that a late writer adds or renames meanwhile is deleted on another pass."""
    import secrets
    import shutil
    import time

    gone = path.with_name(f".{path.name}.deleting-{secrets.token_hex(4)}")
    os.rename(path, gone)
    for attempt in range(10):
        try:
            shutil.rmtree(gone)
            return
        except FileNotFoundError:  # a file renamed or removed under the walk: look again
            pass
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY:
                raise
        time.sleep(0.1 * (attempt + 1))
    shutil.rmtree(gone, ignore_errors=True)
    if gone.exists():
        raise JobDirError(f"{path} was deleted from its place, but something still writes into it: "
                          f"what is left is in {gone}; delete it once nothing runs there")


# ---------------------------------------------------------------------------------------------
# Reading what the tasks wrote


def list_result_files(job_dir: Path, sub: int) -> List[Path]:
    try:
        names = os.listdir(results_dir(job_dir, sub))
    except FileNotFoundError:
        return []
    return [results_dir(job_dir, sub) / n for n in sorted(names) if n.endswith(".rec")]


def mtime(path: Path) -> Optional[float]:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def read_tail(path: Path, n_bytes: int = 65536, lines: Optional[int] = None) -> str:
    """The end of a (log) file as text: its last ``n_bytes``, or with ``lines`` its last that
    many lines whatever their length. A task's last words are at its end, and a log can be
    gigabytes, so the file is read backwards from its end. "" when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            pos = fh.tell()
            if lines is None:
                fh.seek(max(0, pos - n_bytes))
                return fh.read().decode(errors="replace")
            data = b""
            while pos > 0 and data.count(b"\n") <= lines:
                step = min(n_bytes, pos)
                pos -= step
                fh.seek(pos)
                data = fh.read(step) + data
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:]) if lines else ""


def find_job_dirs(path: "os.PathLike[str] | str" = ".", depth: int = 2) -> List[Path]:
    """The job directories under ``path``: every ``_rslurm_*`` directory holding a
    manifest.json, at most ``depth`` levels below ``path`` (``path`` itself included), each
    directory's entries in name order. Job directories are not searched inside, nor hidden directories.

    Each can be opened with ``SlurmJob.from_dir``; one may still fail to open (a damaged
    manifest, another user's directory), which is why paths, not handles, are returned.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise InputError(f"depth must be a whole number of directory levels, 1 or more; got {depth!r}",
                         argument="depth")
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"{str(root)!r} is not a directory: there is nothing to search", argument="path")
    if is_job_dir(root):
        return [root]
    found: List[Path] = []

    def walk(d: Path, level: int) -> None:
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            try:
                if not e.is_dir(follow_symlinks=False):
                    continue
            except OSError:
                continue
            p = d / e.name
            if is_job_dir(p):
                found.append(p)
            elif level < depth and not e.name.startswith("."):
                walk(p, level + 1)

    walk(root, 1)
    return found


def is_job_dir(p: Path) -> bool:
    try:
        return p.name.startswith(DIR_PREFIX) and (p / MANIFEST).is_file()
    except OSError:
        return False

