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
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

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
                name = gens.get(gen)
                if name is None:  # a gap: the directory is being written; stop at it
                    break
                owner, lost = self._read(name)
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
