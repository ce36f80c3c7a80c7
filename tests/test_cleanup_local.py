"""The README's three lines, wait() -> get_output() -> cleanup_files(), on the local backend
(issue 20; issue 21, item 1): never "Directory not empty", nothing left behind."""

import pandas as pd

from slurm_apply import slurm_apply
from rowfns import busy  # a light module: tasks import it (tests/rowfns.py)

RUNS = 5


def test_wait_output_cleanup_never_fails_locally(tmp_path):
    df = pd.DataFrame({"x": [0.01 * (i % 5) for i in range(12)]})
    for run in range(RUNS):
        job = slurm_apply(busy, df, backend="local", nodes=3, cpus_per_node=2, jobname=f"c{run}",
                          job_dir=tmp_path, preflight=False)
        status = job.wait(timeout_s=60, progress=False)
        assert status.completed, str(status)
        assert list(job.get_output().result) == list(df.x)
        job.cleanup_files()
        assert not job.job_dir.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
