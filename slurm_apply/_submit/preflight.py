"""The pre-flight: the payload loaded as the nodes will load it, before anything is submitted.

Cold (:class:`Preflight`): an interpreter starts before the payload is written, imports the
packages and the modules of f and the objects while the buffers are written, and loads the
payload when told to.

Warm (:class:`WarmPreflight`, the default; ``SLURM_APPLY_WARM_PREFLIGHT=0`` turns it off): the
first call starts such an interpreter (``python -m slurm_apply._node --preflight-warm``) and
keeps it: it imports the packages and the user's modules once, then waits; each call it forks a
process that loads that call's payload and reports, so no load ever happens in a process that
has seen another payload, and a call no longer waits for the imports. It is replaced when a
module file it imported changed (mtime or size) or a new file would shadow a module it was asked
for, when the interpreter, directory, environment (PYTHONPATH included; variables that only name
the moment, such as pytest's ``PYTEST_CURRENT_TEST``, aside) or ``pkgs`` differ, or when it
died. It ends with this process (its stdin closes), runs in a session of its own (a Ctrl-C at
the terminal is this process's, not its), serves one call at a time (a call made while another
thread's is under way uses a cold one), and any trouble with it makes the call fall back
to a cold pre-flight.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import types
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

from .._launch import write as _submit
from .._errors import PreflightError


def warm_modules(f: Any, objects: Mapping[str, Any]) -> List[str]:
    """Modules that loading the payload will import, as far as one can tell without pickling:
    those of f and of the objects (add_objects, more_args). The pre-flight imports them while
    it waits for the payload; any that fails there is left for the load itself to report."""
    values = list(objects.values())
    while isinstance(f, functools.partial):
        values += list(f.keywords.values())
        f = f.func
    names = {getattr(f, "__module__", None)} | {type(v).__module__ for v in values}
    names |= _modules_named_by(f)
    return sorted(n for n in names if isinstance(n, str) and n not in ("__main__", "builtins"))


def _modules_named_by(f: Any) -> Set[str]:
    """The modules of the globals that f's code (nested functions' included) names: a function
    that travels by value (a notebook's, a script's) takes them along by reference, e.g. ``pd``."""
    code, glb = getattr(f, "__code__", None), getattr(f, "__globals__", None)
    if code is None or not isinstance(glb, dict):
        return set()
    out: Set[str] = set()
    codes = [code]
    while codes:
        c = codes.pop()
        codes += [k for k in c.co_consts if isinstance(k, types.CodeType)]
        for name in c.co_names:
            value = glb.get(name)
            try:
                module = value.__name__ if isinstance(value, types.ModuleType) else \
                    getattr(value, "__module__", None)
            except Exception:  # an object whose attributes raise: only a guess is lost
                continue
            if isinstance(module, str) and value is not None:
                out.add(module)
    return out


def _environment() -> Dict[str, str]:
    """The environment of the pre-flight interpreter: this process's, with the caller's script
    directory put first on PYTHONPATH, as the nodes get it."""
    env = dict(os.environ)
    pp = _submit.caller_pythonpath()
    if pp:
        env["PYTHONPATH"] = pp + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


#: Variables that change while a process runs without changing what an import does: pytest names
#: the running test in one, so a test suite that calls slurm_apply would otherwise get a new
#: interpreter, imports and all, for every test.
VOLATILE = frozenset({"PYTEST_CURRENT_TEST"})


def _failed(python: str, returncode: int, stderr: str) -> PreflightError:
    err = stderr.strip().splitlines()
    last = err[0] if err else f"exit code {returncode}"
    return PreflightError(
        f"the pickled function and objects do not load in a fresh Python ({python}), so "
        f"they would fail on every node: {last}. Typical causes: f or a class it uses is "
        "defined in a module the nodes cannot import (put it in an importable module or define "
        "it in the notebook/script itself), or pkgs names a module that fails to import. "
        "Full error:\n" + stderr.strip()[-3000:])


class Preflight:
    """Load the payload with the interpreter the nodes will run, as they will, in a fresh process.

    Started before the payload is written: the interpreter starts and imports the packages
    while the buffers are being written, then loads the payload when told to (:meth:`go`),
    while the rows are being written.
    """

    def __init__(self, payload: Path, pkgs: Sequence[str], warm: Sequence[str] = ()) -> None:
        env = _environment()
        self.python = sys.executable
        self.proc = subprocess.Popen(
            [self.python, "-m", "slurm_apply._node", "--preflight-when-told", str(payload),
             ",".join(warm), *pkgs],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=env, cwd=os.getcwd())

    def go(self) -> None:
        """The payload is written: load it."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it failed already (a package would not import)
            self.proc.stdin.write("go\n")
            self.proc.stdin.close()

    def _ended(self) -> str:
        """Wait for the process; what it printed on stderr (its only pipe besides stdin)."""
        assert self.proc.stdin is not None and self.proc.stderr is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        with self.proc.stderr:
            stderr = self.proc.stderr.read()
        self.proc.wait()
        return stderr

    def result(self) -> None:
        stderr = self._ended()
        if self.proc.returncode == 0:
            return
        raise _failed(self.python, self.proc.returncode, stderr)

    def cancel(self) -> None:
        if self.proc.returncode is None:  # still running: an earlier step failed
            self.proc.kill()
            self._ended()


