"""Issue 21, "Sharp edges": what a new user hits first, each pinned by a test that failed before."""

from __future__ import annotations

import pandas as pd
import pytest

from slurm_apply import InputError, SlurmJob, slurm_apply, slurm_call


def _local(f, df, tmp_path, name, **kw):
    kw.setdefault("nodes", 1)
    kw.setdefault("cpus_per_node", 1)
    return slurm_apply(f, df, backend="local", job_dir=tmp_path, jobname=name, **kw)


# -- item 2: slurm_call must not take f's own arguments as its options ------------------------

def simulate(n_iter=100, seed=0, nodes=1):
    return {"n_iter": n_iter, "seed": seed, "nodes": nodes}


def needs_seed(n_iter, seed):
    return (n_iter, seed)


def test_slurm_call_refuses_an_argument_that_is_also_an_option(tmp_path):
    with pytest.raises(InputError) as err:
        slurm_call(simulate, n_iter=10, seed=42, nodes=1, backend="local", job_dir=tmp_path)
    msg = str(err.value)
    # each clashing name, and how to pass it either way
    assert "seed" in msg and "nodes" in msg and "more_args" in msg
    assert "'n_iter'" not in msg
    assert not list(tmp_path.iterdir())  # nothing written
    # without a default the error no longer blames the table
    with pytest.raises(InputError) as err:
        slurm_call(needs_seed, n_iter=10, seed=42, backend="local", job_dir=tmp_path)
    assert "params_df" not in str(err.value) and "more_args" in str(err.value)


def test_slurm_call_more_args_are_fs_and_the_keyword_is_the_option(tmp_path):
    job = slurm_call(simulate, n_iter=10, more_args={"seed": 42, "nodes": 5}, seed=7,
                     backend="local", job_dir=tmp_path, jobname="call")
    job.wait(timeout_s=120, progress=False)
    out = job.get_output(outtype="raw")
    assert out == [{"n_iter": 10, "seed": 42, "nodes": 5}]
    assert job.manifest.seed == 7
    # more_args alone (no other argument of f) works too
    job = slurm_call(needs_seed, more_args={"n_iter": 3, "seed": 4}, seed=1,
                     backend="local", job_dir=tmp_path, jobname="call2")
    job.wait(timeout_s=120, progress=False)
    assert job.get_output(outtype="raw") == [(3, 4)]
    # more_args={}: the keyword is only the option; f keeps its default
    job = slurm_call(simulate, n_iter=2, more_args={}, seed=9, backend="local", job_dir=tmp_path,
                     jobname="call3")
    job.wait(timeout_s=120, progress=False)
    assert job.get_output(outtype="raw") == [{"n_iter": 2, "seed": 0, "nodes": 1}]
    assert job.manifest.seed == 9


# -- item 3: duplicate index labels are refused at submission -------------------------------

def fails_on_x(k):
    if k == "x":
        raise ValueError("bad row")
    return k


def test_duplicate_index_labels_are_refused_before_anything_is_written(tmp_path):
    df = pd.DataFrame({"k": ["x", "x", "z", "w"]}, index=["x", "x", "z", "w"])
    with pytest.raises(InputError) as err:
        _local(fails_on_x, df, tmp_path, "dups")
    msg = str(err.value)
    assert "'x'" in msg and "reset_index" in msg and "unique" in msg
    assert not list(tmp_path.iterdir())
    # the fix the message gives works, and every failed row is its own entry
    job = _local(fails_on_x, df.reset_index(drop=True), tmp_path, "dups")
    job.wait(timeout_s=120, progress=False)
    assert sorted(job.get_errors()) == [0, 1]
    out = job.get_output(errors="keep")
    assert list(out.index[out.state == "failed"]) == [0, 1]


# -- item 5: every Python identifier is a valid argument name ---------------------------------

