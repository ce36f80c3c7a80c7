"""The smallest slurm_apply job: one row per (a, b), the sum back as a table.

    python examples/minimal.py

On a machine with Slurm this is one array job; without it, the same array tasks run here.
"""

import pandas as pd

from slurm_apply import slurm_apply


def add(a, b):
    return a + b


if __name__ == "__main__":
    params = pd.DataFrame({"a": range(10), "b": range(10, 20)})
    job = slurm_apply(add, params, nodes=2, cpus_per_node=1, jobname="minimal", overwrite=True)
    job.wait()
    print(job.get_output())
    job.cleanup_files()
