"""The ``slurm-apply`` command line, on real jobs run by the local backend (no Slurm needed).

The functions the jobs run are made inside the helpers below: cloudpickle then stores them by
value, so the node never has to import this test module (which would depend on pytest's
``sys.path`` and import mode). ``run_cli`` and ``make_job`` are meant for reuse by the
cluster tests: pass ``backend="slurm"`` there.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, List, Tuple

import pandas as pd
import pytest
from click.testing import CliRunner

from slurm_apply import JobStatus, SlurmJob, slurm_apply
from slurm_apply._job import export as _export
from slurm_apply._status import render as _render
from slurm_apply._store import layout as jd
from slurm_apply import cli

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------
# Helpers


def run_cli(*args: Any) -> Tuple[int, str]:
    """Run ``slurm-apply ARGS...`` in this process: (exit code, stdout and stderr together).

    Exceptions that are not turned into an exit code propagate, so a crash shows its traceback.
    """
    result = CliRunner().invoke(cli.main, [str(a) for a in args], prog_name="slurm-apply",
                                catch_exceptions=False)
    return result.exit_code, result.output


def separate_streams() -> CliRunner:
    """A runner whose result has stdout and stderr apart, on every click the package allows
    (before click 8.2 they were mixed unless asked not to be)."""
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:  # click 8.2 and later: always apart (and no such argument)
        return CliRunner()


def run_module(*args: Any, timeout_s: float = 60) -> subprocess.CompletedProcess:
    """Run ``python -m slurm_apply ARGS...`` as a real process."""
    return subprocess.run([sys.executable, "-m", "slurm_apply", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout_s)


def make_job(parent: Path, jobname: str, f: Callable[..., Any], n_rows: int, *,
             backend: str = "local", **kwargs: Any) -> SlurmJob:
    """Submit ``f`` over rows ``x = 0..n_rows-1`` as a job in ``parent/_rslurm_<jobname>``."""
    kwargs.setdefault("nodes", 2)
    kwargs.setdefault("cpus_per_node", 1)
    return slurm_apply(f, pd.DataFrame({"x": range(n_rows)}), backend=backend, job_dir=parent,
                       jobname=jobname, **kwargs)


def wait_ended(job: SlurmJob, timeout_s: float = 30) -> JobStatus:
    """Poll until no task is queued or running (asking the scheduler every time, unlike wait())."""
    deadline = time.monotonic() + timeout_s
    while True:
        st = job.get_job_status()
        if st.ended:
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"job still running after {timeout_s} s:\n{st}")
        time.sleep(0.1)


def wait_running(job: SlurmJob, timeout_s: float = 10) -> None:
    """Poll until a task runs. (The local runner ignores a cancel that comes before its
    supervisor has recorded its pid, a fraction of a second after submission.)"""
    deadline = time.monotonic() + timeout_s
    while "RUNNING" not in job.get_job_status().tasks.values():
        if time.monotonic() > deadline:
            raise AssertionError(f"no task running after {timeout_s} s")
        time.sleep(0.05)


def raises_on_row_3() -> Callable[..., Any]:
    def double(x):
        if x == 3:
            raise ValueError("row 3 is bad")
        return {"y": 2 * x}

    return double


def dies_on_row_1() -> Callable[..., Any]:
    def die(x):
        import os

        if x == 1:
            # The task's own process dies (a process running a row that dies costs only its
            # row, recorded as failed): the task FAILS and row 1 goes missing.
            os.kill(os.getppid(), 9)
            os._exit(3)
        return x

    return die


def sleeps(seconds: float) -> Callable[..., Any]:
    def nap(x):
        import time

        time.sleep(seconds)
        return x

    return nap


def fails_until(flag: Path) -> Callable[..., Any]:
    flag_path = str(flag)

    def flaky(x):
        import os

        if x == 2 and not os.path.exists(flag_path):
            raise RuntimeError("flag not there yet")
        return x * 10

    return flaky


def headers(out: str) -> List[str]:
    """The log file names that ``logs`` introduced with ``==> path <==``."""
    return [Path(line.split(" <==")[0][4:]).name for line in out.splitlines() if line.startswith("==> ")]


# ---------------------------------------------------------------------------------------------
# Jobs shared by the read-only tests


@pytest.fixture(scope="module")
def jobs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jobs")


@pytest.fixture(scope="module")
def failed_job(jobs_root: Path) -> SlurmJob:
    """10 rows, row 3 raises ValueError."""
    job = make_job(jobs_root, "failing", raises_on_row_3(), 10)
    job.wait(progress=False)
    return job


@pytest.fixture(scope="module")
def dead_job(jobs_root: Path) -> SlurmJob:
    """4 rows; row 1 kills its task's parent process, so a task FAILED and row 1 is missing."""
    job = make_job(jobs_root, "dying", dies_on_row_1(), 4)
    job.wait(progress=False)
    return job


