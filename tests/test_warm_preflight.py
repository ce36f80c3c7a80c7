"""The warm pre-flight (issue 17): from the second call in a session the payload is loaded in a
process forked from an interpreter that has already imported the packages and the user's
modules, so the call no longer waits for those imports; every guarantee of the cold pre-flight
stays. No cluster: the calls write their job directory and do not submit."""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pandas as pd
import pytest

from slurm_apply import PreflightError, slurm_apply
from slurm_apply._submit import preflight

PANDAS_MODULE = "import pandas as pd\n\n\ndef f(a, b):\n    return a + b\n"


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The user's directory, where their modules are and the call is made (the pre-flight runs
    there too, so it imports them as the nodes will); the modules made here are forgotten after."""
    before = set(sys.modules)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("SLURM_APPLY_WARM_PREFLIGHT", raising=False)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("sa_warm_"):
            del sys.modules[name]


def _module(work: Path, name: str, source: str) -> Any:
    path = work / f"{name}.py"
    path.write_text(source)
    importlib.invalidate_caches()
    return importlib.import_module(name)


def _rewrite(work: Path, name: str, source: str) -> None:
    """Edit a module file as an editor would: new content, a new mtime."""
    path = work / f"{name}.py"
    old = path.stat()
    path.write_text(source)
    # Python's own .pyc check compares the whole seconds of the mtime and the size: a new size
    # keeps a fresh interpreter from mistaking the new file for the old within the same second.
    assert path.stat().st_size != old.st_size


def _call(f: Callable[..., Any], name: str, **kw: Any) -> Any:
    df = kw.pop("df", None)
    if df is None:
        df = pd.DataFrame({"a": range(100_000), "b": range(100_000)})
    return slurm_apply(f, df, backend="local", submit=False, jobname=name, **kw)


@pytest.fixture
def interpreters(monkeypatch: pytest.MonkeyPatch) -> List[List[str]]:
    """The command lines of the pre-flight interpreters started from here on."""
    started: List[List[str]] = []
    real = subprocess.Popen

    class Counting(real):  # type: ignore[misc, valid-type]
        def __init__(self, args: Any, *a: Any, **kw: Any) -> None:
            if isinstance(args, list) and "slurm_apply._node" in args:
                started.append([str(x) for x in args])
            super().__init__(args, *a, **kw)

    monkeypatch.setattr(subprocess, "Popen", Counting)
    return started


def _timed(f: Callable[..., Any], name: str) -> float:
    t0 = time.perf_counter()
    _call(f, name)
    return time.perf_counter() - t0


def test_the_second_call_starts_no_interpreter_and_beats_a_cold_one(
        work: Path, interpreters: List[List[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _module(work, "sa_warm_pd", PANDAS_MODULE)
    monkeypatch.setenv("SLURM_APPLY_WARM_PREFLIGHT", "0")
    cold = min(_timed(mod.f, f"cold{i}") for i in range(2))  # today's pre-flight
    assert len(interpreters) == 2
    monkeypatch.delenv("SLURM_APPLY_WARM_PREFLIGHT")
    _call(mod.f, "first")  # starts the warm interpreter, which imports pandas and the module
    assert len(interpreters) == 3 and "--preflight-warm" in interpreters[2]
    pid = preflight.warm_pid()
    assert pid is not None
    warm = min(_timed(mod.f, f"warm{i}") for i in range(3))
    assert len(interpreters) == 3, interpreters[3:]  # no interpreter started by the later calls
    assert preflight.warm_pid() == pid
    assert warm < cold / 3, (warm, cold)
    assert sorted(p.name for p in work.iterdir() if p.name.startswith("_rslurm_")) == [
        "_rslurm_cold0", "_rslurm_cold1", "_rslurm_first", "_rslurm_warm0", "_rslurm_warm1",
        "_rslurm_warm2"]


BOX_V1 = textwrap.dedent("""
    class Box:
        def __init__(self, v):
            self.v = v

        def __setstate__(self, state):
            self.__dict__.update(state)


    def use(a, b):
        return a + b + BOX.v
