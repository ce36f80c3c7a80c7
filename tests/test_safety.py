"""The job directory is safe from other users, from hostile names, and from concurrent callers."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pandas as pd
import pytest

import slurm_apply
from slurm_apply import InputError, JobDirExistsError, SlurmJob, UnsafeJobDirError, slurm_apply as run
from slurm_apply._store import layout as jd
from slurm_apply._store import params, table
from rowfns import _double  # a light module: tasks import it (tests/rowfns.py)

PACKAGE = Path(slurm_apply.__file__).parent


def _nothing_pwned(*roots: Path) -> None:
    for root in roots:
        assert not [p for p in root.rglob("*") if p.name.startswith("pwned")], f"a command ran in {root}"


# ---------------------------------------------------------------------------------------------
# Who may open a job directory


def _written_job(parent: Path, name: str) -> Path:
    def f(x):
        return x

    return run(f, pd.DataFrame({"x": [1, 2]}), jobname=name, job_dir=parent, backend="local",
               submit=False, preflight=False).job_dir


def test_the_job_directory_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = _written_job(tmp_path, "private")
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(0o700)
    loose = [str(p) for p in [path, *path.rglob("*")] if p.stat().st_mode & 0o077]
    assert loose == []


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_from_dir_refuses_a_directory_owned_by_someone_else(tmp_path: Path) -> None:
    path = _written_job(tmp_path, "theirs")
    os.chown(path, 65534, 65534)
    with pytest.raises(UnsafeJobDirError, match=f"is owned by uid 65534, not by you \\(uid {os.getuid()}\\)") as info:
        SlurmJob.from_dir(path)
    assert isinstance(info.value, PermissionError)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_from_dir_refuses_a_pickle_owned_by_someone_else(tmp_path: Path) -> None:
    path = _written_job(tmp_path, "planted")
    os.chown(path / jd.PAYLOAD, 65534, 65534)
    with pytest.raises(UnsafeJobDirError, match="is owned by uid 65534"):
        SlurmJob.from_dir(path)


@pytest.mark.parametrize("mode", [0o770, 0o730, 0o707, 0o777])
def test_from_dir_refuses_a_directory_others_can_write(tmp_path: Path, mode: int) -> None:
    path = _written_job(tmp_path, "open")
    path.chmod(mode)
    with pytest.raises(UnsafeJobDirError, match=f"is writable by group or others \\(mode {mode:o}\\)"):
        SlurmJob.from_dir(path)


def test_from_dir_refuses_a_pickle_others_can_write(tmp_path: Path) -> None:
    path = _written_job(tmp_path, "rewritable")
    (path / jd.PARAMS_META).chmod(0o646)
    with pytest.raises(UnsafeJobDirError, match=re.escape(f"{path / jd.PARAMS_META} is owned by uid {os.getuid()} with mode 646")):
        SlurmJob.from_dir(path)


def test_from_dir_refuses_rows_others_can_write(tmp_path: Path) -> None:
    """The output table is rebuilt from s0's chunks, which are pickles too."""
    path = _written_job(tmp_path, "rows")
    jd.params_bin(path, 0).chmod(0o606)
    with pytest.raises(UnsafeJobDirError, match=re.escape(f"{jd.params_bin(path, 0)} is owned")):
        SlurmJob.from_dir(path)