def test_unicode_argument_names_are_accepted_and_keywords_refused(tmp_path):
    ns = {}
    exec("def f(größe, 名前, faktor):\n    return {'out': f'{名前}:{größe * faktor}:{ZÄHLER}'}", ns)
    f = ns["f"]
    df = pd.DataFrame({"größe": [1, 2], "名前": ["a", "b"]})
    job = _local(f, df, tmp_path, "unicode", more_args={"faktor": 10}, add_objects={"ZÄHLER": "z"})
    job.wait(timeout_s=120, progress=False)
    assert list(job.get_output().out) == ["a:10:z", "b:20:z"]
    # keywords and non-identifiers are still refused, wherever a name becomes an argument
    # or a global
    def g(**kw):
        return kw

    for bad in ({"df": pd.DataFrame({"class": [1]})},
                {"df": pd.DataFrame({"a": [1]}), "more_args": {"lambda": 1}},
                {"df": pd.DataFrame({"a": [1]}), "add_objects": {"for": 1}},
                {"df": pd.DataFrame({"a b": [1]})}):
        df = bad.pop("df")
        with pytest.raises(InputError, match="identifier|keyword"):
            _local(g, df, tmp_path, "bad", **bad)


# -- item 6: a directory that is no job directory is called that, before any permission advice --

def test_a_world_writable_non_job_directory_gets_no_chmod_advice(tmp_path):
    from click.testing import CliRunner

    from slurm_apply import JobDirError, UnsafeJobDirError, cli

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    (shared / "someone_elses_file").write_text("x")
    for command in (["status"], ["output"], ["cleanup"], ["resubmit"], ["cancel"], ["logs"]):
        result = CliRunner().invoke(cli.main, [*command, str(shared)], prog_name="slurm-apply",
                                    catch_exceptions=False)
        assert result.exit_code == 1, result.output
        assert "not a slurm_apply job directory" in result.output
        assert "chmod" not in result.output
    with pytest.raises(JobDirError) as err:
        SlurmJob.from_dir(shared)
    assert not isinstance(err.value, UnsafeJobDirError) and "chmod" not in str(err.value)
    # a real job directory that others can write still gets the advice
    job = _local(lambda x: x, pd.DataFrame({"x": [1]}), tmp_path, "open")
    job.wait(timeout_s=120, progress=False)
    job.job_dir.chmod(0o777)
    with pytest.raises(UnsafeJobDirError, match="chmod go-w"):
        SlurmJob.from_dir(job.job_dir)


# -- item 7: messages that say what is true and what to do ------------------------------------

def _cli(*args):
    from click.testing import CliRunner

    from slurm_apply import cli

    result = CliRunner().invoke(cli.main, [str(a) for a in args], prog_name="slurm-apply",
                                catch_exceptions=False)
    return result.exit_code, result.output


def test_cli_test_with_a_row_out_of_range_is_a_usage_error(tmp_path):
    job = _local(lambda x: x, pd.DataFrame({"x": [1, 2]}), tmp_path, "range")
    job.wait(timeout_s=120, progress=False)
    code, out = _cli("test", job.job_dir, 99)
    assert code == 2, out
    assert "Traceback" not in out and "raised" not in out
    assert "0 to 1" in out and "99" in out
    code, out = _cli("test", job.job_dir, 1)
    assert code == 0 and out.strip() == "2"


def test_a_job_never_submitted_says_submit_not_resubmit(tmp_path):
    from slurm_apply import RowsMissingError

    job = _local(lambda x: x, pd.DataFrame({"x": [1, 2]}), tmp_path, "unsub", submit=False)
    with pytest.raises(RowsMissingError) as err:
        job.get_output()
    assert "submit()" in str(err.value) and "resubmit" not in str(err.value)
    code, out = _cli("output", job.job_dir)
    assert code == 1 and "slurm-apply submit" in out and "resubmit" not in out


