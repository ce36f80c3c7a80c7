"""A real Jupyter kernel (nbclient + ipykernel) runs the notebook flow against the test cluster:
define f in a cell, submit, display the handle and the status, wait with progress, read the
output, clean up. What a person would see is checked in the cells' outputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    # Under CI the test extra is installed: a missing kernel is a failure, not a skip.
    import ipykernel  # noqa: F401
    import nbclient
    import nbformat
else:  # elsewhere, say what to install (`pip install -e '.[test]'`)
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parent.parent
KERNEL = "python3"

CELLS = [
    # 0: the parameters the test hands in
    "import os\nimport pandas as pd\nfrom slurm_apply import SlurmJob, slurm_apply\n"
    "PARENT = os.environ['SA_TEST_JOB_PARENT']",
    # 1: a function defined in the notebook travels by value
    "def square(x):\n    import time\n    time.sleep(0.2)\n    return {'sq': x * x}",
    # 2
    "job = slurm_apply(square, pd.DataFrame({'x': range(40)}), backend='slurm', job_dir=PARENT,\n"
    "                  jobname='nb', nodes=2, cpus_per_node=1)",
    # 3: the handle
    "job",
    # 4: a status, while it runs (or already done)
    "job.get_job_status()",
    # 5: wait with progress (a widget: ipywidgets is installed), then show what it returned
    "status = job.wait()\nstatus",
    # 6
    "out = job.get_output()\nassert list(out.sq) == [x * x for x in range(40)]\nout.tail(3)",
    # 7
    "status.tasks_frame()[['task', 'state', 'node']]",
    # 8: a 100,000-row job: its status repr stays short
    "big = slurm_apply(lambda x: x, pd.DataFrame({'x': range(100_000)}), backend='local', seed=False,\n"
    "                  nodes=1, cpus_per_node=1, job_dir=PARENT, jobname='big')\n"
    "early = big.get_job_status()\nbig_status = big.wait(progress=False)\n"
    "len(repr(early)), len(repr(big_status)), repr(big_status)",
    # 9: Ctrl-C (the kernel's interrupt is a SIGINT) during a wait: one line, no traceback
    "slow = slurm_apply(lambda x: __import__('time').sleep(60), pd.DataFrame({'x': range(2)}),\n"
    "                   backend='local', nodes=1, cpus_per_node=1, job_dir=PARENT, jobname='slow')\n"
    "import signal, threading\nthreading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT)).start()\n"
    "slow.wait()",
    # 10
    "job.cleanup_files()\nbig.cleanup_files()\nslow.cleanup_files(force=True)\nsorted(os.listdir(PARENT))",
]
INTERRUPTED = 9  # the cell expected to raise


def kernel_env(parent: Path) -> Dict[str, str]:
    """The test's environment (the cluster fixture has put SLURM_CONF etc. in it), this checkout
    first on the kernel's path, and where the jobs go."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["SA_TEST_JOB_PARENT"] = str(parent)
    return env