class _Server:
    """This process's warm pre-flight interpreter, if any, and what it was started for."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # held from a call's start to its result
        self.proc: Optional["subprocess.Popen[str]"] = None
        self.key: Optional[Tuple[Any, ...]] = None

    def stop(self) -> None:
        """End the interpreter (and a load under way), and reap it: no zombie is left."""
        proc, self.proc, self.key = self.proc, None, None
        if proc is None:
            return
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGTERM)  # it kills and reaps its forked load
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)  # its own session: it and its fork
                proc.wait()
        with contextlib.suppress(OSError):  # whatever is left of its process group (ESRCH: none)
            os.killpg(proc.pid, signal.SIGKILL)

    def forget_in_child(self) -> None:
        """After os.fork(), in the child: the interpreter is the parent's. Drop it without
        touching it, and let go of the child's copies of its pipes (pointed at /dev/null, so
        that the objects still holding those descriptors close nothing of anyone else's), so
        that it still ends when the parent does."""
        proc, self.proc, self.key = self.proc, None, None
        self.lock = threading.Lock()  # another thread may have held it at the fork
        if proc is None:
            return
        null = os.open(os.devnull, os.O_RDWR)
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError, ValueError):
                if pipe is not None:
                    os.dup2(null, pipe.fileno())
        os.close(null)
        proc.returncode = 0  # never waited for here: it is not this process's child


_SERVER = _Server()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _SERVER.forget_in_child())


@atexit.register
def _stop_at_exit() -> None:
    """End the interpreter as this one exits, and reap it: an orphan's zombie would wait for PID
    1, which not every container's init reaps. (Killed, this process closes its stdin all the
    same, and it ends by itself.) A call still under way in another thread is left alone."""
    if _SERVER.proc is not None and _SERVER.lock.acquire(blocking=False):
        try:
            _SERVER.stop()
        finally:
            _SERVER.lock.release()


def warm_pid() -> Optional[int]:
    """The process id of the warm pre-flight interpreter, if one is up (for tests and benches)."""
    proc = _SERVER.proc
    return proc.pid if proc is not None and proc.poll() is None else None


def _warm_enabled() -> bool:
    return os.environ.get("SLURM_APPLY_WARM_PREFLIGHT", "1").strip().lower() not in ("0", "false", "no", "off")


class WarmPreflight:
    """One call's load in the warm interpreter (see the module's docstring); the same interface
    as :class:`Preflight`. Started while the lock is held; :meth:`result` and :meth:`cancel`
    release it."""

    def __init__(self, payload: Path, pkgs: Sequence[str], warm: Sequence[str]) -> None:
        self.payload, self.pkgs, self.warm = payload, list(pkgs), list(warm)
        self.lock: Optional[threading.Lock] = _SERVER.lock  # held by the caller, released once
        self.python = sys.executable
        self.done = False
        self.cold: Optional[Preflight] = None  # the fallback, once there was trouble
        env = _environment()
        key = (self.python, os.getcwd(), tuple(sorted(kv for kv in env.items() if kv[0] not in VOLATILE)),
               tuple(self.pkgs))
        self.fresh_pending = False
        srv = _SERVER
        if srv.proc is not None and (srv.key != key or srv.proc.poll() is not None):
            srv.stop()
        if srv.proc is not None:
            try:
                self._send({"op": "call", "warm": self.warm})
                fresh = self._read().get("fresh") is True
            except Exception:  # it died meanwhile, or broke: a new one
                fresh = False
            if not fresh:
                srv.stop()
        if srv.proc is None:
            srv.proc = subprocess.Popen(
                [self.python, "-m", "slurm_apply._node", "--preflight-warm", ",".join(self.warm),
                 *self.pkgs],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                text=True, env=env, cwd=key[1], start_new_session=True)
            srv.key = key
            self._send({"op": "call", "warm": self.warm})
            self.fresh_pending = True  # read once it has imported, at result(): not waited for

    def _send(self, message: Dict[str, Any]) -> None:
        proc = _SERVER.proc
        assert proc is not None and proc.stdin is not None
        proc.stdin.write(json.dumps(message) + "\n")
        proc.stdin.flush()

    def _read(self) -> Dict[str, Any]:
        proc = _SERVER.proc
        assert proc is not None and proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise EOFError("the warm pre-flight interpreter ended")
        reply = json.loads(line)
        if not isinstance(reply, dict):
            raise ValueError(f"the warm pre-flight interpreter answered {line!r}")
        return reply

    def go(self) -> None:
        """The payload is written: load it."""
        try:
            self._send({"op": "go", "payload": str(self.payload)})
        except Exception:  # it ended or broke: the result comes from a cold pre-flight
            self._fall_back()

    def _fall_back(self) -> None:
        _SERVER.stop()
        if self.cold is None:
            self.cold = Preflight(self.payload, self.pkgs, self.warm)
            self.cold.go()

    def result(self) -> None:
        try:
            if self.cold is None:
                try:
                    if self.fresh_pending:
                        self.fresh_pending = False
                        if not self._read().get("fresh"):  # a module changed while it imported
                            raise EOFError("stale from the start")
                    reply = self._read()
                    code, stderr = int(reply["code"]), str(reply["stderr"])
                except Exception:
                    self._fall_back()
                else:
                    self.done = True
                    if code != 0:
                        raise _failed(self.python, code, stderr)
                    return
            assert self.cold is not None
            self.done = True
            self.cold.result()
        finally:
            if not self.done:  # interrupted (Ctrl-C) mid-answer: what is left in the pipe is
                _SERVER.stop()  # unknown, so the interpreter goes, while the lock is still ours
            self._release()

    def cancel(self) -> None:
        try:
            if self.cold is not None:
                self.cold.cancel()
            if not self.done and self.lock is not None:  # a load may be under way: end it with
                _SERVER.stop()  # its interpreter (the lock is ours still, so it is this call's)
        finally:
            self.done = True
            self._release()

    def _release(self) -> None:
        lock, self.lock = self.lock, None
        if lock is not None:
            lock.release()


def start(payload: Path, pkgs: Sequence[str], warm: Sequence[str] = ()) -> Union[Preflight, WarmPreflight]:
    """Start the pre-flight of one call: the warm one when it can be had now, else a cold one."""
    if _warm_enabled() and _SERVER.lock.acquire(blocking=False):
        try:
            return WarmPreflight(payload, pkgs, warm)
        except BaseException as exc:  # any trouble with the warm one: the cold one, as before
            _SERVER.stop()
            _SERVER.lock.release()
            if not isinstance(exc, Exception):
                raise
    return Preflight(payload, pkgs, warm)
