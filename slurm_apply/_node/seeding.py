"""Seeding rows: every row starts ``random`` and NumPy's global generator from its own seed.

A row's seed is ``row_seed(job seed, row index)``. Before the row runs, the task does what
``random.seed(s)`` and ``numpy.random.seed(s)`` do, and nothing more, so a row draws the same
numbers whichever way it reaches the generators: ``random``'s functions, ``numpy.random``'s
functions, or NumPy's global ``RandomState`` (``numpy.random.mtrand._rand``, what libraries such as
scikit-learn use for ``random_state=None``). What makes it cheaper than those two calls:

- ``random`` is seeded at a process's first draw, not before every row. Until then its module
  functions (``random.random``, ``random.gauss``, ..., ``getstate``: everything bound to the
  module's instance) are stand-ins, put in place before f's module is imported, so a function
  taken from the module (``from random import random``) is a stand-in too. A row that never
  draws costs nothing; the first call to a stand-in seeds the generator from the running row's
  seed, puts the real functions back, and from the next row on the process seeds every row
  before it runs (a real function may have been taken meanwhile, and it could not seed). The one
  way around: drawing from the private ``random._inst`` directly, in a process before its first
  draw. ``random.seed`` and ``random.setstate`` stand-ins leave the row's seed aside, as they
  would override it. Stand-ins taken at import keep a check (about 60 ns a call).
- Seeding ``random`` is the C-level seeding under ``random.seed`` (``_random.Random.seed`` on the
  module's instance, then ``gauss_next = None``, which is all ``random.Random.seed`` does with an
  int), skipping the Python-level wrapper. What is left is CPython's own initialisation of the
  Mersenne Twister from a key (about 1,900 dependent steps, ~4-5 µs): the floor of seeding
  ``random`` exactly (see bench/seeding.py), paid only by processes whose rows draw.
- NumPy is not imported to be seeded. While ``numpy.random`` is not loaded nobody can draw from
  it, so there is nothing to seed: a row pays a dict lookup. When f (or a module it imports)
  loads ``numpy.random`` during a row, an import hook seeds NumPy's global generator from that
  row's seed as soon as the module has been executed, before anything can draw from it; later
  rows seed it before they run. (NumPy 2 loads ``numpy.random`` on first use of
  ``np.random``, not at ``import numpy``: the hook covers that too.) Once loaded, the call is
  ``RandomState.seed`` on the global instance, which is what ``numpy.random.seed`` calls.
- The seeds of a chunk's rows are computed in one go (``row_seeds``).
"""

from __future__ import annotations

import sys
import threading
from array import array
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

_MASK64 = 0xFFFFFFFFFFFFFFFF
_GAMMA = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def row_seed(job_seed: int, row: int) -> int:
    """The seed of a row: splitmix64 of (job seed, row index), cut to 32 bits.

    It depends only on the job's seed and the row's index, never on how rows are split into tasks.
    """
    z = (job_seed + (row + 1) * _GAMMA) & _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    return (z ^ (z >> 31)) & 0xFFFFFFFF


def row_seeds(job_seed: int, rows: Sequence[int]) -> List[int]:
    """``[row_seed(job_seed, r) for r in rows]``, about four times faster for a chunk.

    Every row is a 128-bit lane of one big integer, its value in the low 64 bits: each step of
    splitmix64 is then one operation on the whole chunk. A product of two 64-bit numbers fits in
    its lane, and the lanes are cut back to 64 bits (``& mask``) before every multiplication, so
    nothing a shift or a product spills into a neighbour's high half reaches its low half.
    """
    n = len(rows)
    if n < 8:
        return [row_seed(job_seed, r) for r in rows]
    lanes = array("Q", bytes(16 * n))
    lanes[0::2] = array("Q", [r + 1 for r in rows])
    if sys.byteorder == "big":  # arrays hold native words; the big integer is read little-endian
        lanes.byteswap()
    z = int.from_bytes(lanes.tobytes(), "little")
    mask = int.from_bytes((b"\xff" * 8 + bytes(8)) * n, "little")
    js = int.from_bytes(((job_seed & _MASK64).to_bytes(8, "little") + bytes(8)) * n, "little")
    z = (((z * _GAMMA) & mask) + js) & mask
    z = (((z ^ (z >> 30)) & mask) * _MIX1) & mask
    z = (((z ^ (z >> 27)) & mask) * _MIX2) & mask
    z ^= z >> 31
    words = array("I", z.to_bytes(16 * n, "little"))
    if sys.byteorder == "big":
        words.byteswap()
    return words[0::4].tolist()


class _Scratch:
    """Where the fallback below puts a ``gauss_next`` nobody reads."""

    gauss_next: Any = None


def _public_seed(inst: Any, s: int) -> None:
    import random

    random.seed(s)


def python_seeding() -> Tuple[Callable[[Any, int], None], Any]:
    """``(seed, inst)``: ``seed(inst, s); inst.gauss_next = None`` does what ``random.seed(s)``
    does. The C-level call when ``random.seed`` is the standard library's own on the module's
    instance (always, unless someone replaced it); else ``random.seed`` itself."""
    import _random
    import random

    inst = random._inst
    bound = random.seed
    if _seeder is not None and _seeder.lazy is not None:
        bound = _seeder.lazy.real(bound, "seed")
    if (type(inst) is random.Random and getattr(bound, "__self__", None) is inst
            and getattr(bound, "__func__", None) is random.Random.seed):
        return _random.Random.seed, inst
    return _public_seed, _Scratch()