def ensure_kernel() -> None:
    """The "python3" kernel must run this interpreter (ipykernel's own spec does: its argv starts
    with "python", which jupyter_client replaces by sys.executable); install it if not."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        argv0 = KernelSpecManager().get_kernel_spec(KERNEL).argv[0]
    except NoSuchKernel:
        argv0 = ""
    if argv0 not in ("python", "python3", sys.executable):
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--user", "--name", KERNEL],
                       check=True, capture_output=True)


def run_notebook(cells: List[str], cwd: Path, env: Dict[str, str], raising: Tuple[int, ...] = (INTERRUPTED,)) -> Any:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    for i in raising:
        nb.cells[i].metadata["tags"] = ["raises-exception"]
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=300,
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute(env=env)
    return nb


def data(cell: Any, mime: str) -> str:
    found = [out["data"][mime] for out in cell.outputs if mime in out.get("data", {})]
    assert found, f"no {mime} output in cell {cell.source!r}: {cell.outputs}"
    return found[-1] if isinstance(found[-1], str) else str(found[-1])


def widgets(nb: Any, model: str) -> List[Dict[str, Any]]:
    """The last state of every widget of one kind (nbclient stores it in the notebook)."""
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    return [w["state"] for w in state.get("state", {}).values() if w["model_name"] == model]


def stderr(cell: Any) -> str:
    return "".join(out.get("text", "") for out in cell.outputs if out.get("name") == "stderr")


def test_the_notebook_flow_on_the_cluster(cluster, job_parent):
    ensure_kernel()
    nb = run_notebook(CELLS, job_parent, kernel_env(job_parent))
    if os.environ.get("SA_NOTEBOOK_OUT"):  # keep the executed notebook, to look at or convert
        nbformat.write(nb, os.environ["SA_NOTEBOOK_OUT"])
    cells = nb.cells

    handle = data(cells[3], "text/html")
    assert "SlurmJob" in handle and "job nb" in handle and "/40 rows" in handle
    assert str(job_parent / "_rslurm_nb" / "logs") in handle
    plain = data(cells[3], "text/plain")
    assert plain.startswith("<SlurmJob nb [") and "40 rows" in plain

    running = data(cells[4], "text/html")
    assert any(state in running for state in ("PENDING", "RUNNING", "COMPLETED"))
    assert data(cells[4], "text/plain").startswith("<JobStatus nb [")

    # wait(): a tqdm widget (its text form says the rows and the state), then the final status.
    assert any("application/vnd.jupyter.widget-view+json" in out.get("data", {}) for out in cells[5].outputs)
    final = data(cells[5], "text/html")
    assert "COMPLETED" in final and "40/40 rows (100%)" in final and ">40<" in final  # done = total
    bars = widgets(nb, "FloatProgressModel")
    assert any((b["value"], b["max"], b["bar_style"]) == (40, 40, "success") for b in bars), bars
    texts = [w["value"].replace("\u2007", " ") for w in widgets(nb, "HTMLModel")]
    assert any("40/40" in t and ("row/s" in t or "s/row" in t) and "COMPLETED" in t for t in texts), texts

    assert "1521" in data(cells[6], "text/plain")  # 39 * 39, the last row's result
    assert "COMPLETED" in data(cells[7], "text/html")

    sizes = data(cells[8], "text/plain")
    early, done = (int(n) for n in sizes.strip("()").split(",")[:2])
    assert early < 2000 and done < 2000, sizes
    assert "100000 done" in sizes

    errors = [out for out in cells[9].outputs if out["output_type"] == "error"]
    assert len(errors) == 1 and errors[0]["ename"] == "WaitInterrupted", cells[9].outputs
    assert len(errors[0]["traceback"]) == 1  # the line, no traceback
    assert "its tasks keep running" in errors[0]["traceback"][0] and "job.cancel()" in errors[0]["traceback"][0]

    assert data(cells[10], "text/plain") == "[]"  # cleaned up
    assert "running the 1 array task(s) on this machine" in stderr(cells[8])  # notice, unconfigured


TRACEBACK_CELLS = [
    "import os, traceback\nimport pandas as pd\nfrom slurm_apply import RowsFailedError, slurm_apply\n"
    "PARENT = os.environ['SA_TEST_JOB_PARENT']",
    # 1: a function of the notebook's own, with a nested one, that raises on row 2
    "def f(x):\n    def check(y):\n        if y == 2:\n            raise ValueError(f'bad {y}')\n"
    "        return y\n    return check(x) * 10",
    "job = slurm_apply(f, pd.DataFrame({'x': range(4)}), backend='local', job_dir=PARENT, jobname='tb',\n"
    "                  nodes=1, cpus_per_node=1)\njob.wait(progress=False).failed_rows",
    "try:\n    job.get_output()\nexcept RowsFailedError as err:\n    print(err.__cause__)",
    "try:\n    job.test_row(2, fresh=True)\nexcept ValueError as err:\n    print(err.__cause__)",
    "job.cleanup_files()",
]


def test_a_notebook_function_that_raises_shows_its_lines(tmp_path):
    """The cell's file exists only in the kernel: the lines come with the job. Local backend only."""
    ensure_kernel()
    nb = run_notebook(TRACEBACK_CELLS, tmp_path, kernel_env(tmp_path), raising=())
    cells = nb.cells
    assert data(cells[2], "text/plain") == "[2]"
    for cell in (cells[3], cells[4]):  # the node's traceback, then the fresh interpreter's
        printed = "".join(out.get("text", "") for out in cell.outputs if out.get("name") == "stdout")
        assert "ValueError: bad 2" in printed, cell.outputs
        assert "<dynamic-code>" not in printed, printed
        # the nested function's frame: the cell's line 4 and its text; then f's, line 6
        assert "line 4, in check\n    raise ValueError(f'bad {y}')" in printed, printed
        assert "line 6, in f\n    return check(x) * 10" in printed, printed
