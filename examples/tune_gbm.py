"""Tune a gradient-boosting classifier on a 3 x 3 x 3 grid with 10-fold cross-validation.

A Python take on rslurm's tuning example. Each row of the grid is one call of ``tune`` on the
cluster; the data travel once, as ``add_objects``; scikit-learn is imported on the node (``pkgs``).

    pip install '.[examples]'      # scikit-learn, only for this example
    python examples/tune_gbm.py

With no Slurm on the machine, the same array tasks run here (a one-line notice says so).
"""

import itertools
import time

import pandas as pd
from sklearn.datasets import load_breast_cancer

from slurm_apply import slurm_apply

X, y = load_breast_cancer(return_X_y=True)


def tune(max_depth, n_estimators, learning_rate):
    """Mean 10-fold cross-validated accuracy of one parameter combination (uses X, y)."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    t0 = time.perf_counter()
    model = GradientBoostingClassifier(max_depth=max_depth, n_estimators=n_estimators,
                                       learning_rate=learning_rate, random_state=0)
    folds = StratifiedKFold(n_splits=10, shuffle=True, random_state=0)
    scores = cross_val_score(model, X, y, cv=folds)
    return {"accuracy": scores.mean(), "accuracy_sd": scores.std(), "fit_s": time.perf_counter() - t0}


if __name__ == "__main__":
    grid = pd.DataFrame(
        list(itertools.product([1, 2, 3], [25, 50, 100], [0.05, 0.1, 0.3])),
        columns=["max_depth", "n_estimators", "learning_rate"],
    )
    started = time.perf_counter()
    job = slurm_apply(tune, grid, add_objects=["X", "y"], pkgs=["sklearn"], nodes=3, cpus_per_node=2,
                      slurm_options={"time": "00:30:00"}, jobname="tune_gbm", overwrite=True)
    print(job.get_job_status())
    job.wait()
    out = job.get_output()
    print(f"\n{len(out)} parameter combinations in {time.perf_counter() - started:.1f} s; best by accuracy:")
    print(out.sort_values("accuracy", ascending=False).head(5).to_string(index=False))
    job.cleanup_files()
