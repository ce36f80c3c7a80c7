"""The payload: ``f`` and ``add_objects``, pickled together; big buffers out of band.

Two files in the job directory::

    payload.pkl      pickle protocol 5 of (f, {name: object}), then a second pickle: the source
                     lines of the functions pickled by value, put in linecache where the payload
                     is loaded (their code keeps its file names: see sources.py).
                     Buffers of at least
                     OUT_OF_BAND_MIN_BYTES that pickle hands out as PickleBuffers (contiguous
                     NumPy arrays, the blocks of DataFrames, Arrow buffers) are not in it: it
                     refers to them, in order, as out-of-band buffers.
    payload.buffers  those buffers, raw, each starting at a multiple of ALIGN bytes, then an
                     index: (offset u64, length u64) per buffer | count u64 | BUFFERS_MAGIC,
                     little-endian. Absent when no buffer was big enough.

Why: the caller writes each big buffer straight from the object's memory to the file as pickle
meets it (no pickled copy in memory), and every process on a node maps the one file read-only,
so they all share a single copy in the page cache and read only the pages they touch. A pre-flight
load touches none of them. The price: arrays rebuilt over the mapping are read-only.

Small buffers stay in the pickle (a mapping per kilobyte array would cost more than it saves).
The node imports this module: no NumPy here.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import mmap
import os
import pickle
import struct
import sys
import threading
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from .layout import PAYLOAD

BUFFERS = "payload.buffers"
OUT_OF_BAND_MIN_BYTES = 1 << 20
ALIGN = 4096  # a page: a buffer's pages are never read in along with its neighbour's
BUFFERS_MAGIC = b"SABUF\x00\x00\x01"
_ENTRY = struct.Struct("<QQ")
_TAIL = struct.Struct("<Q8s")
PROTOCOL = 5

READ_ONLY_HINT = (
    " (NumPy arrays and DataFrames given in add_objects are memory-mapped read-only on the nodes, "
    "shared by every process there: copy one before changing it in place, e.g. X = X.copy())")


class PayloadSize(NamedTuple):
    """What a payload takes: ``pickled`` is unpickled by every process on the nodes (a copy
    each); ``shared`` is the out-of-band buffers, mapped and shared."""

    pickled: int
    shared: int

    @property
    def total(self) -> int:
        return self.pickled + self.shared


def buffers_path(payload: "os.PathLike[str] | str") -> Path:
    """The buffer file that goes with a ``payload.pkl``."""
    return Path(payload).with_name(BUFFERS)


def _out_of_band(pb: pickle.PickleBuffer) -> Optional[memoryview]:
    """The raw bytes of a buffer that should go out of band, or None to keep it in the pickle."""
    try:
        raw = pb.raw()  # BufferError when not contiguous: such a buffer stays in band
    except BufferError:
        return None
    if raw.nbytes < OUT_OF_BAND_MIN_BYTES:
        raw.release()
        return None
    return raw


class _Counter:
    """A file that keeps nothing: counts the bytes pickle writes."""

    def __init__(self) -> None:
        self.n = 0

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        self.n += n
        return n


def measure(f: Any, objects: Dict[str, Any]) -> PayloadSize:
    """Pickle the payload into nothing: checks that it pickles and what it will take.

    Costs a pass over the object graph but never copies a big buffer, so it can run before the
    job directory exists (a payload that does not pickle never replaces an old job).
    """
    sink, shared = _Counter(), [0]

    def take(pb: pickle.PickleBuffer) -> bool:
        raw = _out_of_band(pb)
        if raw is None:
            return True
        shared[0] += raw.nbytes
        raw.release()
        return False

    _dump((f, objects), sink, take, with_sources=True)
    return PayloadSize(sink.n, shared[0])


def pickles(obj: Any) -> Optional[str]:
    """None if ``obj`` pickles as the payload would, else why not (without copying buffers)."""
    try:
        _dump(obj, _Counter(), lambda pb: False)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _dump(obj: Any, fh: Any, buffer_callback: Callable[[pickle.PickleBuffer], bool], *,
          with_sources: bool = False) -> List[Tuple[str, str]]:
    """cloudpickle ``obj`` (then the sources of its functions pickled by value, if asked);
    the functions whose source was not found, as (name, file)."""
    from .sources import dump

    return dump(obj, fh, PROTOCOL, buffer_callback, with_sources=with_sources).missing


@functools.lru_cache(maxsize=1)
def _fallocate() -> Optional[Callable[..., int]]:
    """Linux's fallocate(2) from the C library, or None (then nothing is preallocated)."""
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return fn