def test_the_command_line_refuses_an_unsafe_directory_too(tmp_path: Path) -> None:
    path = _written_job(tmp_path, "cli")
    path.chmod(0o777)
    proc = subprocess.run([sys.executable, "-m", "slurm_apply", "status", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("Error: ") and "is writable by group or others (mode 777)" in proc.stderr


def test_from_dir_opens_a_directory_others_may_only_read(tmp_path: Path) -> None:
    path = _written_job(tmp_path, "readable")
    path.chmod(0o755)
    assert SlurmJob.from_dir(path).n_rows == 2


# ---------------------------------------------------------------------------------------------
# No shell anywhere


def test_the_package_never_runs_a_shell() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 5
    for path in sources:
        text = path.read_text()
        assert not re.search(r"shell\s*=\s*True", text), f"{path}: shell=True"
        assert "os.system" not in text and "os.popen" not in text, f"{path}: os.system / os.popen"
        for node in ast.walk(ast.parse(text, str(path))):
            if not isinstance(node, ast.Call):
                continue
            for kw in node.keywords:
                if kw.arg == "shell":
                    assert isinstance(kw.value, ast.Constant) and kw.value.value is False, \
                        f"{path}:{node.lineno}: shell= is not the constant False"
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                called = f"{func.value.id}.{func.attr}"
                assert called not in ("os.system", "os.popen", "subprocess.getoutput",
                                      "subprocess.getstatusoutput"), f"{path}:{node.lineno}: {called}"


# ---------------------------------------------------------------------------------------------
# Hostile names


@pytest.mark.parametrize("jobname", [
    "my job", "a;b", "it's", 'say"hi"', "$(touch pwned)", "`touch pwned`", "a\nb", "abc\n", "a\tb",
    "../escape", "a/b", "..", "a..b", ".hidden", "-rf", "a|b", "a&b", "a>b", "a*", "~user", "",
    "x" * 101, "ünï",
])
def test_a_hostile_jobname_is_refused(tmp_path: Path, jobname: str) -> None:
    with pytest.raises(InputError, match=re.escape(f"jobname {jobname!r} cannot be used")):
        run(_double, pd.DataFrame({"x": [1]}), jobname=jobname, job_dir=tmp_path, backend="local")
    assert list(tmp_path.iterdir()) == []


HOSTILE_DIRS = [
    "all of it 'sq' \"dq\" ;semi $(touch pwned) `touch pwned` #hash %a \\bs & | > *",
    "$(touch pwned)",
    "it's;rm",
]


@pytest.mark.parametrize("dirname", HOSTILE_DIRS)
def test_a_hostile_job_dir_and_working_directory_work_end_to_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dirname: str) -> None:
    parent = tmp_path / dirname
    parent.mkdir()
    workdir = tmp_path / f"cwd {dirname}"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # becomes the `cd` line of submit.sh

    def f(x):
        return x * 10

    job = run(f, pd.DataFrame({"x": [1, 2, 3, 4]}), jobname="hostile", job_dir=parent,
              nodes=2, cpus_per_node=1, backend="local")
    assert job.job_dir == parent / "_rslurm_hostile"
    status = job.wait(progress=False, timeout_s=60)
    assert status.state == "COMPLETED", status
    assert job.get_output()["result"].tolist() == [10, 20, 30, 40]
    # (the follow-up's log, s0_retry.out, may come a moment after the job has ended)
    names = {p.name for p in (job.job_dir / jd.LOGS).iterdir()} - {"s0_retry.out"}
    assert sorted(names) == ["s0_t0.out", "s0_t1.out"]
    assert SlurmJob.from_dir(job.job_dir).get_job_status().rows_done == 4
    _nothing_pwned(tmp_path, Path.cwd())


@pytest.mark.parametrize("dirname", ["new\nline", "carriage\rreturn"])
def test_a_job_dir_with_a_newline_is_refused(tmp_path: Path, dirname: str) -> None:
    parent = tmp_path / dirname
    parent.mkdir()
    with pytest.raises(InputError, match=r"^the job directory's path cannot go in the job script: .*"
                       r"a newline or other control character"):
        run(_double, pd.DataFrame({"x": [1]}), jobname="nl", job_dir=parent, backend="local")
    assert list(parent.iterdir()) == []


def test_hostile_option_values_are_quoted_and_run_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    nasty = "x 'sq' \"dq\" ; $(touch pwned) `touch pwned` \\ #h"

    def f(x):
        return x

    job = run(f, pd.DataFrame({"x": [1]}), jobname="opts", job_dir=tmp_path, backend="local",
              slurm_options={"comment": nasty, "p": "part;ition", "mail_user": "o'brien@example.org"})
    text = (job.job_dir / "submit.sh").read_text()
    assert '#SBATCH --comment="x \'sq\' \\"dq\\" ; $(touch pwned) `touch pwned` \\\\ #h"\n' in text
    assert '#SBATCH -p "part;ition"\n' in text
    assert "#SBATCH --mail-user=\"o'brien@example.org\"\n" in text
    check = subprocess.run(["bash", "-n", str(job.job_dir / "submit.sh")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert job.wait(progress=False, timeout_s=60).state == "COMPLETED"
    _nothing_pwned(tmp_path)


@pytest.mark.parametrize("value", ["ok\n#SBATCH --array=0-99999", "ok\nrm -rf ~", "a\rb"])
def test_an_option_value_with_a_newline_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(InputError, match=re.escape("slurm_options['comment']: the value")):
        run(_double, pd.DataFrame({"x": [1]}), jobname="nl", job_dir=tmp_path, backend="local",
            slurm_options={"comment": value})
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Concurrent callers


def _assert_complete_job_of(path: Path, winner: int) -> None:
    """The directory is exactly the winner's: manifest, table, payload and rows agree."""
    import cloudpickle

    manifest = jd.load_manifest(path)
    n = 3 + winner
    assert manifest.n_rows == n and manifest.submissions[0].n_rows == n
    assert manifest.submissions[0].state == "written"
    assert table.read(path)["x"].tolist() == list(range(n))
    with open(path / jd.PAYLOAD, "rb") as fh:
        f, objects = cloudpickle.load(fh)
    assert f(5) == (winner, 5) and objects == {}
    reader = params.ParamsReader(jd.params_bin(path, 0))
    rows = [r for c in range(len(reader)) for r in range(*reader.chunk(c)["rows"])]
    reader.close()
    assert rows == list(range(n))
    assert (path / "submit.sh").read_text().count("#SBATCH --array=") == 1
    assert not [p for p in path.rglob("*") if p.name.endswith(".tmp")], "a temporary file was left"


def test_racing_threads_one_wins_and_the_others_get_jobdirexistserror(tmp_path: Path) -> None:
    n = 6
    barrier = threading.Barrier(n)
    outcome: Dict[int, Any] = {}

    def caller(i: int) -> None:
        def f(x):
            return (i, x)

        df = pd.DataFrame({"x": range(3 + i)})
        barrier.wait()
        try:
            run(f, df, jobname="race", job_dir=tmp_path, backend="local", submit=False)
            outcome[i] = "won"
        except Exception as exc:  # recorded, then checked below
            outcome[i] = exc

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [i for i, o in outcome.items() if o == "won"]
    assert len(outcome) == n and len(winners) == 1, outcome
    losers = [o for o in outcome.values() if o != "won"]
    assert all(isinstance(o, JobDirExistsError) for o in losers), losers
    assert [p.name for p in tmp_path.iterdir()] == ["_rslurm_race"]
    _assert_complete_job_of(tmp_path / "_rslurm_race", winners[0])


def test_racing_processes_one_wins_and_the_others_get_jobdirexistserror(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    code = textwrap.dedent(f"""
        import sys
        import pandas as pd
        from slurm_apply import JobDirExistsError, slurm_apply

        I = int(sys.argv[1])

        def f(x):
            return (I, x)

        df = pd.DataFrame({{"x": range(3 + I)}})
        print("ready", flush=True)
        sys.stdin.readline()
        try:
            slurm_apply(f, df, jobname="race", job_dir={str(jobs)!r}, backend="local", submit=False)
            print("won", flush=True)
        except JobDirExistsError:
            print("lost", flush=True)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
             for i in range(4)]
    for p in procs:  # every one has imported everything before any of them goes
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results: List[str] = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(out.strip())
    assert sorted(results) == ["lost", "lost", "lost", "won"], results
    assert [p.name for p in jobs.iterdir()] == ["_rslurm_race"]
    _assert_complete_job_of(jobs / "_rslurm_race", results.index("won"))


def test_status_and_output_read_during_a_run_never_see_a_partial_file(tmp_path: Path) -> None:
    n = 1500

    def f(x):
        import time

        time.sleep(0.001)
        return 2 * x

    job = run(f, pd.DataFrame({"x": range(n)}), jobname="readers", job_dir=tmp_path, nodes=2,
              cpus_per_node=1, rows_per_chunk=50, backend="local")
    last_done = 0
    partial_views = 0
    deadline = time.monotonic() + 60
    while True:
        # One long-lived handle (reads incrementally) and one fresh (reads every file whole).
        for handle in (job, SlurmJob.from_dir(job.job_dir)):
            status = handle.get_job_status()
            assert status.rows_failed == 0
            assert last_done <= status.rows_done <= n
            out = handle.get_output(errors="keep")
            done = out[out["error"].isna()]
            assert len(done) >= status.rows_done
            assert (done["result"] == 2 * done["x"]).all()
            last_done = len(done)
            if 0 < last_done < n:
                partial_views += 1
        if status.ended:
            break
        assert time.monotonic() < deadline, status
    assert last_done == n
    assert partial_views >= 2, "the readers never saw the job part-way; the test proved nothing"
    assert job.get_output()["result"].tolist() == [2 * x for x in range(n)]
