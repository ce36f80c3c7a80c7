"""Claims: which task process runs which chunk of a submission, and who took a chunk over.

A chunk is claimed by creating ``s<k>/claims/c000012`` with O_EXCL: of racing processes exactly
one wins. Its content names the owner, ``"<task>.<proc>"``. When the owner dies, a live task
takes the chunk over by creating the next *generation*, ``c000012.1`` (then ``.2``, ...), with
O_EXCL too, so of several tasks that find the same orphan exactly one runs it. A generation's
content may add the row the dead owner had in flight, which the taker does not run::

    3.1                    task 3, process 1 owns the chunk
    0.0 lost 17 of 3.1     task 0, process 0 took it over; row 17 was in flight in 3.1

The latest generation is the chunk's owner; the ``lost`` notes say whom to blame for a row that
no one recorded. A claim is created and written with SIGTERM blocked, so Slurm's warning signal
never leaves an empty claim (a SIGKILL still can: it reads as an unknown owner).

A process does not try every chunk (:class:`Claimer`): a thousand tasks doing so would make
millions of synchronous creates on a shared file system. It first claims its own round-robin
share, front to back (after one create that finds a chunk of it taken, it lists the directory
and skips what is taken: it started late); then it lists the claims directory and tries only
chunks not listed, in an order of its own, listing again only after a few creates in a row
found the chunk taken. The first process to find every chunk claimed says so in a file,
``claims/all``, and a process that starts or runs out later looks no further. A job's creates
are about its number of chunks, and its listings about its number of processes.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple

from . import layout as jd

Owner = Tuple[int, int]  # (task, process); (-1, -1) when unknown
UNKNOWN_OWNER: Owner = (-1, -1)


@contextlib.contextmanager
def sigterm_deferred() -> Iterator[None]:
    """Hold SIGTERM back for a few system calls that must not be cut in two.

    The signal stays pending and its handler runs as soon as the block ends.
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def claim_name(chunk: int, gen: int = 0) -> str:
    return f"c{chunk:06d}" if gen == 0 else f"c{chunk:06d}.{gen}"


def parse_claim_name(name: str) -> Optional[Tuple[int, int]]:
    """``c000012`` -> (12, 0); ``c000012.3`` -> (12, 3); anything else -> None."""
    stem, dot, gen = name.partition(".")
    if not stem.startswith("c") or not stem[1:].isdigit() or (dot and not gen.isdigit()):
        return None
    return int(stem[1:]), int(gen) if dot else 0


def _owner_text(owner: Owner) -> str:
    return f"{owner[0]}.{owner[1]}"


def _parse_owner(text: str) -> Owner:
    task, proc = text.split(".")
    return int(task), int(proc)


def parse_claim(text: str) -> Tuple[Owner, Optional[Tuple[int, Owner]]]:
    """(owner, (lost row, whose) or None) from a claim's content; an empty or torn claim has
    an unknown owner."""
    parts = text.split()
    try:
        owner = _parse_owner(parts[0])
    except (IndexError, ValueError):
        return UNKNOWN_OWNER, None
    if len(parts) == 5 and parts[1] == "lost" and parts[3] == "of":
        try:
            return owner, (int(parts[2]), _parse_owner(parts[4]))
        except ValueError:
            pass
    return owner, None


def _create(path: Path, text: str) -> bool:
    with sigterm_deferred():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    return True


def try_claim(job_dir: Path, sub: int, chunk: int, task: int, proc: int) -> bool:
    """Take an untaken chunk for this process; False if some process has it."""
    return _create(jd.claims_dir(job_dir, sub) / claim_name(chunk), _owner_text((task, proc)))


def try_take_over(job_dir: Path, sub: int, chunk: int, gen: int, owner: Owner,
                  lost: Optional[Tuple[int, Owner]] = None) -> bool:
    """Create generation ``gen`` (>= 1) of a chunk's claim; False if another task did first."""
    text = _owner_text(owner)
    if lost is not None:
        text += f" lost {lost[0]} of {_owner_text(lost[1])}"
    return _create(jd.claims_dir(job_dir, sub) / claim_name(chunk, gen), text)


# Made in the claims directory by the first process that finds every chunk claimed: claims are
# never removed, so from then on a process looks no further than this one name.
ALL_CLAIMED = "all"