def _preallocate(fd: int, offset: int, length: int) -> None:
    """Reserve a buffer's blocks before writing it, as numpy.save does (FALLOC_FL_KEEP_SIZE:
    the file's size is still what is written). Measured on ext4: a 2 GB buffer is written in
    the time numpy.save takes, where without it the write takes a third longer, and slow
    outliers are rarer. Not posix_fallocate, which writes zeros where the file system cannot
    reserve blocks; here such a file system only returns an error, which is ignored."""
    fn = _fallocate() if sys.platform.startswith("linux") else None
    if fn is not None:
        fn(fd, 1, offset, length)  # 1: FALLOC_FL_KEEP_SIZE


class _BufferWriter:
    """Appends out-of-band buffers to ``payload.buffers`` as pickle hands them out."""

    def __init__(self, path: Path, open_file: Callable[[Path], "contextlib.AbstractContextManager[BinaryIO]"],
                 stack: contextlib.ExitStack) -> None:
        self.path, self._open, self._stack = path, open_file, stack
        self.fh: Optional[BinaryIO] = None
        self.index: List[Tuple[int, int]] = []
        self.pos = 0

    def take(self, pb: pickle.PickleBuffer) -> bool:
        raw = _out_of_band(pb)
        if raw is None:
            return True
        with raw:
            if self.fh is None:  # opened on the first big buffer: most payloads have none
                self.fh = self._stack.enter_context(self._open(self.path))
            pad = -self.pos % ALIGN
            if pad:
                self.fh.write(bytes(pad))
            _preallocate(self.fh.fileno(), self.pos + pad, raw.nbytes)
            self.fh.write(raw)  # straight from the object's memory: no copy is made
            self.index.append((self.pos + pad, raw.nbytes))
            self.pos += pad + raw.nbytes
        return False

    def finish(self) -> int:
        """Write the index; the file's size (0 when there was no big buffer)."""
        if self.fh is None:
            return 0
        tail = b"".join(_ENTRY.pack(*e) for e in self.index) + _TAIL.pack(len(self.index), BUFFERS_MAGIC)
        self.fh.write(tail)
        return self.pos + len(tail)


def write_payload(job_dir: "os.PathLike[str] | str", f: Any, objects: Dict[str, Any], *,
                  sync_buffers: bool = True) -> int:
    """Write ``payload.pkl`` (and ``payload.buffers`` if needed) into ``job_dir``; bytes written.

    Each file is written atomically (temporary name, fsync, rename). With ``sync_buffers=False``
    the buffer file is not fsynced: :func:`sync_buffers_later` does it without making anyone
    wait. Peak memory is the pickle's in-band part being framed, not a copy of the payload.
    """
    from .layout import atomic_open
    from .sources import missing_message

    path = Path(job_dir) / PAYLOAD
    with contextlib.ExitStack() as stack:
        bufs = _BufferWriter(buffers_path(path), functools.partial(atomic_open, fsync=sync_buffers),
                             stack)
        with atomic_open(path) as fh:
            missing = _dump((f, objects), fh, bufs.take, with_sources=True)
            pickled = fh.tell()
        shared = bufs.finish()
    said = missing_message(missing)
    if said:
        from .._log import logger

        logger.info(said)
    return pickled + shared