@pytest.fixture(scope="module")
def ok_job(jobs_root: Path) -> SlurmJob:
    job = make_job(jobs_root, "fine", raises_on_row_3(), 3)
    job.wait(progress=False)
    return job


# ---------------------------------------------------------------------------------------------
# status


def test_status_shows_rows_tasks_and_the_first_error(failed_job):
    code, out = run_cli("status", failed_job.job_dir)
    assert code == 0, out
    assert "job failing [local-" in out and "]: FAILED" in out
    assert "10/10 rows (100%)" in out and "elapsed 0:00:" in out
    assert "[" + "#" * 27 + "xxx]" in out  # 9 of 10 done, 1 failed, on a 30-wide bar
    assert "rows: 9 done, 1 failed, 0 missing" in out
    assert "STATE      N  TASKS  REASON" in out and "COMPLETED  2  0-1" in out
    assert "failed rows: 3 (first: row 3: ValueError: row 3 is bad)" in out
    assert f"slurm-apply logs {failed_job.job_dir} --failed" in out
    assert f"slurm-apply resubmit {failed_job.job_dir} --failed" in out


def test_status_check_exits_3_when_rows_failed_or_are_missing(failed_job, dead_job, ok_job):
    assert run_cli("status", failed_job.job_dir, "--check")[0] == 3
    assert run_cli("status", dead_job.job_dir, "--check")[0] == 3
    code, out = run_cli("status", ok_job.job_dir, "--check")
    assert code == 0, out
    assert "]: COMPLETED" in out and "failed rows" not in out and "resubmit" not in out


def test_status_names_the_dead_task_and_the_missing_row(dead_job):
    code, out = run_cli("status", dead_job.job_dir)
    assert code == 0, out
    assert "]: INCOMPLETE" in out and "rows: 3 done, 0 failed, 1 missing" in out
    assert "FAILED     1  " in out and "exit code 0:9" in out  # killed by SIGKILL
    assert "missing rows: 1 (task " in out
    code, out = run_cli("status", dead_job.job_dir, "-v")
    assert code == 0, out
    assert "TASK  STATE      NODE" in out and "exit code 0:9" in out


def test_status_json_is_the_job_status_dict(failed_job):
    code, out = run_cli("status", failed_job.job_dir, "--json")
    assert code == 0, out
    got = json.loads(out)
    want = json.loads(json.dumps(failed_job.get_job_status().to_dict(), default=str))
    assert got == want
    assert got["rows_failed"] == 1 and got["failed_rows"] == [3] and got["ended"] is True


def test_status_watch_refreshes_until_the_job_ends(tmp_path):
    job = make_job(tmp_path, "napping", sleeps(1.5), 2)
    t0 = time.monotonic()
    result = separate_streams().invoke(cli.main, ["status", str(job.job_dir), "--watch", "--interval",
                                                  "0.5", "--json", "--check"], catch_exceptions=False)
    took = time.monotonic() - t0
    assert result.exit_code == 0, result.output
    # Snapshots on stdout; the progress meter on stderr (not a terminal here: its first and last lines).
    snapshots = [json.loads(line) for line in result.stdout.splitlines()]
    meter = result.stderr.splitlines()
    assert meter[0].startswith("napping:") and ("pending" in meter[0] or "running" in meter[0])
    # (tqdm says "s/row" instead of "row/s" below one row a second)
    assert "2/2 [" in meter[-1] and ("row/s, COMPLETED]" in meter[-1] or "s/row, COMPLETED]" in meter[-1])
    assert not snapshots[0]["ended"]
    assert snapshots[-1]["ended"] and snapshots[-1]["state"] == "COMPLETED"
    assert len(snapshots) >= 2 and took < 20
    # On a job that has ended, --watch prints once and returns.
    code, out = run_cli("status", job.job_dir, "--watch", "--interval", "0.5")
    assert code == 0 and out.count("job napping") == 1