def test_cli_cancel_on_a_finished_job_says_there_was_nothing_to_cancel(tmp_path):
    job = _local(lambda x: x, pd.DataFrame({"x": [1, 2]}), tmp_path, "over", retries=0)
    job.wait(timeout_s=120, progress=False)
    code, out = _cli("cancel", job.job_dir)
    assert code == 0, out
    assert "cancelled" not in out and "nothing to cancel" in out and "COMPLETED" in out
    assert job.get_job_status().state == "COMPLETED"


def test_a_handle_after_cleanup_files_fails_one_clear_way(tmp_path):
    from slurm_apply import JobDirError

    job = _local(lambda x: x, pd.DataFrame({"x": [1, 2]}), tmp_path, "gone")
    job.wait(timeout_s=120, progress=False)
    job.cleanup_files()
    calls = {
        "get_job_status": job.get_job_status, "wait": lambda: job.wait(progress=False),
        "get_output": job.get_output, "get_errors": job.get_errors,
        "resubmit": job.resubmit, "submit": job.submit, "cancel": job.cancel,
        "test_row": lambda: job.test_row(0), "cleanup_files": job.cleanup_files,
        "as_completed": lambda: list(job.as_completed()),
    }
    for name, call in calls.items():
        with pytest.raises(JobDirError) as err:
            call()
        assert str(err.value) == (f"job directory {job.job_dir} no longer exists (cleanup_files() "
                                  "deletes it, results included); nothing is left to act on"), name
    assert "gone" in repr(job)  # a repr still works, from what the handle remembers


# -- item 9: Ctrl-C during wait() in a script ---------------------------------------------------

SCRIPT = r'''
import os, sys, time
import pandas as pd
from slurm_apply import slurm_apply

def slow(x):
    import time
    time.sleep(60)
    return x

job = slurm_apply(slow, pd.DataFrame({"x": [1]}), backend="local", job_dir=sys.argv[1],
                  jobname="ctrlc", nodes=1, cpus_per_node=1, retries=0)
open(sys.argv[2], "w").write(str(job.job_dir))
job.wait(progress=False)
'''


def test_ctrl_c_during_wait_in_a_script_exits_130_with_one_line(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    ready = tmp_path / "ready"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(out_path, "w") as out_f, open(err_path, "w") as err_f:  # files: the local
        # runner the script leaves behind must not hold a pipe open
        proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(ready)],
                                cwd=tmp_path, env=env, stdout=out_f, stderr=err_f)
    try:
        deadline = time.time() + 60
        while not ready.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert ready.exists(), err_path.read_text()
        time.sleep(1.0)  # into wait()'s loop
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        if ready.exists():
            SlurmJob.from_dir(ready.read_text()).cancel()
    err = err_path.read_text()
    # what a shell shows as $?: 128 + the signal for a process killed by one
    assert (128 - rc if rc < 0 else rc) == 130, (rc, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("slurm_apply: ")]
    assert len(lines) == 1, err
    assert "keep running" in lines[0] and "slurm-apply status" in lines[0], lines[0]


# -- item 10: results that do not all have the same shape ---------------------------------------

def dict_or_none(x, state):
    if x % 3 == 1:
        return None
    if x == 5:
        raise ValueError("five")
    return {"sq": x * x, "slurm_apply_error": f"mine {x}", "error": "also mine", "x_result": -x}