def sync_buffers_later(job_dir: "os.PathLike[str] | str") -> Optional[threading.Thread]:
    """fsync ``payload.buffers`` in a thread of its own, started now; the thread, or None when
    there is no buffer file.

    The thread is not a daemon: the interpreter waits for it before it exits, so a script that
    ends right after ``slurm_apply()`` leaves its buffers on disk. Nobody else waits: the file is
    complete for every reader once written (tasks on other machines read it through the shared
    file system, not from this machine's disk); the fsync only guards against this machine
    crashing before its page cache reaches the disk, and a file cut short by such a crash is
    refused by :func:`map_buffers` (its index and mark come last).
    """
    path = Path(job_dir) / BUFFERS
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None

    def run() -> None:
        try:
            os.fsync(fd)
        except OSError as exc:
            from .._log import logger

            logger.warning("could not write %s to disk (fsync: %s); the job reads it as written, "
                           "but a crash of this machine would lose it", path, exc)
        finally:
            os.close(fd)

    thread = threading.Thread(target=run, name=f"slurm_apply fsync {path}", daemon=False)
    thread.start()
    return thread


def map_buffers(path: "os.PathLike[str] | str") -> Optional[List[memoryview]]:
    """Read-only views of the buffers in ``path`` over one shared mapping; None if no file.

    Nothing of the buffers themselves is read: only the index at the end of the file.
    """
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if size < _TAIL.size:
            raise ValueError(f"{path} is cut short ({size} bytes): write the job again")
        fh.seek(size - _TAIL.size)
        count, magic = _TAIL.unpack(fh.read(_TAIL.size))
        index_at = size - _TAIL.size - count * _ENTRY.size
        if magic != BUFFERS_MAGIC or index_at < 0:
            raise ValueError(f"{path} is not a slurm_apply buffer file, or it is cut short")
        fh.seek(index_at)
        index = list(_ENTRY.iter_unpack(fh.read(count * _ENTRY.size)))
        if any(off + n > index_at for off, n in index):
            raise ValueError(f"{path}: its index points past its data; write the job again")
        # MAP_SHARED, read-only: every process mapping the file shares the page cache's pages.
        whole = memoryview(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
    return [whole[off:off + n] for off, n in index]


def unpickle(where: "os.PathLike[str] | str", pkgs: Sequence[str] = ()) -> Tuple[Callable[..., Any], Dict[str, Any]]:
    """Import ``pkgs`` and unpickle (f, the objects), big buffers mapped, not read. ``where`` is
    a job directory or its ``payload.pkl``. Nothing is installed: see :func:`install`."""
    from .sources import add_sources, read_sources

    path = Path(where)
    if path.is_dir():
        path = path / PAYLOAD
    for name in pkgs:
        importlib.import_module(name)
    buffers = map_buffers(buffers_path(path))
    with open(path, "rb") as fh:
        f, objects = pickle.load(fh, buffers=buffers)
        add_sources(read_sources(fh))
    return f, objects


def namespace(f: Callable[..., Any]) -> Dict[str, Any]:
    """Where the objects go so that f's code finds them: the globals of f (under any
    ``functools.partial``: more_args, or the user's own), or, for a callable object, builtins."""
    inner = f
    while isinstance(inner, functools.partial):
        inner = inner.func
    glb = getattr(inner, "__globals__", None)
    if glb is not None:
        return glb
    import builtins

    return vars(builtins)


def install(f: Callable[..., Any], objects: Dict[str, Any]) -> None:
    """Make the objects globals of f (see :func:`namespace`)."""
    if objects:
        namespace(f).update(objects)


def load(where: "os.PathLike[str] | str", pkgs: Sequence[str] = ()) -> Callable[..., Any]:
    """Import ``pkgs``, unpickle f and the objects (big buffers mapped, not read) and make the
    objects globals of f. ``where`` is a job directory or its ``payload.pkl``."""
    f, objects = unpickle(where, pkgs)
    install(f, objects)
    return f


def read_only_hint(message: str) -> str:
    """What to add to a row's error when it looks like a write into a mapped, read-only array."""
    return READ_ONLY_HINT if "read-only" in message or "readonly" in message else ""