""")


def test_an_edited_module_is_loaded_as_the_new_code(work: Path) -> None:
    """The warm interpreter imported version 1; a fresh Python (the nodes) would load version 2,
    whose objects refuse to unpickle: the pre-flight must load version 2 too."""
    mod = _module(work, "sa_warm_box", BOX_V1)
    objects = {"BOX": mod.Box(1)}
    _call(mod.use, "v1", add_objects=objects)
    pid = preflight.warm_pid()
    _rewrite(work, "sa_warm_box", BOX_V1.replace(
        "self.__dict__.update(state)", "raise ValueError('version 2 refuses the old boxes')"))
    with pytest.raises(PreflightError, match="version 2 refuses the old boxes"):
        _call(mod.use, "v2", add_objects=objects)
    assert not (work / "_rslurm_v2").exists()
    assert preflight.warm_pid() not in (None, pid)  # a new interpreter, which imported version 2
    _rewrite(work, "sa_warm_box", BOX_V1 + "\n# version 3 loads again\n")
    _call(mod.use, "v3", add_objects=objects)


def test_a_module_edited_to_raise_on_import_fails_the_preflight(work: Path) -> None:
    mod = _module(work, "sa_warm_breaks", PANDAS_MODULE)
    _call(mod.f, "fine")
    _rewrite(work, "sa_warm_breaks", "raise ImportError('broken on purpose')\n" + PANDAS_MODULE)
    with pytest.raises(PreflightError) as info:
        _call(mod.f, "broken")
    message = str(info.value)
    assert message.startswith("the pickled function and objects do not load in a fresh Python")
    assert "broken on purpose" in message
    assert not (work / "_rslurm_broken").exists()


def _first_line(call: Callable[[], Any]) -> str:
    with pytest.raises(PreflightError) as info:
        call()
    return str(info.value).splitlines()[0]


@pytest.mark.parametrize("source, expected", [
    ("import sa_warm_nowhere_to_be_found\n", "No module named 'sa_warm_nowhere_to_be_found'"),
    ("raise SystemExit('this module exits')\n", "SystemExit: this module exits"),
    ("raise RuntimeError('import failed')\n", "RuntimeError: import failed"),
])
def test_a_payload_that_will_not_load_gives_the_cold_preflight_s_error(
        work: Path, monkeypatch: pytest.MonkeyPatch, source: str, expected: str) -> None:
    ok = _module(work, "sa_warm_ok", PANDAS_MODULE)
    _call(ok.f, "ok")  # the warm interpreter is up
    pid = preflight.warm_pid()
    # A module this process imported before it broke: the fresh interpreter imports it as it is.
    bad = _module(work, "sa_warm_bad", PANDAS_MODULE)
    _rewrite(work, "sa_warm_bad", source + PANDAS_MODULE)
    warm = _first_line(lambda: _call(bad.f, "bad_warm", df=pd.DataFrame({"a": [1], "b": [2]})))
    assert preflight.warm_pid() == pid  # the warm interpreter did not need replacing
    monkeypatch.setenv("SLURM_APPLY_WARM_PREFLIGHT", "0")
    cold = _first_line(lambda: _call(bad.f, "bad_cold", df=pd.DataFrame({"a": [1], "b": [2]})))
    assert warm == cold
    assert expected in warm
    assert sorted(p.name for p in work.iterdir() if p.name.startswith("_rslurm_")) == ["_rslurm_ok"]


def test_a_pickle_that_fails_to_load_is_reported_and_the_next_call_still_works(work: Path) -> None:
    mod = _module(work, "sa_warm_pickle", BOX_V1.replace(
        "self.__dict__.update(state)", "raise ValueError('this box never loads')"))
    _call(mod.use, "plain", add_objects={"BOX": 1})
    pid = preflight.warm_pid()
    with pytest.raises(PreflightError, match="ValueError: this box never loads"):
        _call(mod.use, "box", add_objects={"BOX": mod.Box(1)})
    _call(mod.use, "again", add_objects={"BOX": 2})
    assert preflight.warm_pid() == pid


def _reaped(pid: int) -> bool:
    """Gone, not a zombie of ours."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_a_killed_warm_interpreter_is_replaced(work: Path) -> None:
    mod = _module(work, "sa_warm_killed", PANDAS_MODULE)
    _call(mod.f, "before")
    pid = preflight.warm_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.1)
    _call(mod.f, "after")
    new = preflight.warm_pid()
    assert new not in (None, pid)
    assert _reaped(pid)
    _call(mod.f, "again")
    assert preflight.warm_pid() == new