def test_dict_rows_expand_beside_none_rows_and_user_columns_are_never_overwritten(tmp_path):
    import math

    job = _local(dict_or_none, pd.DataFrame({"x": range(7), "state": ["s"] * 7}), tmp_path, "mixed")
    job.wait(timeout_s=120, progress=False)
    out = job.get_output(errors="keep")
    assert list(out.x) == list(range(7)) and list(out.state) == ["s"] * 7
    sq = list(out.sq)
    assert [sq[i] for i in (0, 2, 3, 6)] == [0, 4, 9, 36]
    assert all(math.isnan(sq[i]) for i in (1, 4, 5))  # None rows and the failed row
    assert out.loc[0, "slurm_apply_error"] == "mine 0" and out.loc[0, "error"] == "also mine"
    assert list(out.x_result)[0] == 0 and list(out.x_result)[6] == -6
    # the error and state columns take names no column has
    added = [c for c in out.columns if c not in ("x", "state", "sq", "slurm_apply_error", "error",
                                                 "x_result")]
    assert len(added) == 2 and len(set(out.columns)) == len(out.columns)
    err_col, state_col = added
    assert out.loc[5, err_col].startswith("ValueError: five") and pd.isna(out.loc[0, err_col])
    assert list(out[state_col]) == ["done"] * 5 + ["failed", "done"]
    raw = job.get_output(outtype="raw", errors="keep")
    assert raw[1] is None and raw[0]["sq"] == 0


def test_a_value_of_another_kind_beside_dicts_gets_a_column_of_its_own():
    import math

    from slurm_apply._job.output import result_frame

    out = result_frame([{"a": 1}, 5, None, pd.Series({"a": 3})], None)
    assert list(out.columns) == ["a", "result"]
    assert out.a.tolist()[0] == 1 and math.isnan(out.a.tolist()[1]) and out.a.tolist()[3] == 3
    assert out.result.tolist()[1] == 5 and math.isnan(out.result.tolist()[0])
    out = result_frame([{"result": 1}, "text"], None)
    assert list(out.columns) == ["result", "slurm_apply_result"]
    assert out.slurm_apply_result.tolist()[1] == "text"


# -- item 4: resubmissions do not race, and force cancels first ----------------------------------

def _slow_after(flag, seconds):
    flag = str(flag)

    def f(x):
        import os
        import time

        if not os.path.exists(flag):
            raise ValueError("not yet")
        time.sleep(seconds)
        return x

    return f


def _wait_until(job, predicate, timeout_s=30):
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        st = job.get_job_status()
        if predicate(st):
            return st
        assert time.monotonic() < deadline, str(st)
        time.sleep(0.05)