def claimed_chunks(job_dir: Path, sub: int) -> Set[int]:
    """Chunks with a first claim, from one listing of the claims directory (nothing opened)."""
    try:
        names = os.listdir(jd.claims_dir(job_dir, sub))
    except FileNotFoundError:
        return set()
    out: Set[int] = set()
    for name in names:
        if len(name) == 7 and name[0] == "c" and name[1:].isdigit():  # the usual name, fast
            out.add(int(name[1:]))
            continue
        parsed = parse_claim_name(name)
        if parsed is not None and parsed[1] == 0:
            out.add(parsed[0])
    return out


def all_claimed(job_dir: Path, sub: int) -> bool:
    return (jd.claims_dir(job_dir, sub) / ALL_CLAIMED).exists()


def _mark_all_claimed(job_dir: Path, sub: int) -> None:
    try:
        os.close(os.open(jd.claims_dir(job_dir, sub) / ALL_CLAIMED, os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError:
        pass  # only an optimisation


class Claimer:
    """The chunks one process claims, one at a time (see the module's docstring).

    Parameters
    ----------
    job_dir, sub : the submission
    n_chunks, slots, slot : its chunks, its processes (tasks x CPUs) and this process's place
    task, proc : this process, as its claims name it
    start : where to begin in its own share; ``len(own)`` goes straight to free chunks, and
        NO_MORE claims nothing (a process that only resumes chunks handed to it)
    may_claim : asked before every claim; False stops claiming (the job was replaced, or
        stopped early)

    Attributes
    ----------
    creates, listings : int
        O_EXCL creates tried and directory listings made (the cost on a shared file system).
    seconds : float
        Time spent in both.
    pos : int
        Where this process is in its own share (``len(own)`` once past it).
    """

    NO_MORE = 1 << 62
    RELIST_AFTER = 2  # creates in a row that found the chunk taken before listing again

    def __init__(self, job_dir: Path, sub: int, n_chunks: int, slots: int, slot: int,
                 task: int, proc: int, start: int = 0,
                 may_claim: Callable[[], bool] = lambda: True) -> None:
        self.job_dir, self.sub, self.task, self.proc = job_dir, sub, task, proc
        self.n_chunks, self.slots, self.slot = n_chunks, slots, slot
        self.own = range(slot, n_chunks, slots) if slot < slots else range(0)
        self.pos = start
        self.may_claim = may_claim
        self.creates = self.listings = 0
        self.seconds = 0.0
        self._free: List[int] = []
        self._taken: Optional[Set[int]] = None  # claimed chunks, as last listed in our share
        self._missed = 0  # creates in a row that found the chunk taken
        self._looked = False  # whether ALL_CLAIMED was looked for

    def _try(self, chunk: int) -> bool:
        t0 = time.perf_counter()
        self.creates += 1
        got = try_claim(self.job_dir, self.sub, chunk, self.task, self.proc)
        self.seconds += time.perf_counter() - t0
        return got

    def _list(self) -> Set[int]:
        t0 = time.perf_counter()
        self.listings += 1
        taken = claimed_chunks(self.job_dir, self.sub)
        if len(taken) >= self.n_chunks:
            _mark_all_claimed(self.job_dir, self.sub)
        self.seconds += time.perf_counter() - t0
        return taken

    def _none_left(self) -> bool:
        """Every chunk was claimed, as a process that listed them all said (one stat)."""
        t0 = time.perf_counter()
        found = all_claimed(self.job_dir, self.sub)
        self.seconds += time.perf_counter() - t0
        return found

    def _list_free(self) -> List[int]:
        """Unclaimed chunks, in an order of this process's own: processes that list at the
        same moment then seldom try the same chunk."""
        taken = self._list()
        free = [c for c in range(self.n_chunks) if c not in taken]
        random.Random(self.slot * 7919 + self.listings).shuffle(free)
        return free

    def _claim(self, c: int, before: Callable[[int], None]) -> Optional[bool]:
        """Try one chunk: True if ours, False if taken, None if we may claim no more."""
        if not self.may_claim():
            self.pos = self.NO_MORE
            return None
        before(c)
        return self._try(c)

    def next_chunk(self, before: Callable[[int], None] = lambda c: None) -> Optional[int]:
        """The next chunk this process now owns, or None when there is none left for it.

        ``before(chunk)`` is called just before each create (the task's parent is told which
        chunk may become ours, in case we die right after the create).
        """
        if not self._looked and self.pos <= len(self.own):
            self._looked = True
            if self._none_left():  # a late start: every chunk was taken meanwhile
                self.pos = self.NO_MORE
                return None
        while self.pos < len(self.own):
            c = self.own[self.pos]
            self.pos += 1
            if self._taken is not None and c in self._taken:
                continue
            got = self._claim(c, before)
            if got is None or got:
                return c if got else None
            # Someone takes our share (we started late): look before trying the rest of it.
            self._missed += 1
            if self._taken is None or self._missed >= self.RELIST_AFTER:
                self._taken, self._missed = self._list(), 0
        if self.pos > len(self.own):
            return None
        while True:
            if not self._free or self._missed >= self.RELIST_AFTER:
                self._free, self._missed = self._list_free(), 0
                if not self._free:
                    self.pos = self.NO_MORE
                    return None
            c = self._free.pop()
            got = self._claim(c, before)
            if got is None or got:
                return c if got else None
            self._missed += 1


@dataclass
class Chain:
    """Every generation of one chunk's claim, oldest first."""

    chunk: int
    owners: List[Owner] = field(default_factory=list)
    lost: Dict[int, Owner] = field(default_factory=dict)  # row -> the owner it was lost in

    @property
    def owner(self) -> Owner:
        return self.owners[-1]

    @property
    def next_gen(self) -> int:
        return len(self.owners)


def latest(job_dir: Path, sub: int, chunk: int) -> Optional[Chain]:
    """The claim chain of one chunk (None if unclaimed), opening its generations one by one."""
    chain = Chain(chunk)
    d = jd.claims_dir(job_dir, sub)
    while True:
        try:
            text = (d / claim_name(chunk, chain.next_gen)).read_text()
        except FileNotFoundError:
            return chain if chain.owners else None
        owner, lost = parse_claim(text)
        chain.owners.append(owner)
        if lost is not None:
            chain.lost[lost[0]] = lost[1]


class ClaimReader:
    """All claim chains of a submission, re-read cheaply: a claim's content never changes once
    written, so only names not seen before are opened (an empty claim is read again)."""

    def __init__(self, job_dir: Path, sub: int) -> None:
        self.dir = jd.claims_dir(job_dir, sub)
        self._seen: Dict[str, Tuple[Owner, Optional[Tuple[int, Owner]]]] = {}

    def chains(self) -> Dict[int, Chain]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            names = []
        found: Dict[int, Dict[int, str]] = {}
        for name in names:
            parsed = parse_claim_name(name)
            if parsed is not None:
                found.setdefault(parsed[0], {})[parsed[1]] = name
        out: Dict[int, Chain] = {}
        for chunk, gens in found.items():
            chain = Chain(chunk)
            for gen in range(len(gens)):
                claim = gens.get(gen)
                if claim is None:  # a gap: the directory is being written; stop at it
                    break
                owner, lost = self._read(claim)
                chain.owners.append(owner)
                if lost is not None:
                    chain.lost[lost[0]] = lost[1]
            if chain.owners:
                out[chunk] = chain
        return out

    def _read(self, name: str) -> Tuple[Owner, Optional[Tuple[int, Owner]]]:
        got = self._seen.get(name)
        if got is None:
            try:
                got = parse_claim((self.dir / name).read_text())
            except OSError:
                got = (UNKNOWN_OWNER, None)
            if got[0] != UNKNOWN_OWNER:
                self._seen[name] = got
        return got


def read_claims(job_dir: Path, sub: int) -> Dict[int, Owner]:
    """{chunk: (task, proc)} of every claimed chunk's current owner (its latest generation)."""
    return {c: chain.owner for c, chain in ClaimReader(job_dir, sub).chains().items()}


def read_lost(job_dir: Path, sub: int) -> Dict[int, Owner]:
    """{row: (task, proc)}: rows a dead owner had in flight when its chunk was taken over."""
    out: Dict[int, Owner] = {}
    for chain in ClaimReader(job_dir, sub).chains().values():
        out.update(chain.lost)
    return out
