"""What a person sees: the HTML and repr of a status, tasks_frame(), the progress meter, Ctrl-C
in a wait, and the notices of the "slurm_apply" logger (no cluster needed; a real notebook
kernel is in test_notebook.py)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import pandas as pd
import pytest

from slurm_apply import JobStatus, TaskStatus, WaitInterrupted, slurm_apply
from slurm_apply._status.progress import Progress
from slurm_apply._status.render import HTML_TASK_GROUPS, progress_postfix

REPO = Path(__file__).resolve().parent.parent


def status(**kw) -> JobStatus:
    """A status as _status.build makes them, with what a test needs set."""
    tasks = kw.pop("task_details", [TaskStatus(0, 0, "RUNNING", node="n1"),
                                     TaskStatus(0, 1, "PENDING", reason="Priority")])
    base = dict(jobname="fit", job_dir="/jobs/_rslurm_fit", state="RUNNING", completed=False,
                ended=False, rows_total=10, rows_done=4, rows_failed=1, rows_missing=0,
                rows_pending=5, tasks={t.task: t.state for t in tasks},
                reasons={t.task: t.reason for t in tasks if t.reason}, task_details=tasks,
                failed_rows=[3], job_ids=["101"], first_error="row 3: ValueError: bad")
    base.update(kw)
    return JobStatus(**base)


# -- HTML and repr -------------------------------------------------------------------------------

def test_html_shows_state_counts_tasks_and_logs():
    page = status()._repr_html_()
    assert "RUNNING" in page and "job fit" in page and "[101]" in page
    assert "5/10 rows (50%)" in page  # done and failed, of all
    for cell in ("<td", ">4<", ">1<", ">5<", ">0<", ">10<"):  # done, failed, pending, missing, total
        assert cell in page
    assert "PENDING" in page and "Priority" in page
    assert "row 3: ValueError: bad" in page
    assert "/jobs/_rslurm_fit/logs" in page


def test_html_escapes_what_it_shows():
    evil = "<script>alert('x')</script>"
    tasks = [TaskStatus(0, 0, "PENDING", reason=evil), TaskStatus(0, 1, "FAILED", reason='a "b" & <i>')]
    page = status(task_details=tasks, jobname="a<b", first_error=f"row 3: E: {evil}",
                  notes=["<img src=x onerror=alert(1)>"])._repr_html_()
    assert "<script" not in page and "<img" not in page and "<i>" not in page and "a<b" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "a &quot;b&quot; &amp; &lt;i&gt;" in page


def test_a_million_rows_and_a_thousand_tasks_keep_repr_and_html_short():
    tasks = [TaskStatus(0, t, "OUT_OF_MEMORY", reason=f"MaxRSS {t}M of 100M") for t in range(1000)]
    big = status(task_details=tasks, rows_total=1_000_000, rows_done=0, rows_failed=0,
                 rows_pending=0, rows_missing=1_000_000, missing_rows=list(range(1_000_000)),
                 failed_rows=[], state="INCOMPLETE", ended=True, first_error="",
                 job_ids=[str(i) for i in range(50)])
    text = repr(big)
    assert len(text) < 300 and "1000 OUT_OF_MEMORY" in text and "1000000 missing" in text
    assert "+47 more" in text
    page = big._repr_html_()
    assert len(page) < 20_000
    assert page.count("OUT_OF_MEMORY") == HTML_TASK_GROUPS  # then "and N more groups"
    assert f"and {1000 - HTML_TASK_GROUPS} more groups" in page


def test_tasks_frame_is_one_row_per_task():
    frame = status().tasks_frame()
    assert list(frame.columns) == ["submission", "task", "state", "reason", "node", "elapsed",
                                   "max_rss", "job_id", "log"]
    assert list(frame.state) == ["RUNNING", "PENDING"] and frame.reason[1] == "Priority"
    assert status(task_details=[]).tasks_frame().empty


def test_progress_words_say_why_tasks_pend():
    tasks = [TaskStatus(0, 0, "RUNNING"), TaskStatus(0, 1, "PENDING", reason="Priority"),
             TaskStatus(0, 2, "PENDING", reason="Priority"), TaskStatus(0, 3, "PENDING"),
             TaskStatus(0, 4, "COMPLETED")]
    assert progress_postfix(status(task_details=tasks)) == "1 failed, 1 running, 2 pending: Priority, 1 pending"
    done = status(state="FAILED", ended=True, rows_done=9, rows_pending=0, task_details=tasks[4:])
    assert progress_postfix(done) == "FAILED, 1 failed"


# -- the progress meter --------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_on_a_file_is_a_line_now_and_then():
    out, clock = io.StringIO(), Clock()
    meter = Progress(file=out, every_s=30, clock=clock)
    for second in range(120):  # a row every second for two minutes, a status every second
        clock.now = 100.0 + second
        meter(status(rows_total=200, rows_done=second, rows_failed=0, rows_pending=200 - second))
    clock.now = 221.0
    meter(status(rows_total=200, rows_done=200, rows_failed=0, rows_pending=0, state="COMPLETED",
                 ended=True, task_details=[TaskStatus(0, 0, "COMPLETED")]))
    meter.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 5  # at 0, 30, 60 and 90 s, and at the end
    assert lines[0].startswith("fit:   0%|") and "0/200" in lines[0] and "1 pending: Priority" in lines[0]
    assert "30/200" in lines[1] and "1.00row/s" in lines[1] and "<02:50" in lines[1]  # time left
    assert "200/200" in lines[-1] and "COMPLETED" in lines[-1]
    meter.close()  # closing again writes nothing more
    assert len(out.getvalue().splitlines()) == 5


def test_progress_on_a_terminal_is_a_tqdm_bar():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    meter = Progress(file=out)
    meter(status())
    meter(status(rows_done=9, rows_pending=0, state="FAILED", ended=True, task_details=[]))
    meter.close()
    text = out.getvalue()
    assert "\r" in text and "10/10" in text and "FAILED, 1 failed" in text and "row/s" in text
    assert "\x1b[38;2;251;140;0m" in text  # a full bar of a job that failed is amber, not success


# -- Ctrl-C --------------------------------------------------------------------------------------

def napping(seconds: float):
    def nap(x):
        import time

        time.sleep(seconds)
        return x

    return nap


def interrupt_soon(after_s: float) -> threading.Timer:
    # Python's own handler first. A command that a non-interactive shell starts in the
    # background (`cmd &`, as a CI script or `bash .ci/run > log &` may) inherits SIGINT ignored,
    # and Python then keeps it ignored, as does every process it starts: a Ctrl-C cannot reach
    # such a session at all, so the test gives its process what an interactive session has.
    # (This is why the test failed in backgrounded full runs and never in a terminal.)
    handler = signal.getsignal(signal.SIGINT)
    if handler is not signal.default_int_handler and handler != signal.SIG_IGN:
        warnings.warn(f"SIGINT's handler in this test process was {handler!r}", stacklevel=2)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(after_s, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    return timer


def test_ctrl_c_stops_the_wait_with_one_line_and_the_job_goes_on(tmp_path):
    job = slurm_apply(napping(30), pd.DataFrame({"x": range(2)}), backend="local", job_dir=tmp_path,
                      jobname="nap", nodes=1, cpus_per_node=1)
    try:
        interrupt_soon(1.0)
        with pytest.raises(WaitInterrupted) as caught:
            job.wait(progress=False)
        exc = caught.value
        assert isinstance(exc, KeyboardInterrupt) and exc.__cause__ is None and exc.__suppress_context__
        assert exc._render_traceback_() == [f"WaitInterrupted: {exc}"]  # what IPython shows
        assert "\n" not in str(exc)
        assert str(exc).startswith("stopped waiting for job nap at 0/2 rows; its tasks keep running")
        assert "job.cancel()" in str(exc) and exc.status.state in ("PENDING", "RUNNING")
        assert not job.get_job_status().ended  # the job goes on
    finally:
        job.cancel()


def test_ctrl_c_in_status_watch_exits_130_with_one_line(tmp_path):
    from click.testing import CliRunner

    from slurm_apply import cli

    job = slurm_apply(napping(30), pd.DataFrame({"x": range(2)}), backend="local", job_dir=tmp_path,
                      jobname="nap", nodes=1, cpus_per_node=1)
    try:
        interrupt_soon(1.5)
        try:  # stdout and stderr apart (before click 8.2 only when asked; after, always)
            runner = CliRunner(mix_stderr=False)
        except TypeError:
            runner = CliRunner()
        result = runner.invoke(cli.main, ["status", str(job.job_dir), "--watch", "--no-progress"],
                               catch_exceptions=False)
        assert result.exit_code == 130
        assert result.stderr.splitlines() == [
            f"stopped waiting for job nap at 0/2 rows; its tasks keep running: slurm-apply status "
            f"{job.job_dir} --watch waits again, slurm-apply cancel {job.job_dir} cancels them"]
        assert "job nap [local-" in result.stdout
    finally:
        job.cancel()


# -- notices -------------------------------------------------------------------------------------

def run_python(code: str, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    """A fresh interpreter with nothing configured, as a user's script."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True,
                          text=True, env=env, timeout=timeout_s)