def _three_resubmits_at_once(job):
    """Three `slurm-apply resubmit DIR --failed` started together: one submits, two refuse."""
    import subprocess
    import sys

    try:
        procs = [subprocess.Popen([sys.executable, "-m", "slurm_apply", "resubmit", str(job.job_dir),
                                   "--failed"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for _ in range(3)]
        results = [(p.wait(timeout=120), p.stdout.read()) for p in procs]
        assert sorted(code for code, _ in results) == [0, 1, 1], results
        assert all("refusing to resubmit" in out for code, out in results if code), results
        assert len(SlurmJob.from_dir(job.job_dir).manifest.submissions) == 2
    finally:
        SlurmJob.from_dir(job.job_dir).cancel()


def test_resubmissions_started_together_run_once(tmp_path):
    flag = tmp_path / "flag"
    job = _local(_slow_after(flag, 30), pd.DataFrame({"x": range(2)}), tmp_path, "race", retries=0)
    job.wait(timeout_s=120, progress=False)
    assert job.get_job_status().rows_failed == 2
    flag.write_text("")
    _three_resubmits_at_once(job)


def test_resubmit_force_cancels_the_running_tasks_first(tmp_path):
    flag = tmp_path / "flag"
    flag.write_text("")
    job = _local(_slow_after(flag, 60), pd.DataFrame({"x": range(1)}), tmp_path, "force", retries=0)
    try:
        _wait_until(job, lambda st: "RUNNING" in st.tasks.values())
        from slurm_apply import JobActiveError

        with pytest.raises(JobActiveError):
            job.resubmit(rows=[0])
        flag.unlink()  # the resubmitted row raises at once: nothing runs beside it
        job.resubmit(rows=[0], force=True)
        st = job.get_job_status()
        s0 = [t for t in st.task_details if t.submission == 0]
        assert [t.state for t in s0] == ["CANCELLED"], str(st)
        st = job.wait(timeout_s=60, progress=False)
        assert st.rows_failed == 1 and len(job.manifest.submissions) == 2
    finally:
        job.cancel()


# -- item 8: memory sizes in exactly the forms sbatch takes ---------------------------------------

# sbatch reads --mem with strtoll and one optional unit K, M, G or T (any case), which may be
# followed by B: whole numbers only (Slurm's str_to_mbytes).
MEM_SBATCH_TAKES = ["4000", "0", "4G", "4g", "4GB", "4gb", "512M", "1024K", "1T", "4Mb"]
MEM_SBATCH_REFUSES = ["1.5G", "0.5", "4B", "4GiB", "G", "-4G", "4 G", "4GBB", "4X"]


@pytest.mark.parametrize("mem", MEM_SBATCH_REFUSES)
def test_mem_forms_sbatch_refuses_are_refused_before_writing(tmp_path, mem):
    for key in ("mem", "mem-per-cpu", "mem_per_gpu"):
        with pytest.raises(InputError, match="whole number"):
            _local(lambda x: x, pd.DataFrame({"x": [1]}), tmp_path, "mem", slurm_options={key: mem})
    assert not list(tmp_path.iterdir())


def test_mem_refusal_says_what_to_write_and_resubmit_records_nothing(tmp_path):
    with pytest.raises(InputError, match="'1536M'"):
        _local(lambda x: x, pd.DataFrame({"x": [1]}), tmp_path, "mem", slurm_options={"mem": "1.5G"})
    with pytest.raises(InputError, match="max_mem"):
        _local(lambda x: x, pd.DataFrame({"x": [1]}), tmp_path, "mem", max_mem="2.5G")
    job = _local(lambda x: x, pd.DataFrame({"x": [1]}), tmp_path, "mem",
                 slurm_options={"mem": MEM_SBATCH_TAKES[2]})
    job.wait(timeout_s=120, progress=False)
    with pytest.raises(InputError, match="'1536M'"):
        job.resubmit(rows=[0], slurm_options={"mem": "1.5G"})
    assert len(job.manifest.submissions) == 1


@pytest.mark.parametrize("mem", MEM_SBATCH_TAKES)
def test_mem_forms_sbatch_takes_are_accepted(tmp_path, mem):
    from slurm_apply._backends import dialect
    from slurm_apply._launch.validate import check_options

    assert check_options({"mem": mem}, dialect("slurm")) == {"mem": mem}


def test_mem_forms_match_the_real_sbatch(cluster, tmp_path):
    """What the check accepts, sbatch accepts; what it refuses, sbatch refuses."""
    import subprocess

    from slurm_apply._backends import dialect
    from slurm_apply._launch.validate import check_options

    for mem in MEM_SBATCH_TAKES + MEM_SBATCH_REFUSES:
        proc = subprocess.run(["sbatch", "--test-only", f"--mem={mem}", "--wrap", "true"],
                              capture_output=True, text=True, cwd=tmp_path)
        sbatch_refuses = "Invalid --mem specification" in proc.stderr
        try:
            check_options({"mem": mem}, dialect("slurm"))
            we_refuse = False
        except InputError:
            we_refuse = True
        assert we_refuse == sbatch_refuses, (mem, proc.returncode, proc.stderr)


def test_resubmissions_started_together_run_once_on_the_cluster(cluster, job_parent):
    """On Slurm the later resubmissions must learn of the first's array from the scheduler
    (squeue, when sacct does not list it yet) while they hold the lock."""
    flag = job_parent / "flag"
    job = slurm_apply(_slow_after(flag, 60), pd.DataFrame({"x": range(2)}), nodes=1,
                      cpus_per_node=1, retries=0, job_dir=job_parent, jobname="race")
    job.wait(timeout_s=120, progress=False)
    assert job.get_job_status().rows_failed == 2
    flag.write_text("")
    _three_resubmits_at_once(job)