def test_status_watch_redraws_on_a_terminal_without_deprecated_click(tmp_path):
    """On a terminal --watch clears the screen before each snapshot, asking click nothing that
    click 8.5 deprecates (the warning is an error here, attributed to the CLI's module)."""
    import pty

    job = make_job(tmp_path, "onscreen", sleeps(0), 2)
    wait_ended(job)
    main, child = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-W", "error::DeprecationWarning:slurm_apply.cli.commands",
                               "-m", "slurm_apply", "status", str(job.job_dir), "--watch", "--interval",
                               "0.5", "--no-progress"],
                              cwd=REPO, stdin=subprocess.DEVNULL, stdout=child, stderr=subprocess.PIPE,
                              timeout=60, env={**os.environ, "TERM": "xterm"})
        os.close(child)
        screen = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            screen += chunk
    finally:
        os.close(main)
    assert proc.returncode == 0, proc.stderr.decode()
    text = screen.decode()
    assert text.startswith("\x1b[2J\x1b[1;1H") and "job onscreen" in text, text


def test_status_watch_stops_on_a_job_never_submitted(tmp_path):
    job = make_job(tmp_path, "written", sleeps(0), 4, submit=False)
    code, out = run_cli("status", job.job_dir, "--watch", "--check", "--interval", "0.5")
    assert code == 0, out
    assert "[not submitted]: NOT_SUBMITTED" in out and "missing rows: 0-3 (not submitted)" in out
    assert run_cli("cancel", job.job_dir) == (0, "nothing to cancel: written was never submitted\n")


def test_progress_bar_shows_failures_and_unfinished_rows():
    assert _render.bar(0, 0, 10, width=10) == "[..........]"
    assert _render.bar(10, 0, 10, width=10) == "[##########]"
    assert _render.bar(999, 1, 1000, width=10) == "[#########x]"  # one failure is never invisible
    assert _render.bar(999, 0, 1000, width=10) == "[#########.]"  # nor is one row still to come
    assert _render.bar(0, 0, 0, width=4) == "[####]"


# ---------------------------------------------------------------------------------------------
# output


def test_output_raises_by_default_with_the_remote_traceback(failed_job):
    code, out = run_cli("output", failed_job.job_dir)
    assert code == 1
    assert "Traceback (most recent call last)" in out and "ValueError: row 3 is bad" in out
    assert "Error: 1 of 10 rows raised: rows 3." in out
    assert f"slurm-apply output {failed_job.job_dir} --errors keep" in out


def test_output_without_a_file_prints_csv(failed_job, ok_job):
    code, out = run_cli("output", ok_job.job_dir)
    assert code == 0, out
    assert out == "x,y\n0,0\n1,2\n2,4\n"
    code, out = run_cli("output", failed_job.job_dir, "--errors", "keep", "-o", "-")
    assert code == 0, out
    table = pd.read_csv(io.StringIO(out))
    assert list(table.columns) == ["x", "y", "error", "state"] and list(table.x) == list(range(10))
    assert table.error[3] == "ValueError: row 3 is bad" and table.error.isna().sum() == 9
    assert table.state[3] == "failed" and (table.state == "done").sum() == 9