@pytest.mark.parametrize("setup, expected", [
    ("", "slurm_apply: hello\nslurm_apply: careful\n"),  # nothing configured: INFO and up on stderr
    ("logging.basicConfig(format='%(levelname)s %(name)s %(message)s')",  # routed, shown once
     "INFO slurm_apply hello\nWARNING slurm_apply careful\n"),
    ("logging.getLogger('slurm_apply').setLevel(logging.WARNING)", "slurm_apply: careful\n"),
    ("logging.getLogger('slurm_apply').setLevel(logging.ERROR)", ""),  # silenced
])
def test_notices_show_unless_configured_otherwise(setup, expected):
    proc = run_python(f"""
        import logging
        {setup}
        from slurm_apply._log import logger
        logger.info("hello")
        logger.warning("careful")
    """)
    assert proc.returncode == 0 and proc.stderr == expected


SCRIPT = """
    import sys
    import pandas as pd
    from slurm_apply import slurm_apply

    def f(x):
        import time
        time.sleep(float(sys.argv[2]))
        return x

    job = slurm_apply(f, pd.DataFrame({"x": range(2)}), backend="local", job_dir=sys.argv[1],
                      jobname="script", nodes=1, cpus_per_node=1)
    if sys.argv[3] == "wait":
        job.wait()
"""


def test_a_script_that_waits_sees_the_notice_and_progress_on_stderr(tmp_path):
    proc = run_python(SCRIPT, str(tmp_path), "0.5", "wait")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0] == "slurm_apply: running the 1 array task(s) on this machine, 1 at a time"
    assert lines[-1].startswith("script: 100%|") and "2/2" in lines[-1] and "COMPLETED" in lines[-1]
    assert "background" not in proc.stderr


def test_a_script_that_does_not_wait_says_its_tasks_go_on(tmp_path):
    proc = run_python(SCRIPT, str(tmp_path), "30", "no")
    try:
        assert proc.returncode == 0, proc.stderr
        last = proc.stderr.splitlines()[-1]
        assert last.startswith("slurm_apply: this process ends, but the tasks it started on this "
                               "machine go on in the background")
        assert str(tmp_path / "_rslurm_script") in last and "slurm-apply cancel DIR" in last
    finally:
        from slurm_apply import SlurmJob

        SlurmJob.from_dir(tmp_path / "_rslurm_script").cancel()