def numpy_seeding(npr: Optional[ModuleType] = None) -> Optional[Callable[[int], None]]:
    """What ``numpy.random.seed(s)`` calls, or None while ``numpy.random`` is not loaded.

    ``numpy.random.seed`` seeds the global ``RandomState`` (``RandomState.seed``: the legacy
    Mersenne Twister seeding and the cached Gaussian dropped) when its bit generator is the
    default MT19937; else (``numpy.random.set_bit_generator``) it does something else, and that
    is what is returned then."""
    if npr is None:
        npr = sys.modules.get("numpy.random")
        if npr is None:
            return None
    rs: Any = getattr(getattr(npr, "mtrand", None), "_rand", None)
    mt19937 = getattr(npr, "MT19937", None)
    if mt19937 is not None and type(getattr(rs, "_bit_generator", None)) is mt19937:
        return rs.seed
    return npr.seed


class LazyRandom:
    """``random``'s module functions as stand-ins that seed the generator at the first draw
    (see the module's docstring). ``armed``: no draw yet, rows need not be seeded."""

    def __init__(self, seeder: "Seeder", seed: Callable[[Any, int], None], inst: Any,
                 module: ModuleType) -> None:
        self.armed = True
        self._seeder, self._seed, self._inst, self._module = seeder, seed, inst, module
        self._lock = threading.Lock()
        self._reals: Dict[str, Any] = {
            name: value for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__self__", None) is inst}
        self._stand_ins = {name: self._stand_in(name, real) for name, real in self._reals.items()}
        vars(module).update(self._stand_ins)

    def _stand_in(self, name: str, real: Any) -> Callable[..., Any]:
        lazy = self
        seeds = name not in ("seed", "setstate")  # those set the state themselves: the row's seed goes

        def stand_in(*args: Any, **kwargs: Any) -> Any:
            if lazy.armed:
                lazy.disarm(seed=seeds)
            return real(*args, **kwargs)

        stand_in.__name__ = stand_in.__qualname__ = name
        stand_in.__doc__ = real.__doc__
        stand_in.__wrapped__ = real  # type: ignore[attr-defined]
        return stand_in

    def real(self, value: Any, name: str) -> Any:
        """The real function for ``value`` if it is the stand-in of ``name``, else ``value``."""
        return self._reals[name] if value is self._stand_ins.get(name) else value

    def disarm(self, seed: bool) -> None:
        """The first draw (or seed, setstate): seed from the running row's seed (outside a row,
        at f's module's import: no seed), put the real functions back; rows are seeded from
        now on. Under a lock: another thread's draw waits for the seed."""
        with self._lock:
            if not self.armed:
                return
            vars(self._module).update(self._reals)
            current = self._seeder.current
            if seed and current is not None:
                self._seed(self._inst, current)
                self._inst.gauss_next = None
            self.armed = False


class _NeverLazy:
    armed = False


NEVER_LAZY = _NeverLazy()


class Seeder:
    """The process's seeding state: the running row's seed, for the import hook and the
    stand-ins of ``random``."""

    def __init__(self) -> None:
        self.current: Optional[int] = None  # the seed of the row running now
        self.hooked = False  # numpy.random was loaded through the hook
        self.finder = _SeedOnImport(self)
        self.lazy: Optional[LazyRandom] = None

    def seed_random_lazily(self) -> None:
        """Put the stand-ins of ``random`` in place (once; only over the standard library's own
        functions: if ``random.seed`` was replaced, rows are seeded through it before they run)."""
        import random

        if self.lazy is None:
            seed, inst = python_seeding()
            if inst is random._inst:
                self.lazy = LazyRandom(self, seed, inst, random)

    def front(self) -> None:
        """Put the hook first on ``sys.meta_path`` (again, if an import hook went before it)."""
        if not sys.meta_path or sys.meta_path[0] is not self.finder:
            try:
                sys.meta_path.remove(self.finder)
            except ValueError:
                pass
            sys.meta_path.insert(0, self.finder)

    def numpy_loaded(self, module: ModuleType) -> None:
        """``numpy.random`` has just been executed: seed it from the running row's seed."""
        self.hooked = True
        if self.current is not None:
            seed = numpy_seeding(module)
            if seed is not None:
                seed(self.current)

    def unhooked(self, before: int) -> None:
        """``numpy.random`` was loaded by a row before row ``before``, and if not through the
        hook (another import hook went first), that row's NumPy draws were not seeded: said
        once, in the task's log."""
        if not self.hooked:
            self.hooked = True
            print(f"slurm_apply: numpy.random was loaded in the row before row {before} of this "
                  "process by an import hook that "
                  "ran before slurm_apply's, so NumPy's global generator was not seeded for that "
                  "row (later rows are); install that hook before the rows run (at import of "
                  "f's module) to keep every row reproducible", flush=True)


class _SeedOnImport:
    """A ``sys.meta_path`` finder that only watches ``numpy.random``: it finds it through the
    finders after it and wraps its loader, to seed the module right after it executes."""

    def __init__(self, seeder: Seeder) -> None:
        self.seeder = seeder

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "numpy.random":
            return None
        finders = sys.meta_path
        after = finders[finders.index(self) + 1:] if self in finders else finders
        for finder in after:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _SeedAfterExec(spec.loader, self.seeder)
        return spec


class _SeedAfterExec:
    """The real loader of ``numpy.random``; seeds the module once it has executed, then puts
    the real loader back in the module's ``__loader__`` and ``__spec__``."""

    def __init__(self, loader: Any, seeder: Seeder) -> None:
        self.loader = loader
        self.seeder = seeder

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        module.__loader__ = self.loader
        spec = getattr(module, "__spec__", None)
        if spec is not None:
            spec.loader = self.loader
        self.seeder.numpy_loaded(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


_seeder: Optional[Seeder] = None


def seeder() -> Seeder:
    """This process's Seeder, its import hook installed (at first use)."""
    global _seeder
    if _seeder is None:
        _seeder = Seeder()
    _seeder.front()
    return _seeder