@pytest.mark.parametrize("name", ["out.csv", "out.csv.gz", "out.tsv"])
def test_output_to_csv_files(failed_job, tmp_path, name):
    path = tmp_path / name
    code, out = run_cli("output", failed_job.job_dir, "--errors", "keep", "-o", path)
    assert code == 0, out
    assert f"wrote 10 rows x 4 columns to {path}" in out
    table = pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",")
    expected = failed_job.get_output(errors="keep")
    assert list(table.x) == list(expected.x)
    assert table.y.fillna(-1).tolist() == expected.y.fillna(-1).tolist()
    assert table.error[3] == "ValueError: row 3 is bad"
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left behind


def test_output_to_pickle_keeps_everything(failed_job, tmp_path):
    path = tmp_path / "out.pkl"
    code, out = run_cli("output", failed_job.job_dir, "--errors", "keep", "-o", path)
    assert code == 0, out
    pd.testing.assert_frame_equal(pd.read_pickle(path), failed_job.get_output(errors="keep"))
    assert (path.stat().st_mode & 0o777) == 0o666 & ~_umask()


def test_output_to_parquet(ok_job, tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "out.parquet"
    code, out = run_cli("output", ok_job.job_dir, "-o", path)
    assert code == 0, out
    pd.testing.assert_frame_equal(pd.read_parquet(path), ok_job.get_output())


def test_output_to_parquet_without_pyarrow_says_so(ok_job, tmp_path, monkeypatch):
    monkeypatch.setattr(_export, "have_pyarrow", lambda: False)
    code, out = run_cli("output", ok_job.job_dir, "-o", tmp_path / "out.parquet")
    assert code == 1
    assert "Error: writing Parquet needs pyarrow" in out and "pip install pyarrow" in out
    assert list(tmp_path.iterdir()) == []


def test_output_into_a_missing_directory_is_an_error(ok_job, tmp_path):
    code, out = run_cli("output", ok_job.job_dir, "-o", tmp_path / "nowhere" / "out.csv")
    assert code == 1 and "Error: Could not open file" in out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------------------------------------
# logs


def test_logs_shows_every_task_log(failed_job):
    code, out = run_cli("logs", failed_job.job_dir)
    assert code == 0, out
    assert headers(out) == ["s0_t0.out", "s0_t1.out"]
    assert out.count("slurm_apply: row 3 raised ValueError: row 3 is bad") == 1


def test_logs_failed_shows_the_tasks_with_rows_that_raised(failed_job):
    logs_dir = failed_job.job_dir / "logs"
    raisers = sorted(p.name for p in logs_dir.iterdir() if "row 3 raised" in p.read_text())
    assert len(raisers) == 1
    code, out = run_cli("logs", failed_job.job_dir, "--failed")
    assert code == 0, out
    assert headers(out) == raisers
    assert "COMPLETED, 1 row(s) raised]" in out


def test_logs_failed_shows_a_task_that_died(dead_job):
    dead = [t for t in dead_job.get_job_status().task_details if t.state == "FAILED"]
    assert len(dead) == 1
    code, out = run_cli("logs", dead_job.job_dir, "--failed")
    assert code == 0, out
    assert headers(out) == [f"s0_t{dead[0].task}.out"]
    assert f"[task {dead[0].task}: FAILED (exit code 0:9" in out


def test_logs_failed_on_a_clean_job_says_there_is_nothing(ok_job):
    assert run_cli("logs", ok_job.job_dir, "--failed") == (0, "no failed tasks and no rows that raised\n")


def test_logs_task_tail_and_grep(failed_job):
    code, out = run_cli("logs", failed_job.job_dir, "--task", 1)
    assert code == 0 and headers(out) == ["s0_t1.out"]
    code, out = run_cli("logs", failed_job.job_dir, "--tail", 1)
    assert code == 0, out
    body = [line for line in out.splitlines() if line and not line.startswith("==> ")]
    assert len(body) == 2 and all(" finished " in line for line in body)
    code, out = run_cli("logs", failed_job.job_dir, "--grep", r"raised \w+Error")
    assert code == 0, out
    body = [line for line in out.splitlines() if line and not line.startswith("==> ")]
    assert body == ["slurm_apply: row 3 raised ValueError: row 3 is bad"]
    code, out = run_cli("logs", failed_job.job_dir, "--submission", 0, "--grep", "start", "--tail", 1)
    assert code == 0 and out.count(": 1 process(es), start 1") == 2


def test_tail_reads_only_the_end_of_a_big_log(tmp_path):
    log = tmp_path / "big.out"
    log.write_text("".join(f"line {i}\n" for i in range(50_000)))
    assert jd.read_tail(log, 100, lines=3) == "line 49997\nline 49998\nline 49999"
    assert jd.read_tail(log, lines=1) == "line 49999"
    assert jd.read_tail(log, 11) == "line 49999\n"  # the last bytes
    short = tmp_path / "short.out"
    short.write_text("a\nb")
    assert jd.read_tail(short, lines=5) == "a\nb" and jd.read_tail(tmp_path / "none", lines=5) == ""


# ---------------------------------------------------------------------------------------------
# resubmit, cancel, cleanup


def test_resubmit_failed_rows_with_new_options(tmp_path):
    flag = tmp_path / "fixed"
    job = make_job(tmp_path, "flaky", fails_until(flag), 4)
    job.wait(progress=False)
    d = job.job_dir
    assert run_cli("status", d, "--check")[0] == 3
    code, out = run_cli("resubmit", d)  # no row is missing; the failed one needs --failed
    assert code == 1 and "Error: nothing to resubmit" in out
    flag.touch()
    code, out = run_cli("resubmit", d, "--failed", "--time", "0:05:00", "--mem", "200M",
                        "--nodes", 1, "-O", "comment=second try")
    assert code == 0, out
    assert "resubmitted 1 row(s) of flaky as submission 1: job local-" in out
    script = (d / "submit_s1.sh").read_text()
    assert "#SBATCH --time=0:05:00" in script and "#SBATCH --mem=200M" in script
    assert '#SBATCH --comment="second try"' in script
    wait_ended(job)
    code, out = run_cli("status", d, "--check")
    assert code == 0, out
    assert "SUB  STATE" in out and "rows: 4 done, 0 failed, 0 missing" in out
    code, out = run_cli("output", d)
    assert code == 0 and out == "x,result\n0,0\n1,10\n2,20\n3,30\n"
    code, out = run_cli("logs", d, "--submission", 1)
    assert code == 0 and headers(out) == ["s1_t0.out"]


def test_cleanup_refuses_while_running_then_cancel_and_cleanup(tmp_path):
    job = make_job(tmp_path, "sleepy", sleeps(30), 1, nodes=1)
    try:
        wait_running(job)
        code, out = run_cli("cleanup", job.job_dir)
        assert code == 1
        assert f"Error: refusing to delete {job.job_dir}: 1 task(s) still queued, running or unknown" in out
        assert "slurm-apply cancel" in out
        assert (job.job_dir / "manifest.json").exists()
        code, out = run_cli("cancel", job.job_dir)
        assert code == 0 and out.startswith("cancelled sleepy (local-") and "1 queued, running or unknown task(s)" in out
        st = wait_ended(job, timeout_s=10)
        assert st.tasks == {0: "CANCELLED"}
    finally:
        job.cancel()
    code, out = run_cli("cleanup", job.job_dir)
    assert code == 0 and out == f"deleted {job.job_dir}\n"
    assert not job.job_dir.exists()


def test_cleanup_force_cancels_and_deletes(tmp_path):
    job = make_job(tmp_path, "sleepy2", sleeps(30), 1, nodes=1)
    try:
        wait_running(job)
        code, out = run_cli("cleanup", job.job_dir, "--force")
        assert code == 0, out
        assert not job.job_dir.exists()
    finally:
        if job.job_dir.exists():
            job.cancel()


# ---------------------------------------------------------------------------------------------
# list


def test_list_finds_job_directories_and_survives_broken_ones(failed_job, ok_job, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(failed_job.job_dir, root / "_rslurm_copied")
    corrupt = root / "sub" / "_rslurm_corrupt"
    corrupt.mkdir(parents=True, mode=0o700)
    (corrupt / "manifest.json").write_text("{not json")
    unsafe = root / "sub" / "_rslurm_unsafe"
    shutil.copytree(ok_job.job_dir, unsafe)
    unsafe.chmod(0o770)
    (root / "_rslurm_no_manifest").mkdir()  # an rslurm (R) directory, say: not ours
    shutil.copytree(ok_job.job_dir, root / "a" / "b" / "c" / "_rslurm_deep")

    code, out = run_cli("list", root)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split() == ["JOB", "STATE", "ROWS", "DIRECTORY", "NOTE"]
    assert len(lines) == 4
    copied = next(line for line in lines if "_rslurm_copied" in line)
    assert copied.split()[:2] == ["failing", "FAILED"] and "9/10 done, 1 failed" in copied
    broken = next(line for line in lines if "_rslurm_corrupt" in line)
    assert "ERROR" in broken and "JobDirError" in broken and "is corrupt" in broken
    unsafe_line = next(line for line in lines if "_rslurm_unsafe" in line)
    assert "ERROR" in unsafe_line and "UnsafeJobDirError" in unsafe_line and "writable by group" in unsafe_line

    code, out = run_cli("list", root, "--depth", 4, "--json", "--no-scheduler")
    assert code == 0, out
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 4
    assert {Path(r["job_dir"]).name for r in records if "status" in r} == {"_rslurm_copied", "_rslurm_deep"}
    assert {Path(r["job_dir"]).name for r in records if "error" in r} == {"_rslurm_corrupt", "_rslurm_unsafe"}


def test_list_a_job_directory_itself_or_an_empty_one(ok_job, tmp_path):
    code, out = run_cli("list", ok_job.job_dir)
    assert code == 0 and "fine" in out and "COMPLETED" in out and "3/3 done" in out
    code, out = run_cli("list", tmp_path)
    assert code == 0 and "no job directories under" in out


# ---------------------------------------------------------------------------------------------
# Errors and usage


COMMANDS_ON_A_DIR = [["status"], ["output"], ["logs"], ["resubmit"], ["cancel"], ["cleanup"]]


@pytest.mark.parametrize("command", COMMANDS_ON_A_DIR, ids=lambda c: c[0])
def test_a_missing_or_foreign_directory_is_an_error(command, tmp_path):
    code, out = run_cli(*command, tmp_path / "nope")
    assert code == 1 and out == f"Error: job directory {tmp_path / 'nope'} does not exist\n"
    code, out = run_cli(*command, tmp_path)
    assert code == 1 and out.startswith("Error: ") and "manifest.json is missing" in out


@pytest.mark.parametrize("command", COMMANDS_ON_A_DIR, ids=lambda c: c[0])
def test_an_unsafe_directory_is_refused(command, ok_job, tmp_path):
    unsafe = tmp_path / "_rslurm_copy"
    shutil.copytree(ok_job.job_dir, unsafe)
    unsafe.chmod(0o770)
    code, out = run_cli(*command, unsafe)
    assert code == 1 and out.startswith("Error: ") and "writable by group or others" in out
    assert (unsafe / "manifest.json").exists()


@pytest.mark.parametrize("args", [
    ["status"],
    ["frobnicate"],
    ["status", "{dir}", "--interval", "0"],
    ["output", "{dir}", "--errors", "maybe"],
    ["output", "{dir}", "-o", "out.xlsx"],
    ["logs", "{dir}", "--task", "99"],
    ["logs", "{dir}", "--submission", "3"],
    ["logs", "{dir}", "--grep", "("],
    ["logs", "{dir}", "--tail", "0"],
    ["resubmit", "{dir}", "--nodes", "0"],
    ["resubmit", "{dir}", "-O", "=x"],
    ["list", "{dir}/no/such/place"],
], ids=lambda a: " ".join(a).replace("{dir}", "DIR"))
def test_usage_errors_exit_2(args, failed_job):
    code, out = run_cli(*[a.format(dir=failed_job.job_dir) for a in args])
    assert code == 2, out
    assert "Usage: slurm-apply" in out and "Error:" in out


@pytest.mark.parametrize("command", [None, *sorted(cli.cli.commands)])
def test_help_has_an_example(command):
    code, out = run_cli(*([command] if command else []), "--help")
    assert code == 0
    assert "Usage: slurm-apply" in out and "Example" in out


# ---------------------------------------------------------------------------------------------
# The public names the command is built on (issue 16: the CLI uses only what `slurm_apply` exports)


def test_the_cli_imports_only_public_names_and_reads_no_private_attribute():
    import ast

    wrong = []
    for path in sorted((REPO / "slurm_apply" / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level >= 2 and node.module is not None:
                wrong.append(f"{path.name}:{node.lineno} imports slurm_apply.{node.module}")
            if isinstance(node, ast.Import) and any(a.name.startswith("slurm_apply.") for a in node.names):
                wrong.append(f"{path.name}:{node.lineno} imports a module of slurm_apply")
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                wrong.append(f"{path.name}:{node.lineno} reads the private attribute .{node.attr}")
    assert wrong == []


def test_status_text_has_the_command_lines_options(failed_job, dead_job):
    st = failed_job.get_job_status()
    assert st.text() == str(st)
    assert "resubmit(failed=True)" in st.text() and "slurm-apply" not in st.text()
    assert f"slurm-apply resubmit {failed_job.job_dir} --failed" in st.text(cli=True)
    assert "elapsed 0:00:" in st.text() and "elapsed" not in st.text(show_elapsed=False)
    verbose = dead_job.get_job_status().text(verbose=True)
    assert "TASK  STATE      NODE" in verbose and "exit code 0:9" in verbose


def test_a_task_is_active_while_queued_running_or_unknown():
    from slurm_apply import TaskStatus

    for state in ("PENDING", "RUNNING", "REQUEUED", "SUSPENDED", "COMPLETING", "UNKNOWN"):
        assert TaskStatus(0, 0, state).active, state
    for state in ("COMPLETED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "CANCELLED", "LOST",
                  "NOT_SUBMITTED"):
        assert not TaskStatus(0, 0, state).active, state


def test_wait_calls_on_update_with_each_new_status(tmp_path):
    job = make_job(tmp_path, "watched", sleeps(0.5), 2)
    seen: List[JobStatus] = []
    final = job.wait(progress=False, on_update=seen.append)
    assert seen[-1] is final and final.ended and final.state == "COMPLETED"
    assert len(seen) >= 2 and not seen[0].ended
    assert [s for s in seen if s.ended] == [final]


def test_write_output_picks_the_format_from_the_suffix(ok_job, tmp_path):
    from slurm_apply import InputError

    table = ok_job.write_output(tmp_path / "out.csv.gz")
    pd.testing.assert_frame_equal(table, ok_job.get_output())
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out.csv.gz"), table)
    ok_job.write_output(str(tmp_path / "out.pkl"))
    pd.testing.assert_frame_equal(pd.read_pickle(tmp_path / "out.pkl"), table)
    buf = io.StringIO()
    assert ok_job.write_output(buf).shape == (3, 2)  # a text stream gets CSV
    assert buf.getvalue() == "x,y\n0,0\n1,2\n2,4\n"
    with pytest.raises(InputError, match="cannot tell the format of .*out.xlsx") as info:
        ok_job.write_output(tmp_path / "out.xlsx")
    assert info.value.argument == "path"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv.gz", "out.pkl"]


def test_write_output_without_pyarrow_says_so_before_reading(ok_job, tmp_path, monkeypatch):
    from slurm_apply import InputError

    monkeypatch.setattr(_export, "have_pyarrow", lambda: False)
    with pytest.raises(InputError, match="writing Parquet needs pyarrow"):
        ok_job.write_output(tmp_path / "out.parquet")
    assert list(tmp_path.iterdir()) == []


def test_task_logs_lists_reads_and_picks_the_failed_ones(failed_job):
    from slurm_apply import InputError, TaskLog

    logs = failed_job.task_logs()
    assert [(t.submission, t.task, t.path.name, t.note) for t in logs] == [
        (0, 0, "s0_t0.out", ""), (0, 1, "s0_t1.out", "")]
    assert all(isinstance(t, TaskLog) for t in logs)
    assert [t.task for t in failed_job.task_logs(tasks=[1], submissions=[0])] == [1]
    failed = failed_job.task_logs(failed=True)
    assert len(failed) == 1 and failed[0].note.endswith("COMPLETED, 1 row(s) raised")
    assert list(failed[0].lines(grep=r"raised \w+Error")) == ["slurm_apply: row 3 raised ValueError: row 3 is bad"]
    assert len(list(failed[0].lines(tail=1))) == 1 and " finished " in list(failed[0].lines(tail=1))[0]
    assert list(failed[0].lines()) == failed[0].path.read_text().splitlines()
    for kwargs, argument, message in [({"tasks": [99]}, "tasks", "numbered 0 to 1; got 99"),
                                      ({"tasks": [-1]}, "tasks", "numbered 0 to 1; got -1"),
                                      ({"submissions": [3]}, "submissions", "1 submission"),
                                      ({"submissions": [-1]}, "submissions", "1 submission")]:
        with pytest.raises(InputError, match=message) as info:
            failed_job.task_logs(**kwargs)
        assert info.value.argument == argument


def test_find_job_dirs(failed_job, ok_job, jobs_root, monkeypatch):
    from slurm_apply import find_job_dirs

    assert failed_job.job_dir in find_job_dirs(jobs_root)
    assert ok_job.job_dir in find_job_dirs(str(jobs_root), depth=1)
    assert find_job_dirs(ok_job.job_dir) == [ok_job.job_dir]
    monkeypatch.chdir(jobs_root)
    assert sorted(p.name for p in find_job_dirs()) == sorted(p.name for p in find_job_dirs(jobs_root))
    assert find_job_dirs(jobs_root.parent, depth=1) == []  # one level too shallow


def test_index_is_params_dfs_index(ok_job, tmp_path):
    pd.testing.assert_index_equal(ok_job.index, pd.RangeIndex(3))
    job = slurm_apply(sleeps(0), pd.DataFrame({"x": [1, 2]}, index=pd.Index(["a", "b"], name="k")),
                      backend="local", job_dir=tmp_path, jobname="labelled", submit=False)
    pd.testing.assert_index_equal(job.index, pd.Index(["a", "b"], name="k"))


# ---------------------------------------------------------------------------------------------
# As a real process


def test_python_m_slurm_apply_runs_the_cli(failed_job, tmp_path):
    proc = run_module("status", failed_job.job_dir)
    assert proc.returncode == 0, proc.stderr
    assert "]: FAILED" in proc.stdout and "failed rows: 3" in proc.stdout
    proc = run_module("status", failed_job.job_dir, "--check")
    assert proc.returncode == 3
    proc = run_module("output", tmp_path / "nope")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == f"Error: job directory {tmp_path / 'nope'} does not exist\n"
    proc = run_module("--help")
    assert proc.returncode == 0 and proc.stdout.startswith("Usage: slurm-apply ")


def test_errors_speak_the_command_lines_language(tmp_path):
    job = slurm_apply(sleepy_or_fail, pd.DataFrame({"x": range(3)}), jobname="words", job_dir=tmp_path,
                      nodes=1, cpus_per_node=1, backend="local")
    code, out = run_cli("cleanup", job.job_dir)
    assert code == 1 and "pass --force" in out and "force=True" not in out
    assert f"slurm-apply cancel {job.job_dir}" in out
    job.wait(timeout_s=60, progress=False)
    code, out = run_cli("resubmit", job.job_dir)
    assert code == 1 and "pass --failed" in out and "failed=True" not in out
    code, out = run_cli("output", job.job_dir)
    assert code == 1 and f"slurm-apply resubmit {job.job_dir} --failed" in out
    assert "errors='keep'" not in out and "resubmit(" not in out


def sleepy_or_fail(x):
    import time

    time.sleep(0.5)
    if x == 1:
        raise ValueError("bad row")
    return x
