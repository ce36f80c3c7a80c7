"""Grid Engine as a backend, on the private cell the suite starts (tests/sgebed.py, marker sge):
the Slurm round trips of tests/test_cluster.py, faults, qdel, exit statuses Grid Engine acts on,
the CLI, and a qmaster stopped during wait()."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from slurm_apply import slurm_apply, slurm_map


@pytest.fixture
def cell(sge_cell, monkeypatch):
    for key, value in sge_cell.env().items():
        monkeypatch.setenv(key, value)
    return sge_cell


def where(x: int, y: float) -> dict:

    return {"z": x * y, "node": os.environ.get("SLURM_APPLY_NODE", "?"), "task": os.environ.get("SLURM_APPLY_TASK")}


def square(x):
    return x * x


def raises_on_3(x):
    if x == 3:
        raise ValueError("three")
    return x


def segfault_on_2(x):
    if x == 2:
        import ctypes
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file in the working directory
        ctypes.string_at(0)
    return x


def exits(x):
    import sys

    if x == 1:
        os._exit(99)
    if x == 2:
        sys.exit(100)
    return x


def sleepy(x):
    import time

    time.sleep(x)
    return x


def grid(n: int) -> pd.DataFrame:
    return pd.DataFrame({"x": range(n), "y": [0.5 + i / 10 for i in range(n)]})


def test_round_trip_equals_local(cell, job_parent):
    df = grid(12)
    job = slurm_apply(where, df, nodes=3, cpus_per_node=2, jobname="sge_rt", job_dir=job_parent, backend="sge")
    local = slurm_apply(where, df, nodes=3, cpus_per_node=2, jobname="loc_rt", job_dir=job_parent, backend="local")
    status = job.wait(timeout_s=120, progress=False)
    assert status.completed, str(status)
    assert status.tasks == {0: "COMPLETED", 1: "COMPLETED", 2: "COMPLETED"}
    out = job.get_output()
    local.wait(timeout_s=120, progress=False)
    assert list(out.z) == list(local.get_output().z)
    assert set(out.task) <= {"0", "1", "2"}
    script = (job.job_dir / "submit.sh").read_text()
    assert "#$ -t 1-3" in script and "#$ -pe smp 2" in script and "#SBATCH" not in script
    for t in range(3):  # Grid Engine's task t+1 is the package's task t, and writes its log
        assert (job.job_dir / "logs" / f"s0_t{t}.out").read_text().startswith(f"slurm_apply: submission 0 task {t}")


def test_faults_raising_segfault_and_statuses_grid_engine_acts_on(cell, job_parent):
    raising = slurm_map(raises_on_3, range(6), nodes=2, cpus_per_node=1, jobname="sge_raise",
                        job_dir=job_parent, backend="sge")
    segv = slurm_map(segfault_on_2, range(4), nodes=2, cpus_per_node=1, jobname="sge_segv",
                     job_dir=job_parent, backend="sge")
    acted = slurm_map(exits, range(5), nodes=2, cpus_per_node=1, jobname="sge_exits",
                      job_dir=job_parent, backend="sge")
    # A setup line that fails with 100 (set -e) would park the task in Eqw: the script exits 1.
    parked = slurm_map(square, range(2), nodes=1, cpus_per_node=1, jobname="sge_eqw", job_dir=job_parent,
                       backend="sge", setup=["(exit 100)"])
    st = raising.wait(timeout_s=120, progress=False)
    assert st.rows_done == 5 and st.rows_failed == 1 and set(st.tasks.values()) == {"COMPLETED"}
    assert [e[:2] for e in raising.get_errors().values()] == [("ValueError", "three")]
    st = segv.wait(timeout_s=120, progress=False)
    assert st.rows_done == 3 and st.rows_failed == 1, str(st)
    assert "SIGSEGV" in str(segv.get_errors()), segv.get_errors()
    st = acted.wait(timeout_s=120, progress=False)
    assert st.ended and st.rows_done == 3 and st.rows_failed == 2 and set(st.tasks.values()) == {"COMPLETED"}, str(st)
    errors = acted.get_errors()
    assert "exited with code 99" in errors[1][1] and errors[2][0] == "SystemExit", errors
    st = parked.wait(timeout_s=60, progress=False)
    assert st.ended and set(st.tasks.values()) == {"FAILED"} and "exit code 1" in str(st), str(st)
    assert "which Grid Engine would act on" in (parked.job_dir / "logs" / "s0_t0.out").read_text()
    # Nothing rescheduled, nothing parked in error state: qstat knows none of these jobs.
    listed = subprocess.run(["qstat", "-u", "*"], capture_output=True, text=True).stdout
    ids = {line.split()[0] for line in listed.splitlines()[2:] if line.strip()}
    for job in (raising, segv, acted, parked):
        assert not {*job.job_ids, *(s.followup_id for s in job.manifest.submissions)} & ids, listed


def test_cancel_is_cancelled(cell, job_parent):
    job = slurm_map(sleepy, [60] * 2 + [1] * 6, nodes=8, cpus_per_node=1, jobname="sge_cancel",
                    job_dir=job_parent, backend="sge")
    deadline = time.time() + 30
    while time.time() < deadline and "RUNNING" not in job.get_job_status().tasks.values():
        time.sleep(0.5)
    job.cancel()
    st = job.wait(timeout_s=60, progress=False)
    assert st.ended and "CANCELLED" in set(st.tasks.values()), str(st)
    assert not {"FAILED", "LOST"} & set(st.tasks.values()), str(st)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slurm_apply", *args], capture_output=True, text=True)


def test_cli_on_an_sge_job(cell, job_parent):
    job = slurm_map(square, range(4), nodes=2, cpus_per_node=1, jobname="sge_cli", job_dir=job_parent,
                    backend="sge")
    job.wait(timeout_s=120, progress=False)
    d = str(job.job_dir)
    status = _cli("status", d)
    assert status.returncode == 0 and "COMPLETED" in status.stdout, status.stdout + status.stderr
    listed = _cli("list", str(job_parent)).stdout
    assert "sge_cli  COMPLETED  4/4 done" in listed, listed
    assert "slurm_apply: submission 0 task 0" in _cli("logs", d, "--task", "0").stdout
    out = _cli("output", d)
    assert out.returncode == 0 and "9" in out.stdout, out.stdout + out.stderr
    assert "nothing to cancel" in _cli("cancel", d).stdout
    cleaned = _cli("cleanup", d)
    assert cleaned.returncode == 0 and not job.job_dir.exists(), cleaned.stdout + cleaned.stderr


def test_qmaster_stopped_during_wait_is_unknown_then_finishes(cell, job_parent):
    job = slurm_map(sleepy, [6, 6], nodes=2, cpus_per_node=1, jobname="sge_qmaster", job_dir=job_parent,
                    backend="sge")
    deadline = time.time() + 30
    while time.time() < deadline and set(job.get_job_status().tasks.values()) != {"RUNNING"}:
        time.sleep(0.3)
    cell.stop_qmaster(kill=True)
    try:
        st = job.get_job_status()
        assert set(st.tasks.values()) == {"UNKNOWN"}, str(st)
        assert "qmaster" in str(st), str(st)
    finally:
        restart = threading.Thread(target=lambda: (time.sleep(3), cell.start_qmaster(wait_for_execd=False)))
        restart.start()
    st = job.wait(timeout_s=90, progress=False)
    restart.join()
    assert st.completed, str(st)
    assert list(job.get_output(outtype="raw")) == [6, 6]


def test_written_for_another_backend_then_run_on_grid_engine(cell, job_parent):
    job = slurm_map(square, range(4), nodes=2, cpus_per_node=1, jobname="sge_moved", job_dir=job_parent,
                    backend="local", submit=False, slurm_options={"time": "0:10:00"})
    assert "#SBATCH --time=0:10:00" in (job.job_dir / "submit.sh").read_text()
    job.submit(backend="sge")
    assert "#$ -l h_rt=0:10:00" in (job.job_dir / "submit.sh").read_text()
    assert job.wait(timeout_s=120, progress=False).completed
    assert job.get_output(outtype="raw") == [0, 1, 4, 9]
    here = slurm_map(square, range(3), nodes=1, cpus_per_node=1, jobname="sge_again", job_dir=job_parent,
                     backend="local")
    here.wait(timeout_s=60, progress=False)
    here.resubmit(rows=[1, 2], backend="sge")
    assert here.manifest.latest.backend == "sge" and "#$ -t 1-1" in (here.job_dir / "submit_s1.sh").read_text()
    assert here.wait(timeout_s=120, progress=False).completed
    assert here.get_output(outtype="raw") == [0, 1, 4]


def hog(x):
    if x == 1:
        block = bytearray(400 * 2**20)  # over h_vmem: the address-space limit refuses it
        return len(block)
    return x


def test_a_row_over_h_vmem_fails_alone_and_the_status_says_memory(cell, job_parent):
    job = slurm_map(hog, range(3), nodes=1, cpus_per_node=1, jobname="sge_mem", job_dir=job_parent,
                    backend="sge", slurm_options={"mem": "300M"})
    st = job.wait(timeout_s=120, progress=False)
    assert st.rows_done == 2 and st.rows_failed == 1 and set(st.tasks.values()) == {"COMPLETED"}, str(st)
    assert job.get_errors()[1][0] == "MemoryError"
    text = str(st)
    assert "memory" in text and "h_vmem=300M per slot" in text and "slurm_options={'mem': '600M'}" in text, text


def test_no_parallel_environment_is_refused_before_anything_is_written(cell, job_parent, monkeypatch):
    from slurm_apply._backends.sge import commands as sge_commands
    from slurm_apply._errors import InputError

    smp = cell.run(["qconf", "-sp", "smp"]).stdout
    cell.run(["qconf", "-rattr", "queue", "pe_list", "NONE", "all.q"])
    cell.run(["qconf", "-dp", "smp"])
    monkeypatch.setattr(sge_commands, "_pe_cache", {})
    try:
        with pytest.raises(InputError, match="needs a parallel environment"):
            slurm_map(square, range(4), nodes=1, cpus_per_node=2, jobname="sge_nope", job_dir=job_parent,
                      backend="sge")
        assert list(job_parent.iterdir()) == []
        done = slurm_map(square, range(4), nodes=1, cpus_per_node=1, jobname="sge_pe_here", job_dir=job_parent,
                         backend="local")
        done.wait(timeout_s=60, progress=False)
        with pytest.raises(InputError, match="needs a parallel environment"):
            done.resubmit(rows=[0], cpus_per_node=2, backend="sge")
        written = slurm_map(square, range(4), nodes=1, cpus_per_node=2, jobname="sge_pe_later",
                            job_dir=job_parent, backend="local", submit=False)
        script = (written.job_dir / "submit.sh").read_text()
        with pytest.raises(InputError, match="needs a parallel environment"):
            written.submit(backend="sge")
        assert not (done.job_dir / "s1").exists() and not (done.job_dir / "submit_s1.sh").exists()
        assert len(done.manifest.submissions) == 1
        assert (written.job_dir / "submit.sh").read_text() == script
        assert written.manifest.latest.backend == "local" and not written.manifest.latest.launched
    finally:
        conf = job_parent / "smp.pe"
        conf.write_text(smp)
        cell.run(["qconf", "-Ap", str(conf)])
        cell.run(["qconf", "-rattr", "queue", "pe_list", "smp", "all.q"])


def test_a_job_written_with_submit_false_and_qsub_by_hand_is_found(cell, job_parent):
    job = slurm_map(sleepy, [8, 8], nodes=2, cpus_per_node=1, jobname="sge_hand", job_dir=job_parent,
                    backend="sge", submit=False)
    assert job.get_job_status().state == "NOT_SUBMITTED"
    # Held (-h): no task starts, so no start marker says the job's number.
    out = subprocess.run(["qsub", "-terse", "-h", "submit.sh"], cwd=job.job_dir, capture_output=True, text=True,
                         check=True)
    number = out.stdout.strip().split(".")[0]
    later = type(job)(job.job_dir)
    status = later.get_job_status()
    assert status.state == "PENDING" and later.manifest.latest.job_id == number, str(status)
    subprocess.run(["qrls", number], check=True, capture_output=True)
    st = later.wait(timeout_s=90, progress=False)
    assert st.completed and later.get_output(outtype="raw") == [8, 8], str(st)