def test_another_directory_or_environment_gets_its_own_interpreter(
        work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _module(work, "sa_warm_env", PANDAS_MODULE)
    _call(mod.f, "one")
    first = preflight.warm_pid()
    monkeypatch.setenv("SA_WARM_TEST_VARIABLE", "changed")
    _call(mod.f, "two")
    second = preflight.warm_pid()
    assert second not in (None, first) and _reaped(first)  # type: ignore[arg-type]
    other = work / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    _call(mod.f, "three")
    assert preflight.warm_pid() not in (None, second) and _reaped(second)  # type: ignore[arg-type]


def test_a_variable_that_only_names_the_running_test_keeps_the_interpreter(
        work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest sets PYTEST_CURRENT_TEST anew for every test: a user's own test suite that calls
    slurm_apply (and ours) would otherwise start a new interpreter, imports and all, per test."""
    mod = _module(work, "sa_warm_volatile", PANDAS_MODULE)
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "tests/test_a.py::one (call)")
    _call(mod.f, "one")
    first = preflight.warm_pid()
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "tests/test_a.py::two (call)")
    _call(mod.f, "two")
    assert first is not None and preflight.warm_pid() == first


def test_calls_from_several_threads_at_once_each_get_their_own_answer(work: Path) -> None:
    ok = _module(work, "sa_warm_threads", PANDAS_MODULE)
    _call(ok.f, "warmup")
    bad = _module(work, "sa_warm_threads_bad", PANDAS_MODULE)
    _rewrite(work, "sa_warm_threads_bad", "raise RuntimeError('thread bad')\n" + PANDAS_MODULE)
    outcome: Dict[str, str] = {}

    def call(name: str, f: Callable[..., Any]) -> None:
        try:
            _call(f, name, df=pd.DataFrame({"a": [1, 2], "b": [3, 4]}))
            outcome[name] = "ok"
        except PreflightError as exc:
            outcome[name] = str(exc).splitlines()[0]

    threads = [threading.Thread(target=call, args=(f"t{i}", bad.f if i == 2 else ok.f)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert {k: v for k, v in outcome.items() if k != "t2"} == {f"t{i}": "ok" for i in (0, 1, 3, 4)}
    assert "RuntimeError: thread bad" in outcome["t2"]
    assert not (work / "_rslurm_t2").exists()


def test_no_preflight_process_outlives_the_caller(tmp_path: Path) -> None:
    (tmp_path / "sa_warm_exit_mod.py").write_text(PANDAS_MODULE)
    script = tmp_path / "session.py"
    script.write_text(textwrap.dedent("""
        import pandas as pd
        from slurm_apply import slurm_apply
        from slurm_apply._submit import preflight
        import sa_warm_exit_mod

        for i in range(2):
            slurm_apply(sa_warm_exit_mod.f, pd.DataFrame({"a": [1], "b": [2]}), backend="local",
                        submit=False, jobname=f"exit{i}")
        print(preflight.warm_pid(), flush=True)
    """))
    env = {k: v for k, v in os.environ.items() if k != "SLURM_APPLY_WARM_PREFLIGHT"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    pid = int(proc.stdout.split()[-1])
    # Ended and reaped by the caller as it exited: not even a zombie is left (an orphan's
    # zombie would wait for PID 1, which not every container's init reaps).
    assert not os.path.exists(f"/proc/{pid}")


def test_no_preflight_process_outlives_a_caller_that_is_killed(tmp_path: Path) -> None:
    (tmp_path / "sa_warm_kill_mod.py").write_text(PANDAS_MODULE)
    script = tmp_path / "session.py"
    script.write_text(textwrap.dedent("""
        import time
        import pandas as pd
        from slurm_apply import slurm_apply
        from slurm_apply._submit import preflight
        import sa_warm_kill_mod

        slurm_apply(sa_warm_kill_mod.f, pd.DataFrame({"a": [1], "b": [2]}), backend="local",
                    submit=False, jobname="killed")
        print(preflight.warm_pid(), flush=True)
        time.sleep(60)
    """))
    env = {k: v for k, v in os.environ.items() if k != "SLURM_APPLY_WARM_PREFLIGHT"}
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout is not None
        pid = int(proc.stdout.readline())
        assert _running(pid)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(pid)


def _running(pid: int) -> bool:
    """A live process (not a zombie) with the pre-flight's command line."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and b"--preflight-warm" in cmdline


def test_a_forked_child_gets_its_own_interpreter_and_leaves_the_parent_s_alone(work: Path) -> None:
    """After os.fork() (multiprocessing's default here) the warm interpreter is the parent's:
    the child starts its own, and neither writes into the other's pipes."""
    mod = _module(work, "sa_warm_fork", PANDAS_MODULE)
    _call(mod.f, "parent1")
    pid = preflight.warm_pid()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (reported through the pipe)
        code = 1
        try:
            os.close(read)
            _call(mod.f, "child", df=pd.DataFrame({"a": [1], "b": [2]}))
            mine = preflight.warm_pid()
            os.write(write, f"{mine}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as fh:
        theirs = fh.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert theirs.isdigit() and int(theirs) not in (pid, child)
    _call(mod.f, "parent2")
    assert preflight.warm_pid() == pid  # still the parent's, untouched
    deadline = time.monotonic() + 10
    while _running(int(theirs)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(int(theirs))  # the child's own ended with the child


def test_a_forked_child_does_not_keep_the_parent_s_interpreter_alive(tmp_path: Path) -> None:
    """A child forked after a call (a multiprocessing worker) that outlives its parent must not
    hold the parent's warm interpreter open: it ends with the parent."""
    (tmp_path / "sa_warm_orphan_mod.py").write_text(PANDAS_MODULE)
    script = tmp_path / "session.py"
    script.write_text(textwrap.dedent("""
        import os, time
        import pandas as pd
        from slurm_apply import slurm_apply
        from slurm_apply._submit import preflight
        import sa_warm_orphan_mod

        slurm_apply(sa_warm_orphan_mod.f, pd.DataFrame({"a": [1], "b": [2]}), backend="local",
                    submit=False, jobname="orphan")
        child = os.fork()
        if child == 0:
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 1)  # not the pipes the test reads to their end
            os.dup2(null, 2)
            time.sleep(8)
            os._exit(0)
        print(preflight.warm_pid(), child, flush=True)
    """))
    env = {k: v for k, v in os.environ.items() if k != "SLURM_APPLY_WARM_PREFLIGHT"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    pid, child = map(int, proc.stdout.split()[-2:])
    try:
        deadline = time.monotonic() + 4
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state != "Z"  # the forked child still runs...
        assert not _running(pid)  # ...and the parent's pre-flight interpreter has ended
    finally:
        with contextlib.suppress(OSError):
            os.kill(child, signal.SIGKILL)


def test_a_module_the_load_imported_is_imported_once_for_the_later_calls(work: Path) -> None:
    """f travels by value (a notebook's) and reaches a module through a helper, which no one can
    tell before loading: the first load imports it, and the warm interpreter then does too, so
    later loads do not import it again."""
    log = work / "imports.log"
    _module(work, "sa_warm_learned", f"import os\nwith open({str(log)!r}, 'a') as fh:\n"
            "    fh.write(f'{os.getpid()}\\n')\nVALUE = 1\n")
    namespace: Dict[str, Any] = {"__name__": "__main__",
                                 "sa_warm_learned": sys.modules["sa_warm_learned"]}
    exec("def helper():\n    return sa_warm_learned.VALUE\n\n"
         "def f(a, b):\n    return a + b + helper()\n", namespace)
    log.write_text("")
    for i in range(4):
        _call(namespace["f"], f"learn{i}", df=pd.DataFrame({"a": [1], "b": [2]}))
    pids = log.read_text().split()
    assert len(pids) == 2, pids  # the first call's load, then the warm interpreter, once
    assert int(pids[1]) == preflight.warm_pid()


def test_a_call_interrupted_while_the_load_runs_leaves_nothing_behind(tmp_path: Path) -> None:
    """Ctrl-C while the forked load hangs in an import: the call raises KeyboardInterrupt, the
    load and its interpreter end, the job directory goes, and the next call works."""
    started = tmp_path / "started"
    (tmp_path / "sa_warm_hangs.py").write_text(
        f"import os, time\nopen({str(started)!r}, 'a').write(f'{{os.getpid()}}\\n')\ntime.sleep(60)\n")
    script = tmp_path / "session.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, time
        import pandas as pd
        from slurm_apply import slurm_apply
        from slurm_apply._submit import preflight

        def f(a, b):
            return a + b

        slurm_apply(f, pd.DataFrame({{"a": [1], "b": [2]}}), backend="local", submit=False,
                    jobname="fine")
        server = preflight.warm_pid()

        def helper():  # takes the module along by reference; only loading it tells
            return hangs.VALUE

        def bad(a, b):
            return helper()

        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("sa_warm_hangs", {str(tmp_path / "sa_warm_hangs.py")!r})
        hangs = importlib.util.module_from_spec(spec)  # not run here: only its name travels
        sys.modules["sa_warm_hangs"] = hangs

        def interrupt(*_):
            raise KeyboardInterrupt
        signal.signal(signal.SIGALRM, interrupt)
        signal.alarm(3)
        try:
            slurm_apply(bad, pd.DataFrame({{"a": [1], "b": [2]}}), backend="local", submit=False,
                        jobname="hangs")
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        del sys.modules["sa_warm_hangs"]
        print(server, os.path.exists("_rslurm_hangs"), flush=True)
        slurm_apply(f, pd.DataFrame({{"a": [1], "b": [2]}}), backend="local", submit=False,
                    jobname="after")
        print("after", flush=True)
    """))
    env = {k: v for k, v in os.environ.items() if k != "SLURM_APPLY_WARM_PREFLIGHT"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.split()
    assert out[0] == "interrupted" and out[2] == "False" and out[3] == "after", out
    loads = [int(p) for p in started.read_text().split()]
    assert len(loads) == 1 and loads[0] != int(out[1])  # the load hung in a process forked
    # for it (not in the warm interpreter, which could not know it would import the module)...
    assert not os.path.exists(f"/proc/{loads[0]}")  # ...which was killed and reaped
    assert not os.path.exists(f"/proc/{out[1]}")  # and so was its interpreter
