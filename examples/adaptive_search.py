"""A hyper-parameter search that grows its own job: asynchronous successive halving.

Sixteen random configurations of a gradient-boosting classifier start with 20 trees each. As
results come back (``job.as_completed()``), a configuration among the best half of those
finished at its number of trees is run again with twice the trees (40, 80, then 160):
``job.extend()`` adds those rows to the same job while the other rows still run, and
``as_completed()`` yields them too. Promotions are added two at a time (or whatever is left at
the end), so the job grows in several rounds, each chosen from the results so far.

    pip install '.[examples]'      # scikit-learn, only for this example
    python examples/adaptive_search.py

With no Slurm on the machine, the same array tasks run here (a one-line notice per round).
"""

import time

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer

from slurm_apply import slurm_apply

X, y = load_breast_cancer(return_X_y=True)
TREES = [20, 40, 80, 160]  # the rungs: each promotion doubles the trees
ETA = 2  # the best 1/ETA of a rung go up
BATCH = 2  # promotions added per round (fewer at the very end)


def score(config, max_depth, learning_rate, subsample, n_estimators):
    """Mean 5-fold cross-validated accuracy of one configuration at one budget (uses X, y)."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    model = GradientBoostingClassifier(max_depth=max_depth, learning_rate=learning_rate,
                                       subsample=subsample, n_estimators=n_estimators, random_state=0)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    return {"accuracy": cross_val_score(model, X, y, cv=folds).mean()}


def first_configs(n, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "config": np.arange(n),
        "max_depth": rng.integers(1, 5, n),
        "learning_rate": np.round(10 ** rng.uniform(-2, -0.3, n), 4),
        "subsample": np.round(rng.uniform(0.5, 1.0, n), 2),
        "n_estimators": TREES[0],
    })


def promotions(rows, accuracy, promoted):
    """Rows to run next: in each rung, the best 1/ETA of the configurations finished there
    (asynchronous successive halving), those not promoted yet, with ETA times the trees."""
    out = []
    for trees in TREES[:-1]:
        done = [(acc, r) for r, acc in accuracy.items() if rows[r]["n_estimators"] == trees]
        for _, r in sorted(done, reverse=True)[: len(done) // ETA]:
            if r not in promoted:
                promoted.add(r)
                out.append({**rows[r], "n_estimators": trees * ETA})
    return out


if __name__ == "__main__":
    started = time.perf_counter()
    first = first_configs(16)
    rows = first.to_dict("records")  # every row of the job, in the order added (labels 0, 1, ...)
    job = slurm_apply(score, first, add_objects=["X", "y"], pkgs=["sklearn"], nodes=4, cpus_per_node=1,
                      slurm_options={"time": "00:20:00"}, jobname="adaptive_search", overwrite=True)
    accuracy, promoted, waiting, rounds = {}, set(), [], []
    for label, value in job.as_completed():
        accuracy[label] = value["accuracy"]
        waiting += promotions(rows, accuracy, promoted)
        running = len(rows) - len(accuracy)
        if len(waiting) >= BATCH or (waiting and not running):
            best = max(accuracy.values())
            rounds.append((len(rounds) + 1, time.perf_counter() - started, len(accuracy), running,
                           ", ".join(f"{w['config']}@{w['n_estimators']}" for w in waiting), best))
            job.extend(pd.DataFrame(waiting))  # labels len(rows), len(rows) + 1, ...: the next positions
            rows += waiting
            waiting = []
    wall = time.perf_counter() - started

    out = job.get_output()
    print("\nround  at s  rows back  rows running  added (config@trees)  best accuracy so far")
    for number, at, back, running, added, best in rounds:
        print(f"{number:>5}  {at:4.1f}  {back:>9}  {running:>12}  {added:<20}  {best:.4f}")
    trees_run = int(out.n_estimators.sum())
    full = first.shape[0] * TREES[-1]
    top = out[out.n_estimators == TREES[-1]].sort_values("accuracy", ascending=False)
    print(f"\n{len(out)} rows in {len(job.manifest.submissions)} submissions of one job, {wall:.1f} s; "
          f"{trees_run} trees per fold against {full} for all {len(first)} configurations at "
          f"{TREES[-1]} trees ({trees_run / full:.0%})")
    print(f"best at {TREES[-1]} trees:")
    print(top.head(3).to_string(index=False))
    job.cleanup_files()
