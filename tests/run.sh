#!/usr/bin/env bash
# The whole test suite, real Slurm cluster included, from a fresh machine:
#   bash tests/run.sh [pytest args]
# 1. Installs the package with its test extras into a virtual environment of its own
#    (.venvs/newest), with the newest releases its requirements allow: what a new user gets.
# 2. As root on Debian/Ubuntu, installs the Slurm packages the suite's private clusters are
#    started from (slurmctld, slurmd, slurmdbd, munge, MariaDB), and Grid Engine's for its
#    private cell (gridengine-master, -exec, -client).
# 3. Checks the layers (lint-imports), ruff and mypy, then runs the suite; the suite starts and
#    stops the clusters itself, and runs a local round trip on the oldest and newest Python the
#    package claims (3.9 and 3.13, each in its own venv, built here).
# 4. A second, shorter run: the local-backend tests (round trips, tracebacks, params_df's
#    columns, resubmit, the notebook's HTML) on Python 3.9 with the oldest releases the
#    requirements claim (.venvs/oldest).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

# An interpreter of this minor version: pyenv's, else one on PATH; empty if none.
find_python() {
    local v=$1 p
    for p in "$HOME"/.pyenv/versions/"$v".*/bin/python"$v" "$(command -v "python$v" || true)"; do
        [ -n "$p" ] && [ -x "$p" ] && { echo "$p"; return; }
    done
}

# make_venv DIR PYTHON PIP-ARGS...: a venv with these packages (rebuilt when the args change).
make_venv() {
    local dir=$1 py=$2; shift 2
    local want="$py $* $(sha1sum pyproject.toml | cut -c1-12)"
    if [ ! -x "$dir/bin/python" ] || [ "$(cat "$dir/.made-with" 2>/dev/null)" != "$want" ]; then
        rm -rf "$dir"
        "$py" -m venv "$dir"
        "$dir/bin/python" -m pip install --quiet --upgrade pip
        "$dir/bin/python" -m pip install --quiet "$@"
        echo "$want" > "$dir/.made-with"
    fi
}

echo "tests/run.sh: installing into .venvs/newest (the newest releases the requirements allow)" >&2
make_venv .venvs/newest python3 --upgrade --upgrade-strategy eager -e '.[test]'
PY=.venvs/newest/bin/python

# The oldest and newest Python the package claims, for the round trips in tests/test_pythons.py
# and the oldest releases' run below.
OLDEST_PINS=(cloudpickle==2.0.0 pandas==1.3.0 click==8.0.0 tqdm==4.62.0 tomli==1.1.0 numpy==1.19.5)
py39=$(find_python 3.9); py313=$(find_python 3.13)
if [ -n "$py39" ]; then
    echo "tests/run.sh: .venvs/oldest: Python 3.9 with ${OLDEST_PINS[*]}" >&2
    make_venv .venvs/oldest "$py39" "${OLDEST_PINS[@]}" pytest -e .
fi
if [ -n "$py313" ]; then
    echo "tests/run.sh: .venvs/py313: Python 3.13 with the newest releases" >&2
    make_venv .venvs/py313 "$py313" --upgrade -e .
fi

need=(slurmctld slurmd sbatch sacct munged slurmdbd mariadbd)
missing=0
for exe in "${need[@]}"; do
    command -v "$exe" >/dev/null 2>&1 || [ -x "/usr/sbin/$exe" ] || missing=1
done
if [ "$missing" = 1 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "tests/run.sh: installing Debian's Slurm packages for the private test cluster" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends \
            slurmctld slurmd slurm-client munge slurmdbd mariadb-server >/dev/null
    else
        echo "tests/run.sh: Slurm is not installed and this is not root with apt-get;" \
             "tests that need the cluster will say so (and fail under CI=true)" >&2
    fi
fi

# Son of Grid Engine (Debian's 8.1.9) for the private Grid Engine cell (tests/sgebed.py). The
# packages ask which cell and master to configure unless debconf is preseeded; they start no
# daemon, and the suite's cell uses none of their configuration.
if ! command -v qsub >/dev/null 2>&1 || [ ! -x /usr/sbin/sge_qmaster ] || [ ! -x /usr/sbin/sge_execd ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "tests/run.sh: installing Debian's Grid Engine packages for the private test cell" >&2
        export DEBIAN_FRONTEND=noninteractive
        debconf-set-selections <<EOF
gridengine-common shared/gridengineconfig boolean true
gridengine-common shared/gridenginecell string default
gridengine-common shared/gridenginemaster string $(hostname)
EOF
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends \
            gridengine-master gridengine-exec gridengine-client >/dev/null
    else
        echo "tests/run.sh: Grid Engine is not installed and this is not root with apt-get;" \
             "tests that need the cell will say so (and fail under CI=true)" >&2
    fi
fi

# The project's rules, before any test: the layers (import-linter contracts in pyproject.toml),
# ruff and mypy (their settings are in pyproject.toml too).
echo "tests/run.sh: checking the layers (lint-imports), ruff and mypy" >&2
.venvs/newest/bin/lint-imports --no-cache
"$PY" -m ruff check slurm_apply tests bench examples
"$PY" -m mypy

# Two workers (pytest-xdist): each starts its own private clusters and Grid Engine cell, and most
# of a cluster test's time is waiting on a scheduler, so two overlap well on two cores.
# Arguments given to this script come after, so "-n 0" runs the tests one at a time.
"$PY" -m pytest -n 2 "$@"

if [ -x .venvs/oldest/bin/python ]; then
    echo "tests/run.sh: the local-backend tests on Python 3.9 with the oldest releases" >&2
    .venvs/oldest/bin/python -m pytest -q -m "not slurm" -p no:cacheprovider \
        tests/test_local.py tests/test_tracebacks.py tests/test_params_table.py \
        tests/test_state_model.py tests/test_display.py
fi
